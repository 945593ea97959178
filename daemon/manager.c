/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "bus.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "manager.h"
#include "power.h"

#define MAX_CONNECTIONS 16
#define MAX_REQUEST 512

static const char *const monitor_source_table[_MONITOR_SOURCE_MAX] = {
        [MONITOR_UDEV] = "udev",
        [MONITOR_KERNEL] = "kernel",
};
DEFINE_STRING_TABLE_LOOKUP(monitor_source, MonitorSource);

struct Manager {
        sd_event *event;
        struct udev *udev;
        struct udev_monitor *monitor;
        sd_event_source *monitor_source, *defer_source, *control_source;
        MonitorSource monitor_kind;
        bool want_bus;
        PowerSource power;
        sd_bus *bus;

        char *config_path;
        Policy policy;
        char config_error[POLICY_ERROR_MAX]; /* of the last failed reload, "" if it worked */

        Device **devices;
        size_t n_devices;

        char *control_path;
        int control_fd;
        unsigned n_connections;
};

static const char *const monitored_subsystems[] = { "usb", "scsi", "scsi_disk", "block", "power_supply" };

int manager_new(const ManagerOptions *o, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(Manager));
        if (!m)
                return -ENOMEM;
        m->control_fd = -EBADF;
        policy_init(&m->policy);
        m->monitor_kind = o->monitor;
        m->want_bus = o->bus;
        m->config_path = strdup(o->config_path ?: DEFAULT_CONFIG_PATH);
        if (!m->config_path)
                return -ENOMEM;
        if (o->control_path) {
                m->control_path = strdup(o->control_path);
                if (!m->control_path)
                        return -ENOMEM;
        }
        m->udev = udev_new();
        if (!m->udev)
                return -ENOMEM;
        r = sd_event_default(&m->event);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_devices; i++)
                device_free(m->devices[i]);
        free(m->devices);
        sd_bus_flush_close_unref(m->bus);
        sd_event_source_unref(m->monitor_source);
        sd_event_source_unref(m->defer_source);
        sd_event_source_unref(m->control_source);
        if (m->monitor)
                udev_monitor_unref(m->monitor);
        if (m->udev)
                udev_unref(m->udev);
        sd_event_unref(m->event);
        if (m->control_fd >= 0 && m->control_path)
                (void) unlink(m->control_path);
        safe_close(m->control_fd);
        free(m->control_path);
        free(m->config_path);
        policy_done(&m->policy);
        return mfree(m);
}

int manager_load_config(Manager *m) {
        char error[POLICY_ERROR_MAX] = "";
        int r;

        r = policy_load(&m->policy, m->config_path, error, sizeof(error));
        if (r < 0)
                return log_error_errno(r, "Invalid configuration: %s", error);
        log_info("Configuration %s loaded: %zu rules", m->config_path, m->policy.n_rules);
        return 0;
}

static void manager_mark_all_dirty(Manager *m);
static int manager_schedule(Manager *m);
static bool update_power(Manager *m);

int manager_reload(Manager *m, char *error, size_t error_size) {
        Policy p;
        int r;

        policy_init(&p);
        r = policy_load(&p, m->config_path, error, error_size);
        if (r < 0) {
                policy_done(&p);
                snprintf(m->config_error, sizeof(m->config_error), "%s", error);
                return log_error_errno(r, "Reload failed, keeping the previous configuration: %s", error);
        }
        policy_done(&m->policy);
        m->policy = p;
        m->config_error[0] = 0;
        log_info("Configuration %s reloaded: %zu rules", m->config_path, m->policy.n_rules);
        (void) update_power(m); /* usb-power-supplies may have changed */
        manager_mark_all_dirty(m);
        return manager_schedule(m);
}

struct udev *manager_udev(Manager *m) {
        return m->udev;
}

const char *manager_config_path(Manager *m) {
        return m->config_path;
}

size_t manager_n_devices(Manager *m) {
        return m->n_devices;
}

Device *manager_device(Manager *m, size_t i) {
        return i < m->n_devices ? m->devices[i] : NULL;
}

static Device *find_syspath(Manager *m, const char *syspath) {
        for (size_t i = 0; i < m->n_devices; i++)
                if (streq(m->devices[i]->syspath, syspath))
                        return m->devices[i];
        return NULL;
}

Device *manager_find(Manager *m, const char *name) {
        char path[4096];
        _cleanup_free_ char *real = NULL;

        for (size_t i = 0; i < m->n_devices; i++) {
                Device *d = m->devices[i];
                if (streq(d->sysname, name) || streq(d->devpath, name) || streq(d->syspath, name))
                        return d;
        }
        /* A block device name ("sdb") or any sysfs path below a USB device. */
        if (strchr(name, '/'))
                snprintf(path, sizeof(path), "%s", name);
        else
                snprintf(path, sizeof(path), "/sys/class/block/%s", name);
        real = realpath(path, NULL);
        if (!real)
                return NULL;
        Device *best = NULL;
        for (size_t i = 0; i < m->n_devices; i++) {
                size_t l = strlen(m->devices[i]->syspath);
                if (strneq(real, m->devices[i]->syspath, l) && (real[l] == '/' || real[l] == 0) &&
                    (!best || l > strlen(best->syspath)))
                        best = m->devices[i];
        }
        return best;
}

static void manager_mark_all_dirty(Manager *m) {
        for (size_t i = 0; i < m->n_devices; i++)
                m->devices[i]->dirty = true;
}

/* Root hubs are the HCD's business. */
static bool is_root_hub(struct udev_device *dev) {
        const char *s = udev_device_get_sysname(dev);
        return s && strneq(s, "usb", 3);
}

static int track(Manager *m, struct udev_device *usbdev) {
        Device *d;
        int r;

        if (is_root_hub(usbdev))
                return 0;
        d = find_syspath(m, udev_device_get_syspath(usbdev));
        if (d) {
                d->dirty = true;
                return 0;
        }
        Device **n = reallocarray(m->devices, m->n_devices + 1, sizeof(Device *));
        if (!n)
                return log_oom();
        m->devices = n;
        r = device_new(usbdev, &d);
        if (r < 0)
                return log_warning_errno(r, "Cannot track %s: %m", udev_device_get_syspath(usbdev));
        m->devices[m->n_devices++] = d;
        log_debug("Tracking %s (%s)", d->devpath, d->id);
        return 0;
}

static void untrack(Manager *m, const char *syspath) {
        for (size_t i = 0; i < m->n_devices; i++) {
                Device *d = m->devices[i];
                if (!streq(d->syspath, syspath))
                        continue;
                log_info("%s (%s): removed", d->devpath, d->id);
                /* Its vhci root-port slot may go to another device. */
                if (d->vhci_root_port)
                        for (size_t j = 0; j < m->n_devices; j++)
                                if (j != i && streq(m->devices[j]->vhci, d->vhci))
                                        m->devices[j]->dirty = true;
                device_free(d);
                memmove(m->devices + i, m->devices + i + 1, (m->n_devices - i - 1) * sizeof(Device *));
                m->n_devices--;
                return;
        }
}

/* Which other root-port device of the same vhci_hcd already holds an autosuspend slot. */
static const char *vhci_holder(Manager *m, const Device *d) {
        unsigned held = 0;
        const char *last = NULL;

        if (!d->vhci_root_port || m->policy.vhci_root_ports == 0)
                return NULL;
        for (size_t i = 0; i < m->n_devices; i++) {
                const Device *o = m->devices[i];
                if (o != d && o->vhci_root_port && o->state == DEVICE_AUTOSUSPEND &&
                    streq(o->vhci, d->vhci)) {
                        held++;
                        last = o->sysname;
                }
        }
        return held >= m->policy.vhci_root_ports ? last : NULL;
}

static void notify_status(Manager *m) {
        unsigned counts[_DEVICE_STATE_MAX] = {};
        for (size_t i = 0; i < m->n_devices; i++)
                counts[m->devices[i]->state]++;
        (void) sd_notifyf(false,
                          "STATUS=%zu USB devices: %u autosuspending, %u excluded, %u refused, %u pending",
                          m->n_devices, counts[DEVICE_AUTOSUSPEND], counts[DEVICE_EXCLUDED],
                          counts[DEVICE_REFUSED], counts[DEVICE_PENDING]);
}

static int manager_apply_dirty(Manager *m) {
        /* A vhci root-port device that stops autosuspending frees its slot for a peer: go round again
         * until nothing is dirty. Each round clears at least one device, so this ends. */
        for (size_t round = 0; round <= m->n_devices; round++) {
                bool again = false;
                for (size_t i = 0; i < m->n_devices; i++) {
                        Device *d = m->devices[i];
                        DeviceState old = d->state;
                        int r;

                        if (!d->dirty)
                                continue;
                        r = device_apply(d, m->udev, &m->policy, m->power, vhci_holder(m, d));
                        if (r < 0)
                                log_warning_errno(r, "%s: cannot apply policy: %m", d->devpath);
                        d->dirty = false;
                        if (d->vhci_root_port && old == DEVICE_AUTOSUSPEND && d->state != DEVICE_AUTOSUSPEND)
                                for (size_t j = 0; j < m->n_devices; j++)
                                        if (j != i && streq(m->devices[j]->vhci, d->vhci) &&
                                            m->devices[j]->state == DEVICE_REFUSED) {
                                                m->devices[j]->dirty = true;
                                                again = true;
                                        }
                }
                if (!again)
                        break;
        }
        notify_status(m);
        return 0;
}

static int on_defer(sd_event_source *s, void *userdata) {
        return manager_apply_dirty(userdata);
}

/* Coalesces a burst of uevents into one pass over the changed devices. */
static int manager_schedule(Manager *m) {
        if (!m->event)
                return 0;
        if (!m->defer_source)
                return sd_event_add_defer(m->event, &m->defer_source, on_defer, m) < 0 ? -ENOMEM :
                       sd_event_source_set_enabled(m->defer_source, SD_EVENT_ONESHOT);
        return sd_event_source_set_enabled(m->defer_source, SD_EVENT_ONESHOT);
}

/* Returns true if the power source changed. */
static bool update_power(Manager *m) {
        PowerSource p;
        char why[160];

        if (power_source_detect(m->udev, m->policy.usb_power_supplies, &p, why, sizeof(why)) < 0)
                return false;
        if (p == m->power)
                return false;
        m->power = p;
        log_info("Power source: %s (%s)", power_source_to_string(p), why);
        return true;
}

PowerSource manager_power(Manager *m) {
        return m->power;
}

int manager_coldplug(Manager *m) {
        struct udev_enumerate *e = udev_enumerate_new(m->udev);
        struct udev_list_entry *i;
        int r;

        if (!e)
                return -ENOMEM;
        r = udev_enumerate_add_match_subsystem(e, "usb");
        if (r >= 0)
                r = udev_enumerate_add_match_property(e, "DEVTYPE", "usb_device");
        if (r >= 0)
                r = udev_enumerate_scan_devices(e);
        if (r < 0) {
                udev_enumerate_unref(e);
                return log_error_errno(r, "Cannot enumerate USB devices: %m");
        }
        m->power = _POWER_SOURCE_INVALID;
        (void) update_power(m);
        if (m->power < 0)
                m->power = POWER_AC;
        udev_list_entry_foreach(i, udev_enumerate_get_list_entry(e)) {
                struct udev_device *dev = udev_device_new_from_syspath(m->udev, udev_list_entry_get_name(i));
                if (!dev)
                        continue;
                (void) track(m, dev);
                udev_device_unref(dev);
        }
        udev_enumerate_unref(e);
        log_info("Coldplug: %zu USB devices", m->n_devices);
        return manager_apply_dirty(m);
}

static void handle_uevent(Manager *m, struct udev_device *dev) {
        const char *action = udev_device_get_action(dev) ?: "";
        const char *ss = udev_device_get_subsystem(dev) ?: "";
        const char *type = udev_device_get_devtype(dev);
        struct udev_device *usbdev;

        log_debug("uevent %s %s (%s)", action, udev_device_get_devpath(dev), ss);
        if (streq(ss, "power_supply")) {
                /* Plugging in or pulling the charger: every device's decision may change. */
                if (update_power(m)) {
                        manager_mark_all_dirty(m);
                        (void) manager_schedule(m);
                }
                return;
        }
        if (streq(action, "remove") && streq(ss, "usb") && type && streq(type, "usb_device")) {
                untrack(m, udev_device_get_syspath(dev));
                (void) manager_schedule(m);
                return;
        }
        if (!streq(action, "add") && !streq(action, "bind") && !streq(action, "change") &&
            !streq(action, "unbind") && !streq(action, "remove"))
                return;
        /* Anything in a USB device's subtree (an interface binding, a LUN appearing, a disk's driver
         * binding) re-evaluates that device: apply is idempotent and writes only what differs. */
        if (streq(ss, "usb") && type && streq(type, "usb_device"))
                usbdev = dev;
        else
                usbdev = udev_device_get_parent_with_subsystem_devtype(dev, "usb", "usb_device");
        if (!usbdev)
                return;
        if (streq(action, "remove") && !find_syspath(m, udev_device_get_syspath(usbdev)))
                return;
        if (track(m, usbdev) >= 0)
                (void) manager_schedule(m);
}

static int on_monitor(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;

        for (unsigned n = 0; n < 256; n++) {
                struct udev_device *dev = udev_monitor_receive_device(m->monitor);
                if (!dev)
                        break;
                handle_uevent(m, dev);
                udev_device_unref(dev);
        }
        return 0;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        char error[POLICY_ERROR_MAX];
        (void) sd_notify(false, "RELOADING=1");
        (void) manager_reload(userdata, error, sizeof(error));
        (void) sd_notify(false, "READY=1");
        return 0;
}

void manager_dump_list(Manager *m, bool json, FILE *f) {
        if (json) {
                fputs("{\"devices\":[", f);
                for (size_t i = 0; i < m->n_devices; i++) {
                        if (i)
                                fputc(',', f);
                        device_dump_json(m->devices[i], f);
                }
                fputs("]}\n", f);
                return;
        }
        fprintf(f, "%-10s %-9s %-11s %s\n", "DEVICE", "ID", "STATE", "REASON");
        for (size_t i = 0; i < m->n_devices; i++)
                device_dump_text(m->devices[i], f);
}

static void dump_status(Manager *m, bool json, FILE *f) {
        unsigned counts[_DEVICE_STATE_MAX] = {};
        for (size_t i = 0; i < m->n_devices; i++)
                counts[m->devices[i]->state]++;
        if (json) {
                fputs("{\"version\":\"" PACKAGE_VERSION "\",\"config\":", f);
                json_write_string(f, m->config_path);
                fputs(",\"config_error\":", f);
                if (m->config_error[0])
                        json_write_string(f, m->config_error);
                else
                        fputs("null", f);
                fprintf(f, ",\"rules\":%zu,\"monitor\":\"%s\",\"power\":\"%s\",\"dbus\":%s,\"devices\":%zu,",
                        m->policy.n_rules, monitor_source_to_string(m->monitor_kind),
                        power_source_to_string(m->power), m->bus ? "true" : "false", m->n_devices);
                fputs("\"states\":{", f);
                for (DeviceState s = 0; s < _DEVICE_STATE_MAX; s++)
                        fprintf(f, "%s\"%s\":%u", s ? "," : "", device_state_to_string(s), counts[s]);
                fputs("}}\n", f);
                return;
        }
        fprintf(f, "drowsed %s\nConfiguration: %s (%zu rules)%s%s\nMonitor: %s\nDevices: %zu\n",
                PACKAGE_VERSION, m->config_path, m->policy.n_rules,
                m->config_error[0] ? "\nLast reload failed: " : "", m->config_error,
                monitor_source_to_string(m->monitor_kind), m->n_devices);
        for (DeviceState s = 0; s < _DEVICE_STATE_MAX; s++)
                fprintf(f, "  %-11s %u\n", device_state_to_string(s), counts[s]);
}

/* One request, one answer: "ok\n" + payload, or "error: ..." . */
static int handle_request(Manager *m, const char *req, uid_t uid, FILE *f) {
        char verb[32], arg[MAX_REQUEST];
        bool json;
        Device *d;

        arg[0] = 0;
        if (sscanf(req, "%31s %511[^\n]", verb, arg) < 1) {
                fputs("error: empty request\n", f);
                return 0;
        }
        json = strlen(verb) > 5 && streq(verb + strlen(verb) - 5, "-json");
        if (json)
                verb[strlen(verb) - 5] = 0;

        if (streq(verb, "status")) {
                fputs("ok\n", f);
                dump_status(m, json, f);
        } else if (streq(verb, "list")) {
                fputs("ok\n", f);
                manager_dump_list(m, json, f);
        } else if (streq(verb, "show") || streq(verb, "why")) {
                d = arg[0] ? manager_find(m, arg) : NULL;
                if (!d) {
                        fprintf(f, "error: no USB device '%s' known to drowsed\n", arg);
                        return 0;
                }
                fputs("ok\n", f);
                if (streq(verb, "show")) {
                        device_dump_json(d, f);
                        fputc('\n', f);
                } else if (device_why(d, m->udev, json, f) < 0) {
                        /* Drop the "ok" and whatever followed it. */
                        fflush(f);
                        rewind(f);
                        fprintf(f, "error: %s vanished\n", d->sysname);
                        return 0;
                }
        } else if (streq(verb, "reload")) {
                char error[POLICY_ERROR_MAX];
                if (uid != 0) {
                        fputs("error: reload needs root\n", f);
                        return 0;
                }
                if (manager_reload(m, error, sizeof(error)) < 0) {
                        fprintf(f, "error: %s (kept the previous configuration)\n", error);
                        return 0;
                }
                fputs("ok\n", f);
        } else
                fprintf(f, "error: unknown request '%s'\n", verb);
        return 0;
}

static int on_connection(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        char req[MAX_REQUEST + 1];
        struct ucred cred = {};
        socklen_t cl = sizeof(cred);
        _cleanup_free_ char *reply = NULL;
        size_t reply_size = 0;
        ssize_t n;
        FILE *f;

        n = recv(fd, req, MAX_REQUEST, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n > 0 && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) >= 0) {
                req[n] = 0;
                f = open_memstream(&reply, &reply_size);
                if (f) {
                        /* Answers are built while the lock-step loop holds: no state can change midway. */
                        (void) handle_request(m, req, cred.uid, f);
                        if (fclose(f) == 0)
                                (void) send(fd, reply, reply_size, MSG_NOSIGNAL | MSG_DONTWAIT);
                }
        }
        /* The loop holds the only reference of this floating source: dropping it frees the source and
         * closes the connection (io_fd_own). */
        sd_event_source_disable_unref(s);
        m->n_connections--;
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        sd_event_source *cs;

        if (c < 0)
                return 0;
        if (m->n_connections >= MAX_CONNECTIONS) {
                log_debug("Too many control connections, refusing one");
                safe_close(c);
                return 0;
        }
        if (sd_event_add_io(m->event, &cs, c, EPOLLIN, on_connection, m) < 0) {
                safe_close(c);
                return 0;
        }
        (void) sd_event_source_set_io_fd_own(cs, true);
        (void) sd_event_source_set_floating(cs, true);
        sd_event_source_unref(cs);
        m->n_connections++;
        return 0;
}

static int open_control(Manager *m) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *dir = NULL;
        char *slash;

        if (strlen(m->control_path) >= sizeof(sa.sun_path))
                return log_error_errno(ENAMETOOLONG, "Control socket path too long: %s", m->control_path);
        strcpy(sa.sun_path, m->control_path);
        dir = strdup(m->control_path);
        if (!dir)
                return log_oom();
        slash = strrchr(dir, '/');
        if (slash && slash != dir) {
                *slash = 0;
                (void) mkdir(dir, 0755);
        }
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_error_errno(errno, "Cannot create the control socket: %m");
        (void) unlink(m->control_path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return log_error_errno(errno, "Cannot bind %s: %m", m->control_path);
        /* Anyone may read state; mutating requests check the peer's uid. */
        (void) chmod(m->control_path, 0666);
        if (listen(fd, 16) < 0)
                return log_error_errno(errno, "Cannot listen on %s: %m", m->control_path);
        if (sd_event_add_io(m->event, &m->control_source, fd, EPOLLIN, on_accept, m) < 0)
                return log_oom();
        m->control_fd = TAKE_FD(fd);
        return 0;
}

static int open_monitor(Manager *m) {
        int r;

        m->monitor = udev_monitor_new_from_netlink(m->udev, monitor_source_to_string(m->monitor_kind));
        if (!m->monitor)
                return log_error_errno(ENOMEM, "Cannot open the %s uevent monitor",
                                       monitor_source_to_string(m->monitor_kind));
        for (size_t i = 0; i < ELEMENTSOF(monitored_subsystems); i++) {
                r = udev_monitor_filter_add_match_subsystem_devtype(m->monitor, monitored_subsystems[i],
                                                                    NULL);
                if (r < 0)
                        return log_error_errno(r, "Cannot filter the monitor: %m");
        }
        (void) udev_monitor_set_receive_buffer_size(m->monitor, 8 * 1024 * 1024);
        r = udev_monitor_enable_receiving(m->monitor);
        if (r < 0)
                return log_error_errno(r, "Cannot listen to uevents: %m");
        r = sd_event_add_io(m->event, &m->monitor_source, udev_monitor_get_fd(m->monitor), EPOLLIN,
                            on_monitor, m);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the monitor: %m");
        return 0;
}

int manager_start(Manager *m) {
        sigset_t ss;
        int r;

        /* The monitor first, so nothing slips between the enumeration and the first event. */
        r = open_monitor(m);
        if (r < 0)
                return r;
        sigemptyset(&ss);
        sigaddset(&ss, SIGHUP);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0)
                return log_error_errno(errno, "Cannot block signals: %m");
        r = sd_event_add_signal(m->event, NULL, SIGHUP, on_sighup, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGTERM, NULL, NULL);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, NULL, NULL);
        if (r < 0)
                return log_error_errno(r, "Cannot watch signals: %m");
        if (m->control_path) {
                r = open_control(m);
                if (r < 0)
                        return r;
        }
        if (m->want_bus) {
                /* The control socket serves drowsectl either way: no bus is not fatal. */
                r = bus_open(m, m->event, &m->bus);
                if (r < 0)
                        log_warning_errno(r, "Not on D-Bus (%s): %m", BUS_NAME);
                else
                        log_info("On D-Bus as %s", BUS_NAME);
        }
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the watchdog: %m");
        return 0;
}

int manager_run(Manager *m) {
        (void) sd_notify(false, "READY=1");
        notify_status(m);
        return sd_event_loop(m->event);
}
