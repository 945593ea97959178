/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* drowsed: runtime autosuspend policy for USB devices and the SCSI disks behind USB storage. */

#include <getopt.h>
#include <stdio.h>

#include "config.h"
#include "log.h"
#include "manager.h"

static ManagerOptions arg_options = {
        .config_path = DEFAULT_CONFIG_PATH,
        .control_path = DEFAULT_CONTROL_PATH,
        .monitor = MONITOR_UDEV,
        .bus = true,
        .state_dir = DEFAULT_STATE_DIR,
};
static bool arg_once = false;
static bool arg_dump = false;

static void help(void) {
        printf("drowsed [OPTIONS...]\n\n"
               "Runtime autosuspend policy for USB devices and the SCSI disks behind USB storage.\n\n"
               "  -c --config FILE         Configuration (default " DEFAULT_CONFIG_PATH
               "), drop-ins in FILE.d/\n"
               "     --control PATH        Control socket for drowsectl (default " DEFAULT_CONTROL_PATH
               "; \"\" for none)\n"
               "     --monitor udev|kernel Listen to udevd's events (default) or the kernel's own\n"
               "     --state-dir DIR       Statistics and quarantine (default " DEFAULT_STATE_DIR
               "; \"\" for none)\n"
               "     --no-bus              Do not publish org.drowse1 on the system bus\n"
               "     --once                Apply the policy to the devices present, then exit\n"
               "     --dump                With --once: print the device list as JSON before exiting\n"
               "     --log-level LEVEL     debug, info, notice, warning or err\n"
               "  -h --help                Show this help\n"
               "     --version             Show the version\n");
}

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_CONTROL = 0x100,
                ARG_NO_BUS,
                ARG_MONITOR,
                ARG_ONCE,
                ARG_DUMP,
                ARG_LOG_LEVEL,
                ARG_STATE_DIR,
                ARG_VERSION
        };
        static const struct option options[] = {
                { "config",    required_argument, NULL, 'c'           },
                { "control",   required_argument, NULL, ARG_CONTROL   },
                { "monitor",   required_argument, NULL, ARG_MONITOR   },
                { "no-bus",    no_argument,       NULL, ARG_NO_BUS    },
                { "once",      no_argument,       NULL, ARG_ONCE      },
                { "dump",      no_argument,       NULL, ARG_DUMP      },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "state-dir", required_argument, NULL, ARG_STATE_DIR },
                { "help",      no_argument,       NULL, 'h'           },
                { "version",   no_argument,       NULL, ARG_VERSION   },
                {}
        };
        int c, l;

        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        arg_options.config_path = optarg;
                        break;
                case ARG_CONTROL:
                        arg_options.control_path = *optarg ? optarg : NULL;
                        break;
                case ARG_MONITOR:
                        arg_options.monitor = monitor_source_from_string(optarg);
                        if (arg_options.monitor < 0)
                                return log_error_errno(EINVAL, "--monitor expects udev or kernel, not '%s'",
                                                       optarg);
                        break;
                case ARG_STATE_DIR:
                        arg_options.state_dir = *optarg ? optarg : NULL;
                        break;
                case ARG_NO_BUS:
                        arg_options.bus = false;
                        break;
                case ARG_ONCE:
                        arg_once = true;
                        break;
                case ARG_DUMP:
                        arg_dump = true;
                        break;
                case ARG_LOG_LEVEL:
                        l = log_level_from_string(optarg);
                        if (l < 0)
                                return log_error_errno(EINVAL, "Unknown log level '%s'", optarg);
                        log_set_max_level(l);
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("drowsed " PACKAGE_VERSION "\n");
                        return 0;
                case '?':
                        return -EINVAL;
                default:
                        return log_error_errno(EINVAL, "Unhandled option");
                }
        if (optind < argc)
                return log_error_errno(EINVAL, "drowsed takes no arguments (see --help)");
        return 1;
}

int main(int argc, char *argv[]) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        log_parse_environment();
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        if (arg_once)
                arg_options.control_path = NULL;

        r = manager_new(&arg_options, &m);
        if (r < 0) {
                log_error_errno(r, "Cannot set up: %m");
                return EXIT_FAILURE;
        }
        r = manager_load_config(m);
        if (r < 0)
                return EXIT_FAILURE;
        if (!arg_once) {
                r = manager_start(m);
                if (r < 0)
                        return EXIT_FAILURE;
        }
        r = manager_coldplug(m);
        if (r < 0)
                return EXIT_FAILURE;
        if (arg_once) {
                if (arg_dump)
                        manager_dump_list(m, true, stdout);
                return EXIT_SUCCESS;
        }
        r = manager_run(m);
        if (r < 0) {
                log_error_errno(r, "Event loop failed: %m");
                return EXIT_FAILURE;
        }
        log_info("Exiting");
        return EXIT_SUCCESS;
}
