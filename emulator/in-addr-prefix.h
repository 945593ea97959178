/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* IPv4 and IPv6 network prefixes ("192.168.1.0/24", "fd00::/8") and whether a peer's address is inside
 * one: the allow-list of USB/IP clients (--allow). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "macro.h"

#define IN_ADDR_PREFIX_STRING_MAX 64 /* "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128" and a NUL */

typedef struct InAddrPrefix {
        int family;          /* AF_INET or AF_INET6 */
        uint8_t address[16]; /* network byte order, 4 bytes used for AF_INET; no bits set past the prefix */
        uint8_t prefixlen;   /* 0..32 or 0..128 */
} InAddrPrefix;

/* "ADDR/LEN" or a bare "ADDR" (one host: /32 or /128). Strict: dotted-quad IPv4 only, decimal LEN with
 * no sign, no spaces, and no address bits set beyond LEN (a typo for another network, not a network).
 * On error returns -EINVAL and *ret_error says what was wrong (static text). */
int in_addr_prefix_from_string(const char *s, InAddrPrefix *ret, const char **ret_error);

/* "192.168.1.0/24"; size at least IN_ADDR_PREFIX_STRING_MAX. */
int in_addr_prefix_to_string(const InAddrPrefix *p, char *buf, size_t size);

/* Whether the socket address (AF_INET or AF_INET6) is inside the prefix. An IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d, what a dual-stack listener sees of an IPv4 client) matches IPv4 prefixes as a.b.c.d. */
bool in_addr_prefix_match(const InAddrPrefix *p, const struct sockaddr *sa, socklen_t salen) _pure_;
