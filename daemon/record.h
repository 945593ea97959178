/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What drowsed remembers about one device across re-plugs and restarts: its statistics, the
 * storm/resume-failure strikes and the delay backoff they earned, and quarantine. Keyed by a stable
 * identity ("vvvv:pppp:SERIAL", or "vvvv:pppp@DEVPATH" for devices without a serial number) and kept
 * as one file per device in the state directory, written atomically (temporary file, fsync, rename,
 * fsync of the directory), so that a crash at any moment leaves the old file or the new one. */

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"
#include "stats.h"

#define RECORD_KEY_MAX 320
#define RECORD_FILE_SUFFIX ".state"

typedef struct DeviceRecord {
        char key[RECORD_KEY_MAX];
        char id[10];
        char serial[128];
        char name[64];            /* the sysname it last had ("1-1.2") */
        bool quarantined;
        char quarantine_reason[STATS_REASON_MAX];
        unsigned strikes;         /* storms and re-enumerations since the last release */
        unsigned backoff;         /* autosuspend delay multiplier; 1 = none */
        uint64_t removed_at_ms;   /* CLOCK_REALTIME of the last removal, 0 = none */
        char last_status[16];     /* runtime_status of the last sample before removal */
        Stats stats;

        /* Runtime only, not saved. */
        bool attached;            /* a present Device uses it */
        bool unsaved;             /* changed since the last save */
        uint64_t saved_at_usec;   /* CLOCK_MONOTONIC of the last save */
} DeviceRecord;

/* The identity: "vvvv:pppp:SERIAL", or "vvvv:pppp@DEVPATH" without a serial. */
void record_key(const char *id, const char *serial, const char *devpath, char *ret, size_t size);
/* Fresh memory only: a record that has a history must be record_done()'d first. */
void record_init(DeviceRecord *r, const char *key);
/* Frees what the record owns (its history); the record itself stays. */
void record_done(DeviceRecord *r);
DeviceRecord *record_free(DeviceRecord *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(DeviceRecord *, record_free);

/* The file name of KEY inside the state directory: the key with every byte outside [A-Za-z0-9.-]
 * written as _XX, shortened with a hash when too long. */
void record_file_name(const char *key, char *ret, size_t size);

/* Writes DIR/<file name> atomically. Returns 0 or a negative errno (not logged). */
int record_save(const DeviceRecord *r, const char *dir);
/* Parses one state file into RET (fresh memory, or record_done()'d; on success it owns a history,
 * on failure it is untouched). Any deviation (bad header, unknown key, malformed number, missing end
 * marker: a truncated file) gives -EBADMSG and a description in error. */
int record_load(const char *path, DeviceRecord *ret, char *error, size_t error_size);
int record_parse(const char *text, size_t size, DeviceRecord *ret, char *error, size_t error_size);
