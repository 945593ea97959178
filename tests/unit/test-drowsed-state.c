/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* drowsed's state files: the round trip, every truncation and corruption of a file refused with a
 * reason (never a crash), and crash consistency: a child process saving records in a tight loop,
 * with the real atomic-save code, is killed with SIGKILL at random moments; after each kill every
 * state file must still parse, and hold one of the states that were written. */

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "record.h"
#include "tests.h"

static DeviceRecord *make(const char *key, uint64_t n) {
        DeviceRecord *r = malloc(sizeof(DeviceRecord));
        ASSERT_TRUE(r);
        record_init(r, key);
        snprintf(r->id, sizeof(r->id), "0525:a4a5");
        snprintf(r->serial, sizeof(r->serial), "SER-%" PRIu64, n % 3);
        snprintf(r->name, sizeof(r->name), "1-1");
        r->quarantined = n % 2;
        snprintf(r->quarantine_reason, sizeof(r->quarantine_reason), "resume storm: %" PRIu64 " resumes", n);
        r->strikes = (unsigned) (n % 5);
        r->backoff = 4;
        r->stats.resumes = n;
        r->stats.suspended_ms = n * 1000;
        r->stats.active_ms = n * 10;
        r->stats.decisions = n / 7;
        for (uint64_t i = 0; i < n % 300; i++)
                stats_history_add(&r->stats, 1700000000000ULL + i, i % 5 ? HISTORY_STATE : HISTORY_DECISION,
                                  i % 2 ? "active" : "suspended", i % 3 ? "" : "because\nof a storm");
        return r;
}

static void test_round_trip(void) {
        char dir[] = "/tmp/test-drowsed-state.XXXXXX", path[512], name[256], error[256];
        DeviceRecord *r = make("0525:a4a5:SER-1", 250), *l = malloc(sizeof(DeviceRecord));

        ASSERT_TRUE(l);
        record_init(l, "");
        ASSERT_TRUE(mkdtemp(dir));
        ASSERT_OK(record_save(r, dir));
        record_file_name(r->key, name, sizeof(name));
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        ASSERT_OK(record_load(path, l, error, sizeof(error)));
        ASSERT_STREQ(l->key, r->key);
        /* Only as much history as a device has: none without entries, grown by doubling. */
        DeviceRecord *small = make("k", 9), *none = make("k", 0);
        ASSERT_EQ(small->stats.history_cap, 16);
        ASSERT_EQ(none->stats.history_cap, 0);
        ASSERT_TRUE(!none->stats.history);
        ASSERT_EQ(stats_history_get(&small->stats, 8)->t_ms, 1700000000008ULL);
        record_free(small);
        record_free(none);
        ASSERT_STREQ(l->serial, r->serial);
        ASSERT_EQ(l->quarantined, r->quarantined);
        ASSERT_STREQ(l->quarantine_reason, r->quarantine_reason);
        ASSERT_EQ(l->stats.resumes, 250);
        ASSERT_EQ(l->stats.history_len, r->stats.history_len);
        ASSERT_STREQ(stats_history_get(&l->stats, 0)->reason, "because of a storm");
        ASSERT_EQ(stats_history_get(&l->stats, 5)->kind, HISTORY_DECISION);

        /* Keys with slashes and odd bytes map to one safe file name; long ones are shortened. */
        record_file_name("1209:0001@/devices/platform/vhci_hcd.0/usb3/3-1", name, sizeof(name));
        ASSERT_STREQ(name, "1209_3a0001_40_2fdevices_2fplatform_2fvhci_5fhcd.0_2fusb3_2f3-1.state");
        record_file_name("..", name, sizeof(name));
        ASSERT_STREQ(name, "_2e..state");
        char long_key[RECORD_KEY_MAX];
        memset(long_key, '/', sizeof(long_key) - 1);
        long_key[sizeof(long_key) - 1] = 0;
        record_file_name(long_key, name, sizeof(name));
        ASSERT_TRUE(strlen(name) < 255);

        /* Every truncation of the file is refused with a reason. */
        FILE *f = fopen(path, "re");
        char *text = NULL;
        size_t size = 0;
        ASSERT_TRUE(f && getdelim(&text, &size, 0, f) > 0);
        fclose(f);
        size = strlen(text);
        record_done(l);
        for (size_t cut = 0; cut < size; cut++) {
                error[0] = 0;
                ASSERT_ERR(record_parse(text, cut, l, error, sizeof(error)), EBADMSG);
                ASSERT_TRUE(error[0]);
        }
        ASSERT_OK(record_parse(text, size, l, error, sizeof(error)));
        record_done(l);
        /* Flipped bytes: refused or parsed, never a crash or a leak (ASan watches). */
        for (size_t i = 0; i < size; i += 7) {
                char saved = text[i];
                text[i] = (char) (saved ^ 0x5a);
                (void) record_parse(text, size, l, error, sizeof(error));
                record_done(l);
                text[i] = saved;
        }
        ASSERT_ERR(record_parse("drowse-state 1\nkey=x\nbackoff=0\nend\n", 35, l, error, sizeof(error)), EBADMSG);
        ASSERT_ERR(record_parse("drowse-state 1\nkey=x\nresumes=-1\nend\n", 36, l, error, sizeof(error)), EBADMSG);
        ASSERT_ERR(record_parse("drowse-state 1\nkey=x\nend\nkey=y\n", 31, l, error, sizeof(error)), EBADMSG);
        ASSERT_TRUE(strstr(error, "after the end marker"));
        ASSERT_ERR(record_parse("drowse-state 1\nkey=x\nhistory=1 state\nend\n", 41, l, error, sizeof(error)),
                   EBADMSG);
        ASSERT_OK(record_parse("drowse-state 1\nkey=x\nend\n", 25, l, error, sizeof(error)));
        ASSERT_EQ(l->backoff, 1);
        free(text);
        record_free(r);
        record_free(l);
        snprintf(path, sizeof(path), "rm -rf '%s'", dir);
        ASSERT_EQ(system(path), 0);
}

static void writer(const char *dir) {
        static const char *const keys[] = { "0525:a4a5:SER-1", "1209:0003:kbd", "1209:0001@/devices/x/3-1" };
        for (uint64_t n = 1;; n++) {
                DeviceRecord *r = make(keys[n % 3], n);
                if (record_save(r, dir) < 0)
                        _exit(2);
                record_free(r);
        }
}

static unsigned check_dir(const char *dir) {
        DIR *d = opendir(dir);
        unsigned n = 0;

        ASSERT_TRUE(d);
        for (struct dirent *de; (de = readdir(d));) {
                char path[512], error[256];
                DeviceRecord *r;
                size_t l = strlen(de->d_name);
                if (l < 7 || !streq(de->d_name + l - 6, ".state") || de->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
                ASSERT_TRUE((r = malloc(sizeof(DeviceRecord))));
                record_init(r, "");
                if (record_load(path, r, error, sizeof(error)) < 0)
                        TEST_FAIL("%s does not parse after SIGKILL: %s", path, error);
                /* One consistent write: the fields all come from the same n. */
                ASSERT_EQ(r->stats.suspended_ms, r->stats.resumes * 1000);
                ASSERT_EQ(r->stats.history_len, MIN(r->stats.resumes % 300, STATS_HISTORY_MAX));
                record_free(r);
                n++;
        }
        closedir(d);
        return n;
}

static void test_crash_consistency(void) {
        char dir[] = "/var/tmp/test-drowsed-state.XXXXXX", cmd[600];
        unsigned files = 0;

        /* /var/tmp: a disk-backed file system where the platform has one, so fsync() means something. */
        if (!mkdtemp(dir))
                ASSERT_TRUE(mkdtemp(strcpy(dir, "/tmp/test-drowsed-state.XXXXXX")));
        srand((unsigned) time(NULL));
        for (int round = 0; round < 40; round++) {
                pid_t pid = fork();
                int status;
                ASSERT_TRUE(pid >= 0);
                if (pid == 0)
                        writer(dir);
                /* 0-40 ms: the kill lands anywhere in the write, fsync, rename, directory fsync. */
                usleep((useconds_t) (rand() % 40000));
                ASSERT_OK(kill(pid, SIGKILL));
                ASSERT_EQ(waitpid(pid, &status, 0), pid);
                ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
                files = check_dir(dir);
        }
        fprintf(stderr, "%u state files intact after 40 SIGKILLs\n", files);
        ASSERT_TRUE(files >= 1);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        ASSERT_EQ(system(cmd), 0);
}

TEST_MAIN(TEST(test_round_trip), TEST(test_crash_consistency))
