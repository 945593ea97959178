/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>

#include "in-addr-prefix.h"

static size_t family_bytes(int family) {
        return family == AF_INET ? 4 : 16;
}

int in_addr_prefix_from_string(const char *s, InAddrPrefix *ret, const char **ret_error) {
        char address[IN_ADDR_PREFIX_STRING_MAX];
        InAddrPrefix p = {};
        const char *slash;
        size_t len, bits;

        if (!s || !*s) {
                *ret_error = "empty network";
                return -EINVAL;
        }
        slash = strchr(s, '/');
        len = slash ? (size_t) (slash - s) : strlen(s);
        if (len == 0) {
                *ret_error = "no address before the '/'";
                return -EINVAL;
        }
        if (len >= sizeof(address)) {
                *ret_error = "address too long";
                return -EINVAL;
        }
        memcpy(address, s, len);
        address[len] = 0;

        if (inet_pton(AF_INET, address, p.address) == 1)
                p.family = AF_INET;
        else if (inet_pton(AF_INET6, address, p.address) == 1)
                p.family = AF_INET6;
        else {
                *ret_error = "not an IPv4 (a.b.c.d) or IPv6 address";
                return -EINVAL;
        }
        bits = family_bytes(p.family) * 8;

        if (slash) {
                const char *q = slash + 1;
                unsigned v = 0;

                if (*q == 0) {
                        *ret_error = "no prefix length after the '/'";
                        return -EINVAL;
                }
                for (; *q; q++) {
                        if (*q < '0' || *q > '9') {
                                *ret_error = "prefix length is not a decimal number";
                                return -EINVAL;
                        }
                        v = v * 10 + (unsigned) (*q - '0');
                        if (v > bits) {
                                *ret_error = p.family == AF_INET ?
                                             "prefix length of an IPv4 network is at most 32" :
                                             "prefix length of an IPv6 network is at most 128";
                                return -EINVAL;
                        }
                }
                p.prefixlen = (uint8_t) v;
        } else
                p.prefixlen = (uint8_t) bits;

        for (size_t i = 0; i < family_bytes(p.family); i++) {
                size_t first = i * 8;
                uint8_t host_mask = first >= p.prefixlen ? 0xff :
                                    first + 8 <= p.prefixlen ? 0 : (uint8_t) (0xff >> (p.prefixlen - first));
                if (p.address[i] & host_mask) {
                        *ret_error =
                                "address has bits set beyond the prefix length (not the network's address)";
                        return -EINVAL;
                }
        }

        *ret = p;
        return 0;
}

int in_addr_prefix_to_string(const InAddrPrefix *p, char *buf, size_t size) {
        char address[INET6_ADDRSTRLEN];
        int n;

        if (p->family != AF_INET && p->family != AF_INET6)
                return -EAFNOSUPPORT;
        if (!inet_ntop(p->family, p->address, address, sizeof(address)))
                return negative_errno();
        n = snprintf(buf, size, "%s/%u", address, p->prefixlen);
        if (n < 0 || (size_t) n >= size)
                return -ENOBUFS;
        return 0;
}

static bool bits_match(const uint8_t *a, const uint8_t *network, unsigned prefixlen) {
        unsigned full = prefixlen / 8, rest = prefixlen % 8;

        if (memcmp(a, network, full) != 0)
                return false;
        if (rest == 0)
                return true;
        uint8_t mask = (uint8_t) (0xff << (8 - rest));
        return (a[full] & mask) == (network[full] & mask);
}

bool in_addr_prefix_match(const InAddrPrefix *p, const struct sockaddr *sa, socklen_t salen) {
        static const uint8_t v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        const uint8_t *a;
        int family;

        if (!sa || salen < (socklen_t) sizeof(sa_family_t))
                return false;
        if (sa->sa_family == AF_INET && salen >= (socklen_t) sizeof(struct sockaddr_in)) {
                a = (const uint8_t *) &((const struct sockaddr_in *) sa)->sin_addr;
                family = AF_INET;
        } else if (sa->sa_family == AF_INET6 && salen >= (socklen_t) sizeof(struct sockaddr_in6)) {
                a = (const uint8_t *) &((const struct sockaddr_in6 *) sa)->sin6_addr;
                family = AF_INET6;
                if (p->family == AF_INET && memcmp(a, v4_mapped, sizeof(v4_mapped)) == 0) {
                        a += sizeof(v4_mapped);
                        family = AF_INET;
                }
        } else
                return false;

        return family == p->family && bits_match(a, p->address, p->prefixlen);
}
