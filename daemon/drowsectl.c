/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* drowsectl: the command-line client, for drowsed's control socket (status, list, show, why, reload) and
 * for drowse-emu's (the "emu" verbs). Both speak the same request/answer shape over SOCK_SEQPACKET. */

#include <getopt.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "config.h"
#include "log.h"
#include "macro.h"

#define DEFAULT_EMU_SOCKET "/run/drowse-emu/control"
#define DEFAULT_DAEMON_SOCKET "/run/drowse/control"
#define MAX_REPLY (1024 * 1024)

static const char *arg_emu_socket = DEFAULT_EMU_SOCKET;
static const char *arg_socket = DEFAULT_DAEMON_SOCKET;
static bool arg_json = false;
static const char *arg_controller = NULL;

static void help(void) {
        printf("drowsectl [OPTIONS...] COMMAND ...\n\n"
               "Daemon commands (drowsed):\n"
               "  status                      Configuration, monitor and device counts\n"
               "  list                        Every USB device drowsed tracks, its state and why\n"
               "  show DEVICE                 One device, as JSON (DEVICE: 1-1.2, a devpath, or sdb)\n"
               "  why DEVICE                  Walk the device's runtime-PM chain and name what blocks it\n"
               "  reload                      Re-read the configuration (root only)\n"
               "  stats [DEVICE]              Time suspended and active, resumes, wakeups, decisions\n"
               "  release DEVICE              Lift a quarantine or backoff, apply the policy again (root only)\n"
               "  plot FILE.svg               Write an SVG timeline of every device's power states\n\n"
               "Emulator commands (drowse-emu --control PATH):\n"
               "  emu list                    Show the emulated devices and their USB state\n"
               "  emu show NAME               One device, as JSON\n"
               "  emu add-disk SPEC           Add a disk while running (SPEC as drowse-emu --disk)\n"
               "  emu remove NAME             Detach, disconnect and unexport a device\n"
               "  emu attach NAME             Attach a device to this machine's vhci_hcd\n"
               "  emu detach NAME             Detach a locally attached device\n"
               "  emu plug NAME               Plug a hub's child back into its port\n"
               "  emu unplug NAME             Unplug a hub's child (the hub reports the disconnect)\n"
               "  emu wakeup NAME [force]     The device signals remote wakeup through its hub\n"
               "  emu type NAME TEXT          Type TEXT on an emulated keyboard\n"
               "  emu fault kinds             The fault catalogue\n"
               "  emu fault add NAME KIND [PARAM...]\n"
               "                              Inject a fault (see drowse-emu(8), FAULTS)\n"
               "  emu fault list              Faults, their triggers and hits\n"
               "  emu fault clear all|ID|NAME Remove faults\n"
               "  emu fault seed N            Seed for the next probabilistic faults\n"
               "  emu scenario run FILE       Run a scenario file in the emulator\n"
               "  emu scenario status|stop    Where it is, or end it\n\n"
               "Options:\n"
               "     --socket PATH            drowsed's control socket (default " DEFAULT_DAEMON_SOCKET ")\n"
               "     --emu-socket PATH        Emulator control socket (default " DEFAULT_EMU_SOCKET ")\n"
               "     --controller N           With emu attach: use vhci_hcd controller N\n"
               "     --json                   Machine-readable output where there is a table\n"
               "  -h --help                   Show this help\n"
               "     --version                Show the version\n");
}

/* Sends one request and writes the answer to OUT. Returns 0, or a negative errno after saying what went
 * wrong. */
static int request_into(const char *socket_path, const char *who, const char *request, FILE *out) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *reply = NULL;
        ssize_t n;

        if (strlen(socket_path) >= sizeof(sa.sun_path))
                return log_error_errno(ENAMETOOLONG, "Socket path too long: %s", socket_path);
        strcpy(sa.sun_path, socket_path);

        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_error_errno(errno, "Cannot create socket: %m");
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return log_error_errno(errno, "Cannot reach %s at %s: %m (is it running%s?)", who,
                                       socket_path, streq(who, "drowse-emu") ? " with --control" : "");
        if (send(fd, request, strlen(request), MSG_NOSIGNAL) < 0)
                return log_error_errno(errno, "Cannot send request: %m");

        reply = malloc(MAX_REPLY + 1);
        if (!reply)
                return log_oom();
        n = recv(fd, reply, MAX_REPLY, MSG_TRUNC);
        if (n < 0)
                return log_error_errno(errno, "No answer from %s: %m", who);
        if (n == 0)
                return log_error_errno(ECONNRESET, "%s closed the connection without an answer", who);
        if (n > MAX_REPLY)
                return log_error_errno(EMSGSIZE, "Answer larger than %d bytes", MAX_REPLY);
        reply[n] = 0;

        if (strneq(reply, "ok\n", 3)) {
                fwrite(reply + 3, 1, (size_t) n - 3, out);
                return 0;
        }
        fputs(reply, stderr);
        return -EIO;
}

static int request_to(const char *socket_path, const char *who, const char *request) {
        return request_into(socket_path, who, request, stdout);
}

/* The SVG comes from drowsed; the file is written only once the whole answer is there. */
static int verb_plot(const char *path) {
        _cleanup_free_ char *svg = NULL;
        size_t size = 0;
        FILE *mem, *f;
        int r;

        mem = open_memstream(&svg, &size);
        if (!mem)
                return log_oom();
        r = request_into(arg_socket, "drowsed", "plot", mem);
        if (fclose(mem) != 0)
                return log_oom();
        if (r < 0)
                return r;
        f = fopen(path, "we");
        if (!f)
                return log_error_errno(errno, "Cannot write %s: %m", path);
        fwrite(svg, 1, size, f);
        if (fclose(f) != 0)
                return log_error_errno(errno, "Cannot write %s: %m", path);
        return 0;
}

static int emu_request(const char *request) {
        return request_to(arg_emu_socket, "drowse-emu", request);
}

static int verb_daemon(int argc, char *argv[]) {
        char request[600];
        const char *verb = argv[0];
        int n;

        if (streq(verb, "status") || streq(verb, "list") || streq(verb, "reload")) {
                if (argc != 1)
                        return log_error_errno(EINVAL, "%s takes no arguments", verb);
                n = snprintf(request, sizeof(request), "%s%s", verb,
                             arg_json && !streq(verb, "reload") ? "-json" : "");
        } else if (streq(verb, "stats")) {
                if (argc > 2)
                        return log_error_errno(EINVAL, "stats takes at most one device");
                if (argc == 2 && strchr(argv[1], '\n'))
                        return log_error_errno(EINVAL, "Invalid device name");
                n = snprintf(request, sizeof(request), "stats%s%s%s", arg_json ? "-json" : "",
                             argc == 2 ? " " : "", argc == 2 ? argv[1] : "");
        } else if (streq(verb, "release")) {
                if (argc != 2)
                        return log_error_errno(EINVAL, "release takes exactly one device");
                if (strchr(argv[1], '\n'))
                        return log_error_errno(EINVAL, "Invalid device name");
                n = snprintf(request, sizeof(request), "release %s", argv[1]);
        } else if (streq(verb, "plot")) {
                if (argc != 2)
                        return log_error_errno(EINVAL, "plot takes the SVG file to write");
                return verb_plot(argv[1]);
        } else if (streq(verb, "show") || streq(verb, "why")) {
                if (argc != 2)
                        return log_error_errno(EINVAL, "%s takes exactly one device", verb);
                if (strchr(argv[1], '\n'))
                        return log_error_errno(EINVAL, "Invalid device name");
                n = snprintf(request, sizeof(request), "%s%s %s", verb,
                             arg_json && streq(verb, "why") ? "-json" : "", argv[1]);
        } else
                return log_error_errno(EINVAL, "Unknown command '%s' (see --help)", verb);
        if (n < 0 || (size_t) n >= sizeof(request))
                return log_error_errno(E2BIG, "Argument too long");
        return request_to(arg_socket, "drowsed", request);
}

static int verb_emu(int argc, char *argv[]) {
        char request[4096];
        const char *verb = argc > 0 ? argv[0] : NULL;
        int n;

        if (!verb)
                return log_error_errno(EINVAL,
                                       "emu needs a command: list, show, add-disk, remove, attach, detach");

        if (streq(verb, "list")) {
                if (argc != 1)
                        return log_error_errno(EINVAL, "emu list takes no arguments");
                return emu_request(arg_json ? "list-json" : "list");
        }
        if (streq(verb, "wakeup") && argc == 3 && streq(argv[2], "force")) {
                n = snprintf(request, sizeof(request), "wakeup %s force", argv[1]);
                if (n < 0 || (size_t) n >= sizeof(request))
                        return log_error_errno(E2BIG, "Argument too long");
                return emu_request(request);
        }
        if (streq(verb, "fault")) {
                /* fault kinds | add NAME KIND [PARAM...] | list | clear WHAT | seed N: the words go as
                 * they are; the emulator checks them and names what was wrong. */
                const char *sub = argc > 1 ? argv[1] : NULL;
                size_t len;

                if (!sub)
                        return log_error_errno(EINVAL, "emu fault needs a command: kinds, add, list, clear, seed");
                if (streq(sub, "list") && arg_json)
                        return emu_request("fault list-json");
                len = (size_t) snprintf(request, sizeof(request), "fault");
                for (int i = 1; i < argc && len < sizeof(request); i++)
                        len += (size_t) snprintf(request + len, sizeof(request) - len, " %s", argv[i]);
                if (len >= sizeof(request))
                        return log_error_errno(E2BIG, "Fault specification too long");
                return emu_request(request);
        }
        if (streq(verb, "scenario")) {
                _cleanup_free_ char *path = NULL;

                if (argc == 3 && streq(argv[1], "run")) {
                        /* The emulator resolves nothing relative to its own working directory. */
                        path = realpath(argv[2], NULL);
                        if (!path)
                                return log_error_errno(errno, "Cannot use scenario file %s: %m", argv[2]);
                        n = snprintf(request, sizeof(request), "scenario run %s", path);
                } else if (argc == 2 && (streq(argv[1], "status") || streq(argv[1], "stop")))
                        n = snprintf(request, sizeof(request), "scenario %s", argv[1]);
                else
                        return log_error_errno(EINVAL, "usage: emu scenario run FILE | status | stop");
                if (n < 0 || (size_t) n >= sizeof(request))
                        return log_error_errno(E2BIG, "Path too long");
                return emu_request(request);
        }
        if (streq(verb, "type")) {
                if (argc != 3)
                        return log_error_errno(EINVAL, "emu type takes a keyboard and the text to type");
                n = snprintf(request, sizeof(request), "type %s %s", argv[1], argv[2]);
                if (n < 0 || (size_t) n >= sizeof(request))
                        return log_error_errno(E2BIG, "Text too long");
                return emu_request(request);
        }
        if (streq(verb, "show") || streq(verb, "add-disk") || streq(verb, "remove") ||
            streq(verb, "attach") || streq(verb, "detach") || streq(verb, "plug") || streq(verb, "unplug") ||
            streq(verb, "wakeup")) {
                if (argc != 2)
                        return log_error_errno(EINVAL, "emu %s takes exactly one argument", verb);
                if (streq(verb, "attach") && arg_controller)
                        n = snprintf(request, sizeof(request), "attach %s %s", argv[1], arg_controller);
                else
                        n = snprintf(request, sizeof(request), "%s %s", verb, argv[1]);
                if (n < 0 || (size_t) n >= sizeof(request))
                        return log_error_errno(E2BIG, "Argument too long");
                return emu_request(request);
        }
        return log_error_errno(EINVAL, "Unknown emu command '%s' (see --help)", verb);
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_EMU_SOCKET = 0x100, ARG_SOCKET, ARG_JSON, ARG_CONTROLLER, ARG_VERSION };
        static const struct option options[] = {
                { "emu-socket", required_argument, NULL, ARG_EMU_SOCKET },
                { "socket",     required_argument, NULL, ARG_SOCKET     },
                { "controller", required_argument, NULL, ARG_CONTROLLER },
                { "json",       no_argument,       NULL, ARG_JSON       },
                { "help",       no_argument,       NULL, 'h'            },
                { "version",    no_argument,       NULL, ARG_VERSION    },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0)
                switch (c) {
                case ARG_EMU_SOCKET:
                        arg_emu_socket = optarg;
                        break;
                case ARG_SOCKET:
                        arg_socket = optarg;
                        break;
                case ARG_CONTROLLER:
                        arg_controller = optarg;
                        break;
                case ARG_JSON:
                        arg_json = true;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("drowsectl " PACKAGE_VERSION "\n");
                        return 0;
                case '?':
                        return -EINVAL;
                default:
                        return log_error_errno(EINVAL, "Unhandled option");
                }
        return 1;
}

int main(int argc, char *argv[]) {
        int r;

        log_parse_environment();
        /* Options may also follow the command ("drowsectl emu list --json"): parse the words after it too.
         */
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        if (optind >= argc) {
                help();
                return EXIT_FAILURE;
        }

        char *words[64];
        int n = 0;
        for (int i = optind; i < argc && n < (int) ELEMENTSOF(words); i++) {
                if (streq(argv[i], "--json"))
                        arg_json = true;
                else if (strneq(argv[i], "--socket=", 9))
                        arg_socket = argv[i] + 9;
                else if (streq(argv[i], "--socket") && i + 1 < argc)
                        arg_socket = argv[++i];
                else if (strneq(argv[i], "--controller=", 13))
                        arg_controller = argv[i] + 13;
                else if (streq(argv[i], "--controller") && i + 1 < argc)
                        arg_controller = argv[++i];
                else
                        words[n++] = argv[i];
        }

        if (n > 0 && streq(words[0], "emu"))
                r = verb_emu(n - 1, words + 1);
        else if (n > 0)
                r = verb_daemon(n, words);
        else
                r = log_error_errno(EINVAL, "Unknown command '%s' (see --help)", n > 0 ? words[0] : "");
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
