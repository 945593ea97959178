/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <fnmatch.h>
#include <ini.h>

#include "ini-reader.h"
#include <stdio.h>

#include "policy.h"

static const char *const media_poll_table[_MEDIA_POLL_MAX] = {
        [MEDIA_POLL_OFF] = "off",
        [MEDIA_POLL_KEEP] = "keep",
};
DEFINE_STRING_TABLE_LOOKUP(media_poll, MediaPoll);

static const char *const wakeup_table[_WAKEUP_MAX] = {
        [WAKEUP_KEEP] = "keep",
        [WAKEUP_ENABLED] = "enabled",
        [WAKEUP_DISABLED] = "disabled",
};
DEFINE_STRING_TABLE_LOOKUP(wakeup, Wakeup);

static const char *const drift_table[_DRIFT_MAX] = {
        [DRIFT_REAPPLY] = "reapply",
        [DRIFT_YIELD] = "yield",
};
DEFINE_STRING_TABLE_LOOKUP(drift, Drift);

static const char *const power_source_table[_POWER_SOURCE_MAX] = {
        [POWER_AC] = "ac",
        [POWER_BATTERY] = "battery",
};
DEFINE_STRING_TABLE_LOOKUP(power_source, PowerSource);

/* USB classes that break or misbehave when autosuspended unless hwdb says otherwise (TLP's list). */
static const struct {
        int class;
        const char *name;
} excluded_classes[] = {
        { 0x01, "audio" },
        { 0x03, "HID" },
        { 0x07, "printer" },
        { 0x0b, "smart card" },
        { 0x0e, "video" },
        { 0xe0, "wireless controller" },
};

void policy_init(Policy *p) {
        *p = (Policy) {
                .autosuspend = true,
                .delay_ms = 2000,
                .disk_delay_ms = 2000,
                .media_poll = MEDIA_POLL_OFF,
                .disk_runtime_start_stop = TRISTATE_UNSET,
                .vhci_root_ports = 1,
                .protect = {
                        /* A device resuming every second for a minute is not in use, it is stuck: TLP
                         * #533's PME loop ran at about that rate. */
                        .storm_resumes_per_minute = 60,
                        .storm_backoff = 4,
                        .quarantine_after = 3,
                        .re_enumerate_window_s = 5,
                        .drift = DRIFT_REAPPLY,
                        .sample_min_ms = 1000,
                        .sample_max_ms = 30000,
                },
        };
        for (PowerSource i = 0; i < _POWER_SOURCE_MAX; i++)
                p->profiles[i] =
                        (Profile){ .autosuspend = TRISTATE_UNSET, .delay_ms = -1, .disk_delay_ms = -1 };
}

static void rule_done(Rule *r) {
        free(r->name);
        free(r->file);
        free(r->match_id);
        free(r->match_serial);
        free(r->match_driver);
        free(r->match_devpath);
}

void policy_done(Policy *p) {
        for (size_t i = 0; i < p->n_rules; i++)
                rule_done(&p->rules[i]);
        free(p->rules);
        p->rules = NULL;
        p->n_rules = 0;
}

static int parse_bool(const char *v) {
        static const char *const yes[] = { "1", "yes", "y", "true", "on" };
        static const char *const no[] = { "0", "no", "n", "false", "off" };
        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(v, yes[i]) == 0)
                        return 1;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(v, no[i]) == 0)
                        return 0;
        return -EINVAL;
}

/* A delay in ms: 0 .. 1 hour. */
static int parse_delay(const char *v, int *ret) {
        char *end;
        long l;

        errno = 0;
        l = strtol(v, &end, 10);
        if (*v == 0 || *end != 0 || errno != 0 || l < 0 || l > 3600 * 1000)
                return -EINVAL;
        *ret = (int) l;
        return 0;
}

static int parse_class(const char *v, int *ret) {
        char *end;
        unsigned long l;

        if (strneq(v, "0x", 2) || strneq(v, "0X", 2))
                v += 2;
        errno = 0;
        l = strtoul(v, &end, 16);
        if (*v == 0 || *end != 0 || errno != 0 || l > 0xff || strlen(v) > 2)
                return -EINVAL;
        *ret = (int) l;
        return 0;
}

/* "vvvv:pppp" where each half is 4 hex digits or a glob of hex digits and * ? */
static bool valid_id_pattern(const char *v) {
        const char *colon = strchr(v, ':');
        if (!colon || colon == v || !colon[1] || strchr(colon + 1, ':') || colon - v > 4 ||
            strlen(colon + 1) > 4)
                return false;
        for (const char *c = v; *c; c++)
                if (c != colon && !strchr("0123456789abcdefABCDEF*?", *c))
                        return false;
        return true;
}

typedef struct ParseState {
        Policy *policy;
        const char *file;
        Rule *rule;                 /* the [rule NAME] being read */
        const char *error;
        int r;
        IniReader reader;           /* counts lines: reader.line is the handler's current line */
        unsigned error_line;
} ParseState;


static int set_str(char **s, const char *v) {
        char *c = strdup(v);
        if (!c)
                return -ENOMEM;
        free(*s);
        *s = c;
        return 0;
}

static int fail(ParseState *p, const char *error) {
        p->error = error;
        return -EINVAL;
}

static Rule *find_or_add_rule(ParseState *p, const char *name) {
        Policy *pol = p->policy;

        for (size_t i = 0; i < pol->n_rules; i++)
                if (streq(pol->rules[i].name, name)) {
                        /* The section we are in, continued; a second [rule X] anywhere is an error. */
                        if (p->rule == &pol->rules[i])
                                return p->rule;
                        p->error = "duplicate rule name";
                        return NULL;
                }
        if (pol->n_rules >= POLICY_MAX_RULES) {
                p->error = "too many rules (256 at most)";
                return NULL;
        }
        Rule *n = reallocarray(pol->rules, pol->n_rules + 1, sizeof(Rule));
        if (!n) {
                p->error = "out of memory";
                return NULL;
        }
        pol->rules = n;
        Rule *r = &pol->rules[pol->n_rules];
        *r = (Rule) {
                .match_class = -1,
                .match_removable = TRISTATE_UNSET,
                .match_vhci = TRISTATE_UNSET,
                .match_power = _POWER_SOURCE_INVALID,
                .autosuspend = TRISTATE_UNSET,
                .delay_ms = -1,
                .disk_delay_ms = -1,
                .wakeup = WAKEUP_KEEP,
                .persist = TRISTATE_UNSET,
                .disk_runtime_start_stop = TRISTATE_UNSET,
                .line = p->reader.line,
        };
        r->name = strdup(name);
        r->file = strdup(p->file);
        if (!r->name || !r->file) {
                rule_done(r);
                p->error = "out of memory";
                return NULL;
        }
        pol->n_rules++;
        return r;
}

/* Keys shared by [defaults] and rules. Returns 1 if handled, 0 if not a common key, <0 on bad value. */
static int set_tristate(Tristate *t, const char *v) {
        int b = parse_bool(v);
        if (b < 0)
                return b;
        *t = b ? TRISTATE_YES : TRISTATE_NO;
        return 0;
}

static int rule_set(ParseState *p, Rule *r, const char *key, const char *v) {
        int b;

        if (streq(key, "match-id")) {
                if (!valid_id_pattern(v))
                        return fail(p, "match-id expects VENDOR:PRODUCT in hex, * and ? allowed");
                return set_str(&r->match_id, v);
        }
        if (streq(key, "match-serial"))
                return set_str(&r->match_serial, v);
        if (streq(key, "match-driver"))
                return set_str(&r->match_driver, v);
        if (streq(key, "match-devpath"))
                return set_str(&r->match_devpath, v);
        if (streq(key, "match-class")) {
                if (parse_class(v, &r->match_class) < 0)
                        return fail(p, "match-class expects a USB class in hex (00-ff)");
                return 0;
        }
        if (streq(key, "match-removable")) {
                if (set_tristate(&r->match_removable, v) < 0)
                        return fail(p, "match-removable expects yes or no");
                return 0;
        }
        if (streq(key, "match-vhci")) {
                if (set_tristate(&r->match_vhci, v) < 0)
                        return fail(p, "match-vhci expects yes or no");
                return 0;
        }
        if (streq(key, "match-power")) {
                PowerSource ps = power_source_from_string(v);
                if (ps < 0)
                        return fail(p, "match-power expects ac or battery");
                r->match_power = ps;
                return 0;
        }
        if (streq(key, "autosuspend")) {
                if (set_tristate(&r->autosuspend, v) < 0)
                        return fail(p, "autosuspend expects yes or no");
                return 0;
        }
        if (streq(key, "delay-ms")) {
                if (parse_delay(v, &r->delay_ms) < 0)
                        return fail(p, "delay-ms expects milliseconds from 0 to 3600000");
                return 0;
        }
        if (streq(key, "disk-delay-ms")) {
                if (parse_delay(v, &r->disk_delay_ms) < 0)
                        return fail(p, "disk-delay-ms expects milliseconds from 0 to 3600000");
                return 0;
        }
        if (streq(key, "wakeup")) {
                Wakeup w = wakeup_from_string(v);
                if (w < 0)
                        return fail(p, "wakeup expects enabled, disabled or keep");
                r->wakeup = w;
                return 0;
        }
        if (streq(key, "persist")) {
                if (set_tristate(&r->persist, v) < 0)
                        return fail(p, "persist expects yes or no");
                return 0;
        }
        if (streq(key, "disk-runtime-start-stop")) {
                b = parse_bool(v);
                if (streq(v, "keep"))
                        r->disk_runtime_start_stop = TRISTATE_UNSET;
                else if (b < 0)
                        return fail(p, "disk-runtime-start-stop expects yes, no or keep");
                else
                        r->disk_runtime_start_stop = b ? TRISTATE_YES : TRISTATE_NO;
                return 0;
        }
        p->error = "unknown key in [rule]";
        return -EINVAL;
}

static int defaults_set(ParseState *p, const char *key, const char *v) {
        Policy *pol = p->policy;
        int b;

        if (streq(key, "autosuspend")) {
                b = parse_bool(v);
                if (b < 0)
                        return fail(p, "autosuspend expects yes or no");
                pol->autosuspend = b;
                return 0;
        }
        if (streq(key, "delay-ms")) {
                if (parse_delay(v, &pol->delay_ms) < 0)
                        return fail(p, "delay-ms expects milliseconds from 0 to 3600000");
                return 0;
        }
        if (streq(key, "disk-delay-ms")) {
                if (parse_delay(v, &pol->disk_delay_ms) < 0)
                        return fail(p, "disk-delay-ms expects milliseconds from 0 to 3600000");
                return 0;
        }
        if (streq(key, "media-poll")) {
                MediaPoll m = media_poll_from_string(v);
                if (m < 0)
                        return fail(p, "media-poll expects off or keep");
                pol->media_poll = m;
                return 0;
        }
        if (streq(key, "disk-runtime-start-stop")) {
                b = parse_bool(v);
                if (streq(v, "keep"))
                        pol->disk_runtime_start_stop = TRISTATE_UNSET;
                else if (b < 0)
                        return fail(p, "disk-runtime-start-stop expects yes, no or keep");
                else
                        pol->disk_runtime_start_stop = b ? TRISTATE_YES : TRISTATE_NO;
                return 0;
        }
        if (streq(key, "vhci-root-ports")) {
                char *end;
                errno = 0;
                unsigned long l = strtoul(v, &end, 10);
                if (*v == 0 || *v == '-' || *end != 0 || errno != 0 || l > 64)
                        return fail(p, "vhci-root-ports expects a number from 0 (no limit) to 64");
                pol->vhci_root_ports = (unsigned) l;
                return 0;
        }
        if (streq(key, "usb-power-supplies")) {
                b = parse_bool(v);
                if (b < 0)
                        return fail(p, "usb-power-supplies expects yes or no");
                pol->usb_power_supplies = b;
                return 0;
        }
        p->error = "unknown key in [defaults]";
        return -EINVAL;
}

static int profile_set(ParseState *p, Profile *prof, const char *key, const char *v) {
        if (streq(key, "autosuspend")) {
                if (set_tristate(&prof->autosuspend, v) < 0)
                        return fail(p, "autosuspend expects yes or no");
                return 0;
        }
        if (streq(key, "delay-ms")) {
                if (parse_delay(v, &prof->delay_ms) < 0)
                        return fail(p, "delay-ms expects milliseconds from 0 to 3600000");
                return 0;
        }
        if (streq(key, "disk-delay-ms")) {
                if (parse_delay(v, &prof->disk_delay_ms) < 0)
                        return fail(p, "disk-delay-ms expects milliseconds from 0 to 3600000");
                return 0;
        }
        return fail(p, "unknown key in [profile] (autosuspend, delay-ms, disk-delay-ms)");
}

static int parse_uint(const char *v, unsigned min, unsigned max, unsigned *ret) {
        char *end;
        unsigned long l;

        if (*v < '0' || *v > '9')
                return -EINVAL;
        errno = 0;
        l = strtoul(v, &end, 10);
        if (*end != 0 || errno != 0 || l < min || l > max)
                return -EINVAL;
        *ret = (unsigned) l;
        return 0;
}

static int protect_set(ParseState *p, Protect *prot, const char *key, const char *v) {
        if (streq(key, "storm-resumes-per-minute")) {
                if (parse_uint(v, 0, 100000, &prot->storm_resumes_per_minute) < 0)
                        return fail(p, "storm-resumes-per-minute expects a number from 0 (off) to 100000");
                return 0;
        }
        if (streq(key, "storm-backoff")) {
                if (parse_uint(v, 2, 64, &prot->storm_backoff) < 0)
                        return fail(p, "storm-backoff expects a delay multiplier from 2 to 64");
                return 0;
        }
        if (streq(key, "quarantine-after")) {
                if (parse_uint(v, 0, 100, &prot->quarantine_after) < 0)
                        return fail(p, "quarantine-after expects a number of strikes from 0 (never) to 100");
                return 0;
        }
        if (streq(key, "re-enumerate-window")) {
                if (parse_uint(v, 0, 3600, &prot->re_enumerate_window_s) < 0)
                        return fail(p, "re-enumerate-window expects seconds from 0 (off) to 3600");
                return 0;
        }
        if (streq(key, "drift")) {
                Drift d = drift_from_string(v);
                if (d < 0)
                        return fail(p, "drift expects reapply or yield");
                prot->drift = d;
                return 0;
        }
        if (streq(key, "sample-min-ms")) {
                if (parse_uint(v, 100, 3600 * 1000, &prot->sample_min_ms) < 0)
                        return fail(p, "sample-min-ms expects milliseconds from 100 to 3600000");
                return 0;
        }
        if (streq(key, "sample-max-ms")) {
                if (parse_uint(v, 100, 3600 * 1000, &prot->sample_max_ms) < 0)
                        return fail(p, "sample-max-ms expects milliseconds from 100 to 3600000");
                return 0;
        }
        return fail(p, "unknown key in [protect] (storm-resumes-per-minute, storm-backoff, quarantine-after, "
                       "re-enumerate-window, drift, sample-min-ms, sample-max-ms)");
}

static int on_ini(void *userdata, const char *section, const char *key_raw, const char *value) {
        ParseState *p = userdata;
        char key[64];
        int r;

        /* Report the first error: inih goes on parsing after a handler failure. */
        if (p->r < 0)
                return 1;
        if (!key_raw)
                return 1;

        /* delay_ms and delay-ms are the same key. */
        if (strlen(key_raw) >= sizeof(key)) {
                p->error = "key too long";
                r = -EINVAL;
                goto fail;
        }
        for (size_t i = 0;; i++) {
                key[i] = key_raw[i] == '_' ? '-' : key_raw[i];
                if (!key_raw[i])
                        break;
        }

        if (streq(section, "defaults")) {
                p->rule = NULL;
                r = defaults_set(p, key, value);
        } else if (strneq(section, "profile ", 8)) {
                PowerSource ps = power_source_from_string(section + 8);
                p->rule = NULL;
                if (ps < 0) {
                        p->error = "unknown profile (expected [profile ac] or [profile battery])";
                        r = -EINVAL;
                } else
                        r = profile_set(p, &p->policy->profiles[ps], key, value);
        } else if (streq(section, "protect")) {
                p->rule = NULL;
                r = protect_set(p, &p->policy->protect, key, value);
        } else if (strneq(section, "rule ", 5) && section[5]) {
                Rule *rule = find_or_add_rule(p, section + 5);
                if (!rule) {
                        r = -EINVAL;
                        goto fail;
                }
                p->rule = rule;
                r = rule_set(p, rule, key, value);
                if (r == -ENOMEM)
                        p->error = "out of memory";
        } else if (!*section) {
                p->error = "key outside a section (expected [defaults] or [rule NAME] first)";
                r = -EINVAL;
        } else {
                p->error = "unknown section (expected [defaults], [profile ac|battery], [protect] or [rule NAME])";
                r = -EINVAL;
        }
        if (r >= 0)
                return 1;
fail:
        p->r = r;
        p->error_line = p->reader.line;
        return 1;
}

static int finish_parse(ParseState *p, int ini_result, char *error, size_t error_size) {
        if (p->reader.too_long && p->r >= 0) {
                snprintf(error, error_size, "%s:%u: line too long", p->file, p->reader.line);
                return -EINVAL;
        }
        if (ini_result == 0 && p->r >= 0)
                return 0;
        if (ini_result == -2) {
                snprintf(error, error_size, "%s: out of memory", p->file);
                return -ENOMEM;
        }
        if (ini_result > 0 && (p->r >= 0 || (unsigned) ini_result < p->error_line)) {
                snprintf(error, error_size, "%s:%d: syntax error (expected [section] or key = value)",
                         p->file, ini_result);
                return -EINVAL;
        }
        snprintf(error, error_size, "%s:%u: %s", p->file, p->error_line, p->error ?: "invalid value");
        return p->r < 0 ? p->r : -EINVAL;
}

int policy_load_string(Policy *p, const char *file, const char *text, char *error, size_t error_size) {
        ParseState s = { .policy = p, .file = file, .reader.text = text };
        return finish_parse(&s, ini_parse_stream(ini_reader_read, &s.reader, on_ini, &s), error, error_size);
}

static int load_file(Policy *p, const char *path, bool must_exist, char *error, size_t error_size) {
        ParseState s = { .policy = p, .file = path };
        int r;

        s.reader.file = fopen(path, "re");
        if (!s.reader.file) {
                r = negative_errno();
                if (r == -ENOENT && !must_exist)
                        return 0;
                snprintf(error, error_size, "%s: cannot open: %s", path, strerror(-r));
                return r;
        }
        r = finish_parse(&s, ini_parse_stream(ini_reader_read, &s.reader, on_ini, &s), error, error_size);
        fclose(s.reader.file);
        return r;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int policy_load(Policy *p, const char *path, char *error, size_t error_size) {
        _cleanup_free_ char *dir = NULL;
        _cleanup_(closedirp) DIR *d = NULL;
        char *names[256];
        size_t n = 0;
        int r;

        r = load_file(p, path, false, error, error_size);
        if (r < 0)
                return r;

        if (asprintf(&dir, "%s.d", path) < 0)
                return -ENOMEM;
        d = opendir(dir);
        if (!d) {
                if (errno == ENOENT)
                        return 0;
                r = negative_errno();
                snprintf(error, error_size, "%s: cannot open: %s", dir, strerror(-r));
                return r;
        }
        for (struct dirent *de; (de = readdir(d));) {
                size_t l = strlen(de->d_name);
                if (de->d_name[0] == '.' || l < 6 || !streq(de->d_name + l - 5, ".conf"))
                        continue;
                if (n >= ELEMENTSOF(names)) {
                        snprintf(error, error_size, "%s: more than %zu drop-ins", dir, ELEMENTSOF(names));
                        r = -E2BIG;
                        goto out;
                }
                if (asprintf(&names[n], "%s/%s", dir, de->d_name) < 0) {
                        r = -ENOMEM;
                        goto out;
                }
                n++;
        }
        qsort(names, n, sizeof(char *), cmp_str);
        r = 0;
        for (size_t i = 0; i < n && r >= 0; i++)
                r = load_file(p, names[i], true, error, error_size);
out:
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        return r;
}

static bool has_class(const DeviceFacts *f, int class) {
        if (f->device_class == class)
                return true;
        for (unsigned i = 0; i < f->n_interfaces; i++)
                if (f->interface_class[i] == class)
                        return true;
        return false;
}

bool rule_matches(const Rule *r, const DeviceFacts *f) {
        if (r->match_id) {
                char id[10];
                snprintf(id, sizeof(id), "%04x:%04x", f->vendor, f->product);
                if (fnmatch(r->match_id, id, FNM_CASEFOLD) != 0)
                        return false;
        }
        if (r->match_serial && (!f->serial || fnmatch(r->match_serial, f->serial, 0) != 0))
                return false;
        if (r->match_class >= 0 && !has_class(f, r->match_class))
                return false;
        if (r->match_driver) {
                bool any = false;
                for (unsigned i = 0; i < f->n_interfaces && !any; i++)
                        any = f->interface_driver[i] &&
                              fnmatch(r->match_driver, f->interface_driver[i], 0) == 0;
                if (!any)
                        return false;
        }
        if (r->match_devpath) {
                const char *s = r->match_devpath[0] == '/' ? f->devpath : f->sysname;
                if (!s || fnmatch(r->match_devpath, s, 0) != 0)
                        return false;
        }
        if (r->match_removable != TRISTATE_UNSET && (r->match_removable == TRISTATE_YES) != f->removable)
                return false;
        if (r->match_vhci != TRISTATE_UNSET && (r->match_vhci == TRISTATE_YES) != f->vhci)
                return false;
        if (r->match_power >= 0 && r->match_power != f->power)
                return false;
        return true;
}

void policy_decide(const Policy *p, const DeviceFacts *f, Decision *ret) {
        const Profile *prof =
                &p->profiles[f->power >= 0 && f->power < _POWER_SOURCE_MAX ? f->power : POWER_AC];
        bool autosuspend =
                prof->autosuspend != TRISTATE_UNSET ? prof->autosuspend == TRISTATE_YES : p->autosuspend;
        Decision d = {
                .autosuspend = autosuspend,
                .delay_ms = prof->delay_ms >= 0 ? prof->delay_ms : p->delay_ms,
                .disk_delay_ms = prof->disk_delay_ms >= 0 ? prof->disk_delay_ms : p->disk_delay_ms,
                .wakeup = WAKEUP_KEEP,
                .persist = TRISTATE_UNSET,
                .disk_runtime_start_stop = p->disk_runtime_start_stop,
                .media_poll = p->media_poll,
        };

        if (prof->autosuspend != TRISTATE_UNSET)
                snprintf(d.reason, sizeof(d.reason), "%s by [profile %s]",
                         autosuspend ? "allowed" : "disabled", power_source_to_string(f->power));
        else
                snprintf(d.reason, sizeof(d.reason), "%s by default", autosuspend ? "allowed" : "disabled");

        /* The built-in layer: hwdb's word first, then TLP-like class exclusions. */
        if (f->id_persist && streq(f->id_persist, "0"))
                d.persist = TRISTATE_NO;
        if (f->id_autosuspend && streq(f->id_autosuspend, "1")) {
                d.autosuspend = true;
                snprintf(d.reason, sizeof(d.reason), "allowed by hwdb (ID_AUTOSUSPEND=1)");
        } else if (d.autosuspend)
                for (size_t i = 0; i < ELEMENTSOF(excluded_classes); i++)
                        if (has_class(f, excluded_classes[i].class)) {
                                d.autosuspend = false;
                                snprintf(d.reason, sizeof(d.reason), "excluded by default: %s class %02x",
                                         excluded_classes[i].name, (unsigned) excluded_classes[i].class);
                                break;
                        }

        for (size_t i = 0; i < p->n_rules; i++) {
                const Rule *r = &p->rules[i];
                if (!rule_matches(r, f))
                        continue;
                d.rule = r;
                if (r->autosuspend != TRISTATE_UNSET) {
                        d.autosuspend = r->autosuspend == TRISTATE_YES;
                        snprintf(d.reason, sizeof(d.reason), "%s by rule %s (%s:%u)",
                                 d.autosuspend ? "allowed" : "excluded", r->name, r->file, r->line);
                } else
                        snprintf(d.reason + strlen(d.reason), sizeof(d.reason) - strlen(d.reason),
                                 "; settings from rule %s (%s:%u)", r->name, r->file, r->line);
                if (r->delay_ms >= 0)
                        d.delay_ms = r->delay_ms;
                if (r->disk_delay_ms >= 0)
                        d.disk_delay_ms = r->disk_delay_ms;
                if (r->wakeup != WAKEUP_KEEP)
                        d.wakeup = r->wakeup;
                if (r->persist != TRISTATE_UNSET)
                        d.persist = r->persist;
                if (r->disk_runtime_start_stop != TRISTATE_UNSET)
                        d.disk_runtime_start_stop = r->disk_runtime_start_stop;
                break;
        }
        *ret = d;
}
