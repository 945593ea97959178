/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <systemd/sd-device.h>
#include <systemd/sd-journal.h>

#include "device.h"
#include "json.h"
#include "log.h"
#include "sysfs.h"

static const char *const device_state_table[_DEVICE_STATE_MAX] = {
        [DEVICE_PENDING] = "pending",
        [DEVICE_AUTOSUSPEND] = "autosuspend",
        [DEVICE_EXCLUDED] = "excluded",
        [DEVICE_REFUSED] = "refused",
        [DEVICE_IGNORED] = "ignored",
        [DEVICE_GONE] = "gone",
        [DEVICE_QUARANTINED] = "quarantined",
};
DEFINE_STRING_TABLE_LOOKUP(device_state, DeviceState);

static inline void udev_enumerate_unrefp(struct udev_enumerate **e) {
        if (*e)
                udev_enumerate_unref(*e);
}
static inline void udev_device_unrefp(struct udev_device **d) {
        if (*d)
                udev_device_unref(*d);
}

static void copy_attr(const char *dir, const char *attr, char *buf, size_t size) {
        if (sysfs_read(dir, attr, buf, size) < 0)
                buf[0] = 0;
}

/* The directory a device sits in is its parent. */
static bool parent_is_root_hub(const char *devpath) {
        const char *last = strrchr(devpath, '/'), *p = last;

        if (!last)
                return false;
        while (p > devpath && p[-1] != '/')
                p--;
        return p < last && strneq(p, "usb", 3);
}

int device_new(const char *syspath, const char *sysname, const char *devpath, Device **ret) {
        _cleanup_(device_freep) Device *d = NULL;
        char vid[8], pid[8];

        if (!syspath || !sysname || !devpath)
                return -EINVAL;
        d = calloc(1, sizeof(Device));
        if (!d)
                return -ENOMEM;
        d->syspath = strdup(syspath);
        d->sysname = strdup(sysname);
        d->devpath = strdup(devpath);
        if (!d->syspath || !d->sysname || !d->devpath)
                return -ENOMEM;
        d->state = DEVICE_PENDING;
        d->dirty = true;
        d->delay_ms = d->disk_delay_ms = -1;
        d->owned_delay_ms = d->owned_disk_delay_ms = -1;
        copy_attr(syspath, "idVendor", vid, sizeof(vid));
        copy_attr(syspath, "idProduct", pid, sizeof(pid));
        snprintf(d->id, sizeof(d->id), "%.4s:%.4s", vid, pid);
        copy_attr(syspath, "serial", d->serial, sizeof(d->serial));

        /* Behind vhci: a "vhci_hcd.N" platform device in the path. A root-port device's parent is the
         * root hub, "usbN". */
        const char *v = strstr(devpath, "/vhci_hcd.");
        if (v) {
                v++;
                size_t n = strcspn(v, "/");
                snprintf(d->vhci, sizeof(d->vhci), "%.*s", (int) MIN(n, sizeof(d->vhci) - 1), v);
                d->vhci_root_port = parent_is_root_hub(devpath);
        }
        *ret = TAKE_PTR(d);
        return 0;
}

static void forget_luns(Device *d) {
        for (unsigned l = 0; l < d->n_owned_luns; l++)
                d->owned_luns[l] = mfree(d->owned_luns[l]);
        d->n_owned_luns = 0;
}

Device *device_free(Device *d) {
        if (!d)
                return NULL;
        forget_luns(d);
        free(d->resumes);
        free(d->syspath);
        free(d->sysname);
        free(d->devpath);
        return mfree(d);
}

typedef struct Apply {
        Device *d;
        DeviceState state;
        char reason[320];
        unsigned n_luns;
        char luns[DEVICE_MAX_OWNED_LUNS][256]; /* the LUNs set up, for drift detection */
} Apply;

_printf_(3, 4) static int set_outcome(Apply *a, DeviceState state, const char *fmt, ...) {
        va_list ap;
        a->state = state;
        va_start(ap, fmt);
        vsnprintf(a->reason, sizeof(a->reason), fmt, ap);
        va_end(ap);
        return 0;
}

static const char *short_name(const char *syspath) {
        const char *s = strrchr(syspath, '/');
        return s ? s + 1 : syspath;
}

/* Writes DIR/ATTR=VALUE unless it already holds VALUE. Returns 1 if written, 0 if it already had it. */
static int write_attr(const Device *d, const char *dir, const char *attr, const char *value) {
        char cur[64];
        int r;

        r = sysfs_read(dir, attr, cur, sizeof(cur));
        if (r >= 0 && streq(cur, value))
                return 0;
        if (r == -ENOENT)
                return r;
        r = sysfs_write(dir, attr, value);
        if (r < 0)
                return log_debug_errno(r, "%s: writing %s/%s=%s failed: %m", d->devpath, short_name(dir),
                                       attr, value);
        log_debug("%s: wrote %s/%s=%s", d->devpath, short_name(dir), attr, value);
        return 1;
}

static int write_delay(const Device *d, const char *dir, int delay_ms) {
        char v[16];
        snprintf(v, sizeof(v), "%d", delay_ms);
        return write_attr(d, dir, "power/autosuspend_delay_ms", v);
}

/* An errno from a write turned into the refusal it means. */
static int refuse_write(Apply *a, int r, const char *dir, const char *attr) {
        if (r == -ENOENT)
                return set_outcome(a, DEVICE_REFUSED, "%s/%s vanished while being set up", short_name(dir),
                                   attr);
        if (r == -EIO && strstr(attr, "autosuspend_delay_ms"))
                return set_outcome(a, DEVICE_REFUSED,
                                   "%s/%s gives EIO: its driver does not use runtime autosuspend",
                                   short_name(dir), attr);
        return set_outcome(a, DEVICE_REFUSED, "writing %s/%s failed: %s", short_name(dir), attr,
                           strerror(-r));
}

static bool runtime_error(const char *dir) {
        char s[32];
        return sysfs_read(dir, "power/runtime_status", s, sizeof(s)) >= 0 && streq(s, "error");
}

static struct udev_enumerate *children(struct udev *udev, struct udev_device *parent,
                                       const char *subsystem) {
        struct udev_enumerate *e = udev_enumerate_new(udev);
        if (!e)
                return NULL;
        if (udev_enumerate_add_match_parent(e, parent) < 0 ||
            (subsystem && udev_enumerate_add_match_subsystem(e, subsystem) < 0) ||
            udev_enumerate_scan_devices(e) < 0)
                return udev_enumerate_unref(e);
        return e;
}

/* A USB device's subtree as one pass sees it: the interfaces, the SCSI devices below usb-storage and
 * their disks. It is enumerated once and every node built once, because an enumeration per level
 * (each node's path resolved and uevent read again, then once more to look at it) was most of the
 * time a hotplug waited for after its last uevent. */
#define SUBTREE_MAX_NODES 512

typedef struct Subtree {
        sd_device **nodes;
        size_t n;
} Subtree;

static void subtree_done(Subtree *t) {
        for (size_t i = 0; i < t->n; i++)
                sd_device_unref(t->nodes[i]);
        t->nodes = mfree(t->nodes);
        t->n = 0;
}

static int subtree_load(Subtree *t, sd_device *dev) {
        static const char *const subsystems[] = { "usb", "scsi", "scsi_disk", "block" };
        _cleanup_(sd_device_enumerator_unrefp) sd_device_enumerator *e = NULL;
        size_t allocated = 0;
        int r;

        r = sd_device_enumerator_new(&e);
        if (r < 0)
                return r;
        /* As libudev's enumerator: a hotplug pass runs before udevd has processed the new nodes. */
        r = sd_device_enumerator_allow_uninitialized(e);
        if (r >= 0)
                r = sd_device_enumerator_add_match_parent(e, dev);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(subsystems); i++)
                r = sd_device_enumerator_add_match_subsystem(e, subsystems[i], true);
        if (r < 0)
                return r;
        for (sd_device *c = sd_device_enumerator_get_device_first(e); c;
             c = sd_device_enumerator_get_device_next(e)) {
                if (t->n >= SUBTREE_MAX_NODES)
                        break; /* no USB device has that many; the rest would only be more LUNs */
                if (t->n == allocated) {
                        size_t want = allocated ? allocated * 2 : 16;
                        sd_device **n = reallocarray(t->nodes, want, sizeof(sd_device *));
                        if (!n)
                                return -ENOMEM;
                        t->nodes = n;
                        allocated = want;
                }
                t->nodes[t->n++] = sd_device_ref(c);
        }
        return 0;
}

static const char *node_get(sd_device *n, int (*get)(sd_device *, const char **)) {
        const char *v = NULL;
        return get(n, &v) >= 0 ? v : NULL;
}

static bool node_is(sd_device *n, const char *subsystem, const char *devtype) {
        const char *ss = node_get(n, sd_device_get_subsystem);
        const char *t = devtype ? node_get(n, sd_device_get_devtype) : NULL;
        return ss && streq(ss, subsystem) && (!devtype || (t && streq(t, devtype)));
}

/* Whether node lies below the directory dir (not dir itself). */
static bool node_below(sd_device *n, const char *dir) {
        const char *p = node_get(n, sd_device_get_syspath);
        size_t l = strlen(dir);
        return p && strneq(p, dir, l) && p[l] == '/';
}

/* One LUN: delay, then control (TLP's order: never auto with a stale -1/0 delay), then its disk. */
static int apply_lun(Apply *a, const Subtree *t, sd_device *sdev, const Decision *dec) {
        const char *dir = node_get(sdev, sd_device_get_syspath);
        int r;

        if (runtime_error(dir))
                return set_outcome(a, DEVICE_REFUSED, "SCSI device %s has runtime_status=error",
                                   short_name(dir));
        r = write_delay(a->d, dir, dec->disk_delay_ms);
        if (r < 0)
                return refuse_write(a, r, dir, "power/autosuspend_delay_ms");
        r = write_attr(a->d, dir, "power/control", "auto");
        if (r < 0)
                return refuse_write(a, r, dir, "power/control");

        for (size_t i = 0; i < t->n; i++) {
                sd_device *c = t->nodes[i];
                const char *cdir = node_get(c, sd_device_get_syspath);
                char events[64];
                int poll;

                if (!node_below(c, dir))
                        continue;
                if (node_is(c, "block", NULL) && dec->media_poll == MEDIA_POLL_OFF &&
                    sysfs_read(cdir, "events", events, sizeof(events)) >= 0 && events[0] &&
                    sysfs_read_int(cdir, "events_poll_msecs", &poll) >= 0 && poll != 0) {
                        /* The disk reports media events and gets polled (-1: the global default):
                         * every poll is a TEST UNIT READY that resumes the whole chain. */
                        r = write_attr(a->d, cdir, "events_poll_msecs", "0");
                        if (r < 0 && r != -ENOENT)
                                return refuse_write(a, r, cdir, "events_poll_msecs");
                }
                if (node_is(c, "scsi_disk", NULL) && dec->disk_runtime_start_stop != TRISTATE_UNSET) {
                        /* Split from manage_start_stop in 6.6 / 6.1.57; older kernels cannot do it. */
                        r = write_attr(a->d, cdir, "manage_runtime_start_stop",
                                       dec->disk_runtime_start_stop == TRISTATE_YES ? "1" : "0");
                        if (r == -ENOENT || r == -EACCES || r == -EPERM)
                                log_info("%s: %s has no writable manage_runtime_start_stop, left as it is",
                                         a->d->devpath, short_name(cdir));
                        else if (r < 0)
                                return refuse_write(a, r, cdir, "manage_runtime_start_stop");
                }
        }
        if (a->n_luns < DEVICE_MAX_OWNED_LUNS)
                snprintf(a->luns[a->n_luns], sizeof(a->luns[0]), "%s", dir);
        a->n_luns++;
        return 0;
}

/* usb-storage interface: every scsi_device below it. 0 LUNs yet = still scanning (delay_use). */
static int apply_storage(Apply *a, const Subtree *t, sd_device *intf, const Decision *dec) {
        const char *idir = node_get(intf, sd_device_get_syspath);
        unsigned n = 0;
        int r;

        for (size_t i = 0; i < t->n; i++) {
                sd_device *s = t->nodes[i];

                if (!node_below(s, idir) || !node_is(s, "scsi", "scsi_device"))
                        continue;
                /* sd (or sr) must have bound: it sets up the delay and block runtime PM at probe. */
                if (!node_get(s, sd_device_get_driver))
                        return set_outcome(a, DEVICE_PENDING, "waiting for a driver on SCSI device %s",
                                           node_get(s, sd_device_get_sysname));
                r = apply_lun(a, t, s, dec);
                if (r < 0 || a->state != DEVICE_AUTOSUSPEND)
                        return r;
                n++;
        }
        if (n == 0)
                return set_outcome(a, DEVICE_PENDING, "waiting for the SCSI devices of %s",
                                   short_name(idir));
        return 0;
}

static void facts_free_drivers(DeviceFacts *f) {
        for (unsigned i = 0; i < f->n_interfaces; i++)
                free((char *) f->interface_driver[i]);
}

static int do_apply(Apply *a, const Policy *p, PowerSource power, const char *vhci_holder) {
        Device *d = a->d;
        _cleanup_(sd_device_unrefp) sd_device *dev = NULL;
        _cleanup_(subtree_done) Subtree tree = {};
        DeviceFacts f = { .sysname = d->sysname, .devpath = d->devpath, .device_class = -1, .power = power };
        char buf[128];
        sd_device *storage[8];
        unsigned n_storage = 0;
        int n_cfg_interfaces, r;
        Decision dec;

        if (sd_device_new_from_syspath(&dev, d->syspath) < 0 || access(d->syspath, F_OK) < 0)
                return set_outcome(a, DEVICE_GONE, "device vanished");

        /* bDeviceClass is hex ("09", "e0"). */
        if (sysfs_read(d->syspath, "bDeviceClass", buf, sizeof(buf)) >= 0)
                f.device_class = (int) strtol(buf, NULL, 16);
        if (f.device_class == 0x09)
                return set_outcome(a, DEVICE_IGNORED, "hub: the kernel autosuspends hubs itself");

        if (sysfs_read_int(d->syspath, "bNumInterfaces", &n_cfg_interfaces) < 0)
                n_cfg_interfaces = 0;
        if (d->vhci[0] && n_cfg_interfaces == 0)
                return set_outcome(a, DEVICE_IGNORED,
                                   "vhci device without interfaces (an emulator carrier): never touched");
        if (!node_get(dev, sd_device_get_driver))
                return set_outcome(a, DEVICE_PENDING, "waiting for the usb driver to bind");

        /* Before the policy: a quarantined device stays on whatever the rules say, until released. */
        if (d->rec && d->rec->quarantined) {
                for (unsigned l = 0; l < MIN(d->n_owned_luns, DEVICE_MAX_OWNED_LUNS); l++)
                        (void) write_attr(d, d->owned_luns[l], "power/control", "on");
                r = write_attr(d, d->syspath, "power/control", "on");
                if (r < 0 && r != -ENOENT)
                        return refuse_write(a, r, d->syspath, "power/control");
                d->wrote_control = false;
                return set_outcome(a, DEVICE_QUARANTINED, "quarantined: %s (drowsectl release %s lifts it)",
                                   d->rec->quarantine_reason, d->sysname);
        }
        if (d->yielded)
                return set_outcome(a, DEVICE_EXCLUDED, "%s", d->yield_reason);

        r = subtree_load(&tree, dev);
        if (r < 0)
                return r;
        for (size_t i = 0; i < tree.n; i++) {
                sd_device *c = tree.nodes[i];
                const char *cdir, *drv, *cname;
                int sa;

                if (!node_is(c, "usb", "usb_interface") || f.n_interfaces >= POLICY_MAX_INTERFACES)
                        continue;
                cdir = node_get(c, sd_device_get_syspath);
                cname = node_get(c, sd_device_get_sysname);
                drv = node_get(c, sd_device_get_driver);
                if (sysfs_read(cdir, "bInterfaceClass", buf, sizeof(buf)) >= 0)
                        f.interface_class[f.n_interfaces] = (int) strtol(buf, NULL, 16);
                else
                        f.interface_class[f.n_interfaces] = -1;
                f.interface_driver[f.n_interfaces] = drv ? strdup(drv) : NULL;
                f.n_interfaces++;
                if (drv && streq(drv, "uas")) {
                        set_outcome(a, DEVICE_REFUSED, "interface %s is driven by uas, which cannot autosuspend",
                                    cname);
                        goto decide;
                }
                /* 1 = the bound driver supports autosuspend, or none is bound (the ABI text is inverted). */
                if (sysfs_read_int(cdir, "supports_autosuspend", &sa) >= 0 && sa == 0) {
                        set_outcome(a, DEVICE_REFUSED, "interface %s: driver %s does not support autosuspend",
                                    cname, drv ?: "(none)");
                        goto decide;
                }
                if (drv && streq(drv, "usb-storage") && n_storage < ELEMENTSOF(storage))
                        storage[n_storage++] = c;
        }
        if ((int) f.n_interfaces < n_cfg_interfaces) {
                set_outcome(a, DEVICE_PENDING, "waiting for interfaces (%u of %d)", f.n_interfaces,
                            n_cfg_interfaces);
                facts_free_drivers(&f);
                return 0;
        }
decide:
        f.vendor = (uint16_t) strtoul(d->id, NULL, 16);
        f.product = (uint16_t) strtoul(d->id + 5, NULL, 16);
        f.serial = d->serial[0] ? d->serial : NULL;
        f.vhci = d->vhci[0] != 0;
        f.removable = sysfs_read(d->syspath, "removable", buf, sizeof(buf)) >= 0 && streq(buf, "removable");
        if (sd_device_get_property_value(dev, "ID_AUTOSUSPEND", &f.id_autosuspend) < 0)
                f.id_autosuspend = NULL;
        if (sd_device_get_property_value(dev, "ID_PERSIST", &f.id_persist) < 0)
                f.id_persist = NULL;
        policy_decide(p, &f, &dec);
        facts_free_drivers(&f);
        dec.delay_ms = device_effective_delay(d, dec.delay_ms);
        dec.disk_delay_ms = device_effective_delay(d, dec.disk_delay_ms);
        snprintf(d->rule, sizeof(d->rule), "%s", dec.rule ? dec.rule->name : "");
        d->delay_ms = dec.delay_ms;
        d->disk_delay_ms = dec.disk_delay_ms;

        if (!dec.autosuspend) {
                set_outcome(a, DEVICE_EXCLUDED, "%s", dec.reason);
                /* Hand back what we took; what others set stays theirs. */
                if (d->wrote_control) {
                        r = write_attr(d, d->syspath, "power/control", "on");
                        if (r >= 0)
                                d->wrote_control = false;
                }
                return 0;
        }
        if (a->state == DEVICE_REFUSED) /* found while listing the interfaces */
                return 0;
        if (runtime_error(d->syspath))
                return set_outcome(a, DEVICE_REFUSED, "runtime_status=error");
        if (d->vhci_root_port && vhci_holder)
                return set_outcome(
                        a, DEVICE_REFUSED,
                        "%s root port: %s already autosuspends there, and vhci resumes only one root "
                        "port at a time (raise vhci-root-ports to allow more)",
                        d->vhci, vhci_holder);

        a->state = DEVICE_AUTOSUSPEND;
        for (unsigned s = 0; s < n_storage; s++) {
                r = apply_storage(a, &tree, storage[s], &dec);
                if (r < 0 || a->state != DEVICE_AUTOSUSPEND)
                        return r;
        }

        /* The LUNs are set: now the USB device itself. */
        r = write_delay(d, d->syspath, dec.delay_ms);
        if (r < 0)
                return refuse_write(a, r, d->syspath, "power/autosuspend_delay_ms");
        if (dec.wakeup != WAKEUP_KEEP) {
                r = write_attr(d, d->syspath, "power/wakeup", wakeup_to_string(dec.wakeup));
                if (r < 0 && r != -ENOENT)
                        return refuse_write(a, r, d->syspath, "power/wakeup");
        }
        if (dec.persist != TRISTATE_UNSET) {
                r = write_attr(d, d->syspath, "power/persist", dec.persist == TRISTATE_YES ? "1" : "0");
                if (r < 0 && r != -ENOENT)
                        return refuse_write(a, r, d->syspath, "power/persist");
        }
        r = write_attr(d, d->syspath, "power/control", "auto");
        if (r < 0)
                return refuse_write(a, r, d->syspath, "power/control");
        d->wrote_control = d->wrote_control || r > 0;
        return set_outcome(a, DEVICE_AUTOSUSPEND, "%s", dec.reason);
}

int device_apply(Device *d, const Policy *p, PowerSource power, const char *vhci_holder) {
        Apply a = { .d = d, .state = DEVICE_PENDING };
        int old_delay = d->delay_ms, old_disk_delay = d->disk_delay_ms;
        int r;

        r = do_apply(&a, p, power, vhci_holder);
        if (r < 0)
                return r;
        if (a.state == DEVICE_AUTOSUSPEND)
                d->n_luns = a.n_luns;
        d->dirty = false;
        switch (a.state) {
        case DEVICE_AUTOSUSPEND:
                d->owned = true;
                snprintf(d->owned_control, sizeof(d->owned_control), "auto");
                d->owned_delay_ms = d->delay_ms;
                d->owned_disk_delay_ms = d->disk_delay_ms;
                forget_luns(d);
                for (unsigned l = 0; l < MIN(a.n_luns, DEVICE_MAX_OWNED_LUNS); l++) {
                        d->owned_luns[l] = strdup(a.luns[l]);
                        if (!d->owned_luns[l]) {
                                /* Drift is then not watched on the LUNs we could not note. */
                                (void) log_oom();
                                break;
                        }
                        d->n_owned_luns++;
                }
                break;
        case DEVICE_QUARANTINED:
                /* The LUNs were set to on too: what drowsed owns now is "on" everywhere. */
                d->owned = true;
                snprintf(d->owned_control, sizeof(d->owned_control), "on");
                d->owned_delay_ms = d->owned_disk_delay_ms = -1;
                break;
        case DEVICE_PENDING:
        case DEVICE_EXCLUDED:
        case DEVICE_REFUSED:
        case DEVICE_IGNORED:
        case DEVICE_GONE:
                d->owned = false;
                forget_luns(d);
                break;
        case _DEVICE_STATE_MAX:
        case _DEVICE_STATE_INVALID:
                break;
        }
        if (a.state != d->state || !streq(a.reason, d->reason) ||
            (a.state == DEVICE_AUTOSUSPEND &&
             (old_delay != d->delay_ms || old_disk_delay != d->disk_delay_ms))) {
                if (a.state == DEVICE_AUTOSUSPEND)
                        log_info("%s (%s): autosuspend, delay %d ms%s: %s", d->devpath, d->id, d->delay_ms,
                                 d->n_luns > 0 ? ", SCSI LUNs too" : "", a.reason);
                else {
                        const char *state = device_state_to_string(a.state);
                        size_t l = strlen(state);
                        /* "quarantined: quarantined: ..." says it once. */
                        if (strneq(a.reason, state, l) && a.reason[l] == ':')
                                log_info("%s (%s): %s", d->devpath, d->id, a.reason);
                        else
                                log_info("%s (%s): %s: %s", d->devpath, d->id, state, a.reason);
                }
        }
        d->state = a.state;
        snprintf(d->reason, sizeof(d->reason), "%s", a.reason);
        return 0;
}

void device_dump_json(const Device *d, FILE *f) {
        fputs("{\"sysname\":", f);
        json_write_string(f, d->sysname);
        fputs(",\"devpath\":", f);
        json_write_string(f, d->devpath);
        fputs(",\"id\":", f);
        json_write_string(f, d->id);
        fputs(",\"serial\":", f);
        json_write_string(f, d->serial);
        fputs(",\"state\":", f);
        json_write_string(f, device_state_to_string(d->state));
        fputs(",\"reason\":", f);
        json_write_string(f, d->reason);
        fputs(",\"rule\":", f);
        if (d->rule[0])
                json_write_string(f, d->rule);
        else
                fputs("null", f);
        fprintf(f, ",\"delay_ms\":%d,\"disk_delay_ms\":%d,\"luns\":%u,\"vhci\":", d->delay_ms,
                d->disk_delay_ms, d->n_luns);
        if (d->vhci[0])
                json_write_string(f, d->vhci);
        else
                fputs("null", f);
        fprintf(f, ",\"vhci_root_port\":%s,\"control_set_by_drowsed\":%s,\"quarantined\":%s,\"backoff\":%u}",
                d->vhci_root_port ? "true" : "false", d->wrote_control ? "true" : "false",
                d->rec && d->rec->quarantined ? "true" : "false", d->rec ? d->rec->backoff : 1);
}

void device_dump_text(const Device *d, FILE *f) {
        fprintf(f, "%-10s %-9s %-11s %s\n", d->sysname, d->id, device_state_to_string(d->state), d->reason);
}

typedef struct Node {
        char name[64];
        char kind[16];
        char syspath[4096];
        char control[16];
        char status[16];
        int delay;            /* INT32_MIN: no readable delay */
        bool has_power;
} Node;

#define WHY_MAX_NODES 64

/* Who holds the device's usbfs node open: that forbids runtime suspend until close (unless the program
 * uses USBDEVFS_ALLOW_SUSPEND, which we cannot see). Writes "PID (comm)" of the first holder. */
static bool usbfs_holder(const char *syspath, char *buf, size_t size) {
        _cleanup_(closedirp) DIR *proc = NULL;
        char node[64], path[600], target[300];
        int bus, dev;
        ssize_t n;

        if (sysfs_read_int(syspath, "busnum", &bus) < 0 || sysfs_read_int(syspath, "devnum", &dev) < 0)
                return false;
        snprintf(node, sizeof(node), "/dev/bus/usb/%03d/%03d", bus, dev);
        proc = opendir("/proc");
        if (!proc)
                return false;
        for (struct dirent *p; (p = readdir(proc));) {
                _cleanup_(closedirp) DIR *fds = NULL;
                if (p->d_name[0] < '1' || p->d_name[0] > '9')
                        continue;
                snprintf(path, sizeof(path), "/proc/%s/fd", p->d_name);
                fds = opendir(path);
                if (!fds)
                        continue;
                for (struct dirent *f; (f = readdir(fds));) {
                        if (f->d_name[0] == '.')
                                continue;
                        snprintf(path, sizeof(path), "/proc/%s/fd/%s", p->d_name, f->d_name);
                        n = readlink(path, target, sizeof(target) - 1);
                        if (n <= 0)
                                continue;
                        target[n] = 0;
                        if (!streq(target, node))
                                continue;
                        char comm[32] = "?";
                        snprintf(path, sizeof(path), "/proc/%s", p->d_name);
                        (void) sysfs_read(path, "comm", comm, sizeof(comm));
                        snprintf(buf, size, "%s is open by PID %.16s (%s)", node, p->d_name, comm);
                        return true;
                }
        }
        return false;
}

static void node_read(Node *n) {
        n->has_power = sysfs_read(n->syspath, "power/runtime_status", n->status, sizeof(n->status)) >= 0;
        if (sysfs_read(n->syspath, "power/control", n->control, sizeof(n->control)) < 0)
                n->control[0] = 0;
        if (sysfs_read_int(n->syspath, "power/autosuspend_delay_ms", &n->delay) < 0)
                n->delay = INT32_MIN;
}

/* The nearest listed ancestor of node i, or -1. */
static int node_parent(const Node *nodes, size_t n, size_t i) {
        int best = -1;
        size_t best_len = 0;
        for (size_t j = 0; j < n; j++) {
                size_t l = strlen(nodes[j].syspath);
                if (j != i && l > best_len && strneq(nodes[i].syspath, nodes[j].syspath, l) &&
                    nodes[i].syspath[l] == '/') {
                        best = (int) j;
                        best_len = l;
                }
        }
        return best;
}

int device_why(const Device *d, struct udev *udev, bool json, FILE *f) {
        _cleanup_(udev_device_unrefp) struct udev_device *dev =
                udev_device_new_from_syspath(udev, d->syspath);
        _cleanup_(udev_enumerate_unrefp) struct udev_enumerate *e = NULL;
        _cleanup_free_ Node *nodes = NULL;
        char blockers[32][400];
        size_t n = 0, nb = 0;
        struct udev_list_entry *i;

        if (!dev)
                return -ENODEV;
        nodes = calloc(WHY_MAX_NODES, sizeof(Node));
        if (!nodes)
                return -ENOMEM;
        snprintf(nodes[0].name, sizeof(nodes[0].name), "%s", d->sysname);
        snprintf(nodes[0].kind, sizeof(nodes[0].kind), "usb_device");
        snprintf(nodes[0].syspath, sizeof(nodes[0].syspath), "%s", d->syspath);
        node_read(&nodes[0]);
        n = 1;
        e = children(udev, dev, NULL);
        if (!e)
                return -ENOMEM;
        udev_list_entry_foreach(i, udev_enumerate_get_list_entry(e)) {
                _cleanup_(udev_device_unrefp) struct udev_device *c =
                        udev_device_new_from_syspath(udev, udev_list_entry_get_name(i));
                const char *t, *ss;
                if (!c || n >= WHY_MAX_NODES)
                        continue;
                ss = udev_device_get_subsystem(c);
                t = udev_device_get_devtype(c);
                if (streq(udev_device_get_syspath(c), d->syspath) || !ss)
                        continue;
                /* The runtime-PM chain: interfaces, SCSI host/target/device, the disk; not partitions,
                 * endpoints or class devices without a power/ state of their own. */
                if (!(streq(ss, "usb") || streq(ss, "scsi") ||
                      (streq(ss, "block") && t && streq(t, "disk"))))
                        continue;
                Node *nd = &nodes[n];
                snprintf(nd->name, sizeof(nd->name), "%s", udev_device_get_sysname(c));
                snprintf(nd->kind, sizeof(nd->kind), "%s", t ?: ss);
                snprintf(nd->syspath, sizeof(nd->syspath), "%s", udev_device_get_syspath(c));
                node_read(nd);
                if (!nd->has_power && !streq(ss, "block"))
                        continue;
                n++;
        }

#define BLOCKER(...)                                                                                        \
        (nb < ELEMENTSOF(blockers) ? (void) snprintf(blockers[nb++], sizeof(blockers[0]), __VA_ARGS__) :    \
                                     (void) 0)
        switch (d->state) {
        case DEVICE_EXCLUDED:
                BLOCKER("policy excluded: %s", d->reason);
                break;
        case DEVICE_REFUSED:
                BLOCKER("refused: %s", d->reason);
                break;
        case DEVICE_PENDING:
                BLOCKER("pending: %s", d->reason);
                break;
        case DEVICE_IGNORED:
                BLOCKER("ignored: %s", d->reason);
                break;
        case DEVICE_GONE:
                BLOCKER("gone: %s", d->reason);
                break;
        case DEVICE_QUARANTINED:
                BLOCKER("%s", d->reason);
                break;
        case DEVICE_AUTOSUSPEND:
                break;
        case _DEVICE_STATE_MAX:
        case _DEVICE_STATE_INVALID:
                break;
        }
        char holder[128];
        bool usbfs_held = usbfs_holder(d->syspath, holder, sizeof(holder));
        if (usbfs_held)
                BLOCKER("%s: %s: usbfs keeps it resumed", d->sysname, holder);
        for (size_t k = 0; k < n; k++) {
                Node *nd = &nodes[k];
                bool is_usb_if = streq(nd->kind, "usb_interface");
                if (streq(nd->status, "error"))
                        BLOCKER("%s: runtime_status=error", nd->name);
                if (streq(nd->control, "on"))
                        BLOCKER("%s: power/control=on (%s)", nd->name,
                                d->state == DEVICE_AUTOSUSPEND ? "not set by drowsed: changed by someone else" :
                                d->state == DEVICE_QUARANTINED ? "set by drowsed: quarantined" :
                                                                 "the kernel's default; drowsed did not touch it");
                if (nd->delay < 0 && nd->delay != INT32_MIN)
                        BLOCKER("%s: power/autosuspend_delay_ms=%d (negative: never autosuspend)", nd->name,
                                nd->delay);
                if (is_usb_if) {
                        int sa;
                        char drv[64] = "";
                        _cleanup_(udev_device_unrefp) struct udev_device *c =
                                udev_device_new_from_syspath(udev, nd->syspath);
                        if (c && udev_device_get_driver(c))
                                snprintf(drv, sizeof(drv), "%s", udev_device_get_driver(c));
                        if (sysfs_read_int(nd->syspath, "supports_autosuspend", &sa) >= 0 && sa == 0)
                                BLOCKER("%s: driver %s does not support autosuspend", nd->name, drv);
                }
                if (streq(nd->status, "active")) {
                        bool child_active = false;
                        for (size_t c = 0; c < n; c++)
                                if (node_parent(nodes, n, c) == (int) k &&
                                    streq(nodes[c].status, "active")) {
                                        BLOCKER("%s: child %s is active", nd->name, nodes[c].name);
                                        child_active = true;
                                }
                        if (!child_active && nd->delay >= 0 && !streq(nd->control, "on") &&
                            !(k == 0 && usbfs_held))
                                BLOCKER("%s: active: in use, or its %d ms delay has not expired yet",
                                        nd->name, nd->delay);
                }
        }
#undef BLOCKER

        if (json) {
                fputs("{\"device\":", f);
                json_write_string(f, d->sysname);
                fputs(",\"state\":", f);
                json_write_string(f, device_state_to_string(d->state));
                fputs(",\"nodes\":[", f);
                for (size_t k = 0; k < n; k++) {
                        fputs(k ? ",{\"name\":" : "{\"name\":", f);
                        json_write_string(f, nodes[k].name);
                        fputs(",\"kind\":", f);
                        json_write_string(f, nodes[k].kind);
                        fputs(",\"control\":", f);
                        json_write_string(f, nodes[k].control);
                        fputs(",\"runtime_status\":", f);
                        json_write_string(f, nodes[k].status);
                        if (nodes[k].delay != INT32_MIN)
                                fprintf(f, ",\"autosuspend_delay_ms\":%d}", nodes[k].delay);
                        else
                                fputs(",\"autosuspend_delay_ms\":null}", f);
                }
                fputs("],\"blockers\":[", f);
                for (size_t k = 0; k < nb; k++) {
                        if (k)
                                fputc(',', f);
                        json_write_string(f, blockers[k]);
                }
                fputs("]}\n", f);
                return 0;
        }
        fprintf(f, "%s (%s): %s\n", d->sysname, d->id, device_state_to_string(d->state));
        for (size_t k = 0; k < n; k++) {
                char delay[16] = "-";
                if (nodes[k].delay != INT32_MIN)
                        snprintf(delay, sizeof(delay), "%d", nodes[k].delay);
                fprintf(f, "  %-16s %-14s control=%-4s delay=%-6s %s\n", nodes[k].name, nodes[k].kind,
                        nodes[k].control[0] ? nodes[k].control : "-", delay,
                        nodes[k].status[0] ? nodes[k].status : "-");
        }
        if (nb == 0)
                fputs("Nothing blocks autosuspend.\n", f);
        for (size_t k = 0; k < nb; k++)
                fprintf(f, "  blocker: %s\n", blockers[k]);
        return 0;
}

int device_effective_delay(const Device *d, int delay_ms) {
        uint64_t v;

        if (delay_ms < 0 || !d->rec || d->rec->backoff <= 1)
                return delay_ms;
        /* drowse.conf's upper bound: an hour. */
        v = (uint64_t) delay_ms * d->rec->backoff;
        return (int) MIN(v, (uint64_t) 3600 * 1000);
}

static int read_u64(const char *dir, const char *attr, uint64_t *ret) {
        char buf[32], *end;
        unsigned long long l;
        int r;

        r = sysfs_read(dir, attr, buf, sizeof(buf));
        if (r < 0)
                return r;
        if (buf[0] < '0' || buf[0] > '9')
                return -EBADMSG;
        errno = 0;
        l = strtoull(buf, &end, 10);
        if (*end != 0 || errno != 0)
                return -EBADMSG;
        *ret = l;
        return 0;
}

/* The wakeup source's event count: power/wakeup_count (empty while wakeup is disabled), else the
 * wakeup class device below the device (Linux 5.4+), wakeup/wakeupN/event_count. */
static bool read_wakeup_count(const char *syspath, uint64_t *ret) {
        _cleanup_(closedirp) DIR *dir = NULL;
        char path[4096];

        if (read_u64(syspath, "power/wakeup_count", ret) >= 0)
                return true;
        snprintf(path, sizeof(path), "%s/wakeup", syspath);
        dir = opendir(path);
        if (!dir)
                return false;
        for (struct dirent *de; (de = readdir(dir));) {
                char sub[4096 + 300];
                if (!strneq(de->d_name, "wakeup", 6))
                        continue;
                snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
                if (read_u64(sub, "event_count", ret) >= 0)
                        return true;
        }
        return false;
}

int device_sample(const Device *d, Sample *ret) {
        Sample s = {};
        int r;

        r = sysfs_read(d->syspath, "power/runtime_status", s.status, sizeof(s.status));
        if (r < 0)
                return r;
        r = read_u64(d->syspath, "power/runtime_active_time", &s.active_ms);
        if (r >= 0)
                r = read_u64(d->syspath, "power/runtime_suspended_time", &s.suspended_ms);
        if (r < 0)
                return r;
        s.has_wakeup_count = read_wakeup_count(d->syspath, &s.wakeup_count);
        s.valid = true;
        *ret = s;
        return 0;
}

void device_log_decision(Device *d, const char *decision, const char *fmt, ...) {
        char reason[STATS_REASON_MAX * 2];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(reason, sizeof(reason), fmt, ap);
        va_end(ap);
        /* Under journald, fields a query can select on ("journalctl DROWSE_DECISION=quarantine"); the
         * stderr stream cannot carry them. */
        if (getenv("JOURNAL_STREAM") && log_get_max_level() >= LOG_INFO &&
            sd_journal_send("MESSAGE=%s (%s): %s: %s", d->devpath, d->id, decision, reason, "PRIORITY=%d",
                            LOG_INFO, "DROWSE_DEVICE=%s", d->sysname, "DROWSE_ID=%s", d->id,
                            "DROWSE_DECISION=%s", decision, "SYSLOG_IDENTIFIER=drowsed", NULL) >= 0)
                ;
        else
                log_info("%s (%s): %s: %s", d->devpath, d->id, decision, reason);
        if (d->rec) {
                d->rec->stats.decisions++;
                stats_history_add(&d->rec->stats, stats_now_ms(), HISTORY_DECISION, decision, reason);
                d->rec->unsaved = true;
        }
}

/* One attribute drowsed owns: 1 if someone else changed it. */
static int drift_attr(Device *d, const char *dir, const char *attr, const char *owned, Drift mode) {
        char cur[64];

        /* Vanished or unreadable: the subtree is changing, which uevents will tell. */
        if (sysfs_read(dir, attr, cur, sizeof(cur)) < 0 || streq(cur, owned))
                return 0;
        if (mode == DRIFT_YIELD && !d->yielded) {
                d->yielded = true;
                int n = snprintf(d->yield_reason, sizeof(d->yield_reason),
                                 "yielded to another writer, who set %s/%s=%s (drift=yield; drowsectl release "
                                 "%s takes it back)",
                                 short_name(dir), attr, cur, d->sysname);
                /* Only a very long sysfs name gets here; the decision stands, its text is cut. */
                if (n >= (int) sizeof(d->yield_reason))
                        log_debug("%s: yield reason cut to %zu bytes", d->devpath, sizeof(d->yield_reason) - 1);
        }
        device_log_decision(d, mode == DRIFT_YIELD ? "drift-yield" : "drift-reapply",
                            "%s/%s was %s, now %s: changed by another writer; %s", short_name(dir), attr, owned,
                            cur, mode == DRIFT_YIELD ? "leaving it" : "writing it back");
        return 1;
}

int device_check_drift(Device *d, Drift mode) {
        char v[16];
        int n = 0;

        if (!d->owned || d->yielded)
                return 0;
        n += drift_attr(d, d->syspath, "power/control", d->owned_control, mode);
        if (d->owned_delay_ms >= 0) {
                snprintf(v, sizeof(v), "%d", d->owned_delay_ms);
                n += drift_attr(d, d->syspath, "power/autosuspend_delay_ms", v, mode);
        }
        for (unsigned l = 0; l < d->n_owned_luns; l++) {
                n += drift_attr(d, d->owned_luns[l], "power/control", d->owned_control, mode);
                if (d->owned_disk_delay_ms >= 0) {
                        snprintf(v, sizeof(v), "%d", d->owned_disk_delay_ms);
                        n += drift_attr(d, d->owned_luns[l], "power/autosuspend_delay_ms", v, mode);
                }
        }
        if (n > 0)
                d->dirty = true;
        return n;
}
