/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* drowse.conf: [defaults] and [rule NAME] sections, and the decision they give for one USB device.
 * Parsing and matching only; no sysfs access and no logging above debug. */

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "macro.h"

#define POLICY_MAX_RULES 256
#define POLICY_MAX_INTERFACES 32
#define POLICY_ERROR_MAX 512

typedef enum Tristate {
        TRISTATE_UNSET = -1,
        TRISTATE_NO = 0,
        TRISTATE_YES = 1,
} Tristate;

typedef enum MediaPoll {
        MEDIA_POLL_OFF,  /* write events_poll_msecs=0 where the disk is polled */
        MEDIA_POLL_KEEP, /* leave it to udev and the kernel */
        _MEDIA_POLL_MAX,
        _MEDIA_POLL_INVALID = -EINVAL,
} MediaPoll;

typedef enum Wakeup {
        WAKEUP_KEEP,
        WAKEUP_ENABLED,
        WAKEUP_DISABLED,
        _WAKEUP_MAX,
        _WAKEUP_INVALID = -EINVAL,
} Wakeup;

typedef enum PowerSource {
        POWER_AC,
        POWER_BATTERY,
        _POWER_SOURCE_MAX,
        _POWER_SOURCE_INVALID = -EINVAL,
} PowerSource;

typedef enum Drift {
        DRIFT_REAPPLY, /* write drowsed's value back */
        DRIFT_YIELD,   /* leave the device to the other writer until drowsectl release */
        _DRIFT_MAX,
        _DRIFT_INVALID = -EINVAL,
} Drift;

/* [protect]: watching autosuspending devices, and what to do about storms and failed resumes. */
typedef struct Protect {
        unsigned storm_resumes_per_minute; /* 0: no storm detection */
        unsigned storm_backoff;            /* delay multiplier per strike */
        unsigned quarantine_after;         /* strikes; 0: never quarantine */
        unsigned re_enumerate_window_s;    /* 0: no re-enumeration detection */
        Drift drift;
        unsigned sample_min_ms, sample_max_ms; /* the adaptive sampling interval */
} Protect;

/* [profile ac] / [profile battery]: what changes with the power source. Unset = [defaults]. */
typedef struct Profile {
        Tristate autosuspend;
        int delay_ms;        /* -1 = unset */
        int disk_delay_ms;   /* -1 = unset */
} Profile;

typedef struct Rule {
        char *name;
        char *file;
        unsigned line;
        /* Matches; NULL / -1 = any. */
        char *match_id;      /* fnmatch() glob over "vvvv:pppp" */
        char *match_serial;  /* glob */
        int match_class;     /* device or any interface class, 0-255 */
        char *match_driver;  /* glob over any interface driver */
        char *match_devpath; /* glob over the sysname ("1-1.2"), or the devpath if it starts with '/' */
        Tristate match_removable;
        Tristate match_vhci;
        PowerSource match_power; /* _POWER_SOURCE_INVALID = any */
        /* Actions; unset = the defaults. */
        Tristate autosuspend;
        int delay_ms;        /* -1 = unset */
        int disk_delay_ms;   /* -1 = unset */
        Wakeup wakeup;
        Tristate persist;
        Tristate disk_runtime_start_stop;
} Rule;

typedef struct Policy {
        bool autosuspend;
        int delay_ms;
        int disk_delay_ms;
        MediaPoll media_poll;
        Tristate disk_runtime_start_stop; /* unset = leave manage_runtime_start_stop alone */
        unsigned vhci_root_ports;         /* autosuspending root-port devices per vhci_hcd; 0 = no limit */
        bool usb_power_supplies;          /* count type=USB supplies (USB-C chargers) as AC */
        Profile profiles[_POWER_SOURCE_MAX];
        Protect protect;
        Rule *rules;
        size_t n_rules;
} Policy;

/* What policy_decide() looks at: plain data, filled from sysfs/udev by the caller. */
typedef struct DeviceFacts {
        uint16_t vendor, product;
        const char *serial;
        const char *sysname;  /* "1-1.2" */
        const char *devpath;  /* "/devices/..." */
        int device_class;
        int interface_class[POLICY_MAX_INTERFACES];
        const char *interface_driver[POLICY_MAX_INTERFACES]; /* NULL: unbound */
        unsigned n_interfaces;
        bool removable;       /* usb_device "removable" attribute says "removable" */
        bool vhci;
        const char *id_autosuspend; /* udev properties, NULL if absent */
        const char *id_persist;
        PowerSource power;
} DeviceFacts;

typedef struct Decision {
        bool autosuspend;
        int delay_ms;
        int disk_delay_ms;
        Wakeup wakeup;
        Tristate persist;
        Tristate disk_runtime_start_stop;
        MediaPoll media_poll;
        const Rule *rule;       /* the matching rule, NULL for the defaults */
        char reason[160];       /* why autosuspend is (not) wanted */
} Decision;

void policy_init(Policy *p);
void policy_done(Policy *p);

/* Loads PATH (a missing file is an empty one) and then PATH.d/ *.conf in name order into P, which must be
 * freshly initialised. On error returns a negative errno and writes "FILE:LINE: what" into error. */
int policy_load(Policy *p, const char *path, char *error, size_t error_size);
/* Parses one file's text; FILE names it in errors. Used by policy_load() and the tests. */
int policy_load_string(Policy *p, const char *file, const char *text, char *error, size_t error_size);

bool rule_matches(const Rule *r, const DeviceFacts *f);
void policy_decide(const Policy *p, const DeviceFacts *f, Decision *ret);

const char *media_poll_to_string(MediaPoll m) _const_;
MediaPoll media_poll_from_string(const char *s) _pure_;
const char *power_source_to_string(PowerSource p) _const_;
PowerSource power_source_from_string(const char *s) _pure_;
const char *wakeup_to_string(Wakeup w) _const_;
const char *drift_to_string(Drift d) _const_;
Drift drift_from_string(const char *s) _pure_;
Wakeup wakeup_from_string(const char *s) _pure_;
