/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "scsi.h"
#include "tests.h"

#define N_BLOCKS 2048
#define CDB(...) (const uint8_t[]) { __VA_ARGS__ }, sizeof((const uint8_t[]) { __VA_ARGS__ })

static char dir[] = "/tmp/drowse-test-scsi-XXXXXX";
static unsigned n_images;

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        return remove(path) < 0 ? -1 : 0;
}

static void cleanup(void) {
        (void) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *new_image_path(void) {
        static char buf[256];
        if (n_images++ == 0) {
                if (!mkdtemp(dir))
                        TEST_FAIL("mkdtemp: %m");
                atexit(cleanup);
        }
        snprintf(buf, sizeof(buf), "%s/%u.img", dir, n_images);
        return buf;
}

static ScsiLun *new_lun_full(const ScsiLunConfig *cfg, uint64_t blocks, bool image_read_only) {
        Image *img = NULL;
        ScsiLun *l = NULL;
        const char *p = new_image_path();
        if (image_read_only) {
                ASSERT_OK(image_open(p, blocks * 512, false, &img));
                img = image_free(img);
        }
        ASSERT_OK(image_open(p, blocks * 512, image_read_only, &img));
        ASSERT_OK(scsi_lun_new(cfg, img, &l));
        return l;
}

static const ScsiLunConfig test_config = {
        .vendor = "drowse", .product = "Test Disk", .revision = "1.0", .serial = "SN0001",
};

/* A LUN with the power-on UNIT ATTENTION already consumed. */
static ScsiLun *new_lun(const ScsiLunConfig *cfg) {
        ScsiLun *l = new_lun_full(cfg ?: &test_config, N_BLOCKS, false);
        ScsiCommand c;
        ASSERT_OK(scsi_lun_command_begin(l, CDB(0x00, 0, 0, 0, 0, 0), &c));
        ASSERT_EQ(scsi_lun_command_end(l, &c), SCSI_STATUS_CHECK_CONDITION);
        return l;
}

/* Runs a whole command the way a transport would, moving data in odd-sized chunks. For data-in,
 * *len gets what was produced; for data-out, *len bytes of data are offered. */
static int run(ScsiLun *l, const uint8_t *cdb, size_t cdb_len, uint8_t *data, size_t *len) {
        ScsiCommand c;
        size_t moved = 0;

        ASSERT_OK(scsi_lun_command_begin(l, cdb, cdb_len, &c));
        if (c.direction == SCSI_DIRECTION_IN) {
                ASSERT_TRUE(data && len);
                for (;;) {
                        ssize_t n = scsi_lun_command_read(l, &c, data + moved, MIN((size_t) 700, *len - moved));
                        if (n <= 0)
                                break;
                        moved += (size_t) n;
                }
                if (!c.failed)
                        ASSERT_EQ(moved, c.length);
        } else if (c.direction == SCSI_DIRECTION_OUT) {
                ASSERT_TRUE(data && len);
                ASSERT_TRUE(*len >= c.length);
                while (moved < c.length) {
                        size_t n = MIN((size_t) 700, (size_t) c.length - moved);
                        if (scsi_lun_command_write(l, &c, data + moved, n) < 0)
                                break;
                        moved += n;
                }
        }
        if (len)
                *len = moved;
        return scsi_lun_command_end(l, &c);
}

static int run_nodata(ScsiLun *l, const uint8_t *cdb, size_t cdb_len) {
        uint8_t buf[4096];
        size_t len = sizeof(buf);
        return run(l, cdb, cdb_len, buf, &len);
}

#define ASSERT_SENSE(l, k, a, q)                                                                   \
        do {                                                                                       \
                uint8_t _s_[18];                                                                   \
                size_t _n_ = sizeof(_s_);                                                          \
                ASSERT_EQ(run((l), CDB(0x03, 0, 0, 0, 18, 0), _s_, &_n_), SCSI_STATUS_GOOD);       \
                ASSERT_EQ(_n_, 18);                                                                \
                ASSERT_EQ(_s_[2], (k));                                                            \
                ASSERT_EQ(_s_[12], (a));                                                           \
                ASSERT_EQ(_s_[13], (q));                                                           \
        } while (0)

#define ASSERT_CHECK(l, cdb, k, a, q)                                                              \
        do {                                                                                       \
                ASSERT_EQ(run_nodata((l), cdb), SCSI_STATUS_CHECK_CONDITION);                      \
                ASSERT_SENSE((l), (k), (a), (q));                                                  \
        } while (0)

static void test_inquiry_standard(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun_full(&test_config, N_BLOCKS, false);
        static const uint8_t expected[36] = {
                0x00, 0x00, 0x06, 0x02, 0x1f, 0x00, 0x00, 0x00,
                'd', 'r', 'o', 'w', 's', 'e', ' ', ' ',
                'T', 'e', 's', 't', ' ', 'D', 'i', 's', 'k', ' ', ' ', ' ', ' ', ' ', ' ', ' ',
                '1', '.', '0', ' ',
        };
        uint8_t buf[256];
        size_t len = sizeof(buf);

        /* INQUIRY does not consume the power-on UNIT ATTENTION. */
        ASSERT_EQ(run(l, CDB(0x12, 0, 0, 0, 36, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 36);
        ASSERT_MEMEQ(buf, expected, 36);

        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x12, 0, 0, 0, 5, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 5);
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x12, 0, 0, 0, 255, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 36);
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x12, 0, 0, 0, 0, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 0);

        ASSERT_EQ(run_nodata(l, CDB(0x12, 0, 0x80, 0, 36, 0)), SCSI_STATUS_CHECK_CONDITION); /* page w/o EVPD */
        ASSERT_EQ(run_nodata(l, CDB(0x12, 0x02, 0, 0, 36, 0)), SCSI_STATUS_CHECK_CONDITION); /* CmdDt */
        ASSERT_SENSE(l, 0x05, 0x24, 0x00);

        ScsiLunConfig removable = test_config;
        removable.removable = true;
        _cleanup_(scsi_lun_freep) ScsiLun *r = new_lun_full(&removable, N_BLOCKS, false);
        len = sizeof(buf);
        ASSERT_EQ(run(r, CDB(0x12, 0, 0, 0, 36, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(buf[1], 0x80);
}

static void test_inquiry_vpd(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);
        uint8_t buf[256];
        size_t len = sizeof(buf);

        ASSERT_EQ(run(l, CDB(0x12, 1, 0x00, 0, 255, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 9);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) { 0, 0, 0, 5, 0x00, 0x80, 0x83, 0xb0, 0xb1 }), 9);

        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x12, 1, 0x80, 0, 255, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 10);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) { 0, 0x80, 0, 6, 'S', 'N', '0', '0', '0', '1' }), 10);

        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x12, 1, 0x83, 0, 255, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 4 + 12 + 4 + 8 + 16 + 6);
        ASSERT_EQ(get_be16(buf + 2), len - 4);
        ASSERT_MEMEQ(buf + 4, ((const uint8_t[]) { 0x01, 0x03, 0x00, 0x08 }), 4);
        ASSERT_EQ(buf[8] >> 4, 3); /* NAA locally assigned */
        ASSERT_MEMEQ(buf + 16, ((const uint8_t[]) { 0x02, 0x01, 0x00, 30 }), 4);
        ASSERT_MEMEQ(buf + 20, "drowse  Test Disk       SN0001", 30);

        /* Stable for one identity, different for another serial. */
        uint8_t naa[8];
        memcpy(naa, buf + 8, 8);
        ScsiLunConfig other = test_config;
        other.serial = "SN0002";
        _cleanup_(scsi_lun_freep) ScsiLun *l2 = new_lun(&other);
        len = sizeof(buf);
        ASSERT_EQ(run(l2, CDB(0x12, 1, 0x83, 0, 255, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_TRUE(memcmp(naa, buf + 8, 8) != 0);

        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x12, 1, 0xb0, 0, 255, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 64);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) { 0, 0xb0, 0, 0x3c, 0, 0, 0, 1 }), 8);

        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x12, 1, 0xb1, 0, 255, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 64);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) { 0, 0xb1, 0, 0x3c, 0, 1 }), 6);

        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x12, 1, 0xb1, 0, 4, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 4);

        ASSERT_CHECK(l, CDB(0x12, 1, 0x89, 0, 255, 0), 0x05, 0x24, 0x00); /* ATA information: not ours */
}

static void test_unit_attention_once(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun_full(&test_config, N_BLOCKS, false);
        uint8_t buf[64];
        size_t len = sizeof(buf);

        ASSERT_EQ(run(l, CDB(0x12, 0, 0, 0, 36, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(run_nodata(l, CDB(0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0)), SCSI_STATUS_GOOD);
        ASSERT_CHECK(l, CDB(0x00, 0, 0, 0, 0, 0), 0x06, 0x29, 0x00);
        ASSERT_EQ(run_nodata(l, CDB(0x00, 0, 0, 0, 0, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_stats(l)->unit_attentions, 1);

        /* After a reset: also reported by a REQUEST SENSE, and then it is gone (SPC-4). */
        scsi_lun_reset(l);
        ASSERT_SENSE(l, 0x06, 0x29, 0x00);
        ASSERT_EQ(run_nodata(l, CDB(0x00, 0, 0, 0, 0, 0)), SCSI_STATUS_GOOD);
        ASSERT_SENSE(l, 0x00, 0x00, 0x00);

        /* Even an unsupported opcode reports the UNIT ATTENTION first. */
        scsi_lun_reset(l);
        ASSERT_CHECK(l, CDB(0xa1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 0x06, 0x29, 0x00);
        ASSERT_CHECK(l, CDB(0xa1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 0x05, 0x20, 0x00);
}

static void test_request_sense_formats(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);
        uint8_t buf[128];
        size_t len;

        static const uint8_t fixed[18] = { 0x70, 0, 0x05, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x20, 0x00, 0, 0, 0, 0 };
        static const uint8_t descriptor[8] = { 0x72, 0x05, 0x20, 0x00, 0, 0, 0, 0 };

        ASSERT_EQ(run_nodata(l, CDB(0xff, 0, 0, 0, 0, 0)), SCSI_STATUS_CHECK_CONDITION);
        len = sizeof(buf); /* usb-storage's SANE_SENSE auto-sense asks for 96 */
        ASSERT_EQ(run(l, CDB(0x03, 0, 0, 0, 96, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 18);
        ASSERT_MEMEQ(buf, fixed, 18);
        /* Returned means cleared. */
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x03, 0, 0, 0, 18, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(buf[2], 0);
        ASSERT_EQ(buf[12], 0);

        ASSERT_EQ(run_nodata(l, CDB(0xff, 0, 0, 0, 0, 0)), SCSI_STATUS_CHECK_CONDITION);
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x03, 1, 0, 0, 252, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 8);
        ASSERT_MEMEQ(buf, descriptor, 8);

        /* Truncated by the allocation length, still cleared. */
        ASSERT_EQ(run_nodata(l, CDB(0xff, 0, 0, 0, 0, 0)), SCSI_STATUS_CHECK_CONDITION);
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x03, 0, 0, 0, 8, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 8);
        ASSERT_MEMEQ(buf, fixed, 8);
        ASSERT_SENSE(l, 0, 0, 0);

        /* Any other command in between drops the sense (no autosense in BOT). */
        ASSERT_EQ(run_nodata(l, CDB(0xff, 0, 0, 0, 0, 0)), SCSI_STATUS_CHECK_CONDITION);
        ASSERT_EQ(run_nodata(l, CDB(0x00, 0, 0, 0, 0, 0)), SCSI_STATUS_GOOD);
        ASSERT_SENSE(l, 0, 0, 0);
}

static void test_read_capacity(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);
        uint8_t buf[64];
        size_t len = sizeof(buf);

        ASSERT_EQ(run(l, CDB(0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 8);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) { 0, 0, 0x07, 0xff, 0, 0, 0x02, 0 }), 8);

        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 32);
        uint8_t expected[32] = { 0, 0, 0, 0, 0, 0, 0x07, 0xff, 0, 0, 0x02, 0 };
        ASSERT_MEMEQ(buf, expected, 32);

        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 12);

        ASSERT_CHECK(l, CDB(0x9e, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0), 0x05, 0x24, 0x00);
        ASSERT_CHECK(l, CDB(0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0), 0x05, 0x24, 0x00); /* LBA without PMI */
}

static void test_read_capacity_huge(void) {
        /* 2^32 + 8 blocks (a sparse 2 TiB file): RC10 saturates so the kernel asks RC16. */
        uint64_t blocks = (UINT64_C(1) << 32) + 8;
        Image *img = NULL;
        ScsiLun *raw = NULL;
        if (image_open(new_image_path(), blocks * 512, false, &img) < 0) {
                fprintf(stderr, "(skipped: no 2 TiB sparse files here)\n");
                return;
        }
        ASSERT_OK(scsi_lun_new(&test_config, img, &raw));
        _cleanup_(scsi_lun_freep) ScsiLun *l = raw;
        uint8_t buf[64];
        size_t len = sizeof(buf);

        ASSERT_EQ(run_nodata(l, CDB(0x00, 0, 0, 0, 0, 0)), SCSI_STATUS_CHECK_CONDITION);
        ASSERT_EQ(run(l, CDB(0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) { 0xff, 0xff, 0xff, 0xff, 0, 0, 0x02, 0 }), 8);
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(get_be64(buf), blocks - 1);

        /* READ(16) of the last block, beyond 32-bit LBAs. */
        len = sizeof(buf);
        uint8_t cdb[16] = { 0x88 };
        put_be64(cdb + 2, blocks - 1);
        put_be32(cdb + 10, 1);
        uint8_t block[512];
        len = sizeof(block);
        ASSERT_EQ(run(l, cdb, 16, block, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 512);
        /* MODE SENSE(6) block descriptor saturates. */
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x1a, 0, 0x08, 0, 64, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_MEMEQ(buf + 4, ((const uint8_t[]) { 0, 0xff, 0xff, 0xff, 0, 0, 2, 0 }), 8);
}

static void fill_pattern(uint8_t *buf, size_t len, uint8_t seed) {
        for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t) (seed + i * 31 + i / 512);
}

static void test_read_write(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);
        static uint8_t data[256 * 512], back[256 * 512];
        size_t len;

        /* WRITE(10) 3 blocks at LBA 10, fed in 700-byte pieces. */
        fill_pattern(data, 3 * 512, 1);
        len = 3 * 512;
        ASSERT_EQ(run(l, CDB(0x2a, 0, 0, 0, 0, 10, 0, 0, 3, 0), data, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 3 * 512);
        ASSERT_OK(image_read(scsi_lun_get_image(l), 10 * 512, back, 3 * 512));
        ASSERT_MEMEQ(data, back, 3 * 512);

        /* Read back with READ(6), (10), (12), (16). */
        len = sizeof(back);
        ASSERT_EQ(run(l, CDB(0x08, 0, 0, 10, 3, 0), back, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 3 * 512);
        ASSERT_MEMEQ(data, back, len);
        len = sizeof(back);
        ASSERT_EQ(run(l, CDB(0x28, 0, 0, 0, 0, 11, 0, 0, 2, 0), back, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 2 * 512);
        ASSERT_MEMEQ(data + 512, back, len);
        len = sizeof(back);
        ASSERT_EQ(run(l, CDB(0xa8, 0, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0), back, &len), SCSI_STATUS_GOOD);
        ASSERT_MEMEQ(data + 1024, back, 512);
        len = sizeof(back);
        ASSERT_EQ(run(l, CDB(0x88, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 3, 0, 0), back, &len), SCSI_STATUS_GOOD);
        ASSERT_MEMEQ(data, back, 3 * 512);

        /* WRITE(6) with transfer length 0 means 256 blocks; WRITE(12), WRITE(16). */
        fill_pattern(data, sizeof(data), 7);
        len = sizeof(data);
        ASSERT_EQ(run(l, CDB(0x0a, 0, 0x01, 0x00, 0, 0), data, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 256 * 512);
        ASSERT_OK(image_read(scsi_lun_get_image(l), 256 * 512, back, 256 * 512));
        ASSERT_MEMEQ(data, back, 256 * 512);
        len = 512;
        ASSERT_EQ(run(l, CDB(0xaa, 0, 0, 0, 0x07, 0xff, 0, 0, 0, 1, 0, 0), data, &len), SCSI_STATUS_GOOD);
        len = 1024;
        ASSERT_EQ(run(l, CDB(0x8a, 0, 0, 0, 0, 0, 0, 0, 0x07, 0xfe, 0, 0, 0, 2, 0, 0), data, &len),
                  SCSI_STATUS_GOOD);

        /* Transfer length 0 moves nothing and succeeds. */
        ASSERT_EQ(run_nodata(l, CDB(0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0)), SCSI_STATUS_GOOD);

        const ScsiLunStats *st = scsi_lun_get_stats(l);
        ASSERT_EQ(st->writes, 4);
        ASSERT_EQ(st->blocks_written, 3 + 256 + 1 + 2);
        ASSERT_EQ(st->reads, 5);
        ASSERT_EQ(st->blocks_read, 3 + 2 + 1 + 3);
        ASSERT_EQ(st->flushes, 0); /* WCE=1, no FUA */

        /* Protection information requested: not formatted with it. */
        ASSERT_CHECK(l, CDB(0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0), 0x05, 0x24, 0x00);
}

static void test_lba_out_of_range(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);

        ASSERT_CHECK(l, CDB(0x28, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0), 0x05, 0x21, 0x00);
        ASSERT_CHECK(l, CDB(0x28, 0, 0, 0, 0x08, 0x00, 0, 0, 0, 0), 0x05, 0x21, 0x00);
        ASSERT_CHECK(l, CDB(0x2a, 0, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0), 0x05, 0x21, 0x00);
        ASSERT_CHECK(l, CDB(0x8a, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, 0, 0), 0x05, 0x21,
                     0x00);
        ASSERT_CHECK(l, CDB(0x08, 0, 0x08, 0x00, 1, 0), 0x05, 0x21, 0x00);
        ASSERT_CHECK(l, CDB(0x2f, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0), 0x05, 0x21, 0x00);
        ASSERT_CHECK(l, CDB(0x35, 0, 0, 0, 0x08, 0x00, 0, 0, 0, 0), 0x05, 0x21, 0x00);
        uint8_t block[512];
        size_t len = sizeof(block);
        ASSERT_EQ(run(l, CDB(0x28, 0, 0, 0, 0x07, 0xff, 0, 0, 1, 0), block, &len), SCSI_STATUS_GOOD);
}

static void test_invalid_opcodes(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);

        /* smartctl's ATA PASS-THROUGH(16) IDENTIFY and (12) */
        ASSERT_CHECK(l, CDB(0x85, 0x08, 0x0e, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0xec, 0), 0x05, 0x20, 0x00);
        ASSERT_CHECK(l, CDB(0xa1, 0x08, 0x0e, 0, 1, 0, 0, 0, 0, 0xec, 0, 0), 0x05, 0x20, 0x00);
        ASSERT_CHECK(l, CDB(0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0), 0x05, 0x20, 0x00); /* REPORT OPCODES */
        ASSERT_CHECK(l, CDB(0x4d, 0, 0, 0, 0, 0, 0, 0, 0xff, 0), 0x05, 0x20, 0x00);          /* LOG SENSE */
        ASSERT_CHECK(l, CDB(0xff), 0x05, 0x20, 0x00);
        /* CDB shorter than its opcode, NACA set. */
        ASSERT_CHECK(l, CDB(0x28, 0, 0, 0, 0, 0), 0x05, 0x24, 0x00);
        ASSERT_CHECK(l, CDB(0x00, 0, 0, 0, 0, 0x04), 0x05, 0x24, 0x00);
        ASSERT_EQ(scsi_opcode_to_string(0x85), NULL);
        ASSERT_STREQ(scsi_opcode_to_string(0x28), "READ(10)");

        /* A longer CDB than needed (usb-storage pads some to 12) is fine. */
        ASSERT_EQ(run_nodata(l, CDB(0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)), SCSI_STATUS_GOOD);
}

static void test_read_only(void) {
        ScsiLunConfig cfg = test_config;
        cfg.read_only = true;
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(&cfg);
        _cleanup_(scsi_lun_freep) ScsiLun *li = new_lun_full(&test_config, N_BLOCKS, true);
        uint8_t buf[256];
        size_t len;

        ASSERT_CHECK(l, CDB(0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0), 0x07, 0x27, 0x00);
        ASSERT_CHECK(l, CDB(0x0a, 0, 0, 0, 1, 0), 0x07, 0x27, 0x00);
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x1a, 0, 0x3f, 0, 192, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(buf[2], 0x90);

        ASSERT_EQ(run_nodata(li, CDB(0x00, 0, 0, 0, 0, 0)), SCSI_STATUS_CHECK_CONDITION);
        ASSERT_CHECK(li, CDB(0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0), 0x07, 0x27, 0x00);
        len = sizeof(buf);
        ASSERT_EQ(run(li, CDB(0x1a, 0, 0x3f, 0, 192, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(buf[2], 0x90);
        ASSERT_EQ(run_nodata(li, CDB(0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0)), SCSI_STATUS_GOOD);
}

static const uint8_t mode_sense_3f[44] = {
        0x2b, 0x00, 0x10, 0x08,                         /* header: WP=0, DPOFUA */
        0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x02, 0x00, /* 2048 blocks of 512 */
        0x08, 0x12, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* caching, WCE */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x0a, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* control */
};

static void test_mode_sense(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);
        uint8_t buf[256];
        size_t len;

        /* What sd sends (sd_read_write_protect_flag, sd_read_cache_type with skip_ms_page_8). */
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x1a, 0, 0x3f, 0, 192, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 44);
        ASSERT_MEMEQ(buf, mode_sense_3f, 44);

        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x1a, 0, 0x3f, 0, 4, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 4);
        ASSERT_MEMEQ(buf, mode_sense_3f, 4);

        len = sizeof(buf); /* all subpages */
        ASSERT_EQ(run(l, CDB(0x1a, 0, 0x3f, 0xff, 192, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 44);

        /* DBD, page 8 only. */
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x1a, 0x08, 0x08, 0, 255, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 24);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) { 23, 0, 0x10, 0 }), 4);
        ASSERT_MEMEQ(buf + 4, mode_sense_3f + 12, 20);

        /* Changeable: only WCE. Default: WCE. */
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x1a, 0x08, 0x40 | 0x3f, 0, 255, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 4 + 20 + 12);
        ASSERT_EQ(buf[4 + 2], 0x04);
        for (size_t i = 4 + 3; i < len; i++)
                if (i != 4 + 20 && i != 4 + 21)
                        ASSERT_EQ(buf[i], 0);
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x1a, 0x08, 0x80 | 0x08, 0, 255, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(buf[4 + 2], 0x04);

        ASSERT_CHECK(l, CDB(0x1a, 0, 0xc0 | 0x3f, 0, 255, 0), 0x05, 0x39, 0x00); /* saved */
        ASSERT_CHECK(l, CDB(0x1a, 0, 0x1c, 0, 255, 0), 0x05, 0x24, 0x00);        /* no such page */
        ASSERT_CHECK(l, CDB(0x1a, 0, 0x08, 0x01, 255, 0), 0x05, 0x24, 0x00);     /* subpage */

        /* MODE SENSE(10), with a long LBA block descriptor. */
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x5a, 0x10, 0x3f, 0, 0, 0, 0, 0, 0xff, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 8 + 16 + 32);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) { 0, 54, 0, 0x10, 0x01, 0, 0, 16 }), 8);
        ASSERT_MEMEQ(buf + 8, ((const uint8_t[]) { 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0, 2, 0 }), 16);
        ASSERT_MEMEQ(buf + 24, mode_sense_3f + 12, 32);
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x5a, 0x00, 0x0a, 0, 0, 0, 0, 0, 0xff, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 8 + 8 + 12);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) { 0, 26, 0, 0x10, 0, 0, 0, 8 }), 8);
}

static void test_mode_select(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);
        uint8_t buf[256], param[64];
        size_t len;

        /* What sd's cache_type store does: MODE SENSE page 8 with DBD, flip WCE, MODE SELECT with PF. */
        memset(param, 0, sizeof(param));
        memcpy(param + 4, mode_sense_3f + 12, 20);
        param[4 + 2] = 0x00; /* WCE off */
        len = 24;
        ASSERT_EQ(run(l, CDB(0x15, 0x10, 0, 0, 24, 0), param, &len), SCSI_STATUS_GOOD);
        ASSERT_FALSE(scsi_lun_get_write_cache(l));
        len = sizeof(buf);
        ASSERT_EQ(run(l, CDB(0x1a, 0x08, 0x08, 0, 255, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(buf[4 + 2], 0x00);

        /* With WCE off every WRITE is flushed. */
        uint8_t block[512] = {};
        len = 512;
        ASSERT_EQ(run(l, CDB(0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0), block, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_stats(l)->flushes, 1);

        /* RCD is not changeable: rejected, and nothing of the list applied. */
        param[4 + 2] = 0x04 | 0x01;
        len = 24;
        ASSERT_EQ(run(l, CDB(0x15, 0x10, 0, 0, 24, 0), param, &len), SCSI_STATUS_CHECK_CONDITION);
        ASSERT_SENSE(l, 0x05, 0x26, 0x00);
        ASSERT_FALSE(scsi_lun_get_write_cache(l));

        /* MODE SELECT(10) with a block descriptor of the same size, WCE back on. */
        memset(param, 0, sizeof(param));
        param[7] = 8;
        put_be32(param + 8 + 4, 512);
        memcpy(param + 16, mode_sense_3f + 12, 20);
        len = 36;
        ASSERT_EQ(run(l, CDB(0x55, 0x10, 0, 0, 0, 0, 0, 0, 36, 0), param, &len), SCSI_STATUS_GOOD);
        ASSERT_TRUE(scsi_lun_get_write_cache(l));
        /* Another block size: no. */
        put_be32(param + 8 + 4, 4096);
        len = 36;
        ASSERT_EQ(run(l, CDB(0x55, 0x10, 0, 0, 0, 0, 0, 0, 36, 0), param, &len), SCSI_STATUS_CHECK_CONDITION);
        ASSERT_SENSE(l, 0x05, 0x26, 0x00);

        /* Unknown page, truncated page, SP=1, PF=0. */
        memset(param, 0, sizeof(param));
        param[4] = 0x1c;
        param[5] = 10;
        len = 16;
        ASSERT_EQ(run(l, CDB(0x15, 0x10, 0, 0, 16, 0), param, &len), SCSI_STATUS_CHECK_CONDITION);
        ASSERT_SENSE(l, 0x05, 0x26, 0x00);
        memcpy(param + 4, mode_sense_3f + 12, 20);
        len = 14;
        ASSERT_EQ(run(l, CDB(0x15, 0x10, 0, 0, 14, 0), param, &len), SCSI_STATUS_CHECK_CONDITION);
        ASSERT_SENSE(l, 0x05, 0x1a, 0x00);
        ASSERT_CHECK(l, CDB(0x15, 0x11, 0, 0, 24, 0), 0x05, 0x24, 0x00);
        ASSERT_CHECK(l, CDB(0x15, 0x00, 0, 0, 24, 0), 0x05, 0x24, 0x00);
        /* Control page unchanged is accepted. */
        memset(param, 0, sizeof(param));
        memcpy(param + 4, mode_sense_3f + 32, 12);
        len = 16;
        ASSERT_EQ(run(l, CDB(0x15, 0x10, 0, 0, 16, 0), param, &len), SCSI_STATUS_GOOD);
        /* Zero-length parameter list: nothing to do. */
        ASSERT_EQ(run_nodata(l, CDB(0x15, 0x10, 0, 0, 0, 0)), SCSI_STATUS_GOOD);
}

static void test_sync_cache_and_fua(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);
        uint8_t block[512] = {};
        size_t len;

        ASSERT_EQ(run_nodata(l, CDB(0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(run_nodata(l, CDB(0x35, 0x02, 0, 0, 0, 0, 0, 0x08, 0, 0)), SCSI_STATUS_GOOD); /* IMMED */
        ASSERT_EQ(run_nodata(l, CDB(0x91, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_stats(l)->flushes, 3);
        len = 512;
        ASSERT_EQ(run(l, CDB(0x2a, 0x08, 0, 0, 0, 0, 0, 0, 1, 0), block, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_stats(l)->flushes, 4);
        len = 512;
        ASSERT_EQ(run(l, CDB(0x2a, 0x00, 0, 0, 0, 0, 0, 0, 1, 0), block, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_stats(l)->flushes, 4);
}

static void test_verify(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);

        ASSERT_EQ(run_nodata(l, CDB(0x2f, 0, 0, 0, 0, 0, 0, 0x08, 0, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(run_nodata(l, CDB(0x8f, 0, 0, 0, 0, 0, 0, 0, 0x07, 0xff, 0, 0, 0, 1, 0, 0)), SCSI_STATUS_GOOD);
        ASSERT_CHECK(l, CDB(0x2f, 0x02, 0, 0, 0, 0, 0, 0, 1, 0), 0x05, 0x24, 0x00); /* BYTCHK */
        ASSERT_CHECK(l, CDB(0x8f, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00, 0, 0, 0, 1, 0, 0), 0x05, 0x21, 0x00);
}

static void test_start_stop(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);
        uint8_t block[512];
        size_t len;

        /* Stop: media access and TUR are NOT READY, "initializing command required", which makes sd send
         * a START. REQUEST SENSE with nothing pending describes the state. Non-media commands work. */
        ASSERT_EQ(run_nodata(l, CDB(0x1b, 0, 0, 0, 0x00, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_power_state(l), SCSI_POWER_STOPPED);
        ASSERT_CHECK(l, CDB(0x00, 0, 0, 0, 0, 0), 0x02, 0x04, 0x02);
        ASSERT_CHECK(l, CDB(0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0), 0x02, 0x04, 0x02);
        ASSERT_CHECK(l, CDB(0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0), 0x02, 0x04, 0x02);
        ASSERT_SENSE(l, 0x02, 0x04, 0x02);
        ASSERT_EQ(run_nodata(l, CDB(0x12, 0, 0, 0, 36, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(run_nodata(l, CDB(0x1a, 0, 0x3f, 0, 192, 0)), SCSI_STATUS_GOOD);
        /* Start (with IMMED). */
        ASSERT_EQ(run_nodata(l, CDB(0x1b, 0x01, 0, 0, 0x01, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_power_state(l), SCSI_POWER_ACTIVE);
        ASSERT_EQ(run_nodata(l, CDB(0x00, 0, 0, 0, 0, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_stats(l)->stops, 1);
        ASSERT_EQ(scsi_lun_get_stats(l)->starts, 1);
        ASSERT_EQ(scsi_lun_get_stats(l)->flushes, 1); /* the stop flushed */
        /* NO_FLUSH */
        ASSERT_EQ(run_nodata(l, CDB(0x1b, 0, 0, 0, 0x04, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_stats(l)->flushes, 1);
        ASSERT_EQ(run_nodata(l, CDB(0x1b, 0, 0, 0, 0x01, 0)), SCSI_STATUS_GOOD);

        /* Power conditions (sd's start_stop_pwr_cond: ACTIVE / STANDBY) keep the unit ready. */
        ASSERT_EQ(run_nodata(l, CDB(0x1b, 0, 0, 0, 0x30, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_power_state(l), SCSI_POWER_STANDBY);
        ASSERT_EQ(run_nodata(l, CDB(0x00, 0, 0, 0, 0, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_power_state(l), SCSI_POWER_STANDBY);
        len = sizeof(block);
        ASSERT_EQ(run(l, CDB(0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0), block, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_power_state(l), SCSI_POWER_ACTIVE);
        ASSERT_EQ(run_nodata(l, CDB(0x1b, 0, 0, 0, 0x20, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_power_state(l), SCSI_POWER_IDLE);
        ASSERT_EQ(run_nodata(l, CDB(0x1b, 0, 0, 0, 0x10, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(scsi_lun_get_power_state(l), SCSI_POWER_ACTIVE);
        ASSERT_CHECK(l, CDB(0x1b, 0, 0, 0, 0x50, 0), 0x05, 0x24, 0x00);
        /* LOEJ on a fixed disk. */
        ASSERT_CHECK(l, CDB(0x1b, 0, 0, 0, 0x02, 0), 0x05, 0x24, 0x00);
        ASSERT_STREQ(scsi_power_state_to_string(scsi_lun_get_power_state(l)), "active");
}

static void test_removable(void) {
        ScsiLunConfig cfg = test_config;
        cfg.removable = true;
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(&cfg);

        ASSERT_EQ(run_nodata(l, CDB(0x1e, 0, 0, 0, 0x01, 0)), SCSI_STATUS_GOOD);
        ASSERT_TRUE(scsi_lun_get_medium_prevented(l));
        ASSERT_CHECK(l, CDB(0x1b, 0, 0, 0, 0x02, 0), 0x05, 0x53, 0x02);
        ASSERT_TRUE(scsi_lun_get_medium_present(l));
        ASSERT_EQ(run_nodata(l, CDB(0x1e, 0, 0, 0, 0x00, 0)), SCSI_STATUS_GOOD);
        ASSERT_FALSE(scsi_lun_get_medium_prevented(l));
        ASSERT_CHECK(l, CDB(0x1e, 0, 0, 0, 0x02, 0), 0x05, 0x24, 0x00);

        ASSERT_EQ(run_nodata(l, CDB(0x1b, 0, 0, 0, 0x02, 0)), SCSI_STATUS_GOOD); /* eject */
        ASSERT_FALSE(scsi_lun_get_medium_present(l));
        ASSERT_CHECK(l, CDB(0x00, 0, 0, 0, 0, 0), 0x02, 0x3a, 0x00);
        ASSERT_CHECK(l, CDB(0x1b, 0, 0, 0, 0x01, 0), 0x02, 0x3a, 0x00); /* start without load */
        ASSERT_EQ(run_nodata(l, CDB(0x1b, 0, 0, 0, 0x03, 0)), SCSI_STATUS_GOOD); /* load */
        ASSERT_CHECK(l, CDB(0x00, 0, 0, 0, 0, 0), 0x06, 0x28, 0x00);
        ASSERT_EQ(run_nodata(l, CDB(0x00, 0, 0, 0, 0, 0)), SCSI_STATUS_GOOD);
}

static void test_report_luns(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);
        uint8_t buf[256];
        size_t len = sizeof(buf);

        scsi_lun_set_address(l, 1, 3);
        ASSERT_EQ(run(l, CDB(0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 32);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) { 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                               0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0 }), 32);
        ASSERT_CHECK(l, CDB(0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0), 0x05, 0x24, 0x00);
        ASSERT_CHECK(l, CDB(0xa0, 0, 0x10, 0, 0, 0, 0, 0, 1, 0, 0, 0), 0x05, 0x24, 0x00);
}

static void test_no_lun(void) {
        uint8_t buf[64];
        size_t len = sizeof(buf);

        ASSERT_EQ(run(NULL, CDB(0x12, 0, 0, 0, 36, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_EQ(len, 36);
        ASSERT_EQ(buf[0], 0x7f);
        len = sizeof(buf);
        ASSERT_EQ(run(NULL, CDB(0x03, 0, 0, 0, 18, 0), buf, &len), SCSI_STATUS_GOOD);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) { 0x70, 0, 0x05, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x25, 0 }), 14);
        ASSERT_EQ(run_nodata(NULL, CDB(0x00, 0, 0, 0, 0, 0)), SCSI_STATUS_CHECK_CONDITION);
        ASSERT_EQ(run_nodata(NULL, CDB(0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0)), SCSI_STATUS_CHECK_CONDITION);
}

static void test_media_errors(void) {
        /* The image shrinks under us: the read hits EOF, which is an unrecovered read error. */
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);
        uint8_t buf[4096];
        size_t len = sizeof(buf);

        int fd = open(image_get_path(scsi_lun_get_image(l)), O_WRONLY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(ftruncate(fd, 1024));
        close(fd);
        ASSERT_EQ(run(l, CDB(0x28, 0, 0, 0, 0, 0, 0, 0, 4, 0), buf, &len), SCSI_STATUS_CHECK_CONDITION);
        ASSERT_SENSE(l, 0x03, 0x11, 0x00);

        /* A write the file system refuses (here: over RLIMIT_FSIZE) is a WRITE ERROR. In a child, so the
         * limit does not leak into the other tests. */
        pid_t pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                signal(SIGXFSZ, SIG_IGN);
                struct rlimit rl = { 1024, 1024 };
                ASSERT_OK(setrlimit(RLIMIT_FSIZE, &rl));
                memset(buf, 1, sizeof(buf));
                len = 2048;
                ASSERT_EQ(run(l, CDB(0x2a, 0, 0, 0, 0, 4, 0, 0, 4, 0), buf, &len), SCSI_STATUS_CHECK_CONDITION);
                ASSERT_SENSE(l, 0x03, 0x0c, 0x00);
                _exit(0);
        }
        int status;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static int fault_on_read(ScsiLun *l, const uint8_t *cdb, size_t len, ScsiSense *ret, void *userdata) {
        unsigned *calls = userdata;
        (*calls)++;
        if (cdb[0] != 0x28)
                return 0;
        *ret = (ScsiSense) { SCSI_SENSE_ABORTED_COMMAND, 0x47, 0x00 };
        return 1;
}

static void test_fault_hook(void) {
        _cleanup_(scsi_lun_freep) ScsiLun *l = new_lun(NULL);
        unsigned calls = 0;

        scsi_lun_set_fault_hook(l, fault_on_read, &calls);
        ASSERT_CHECK(l, CDB(0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0), 0x0b, 0x47, 0x00);
        ASSERT_EQ(run_nodata(l, CDB(0x00, 0, 0, 0, 0, 0)), SCSI_STATUS_GOOD);
        ASSERT_EQ(calls, 3); /* READ, REQUEST SENSE, TUR */
        scsi_lun_set_fault_hook(l, NULL, NULL);
}

static void test_config_validation(void) {
        Image *img = NULL;
        ScsiLun *l = NULL;

        ASSERT_OK(image_open(new_image_path(), 4096, false, &img));
        ASSERT_ERR(scsi_lun_new(&(const ScsiLunConfig) { .vendor = "123456789" }, img, &l), EINVAL);
        ASSERT_ERR(scsi_lun_new(&(const ScsiLunConfig) { .serial = "a\nb" }, img, &l), EINVAL);
        ASSERT_OK(scsi_lun_new(NULL, img, &l));
        scsi_lun_free(l);
        ASSERT_TRUE(scsi_lun_free(NULL) == NULL);
        ASSERT_STREQ(scsi_sense_key_to_string(SCSI_SENSE_UNIT_ATTENTION), "unit-attention");
        ASSERT_EQ(scsi_direction_from_string("out"), SCSI_DIRECTION_OUT);
}

TEST_MAIN(TEST(test_inquiry_standard), TEST(test_inquiry_vpd), TEST(test_unit_attention_once),
          TEST(test_request_sense_formats), TEST(test_read_capacity), TEST(test_read_capacity_huge),
          TEST(test_read_write), TEST(test_lba_out_of_range), TEST(test_invalid_opcodes), TEST(test_read_only),
          TEST(test_mode_sense), TEST(test_mode_select), TEST(test_sync_cache_and_fua), TEST(test_verify),
          TEST(test_start_stop), TEST(test_removable), TEST(test_report_luns), TEST(test_no_lun),
          TEST(test_media_errors), TEST(test_fault_hook), TEST(test_config_validation));
