/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Per-device runtime-PM statistics: what one sample of a device's power/ attributes reads, the
 * cumulative counters drowsed derives from consecutive samples, and a bounded history of state
 * transitions and decisions for plotting. Pure data and arithmetic: no sysfs access, no logging. */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "macro.h"

#define STATS_HISTORY_MAX 256
#define STATS_WHAT_MAX 24
#define STATS_REASON_MAX 160

typedef enum HistoryKind {
        HISTORY_STATE,    /* what: active, suspended, error, quarantined, gone */
        HISTORY_DECISION, /* what: backoff, quarantine, release, drift-reapply, drift-yield */
        _HISTORY_KIND_MAX,
        _HISTORY_KIND_INVALID = -EINVAL,
} HistoryKind;

typedef struct HistoryEntry {
        uint64_t t_ms; /* CLOCK_REALTIME, ms since the epoch: the history outlives restarts */
        HistoryKind kind;
        char what[STATS_WHAT_MAX];
        char reason[STATS_REASON_MAX];
} HistoryEntry;

/* One reading of a device's power/ directory. */
typedef struct Sample {
        bool valid;
        char status[16];       /* power/runtime_status */
        uint64_t active_ms;    /* power/runtime_active_time */
        uint64_t suspended_ms; /* power/runtime_suspended_time */
        bool has_wakeup_count;
        uint64_t wakeup_count; /* power/wakeup_count, else the wakeup class device's event_count */
} Sample;

typedef struct Stats {
        uint64_t suspended_ms, active_ms;
        uint64_t resumes;   /* estimated, see stats_account() */
        uint64_t wakeups;   /* wakeup events the kernel counted for the device */
        uint64_t decisions; /* backoffs, quarantines, releases, drift responses */
        /* A ring, allocated at the first entry and grown to STATS_HISTORY_MAX (then the oldest entries
         * make room): most devices drowsed tracks never autosuspend and never get one, and a full
         * history is ~50 KiB. */
        HistoryEntry *history;
        size_t history_first, history_len, history_cap;
} Stats;

/* Adds the interval between PREV and CUR to S. DELAY_MS is the autosuspend delay in force (<= 0:
 * unknown). Returns the number of resumes counted for the interval. A counter that went backwards
 * (the device was re-created) counts as nothing.
 *
 * Resumes are estimated, because sysfs has no resume counter (the rpm_status tracepoint would, but
 * needs tracefs and 6.9+):
 *   - an interval with no active time, or no suspended time, has no resume, except the edge
 *     suspended -> active between the two samples;
 *   - an interval with both has at least one, unless it went active -> suspended (one suspend, no
 *     resume);
 *   - and, since every runtime resume keeps the device active for at least the autosuspend delay
 *     before it may suspend again, at most active/delay of them: that is the estimate, less the
 *     active stretch carried over from the previous interval if it started active.
 * It is exact while the sampling interval is shorter than the delay. It overcounts use that lasts
 * longer than one delay inside one interval that also holds a suspend, and undercounts resumes
 * whose active stretch was shorter than the delay (a failed or forced suspend). */
uint64_t stats_account(Stats *s, const Sample *prev, const Sample *cur, int delay_ms);

/* Frees the history; S is empty (and reusable) afterwards. */
void stats_done(Stats *s);

/* Best effort: without memory for a larger ring, the oldest entry makes room (or, with no ring at all,
 * the entry is dropped). */
void stats_history_add(Stats *s, uint64_t t_ms, HistoryKind kind, const char *what, const char *reason);
/* The I-th entry, oldest first; NULL past the end. */
const HistoryEntry *stats_history_get(const Stats *s, size_t i);
/* The newest entry of KIND, or NULL. */
const HistoryEntry *stats_history_last(const Stats *s, HistoryKind kind);

/* "suspended_ms":..,"active_ms":..,"resumes":..,"wakeups":..,"decisions":..,"history":[...] (no braces). */
void stats_dump_json_fields(const Stats *s, FILE *f);

/* CLOCK_REALTIME in ms, and CLOCK_MONOTONIC in us. */
uint64_t stats_now_ms(void);
uint64_t stats_now_usec(void);

const char *history_kind_to_string(HistoryKind k) _const_;
HistoryKind history_kind_from_string(const char *s) _pure_;
