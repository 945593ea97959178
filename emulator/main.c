/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "control.h"
#include "disk.h"
#include "emu-config.h"
#include "log.h"
#include "server.h"

#define DEFAULT_LISTEN "127.0.0.1:3240"

static void help(void) {
        printf("drowse-emu [OPTIONS...]\n\n"
               "Export emulated USB devices over USB/IP, or attach them to the local vhci_hcd.\n\n"
               "  -d --disk PATH[,OPTION...]  Export a mass-storage disk backed by the image PATH.\n"
               "                              Options: size=SIZE (create sparse if missing), ro,\n"
               "                              removable, speed=high|super|full, vendor=V, product=P,\n"
               "                              serial=S, name=N, follow-symlinks\n"
               "  -c --config FILE            Read the topology from an INI file (drowse-emu(8))\n"
               "  -l --listen ADDR[:PORT]     Listen for USB/IP clients (default " DEFAULT_LISTEN ")\n"
               "     --no-listen              Do not listen on TCP\n"
               "  -a --attach                 Attach every device to this machine's vhci_hcd\n"
               "     --control PATH           Serve the control socket (drowsectl emu) on PATH\n"
               "     --vhci-controller N      Use only vhci_hcd controller N for --attach\n"
               "     --log-level LEVEL        debug, info, notice, warning or err\n"
               "  -h --help                   Show this help\n"
               "     --version                Show the version\n");
}

enum {
        ARG_NO_LISTEN = 0x100,
        ARG_CONTROL,
        ARG_VHCI_CONTROLLER,
        ARG_LOG_LEVEL,
        ARG_VERSION,
};

/* Returns 1 to run, 0 to exit successfully, <0 on a usage error (already reported). */
static int parse_argv(int argc, char *argv[], EmuConfig *config) {
        static const struct option options[] = {
                { "disk",            required_argument, NULL, 'd'                 },
                { "config",          required_argument, NULL, 'c'                 },
                { "listen",          required_argument, NULL, 'l'                 },
                { "no-listen",       no_argument,       NULL, ARG_NO_LISTEN       },
                { "attach",          no_argument,       NULL, 'a'                 },
                { "vhci-controller", required_argument, NULL, ARG_VHCI_CONTROLLER },
                { "control",         required_argument, NULL, ARG_CONTROL         },
                { "log-level",       required_argument, NULL, ARG_LOG_LEVEL       },
                { "help",            no_argument,       NULL, 'h'                 },
                { "version",         no_argument,       NULL, ARG_VERSION         },
                {}
        };
        const char *error;
        unsigned line;
        int c, r;

        while ((c = getopt_long(argc, argv, "d:c:l:ah", options, NULL)) >= 0)
                switch (c) {
                case 'd':
                        r = emu_config_add_disk_spec(config, optarg, &error);
                        if (r < 0)
                                return log_error_errno(r, "--disk %s: %s", optarg, r == -ENOMEM ? "out of memory" : error);
                        break;
                case 'c':
                        r = emu_config_load_file(config, optarg, &line, &error);
                        if (r < 0) {
                                if (line > 0)
                                        return log_error_errno(r, "%s:%u: %s", optarg, line, error);
                                return log_error_errno(r, "%s: %s: %m", optarg, error);
                        }
                        break;
                case 'l':
                        free(config->listen);
                        config->listen = strdup(optarg);
                        if (!config->listen)
                                return log_oom();
                        break;
                case ARG_NO_LISTEN:
                        free(config->listen);
                        config->listen = strdup("");
                        if (!config->listen)
                                return log_oom();
                        break;
                case 'a':
                        config->attach = true;
                        break;
                case ARG_CONTROL:
                        free(config->control);
                        config->control = strdup(optarg);
                        if (!config->control)
                                return log_oom();
                        break;
                case ARG_VHCI_CONTROLLER: {
                        char *end;
                        long v = strtol(optarg, &end, 10);
                        if (!*optarg || *end || v < 0 || v > 127)
                                return log_error_errno(EINVAL, "--vhci-controller expects a number from 0 to 127, not '%s'",
                                                       optarg);
                        config->vhci_controller = (int) v;
                        break;
                }
                case ARG_LOG_LEVEL:
                        r = log_level_from_string(optarg);
                        if (r < 0)
                                return log_error_errno(r, "Unknown log level '%s'", optarg);
                        log_set_max_level(r);
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("drowse-emu " PACKAGE_VERSION "\n");
                        return 0;
                case '?':
                        return -EINVAL;
                default:
                        return log_error_errno(EINVAL, "Unhandled option");
                }

        if (optind < argc)
                return log_error_errno(EINVAL, "Unexpected argument '%s' (see --help)", argv[optind]);
        if (config->n_disks == 0 && !config->control)
                return log_error_errno(EINVAL, "Nothing to emulate: give at least one --disk, a --config with a "
                                       "[disk NAME] section, or a --control socket to add devices later");
        if (config->listen && !config->listen[0] && !config->attach && !config->control)
                return log_error_errno(EINVAL, "--no-listen without --attach leaves the devices unreachable");
        return 1;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        log_info("Received %s, detaching and exiting.", strsignal((int) si->ssi_signo));
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static int attach_all(Server *server, const EmuConfig *config) {
        for (size_t i = 0; i < server->n_exports; i++) {
                int r = server_attach_auto(server, server->exports[i], config->vhci_controller);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int run(int argc, char *argv[]) {
        _cleanup_(emu_config_done) EmuConfig config = {};
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(server_freep) Server *server = NULL;
        _cleanup_(control_freep) Control *control = NULL; /* freed before the server it points to */
        int r;

        log_parse_environment();
        emu_config_init(&config);

        r = parse_argv(argc, argv, &config);
        if (r <= 0)
                return r;

        r = sd_event_default(&event);
        if (r < 0)
                return log_error_errno(r, "Cannot allocate event loop: %m");
        (void) sd_event_set_watchdog(event, true);

        /* A peer that hangs up while we write must be an error return, not a signal. */
        (void) signal(SIGPIPE, SIG_IGN);
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) sd_event_add_signal(event, NULL, SIGTERM, on_signal, NULL);
        (void) sd_event_add_signal(event, NULL, SIGINT, on_signal, NULL);

        r = server_new(event, &server);
        if (r < 0)
                return log_oom();

        for (size_t i = 0; i < config.n_disks; i++) {
                UsbDevice *d;
                Export *e;

                r = disk_new(&config.disks[i], &d);
                if (r < 0)
                        return r; /* disk_new says what was wrong with the image */
                r = server_add_device(server, d, &e);
                if (r < 0) {
                        usb_device_free(d);
                        return log_error_errno(r, "Cannot export %s: %m", config.disks[i].name);
                }
                log_info("%s: exported as %s (%s)", d->name, e->busid, config.disks[i].image);
        }

        if (!config.listen || config.listen[0]) {
                r = server_listen(server, config.listen ?: DEFAULT_LISTEN);
                if (r < 0)
                        return r;
        }
        if (config.attach) {
                r = attach_all(server, &config);
                if (r < 0)
                        return r;
        }
        if (config.control) {
                r = control_new(server, config.control, &control);
                if (r < 0)
                        return r;
        }

        (void) sd_notify(false, "READY=1\nSTATUS=Serving emulated USB devices");
        r = sd_event_loop(event);
        (void) sd_notify(false, "STOPPING=1");
        return r;
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
