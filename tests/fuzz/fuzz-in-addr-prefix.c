/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The --allow / allow= network parser and matcher. Input: the text up to the first NUL is parsed; the
 * bytes after it (up to 16) are an address to match, IPv4 when 4 or fewer. Checked: an accepted prefix
 * formats and parses back to itself; its own network address and its last address match it, an address
 * differing in the first prefix bit does not; an IPv4 prefix matches the IPv4-mapped IPv6 form of what it
 * matches; a refusal always says why. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "fuzz.h"
#include "in-addr-prefix.h"

static bool match_bytes(const InAddrPrefix *p, int family, const uint8_t *a) {
        if (family == AF_INET) {
                struct sockaddr_in sa = { .sin_family = AF_INET };
                memcpy(&sa.sin_addr, a, 4);
                return in_addr_prefix_match(p, (struct sockaddr *) &sa, sizeof(sa));
        }
        struct sockaddr_in6 sa6 = { .sin6_family = AF_INET6 };
        memcpy(&sa6.sin6_addr, a, 16);
        return in_addr_prefix_match(p, (struct sockaddr *) &sa6, sizeof(sa6));
}

static bool match_mapped(const InAddrPrefix *p, const uint8_t *a4) {
        uint8_t a[16] = { [10] = 0xff, [11] = 0xff };
        memcpy(a + 12, a4, 4);
        return match_bytes(p, AF_INET6, a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char text[256], buf[IN_ADDR_PREFIX_STRING_MAX];
        const uint8_t *nul = memchr(data, 0, size);
        size_t len = nul ? (size_t) (nul - data) : size;
        const char *error = NULL;
        InAddrPrefix p, q;

        if (len >= sizeof(text))
                return 0;
        memcpy(text, data, len);
        text[len] = 0;

        if (in_addr_prefix_from_string(text, &p, &error) < 0) {
                CHECK(error && *error);
                return 0;
        }
        CHECK(p.family == AF_INET || p.family == AF_INET6);
        size_t bytes = p.family == AF_INET ? 4 : 16;
        CHECK(p.prefixlen <= bytes * 8);

        CHECK(in_addr_prefix_to_string(&p, buf, sizeof(buf)) >= 0);
        CHECK(in_addr_prefix_from_string(buf, &q, &error) >= 0);
        CHECK(q.family == p.family && q.prefixlen == p.prefixlen && memcmp(q.address, p.address, 16) == 0);

        /* The first and the last address of the network are in it. */
        uint8_t last[16];
        memcpy(last, p.address, 16);
        for (size_t i = 0; i < bytes; i++) {
                size_t first = i * 8;
                if (first >= p.prefixlen)
                        last[i] = 0xff;
                else if (first + 8 > p.prefixlen)
                        last[i] |= (uint8_t) (0xff >> (p.prefixlen - first));
        }
        CHECK(match_bytes(&p, p.family, p.address));
        CHECK(match_bytes(&p, p.family, last));
        if (p.prefixlen > 0) {
                uint8_t other[16];
                unsigned bit = p.prefixlen - 1;
                memcpy(other, p.address, 16);
                other[bit / 8] ^= (uint8_t) (0x80 >> (bit % 8));
                CHECK(!match_bytes(&p, p.family, other));
        }
        if (p.family == AF_INET)
                CHECK(match_mapped(&p, p.address) && match_mapped(&p, last));

        /* An arbitrary address from the rest of the input: no crash, and IPv4 agrees with its mapped form. */
        if (nul) {
                uint8_t a[16] = {};
                size_t n = MIN(size - len - 1, sizeof(a));
                memcpy(a, nul + 1, n);
                if (n <= 4) {
                        bool m = match_bytes(&p, AF_INET, a);
                        CHECK(m == match_mapped(&p, a) || p.family == AF_INET6);
                } else
                        (void) match_bytes(&p, AF_INET6, a);
        }
        return 0;
}
