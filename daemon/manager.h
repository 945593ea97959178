/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* drowsed's core: the event loop, the udev monitor, coldplug, the device table, the policy and its
 * reloading, and the local control socket drowsectl talks to. */

#include <libudev.h>
#include <stdio.h>
#include <systemd/sd-event.h>

#include "device.h"
#include "policy.h"

#define DEFAULT_CONFIG_PATH SYSCONFDIR "/drowse/drowse.conf"
#define DEFAULT_CONTROL_PATH "/run/drowse/control"
#define DEFAULT_STATE_DIR "/var/lib/drowse"
#define MANAGER_MAX_RECORDS 1024

typedef enum MonitorSource {
        MONITOR_UDEV,   /* after udevd: properties (ID_AUTOSUSPEND...) and device nodes are there */
        MONITOR_KERNEL, /* raw kernel uevents: works without udevd, no udev properties */
        _MONITOR_SOURCE_MAX,
        _MONITOR_SOURCE_INVALID = -EINVAL,
} MonitorSource;

typedef struct ManagerOptions {
        const char *config_path;
        const char *control_path; /* NULL: no control socket */
        MonitorSource monitor;
        bool bus;                 /* publish org.drowse1 on the system bus */
        const char *state_dir;    /* statistics and quarantine; NULL: kept in memory only */
} ManagerOptions;

typedef struct Manager Manager;

int manager_new(const ManagerOptions *o, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* First load: an invalid config is fatal. Returns <0 with the error logged. */
int manager_load_config(Manager *m);
/* SIGHUP / drowsectl reload: an invalid config is logged (file:line) and the last good one kept. */
int manager_reload(Manager *m, char *error, size_t error_size);

int manager_coldplug(Manager *m);   /* enumerate and apply every USB device once */
int manager_start(Manager *m);      /* monitor, signals, control socket, READY=1 */
int manager_run(Manager *m);

void manager_dump_list(Manager *m, bool json, FILE *f);
Device *manager_find(Manager *m, const char *name);
size_t manager_n_devices(Manager *m);
struct udev *manager_udev(Manager *m);
PowerSource manager_power(Manager *m);
const char *manager_config_path(Manager *m);
Device *manager_device(Manager *m, size_t i);

/* Statistics: "stats [DEV]" as text or JSON. NAME NULL: every device (and absent quarantined ones).
 * Returns -ENODEV for an unknown NAME. */
int manager_dump_stats(Manager *m, const char *name, bool json, FILE *f);
/* An SVG timeline of every device's recorded history. */
void manager_plot(Manager *m, FILE *f);
/* Lifts quarantine, strikes, backoff and a drift=yield of NAME, re-applies and saves. -ENODEV if
 * unknown, -EALREADY if there was nothing to lift. */
int manager_release(Manager *m, const char *name);

/* The sampling timer's current interval in us, 0 if it is not armed (nothing autosuspends). */
uint64_t manager_sample_interval(Manager *m);
/* One sampling tick now, as the timer would run it (tests). */
void manager_sample_now(Manager *m);
/* Saves every record with unsaved changes (also done at exit). */
void manager_save(Manager *m);
size_t manager_n_records(Manager *m);
DeviceRecord *manager_record(Manager *m, size_t i);

const char *monitor_source_to_string(MonitorSource s) _const_;
MonitorSource monitor_source_from_string(const char *s) _pure_;
