/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* drowse.conf parsing (errors name file:line) and rule matching. */

#include <stdio.h>
#include <sys/stat.h>

#include "policy.h"
#include "tests.h"

static int load(Policy *p, const char *text, char *error) {
        policy_init(p);
        return policy_load_string(p, "test.conf", text, error, POLICY_ERROR_MAX);
}

static void test_defaults(void) {
        Policy p;
        char error[POLICY_ERROR_MAX];

        ASSERT_OK(load(&p, "", error));
        ASSERT_TRUE(p.autosuspend);
        ASSERT_EQ(p.delay_ms, 2000);
        ASSERT_EQ(p.disk_delay_ms, 2000);
        ASSERT_EQ(p.media_poll, MEDIA_POLL_OFF);
        ASSERT_EQ(p.vhci_root_ports, 1);
        ASSERT_EQ(p.n_rules, 0);
        policy_done(&p);

        ASSERT_OK(load(&p,
                       "# comment\n"
                       "[defaults]\n"
                       "autosuspend = no\n"
                       "delay_ms = 1500\n"
                       "disk-delay-ms = 500\n"
                       "media-poll = keep\n"
                       "disk-runtime-start-stop = yes\n"
                       "vhci-root-ports = 0\n",
                       error));
        ASSERT_FALSE(p.autosuspend);
        ASSERT_EQ(p.delay_ms, 1500);
        ASSERT_EQ(p.disk_delay_ms, 500);
        ASSERT_EQ(p.media_poll, MEDIA_POLL_KEEP);
        ASSERT_EQ(p.disk_runtime_start_stop, TRISTATE_YES);
        ASSERT_EQ(p.vhci_root_ports, 0);
        policy_done(&p);
}

static void test_rules(void) {
        Policy p;
        char error[POLICY_ERROR_MAX];

        ASSERT_OK(load(&p,
                       "[rule sticks]\n"
                       "match-id = 0525:*\n"
                       "match-class = 08\n"
                       "delay-ms = 100\n"
                       "wakeup = disabled\n"
                       "\n"
                       "[rule keyboard]\n"
                       "match-class = 0x03\n"
                       "autosuspend = yes\n"
                       "persist = no\n",
                       error));
        ASSERT_EQ(p.n_rules, 2);
        ASSERT_STREQ(p.rules[0].name, "sticks");
        ASSERT_STREQ(p.rules[0].match_id, "0525:*");
        ASSERT_EQ(p.rules[0].match_class, 8);
        ASSERT_EQ(p.rules[0].delay_ms, 100);
        ASSERT_EQ(p.rules[0].wakeup, WAKEUP_DISABLED);
        ASSERT_EQ(p.rules[0].line, 2);
        ASSERT_STREQ(p.rules[1].name, "keyboard");
        ASSERT_EQ(p.rules[1].match_class, 3);
        ASSERT_EQ(p.rules[1].autosuspend, TRISTATE_YES);
        ASSERT_EQ(p.rules[1].persist, TRISTATE_NO);
        policy_done(&p);
}

static void expect_error(const char *text, const char *message) {
        Policy p;
        char error[POLICY_ERROR_MAX] = "";

        if (load(&p, text, error) >= 0)
                TEST_FAIL("accepted: %s", text);
        if (!strstr(error, message))
                TEST_FAIL("error \"%s\" does not contain \"%s\"", error, message);
        policy_done(&p);
}

static void test_errors(void) {
        expect_error("[defaults]\nautosuspend = maybe\n", "test.conf:2: autosuspend expects yes or no");
        expect_error("[defaults]\n\nfrobnicate = 1\n", "test.conf:3: unknown key in [defaults]");
        expect_error("autosuspend = yes\n", "test.conf:1: key outside a section");
        expect_error("[bogus]\nx = 1\n", "test.conf:2: unknown section");
        expect_error("[rule a]\nmatch-id = 12345:1\n", "test.conf:2: match-id expects");
        expect_error("[rule a]\nmatch-id = zzzz:0001\n", "test.conf:2: match-id");
        expect_error("[rule a]\nmatch-class = 100\n", "test.conf:2: match-class");
        expect_error("[rule a]\ndelay-ms = -5\n", "test.conf:2: delay-ms");
        expect_error("[rule a]\ndelay-ms = 12x\n", "test.conf:2: delay-ms");
        expect_error("[rule a]\nwakeup = sometimes\n", "test.conf:2: wakeup expects");
        expect_error("[rule a]\nmatch-vhci = perhaps\n", "test.conf:2: match-vhci");
        expect_error("[rule a]\nbogus = 1\n", "test.conf:2: unknown key in [rule]");
        expect_error("[rule a]\nautosuspend = no\n[rule b]\nautosuspend = no\n[rule a]\nautosuspend = yes\n",
                     "test.conf:6: duplicate rule name");
        expect_error("[defaults]\nthis line is not ini\n", "test.conf:2: syntax error");
        expect_error("[defaults]\nvhci-root-ports = -1\n", "test.conf:2: vhci-root-ports");
        /* Longer than inih's line buffer: one error on the right line, not pieces counted as lines. */
        char long_text[2048];
        snprintf(long_text, sizeof(long_text), "[defaults]\n\nautosuspend = %01000d\ndelay-ms = x\n", 0);
        expect_error(long_text, "test.conf:3: line too long");
        /* The first error wins even when later lines are bad too. */
        expect_error("[defaults]\nautosuspend = x\ndelay-ms = y\n", "test.conf:2:");
        expect_error("[protect]\nstorm-backoff = 1\n", "test.conf:2: storm-backoff expects");
        expect_error("[protect]\nstorm-resumes-per-minute = -3\n", "test.conf:2: storm-resumes-per-minute");
        expect_error("[protect]\nquarantine-after = many\n", "test.conf:2: quarantine-after");
        expect_error("[protect]\nre-enumerate-window = 5s\n", "test.conf:2: re-enumerate-window");
        expect_error("[protect]\ndrift = ignore\n", "test.conf:2: drift expects reapply or yield");
        expect_error("[protect]\nsample-min-ms = 10\n", "test.conf:2: sample-min-ms");
        expect_error("[protect]\nbogus = 1\n", "test.conf:2: unknown key in [protect]");
}

static void test_protect(void) {
        Policy p;
        char error[POLICY_ERROR_MAX];

        ASSERT_OK(load(&p, "", error));
        ASSERT_EQ(p.protect.storm_resumes_per_minute, 60);
        ASSERT_EQ(p.protect.storm_backoff, 4);
        ASSERT_EQ(p.protect.quarantine_after, 3);
        ASSERT_EQ(p.protect.re_enumerate_window_s, 5);
        ASSERT_EQ(p.protect.drift, DRIFT_REAPPLY);
        ASSERT_EQ(p.protect.sample_min_ms, 1000);
        ASSERT_EQ(p.protect.sample_max_ms, 30000);
        policy_done(&p);
        ASSERT_OK(load(&p,
                       "[protect]\nstorm-resumes-per-minute = 0\nstorm_backoff = 8\nquarantine-after = 0\n"
                       "re-enumerate-window = 30\ndrift = yield\nsample-min-ms = 250\nsample-max-ms = 60000\n",
                       error));
        ASSERT_EQ(p.protect.storm_resumes_per_minute, 0);
        ASSERT_EQ(p.protect.storm_backoff, 8);
        ASSERT_EQ(p.protect.quarantine_after, 0);
        ASSERT_EQ(p.protect.re_enumerate_window_s, 30);
        ASSERT_EQ(p.protect.drift, DRIFT_YIELD);
        ASSERT_EQ(p.protect.sample_min_ms, 250);
        ASSERT_EQ(p.protect.sample_max_ms, 60000);
        policy_done(&p);
}

static void test_files(void) {
        char dir[] = "/tmp/test-drowsed-policy.XXXXXX", path[256], error[POLICY_ERROR_MAX] = "";
        Policy p;
        FILE *f;

        ASSERT_TRUE(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/drowse.conf.d", dir);
        ASSERT_OK(mkdir(path, 0755));

        snprintf(path, sizeof(path), "%s/drowse.conf", dir);
        ASSERT_TRUE((f = fopen(path, "w")));
        fputs("[defaults]\ndelay-ms = 1000\n[rule main]\nmatch-id = 1209:0001\nautosuspend = no\n", f);
        fclose(f);
        snprintf(path, sizeof(path), "%s/drowse.conf.d/20-b.conf", dir);
        ASSERT_TRUE((f = fopen(path, "w")));
        fputs("[rule b]\nmatch-serial = X*\n", f);
        fclose(f);
        snprintf(path, sizeof(path), "%s/drowse.conf.d/10-a.conf", dir);
        ASSERT_TRUE((f = fopen(path, "w")));
        fputs("[defaults]\ndelay-ms = 3000\n[rule a]\nmatch-driver = usb-storage\n", f);
        fclose(f);
        snprintf(path, sizeof(path), "%s/drowse.conf.d/ignored.txt", dir);
        ASSERT_TRUE((f = fopen(path, "w")));
        fputs("garbage\n", f);
        fclose(f);

        snprintf(path, sizeof(path), "%s/drowse.conf", dir);
        policy_init(&p);
        ASSERT_OK(policy_load(&p, path, error, sizeof(error)));
        ASSERT_EQ(p.delay_ms, 3000); /* the drop-in came later */
        ASSERT_EQ(p.n_rules, 3);
        ASSERT_STREQ(p.rules[0].name, "main");
        ASSERT_STREQ(p.rules[1].name, "a"); /* 10-a before 20-b */
        ASSERT_STREQ(p.rules[2].name, "b");
        ASSERT_TRUE(strstr(p.rules[1].file, "10-a.conf") != NULL);
        policy_done(&p);

        /* A bad drop-in names itself and its line. */
        snprintf(path, sizeof(path), "%s/drowse.conf.d/30-bad.conf", dir);
        ASSERT_TRUE((f = fopen(path, "w")));
        fputs("[rule c]\n\n\nmatch-removable = sometimes\n", f);
        fclose(f);
        snprintf(path, sizeof(path), "%s/drowse.conf", dir);
        policy_init(&p);
        ASSERT_TRUE(policy_load(&p, path, error, sizeof(error)) < 0);
        if (!strstr(error, "30-bad.conf:4: match-removable"))
                TEST_FAIL("error: %s", error);
        policy_done(&p);

        /* No main file at all is the built-in defaults. */
        snprintf(path, sizeof(path), "%s/nonexistent.conf", dir);
        policy_init(&p);
        ASSERT_OK(policy_load(&p, path, error, sizeof(error)));
        policy_done(&p);

        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        ASSERT_EQ(system(cmd), 0);
}

static DeviceFacts storage_facts(void) {
        return (DeviceFacts) {
                .vendor = 0x0525, .product = 0xa4a5, .serial = "XYZ123", .sysname = "1-1.2",
                .devpath = "/devices/platform/dummy_hcd.0/usb1/1-1/1-1.2", .device_class = 0,
                .interface_class = { 8 }, .interface_driver = { "usb-storage" }, .n_interfaces = 1,
                .removable = true,
        };
}

static void test_matching(void) {
        Policy p;
        char error[POLICY_ERROR_MAX];
        DeviceFacts f = storage_facts();
        Decision d;

        ASSERT_OK(load(&p,
                       "[rule nomatch]\nmatch-id = 0525:0001\nautosuspend = no\n"
                       "[rule byserial]\nmatch-serial = XYZ*\nmatch-removable = yes\nmatch-vhci = no\n"
                       "delay-ms = 42\n"
                       "[rule later]\nmatch-class = 08\nautosuspend = no\n",
                       error));
        ASSERT_FALSE(rule_matches(&p.rules[0], &f));
        ASSERT_TRUE(rule_matches(&p.rules[1], &f));
        ASSERT_TRUE(rule_matches(&p.rules[2], &f));
        policy_decide(&p, &f, &d);
        /* First match wins: byserial, which only sets the delay. */
        ASSERT_TRUE(d.autosuspend);
        ASSERT_EQ(d.delay_ms, 42);
        ASSERT_STREQ(d.rule->name, "byserial");
        ASSERT_TRUE(strstr(d.reason, "rule byserial (test.conf:5)") != NULL);

        f.vhci = true;
        policy_decide(&p, &f, &d);
        ASSERT_FALSE(d.autosuspend);
        ASSERT_STREQ(d.rule->name, "later");
        ASSERT_TRUE(strstr(d.reason, "excluded by rule later") != NULL);
        policy_done(&p);

        ASSERT_OK(load(&p,
                       "[rule drv]\nmatch-driver = usb-st*\nmatch-devpath = 1-1.*\ndelay-ms = 7\n"
                       "[rule path]\nmatch-devpath = /devices/platform/dummy_hcd.0/*\ndelay-ms = 8\n",
                       error));
        ASSERT_TRUE(rule_matches(&p.rules[0], &f));
        ASSERT_TRUE(rule_matches(&p.rules[1], &f));
        f.interface_driver[0] = "uas";
        ASSERT_FALSE(rule_matches(&p.rules[0], &f));
        f.devpath = "/devices/pci0000:00/usb1/1-1/1-1.2";
        ASSERT_FALSE(rule_matches(&p.rules[1], &f));
        policy_done(&p);
}

static void test_builtin_exclusions(void) {
        Policy p;
        char error[POLICY_ERROR_MAX];
        DeviceFacts f = storage_facts();
        Decision d;

        ASSERT_OK(load(&p, "", error));
        policy_decide(&p, &f, &d);
        ASSERT_TRUE(d.autosuspend);
        ASSERT_TRUE(d.rule == NULL);

        static const int excluded[] = { 0x01, 0x03, 0x07, 0x0b, 0x0e, 0xe0 };
        for (size_t i = 0; i < sizeof(excluded) / sizeof(excluded[0]); i++) {
                f.interface_class[0] = excluded[i];
                policy_decide(&p, &f, &d);
                ASSERT_FALSE(d.autosuspend);
                ASSERT_TRUE(strstr(d.reason, "excluded by default") != NULL);
        }
        /* hwdb says this HID device is safe. */
        f.interface_class[0] = 0x03;
        f.id_autosuspend = "1";
        policy_decide(&p, &f, &d);
        ASSERT_TRUE(d.autosuspend);
        ASSERT_TRUE(strstr(d.reason, "ID_AUTOSUSPEND") != NULL);
        f.id_autosuspend = NULL;
        f.id_persist = "0";
        policy_decide(&p, &f, &d);
        ASSERT_EQ(d.persist, TRISTATE_NO);
        policy_done(&p);

        /* A rule overrides the exclusion, and a device class counts too. */
        ASSERT_OK(load(&p, "[rule hid-ok]\nmatch-class = 03\nautosuspend = yes\n", error));
        f.interface_class[0] = 0x08;
        f.device_class = 0x03;
        policy_decide(&p, &f, &d);
        ASSERT_TRUE(d.autosuspend);
        ASSERT_STREQ(d.rule->name, "hid-ok");
        policy_done(&p);

        /* autosuspend = no in [defaults]. */
        ASSERT_OK(load(&p, "[defaults]\nautosuspend = no\n", error));
        f = storage_facts();
        policy_decide(&p, &f, &d);
        ASSERT_FALSE(d.autosuspend);
        policy_done(&p);
}

static void test_profiles(void) {
        Policy p;
        char error[POLICY_ERROR_MAX];
        DeviceFacts f = storage_facts();
        Decision d;

        ASSERT_OK(load(&p,
                       "[defaults]\ndelay-ms = 2000\nusb-power-supplies = yes\n"
                       "[profile battery]\nautosuspend = yes\ndelay-ms = 100\n"
                       "[profile ac]\nautosuspend = no\n"
                       "[rule bat]\nmatch-power = battery\nmatch-id = 0525:*\ndisk-delay-ms = 7\n",
                       error));
        ASSERT_TRUE(p.usb_power_supplies);
        f.power = POWER_AC;
        policy_decide(&p, &f, &d);
        ASSERT_FALSE(d.autosuspend);
        ASSERT_TRUE(strstr(d.reason, "disabled by [profile ac]") != NULL);
        ASSERT_TRUE(d.rule == NULL);
        f.power = POWER_BATTERY;
        policy_decide(&p, &f, &d);
        ASSERT_TRUE(d.autosuspend);
        ASSERT_EQ(d.delay_ms, 100);
        ASSERT_EQ(d.disk_delay_ms, 7);
        ASSERT_STREQ(d.rule->name, "bat");
        policy_done(&p);

        expect_error("[profile solar]\ndelay-ms = 1\n", "test.conf:2: unknown profile");
        expect_error("[profile ac]\nmedia-poll = off\n", "test.conf:2: unknown key in [profile]");
        expect_error("[rule r]\nmatch-power = mains\n", "test.conf:2: match-power expects ac or battery");
        expect_error("[defaults]\nusb-power-supplies = sometimes\n", "test.conf:2: usb-power-supplies");
}

static void test_string_tables(void) {
        ASSERT_STREQ(media_poll_to_string(MEDIA_POLL_OFF), "off");
        ASSERT_EQ(media_poll_from_string("keep"), MEDIA_POLL_KEEP);
        ASSERT_EQ(wakeup_from_string("enabled"), WAKEUP_ENABLED);
        ASSERT_TRUE(wakeup_from_string("x") < 0);
        ASSERT_TRUE(wakeup_to_string(_WAKEUP_MAX) == NULL);
}

TEST_MAIN(TEST(test_defaults), TEST(test_rules), TEST(test_errors), TEST(test_files), TEST(test_matching),
          TEST(test_builtin_exclusions), TEST(test_profiles), TEST(test_string_tables), TEST(test_protect))
