/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "macro.h"

/* Fault injection: what can go wrong around suspend, resume, remote wakeup, storage and the USB/IP
 * transport, as a catalogue of kinds (data below, in fault.c), each with parameters and a trigger.
 *
 * A fault belongs to one device. The device models (hub.c, usb-device.c, disk.c) and the connection ask
 * fault_fire() at the exact point where the fault would strike: it answers whether it strikes this
 * time, and logs the hit. Faults that are actions rather than answers (a wakeup storm, an unplug, an
 * over-current, a closed carrier) are carried out on the event loop by the injector (injector.c).
 *
 * Triggers: once (the default), count=N, always, and probability=P with seed=S. The pseudo-random
 * stream is the fault's own (splitmix64 from its seed), so the same seed and the same sequence of
 * opportunities give the same hits: an experiment repeats. */

typedef struct UsbDevice UsbDevice;

typedef enum FaultKind {
        FAULT_RESUME_STUCK,          /* hub port still SUSPEND at the kernel's check after ClearPortFeature */
        FAULT_RESUME_SLOW,           /* hub port finishes resuming ms= later */
        FAULT_RESUME_RESET,          /* the device lost address and configuration while suspended */
        FAULT_RESUME_STATUS_STALL,   /* GET_STATUS(device) after a resume stalls */
        FAULT_RESUME_STATUS_TIMEOUT, /* GET_STATUS(device) after a resume is never answered */
        FAULT_WAKEUP_SPURIOUS,       /* signals remote wakeup delay= after each suspend */
        FAULT_WAKEUP_STORM,          /* n= wakeups, each interval= after the device suspends again */
        FAULT_WAKEUP_LOST,           /* the device signals, the hub never reports it */
        FAULT_WAKEUP_UNARMED,        /* signals remote wakeup though the host did not arm it */
        FAULT_REMOTE_WAKEUP_STALL,   /* SET_FEATURE(DEVICE_REMOTE_WAKEUP) stalls */
        FAULT_UNPLUG_SUSPENDED,      /* unplugged delay= after it suspends */
        FAULT_UNPLUG_RESUME,         /* unplugged as the host resumes it */
        FAULT_OVER_CURRENT,          /* its hub port reports over-current and loses power */
        FAULT_NOT_READY,             /* medium commands get NOT READY (sense=) after a resume */
        FAULT_START_STOP_FAIL,       /* START STOP UNIT fails (sense=) */
        FAULT_MEDIA_ERROR,           /* READ/WRITE touching lba= get MEDIUM ERROR */
        FAULT_IO_LATENCY,            /* each command's status comes ms= late */
        FAULT_PHASE_ERROR,           /* the command ends in a BOT phase error (CSW status 2) */
        FAULT_DELAY_COMPLETION,      /* RET_SUBMIT sent ms= late */
        FAULT_DROP_COMPLETION,       /* RET_SUBMIT never sent (until the kernel unlinks the URB) */
        FAULT_CARRIER_CLOSE,         /* the device's USB/IP connection closes */
        _FAULT_KIND_MAX,
        _FAULT_KIND_INVALID = -EINVAL,
} FaultKind;

/* What a kind needs of the device it is added to. */
typedef enum FaultScope {
        FAULT_SCOPE_ANY,       /* any device */
        FAULT_SCOPE_HUB_PORT,  /* a device on one of our hubs' ports */
        FAULT_SCOPE_DISK,      /* a mass-storage device */
        _FAULT_SCOPE_MAX,
} FaultScope;

typedef struct FaultParams {
        uint64_t delay_usec;        /* ms=, delay=: how late, or how long after the suspend */
        uint64_t interval_usec;     /* interval=: wakeup storms */
        uint64_t lba_first, lba_last;
        uint8_t sense_key, asc, ascq;
        int endpoint;               /* ep=: only URBs on this endpoint address (-1: any) */
        bool after_resume;          /* not-ready: only the first commands after a resume */
} FaultParams;

#define FAULT_COUNT_ALWAYS UINT64_MAX

typedef struct Fault Fault;

struct Fault {
        unsigned id;
        FaultKind kind;
        FaultParams params;
        uint64_t count;             /* hits allowed: 1 once, N, or FAULT_COUNT_ALWAYS */
        uint32_t probability_ppm;   /* 1000000 = every opportunity */
        uint64_t seed, rng;
        uint64_t opportunities, hits;
        uint64_t added_usec, last_hit_usec;
        uint64_t resumes_seen;      /* after-resume faults: the device's resume count when last struck */
        char *spec;                 /* as the user wrote it, for list */
        Fault *next;
};

/* Parses "KIND [key=value|flag ...]". default_seed is used without seed=. On error returns a negative
 * errno and a message naming the word that was wrong in *error (free()d by the caller). */
int fault_parse(const char *spec, uint64_t default_seed, Fault **ret, char **error);
Fault *fault_free(Fault *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(Fault *, fault_free);
void fault_list_free(Fault *head);

FaultScope fault_kind_scope(FaultKind k) _const_;
const char *fault_kind_summary(FaultKind k) _const_;
/* Space-separated parameter names the kind understands, besides the trigger's. */
const char *fault_kind_params(FaultKind k) _const_;

/* True when the fault has hits left (it may still not strike: probability). */
bool fault_armed(const Fault *f) _pure_;

/* The device's first armed fault of this kind that strikes at this opportunity, or NULL. A hit is
 * counted and logged (notice, with journald fields under systemd), `what` saying what it did. */
Fault *fault_fire(UsbDevice *d, FaultKind kind, uint64_t now_usec, const char *what, ...) _printf_(4, 5);
/* The same for a fault already chosen (the injector's timed actions). */
bool fault_fire_one(UsbDevice *d, Fault *f, uint64_t now_usec, const char *what, ...) _printf_(4, 5);
/* The device's first armed fault of this kind, without spending an opportunity. */
Fault *fault_find(UsbDevice *d, FaultKind kind) _pure_;

/* Emulator-relative time for the fault log: all timestamps count from this point. */
void fault_set_epoch(uint64_t now_usec);

void fault_describe_json(const Fault *f, const char *device, FILE *out);
void fault_describe_text(const Fault *f, const char *device, FILE *out);
/* The catalogue, one line per kind, for "fault kinds" and the manual. */
void fault_dump_catalogue(FILE *out);

const char *fault_kind_to_string(FaultKind k) _const_;
FaultKind fault_kind_from_string(const char *s) _pure_;
