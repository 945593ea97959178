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
#include "hub.h"
#include "image.h"
#include "keyboard.h"
#include "tree.h"
#include "vhci-attach.h"
#include "injector.h"
#include "log.h"
#include "passthrough.h"
#include "server.h"

#define DEFAULT_LISTEN "127.0.0.1:3240"

static void help(void) {
        printf("drowse-emu [OPTIONS...]\n\n"
               "Export emulated USB devices over USB/IP, or attach them to the local vhci_hcd.\n\n"
               "  -d --disk PATH[,OPTION...]  Export a mass-storage disk backed by the image PATH.\n"
               "                              Options: size=SIZE (create sparse if missing), ro,\n"
               "                              removable, speed=high|super|full, vendor=V, product=P,\n"
               "                              serial=S, name=N, follow-symlinks\n"
               "     --hub NAME[,OPTION...]   A USB 2.0 hub (needs --attach). Options: ports=N (1-15,\n"
               "                              default 4), wakeup, controller=N\n"
               "     --keyboard NAME[,hub=H][,port=P]\n"
               "                              A HID boot keyboard (remote wakeup needs a hub)\n"
               "     --passthrough VID:PID[:SERIAL]|BUS-PORT[.PORT...][,name=N][,hub=H][,port=P]\n"
               "                              Export a real USB device of this machine (libusb;\n"
               "                              its kernel drivers are detached while exported)\n"
               "                              Disks and passthrough devices take hub=H, port=P too.\n"
               "  -c --config FILE            Read the topology from an INI file (drowse-emu(8))\n"
               "  -l --listen ADDR[:PORT]     Listen for USB/IP clients (default " DEFAULT_LISTEN ")\n"
               "     --no-listen              Do not listen on TCP\n"
               "     --allow CIDR             Accept TCP clients only from this network (repeatable;\n"
               "                              default: any client that reaches the listener)\n"
               "     --max-connections N      Serve at most N connections at once (default 256)\n"
               "     --image-dir DIR          Create missing images only inside DIR (repeatable;\n"
               "                              default: anywhere)\n"
               "  -a --attach                 Attach every device to this machine's vhci_hcd\n"
               "     --control PATH           Serve the control socket (drowsectl emu) on PATH\n"
               "     --scenario FILE          Run a scenario of timed steps and faults once the\n"
               "                              devices are attached (drowse-emu(8), SCENARIOS)\n"
               "     --vhci-controller N      Use only vhci_hcd controller N for --attach\n"
               "     --log-level LEVEL        debug, info, notice, warning or err\n"
               "  -h --help                   Show this help\n"
               "     --version                Show the version\n");
}

enum {
        ARG_NO_LISTEN = 0x100,
        ARG_HUB,
        ARG_KEYBOARD,
        ARG_CONTROL,
        ARG_VHCI_CONTROLLER,
        ARG_LOG_LEVEL,
        ARG_VERSION,
        ARG_ALLOW,
        ARG_MAX_CONNECTIONS,
        ARG_IMAGE_DIR,
        ARG_SCENARIO,
        ARG_PASSTHROUGH,
};

static const char *arg_scenario = NULL;

/* Returns 1 to run, 0 to exit successfully, <0 on a usage error (already reported). */
static int parse_argv(int argc, char *argv[], EmuConfig *config) {
        static const struct option options[] = {
                { "disk",            required_argument, NULL, 'd'                 },
                { "config",          required_argument, NULL, 'c'                 },
                { "hub",             required_argument, NULL, ARG_HUB             },
                { "keyboard",        required_argument, NULL, ARG_KEYBOARD        },
                { "passthrough",     required_argument, NULL, ARG_PASSTHROUGH     },
                { "listen",          required_argument, NULL, 'l'                 },
                { "no-listen",       no_argument,       NULL, ARG_NO_LISTEN       },
                { "attach",          no_argument,       NULL, 'a'                 },
                { "vhci-controller", required_argument, NULL, ARG_VHCI_CONTROLLER },
                { "control",         required_argument, NULL, ARG_CONTROL         },
                { "log-level",       required_argument, NULL, ARG_LOG_LEVEL       },
                { "allow",           required_argument, NULL, ARG_ALLOW           },
                { "max-connections", required_argument, NULL, ARG_MAX_CONNECTIONS },
                { "image-dir",       required_argument, NULL, ARG_IMAGE_DIR       },
                { "scenario",        required_argument, NULL, ARG_SCENARIO        },
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
                case ARG_HUB:
                        r = emu_config_add_hub_spec(config, optarg, &error);
                        if (r < 0)
                                return log_error_errno(r, "--hub %s: %s", optarg, error);
                        break;
                case ARG_KEYBOARD:
                        r = emu_config_add_keyboard_spec(config, optarg, &error);
                        if (r < 0)
                                return log_error_errno(r, "--keyboard %s: %s", optarg, error);
                        break;
                case ARG_PASSTHROUGH:
                        r = emu_config_add_passthrough_spec(config, optarg, &error);
                        if (r < 0)
                                return log_error_errno(r, "--passthrough %s: %s", optarg,
                                                       r == -ENOMEM ? "out of memory" : error);
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
                case ARG_ALLOW:
                        r = emu_config_add_allow(config, optarg, &error);
                        if (r < 0)
                                return log_error_errno(r, "--allow %s: %s", optarg,
                                                       r == -ENOMEM ? "out of memory" : error);
                        break;
                case ARG_MAX_CONNECTIONS:
                        r = emu_config_set_max_connections(config, optarg, &error);
                        if (r < 0)
                                return log_error_errno(r, "--max-connections %s: %s", optarg, error);
                        break;
                case ARG_IMAGE_DIR:
                        r = emu_config_add_image_dir(config, optarg, &error);
                        if (r < 0)
                                return log_error_errno(r, "--image-dir %s: %s", optarg,
                                                       r == -ENOMEM ? "out of memory" : error);
                        break;
                case ARG_SCENARIO:
                        arg_scenario = optarg;
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
        r = emu_config_check(config, &error);
        if (r < 0)
                return log_error_errno(r, "Bad topology: %s", error);
        if (config->n_hubs > 0 && !config->attach)
                return log_error_errno(EINVAL, "Hubs need --attach: vhci routes a hub's children by root port "
                                       "number, which only a local attach chooses (see drowse-emu(8), HUBS)");
        if (config->n_disks == 0 && config->n_keyboards == 0 && config->n_passthroughs == 0 && !config->control)
                return log_error_errno(EINVAL, "Nothing to emulate: give at least one --disk or --passthrough, a "
                                       "--config with a [disk NAME] section, or a --control socket to add devices "
                                       "later");
        if (config->listen && !config->listen[0] && !config->attach && !config->control)
                return log_error_errno(EINVAL, "--no-listen without --attach leaves the devices unreachable");
        return 1;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        log_info("Received %s, detaching and exiting.", strsignal((int) si->ssi_signo));
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

/* Plain devices go on controllers no hub tree uses: vhci's single resume timer per root hub must not
 * be shared between a tree and other suspendable root-port devices (kernel-deep-dive §2.6). */
static int attach_all(Server *server, const EmuConfig *config) {
        int r;

        for (size_t i = 0; i < server->n_exports; i++)
                if (tree_is_hub(server->exports[i])) {
                        r = tree_attach(server, server->exports[i]);
                        if (r < 0)
                                return r;
                }

        VhciLayout layout;
        r = vhci_read_layout(&layout);
        if (r < 0)
                return log_error_errno(r, "Cannot use vhci_hcd for --attach: %m%s",
                                       r == -ENODEV ? " (load it with: modprobe vhci-hcd)" : "");

        for (size_t i = 0; i < server->n_exports; i++) {
                Export *e = server->exports[i];
                int port = -1;

                if (e->local_only)
                        continue;
                for (unsigned c = 0; c < layout.n_controllers && port < 0; c++) {
                        bool hub_here = false;
                        if (config->vhci_controller >= 0 && c != (unsigned) config->vhci_controller)
                                continue;
                        for (size_t k = 0; k < server->n_exports; k++)
                                hub_here |= tree_is_hub(server->exports[k]) && server->exports[k]->controller == (int) c;
                        if (hub_here || vhci_find_free_port(&layout, e->device->speed, (int) c, &port) < 0)
                                port = -1;
                }
                if (port < 0)
                        return log_error_errno(EBUSY, "No free %s vhci port for %s%s",
                                               usb_speed_is_super(e->device->speed) ? "SuperSpeed" : "high-speed",
                                               e->device->name,
                                               config->vhci_controller >= 0 ? " on the chosen controller" :
                                               " outside the hub trees' controllers");
                r = server_attach_local(server, e, port);
                if (r < 0)
                        return r;
        }
        return 0;
}

static Export *hub_export_by_name(Server *server, const char *name) {
        Export *e = server_lookup(server, name);
        return e && tree_is_hub(e) ? e : NULL;
}

/* Exports a device on a root port, or on its hub. Takes ownership of d. */
static int place(Server *server, UsbDevice *d, const char *hub, unsigned port) {
        Export *e;
        int r;

        if (hub) {
                r = tree_add_child(server, hub_export_by_name(server, hub), port, d, &e);
                if (r < 0) {
                        usb_device_free(d);
                        return r;
                }
                log_info("%s: on %s port %u", d->name, hub, e->hub_port);
                return 0;
        }
        r = server_add_device(server, d, &e);
        if (r < 0) {
                if (r == -E2BIG)
                        log_error("Cannot export %s: one emulator exports at most %d devices", d->name,
                                  SERVER_MAX_EXPORTS);
                else
                        log_error_errno(r, "Cannot export %s: %m", d->name);
                usb_device_free(d);
                return r;
        }
        log_info("%s: exported as %s", d->name, e->busid);
        return 0;
}

/* The real device behind a passthrough left: so does the exported one. Behind our hub its port sees the
 * disconnect; on a root port the connection closes, which vhci reports as an unplug. */
static void on_passthrough_gone(UsbDevice *d, void *userdata) {
        Server *server = userdata;
        Export *e = server_lookup(server, d->name);

        if (!e)
                return;
        if (e->hub_export) {
                if (tree_unplug(e) >= 0)
                        log_info("%s: unplugged from its hub port", d->name);
                return;
        }
        log_info("%s: removing the export", d->name);
        (void) server_remove_export(server, e); /* frees d */
}

static int run(int argc, char *argv[]) {
        _cleanup_(emu_config_done) EmuConfig config = {};
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(server_freep) Server *server = NULL;
        _cleanup_(control_freep) Control *control = NULL; /* freed before the server it points to */
        _cleanup_(injector_freep) Injector *injector = NULL; /* the same */
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
        r = injector_new(event, server, &injector);
        if (r < 0)
                return log_oom();
        server->injector = injector;
        if (server_set_allow(server, config.allow, config.n_allow) < 0)
                return log_oom();
        if (config.max_connections > 0)
                (void) server_set_max_connections(server, config.max_connections);
        /* Before any disk, including those added later over the control socket. */
        r = image_set_create_directories((const char *const *) config.image_dirs, config.n_image_dirs);
        if (r < 0)
                return log_error_errno(r, "Cannot use the image directories (--image-dir): %m");
        for (size_t i = 0; i < config.n_disks; i++) {
                const DiskConfig *dc = &config.disks[i];
                for (size_t l = 0; l <= dc->n_extra_luns && dc->size > 0 && !dc->read_only; l++) {
                        const char *path = l == 0 ? dc->image : dc->lun_images[l - 1];
                        if (access(path, F_OK) < 0 && errno == ENOENT &&
                            image_check_create_path(path) == -EPERM)
                                return log_error_errno(EPERM, "%s: refusing to create image %s outside the "
                                                       "image directories (--image-dir)", dc->name, path);
                }
        }
        for (size_t i = 0; i < config.n_allow; i++) {
                char buf[IN_ADDR_PREFIX_STRING_MAX];
                if (in_addr_prefix_to_string(&config.allow[i], buf, sizeof(buf)) >= 0)
                        log_debug("Accepting USB/IP clients from %s", buf);
        }

        for (size_t i = 0; i < config.n_hubs; i++) {
                const HubConfig *hc = &config.hubs[i];
                UsbDevice *d;

                r = hub_new(hc->name, &(HubOptions) { .n_ports = hc->ports, .remote_wakeup = hc->wakeup }, &d);
                if (r < 0)
                        return log_error_errno(r, "Cannot create hub %s: %m", hc->name);
                r = tree_add_hub(server, d, hc->controller, NULL);
                if (r < 0) {
                        usb_device_free(d);
                        return log_error_errno(r, "Cannot export hub %s: %m", hc->name);
                }
        }
        for (size_t i = 0; i < config.n_disks; i++) {
                UsbDevice *d;

                r = disk_new(&config.disks[i], &d);
                if (r < 0)
                        return r; /* disk_new says what was wrong with the image */
                r = place(server, d, config.disks[i].hub, config.disks[i].port);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < config.n_keyboards; i++) {
                UsbDevice *d;

                r = keyboard_new(config.keyboards[i].name, &d);
                if (r < 0)
                        return log_error_errno(r, "Cannot create keyboard %s: %m", config.keyboards[i].name);
                r = place(server, d, config.keyboards[i].hub, config.keyboards[i].port);
                if (r < 0)
                        return r;
        }

        for (size_t i = 0; i < config.n_passthroughs; i++) {
                UsbDevice *d;

                r = passthrough_new(event, &config.passthroughs[i], &d);
                if (r < 0)
                        return r; /* passthrough_new says why the device could not be used */
                passthrough_set_gone_handler(passthrough_from_device(d), on_passthrough_gone, server);
                r = place(server, d, config.passthroughs[i].hub, config.passthroughs[i].port);
                if (r < 0)
                        return r;
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
        if (arg_scenario) {
                _cleanup_free_ char *error = NULL;

                r = injector_run_scenario(injector, arg_scenario, &error);
                if (r < 0)
                        return log_error_errno(r, "--scenario: %s", error ?: strerror(-r));
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
