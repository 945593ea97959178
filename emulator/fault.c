/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-journal.h>

#include "fault.h"
#include "json.h"
#include "log.h"
#include "usb-device.h"

typedef struct FaultInfo {
        FaultScope scope;
        const char *params;      /* besides once, always, count=, probability=, seed= */
        bool always_by_default;  /* a condition rather than an event: it lasts until cleared */
        const char *summary;
} FaultInfo;

static const FaultInfo fault_info_table[_FAULT_KIND_MAX] = {
        [FAULT_RESUME_STUCK] = { FAULT_SCOPE_HUB_PORT, "", false,
                "the hub port stays suspended when the host resumes it (the kernel gives up: -ENODEV)" },
        [FAULT_RESUME_SLOW] = { FAULT_SCOPE_HUB_PORT, "ms", false,
                "the hub port finishes a host resume ms= later (default 100; the kernel checks at 40 ms)" },
        [FAULT_RESUME_RESET] = { FAULT_SCOPE_HUB_PORT, "", false,
                "the device lost its address and configuration while suspended: the port comes back "
                "disabled and the kernel must reset-resume" },
        [FAULT_RESUME_STATUS_STALL] = { FAULT_SCOPE_ANY, "", false,
                "GET_STATUS(device) after a resume stalls" },
        [FAULT_RESUME_STATUS_TIMEOUT] = { FAULT_SCOPE_ANY, "", false,
                "GET_STATUS(device) after a resume is never answered (the kernel times out after 5 s)" },
        [FAULT_WAKEUP_SPURIOUS] = { FAULT_SCOPE_HUB_PORT, "delay", false,
                "the device signals remote wakeup delay= after it suspends (default 500 ms), for no reason" },
        [FAULT_WAKEUP_STORM] = { FAULT_SCOPE_HUB_PORT, "n interval", false,
                "n= wakeups (default 10), each interval= (default 200 ms) after the device suspends again" },
        [FAULT_WAKEUP_LOST] = { FAULT_SCOPE_HUB_PORT, "", false,
                "the device signals remote wakeup and the hub never reports it" },
        [FAULT_WAKEUP_UNARMED] = { FAULT_SCOPE_HUB_PORT, "delay", false,
                "the device signals remote wakeup delay= after it suspends although the host did not arm it" },
        [FAULT_REMOTE_WAKEUP_STALL] = { FAULT_SCOPE_ANY, "", true,
                "SET_FEATURE(DEVICE_REMOTE_WAKEUP) stalls, so the host cannot arm wakeup before suspending" },
        [FAULT_UNPLUG_SUSPENDED] = { FAULT_SCOPE_HUB_PORT, "delay", false,
                "the device is unplugged delay= after it suspends (default 200 ms)" },
        [FAULT_UNPLUG_RESUME] = { FAULT_SCOPE_HUB_PORT, "", false,
                "the device is unplugged as the host resumes it" },
        [FAULT_OVER_CURRENT] = { FAULT_SCOPE_HUB_PORT, "delay", false,
                "the device's hub port reports over-current and loses power, delay= after the fault is added" },
        [FAULT_NOT_READY] = { FAULT_SCOPE_DISK, "sense after-resume", false,
                "medium commands fail NOT READY (sense=2/04/01, becoming ready), by default only after a resume" },
        [FAULT_START_STOP_FAIL] = { FAULT_SCOPE_DISK, "sense", false,
                "START STOP UNIT fails (sense=4/44/00, internal target failure)" },
        [FAULT_MEDIA_ERROR] = { FAULT_SCOPE_DISK, "lba sense", true,
                "READ and WRITE touching lba=A[-B] fail MEDIUM ERROR (3/11/00 reading, 3/0c/00 writing)" },
        [FAULT_IO_LATENCY] = { FAULT_SCOPE_DISK, "ms", true,
                "each command's status (its CSW) arrives ms= late (default 100)" },
        [FAULT_PHASE_ERROR] = { FAULT_SCOPE_DISK, "", false,
                "the next command ends in a Bulk-Only phase error (CSW status 2): the host resets the device" },
        [FAULT_DELAY_COMPLETION] = { FAULT_SCOPE_ANY, "ms ep", true,
                "RET_SUBMIT is sent ms= late (default 100), on ep= only if given" },
        [FAULT_DROP_COMPLETION] = { FAULT_SCOPE_ANY, "ep", false,
                "RET_SUBMIT is never sent; the URB waits until the kernel unlinks it" },
        [FAULT_CARRIER_CLOSE] = { FAULT_SCOPE_ANY, "delay", false,
                "the device's USB/IP connection (for a hub child: its carrier) closes, delay= after the fault "
                "is added" },
};

static const char *const fault_kind_table[_FAULT_KIND_MAX] = {
        [FAULT_RESUME_STUCK] = "resume-stuck",
        [FAULT_RESUME_SLOW] = "resume-slow",
        [FAULT_RESUME_RESET] = "resume-reset",
        [FAULT_RESUME_STATUS_STALL] = "resume-status-stall",
        [FAULT_RESUME_STATUS_TIMEOUT] = "resume-status-timeout",
        [FAULT_WAKEUP_SPURIOUS] = "wakeup-spurious",
        [FAULT_WAKEUP_STORM] = "wakeup-storm",
        [FAULT_WAKEUP_LOST] = "wakeup-lost",
        [FAULT_WAKEUP_UNARMED] = "wakeup-unarmed",
        [FAULT_REMOTE_WAKEUP_STALL] = "remote-wakeup-stall",
        [FAULT_UNPLUG_SUSPENDED] = "unplug-suspended",
        [FAULT_UNPLUG_RESUME] = "unplug-resume",
        [FAULT_OVER_CURRENT] = "over-current",
        [FAULT_NOT_READY] = "not-ready",
        [FAULT_START_STOP_FAIL] = "start-stop-fail",
        [FAULT_MEDIA_ERROR] = "media-error",
        [FAULT_IO_LATENCY] = "io-latency",
        [FAULT_PHASE_ERROR] = "phase-error",
        [FAULT_DELAY_COMPLETION] = "delay-completion",
        [FAULT_DROP_COMPLETION] = "drop-completion",
        [FAULT_CARRIER_CLOSE] = "carrier-close",
};

DEFINE_STRING_TABLE_LOOKUP(fault_kind, FaultKind);

static uint64_t epoch_usec;

void fault_set_epoch(uint64_t now_usec) {
        epoch_usec = now_usec;
}

FaultScope fault_kind_scope(FaultKind k) {
        return (size_t) k < _FAULT_KIND_MAX ? fault_info_table[k].scope : FAULT_SCOPE_ANY;
}

const char *fault_kind_summary(FaultKind k) {
        return (size_t) k < _FAULT_KIND_MAX ? fault_info_table[k].summary : NULL;
}

const char *fault_kind_params(FaultKind k) {
        return (size_t) k < _FAULT_KIND_MAX ? fault_info_table[k].params : NULL;
}

static bool kind_takes(FaultKind k, const char *key) {
        const char *p = fault_info_table[k].params;
        size_t n = strlen(key);

        while (*p) {
                size_t w = strcspn(p, " ");
                if (w == n && strneq(p, key, n))
                        return true;
                p += w;
                p += strspn(p, " ");
        }
        return false;
}

static uint64_t splitmix64(uint64_t *state) {
        uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static int parse_u64(const char *s, uint64_t max, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (!s || !*s || *s == '-' || *s == '+')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 0);
        if (errno || *end || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

/* "250", "250ms", "2s", "500us": a bare number is milliseconds. At most an hour. */
static int parse_duration(const char *s, uint64_t *ret_usec) {
        static const struct { const char *suffix; uint64_t usec; } units[] = {
                { "us", 1 }, { "ms", 1000 }, { "s", 1000000 },
        };
        char *end;
        unsigned long long v;

        if (!s || !*s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || v > 3600ULL * 1000000)
                return -ERANGE;
        if (!*end) {
                *ret_usec = v * 1000;
                return v * 1000 > 3600ULL * 1000000 ? -ERANGE : 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (streq(end, units[i].suffix)) {
                        if (v * units[i].usec > 3600ULL * 1000000)
                                return -ERANGE;
                        *ret_usec = v * units[i].usec;
                        return 0;
                }
        return -EINVAL;
}

/* "0.25", "1", "1.0", "0.001": parts per million, without locale-dependent strtod. */
static int parse_probability(const char *s, uint32_t *ret_ppm) {
        uint64_t whole = 0, frac = 0, scale = 1000000;
        const char *p = s;

        if (!s || !*s)
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
                whole = whole * 10 + (uint64_t) (*p - '0');
                if (whole > 1)
                        return -ERANGE;
        }
        if (p == s && *p != '.')
                return -EINVAL;
        if (*p == '.') {
                p++;
                for (; *p >= '0' && *p <= '9'; p++) {
                        scale /= 10;
                        if (scale == 0)
                                return -EINVAL; /* finer than a millionth */
                        frac += (uint64_t) (*p - '0') * scale;
                }
        }
        if (*p)
                return -EINVAL;
        uint64_t ppm = whole * 1000000 + frac;
        if (ppm == 0 || ppm > 1000000)
                return -ERANGE;
        *ret_ppm = (uint32_t) ppm;
        return 0;
}

/* "2/04/01" in hex, as sense data is always written. */
static int parse_sense(const char *s, FaultParams *p) {
        unsigned key, asc, ascq;
        int n = 0;

        if (sscanf(s, "%x/%x/%x%n", &key, &asc, &ascq, &n) != 3 || s[n] || key > 0xf || asc > 0xff || ascq > 0xff)
                return -EINVAL;
        p->sense_key = (uint8_t) key;
        p->asc = (uint8_t) asc;
        p->ascq = (uint8_t) ascq;
        return 0;
}

static int parse_lba(const char *s, FaultParams *p) {
        _cleanup_free_ char *copy = strdup(s);
        char *dash;
        int r;

        if (!copy)
                return -ENOMEM;
        dash = strchr(copy, '-');
        if (dash)
                *dash++ = 0;
        r = parse_u64(copy, UINT64_MAX, &p->lba_first);
        if (r < 0)
                return r;
        p->lba_last = p->lba_first;
        if (dash) {
                r = parse_u64(dash, UINT64_MAX, &p->lba_last);
                if (r < 0)
                        return r;
                if (p->lba_last < p->lba_first)
                        return -ERANGE;
        }
        return 0;
}

static int fail(char **error, int r, const char *fmt, ...) _printf_(3, 4);
static int fail(char **error, int r, const char *fmt, ...) {
        va_list ap;

        if (error) {
                va_start(ap, fmt);
                if (vasprintf(error, fmt, ap) < 0)
                        *error = NULL;
                va_end(ap);
        }
        return r;
}

static void set_defaults(Fault *f) {
        FaultParams *p = &f->params;

        f->count = fault_info_table[f->kind].always_by_default ? FAULT_COUNT_ALWAYS : 1;
        f->probability_ppm = 1000000;
        p->endpoint = -1;
        switch (f->kind) {
        case FAULT_RESUME_SLOW:
        case FAULT_IO_LATENCY:
        case FAULT_DELAY_COMPLETION:
                p->delay_usec = 100 * 1000;
                break;
        case FAULT_WAKEUP_SPURIOUS:
        case FAULT_WAKEUP_UNARMED:
                p->delay_usec = 500 * 1000;
                break;
        case FAULT_WAKEUP_STORM:
                f->count = 10;
                p->interval_usec = 200 * 1000;
                break;
        case FAULT_UNPLUG_SUSPENDED:
                p->delay_usec = 200 * 1000;
                break;
        case FAULT_NOT_READY:
                p->sense_key = 0x2, p->asc = 0x04, p->ascq = 0x01;
                p->after_resume = true;
                break;
        case FAULT_START_STOP_FAIL:
                p->sense_key = 0x4, p->asc = 0x44, p->ascq = 0x00;
                break;
        case FAULT_RESUME_STUCK:
        case FAULT_RESUME_RESET:
        case FAULT_RESUME_STATUS_STALL:
        case FAULT_RESUME_STATUS_TIMEOUT:
        case FAULT_WAKEUP_LOST:
        case FAULT_REMOTE_WAKEUP_STALL:
        case FAULT_UNPLUG_RESUME:
        case FAULT_OVER_CURRENT:
        case FAULT_MEDIA_ERROR:
        case FAULT_PHASE_ERROR:
        case FAULT_DROP_COMPLETION:
        case FAULT_CARRIER_CLOSE:
        case _FAULT_KIND_MAX:
        case _FAULT_KIND_INVALID:
                break;
        }
}

int fault_parse(const char *spec, uint64_t default_seed, Fault **ret, char **error) {
        _cleanup_(fault_freep) Fault *f = NULL;
        _cleanup_free_ char *copy = NULL;
        char *word, *save = NULL;
        bool have_lba = false;

        if (!spec)
                return fail(error, -EINVAL, "no fault given");
        copy = strdup(spec);
        f = calloc(1, sizeof(Fault));
        if (!copy || !f)
                return fail(error, -ENOMEM, "out of memory");
        f->spec = strdup(spec);
        if (!f->spec)
                return fail(error, -ENOMEM, "out of memory");

        word = strtok_r(copy, " \t", &save);
        if (!word)
                return fail(error, -EINVAL, "no fault kind given (see 'fault kinds')");
        f->kind = fault_kind_from_string(word);
        if (f->kind < 0)
                return fail(error, -EINVAL, "unknown fault kind '%s' (see 'fault kinds')", word);
        set_defaults(f);
        f->seed = default_seed;

        while ((word = strtok_r(NULL, " \t", &save))) {
                char *value = strchr(word, '=');
                const char *key = word;

                if (value)
                        *value++ = 0;

                if (streq(key, "once") && !value)
                        f->count = 1;
                else if (streq(key, "always") && !value)
                        f->count = FAULT_COUNT_ALWAYS;
                else if (streq(key, "count") && value) {
                        if (parse_u64(value, UINT32_MAX, &f->count) < 0 || f->count == 0)
                                return fail(error, -EINVAL, "count=%s: expected a number from 1", value);
                } else if (streq(key, "probability") && value) {
                        if (parse_probability(value, &f->probability_ppm) < 0)
                                return fail(error, -EINVAL, "probability=%s: expected a number in (0, 1], "
                                            "at most 6 decimals", value);
                } else if (streq(key, "seed") && value) {
                        if (parse_u64(value, UINT64_MAX, &f->seed) < 0)
                                return fail(error, -EINVAL, "seed=%s: expected an unsigned number", value);
                } else if (!value || !kind_takes(f->kind, key)) {
                        const char *params = fault_info_table[f->kind].params;
                        return fail(error, -EINVAL, "%s does not take '%s%s%s' (it takes once, always, count=, "
                                    "probability=, seed=%s%s%s)", fault_kind_to_string(f->kind), key,
                                    value ? "=" : "", value ?: "", *params ? ", " : "", params,
                                    *params ? " (each as key=value)" : "");
                } else if (streq(key, "ms") || streq(key, "delay")) {
                        if (parse_duration(value, &f->params.delay_usec) < 0)
                                return fail(error, -EINVAL, "%s=%s: expected a duration up to 1 h (250, 250ms, 2s)",
                                            key, value);
                } else if (streq(key, "interval")) {
                        if (parse_duration(value, &f->params.interval_usec) < 0 || f->params.interval_usec == 0)
                                return fail(error, -EINVAL, "interval=%s: expected a duration from 1us up to 1 h",
                                            value);
                } else if (streq(key, "n")) {
                        if (parse_u64(value, 100000, &f->count) < 0 || f->count == 0)
                                return fail(error, -EINVAL, "n=%s: expected a number of wakeups, 1..100000", value);
                } else if (streq(key, "lba")) {
                        if (parse_lba(value, &f->params) < 0)
                                return fail(error, -EINVAL, "lba=%s: expected LBA or FIRST-LAST", value);
                        have_lba = true;
                } else if (streq(key, "sense")) {
                        if (parse_sense(value, &f->params) < 0)
                                return fail(error, -EINVAL, "sense=%s: expected KEY/ASC/ASCQ in hex (2/04/01)",
                                            value);
                } else if (streq(key, "ep")) {
                        uint64_t ep;
                        if (parse_u64(value, 0xff, &ep) < 0 || (ep & 0x70))
                                return fail(error, -EINVAL, "ep=%s: expected an endpoint address (0x81, 2)", value);
                        f->params.endpoint = (int) ep;
                } else if (streq(key, "after-resume")) {
                        if (streq(value, "yes") || streq(value, "1") || streq(value, "true"))
                                f->params.after_resume = true;
                        else if (streq(value, "no") || streq(value, "0") || streq(value, "false"))
                                f->params.after_resume = false;
                        else
                                return fail(error, -EINVAL, "after-resume=%s: expected yes or no", value);
                } else
                        return fail(error, -EINVAL, "%s: '%s' is listed but not handled", fault_kind_to_string(f->kind),
                                    key);
        }

        if (f->kind == FAULT_MEDIA_ERROR && !have_lba)
                return fail(error, -EINVAL, "media-error needs lba=LBA or lba=FIRST-LAST");
        f->rng = f->seed;
        *ret = TAKE_PTR(f);
        return 0;
}

Fault *fault_free(Fault *f) {
        if (!f)
                return NULL;
        free(f->spec);
        return mfree(f);
}

void fault_list_free(Fault *head) {
        while (head) {
                Fault *next = head->next;
                fault_free(head);
                head = next;
        }
}

bool fault_armed(const Fault *f) {
        return f->count == FAULT_COUNT_ALWAYS || f->hits < f->count;
}

Fault *fault_find(UsbDevice *d, FaultKind kind) {
        for (Fault *f = d->faults; f; f = f->next)
                if (f->kind == kind && fault_armed(f))
                        return f;
        return NULL;
}

static void log_hit(UsbDevice *d, const Fault *f, uint64_t now_usec, const char *what) {
        double t = now_usec >= epoch_usec ? (double) (now_usec - epoch_usec) / 1e6 : 0;
        char hits[32];

        /* A condition like io-latency strikes on every command: the first hits, then every power of two,
         * keep the log readable; "fault list" has the exact count. */
        if (f->hits > 10 && (f->hits & (f->hits - 1)) != 0)
                return;

        if (f->count == FAULT_COUNT_ALWAYS)
                snprintf(hits, sizeof(hits), "%" PRIu64, f->hits);
        else
                snprintf(hits, sizeof(hits), "%" PRIu64 "/%" PRIu64, f->hits, f->count);

        if (getenv("JOURNAL_STREAM")) {
                /* Under systemd: the same line, and fields a QA script can select on
                 * (journalctl DROWSE_FAULT_KIND=wakeup-storm). */
                sd_journal_send("MESSAGE=+%.3f s: fault %u %s on %s, hit %s: %s", t, f->id,
                                fault_kind_to_string(f->kind), d->name, hits, what,
                                "PRIORITY=%d", LOG_NOTICE,
                                "DROWSE_FAULT_ID=%u", f->id,
                                "DROWSE_FAULT_KIND=%s", fault_kind_to_string(f->kind),
                                "DROWSE_DEVICE=%s", d->name,
                                "DROWSE_FAULT_HIT=%" PRIu64, f->hits,
                                "DROWSE_FAULT_OUTCOME=%s", what,
                                "DROWSE_TIME_USEC=%" PRIu64, now_usec - MIN(now_usec, epoch_usec),
                                NULL);
                return;
        }
        log_notice("+%.3f s: fault %u %s on %s, hit %s: %s", t, f->id, fault_kind_to_string(f->kind), d->name, hits,
                   what);
}

static bool strikes(Fault *f) {
        if (!fault_armed(f))
                return false;
        f->opportunities++;
        if (f->probability_ppm >= 1000000)
                return true;
        return splitmix64(&f->rng) % 1000000 < f->probability_ppm;
}

static bool fire_va(UsbDevice *d, Fault *f, uint64_t now_usec, const char *what, va_list ap) _printf_(4, 0);
static bool fire_va(UsbDevice *d, Fault *f, uint64_t now_usec, const char *what, va_list ap) {
        char buf[256];

        if (!strikes(f))
                return false;
        f->hits++;
        f->last_hit_usec = now_usec;
        vsnprintf(buf, sizeof(buf), what, ap);
        log_hit(d, f, now_usec, buf);
        return true;
}

bool fault_fire_one(UsbDevice *d, Fault *f, uint64_t now_usec, const char *what, ...) {
        va_list ap;
        bool hit;

        va_start(ap, what);
        hit = fire_va(d, f, now_usec, what, ap);
        va_end(ap);
        return hit;
}

Fault *fault_fire(UsbDevice *d, FaultKind kind, uint64_t now_usec, const char *what, ...) {
        if (!d->faults) /* the hot path: no fault anywhere on this device */
                return NULL;
        for (Fault *f = d->faults; f; f = f->next) {
                va_list ap;
                bool hit;

                if (f->kind != kind || !fault_armed(f))
                        continue;
                va_start(ap, what);
                hit = fire_va(d, f, now_usec, what, ap);
                va_end(ap);
                /* One opportunity is one draw: a second fault of the kind does not get another. */
                return hit ? f : NULL;
        }
        return NULL;
}

static void trigger_text(const Fault *f, char *buf, size_t size) {
        int n;

        if (f->count == FAULT_COUNT_ALWAYS)
                n = snprintf(buf, size, "always");
        else if (f->count == 1)
                n = snprintf(buf, size, "once");
        else
                n = snprintf(buf, size, "count %" PRIu64, f->count);
        if (f->probability_ppm < 1000000 && n > 0 && (size_t) n < size)
                snprintf(buf + n, size - (size_t) n, ", p=%u.%06u seed=%" PRIu64, f->probability_ppm / 1000000,
                         f->probability_ppm % 1000000, f->seed);
}

void fault_describe_json(const Fault *f, const char *device, FILE *out) {
        char trigger[96];

        trigger_text(f, trigger, sizeof(trigger));
        fprintf(out, "{\"id\": %u, \"device\": ", f->id);
        json_write_string(out, device);
        fputs(", \"kind\": ", out);
        json_write_string(out, fault_kind_to_string(f->kind));
        fputs(", \"spec\": ", out);
        json_write_string(out, f->spec);
        fputs(", \"trigger\": ", out);
        json_write_string(out, trigger);
        fprintf(out, ", \"armed\": %s, \"opportunities\": %" PRIu64 ", \"hits\": %" PRIu64 ", \"last_hit_s\": ",
                fault_armed(f) ? "true" : "false", f->opportunities, f->hits);
        if (f->hits)
                fprintf(out, "%.3f}", (double) (f->last_hit_usec - MIN(f->last_hit_usec, epoch_usec)) / 1e6);
        else
                fputs("null}", out);
}

void fault_describe_text(const Fault *f, const char *device, FILE *out) {
        char trigger[96];

        trigger_text(f, trigger, sizeof(trigger));
        fprintf(out, "%-4u %-12s %-22s %-28s %-6s %6" PRIu64 " %6" PRIu64 "  %s\n", f->id, device,
                fault_kind_to_string(f->kind), trigger, fault_armed(f) ? "armed" : "spent", f->opportunities, f->hits,
                f->spec);
}

void fault_dump_catalogue(FILE *out) {
        static const char *const scope[_FAULT_SCOPE_MAX] = {
                [FAULT_SCOPE_ANY] = "any device",
                [FAULT_SCOPE_HUB_PORT] = "behind a hub",
                [FAULT_SCOPE_DISK] = "disk",
        };

        for (size_t k = 0; k < _FAULT_KIND_MAX; k++) {
                const FaultInfo *i = &fault_info_table[k];
                fprintf(out, "%-22s %-13s %-7s %-18s %s\n", fault_kind_table[k], scope[i->scope],
                        i->always_by_default ? "always" : "once", *i->params ? i->params : "-", i->summary);
        }
}
