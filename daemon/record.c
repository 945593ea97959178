/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>

#include "record.h"

#define RECORD_HEADER "drowse-state 1"
#define RECORD_MAX_SIZE (256 * 1024)

void record_key(const char *id, const char *serial, const char *devpath, char *ret, size_t size) {
        if (serial && serial[0])
                snprintf(ret, size, "%s:%s", id, serial);
        else
                snprintf(ret, size, "%s@%s", id, devpath);
}

void record_init(DeviceRecord *r, const char *key) {
        *r = (DeviceRecord) { .backoff = 1 };
        snprintf(r->key, sizeof(r->key), "%s", key);
}

void record_done(DeviceRecord *r) {
        stats_done(&r->stats);
}

DeviceRecord *record_free(DeviceRecord *r) {
        if (r) {
                record_done(r);
                free(r);
        }
        return NULL;
}

void record_file_name(const char *key, char *ret, size_t size) {
        char buf[RECORD_KEY_MAX * 3 + 1];
        size_t n = 0;
        uint64_t hash = 14695981039346656037ULL; /* FNV-1a */

        for (const unsigned char *c = (const unsigned char *) key; *c; c++) {
                hash = (hash ^ *c) * 1099511628211ULL;
                if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                    *c == '-' || (*c == '.' && c != (const unsigned char *) key))
                        buf[n++] = (char) *c;
                else
                        n += (size_t) snprintf(buf + n, sizeof(buf) - n, "_%02x", *c);
        }
        buf[n] = 0;
        /* NAME_MAX is 255: long devpaths and serials keep a readable prefix and a hash. */
        if (n > 200)
                snprintf(ret, size, "%.160s_%016" PRIx64 RECORD_FILE_SUFFIX, buf, hash);
        else
                snprintf(ret, size, "%s" RECORD_FILE_SUFFIX, buf);
}

/* Values are single lines. */
static void put(FILE *f, const char *key, const char *value) {
        fprintf(f, "%s=", key);
        for (const char *c = value; *c; c++)
                fputc(*c == '\n' || *c == '\r' ? ' ' : *c, f);
        fputc('\n', f);
}

static int serialize(const DeviceRecord *r, char **ret, size_t *ret_size) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return -ENOMEM;
        fputs(RECORD_HEADER "\n", f);
        put(f, "key", r->key);
        put(f, "id", r->id);
        put(f, "serial", r->serial);
        put(f, "name", r->name);
        fprintf(f, "quarantined=%d\n", r->quarantined);
        put(f, "quarantine-reason", r->quarantine_reason);
        fprintf(f, "strikes=%u\nbackoff=%u\nremoved-at-ms=%" PRIu64 "\n", r->strikes, r->backoff,
                r->removed_at_ms);
        put(f, "last-status", r->last_status);
        fprintf(f,
                "suspended-ms=%" PRIu64 "\nactive-ms=%" PRIu64 "\nresumes=%" PRIu64 "\nwakeups=%" PRIu64
                "\ndecisions=%" PRIu64 "\n",
                r->stats.suspended_ms, r->stats.active_ms, r->stats.resumes, r->stats.wakeups,
                r->stats.decisions);
        for (size_t i = 0; i < r->stats.history_len; i++) {
                const HistoryEntry *e = stats_history_get(&r->stats, i);
                char line[STATS_REASON_MAX + 64];
                snprintf(line, sizeof(line), "%" PRIu64 " %s %s%s%s", e->t_ms, history_kind_to_string(e->kind),
                         e->what, e->reason[0] ? " " : "", e->reason);
                put(f, "history", line);
        }
        /* A file without this line was cut short. */
        fputs("end\n", f);
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}

static int write_all(int fd, const char *buf, size_t size) {
        while (size > 0) {
                ssize_t n = write(fd, buf, size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                buf += n;
                size -= (size_t) n;
        }
        return 0;
}

int record_save(const DeviceRecord *r, const char *dir) {
        _cleanup_free_ char *data = NULL;
        _cleanup_close_ int fd = -EBADF, dfd = -EBADF;
        char name[256], path[4096], tmp[4096];
        size_t size;
        int r2;

        r2 = serialize(r, &data, &size);
        if (r2 < 0)
                return r2;
        record_file_name(r->key, name, sizeof(name));
        if ((size_t) snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path) ||
            (size_t) snprintf(tmp, sizeof(tmp), "%s/.#%s.XXXXXX", dir, name) >= sizeof(tmp))
                return -ENAMETOOLONG;
        /* Same directory, so that rename() is atomic; the loader removes leftovers of a crash. */
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        r2 = write_all(fd, data, size);
        if (r2 >= 0 && fchmod(fd, 0644) < 0)
                r2 = negative_errno();
        /* The data must be on disk before the name points at it, or a power cut leaves an empty file. */
        if (r2 >= 0 && fsync(fd) < 0)
                r2 = negative_errno();
        if (r2 >= 0 && rename(tmp, path) < 0)
                r2 = negative_errno();
        if (r2 < 0) {
                (void) unlink(tmp);
                return r2;
        }
        /* And the rename itself. */
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return negative_errno();
        if (fsync(dfd) < 0)
                return negative_errno();
        return 0;
}

_printf_(3, 4) static int bad(char *error, size_t size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(error, size, fmt, ap);
        va_end(ap);
        return -EBADMSG;
}

static int parse_u64(const char *v, uint64_t *ret) {
        char *end;
        unsigned long long l;

        if (*v < '0' || *v > '9')
                return -EINVAL;
        errno = 0;
        l = strtoull(v, &end, 10);
        if (*end != 0 || errno != 0)
                return -EINVAL;
        *ret = l;
        return 0;
}

static int parse_unsigned(const char *v, unsigned max, unsigned *ret) {
        uint64_t u;
        if (parse_u64(v, &u) < 0 || u > max)
                return -EINVAL;
        *ret = (unsigned) u;
        return 0;
}

static int set_field(char *field, size_t size, const char *v) {
        if (strlen(v) >= size)
                return -EINVAL;
        strcpy(field, v);
        return 0;
}

static int parse_history(DeviceRecord *r, char *v) {
        char *kind, *what, *reason, *sp;
        uint64_t t;
        HistoryKind k;

        sp = strchr(v, ' ');
        if (!sp)
                return -EINVAL;
        *sp = 0;
        kind = sp + 1;
        if (parse_u64(v, &t) < 0)
                return -EINVAL;
        sp = strchr(kind, ' ');
        if (!sp)
                return -EINVAL;
        *sp = 0;
        what = sp + 1;
        k = history_kind_from_string(kind);
        if (k < 0)
                return -EINVAL;
        sp = strchr(what, ' ');
        reason = "";
        if (sp) {
                *sp = 0;
                reason = sp + 1;
        }
        if (!what[0] || strlen(what) >= STATS_WHAT_MAX || strlen(reason) >= STATS_REASON_MAX)
                return -EINVAL;
        stats_history_add(&r->stats, t, k, what, reason);
        return 0;
}

static int parse_line(DeviceRecord *r, char *line) {
        char *eq = strchr(line, '='), *v;
        int q;

        if (!eq)
                return -EINVAL;
        *eq = 0;
        v = eq + 1;
        if (streq(line, "key"))
                return v[0] ? set_field(r->key, sizeof(r->key), v) : -EINVAL;
        if (streq(line, "id"))
                return set_field(r->id, sizeof(r->id), v);
        if (streq(line, "serial"))
                return set_field(r->serial, sizeof(r->serial), v);
        if (streq(line, "name"))
                return set_field(r->name, sizeof(r->name), v);
        if (streq(line, "quarantined")) {
                if (!streq(v, "0") && !streq(v, "1"))
                        return -EINVAL;
                q = v[0] == '1';
                r->quarantined = q;
                return 0;
        }
        if (streq(line, "quarantine-reason"))
                return set_field(r->quarantine_reason, sizeof(r->quarantine_reason), v);
        if (streq(line, "strikes"))
                return parse_unsigned(v, 1000000, &r->strikes);
        if (streq(line, "backoff")) {
                int k = parse_unsigned(v, 3600000, &r->backoff);
                return k < 0 || r->backoff == 0 ? -EINVAL : 0;
        }
        if (streq(line, "removed-at-ms"))
                return parse_u64(v, &r->removed_at_ms);
        if (streq(line, "last-status"))
                return set_field(r->last_status, sizeof(r->last_status), v);
        if (streq(line, "suspended-ms"))
                return parse_u64(v, &r->stats.suspended_ms);
        if (streq(line, "active-ms"))
                return parse_u64(v, &r->stats.active_ms);
        if (streq(line, "resumes"))
                return parse_u64(v, &r->stats.resumes);
        if (streq(line, "wakeups"))
                return parse_u64(v, &r->stats.wakeups);
        if (streq(line, "decisions"))
                return parse_u64(v, &r->stats.decisions);
        if (streq(line, "history"))
                return parse_history(r, v);
        return -EINVAL;
}

int record_parse(const char *text, size_t size, DeviceRecord *ret, char *error, size_t error_size) {
        _cleanup_(record_freep) DeviceRecord *r = NULL;
        _cleanup_free_ char *copy = NULL;
        char *line, *next;
        unsigned lineno = 0;
        bool ended = false;

        if (size == 0)
                return bad(error, error_size, "empty");
        if (memchr(text, 0, size))
                return bad(error, error_size, "contains a NUL byte");
        if (text[size - 1] != '\n')
                return bad(error, error_size, "truncated (no newline at the end)");
        copy = strndup(text, size);
        r = malloc(sizeof(DeviceRecord));
        if (!copy || !r)
                return -ENOMEM;
        record_init(r, "");
        for (line = copy; *line; line = next) {
                next = strchr(line, '\n');
                if (!next) /* cannot happen: the text ends with a newline */
                        return bad(error, error_size, "truncated");
                *next++ = 0;
                lineno++;
                if (ended)
                        return bad(error, error_size, "line %u: data after the end marker", lineno);
                if (lineno == 1) {
                        if (!streq(line, RECORD_HEADER))
                                return bad(error, error_size, "line 1: not a drowse state file (expected \"%s\")",
                                           RECORD_HEADER);
                        continue;
                }
                if (streq(line, "end")) {
                        ended = true;
                        continue;
                }
                /* Shown in the error as it was: parse_line() cuts it at the '='. */
                char shown[64];
                size_t l = strlen(line);
                memcpy(shown, line, MIN(l, sizeof(shown) - 1));
                shown[MIN(l, sizeof(shown) - 1)] = 0;
                if (parse_line(r, line) < 0)
                        return bad(error, error_size, "line %u: invalid: \"%s%s\"", lineno, shown,
                                   strlen(shown) >= sizeof(shown) - 1 ? "..." : "");
        }
        if (!ended)
                return bad(error, error_size, "truncated (no end marker after line %u)", lineno);
        if (!r->key[0])
                return bad(error, error_size, "no key");
        *ret = *r;
        r->stats = (Stats) {}; /* the history is RET's now */
        return 0;
}

int record_load(const char *path, DeviceRecord *ret, char *error, size_t error_size) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        struct stat st;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0) {
                int e = negative_errno();
                snprintf(error, error_size, "cannot open: %s", strerror(-e));
                return e;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return bad(error, error_size, "not a regular file");
        if (st.st_size > RECORD_MAX_SIZE)
                return bad(error, error_size, "too large (%lld bytes)", (long long) st.st_size);
        buf = malloc(RECORD_MAX_SIZE + 1);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n = read(fd, buf + size, RECORD_MAX_SIZE + 1 - size);
                if (n < 0) {
                        int e = negative_errno();
                        if (e == -EINTR)
                                continue;
                        snprintf(error, error_size, "cannot read: %s", strerror(-e));
                        return e;
                }
                if (n == 0)
                        break;
                size += (size_t) n;
                if (size > RECORD_MAX_SIZE)
                        return bad(error, error_size, "too large");
        }
        return record_parse(buf, size, ret, error, error_size);
}
