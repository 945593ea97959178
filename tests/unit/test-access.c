/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Who may reach drowse-emu and what it may create: the client-network allow-list (CIDR parser and
 * matcher, IPv4 and IPv6), the server's check at accept(), the connection limit, the image-directory
 * rule for new images, and follow-symlinks as a disk option. */

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include "emu-config.h"
#include "image.h"
#include "in-addr-prefix.h"
#include "server.h"
#include "tests.h"

static struct sockaddr_in v4(const char *a) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(40000) };
        if (inet_pton(AF_INET, a, &sa.sin_addr) != 1)
                TEST_FAIL("bad test address %s", a);
        return sa;
}

static struct sockaddr_in6 v6(const char *a) {
        struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = htons(40000) };
        if (inet_pton(AF_INET6, a, &sa.sin6_addr) != 1)
                TEST_FAIL("bad test address %s", a);
        return sa;
}

static bool match4(const char *prefix, const char *a) {
        InAddrPrefix p;
        const char *error = NULL;
        struct sockaddr_in sa = v4(a);
        if (in_addr_prefix_from_string(prefix, &p, &error) < 0)
                TEST_FAIL("%s: %s", prefix, error);
        return in_addr_prefix_match(&p, (struct sockaddr *) &sa, sizeof(sa));
}

static bool match6(const char *prefix, const char *a) {
        InAddrPrefix p;
        const char *error = NULL;
        struct sockaddr_in6 sa = v6(a);
        if (in_addr_prefix_from_string(prefix, &p, &error) < 0)
                TEST_FAIL("%s: %s", prefix, error);
        return in_addr_prefix_match(&p, (struct sockaddr *) &sa, sizeof(sa));
}

static void test_parse_good(void) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "192.168.1.0/24", "192.168.1.0/24" },
                { "10.0.0.1", "10.0.0.1/32" },
                { "0.0.0.0/0", "0.0.0.0/0" },
                { "127.0.0.0/8", "127.0.0.0/8" },
                { "172.16.0.0/12", "172.16.0.0/12" },
                { "::1", "::1/128" },
                { "::/0", "::/0" },
                { "fd00::/8", "fd00::/8" },
                { "2001:db8:0:0::/64", "2001:db8::/64" },
                { "FE80::/10", "fe80::/10" },
                { "::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104" },
                { "10.1.2.3/32", "10.1.2.3/32" },
                { "10.1.2.2/31", "10.1.2.2/31" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                InAddrPrefix p;
                const char *error = NULL;
                char buf[IN_ADDR_PREFIX_STRING_MAX];
                if (in_addr_prefix_from_string(cases[i].in, &p, &error) < 0)
                        TEST_FAIL("%s refused: %s", cases[i].in, error);
                ASSERT_OK(in_addr_prefix_to_string(&p, buf, sizeof(buf)));
                ASSERT_STREQ(buf, cases[i].out);
        }
}

static void test_parse_bad(void) {
        static const struct {
                const char *in, *error;
        } cases[] = {
                { "", "empty network" },
                { "/24", "no address before the '/'" },
                { "192.168.1.0/", "no prefix length after the '/'" },
                { "192.168.1.0/33", "prefix length of an IPv4 network is at most 32" },
                { "192.168.1.0/999999999999", "prefix length of an IPv4 network is at most 32" },
                { "fd00::/129", "prefix length of an IPv6 network is at most 128" },
                { "192.168.1.0/-1", "prefix length is not a decimal number" },
                { "192.168.1.0/+8", "prefix length is not a decimal number" },
                { "192.168.1.0/ 24", "prefix length is not a decimal number" },
                { "192.168.1.0/24/8", "prefix length is not a decimal number" },
                { "192.168.1.1/24", "address has bits set beyond the prefix length (not the network's address)" },
                { "fd00::1/8", "address has bits set beyond the prefix length (not the network's address)" },
                { "192.168.1", "not an IPv4 (a.b.c.d) or IPv6 address" },
                { "192.168.1.256", "not an IPv4 (a.b.c.d) or IPv6 address" },
                { "010.0.0.0/8", "not an IPv4 (a.b.c.d) or IPv6 address" },
                { " 10.0.0.0/8", "not an IPv4 (a.b.c.d) or IPv6 address" },
                { "localhost", "not an IPv4 (a.b.c.d) or IPv6 address" },
                { "fe80::1%eth0", "not an IPv4 (a.b.c.d) or IPv6 address" },
                { "1:2:3:4:5:6:7:8:9", "not an IPv4 (a.b.c.d) or IPv6 address" },
                { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/8", "address too long" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                InAddrPrefix p;
                const char *error = NULL;
                if (in_addr_prefix_from_string(cases[i].in, &p, &error) != -EINVAL)
                        TEST_FAIL("'%s' accepted", cases[i].in);
                if (!error || !streq(error, cases[i].error))
                        TEST_FAIL("'%s': error '%s', expected '%s'", cases[i].in, error ?: "(null)", cases[i].error);
        }
}

static void test_match(void) {
        ASSERT_TRUE(match4("192.168.1.0/24", "192.168.1.0"));
        ASSERT_TRUE(match4("192.168.1.0/24", "192.168.1.255"));
        ASSERT_FALSE(match4("192.168.1.0/24", "192.168.2.1"));
        ASSERT_FALSE(match4("192.168.1.0/24", "192.168.0.255"));
        ASSERT_TRUE(match4("172.16.0.0/12", "172.31.255.255"));
        ASSERT_FALSE(match4("172.16.0.0/12", "172.32.0.0"));
        ASSERT_TRUE(match4("0.0.0.0/0", "8.8.8.8"));
        ASSERT_TRUE(match4("10.0.0.1", "10.0.0.1"));
        ASSERT_FALSE(match4("10.0.0.1", "10.0.0.2"));
        ASSERT_TRUE(match4("10.1.2.2/31", "10.1.2.3"));
        ASSERT_FALSE(match4("10.1.2.2/31", "10.1.2.4"));

        ASSERT_TRUE(match6("fd00::/8", "fd12:3456::1"));
        ASSERT_FALSE(match6("fd00::/8", "fe80::1"));
        ASSERT_TRUE(match6("fe80::/10", "febf::1"));
        ASSERT_FALSE(match6("fe80::/10", "fec0::1"));
        ASSERT_TRUE(match6("::1", "::1"));
        ASSERT_FALSE(match6("::1", "::2"));
        ASSERT_TRUE(match6("::/0", "2001:db8::1"));

        /* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d: IPv4 prefixes apply to them. */
        ASSERT_TRUE(match6("127.0.0.0/8", "::ffff:127.0.0.1"));
        ASSERT_FALSE(match6("10.0.0.0/8", "::ffff:127.0.0.1"));
        /* The families do not mix otherwise. */
        ASSERT_FALSE(match6("0.0.0.0/0", "::1"));
        ASSERT_FALSE(match4("::/0", "127.0.0.1"));
        ASSERT_FALSE(match6("0.0.0.0/0", "::127.0.0.1"));

        /* A truncated or foreign socket address matches nothing. */
        InAddrPrefix p;
        const char *error;
        struct sockaddr_in sa = v4("10.0.0.1");
        struct sockaddr un = { .sa_family = AF_UNIX };
        ASSERT_OK(in_addr_prefix_from_string("0.0.0.0/0", &p, &error));
        ASSERT_FALSE(in_addr_prefix_match(&p, (struct sockaddr *) &sa, sizeof(sa) - 1));
        ASSERT_FALSE(in_addr_prefix_match(&p, &un, sizeof(un)));
        ASSERT_FALSE(in_addr_prefix_match(&p, NULL, 0));
}

static void test_server_allow(void) {
        _cleanup_(server_freep) Server *s = NULL;
        EmuConfig c;
        const char *error = NULL;
        struct sockaddr_in a = v4("192.168.7.9"), b = v4("10.9.9.9"), lo = v4("127.0.0.1");
        struct sockaddr_in6 a6 = v6("fd00::5"), mapped = v6("::ffff:192.168.7.10");

        emu_config_init(&c);
        ASSERT_OK(server_new(NULL, &s));
        /* No list: every client that reaches the socket. */
        ASSERT_TRUE(server_peer_allowed(s, (struct sockaddr *) &b, sizeof(b)));

        ASSERT_OK(emu_config_add_allow(&c, "192.168.7.0/24", &error));
        ASSERT_OK(emu_config_add_allow(&c, "127.0.0.1  fd00::/8", &error)); /* allow= takes a list */
        ASSERT_EQ(c.n_allow, 3);
        ASSERT_ERR(emu_config_add_allow(&c, "10.0.0.0/33", &error), EINVAL);
        ASSERT_STREQ(error, "prefix length of an IPv4 network is at most 32");
        ASSERT_ERR(emu_config_add_allow(&c, "   ", &error), EINVAL);
        ASSERT_STREQ(error, "empty network");

        ASSERT_OK(server_set_allow(s, c.allow, c.n_allow));
        ASSERT_TRUE(server_peer_allowed(s, (struct sockaddr *) &a, sizeof(a)));
        ASSERT_TRUE(server_peer_allowed(s, (struct sockaddr *) &lo, sizeof(lo)));
        ASSERT_TRUE(server_peer_allowed(s, (struct sockaddr *) &a6, sizeof(a6)));
        ASSERT_TRUE(server_peer_allowed(s, (struct sockaddr *) &mapped, sizeof(mapped)));
        ASSERT_FALSE(server_peer_allowed(s, (struct sockaddr *) &b, sizeof(b)));

        ASSERT_OK(server_set_allow(s, NULL, 0));
        ASSERT_TRUE(server_peer_allowed(s, (struct sockaddr *) &b, sizeof(b)));

        ASSERT_EQ(s->max_connections, SERVER_DEFAULT_MAX_CONNECTIONS);
        ASSERT_ERR(server_set_max_connections(s, 0), ERANGE);
        ASSERT_ERR(server_set_max_connections(s, SERVER_MAX_CONNECTIONS + 1), ERANGE);
        ASSERT_OK(server_set_max_connections(s, 3));
        ASSERT_EQ(s->max_connections, 3);
        emu_config_done(&c);
}

static void test_config_keys(void) {
        EmuConfig c;
        const char *error = NULL;
        unsigned line = 0;

        emu_config_init(&c);
        ASSERT_OK(emu_config_load_string(&c,
                                         "[emulator]\n"
                                         "allow = 10.0.0.0/8 ::1\n"
                                         "allow = 192.168.0.0/16\n"
                                         "image-dir = /var/lib/drowse\n"
                                         "max-connections = 16\n",
                                         &line, &error));
        ASSERT_EQ(c.n_allow, 3);
        ASSERT_EQ(c.n_image_dirs, 1);
        ASSERT_STREQ(c.image_dirs[0], "/var/lib/drowse");
        ASSERT_EQ(c.max_connections, 16);
        emu_config_done(&c);

        emu_config_init(&c);
        ASSERT_ERR(emu_config_load_string(&c, "[emulator]\nallow = 10.0.0.1/8\n", &line, &error), EINVAL);
        ASSERT_EQ(line, 2);
        ASSERT_STREQ(error, "address has bits set beyond the prefix length (not the network's address)");
        ASSERT_ERR(emu_config_load_string(&c, "[emulator]\nimage-dir = images\n", &line, &error), EINVAL);
        ASSERT_STREQ(error, "an image directory must be an absolute path");
        ASSERT_ERR(emu_config_set_max_connections(&c, "0", &error), EINVAL);
        ASSERT_ERR(emu_config_set_max_connections(&c, "-1", &error), EINVAL);
        ASSERT_ERR(emu_config_set_max_connections(&c, "4097", &error), EINVAL);
        ASSERT_ERR(emu_config_set_max_connections(&c, "99999999999999999999", &error), EINVAL);
        ASSERT_STREQ(error, "max-connections expects a number from 1 to 4096");

        /* follow-symlinks is a disk option in both syntaxes. */
        ASSERT_OK(emu_config_add_disk_spec(&c, "/tmp/x.img,size=1M,follow-symlinks", &error));
        ASSERT_TRUE(c.disks[0].follow_symlinks);
        ASSERT_OK(emu_config_add_disk_spec(&c, "/tmp/y.img,size=1M", &error));
        ASSERT_FALSE(c.disks[1].follow_symlinks);
        emu_config_done(&c);
}

static char dir[] = "/tmp/drowse-test-access-XXXXXX";

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        return remove(path) < 0 ? -1 : 0;
}

static void cleanup(void) {
        (void) image_set_create_directories(NULL, 0);
        (void) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_image_dirs(void) {
        char allowed[128], other[128], path[256], link[256];
        Image *img = NULL;

        if (!mkdtemp(dir))
                TEST_FAIL("mkdtemp: %m");
        atexit(cleanup);
        snprintf(allowed, sizeof(allowed), "%s/allowed", dir);
        snprintf(other, sizeof(other), "%s/other", dir);
        ASSERT_OK(mkdir(allowed, 0700));
        ASSERT_OK(mkdir(other, 0700));
        mkdir(strcat(strcpy(path, allowed), "/sub"), 0700);

        /* Nothing configured: anywhere, as before. */
        snprintf(path, sizeof(path), "%s/free.img", other);
        ASSERT_OK(image_check_create_path(path));

        ASSERT_ERR(image_set_create_directories((const char *[]) { "relative" }, 1), EINVAL);
        snprintf(path, sizeof(path), "%s/missing", dir);
        ASSERT_ERR(image_set_create_directories((const char *[]) { path }, 1), ENOENT);
        snprintf(path, sizeof(path), "%s/free.img", other);
        ASSERT_OK(image_open(path, 1 << 20, false, &img)); /* a file, for the next check */
        img = image_free(img);
        ASSERT_ERR(image_set_create_directories((const char *[]) { path }, 1), ENOTDIR);
        /* A failed call keeps the previous (empty) list. */
        snprintf(path, sizeof(path), "%s/free2.img", other);
        ASSERT_OK(image_check_create_path(path));

        ASSERT_OK(image_set_create_directories((const char *[]) { allowed }, 1));

        /* Inside, also in a subdirectory. */
        snprintf(path, sizeof(path), "%s/new.img", allowed);
        ASSERT_OK(image_open(path, 1 << 20, false, &img));
        img = image_free(img);
        snprintf(path, sizeof(path), "%s/sub/new.img", allowed);
        ASSERT_OK(image_open(path, 1 << 20, false, &img));
        img = image_free(img);

        /* Outside: refused, nothing created. */
        snprintf(path, sizeof(path), "%s/new.img", other);
        ASSERT_ERR(image_open(path, 1 << 20, false, &img), EPERM);
        ASSERT_TRUE(access(path, F_OK) < 0);
        /* ".." and a symlinked directory resolve to where they really are. */
        snprintf(path, sizeof(path), "%s/../other/dotdot.img", allowed);
        ASSERT_ERR(image_open(path, 1 << 20, false, &img), EPERM);
        snprintf(link, sizeof(link), "%s/escape", allowed);
        ASSERT_OK(symlink(other, link));
        snprintf(path, sizeof(path), "%s/escape/via-link.img", allowed);
        ASSERT_ERR(image_open(path, 1 << 20, false, &img), EPERM);
        /* A prefix of the name is not a parent: /x/allowed-not is not inside /x/allowed. */
        snprintf(path, sizeof(path), "%s-not/x.img", allowed);
        ASSERT_ERR(image_check_create_path(path), EPERM);
        /* A directory that does not exist is not inside anything. */
        snprintf(path, sizeof(path), "%s/nodir/x.img", allowed);
        ASSERT_ERR(image_check_create_path(path), EPERM);

        /* Existing images open anywhere: the rule is about creating files. */
        snprintf(path, sizeof(path), "%s/free.img", other);
        ASSERT_OK(image_open(path, 1 << 20, false, &img));
        img = image_free(img);

        /* Cleared: anywhere again. */
        ASSERT_OK(image_set_create_directories(NULL, 0));
        snprintf(path, sizeof(path), "%s/new.img", other);
        ASSERT_OK(image_check_create_path(path));
}

static void test_symlink_option(void) {
        char target[256], link[256];
        Image *img = NULL;

        snprintf(target, sizeof(target), "%s/allowed/new.img", dir);
        snprintf(link, sizeof(link), "%s/link.img", dir);
        ASSERT_OK(symlink(target, link));
        ASSERT_ERR(image_open_full(link, 0, &(const ImageOptions) {}, &img), ELOOP);
        ASSERT_OK(image_open_full(link, 0, &(const ImageOptions) { .follow_symlinks = true }, &img));
        image_free(img);
}

TEST_MAIN(TEST(test_parse_good), TEST(test_parse_bad), TEST(test_match), TEST(test_server_allow),
          TEST(test_config_keys), TEST(test_image_dirs), TEST(test_symlink_option));
