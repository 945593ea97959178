/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* One USB device drowsed looks after, with everything below it that its autosuspend depends on (the
 * interfaces and, for USB storage, every SCSI LUN and its disk), and what drowsed decided about it. */

#include <libudev.h>
#include <stdio.h>

#include "policy.h"
#include "record.h"
#include "stats.h"

#define DEVICE_MAX_OWNED_LUNS 8
#define DEVICE_RESUME_WINDOW 64

typedef enum DeviceState {
        DEVICE_PENDING,     /* waiting for interfaces or SCSI LUNs to bind */
        DEVICE_AUTOSUSPEND, /* the whole chain is set to autosuspend */
        DEVICE_EXCLUDED,    /* policy says no */
        DEVICE_REFUSED,     /* policy says yes, but the chain cannot suspend */
        DEVICE_IGNORED,     /* never touched: hubs, the emulator's vhci carriers */
        DEVICE_GONE,        /* vanished while we looked at it */
        DEVICE_QUARANTINED, /* misbehaved when autosuspended: kept on until drowsectl release */
        _DEVICE_STATE_MAX,
        _DEVICE_STATE_INVALID = -EINVAL,
} DeviceState;

typedef struct DeviceResumes {
        uint64_t t_usec; /* CLOCK_MONOTONIC */
        uint64_t n;
} DeviceResumes;

typedef struct Device {
        char *syspath;
        char *sysname;         /* "1-1.2" */
        char *devpath;         /* "/devices/..." */
        char id[10];           /* "vvvv:pppp" */
        char serial[128];
        char vhci[64];         /* "vhci_hcd.0" if behind vhci, else "" */
        bool vhci_root_port;   /* plugged into a vhci root hub directly */
        DeviceState state;
        char reason[320];
        char rule[64];         /* the matching rule, "" for none */
        int delay_ms, disk_delay_ms;
        unsigned n_luns;
        bool wrote_control;    /* drowsed set the USB device's power/control=auto */
        bool dirty;            /* to be (re)applied */

        DeviceRecord *rec;     /* statistics, strikes, quarantine; owned by the manager, NULL if none */
        Sample last;           /* the previous sample, for the deltas */
        /* A ring of the last samples' resume counts, for the rate; allocated at the first sample, as
         * only devices that autosuspend are sampled (most of a big tree never is). */
        DeviceResumes *resumes;
        size_t n_resumes, first_resume;
        bool tree_changed;     /* a node of the subtree came or went: ownership is stale */
        bool drift_checked;    /* the sampler already looked for drift before this pass */
        bool sample_soon;      /* a uevent: sample after the pass, and sample fast again */
        bool yielded;          /* drift=yield: another writer owns the device until release */
        uint64_t error_since_usec; /* first sample that read runtime_status=error, 0 if the last did not */
        char yield_reason[STATS_REASON_MAX];

        /* What drowsed last set and so owns: drift is a change of these by someone else. Forgotten
         * when the subtree changes (new kernel objects start at the kernel's defaults). */
        bool owned;
        char owned_control[8];
        int owned_delay_ms;    /* -1: not owned */
        char *owned_luns[DEVICE_MAX_OWNED_LUNS]; /* sysfs dirs; only disks have any */
        unsigned n_owned_luns;
        int owned_disk_delay_ms;
} Device;

int device_new(const char *syspath, const char *sysname, const char *devpath, Device **ret);
Device *device_free(Device *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(Device *, device_free);

/* Reads the device's subtree, decides with P (on POWER), and writes what the decision needs. vhci_holder
 * names another root-port device of the same vhci_hcd that already autosuspends (NULL if none). Logs the
 * decision at info when it changes. Returns 0, or a negative errno for failures of drowsed itself. */
int device_apply(Device *d, const Policy *p, PowerSource power, const char *vhci_holder);

/* The effective delays: the policy's times the backoff the device earned. */
int device_effective_delay(const Device *d, int delay_ms);

/* Reads runtime_status, the runtime_*_time counters and the wakeup count. -ENOENT if gone. */
int device_sample(const Device *d, Sample *ret);

/* Compares what drowsed owns with sysfs. For each difference, logs the old and new value and records
 * it; with DRIFT_REAPPLY marks the device dirty (the next pass writes it back), with DRIFT_YIELD marks
 * it yielded. Returns the number of attributes that drifted. */
int device_check_drift(Device *d, Drift mode);

/* Logs a decision about D once, at info, with DROWSE_DEVICE=, DROWSE_ID= and DROWSE_DECISION= fields
 * when running under journald, and records it in the device's history and decision count. */
_printf_(3, 4) void device_log_decision(Device *d, const char *decision, const char *fmt, ...);

/* JSON object for list/show, and "why won't it suspend": a live walk of the subtree. */
void device_dump_json(const Device *d, FILE *f);
void device_dump_text(const Device *d, FILE *f);
int device_why(const Device *d, struct udev *udev, bool json, FILE *f);

const char *device_state_to_string(DeviceState s) _const_;
DeviceState device_state_from_string(const char *s) _pure_;
