/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-device.h>

#include "bus.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "manager.h"
#include "plot.h"
#include "power.h"

#define MAX_CONNECTIONS 16
#define MAX_REQUEST 512
/* SEQPACKET answers are one message: as large as the kernel lets the send buffer be (2 x wmem_max). */
#define CONTROL_SNDBUF (4 * 1024 * 1024)
#define STORM_WINDOW_USEC (60 * 1000000ULL)
/* How long runtime_status=error must last to count as a failure rather than a device going away. */
#define RUNTIME_ERROR_CONFIRM_USEC (2 * 1000000ULL)
/* Statistics are written on every decision and at exit; in between, at most this often. */
#define SAVE_INTERVAL_USEC (300 * 1000000ULL)

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

        char *state_dir;
        bool state_dir_ready;
        DeviceRecord **records;
        size_t n_records;
        bool records_loaded;

        /* Armed only while some device autosuspends: with nothing to watch, drowsed never wakes up. */
        sd_event_source *sample_source;
        bool sample_armed;
        uint64_t sample_interval_usec;
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
        if (o->state_dir) {
                m->state_dir = strdup(o->state_dir);
                if (!m->state_dir)
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
        for (size_t i = 0; i < m->n_records; i++)
                record_free(m->records[i]);
        free(m->records);
        free(m->state_dir);
        sd_event_source_disable_unref(m->sample_source);
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
static void update_sampler(Manager *m, bool fast);

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
        if (m->sample_armed) /* the sampling intervals may have changed */
                update_sampler(m, true);
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

/* The tracked USB device one of whose interfaces holds syspath. A uevent from a known device's
 * subtree then needs no walk up its parents, each of which libudev would build from sysfs again;
 * a USB device behind a hub hangs below the hub itself, never below an interface, so the interface
 * in the path pins the owner. */
static Device *find_interface_owner(Manager *m, const char *syspath) {
        if (!syspath)
                return NULL;
        for (size_t i = 0; i < m->n_devices; i++) {
                const Device *d = m->devices[i];
                size_t l = strlen(d->syspath), n = strlen(d->sysname);
                if (strneq(syspath, d->syspath, l) && syspath[l] == '/' &&
                    strneq(syspath + l + 1, d->sysname, n) && syspath[l + 1 + n] == ':')
                        return m->devices[i];
        }
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

/* Records: statistics, strikes and quarantine by device identity, in memory and in the state directory. */

static int ensure_state_dir(Manager *m) {
        if (m->state_dir_ready)
                return 0;
        if (mkdir(m->state_dir, 0755) < 0 && errno != EEXIST)
                return log_warning_errno(errno, "Cannot create the state directory %s: %m", m->state_dir);
        m->state_dir_ready = true;
        return 0;
}

static void save_record(Manager *m, DeviceRecord *r) {
        int k;

        r->saved_at_usec = stats_now_usec();
        if (!m->state_dir) {
                r->unsaved = false;
                return;
        }
        if (ensure_state_dir(m) < 0)
                return;
        k = record_save(r, m->state_dir);
        if (k < 0) {
                char name[256];
                record_file_name(r->key, name, sizeof(name));
                log_warning_errno(k, "Cannot save %s/%s: %m", m->state_dir, name);
                return;
        }
        r->unsaved = false;
}

void manager_save(Manager *m) {
        for (size_t i = 0; i < m->n_records; i++)
                if (m->records[i]->unsaved)
                        save_record(m, m->records[i]);
}

static DeviceRecord *find_record(Manager *m, const char *key) {
        for (size_t i = 0; i < m->n_records; i++)
                if (streq(m->records[i]->key, key))
                        return m->records[i];
        return NULL;
}

/* Adds R (taking it) to the table. When full, the record of the absent, unquarantined device removed
 * longest ago makes room; if there is none, R is dropped and NULL returned. */
static DeviceRecord *add_record(Manager *m, DeviceRecord *r) {
        if (m->n_records >= MANAGER_MAX_RECORDS) {
                size_t victim = SIZE_MAX;
                for (size_t i = 0; i < m->n_records; i++) {
                        DeviceRecord *o = m->records[i];
                        if (!o->attached && !o->quarantined &&
                            (victim == SIZE_MAX || o->removed_at_ms < m->records[victim]->removed_at_ms))
                                victim = i;
                }
                if (victim == SIZE_MAX) {
                        log_debug("Record table full, not keeping statistics for %s", r->key);
                        record_free(r);
                        return NULL;
                }
                record_free(m->records[victim]);
                m->records[victim] = r;
                return r;
        }
        DeviceRecord **n = reallocarray(m->records, m->n_records + 1, sizeof(DeviceRecord *));
        if (!n) {
                record_free(r);
                return NULL;
        }
        m->records = n;
        m->records[m->n_records++] = r;
        return r;
}

/* Reads every state file once. A corrupt one is named in the log and skipped: its device starts
 * afresh, and the next save replaces the file. */
static void load_records(Manager *m) {
        _cleanup_(closedirp) DIR *dir = NULL;
        size_t loaded = 0;

        if (m->records_loaded || !m->state_dir)
                return;
        m->records_loaded = true;
        dir = opendir(m->state_dir);
        if (!dir) {
                if (errno != ENOENT)
                        log_warning_errno(errno, "Cannot read the state directory %s: %m", m->state_dir);
                return;
        }
        m->state_dir_ready = true;
        for (struct dirent *de; (de = readdir(dir));) {
                char path[4096], error[256] = "", expected[256];
                size_t l = strlen(de->d_name);
                DeviceRecord *r;
                int k;

                if (de->d_name[0] == '.' && de->d_name[1] == '#') {
                        /* A save interrupted before its rename: the file it was replacing is intact. */
                        if ((size_t) snprintf(path, sizeof(path), "%s/%s", m->state_dir, de->d_name) <
                            sizeof(path))
                                (void) unlink(path);
                        continue;
                }
                if (de->d_name[0] == '.' || l <= strlen(RECORD_FILE_SUFFIX) ||
                    !streq(de->d_name + l - strlen(RECORD_FILE_SUFFIX), RECORD_FILE_SUFFIX))
                        continue;
                if ((size_t) snprintf(path, sizeof(path), "%s/%s", m->state_dir, de->d_name) >= sizeof(path))
                        continue;
                r = malloc(sizeof(DeviceRecord));
                if (!r) {
                        log_oom();
                        return;
                }
                record_init(r, "");
                k = record_load(path, r, error, sizeof(error));
                if (k >= 0) {
                        record_file_name(r->key, expected, sizeof(expected));
                        if (!streq(expected, de->d_name)) {
                                snprintf(error, sizeof(error), "its key \"%.64s\" belongs in %.100s", r->key,
                                         expected);
                                k = -EBADMSG;
                        } else if (find_record(m, r->key)) {
                                snprintf(error, sizeof(error), "duplicate key");
                                k = -EBADMSG;
                        }
                }
                if (k < 0) {
                        log_warning("Ignoring state file %s: %s", path, error);
                        record_free(r);
                        continue;
                }
                r->attached = false;
                r->unsaved = false;
                if (add_record(m, r))
                        loaded++;
        }
        log_info("State: %zu device records from %s", loaded, m->state_dir);
}

size_t manager_n_records(Manager *m) {
        return m->n_records;
}

DeviceRecord *manager_record(Manager *m, size_t i) {
        return i < m->n_records ? m->records[i] : NULL;
}

static int manager_schedule(Manager *m);

static void quarantine(Manager *m, Device *d, const char *reason) {
        DeviceRecord *r = d->rec;

        if (!r || r->quarantined)
                return;
        r->quarantined = true;
        snprintf(r->quarantine_reason, sizeof(r->quarantine_reason), "%s", reason);
        device_log_decision(d, "quarantine", "%s; power/control=on until drowsectl release %s", reason,
                            d->sysname);
        stats_history_add(&r->stats, stats_now_ms(), HISTORY_STATE, "quarantined", reason);
        save_record(m, r);
        d->dirty = true;
        (void) manager_schedule(m);
}

/* A storm or a re-enumeration after suspend: back the delay off, and quarantine after enough of them. */
_printf_(3, 4) static void strike(Manager *m, Device *d, const char *fmt, ...) {
        const Protect *p = &m->policy.protect;
        DeviceRecord *r = d->rec;
        char reason[STATS_REASON_MAX];
        int new_delay;
        va_list ap;

        if (!r || r->quarantined)
                return;
        va_start(ap, fmt);
        vsnprintf(reason, sizeof(reason), fmt, ap);
        va_end(ap);
        r->strikes++;
        if (p->quarantine_after > 0 && r->strikes >= p->quarantine_after) {
                char q[STATS_REASON_MAX];
                snprintf(q, sizeof(q), "%.120s (strike %u)", reason, r->strikes);
                quarantine(m, d, q);
                return;
        }
        /* The delay is at most an hour: stop multiplying there, so that this cannot overflow. */
        if (r->backoff < 3600 * 1000)
                r->backoff = MIN(r->backoff * p->storm_backoff, 3600u * 1000);
        /* d->delay_ms already holds the old backoff: the next pass writes the policy's delay times the new
         * one; say what that will be. */
        if (d->delay_ms >= 0) {
                new_delay = (int) MIN((uint64_t) d->delay_ms * p->storm_backoff, (uint64_t) 3600 * 1000);
                device_log_decision(d, "backoff", "%s: autosuspend delay %d -> %d ms (strike %u%s)", reason,
                                    d->delay_ms, new_delay, r->strikes,
                                    p->quarantine_after > 0 ? ", quarantine at the next ones" : "");
        } else
                /* Re-enumerated: the new device has no delay of its own yet; the next pass gives it the
                 * policy's times the backoff. */
                device_log_decision(d, "backoff", "%s: autosuspend delay x%u of the policy's (strike %u%s)",
                                    reason, r->backoff, r->strikes,
                                    p->quarantine_after > 0 ? ", quarantine at the next ones" : "");
        save_record(m, r);
        d->dirty = true;
        (void) manager_schedule(m);
}

static void attach_record(Manager *m, Device *d) {
        const Protect *p = &m->policy.protect;
        char key[RECORD_KEY_MAX];
        DeviceRecord *r;
        uint64_t now = stats_now_ms();

        load_records(m);
        record_key(d->id, d->serial, d->devpath, key, sizeof(key));
        r = find_record(m, key);
        if (r && r->attached) {
                /* Two present devices with one serial number (cheap ones share theirs): by port. */
                record_key(d->id, NULL, d->devpath, key, sizeof(key));
                r = find_record(m, key);
                if (r && r->attached)
                        return;
        }
        if (!r) {
                r = malloc(sizeof(DeviceRecord));
                if (!r) {
                        log_oom();
                        return;
                }
                record_init(r, key);
                r = add_record(m, r);
                if (!r)
                        return;
        }
        r->attached = true;
        snprintf(r->id, sizeof(r->id), "%s", d->id);
        snprintf(r->serial, sizeof(r->serial), "%s", d->serial);
        snprintf(r->name, sizeof(r->name), "%s", d->sysname);
        d->rec = r;

        /* Back within the window after leaving suspended: a resume that failed and made the kernel
         * disconnect and enumerate it again (or someone re-plugging it at once, which the short window
         * keeps rare; a strike only backs off first). */
        if (p->re_enumerate_window_s > 0 && r->removed_at_ms > 0 && now >= r->removed_at_ms &&
            now - r->removed_at_ms <= (uint64_t) p->re_enumerate_window_s * 1000 &&
            (streq(r->last_status, "suspended") || streq(r->last_status, "error")))
                strike(m, d, "re-enumerated %.1f s after it went away %s", (now - r->removed_at_ms) / 1000.0,
                       r->last_status);
        r->removed_at_ms = 0;
        r->last_status[0] = 0;
}

static void detach_record(Manager *m, Device *d) {
        DeviceRecord *r = d->rec;

        if (!r)
                return;
        r->removed_at_ms = stats_now_ms();
        snprintf(r->last_status, sizeof(r->last_status), "%s", d->last.valid ? d->last.status : "");
        stats_history_add(&r->stats, r->removed_at_ms, HISTORY_STATE, "gone", NULL);
        r->attached = false;
        save_record(m, r);
        d->rec = NULL;
}

/* Sampling. */

static uint64_t resumes_since(const Device *d, uint64_t since_usec) {
        uint64_t sum = 0;
        for (size_t i = 0; i < d->n_resumes; i++) {
                size_t k = (d->first_resume + i) % DEVICE_RESUME_WINDOW;
                if (d->resumes[k].t_usec >= since_usec)
                        sum += d->resumes[k].n;
        }
        return sum;
}

static void push_resumes(Device *d, uint64_t now_usec, uint64_t n) {
        size_t k;
        if (!d->resumes) {
                d->resumes = calloc(DEVICE_RESUME_WINDOW, sizeof(*d->resumes));
                if (!d->resumes) {
                        /* The rate then reads 0: storm detection misses this device until memory is back. */
                        log_oom();
                        return;
                }
        }
        if (d->n_resumes < DEVICE_RESUME_WINDOW)
                k = (d->first_resume + d->n_resumes++) % DEVICE_RESUME_WINDOW;
        else {
                k = d->first_resume;
                d->first_resume = (d->first_resume + 1) % DEVICE_RESUME_WINDOW;
        }
        d->resumes[k].t_usec = now_usec;
        d->resumes[k].n = n;
}

static uint64_t now_usec_since(uint64_t now, uint64_t ago) {
        return now > ago ? now - ago : 0;
}

/* Returns true if anything changed: the sampler then stays fast. */
static bool sample_device(Manager *m, Device *d, uint64_t now_usec) {
        const Protect *p = &m->policy.protect;
        DeviceRecord *r = d->rec;
        const HistoryEntry *e;
        uint64_t n, wakeups, now_ms = stats_now_ms();
        bool changed;
        Sample cur;

        if (!r || d->state != DEVICE_AUTOSUSPEND)
                return false;
        if (device_sample(d, &cur) < 0) {
                /* Going away: the remove uevent follows. */
                d->last.valid = false;
                return false;
        }
        wakeups = r->stats.wakeups;
        n = stats_account(&r->stats, &d->last, &cur, d->delay_ms);
        changed = n > 0 || r->stats.wakeups != wakeups || !d->last.valid || !streq(d->last.status, cur.status);
        e = stats_history_last(&r->stats, HISTORY_STATE);
        if (n > 0 && d->last.valid && streq(d->last.status, cur.status) && streq(cur.status, "suspended")) {
                /* Woke and slept again between two samples: draw the interval's active time as one
                 * stretch ending now. */
                uint64_t da = cur.active_ms - d->last.active_ms;
                stats_history_add(&r->stats, now_ms > da ? now_ms - da : now_ms, HISTORY_STATE, "active", NULL);
                stats_history_add(&r->stats, now_ms, HISTORY_STATE, "suspended", NULL);
        } else if (!e || !streq(e->what, cur.status))
                stats_history_add(&r->stats, now_ms, HISTORY_STATE, cur.status, NULL);
        if (changed)
                r->unsaved = true;
        d->last = cur;
        push_resumes(d, now_usec, n);

        if (streq(cur.status, "error")) {
                /* A device being unplugged or detached reads "error" between the failed resume of its
                 * dead link and its removal (seen on vhci detach and in the soak's unplugs), and its
                 * record, kept by serial, would carry that quarantine to the next plug. A real failure
                 * stays: the kernel keeps runtime_status=error until someone resets it. */
                if (d->error_since_usec == 0 || now_usec < d->error_since_usec + RUNTIME_ERROR_CONFIRM_USEC) {
                        if (d->error_since_usec == 0)
                                d->error_since_usec = MAX(now_usec, 1u);
                        log_debug("%s: runtime_status=error, quarantine if it is still so in %u ms",
                                  d->devpath, (unsigned) (RUNTIME_ERROR_CONFIRM_USEC / 1000));
                        return true;
                }
                quarantine(m, d, "runtime_status=error: a runtime suspend or resume of the device failed");
                return true;
        }
        d->error_since_usec = 0;
        if (p->storm_resumes_per_minute > 0) {
                uint64_t rate = resumes_since(d, now_usec_since(now_usec, STORM_WINDOW_USEC));
                if (rate >= p->storm_resumes_per_minute) {
                        /* A fresh minute for the next verdict, at the new delay. */
                        d->n_resumes = 0;
                        strike(m, d, "resume storm: %" PRIu64 " resumes in the last minute (limit %u)", rate,
                               p->storm_resumes_per_minute);
                        return true;
                }
        }
        return changed;
}

static bool any_error_pending(Manager *m) {
        for (size_t i = 0; i < m->n_devices; i++)
                if (m->devices[i]->state == DEVICE_AUTOSUSPEND && m->devices[i]->error_since_usec > 0)
                        return true;
        return false;
}

static bool any_autosuspend(Manager *m) {
        for (size_t i = 0; i < m->n_devices; i++)
                if (m->devices[i]->state == DEVICE_AUTOSUSPEND && m->devices[i]->rec)
                        return true;
        return false;
}

static int on_sample(sd_event_source *s, uint64_t usec, void *userdata);

static void arm_sampler(Manager *m, uint64_t interval) {
        int r;

        m->sample_interval_usec = interval;
        if (!m->sample_source)
                /* Accuracy: a quarter of the interval, so that the kernel can batch the wakeup. */
                r = sd_event_add_time_relative(m->event, &m->sample_source, CLOCK_MONOTONIC, interval,
                                               interval / 4, on_sample, m);
        else {
                r = sd_event_source_set_time_relative(m->sample_source, interval);
                if (r >= 0)
                        r = sd_event_source_set_time_accuracy(m->sample_source, interval / 4);
        }
        if (r >= 0)
                r = sd_event_source_set_enabled(m->sample_source, SD_EVENT_ONESHOT);
        if (r < 0) {
                log_warning_errno(r, "Cannot arm the sampling timer: %m");
                m->sample_armed = false;
                return;
        }
        m->sample_armed = true;
}

static uint64_t sample_min_usec(const Manager *m) {
        return (uint64_t) m->policy.protect.sample_min_ms * 1000;
}

static uint64_t sample_max_usec(const Manager *m) {
        return (uint64_t) MAX(m->policy.protect.sample_max_ms, m->policy.protect.sample_min_ms) * 1000;
}

/* Arms the sampling timer if some device autosuspends (FAST: back to the shortest interval, after
 * activity), and disarms it if none does. */
static void update_sampler(Manager *m, bool fast) {
        if (!any_autosuspend(m)) {
                if (m->sample_armed) {
                        (void) sd_event_source_set_enabled(m->sample_source, SD_EVENT_OFF);
                        log_debug("Nothing autosuspends: sampling stopped");
                }
                m->sample_armed = false;
                m->sample_interval_usec = 0;
                return;
        }
        if (any_error_pending(m))
                arm_sampler(m, MIN(sample_min_usec(m), RUNTIME_ERROR_CONFIRM_USEC));
        else if (fast || !m->sample_armed)
                arm_sampler(m, sample_min_usec(m));
}

static bool sample_all(Manager *m) {
        uint64_t now = stats_now_usec();
        bool changed = false;

        for (size_t i = 0; i < m->n_devices; i++) {
                Device *d = m->devices[i];
                if (d->state != DEVICE_AUTOSUSPEND) {
                        /* Not watched in this state (quarantined: kept active on purpose): the first
                         * interval after it autosuspends again must not span it, or its active time reads
                         * as resumes at the policy's delay, a storm right after a release. */
                        d->last.valid = false;
                        d->error_since_usec = 0;
                        continue;
                }
                if (sample_device(m, d, now))
                        changed = true;
                /* Nobody announces a write to power/control: reading it back is the only way to see it. */
                if (!d->dirty && device_check_drift(d, m->policy.protect.drift) > 0) {
                        d->drift_checked = true;
                        changed = true;
                        (void) manager_schedule(m);
                }
        }
        for (size_t i = 0; i < m->n_records; i++) {
                DeviceRecord *r = m->records[i];
                if (r->unsaved && now - r->saved_at_usec >= SAVE_INTERVAL_USEC)
                        save_record(m, r);
        }
        return changed;
}

static int on_sample(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        bool changed = sample_all(m);

        m->sample_armed = false;
        if (!any_autosuspend(m)) {
                update_sampler(m, false);
                return 0;
        }
        /* Quiet devices are looked at less and less often: 1 s, 2 s, 4 s... up to the maximum; any
         * change goes back to the shortest interval. */
        uint64_t next = changed ? sample_min_usec(m)
                                : MIN(MAX(m->sample_interval_usec * 2, sample_min_usec(m)), sample_max_usec(m));
        /* An error waiting for its confirmation is looked at again when that is due. */
        if (any_error_pending(m))
                next = MIN(next, RUNTIME_ERROR_CONFIRM_USEC);
        arm_sampler(m, next);
        return 0;
}

void manager_sample_now(Manager *m) {
        (void) sample_all(m);
        update_sampler(m, false);
}

uint64_t manager_sample_interval(Manager *m) {
        return m->sample_armed ? m->sample_interval_usec : 0;
}

/* Starts tracking a USB device, or marks it for the next pass if it is tracked already. A coldplug
 * from an empty table skips the lookup: the enumeration names each device once, and a linear search
 * per device would make a big tree's coldplug quadratic. */
static int track(Manager *m, const char *syspath, const char *sysname, const char *devpath, bool lookup) {
        Device *d;
        int r;

        if (!sysname || strneq(sysname, "usb", 3)) /* root hubs: the kernel's business */
                return 0;
        d = lookup ? find_syspath(m, syspath) : NULL;
        if (d) {
                d->dirty = true;
                return 0;
        }
        Device **n = reallocarray(m->devices, m->n_devices + 1, sizeof(Device *));
        if (!n)
                return log_oom();
        m->devices = n;
        r = device_new(syspath, sysname, devpath, &d);
        if (r < 0)
                return log_warning_errno(r, "Cannot track %s: %m", syspath);
        m->devices[m->n_devices++] = d;
        log_debug("Tracking %s (%s)", d->devpath, d->id);
        attach_record(m, d);
        return 0;
}

static int track_udev(Manager *m, struct udev_device *usbdev) {
        return track(m, udev_device_get_syspath(usbdev), udev_device_get_sysname(usbdev),
                     udev_device_get_devpath(usbdev), true);
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
                detach_record(m, d);
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
                        /* A pass from a uevent or a reload: has someone else written what we own? Not
                         * when the subtree changed: new nodes start at the kernel's defaults. */
                        if (d->tree_changed)
                                d->owned = false;
                        else if (!d->drift_checked)
                                (void) device_check_drift(d, m->policy.protect.drift);
                        d->tree_changed = d->drift_checked = false;
                        r = device_apply(d, &m->policy, m->power, vhci_holder(m, d));
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
        /* Devices that had uevents are sampled now and the sampler speeds up: activity. */
        bool fast = false;
        uint64_t now = stats_now_usec();
        for (size_t i = 0; i < m->n_devices; i++) {
                Device *d = m->devices[i];
                if (d->sample_soon && d->state == DEVICE_AUTOSUSPEND) {
                        (void) sample_device(m, d, now);
                        fast = true;
                }
                d->sample_soon = false;
        }
        update_sampler(m, fast);
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
        _cleanup_(sd_device_enumerator_unrefp) sd_device_enumerator *e = NULL;
        bool lookup = m->n_devices > 0;
        int r;

        /* sd-device rather than libudev: its enumerator hands out the devices it built, where
         * libudev's only names them and each would be built from sysfs a second time. */
        r = sd_device_enumerator_new(&e);
        if (r >= 0)
                r = sd_device_enumerator_allow_uninitialized(e);
        if (r >= 0)
                r = sd_device_enumerator_add_match_subsystem(e, "usb", true);
        if (r >= 0)
                r = sd_device_enumerator_add_match_property(e, "DEVTYPE", "usb_device");
        if (r < 0)
                return log_error_errno(r, "Cannot enumerate USB devices: %m");
        load_records(m);
        m->power = _POWER_SOURCE_INVALID;
        (void) update_power(m);
        if (m->power < 0)
                m->power = POWER_AC;
        for (sd_device *dev = sd_device_enumerator_get_device_first(e); dev;
             dev = sd_device_enumerator_get_device_next(e)) {
                const char *syspath = NULL, *sysname = NULL, *devpath = NULL;
                if (sd_device_get_syspath(dev, &syspath) < 0 || sd_device_get_sysname(dev, &sysname) < 0 ||
                    sd_device_get_devpath(dev, &devpath) < 0)
                        continue;
                (void) track(m, syspath, sysname, devpath, lookup);
        }
        e = sd_device_enumerator_unref(e);
        log_info("Coldplug: %zu USB devices", m->n_devices);
        r = manager_apply_dirty(m);
        /* The pass built and dropped sd-device objects for every node of the tree: on a big tree that
         * is megabytes of freed heap the daemon would otherwise keep resident for its whole life. */
        (void) malloc_trim(0);
        return r;
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
                update_sampler(m, false);
                (void) manager_schedule(m);
                return;
        }
        if (!streq(action, "add") && !streq(action, "bind") && !streq(action, "change") &&
            !streq(action, "unbind") && !streq(action, "remove"))
                return;
        /* Anything in a USB device's subtree (an interface binding, a LUN appearing, a disk's driver
         * binding) re-evaluates that device: apply is idempotent and writes only what differs. */
        Device *d = find_interface_owner(m, udev_device_get_syspath(dev));
        if (!d) {
                if (streq(ss, "usb") && type && streq(type, "usb_device"))
                        usbdev = dev;
                else
                        usbdev = udev_device_get_parent_with_subsystem_devtype(dev, "usb", "usb_device");
                if (!usbdev)
                        return;
                if (streq(action, "remove") && !find_syspath(m, udev_device_get_syspath(usbdev)))
                        return;
                if (track_udev(m, usbdev) < 0)
                        return;
                d = find_syspath(m, udev_device_get_syspath(usbdev));
        }
        if (d) {
                d->dirty = true;
                d->sample_soon = true;
                if (!streq(action, "change"))
                        d->tree_changed = true;
        }
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

static void dump_stats_json(Manager *m, const Device *d, const DeviceRecord *r, FILE *f) {
        uint64_t now = stats_now_usec();

        fputs("{\"name\":", f);
        json_write_string(f, d ? d->sysname : r->name);
        fputs(",\"id\":", f);
        json_write_string(f, d ? d->id : r->id);
        fputs(",\"serial\":", f);
        json_write_string(f, d ? d->serial : r->serial);
        fputs(",\"key\":", f);
        json_write_string(f, r ? r->key : "");
        fputs(",\"present\":", f);
        fputs(d ? "true" : "false", f);
        fputs(",\"state\":", f);
        json_write_string(f, d ? device_state_to_string(d->state) : "absent");
        fprintf(f, ",\"quarantined\":%s,\"quarantine_reason\":", r && r->quarantined ? "true" : "false");
        if (r && r->quarantined)
                json_write_string(f, r->quarantine_reason);
        else
                fputs("null", f);
        fprintf(f, ",\"strikes\":%u,\"backoff\":%u,\"delay_ms\":%d,\"resumes_last_minute\":%" PRIu64 ",",
                r ? r->strikes : 0, r ? r->backoff : 1, d ? d->delay_ms : -1,
                d ? resumes_since(d, now_usec_since(now, STORM_WINDOW_USEC)) : 0);
        if (r)
                stats_dump_json_fields(&r->stats, f);
        else
                fputs("\"suspended_ms\":0,\"active_ms\":0,\"resumes\":0,\"wakeups\":0,\"decisions\":0,\"history\":[]",
                      f);
        fputc('}', f);
}

static void format_ms(uint64_t ms, char *buf, size_t size) {
        if (ms < 60 * 1000)
                snprintf(buf, size, "%.1fs", ms / 1000.0);
        else if (ms < 3600 * 1000)
                snprintf(buf, size, "%.1fmin", ms / 60000.0);
        else
                snprintf(buf, size, "%.1fh", ms / 3600000.0);
}

static void dump_stats_text(const Device *d, const DeviceRecord *r, FILE *f) {
        char sus[16] = "-", act[16] = "-";

        if (r) {
                format_ms(r->stats.suspended_ms, sus, sizeof(sus));
                format_ms(r->stats.active_ms, act, sizeof(act));
        }
        fprintf(f, "%-10s %-9s %-12s %10s %10s %8" PRIu64 " %8" PRIu64 " %9" PRIu64 " %s\n",
                d ? d->sysname : r->name, d ? d->id : r->id, d ? device_state_to_string(d->state) : "absent",
                sus, act, r ? r->stats.resumes : 0, r ? r->stats.wakeups : 0, r ? r->stats.decisions : 0,
                r && r->quarantined ? r->quarantine_reason : "no");
}

int manager_dump_stats(Manager *m, const char *name, bool json, FILE *f) {
        bool first = true;
        Device *only = NULL;

        if (name) {
                only = manager_find(m, name);
                if (!only)
                        return -ENODEV;
        }
        if (json)
                fputs("{\"devices\":[", f);
        else
                fprintf(f, "%-10s %-9s %-12s %10s %10s %8s %8s %9s %s\n", "DEVICE", "ID", "STATE", "SUSPENDED",
                        "ACTIVE", "RESUMES", "WAKEUPS", "DECISIONS", "QUARANTINED");
        for (size_t i = 0; i < m->n_devices; i++) {
                Device *d = m->devices[i];
                if (only && d != only)
                        continue;
                if (json) {
                        if (!first)
                                fputc(',', f);
                        dump_stats_json(m, d, d->rec, f);
                } else
                        dump_stats_text(d, d->rec, f);
                first = false;
        }
        /* The quarantine list includes the devices that are not plugged in. */
        for (size_t i = 0; i < m->n_records && !only; i++) {
                DeviceRecord *r = m->records[i];
                if (r->attached || !r->quarantined)
                        continue;
                if (json) {
                        if (!first)
                                fputc(',', f);
                        dump_stats_json(m, NULL, r, f);
                } else
                        dump_stats_text(NULL, r, f);
                first = false;
        }
        if (json)
                fprintf(f, "],\"sample_interval_ms\":%" PRIu64 "}\n", manager_sample_interval(m) / 1000);
        return 0;
}

void manager_plot(Manager *m, FILE *f) {
        PlotRow rows[PLOT_MAX_ROWS];
        size_t n = 0;

        for (size_t i = 0; i < m->n_devices && n < PLOT_MAX_ROWS; i++) {
                Device *d = m->devices[i];
                if (!d->rec)
                        continue;
                rows[n++] = (PlotRow) { .name = d->sysname, .id = d->id, .state = device_state_to_string(d->state),
                                        .stats = &d->rec->stats };
        }
        for (size_t i = 0; i < m->n_records && n < PLOT_MAX_ROWS; i++) {
                DeviceRecord *r = m->records[i];
                if (r->attached || r->stats.history_len == 0)
                        continue;
                rows[n++] = (PlotRow) { .name = r->name, .id = r->id, .state = "absent", .stats = &r->stats };
        }
        plot_svg(f, rows, n, stats_now_ms());
}

static DeviceRecord *find_absent_record(Manager *m, const char *name) {
        for (size_t i = 0; i < m->n_records; i++) {
                DeviceRecord *r = m->records[i];
                if (!r->attached && (streq(r->key, name) || streq(r->name, name)))
                        return r;
        }
        return NULL;
}

int manager_release(Manager *m, const char *name) {
        Device *d = manager_find(m, name);
        DeviceRecord *r = d ? d->rec : find_absent_record(m, name);
        bool was_quarantined;

        if (!d && !r)
                return -ENODEV;
        if (!r)
                return -EALREADY;
        if (!r->quarantined && r->strikes == 0 && r->backoff <= 1 && !(d && d->yielded))
                return -EALREADY;
        was_quarantined = r->quarantined;
        r->quarantined = false;
        r->quarantine_reason[0] = 0;
        r->strikes = 0;
        r->backoff = 1;
        if (d) {
                d->yielded = false;
                d->n_resumes = 0;
                device_log_decision(d, "release", "%s by drowsectl release: policy applies again",
                                    was_quarantined ? "quarantine lifted" : "backoff and strikes cleared");
                d->dirty = true;
                (void) manager_schedule(m);
        } else {
                log_info("%s (absent): release: %s by drowsectl release", r->key,
                         was_quarantined ? "quarantine lifted" : "backoff and strikes cleared");
                r->stats.decisions++;
                stats_history_add(&r->stats, stats_now_ms(), HISTORY_DECISION, "release", "by drowsectl release");
        }
        save_record(m, r);
        return 0;
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
        } else if (streq(verb, "stats")) {
                /* Built aside: an unknown device must not leave a half answer behind "ok". */
                _cleanup_free_ char *buf = NULL;
                size_t size = 0;
                FILE *g = open_memstream(&buf, &size);
                int k;
                if (!g) {
                        fputs("error: out of memory\n", f);
                        return 0;
                }
                k = manager_dump_stats(m, arg[0] ? arg : NULL, json, g);
                if (fclose(g) != 0) {
                        fputs("error: out of memory\n", f);
                        return 0;
                }
                if (k < 0) {
                        fprintf(f, "error: no USB device '%s' known to drowsed\n", arg);
                        return 0;
                }
                fputs("ok\n", f);
                fwrite(buf, 1, size, f);
        } else if (streq(verb, "plot")) {
                fputs("ok\n", f);
                manager_plot(m, f);
        } else if (streq(verb, "release")) {
                int k;
                if (uid != 0) {
                        fputs("error: release needs root\n", f);
                        return 0;
                }
                if (!arg[0]) {
                        fputs("error: release needs a device\n", f);
                        return 0;
                }
                k = manager_release(m, arg);
                if (k == -ENODEV)
                        fprintf(f, "error: no USB device '%s' known to drowsed\n", arg);
                else if (k == -EALREADY)
                        fprintf(f, "error: %s is not quarantined, backed off or yielded: nothing to release\n", arg);
                else if (k < 0)
                        fprintf(f, "error: release failed: %s\n", strerror(-k));
                else
                        fputs("ok\n", f);
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
                        if (fclose(f) == 0 &&
                            send(fd, reply, reply_size, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EMSGSIZE) {
                                char e[128];
                                int l = snprintf(e, sizeof(e),
                                                 "error: the answer (%zu bytes) is larger than a socket message "
                                                 "may be; ask for one device\n", reply_size);
                                (void) send(fd, e, (size_t) l, MSG_NOSIGNAL | MSG_DONTWAIT);
                        }
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
        /* One message per answer: the statistics with their history, and plots, are larger than the
         * default buffer. The kernel caps this at twice net.core.wmem_max. */
        int sndbuf = CONTROL_SNDBUF;
        (void) setsockopt(c, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
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
        int r;

        (void) sd_notify(false, "READY=1");
        notify_status(m);
        r = sd_event_loop(m->event);
        (void) sd_notify(false, "STOPPING=1");
        /* The statistics gathered since the last save: the next start goes on from them. */
        manager_save(m);
        return r;
}
