/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A deliberately small unit-test harness: each test binary lists its cases in a TEST_MAIN table;
 * the first failing check prints file:line and the values involved, and the binary exits 1. */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_FAIL(...)                                                                             \
        do {                                                                                       \
                fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, __func__);                      \
                fprintf(stderr, __VA_ARGS__);                                                      \
                fputc('\n', stderr);                                                               \
                exit(1);                                                                           \
        } while (0)

#define ASSERT_TRUE(expr)                                                                          \
        do {                                                                                       \
                if (!(expr))                                                                       \
                        TEST_FAIL("expected true: %s", #expr);                                     \
        } while (0)

#define ASSERT_FALSE(expr) ASSERT_TRUE(!(expr))

#define ASSERT_EQ(a, b)                                                                            \
        do {                                                                                       \
                long long _a_ = (long long) (a), _b_ = (long long) (b);                            \
                if (_a_ != _b_)                                                                    \
                        TEST_FAIL("%s == %s: %lld != %lld", #a, #b, _a_, _b_);                     \
        } while (0)

#define ASSERT_OK(expr)                                                                            \
        do {                                                                                       \
                long long _r_ = (long long) (expr);                                                \
                if (_r_ < 0)                                                                       \
                        TEST_FAIL("%s failed: %lld (%s)", #expr, _r_, strerror((int) -_r_));       \
        } while (0)

#define ASSERT_ERR(expr, err)                                                                      \
        do {                                                                                       \
                long long _r_ = (long long) (expr);                                                \
                if (_r_ != -(long long) (err))                                                     \
                        TEST_FAIL("%s: expected -%s, got %lld", #expr, #err, _r_);                 \
        } while (0)

#define ASSERT_STREQ(a, b)                                                                         \
        do {                                                                                       \
                const char *_a_ = (a), *_b_ = (b);                                                 \
                if (!_a_ || !_b_ || strcmp(_a_, _b_) != 0)                                         \
                        TEST_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, _a_ ?: "(null)",           \
                                  _b_ ?: "(null)");                                                \
        } while (0)

#define ASSERT_MEMEQ(a, b, n)                                                                      \
        do {                                                                                       \
                if (memcmp((a), (b), (n)) != 0) {                                                  \
                        const unsigned char *_x_ = (const void *) (a), *_y_ = (const void *) (b);  \
                        size_t _i_ = 0;                                                            \
                        while (_i_ < (size_t) (n) && _x_[_i_] == _y_[_i_])                         \
                                _i_++;                                                             \
                        TEST_FAIL("%s and %s differ at byte %zu: %02x != %02x", #a, #b, _i_,       \
                                  _x_[_i_], _y_[_i_]);                                             \
                }                                                                                  \
        } while (0)

typedef struct TestCase {
        const char *name;
        void (*func)(void);
} TestCase;

#define TEST(n) {#n, n}

#define TEST_MAIN(...)                                                                             \
        int main(int argc, char **argv) {                                                          \
                static const TestCase cases[] = {__VA_ARGS__};                                     \
                size_t n = sizeof(cases) / sizeof(cases[0]);                                       \
                for (size_t i = 0; i < n; i++) {                                                   \
                        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)                       \
                                continue;                                                          \
                        fprintf(stderr, "== %s\n", cases[i].name);                                 \
                        cases[i].func();                                                           \
                }                                                                                  \
                return 0;                                                                          \
        }
