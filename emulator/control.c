/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "config.h"
#include "control.h"
#include "disk.h"
#include "emu-config.h"
#include "injector.h"
#include "json.h"
#include "keyboard.h"
#include "tree.h"
#include "log.h"

typedef struct ControlClient ControlClient;

struct Control {
        Server *server;
        char *path;
        int fd;
        sd_event_source *source;
        ControlClient *clients;
        unsigned n_clients;
};

struct ControlClient {
        Control *control;
        int fd;
        sd_event_source *source;
        ControlClient *next, *prev;
};

static ControlClient *client_free(ControlClient *cc) {
        if (!cc)
                return NULL;
        if (cc->prev)
                cc->prev->next = cc->next;
        else
                cc->control->clients = cc->next;
        if (cc->next)
                cc->next->prev = cc->prev;
        cc->control->n_clients--;
        sd_event_source_disable_unref(cc->source);
        safe_close(cc->fd);
        return mfree(cc);
}

static const char *attachment(const Export *e, char *buf, size_t size) {
        if (e->hub_export)
                snprintf(buf, size, "%s port %u", e->hub_export->device->name, e->hub_port);
        else if (e->vhci_port >= 0)
                snprintf(buf, size, "vhci port %d", e->vhci_port);
        else if (e->connection)
                snprintf(buf, size, "%s", e->connection->peer);
        else
                snprintf(buf, size, "-");
        return buf;
}

static uint64_t idle_ms(const Server *s, const UsbDevice *d) {
        uint64_t now = 0;

        if (d->last_urb_usec == 0 || sd_event_now(s->event, CLOCK_MONOTONIC, &now) < 0 || now < d->last_urb_usec)
                return 0;
        return (now - d->last_urb_usec) / 1000;
}

static uint64_t idle_since_ms(const Server *s, uint64_t since) {
        uint64_t now = 0;

        if (sd_event_now(s->event, CLOCK_MONOTONIC, &now) < 0 || now < since)
                return 0;
        return (now - since) / 1000;
}

static void describe_json(Server *s, const Export *e, FILE *f) {
        const UsbDevice *d = e->device;
        const UsbDeviceStats *st = &d->stats;

        fprintf(f, "{\"name\": ");
        json_write_string(f, d->name);
        fprintf(f, ", \"busid\": ");
        json_write_string(f, e->busid);
        fprintf(f, ", \"speed\": ");
        json_write_string(f, usb_speed_to_string(d->speed));
        fprintf(f, ", \"state\": ");
        json_write_string(f, usb_device_state_to_string(d->state));
        fprintf(f, ", \"configuration\": %u, \"remote_wakeup\": %s, \"link\": ", d->configuration,
                d->remote_wakeup ? "true" : "false");
        json_write_string(f, usb_link_state_to_string(d->link));
        fprintf(f, ", \"link_since_ms\": %" PRIu64 ", \"suspends\": %" PRIu64 ", \"resumes\": %" PRIu64
                ", \"wakeups_signalled\": %" PRIu64 ", \"vhci_port\": %d, \"hub\": ",
                d->link_since_usec ? idle_since_ms(s, d->link_since_usec) : 0, d->suspends, d->resumes,
                d->wakeups_signalled, e->vhci_port);
        if (e->hub_export) {
                json_write_string(f, e->hub_export->device->name);
                fprintf(f, ", \"hub_port\": %u", e->hub_port);
        } else
                fputs("null", f);
        fputs(", \"importer\": ", f);
        if (e->connection)
                json_write_string(f, e->connection->peer);
        else
                fputs("null", f);
        fprintf(f, ", \"pending_urbs\": %u, \"idle_ms\": %" PRIu64 ", \"stats\": {\"urbs\": %" PRIu64
                ", \"control_requests\": %" PRIu64 ", \"stalls\": %" PRIu64 ", \"unlinks_pending\": %" PRIu64
                ", \"unlinks_late\": %" PRIu64 ", \"resumes_inferred\": %" PRIu64
                ", \"bus_resets_inferred\": %" PRIu64 ", \"remote_wakeup_sets\": %" PRIu64
                ", \"remote_wakeup_clears\": %" PRIu64 "}",
                d->n_pending, idle_ms(s, d), st->urbs, st->control_requests, st->stalls, st->unlinks_pending,
                st->unlinks_late, st->resumes_inferred, st->bus_resets_inferred, st->remote_wakeup_sets,
                st->remote_wakeup_clears);
        if (d->ops && d->ops->describe) {
                fputs(", ", f);
                d->ops->describe(d->function, f);
        }
        fputc('}', f);
}

_printf_(3, 4) static int reply_error(FILE *f, int r, const char *fmt, ...) {
        va_list ap;

        fputs("error: ", f);
        va_start(ap, fmt);
        vfprintf(f, fmt, ap);
        va_end(ap);
        fputc('\n', f);
        return r;
}

static Export *lookup(Server *s, const char *name, FILE *f) {
        Export *e = name && *name ? server_lookup(s, name) : NULL;

        if (!e)
                (void) reply_error(f, -ENOENT, "no device '%s' (see: list)", name ?: "");
        return e;
}

static int handle_add_disk(Server *s, const char *spec, FILE *f) {
        _cleanup_(emu_config_done) EmuConfig config = {};
        const char *error = NULL;
        UsbDevice *d;
        Export *e;
        char name[32];
        int r;

        emu_config_init(&config);
        r = emu_config_add_disk_spec(&config, spec, &error);
        if (r < 0)
                return reply_error(f, r, "bad disk spec: %s", r == -ENOMEM ? "out of memory" : error);

        /* Default names continue after the devices that exist: disk0 is whatever was first. */
        if (!strstr(spec, ",name=")) {
                for (unsigned i = 0;; i++) {
                        snprintf(name, sizeof(name), "disk%u", i);
                        if (!server_lookup(s, name))
                                break;
                }
                free(config.disks[0].name);
                config.disks[0].name = strdup(name);
                if (!config.disks[0].name)
                        return reply_error(f, -ENOMEM, "%s", "out of memory");
        } else if (server_lookup(s, config.disks[0].name))
                return reply_error(f, -EEXIST, "a device named '%s' exists already", config.disks[0].name);

        r = disk_new(&config.disks[0], &d);
        if (r < 0)
                return reply_error(f, r, "cannot create the disk: %s", disk_image_error(r));
        r = server_add_device(s, d, &e);
        if (r < 0) {
                usb_device_free(d);
                return reply_error(f, r, "cannot export it: %s", strerror(-r));
        }
        log_info("%s: added at run time as %s (%s)", d->name, e->busid, config.disks[0].image);
        fputs("ok\n", f);
        describe_json(s, e, f);
        fputc('\n', f);
        return 0;
}

static int handle_fault(Server *s, char *arg, FILE *f) {
        char *save = NULL, *sub = strtok_r(arg, " ", &save), *rest = strtok_r(NULL, "", &save);
        Injector *inj = s->injector;
        int r;

        if (!sub)
                return reply_error(f, -EINVAL, "%s", "usage: fault kinds | add NAME KIND [PARAM...] | list | "
                                   "list-json | clear all|ID|NAME | seed N");
        if (streq(sub, "kinds")) {
                fputs("ok\n", f);
                fault_dump_catalogue(f);
                return 0;
        }
        if (!inj)
                return reply_error(f, -EOPNOTSUPP, "%s", "fault injection is not set up in this process");
        if (streq(sub, "add")) {
                _cleanup_free_ char *error = NULL;
                char *name = rest ? strtok_r(rest, " ", &save) : NULL, *spec = strtok_r(NULL, "", &save);
                Export *e = lookup(s, name, f);

                if (!e)
                        return -ENOENT;
                r = injector_add(inj, e, spec, &error);
                if (r < 0)
                        return reply_error(f, r, "%s", error ?: strerror(-r));
                fprintf(f, "ok\nfault %d\n", r);
                return 0;
        }
        if (streq(sub, "list") || streq(sub, "list-json")) {
                fputs("ok\n", f);
                injector_list(inj, streq(sub, "list-json"), f);
                return 0;
        }
        if (streq(sub, "clear")) {
                if (!rest)
                        return reply_error(f, -EINVAL, "%s", "usage: fault clear all|ID|NAME");
                r = injector_clear(inj, rest);
                if (r < 0)
                        return reply_error(f, r, "no fault or device '%s' (see: fault list)", rest);
                fprintf(f, "ok\n%d cleared\n", r);
                return 0;
        }
        if (streq(sub, "seed")) {
                char *end = NULL;
                unsigned long long seed;

                errno = 0;
                seed = rest && *rest >= '0' && *rest <= '9' ? strtoull(rest, &end, 0) : 0;
                if (!end || *end || errno)
                        return reply_error(f, -EINVAL, "bad seed '%s': expected an unsigned number", rest ?: "");
                injector_set_seed(inj, seed);
                fputs("ok\n", f);
                return 0;
        }
        return reply_error(f, -EOPNOTSUPP, "unknown fault request '%s' (kinds, add, list, list-json, clear, seed)",
                           sub);
}

static int handle_scenario(Server *s, char *arg, FILE *f) {
        char *save = NULL, *sub = strtok_r(arg, " ", &save), *rest = strtok_r(NULL, "", &save);
        Injector *inj = s->injector;
        int r;

        if (!inj)
                return reply_error(f, -EOPNOTSUPP, "%s", "fault injection is not set up in this process");
        if (sub && streq(sub, "run")) {
                _cleanup_free_ char *error = NULL;

                if (!rest || rest[0] != '/')
                        return reply_error(f, -EINVAL, "%s", "usage: scenario run /ABSOLUTE/PATH");
                r = injector_run_scenario(inj, rest, &error);
                if (r < 0)
                        return reply_error(f, r, "%s", error ?: strerror(-r));
                fputs("ok\n", f);
                injector_scenario_status(inj, f);
                return 0;
        }
        if (sub && streq(sub, "status")) {
                fputs("ok\n", f);
                injector_scenario_status(inj, f);
                return 0;
        }
        if (sub && streq(sub, "stop")) {
                r = injector_stop_scenario(inj);
                if (r < 0)
                        return reply_error(f, r, "%s", "no scenario is running");
                fputs("ok\n", f);
                return 0;
        }
        return reply_error(f, -EINVAL, "%s", "usage: scenario run PATH | status | stop");
}

int control_handle(Server *s, const char *request, FILE *f) {
        _cleanup_free_ char *copy = strdup(request);
        char *verb, *arg, *save = NULL;
        Export *e;
        int r;

        if (!copy)
                return reply_error(f, -ENOMEM, "%s", "out of memory");
        copy[strcspn(copy, "\n")] = 0;
        verb = strtok_r(copy, " ", &save);
        arg = strtok_r(NULL, "", &save);
        if (!verb)
                return reply_error(f, -EINVAL, "%s", "empty request");

        if (streq(verb, "version")) {
                fprintf(f, "ok\ndrowse-emu %s\n", PACKAGE_VERSION);
                return 0;
        }
        if (streq(verb, "list")) {
                char buf[64];
                fputs("ok\n", f);
                fprintf(f, "%-12s %-6s %-6s %-11s %-10s %-3s %-24s %9s %8s %7s\n", "NAME", "BUSID", "SPEED",
                        "STATE", "LINK", "RW", "ATTACHED", "URBS", "RESUMES", "IDLE_S");
                for (size_t i = 0; i < s->n_exports; i++) {
                        const Export *x = s->exports[i];
                        const UsbDevice *d = x->device;
                        fprintf(f, "%-12s %-6s %-6s %-11s %-10s %-3s %-24s %9" PRIu64 " %8" PRIu64 " %7.1f\n",
                                d->name, x->busid, usb_speed_to_string(d->speed),
                                usb_device_state_to_string(d->state), usb_link_state_to_string(d->link),
                                d->remote_wakeup ? "on" : "off", attachment(x, buf, sizeof(buf)), d->stats.urbs,
                                x->hub_export ? d->resumes : d->stats.resumes_inferred,
                                (double) idle_ms(s, d) / 1000);
                }
                return 0;
        }
        if (streq(verb, "list-json")) {
                fputs("ok\n[", f);
                for (size_t i = 0; i < s->n_exports; i++) {
                        if (i)
                                fputs(",\n ", f);
                        describe_json(s, s->exports[i], f);
                }
                fputs("]\n", f);
                return 0;
        }
        if (streq(verb, "show")) {
                e = lookup(s, arg, f);
                if (!e)
                        return -ENOENT;
                fputs("ok\n", f);
                describe_json(s, e, f);
                fputc('\n', f);
                return 0;
        }
        if (streq(verb, "add-disk")) {
                if (!arg)
                        return reply_error(f, -EINVAL, "%s", "usage: add-disk PATH[,OPTION...]");
                return handle_add_disk(s, arg, f);
        }
        if (streq(verb, "plug") || streq(verb, "unplug")) {
                e = lookup(s, arg, f);
                if (!e)
                        return -ENOENT;
                if (!e->hub_export)
                        return reply_error(f, -EINVAL, "'%s' is not behind a hub (detach and attach a root-port "
                                           "device instead)", arg);
                r = verb[0] == 'p' ? tree_plug(e) : tree_unplug(e);
                if (r == -EALREADY)
                        return reply_error(f, r, "'%s' is already %s", arg, verb[0] == 'p' ? "plugged" : "unplugged");
                if (r < 0)
                        return reply_error(f, r, "%s failed: %s", verb, strerror(-r));
                fputs("ok\n", f);
                return 0;
        }
        if (streq(verb, "wakeup")) {
                char *name = strtok_r(arg, " ", &save), *flag = strtok_r(NULL, " ", &save);
                bool force = flag && streq(flag, "force");

                e = lookup(s, name, f);
                if (!e)
                        return -ENOENT;
                r = usb_device_signal_wakeup(e->device, force);
                if (r < 0)
                        return reply_error(f, r, "%s", r == -EAGAIN ? "the device is not suspended" :
                                                       r == -EPERM ? "the host has not armed remote wakeup "
                                                                     "(wakeup NAME force signals anyway)" :
                                                       r == -EOPNOTSUPP ? "only a device behind a hub can signal "
                                                                          "wakeup over vhci" :
                                                       strerror(-r));
                fputs("ok\n", f);
                return 0;
        }
        if (streq(verb, "fault"))
                return handle_fault(s, arg, f);
        if (streq(verb, "scenario"))
                return handle_scenario(s, arg, f);
        if (streq(verb, "type")) {
                char *name = strtok_r(arg, " ", &save), *text = strtok_r(NULL, "", &save);
                Keyboard *k;

                e = lookup(s, name, f);
                if (!e)
                        return -ENOENT;
                k = keyboard_from_device(e->device);
                if (!k)
                        return reply_error(f, -EINVAL, "'%s' is not a keyboard", name);
                r = keyboard_type(k, text ?: "");
                if (r < 0)
                        return reply_error(f, r, "%s", r == -EINVAL ? "a character has no key on a US keyboard"
                                                                    : "too much typing queued");
                fprintf(f, "ok\n%d keys\n", r);
                return 0;
        }
        if (streq(verb, "remove")) {
                e = lookup(s, arg, f);
                if (!e)
                        return -ENOENT;
                if (tree_is_hub(e))
                        for (size_t i = 0; i < s->n_exports; i++)
                                if (s->exports[i]->hub_export == e)
                                        return reply_error(f, -EBUSY, "remove the devices on '%s' first", arg);
                log_info("%s: removed at run time", e->device->name);
                r = server_remove_export(s, e);
                if (r < 0)
                        return reply_error(f, r, "cannot remove: %s", strerror(-r));
                fputs("ok\n", f);
                return 0;
        }
        if (streq(verb, "attach")) {
                char *name = strtok_r(arg, " ", &save), *ctl = strtok_r(NULL, " ", &save);
                int controller = -1;

                e = lookup(s, name, f);
                if (!e)
                        return -ENOENT;
                if (ctl) {
                        char *end;
                        long v = strtol(ctl, &end, 10);
                        if (*end || v < 0 || v > 127)
                                return reply_error(f, -EINVAL, "bad controller number '%s'", ctl);
                        controller = (int) v;
                }
                if (e->connection)
                        return reply_error(f, -EBUSY, "already in use by %s", e->connection->peer);
                if (e->local_only)
                        return reply_error(f, -EINVAL, "'%s' is part of a hub tree, attached with its hub", name);
                r = server_attach_auto(s, e, controller);
                if (r < 0)
                        return reply_error(f, r, "attach failed: %s (see the emulator's log)", strerror(-r));
                fprintf(f, "ok\nvhci port %d\n", e->vhci_port);
                return 0;
        }
        if (streq(verb, "detach")) {
                e = lookup(s, arg, f);
                if (!e)
                        return -ENOENT;
                if (e->vhci_port < 0)
                        return reply_error(f, -EINVAL, "'%s' is not attached locally", arg);
                r = server_detach_local(s, e);
                if (r < 0)
                        return reply_error(f, r, "detach failed: %s", strerror(-r));
                fputs("ok\n", f);
                return 0;
        }
        return reply_error(f, -EOPNOTSUPP, "unknown request '%s' (list, list-json, show, add-disk, remove, attach, "
                           "detach, plug, unplug, wakeup, type, fault, scenario, version)", verb);
}

static int on_client(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        ControlClient *cc = userdata;
        char request[CONTROL_MAX_REQUEST + 1];
        _cleanup_free_ char *reply = NULL;
        size_t reply_size = 0;
        FILE *f;
        ssize_t n;

        n = recv(fd, request, CONTROL_MAX_REQUEST, MSG_TRUNC | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n <= 0) {
                client_free(cc);
                return 0;
        }

        f = open_memstream(&reply, &reply_size);
        if (!f) {
                client_free(cc);
                return 0;
        }
        if (n > CONTROL_MAX_REQUEST)
                fprintf(f, "error: request longer than %u bytes\n", CONTROL_MAX_REQUEST);
        else {
                request[n] = 0;
                (void) control_handle(cc->control->server, request, f);
        }
        if (fclose(f) != 0 || send(fd, reply, reply_size, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                client_free(cc);
        return 0;
}

static int on_accept(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Control *c = userdata;
        ControlClient *cc;
        int cfd;

        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
                return 0;
        if (c->n_clients >= CONTROL_MAX_CLIENTS) {
                log_warning("Control socket: refused a client, already %u connected", c->n_clients);
                safe_close(cfd);
                return 0;
        }
        cc = calloc(1, sizeof(ControlClient));
        if (!cc) {
                safe_close(cfd);
                return 0;
        }
        cc->control = c;
        cc->fd = cfd;
        if (sd_event_add_io(c->server->event, &cc->source, cfd, EPOLLIN, on_client, cc) < 0) {
                safe_close(cfd);
                free(cc);
                return 0;
        }
        cc->next = c->clients;
        if (c->clients)
                c->clients->prev = cc;
        c->clients = cc;
        c->n_clients++;
        return 0;
}

int control_new(Server *server, const char *path, Control **ret) {
        _cleanup_(control_freep) Control *c = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct stat st;
        int r;

        if (strlen(path) >= sizeof(sa.sun_path))
                return log_error_errno(ENAMETOOLONG, "Control socket path too long: %s", path);
        strcpy(sa.sun_path, path);

        c = calloc(1, sizeof(Control));
        if (!c)
                return log_oom();
        c->server = server;
        c->fd = -EBADF;

        c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return log_error_errno(errno, "Cannot create control socket: %m");

        /* A socket left by an emulator that died is replaced; one that still answers is not ours to take. */
        if (lstat(path, &st) == 0) {
                int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
                bool live = S_ISSOCK(st.st_mode) && probe >= 0 &&
                            connect(probe, (struct sockaddr *) &sa, sizeof(sa)) == 0;
                safe_close(probe);
                if (!S_ISSOCK(st.st_mode))
                        return log_error_errno(EEXIST, "%s exists and is not a socket", path);
                if (live)
                        return log_error_errno(EADDRINUSE, "%s is in use by another drowse-emu", path);
                (void) unlink(path);
        }

        mode_t old = umask(0077);
        r = bind(c->fd, (struct sockaddr *) &sa, sizeof(sa));
        umask(old);
        if (r < 0)
                return log_error_errno(errno, "Cannot bind control socket %s: %m", path);
        if (listen(c->fd, 8) < 0)
                return log_error_errno(errno, "listen() on %s failed: %m", path);
        c->path = strdup(path);
        if (!c->path)
                return log_oom();
        r = sd_event_add_io(server->event, &c->source, c->fd, EPOLLIN, on_accept, c);
        if (r < 0)
                return log_error_errno(r, "Cannot watch control socket: %m");

        log_info("Control socket on %s", path);
        *ret = TAKE_PTR(c);
        return 0;
}

Control *control_free(Control *c) {
        if (!c)
                return NULL;
        while (c->clients)
                client_free(c->clients);
        sd_event_source_disable_unref(c->source);
        if (c->fd >= 0 && c->path)
                (void) unlink(c->path);
        safe_close(c->fd);
        free(c->path);
        return mfree(c);
}
