/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <time.h>

#include "json.h"
#include "stats.h"

static const char *const history_kind_table[_HISTORY_KIND_MAX] = {
        [HISTORY_STATE] = "state",
        [HISTORY_DECISION] = "decision",
};
DEFINE_STRING_TABLE_LOOKUP(history_kind, HistoryKind);

static uint64_t delta(uint64_t prev, uint64_t cur) {
        return cur >= prev ? cur - prev : 0;
}

uint64_t stats_account(Stats *s, const Sample *prev, const Sample *cur, int delay_ms) {
        uint64_t da, ds, n;
        bool was_suspended, was_active, is_suspended, is_active;

        if (!prev->valid || !cur->valid)
                return 0;
        /* A counter going backwards means a new kernel object behind the same path: no interval. */
        if (cur->active_ms < prev->active_ms || cur->suspended_ms < prev->suspended_ms)
                return 0;
        da = delta(prev->active_ms, cur->active_ms);
        ds = delta(prev->suspended_ms, cur->suspended_ms);
        s->active_ms += da;
        s->suspended_ms += ds;
        if (prev->has_wakeup_count && cur->has_wakeup_count)
                s->wakeups += delta(prev->wakeup_count, cur->wakeup_count);

        was_suspended = streq(prev->status, "suspended");
        was_active = streq(prev->status, "active");
        is_suspended = streq(cur->status, "suspended");
        is_active = streq(cur->status, "active");

        if (da == 0 || ds == 0)
                /* One state all along, but a resume can fall between the counters' last update and the
                 * status read. */
                n = was_suspended && is_active ? 1 : 0;
        else {
                uint64_t lower = was_active && is_suspended ? 0 : 1, estimate = 0;
                if (delay_ms > 0) {
                        estimate = da / (uint64_t) delay_ms;
                        if (was_active && estimate > 0)
                                estimate--;
                }
                n = MAX(lower, estimate);
        }
        s->resumes += n;
        return n;
}

void stats_done(Stats *s) {
        s->history = mfree(s->history);
        s->history_first = s->history_len = s->history_cap = 0;
}

/* Doubles the ring (8 entries at first), oldest entry first in the new one. */
static void history_grow(Stats *s) {
        size_t cap = s->history_cap ? MIN(s->history_cap * 2, (size_t) STATS_HISTORY_MAX) : 8;
        HistoryEntry *n = reallocarray(NULL, cap, sizeof(HistoryEntry));

        if (!n)
                return;
        for (size_t i = 0; i < s->history_len; i++)
                n[i] = s->history[(s->history_first + i) % s->history_cap];
        free(s->history);
        s->history = n;
        s->history_cap = cap;
        s->history_first = 0;
}

void stats_history_add(Stats *s, uint64_t t_ms, HistoryKind kind, const char *what, const char *reason) {
        HistoryEntry *e;

        if (s->history_len == s->history_cap && s->history_cap < STATS_HISTORY_MAX)
                history_grow(s);
        if (s->history_cap == 0)
                return;
        if (s->history_len < s->history_cap)
                e = &s->history[(s->history_first + s->history_len++) % s->history_cap];
        else {
                e = &s->history[s->history_first];
                s->history_first = (s->history_first + 1) % s->history_cap;
        }
        *e = (HistoryEntry) { .t_ms = t_ms, .kind = kind };
        snprintf(e->what, sizeof(e->what), "%s", what);
        snprintf(e->reason, sizeof(e->reason), "%s", reason ?: "");
        /* Reasons end up in one-line files and SVG attributes. */
        for (char *c = e->reason; *c; c++)
                if (*c == '\n' || *c == '\r')
                        *c = ' ';
}

const HistoryEntry *stats_history_get(const Stats *s, size_t i) {
        if (i >= s->history_len)
                return NULL;
        return &s->history[(s->history_first + i) % s->history_cap];
}

const HistoryEntry *stats_history_last(const Stats *s, HistoryKind kind) {
        for (size_t i = s->history_len; i > 0; i--) {
                const HistoryEntry *e = stats_history_get(s, i - 1);
                if (e->kind == kind)
                        return e;
        }
        return NULL;
}

void stats_dump_json_fields(const Stats *s, FILE *f) {
        fprintf(f,
                "\"suspended_ms\":%" PRIu64 ",\"active_ms\":%" PRIu64 ",\"resumes\":%" PRIu64
                ",\"wakeups\":%" PRIu64 ",\"decisions\":%" PRIu64 ",\"history\":[",
                s->suspended_ms, s->active_ms, s->resumes, s->wakeups, s->decisions);
        for (size_t i = 0; i < s->history_len; i++) {
                const HistoryEntry *e = stats_history_get(s, i);
                fprintf(f, "%s{\"t_ms\":%" PRIu64 ",\"%s\":", i ? "," : "", e->t_ms,
                        history_kind_to_string(e->kind));
                json_write_string(f, e->what);
                if (e->reason[0]) {
                        fputs(",\"reason\":", f);
                        json_write_string(f, e->reason);
                }
                fputc('}', f);
        }
        fputc(']', f);
}

uint64_t stats_now_ms(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

uint64_t stats_now_usec(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}
