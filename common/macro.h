/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Small helpers shared by every drowse component, in the spirit of systemd's basic/macro.h. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((__cleanup__(f)))
#define _unused_ __attribute__((__unused__))
#define _pure_ __attribute__((__pure__))
#define _const_ __attribute__((__const__))
#define _printf_(a, b) __attribute__((__format__(printf, a, b)))
#define _noreturn_ __attribute__((__noreturn__))
#define _warn_unused_result_ __attribute__((__warn_unused_result__))
#define _likely_(x) (__builtin_expect(!!(x), 1))
#define _unlikely_(x) (__builtin_expect(!!(x), 0))
#define _fallthrough_ __attribute__((__fallthrough__))

#define assert_cc(expr) _Static_assert(expr, #expr)

#define ELEMENTSOF(x)                                                                              \
        (__builtin_choose_expr(                                                                    \
                !__builtin_types_compatible_p(typeof(x), typeof(&*(x))), sizeof(x) / sizeof((x)[0]), \
                (void) 0))

/* Each argument is evaluated once: MAX(x, f()) calls f() once (a fault hook that counts its hits was
 * called twice by the plain ternary form). Unique names let them nest. Not for constant expressions. */
#define DROWSE_CONCAT_(a, b) a##b
#define DROWSE_CONCAT(a, b) DROWSE_CONCAT_(a, b)
#define DROWSE_MIN_(x, y, a, b)                                                                    \
        ({                                                                                         \
                const __auto_type x = (a);                                                         \
                const __auto_type y = (b);                                                         \
                x < y ? x : y;                                                                     \
        })
#define DROWSE_MAX_(x, y, a, b)                                                                    \
        ({                                                                                         \
                const __auto_type x = (a);                                                         \
                const __auto_type y = (b);                                                         \
                x > y ? x : y;                                                                     \
        })
#define MIN(a, b) DROWSE_MIN_(DROWSE_CONCAT(_min_a_, __COUNTER__), DROWSE_CONCAT(_min_b_, __COUNTER__), a, b)
#define MAX(a, b) DROWSE_MAX_(DROWSE_CONCAT(_max_a_, __COUNTER__), DROWSE_CONCAT(_max_b_, __COUNTER__), a, b)
#define DIV_ROUND_UP(x, y) (((x) + (y) - 1) / (y))

#define streq(a, b) (strcmp((a), (b)) == 0)
#define strneq(a, b, n) (strncmp((a), (b), (n)) == 0)

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

/* Hands ownership of a pointer or fd out of a cleanup scope. */
#define TAKE_GENERIC(var, type, nullvalue)                                                         \
        ({                                                                                         \
                type *_pvar_ = &(var);                                                             \
                type _var_ = *_pvar_;                                                              \
                type _nullvalue_ = nullvalue;                                                      \
                *_pvar_ = _nullvalue_;                                                             \
                _var_;                                                                             \
        })
#define TAKE_PTR(ptr) TAKE_GENERIC(ptr, typeof(ptr), NULL)
#define TAKE_FD(fd) TAKE_GENERIC(fd, int, -EBADF)

static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -EBADF;
}

static inline void freep(void *p) {
        free(*(void **) p);
}
static inline void closep(int *fd) {
        safe_close(*fd);
}

/* Whether x equals one of the values: IN_SET(kind, A, B, C). */
#define IN_SET(x, ...)                                                                             \
        ({                                                                                         \
                const typeof(x) _x_ = (x);                                                         \
                const typeof(x) _set_[] = { __VA_ARGS__ };                                         \
                bool _found_ = false;                                                              \
                for (size_t _i_ = 0; _i_ < sizeof(_set_) / sizeof(_set_[0]) && !_found_; _i_++)    \
                        _found_ = _set_[_i_] == _x_;                                               \
                _found_;                                                                           \
        })

/* Whether the string equals one of the strings: STR_IN_SET(status, "Charging", "Full"). */
#define STR_IN_SET(s, ...)                                                                         \
        ({                                                                                         \
                const char *_s_ = (s);                                                             \
                const char *const _strs_[] = { __VA_ARGS__ };                                      \
                bool _found_ = false;                                                              \
                for (size_t _i_ = 0; _i_ < sizeof(_strs_) / sizeof(_strs_[0]) && !_found_; _i_++)  \
                        _found_ = strcmp(_strs_[_i_], _s_) == 0;                                   \
                _found_;                                                                           \
        })

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)

#include <dirent.h>
#include <stdio.h>
static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

static inline void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
}

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
        static inline void func##p(type *p) {                                                      \
                if (*p)                                                                            \
                        *p = func(*p);                                                             \
        }

/* errno as a negative return value, never 0 even if a libc call forgot to set it. */
static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

/* Unaligned, explicit byte-order loads and stores. USB/IP is big-endian, USB itself little-endian;
 * every wire field is read through one of these at its offset so the order is visible at the access. */
static inline uint16_t get_be16(const uint8_t *p) {
        return (uint16_t) ((uint16_t) p[0] << 8 | p[1]);
}
static inline uint32_t get_be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}
static inline uint64_t get_be64(const uint8_t *p) {
        return (uint64_t) get_be32(p) << 32 | get_be32(p + 4);
}
static inline uint16_t get_le16(const uint8_t *p) {
        return (uint16_t) (p[0] | (uint16_t) p[1] << 8);
}
static inline uint32_t get_le32(const uint8_t *p) {
        return p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}
static inline void put_be16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t) (v >> 8);
        p[1] = (uint8_t) v;
}
static inline void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24);
        p[1] = (uint8_t) (v >> 16);
        p[2] = (uint8_t) (v >> 8);
        p[3] = (uint8_t) v;
}
static inline void put_be64(uint8_t *p, uint64_t v) {
        put_be32(p, (uint32_t) (v >> 32));
        put_be32(p + 4, (uint32_t) v);
}
static inline void put_le16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t) v;
        p[1] = (uint8_t) (v >> 8);
}
static inline void put_le32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) v;
        p[1] = (uint8_t) (v >> 8);
        p[2] = (uint8_t) (v >> 16);
        p[3] = (uint8_t) (v >> 24);
}

/* Enum <-> string tables: DEFINE_STRING_TABLE_LOOKUP(foo, Foo) gives foo_to_string() and
 * foo_from_string() over a `static const char *const foo_table[_FOO_MAX]`. */
#define DEFINE_STRING_TABLE_TO_STRING(name, type)                                                  \
        const char *name##_to_string(type i) {                                                     \
                /* A negative enum value converts to a huge size_t and is caught here too. */     \
                if ((size_t) i >= ELEMENTSOF(name##_table))                                        \
                        return NULL;                                                               \
                return name##_table[i];                                                            \
        }

#define DEFINE_STRING_TABLE_LOOKUP(name, type)                                                     \
        DEFINE_STRING_TABLE_TO_STRING(name, type)                                                  \
        type name##_from_string(const char *s) {                                                   \
                if (!s)                                                                            \
                        return (type) -EINVAL;                                                     \
                for (size_t i = 0; i < ELEMENTSOF(name##_table); i++)                              \
                        if (name##_table[i] && streq(name##_table[i], s))                          \
                                return (type) i;                                                   \
                return (type) -EINVAL;                                                             \
        }
