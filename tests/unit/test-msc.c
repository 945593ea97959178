/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Drives the Bulk-Only Transport the way usb-storage does (usb_stor_Bulk_transport): a CBW, one data
 * URB (or several), the CSW; a stalled data or CSW URB gets CLEAR_FEATURE(HALT) and the CSW is read again. */

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>

#include "bot.h"
#include "msc.h"
#include "tests.h"

#define N_BLOCKS 2048
#define CDB(...) (const uint8_t[]) { __VA_ARGS__ }, sizeof((const uint8_t[]) { __VA_ARGS__ })

static char dir[] = "/tmp/drowse-test-msc-XXXXXX";
static unsigned n_images;

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        return remove(path) < 0 ? -1 : 0;
}

static void cleanup(void) {
        (void) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static ScsiLun *new_lun(void) {
        char path[256];
        Image *img = NULL;
        ScsiLun *l = NULL;

        if (n_images++ == 0) {
                if (!mkdtemp(dir))
                        TEST_FAIL("mkdtemp: %m");
                atexit(cleanup);
        }
        snprintf(path, sizeof(path), "%s/%u.img", dir, n_images);
        ASSERT_OK(image_open(path, N_BLOCKS * 512, false, &img));
        ASSERT_OK(scsi_lun_new(&(const ScsiLunConfig) { .serial = "MSC1" }, img, &l));
        return l;
}

static Msc *new_msc_full(size_t n_luns, const MscConfig *config) {
        ScsiLun *luns[MSC_MAX_LUNS] = {};
        Msc *m = NULL;

        for (size_t i = 0; i < n_luns; i++)
                luns[i] = new_lun();
        ASSERT_OK(msc_new_full(luns, n_luns, config, &m));
        for (size_t i = 0; i < n_luns; i++)
                ASSERT_TRUE(luns[i] == NULL); /* taken */
        return m;
}

static Msc *new_msc(size_t n_luns) {
        return new_msc_full(n_luns, NULL);
}

static uint32_t next_tag = 0x1000;

static uint32_t send_cbw(Msc *m, uint8_t lun, bool in, uint32_t length, const uint8_t *cdb, size_t cdb_len) {
        BotCbw c = {
                .tag = ++next_tag,
                .data_transfer_length = length,
                .flags = in ? BOT_CBW_FLAG_IN : 0,
                .lun = lun,
                .cb_length = (uint8_t) cdb_len,
        };
        uint8_t raw[BOT_CBW_SIZE];

        memcpy(c.cb, cdb, cdb_len);
        bot_cbw_encode(raw, &c);
        ASSERT_OK(msc_bulk_out(m, raw, sizeof(raw)));
        return c.tag;
}

/* The CSW read, with usb-storage's stall handling. */
static BotCsw read_csw(Msc *m, uint32_t tag) {
        uint8_t raw[BOT_CSW_SIZE];
        BotCsw csw;

        ASSERT_TRUE(msc_bulk_in_ready(m));
        ssize_t n = msc_bulk_in(m, raw, sizeof(raw));
        if (n == -EPIPE) {
                msc_clear_halt(m, 0x81);
                n = msc_bulk_in(m, raw, sizeof(raw));
        }
        ASSERT_EQ(n, BOT_CSW_SIZE);
        ASSERT_OK(bot_csw_decode(raw, (size_t) n, &csw));
        ASSERT_EQ(csw.tag, tag);
        ASSERT_EQ(msc_get_state(m), MSC_STATE_IDLE);
        ASSERT_FALSE(msc_bulk_in_ready(m));
        return csw;
}

/* Data-in phase in URBs of urb bytes; returns bytes received; *stalled if the phase ended in a STALL. */
static size_t read_data(Msc *m, uint8_t *buf, size_t length, size_t urb, bool *stalled) {
        size_t got = 0;
        *stalled = false;
        while (got < length) {
                size_t want = MIN(urb, length - got);
                ssize_t n = msc_bulk_in(m, buf + got, want);
                if (n == -EPIPE) {
                        *stalled = true;
                        msc_clear_halt(m, 0x81);
                        break;
                }
                ASSERT_TRUE(n >= 0);
                got += (size_t) n;
                if ((size_t) n < want)
                        break; /* short: end of the transfer */
        }
        return got;
}

static void write_data(Msc *m, const uint8_t *buf, size_t length, size_t urb) {
        for (size_t sent = 0; sent < length;) {
                size_t n = MIN(urb, length - sent);
                ASSERT_OK(msc_bulk_out(m, buf + sent, n));
                sent += n;
        }
}

static void expect_csw(Msc *m, uint32_t tag, BotCswStatus status, uint32_t residue) {
        BotCsw csw = read_csw(m, tag);
        ASSERT_EQ(csw.status, status);
        ASSERT_EQ(csw.residue, residue);
}

/* The power-on UNIT ATTENTION, as the kernel's first TEST UNIT READY meets it. */
static void consume_unit_attention(Msc *m, uint8_t lun) {
        uint8_t sense[96];
        bool stalled;

        uint32_t tag = send_cbw(m, lun, false, 0, CDB(0x00, 0, 0, 0, 0, 0));
        expect_csw(m, tag, BOT_CSW_FAILED, 0);
        tag = send_cbw(m, lun, true, 96, CDB(0x03, 0, 0, 0, 96, 0));
        ASSERT_EQ(read_data(m, sense, 96, 96, &stalled), 18);
        ASSERT_EQ(sense[2], 0x06);
        ASSERT_EQ(sense[12], 0x29);
        expect_csw(m, tag, BOT_CSW_GOOD, 96 - 18);
}

static void test_inquiry(void) {
        _cleanup_(msc_freep) Msc *m = new_msc(1);
        uint8_t buf[64];
        bool stalled;

        ASSERT_EQ(msc_bulk_in(m, buf, sizeof(buf)), -EAGAIN); /* an IN URB queued while idle */
        ASSERT_FALSE(msc_bulk_in_ready(m));

        uint32_t tag = send_cbw(m, 0, true, 36, CDB(0x12, 0, 0, 0, 36, 0));
        ASSERT_TRUE(msc_bulk_in_ready(m));
        ASSERT_EQ(read_data(m, buf, 36, 36, &stalled), 36);
        ASSERT_FALSE(stalled);
        ASSERT_EQ(buf[2], 0x06);
        ASSERT_MEMEQ(buf + 8, "drowse  ", 8);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);
        ASSERT_EQ(msc_bulk_in(m, buf, sizeof(buf)), -EAGAIN);
        ASSERT_EQ(msc_get_stats(m)->commands, 1);
}

static void fill_pattern(uint8_t *buf, size_t len, uint8_t seed) {
        for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t) (seed ^ (i * 13) ^ (i >> 9));
}

static void test_read_write_chunks(void) {
        _cleanup_(msc_freep) Msc *m = new_msc(1);
        static uint8_t data[64 * 512], back[64 * 512];
        bool stalled;

        consume_unit_attention(m, 0);

        /* WRITE(10) of 64 blocks at LBA 100 in 3000-byte OUT URBs. */
        fill_pattern(data, sizeof(data), 0x5a);
        uint32_t tag = send_cbw(m, 0, false, sizeof(data), CDB(0x2a, 0, 0, 0, 0, 100, 0, 0, 64, 0));
        ASSERT_EQ(msc_get_state(m), MSC_STATE_DATA_OUT);
        ASSERT_EQ(msc_bulk_in(m, back, 13), -EAGAIN); /* the CSW URB may be queued early */
        write_data(m, data, sizeof(data), 3000);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);

        /* In the file, for anyone: write-through. */
        int fd = open(image_get_path(scsi_lun_get_image(msc_get_lun(m, 0))), O_RDONLY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ASSERT_EQ(pread(fd, back, sizeof(back), 100 * 512), sizeof(back));
        close(fd);
        ASSERT_MEMEQ(data, back, sizeof(data));

        /* READ(10) back in 5000-byte IN URBs, then one URB for the whole. */
        memset(back, 0, sizeof(back));
        tag = send_cbw(m, 0, true, sizeof(back), CDB(0x28, 0, 0, 0, 0, 100, 0, 0, 64, 0));
        ASSERT_EQ(read_data(m, back, sizeof(back), 5000, &stalled), sizeof(back));
        ASSERT_FALSE(stalled);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);
        ASSERT_MEMEQ(data, back, sizeof(data));

        memset(back, 0, sizeof(back));
        tag = send_cbw(m, 0, true, sizeof(back), CDB(0x28, 0, 0, 0, 0, 100, 0, 0, 64, 0));
        ASSERT_EQ(read_data(m, back, sizeof(back), sizeof(back), &stalled), sizeof(back));
        expect_csw(m, tag, BOT_CSW_GOOD, 0);
        ASSERT_MEMEQ(data, back, sizeof(data));

        const ScsiLunStats *st = scsi_lun_get_stats(msc_get_lun(m, 0));
        ASSERT_EQ(st->blocks_written, 64);
        ASSERT_EQ(st->blocks_read, 128);
}

static void test_invalid_cbw(void) {
        _cleanup_(msc_freep) Msc *m = new_msc(1);
        uint8_t raw[BOT_CBW_SIZE + 1] = {};
        uint8_t buf[64];
        size_t len = 0;

        /* 30 bytes: not valid. Both pipes stall, and CLEAR_FEATURE(HALT) does not help (BOT 6.6.1). */
        ASSERT_EQ(msc_bulk_out(m, raw, BOT_CBW_SIZE - 1), -EPIPE);
        ASSERT_TRUE(msc_bulk_in_ready(m));
        ASSERT_EQ(msc_bulk_in(m, buf, 13), -EPIPE);
        msc_clear_halt(m, 0x81);
        msc_clear_halt(m, 0x02);
        ASSERT_EQ(msc_bulk_in(m, buf, 13), -EPIPE);
        ASSERT_EQ(msc_bulk_out(m, raw, BOT_CBW_SIZE), -EPIPE);
        ASSERT_TRUE(msc_endpoint_halted(m, 0x81));
        ASSERT_TRUE(msc_endpoint_halted(m, 0x02));

        /* Reset recovery: class reset, clear both halts. */
        const UsbSetup reset = { 0x21, BOT_REQ_RESET, 0, 0, 0 };
        ASSERT_OK(msc_class_request(m, &reset, NULL, &len));
        msc_clear_halt(m, 0x81);
        msc_clear_halt(m, 0x02);
        ASSERT_FALSE(msc_endpoint_halted(m, 0x81));
        uint32_t tag = send_cbw(m, 0, true, 36, CDB(0x12, 0, 0, 0, 36, 0));
        bool stalled;
        ASSERT_EQ(read_data(m, buf, 36, 36, &stalled), 36);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);

        /* Wrong signature; then not meaningful (CB length 0, reserved flag bits): same treatment. */
        static const uint8_t bad_cdb[] = { 0x00 };
        BotCbw c = { .tag = 1, .cb_length = 1 };
        memcpy(c.cb, bad_cdb, 1);
        bot_cbw_encode(raw, &c);
        raw[0] ^= 0xff;
        ASSERT_EQ(msc_bulk_out(m, raw, BOT_CBW_SIZE), -EPIPE);
        msc_bus_reset(m);
        c.cb_length = 0;
        bot_cbw_encode(raw, &c);
        ASSERT_EQ(msc_bulk_out(m, raw, BOT_CBW_SIZE), -EPIPE);
        ASSERT_OK(msc_class_request(m, &reset, NULL, &len));
        c.cb_length = 6;
        c.flags = 0x40;
        bot_cbw_encode(raw, &c);
        ASSERT_EQ(msc_bulk_out(m, raw, BOT_CBW_SIZE), -EPIPE);
        ASSERT_OK(msc_class_request(m, &reset, NULL, &len));
        ASSERT_EQ(msc_get_stats(m)->invalid_cbws, 4);

        /* After the resets, the kernel expects (and gets) a UNIT ATTENTION. */
        consume_unit_attention(m, 0);
}

static void test_hi_gt_di_short(void) {
        /* Case 5: MODE SENSE(6) 0x3F with allocation length 192 (sd's probe) yields 44 bytes. */
        _cleanup_(msc_freep) Msc *m = new_msc(1);
        uint8_t buf[192];

        consume_unit_attention(m, 0);
        uint32_t tag = send_cbw(m, 0, true, 192, CDB(0x1a, 0, 0x3f, 0, 192, 0));
        ASSERT_EQ(msc_bulk_in(m, buf, 192), 44); /* short: ends the transfer */
        ASSERT_EQ(msc_bulk_in(m, buf, 13), -EPIPE); /* the CSW read stalls, like f_mass_storage */
        ASSERT_EQ(msc_bulk_in(m, buf, 13), -EPIPE); /* until the host clears it */
        msc_clear_halt(m, 0x81);
        expect_csw(m, tag, BOT_CSW_GOOD, 192 - 44);

        /* Without the stall: short data, then the CSW. */
        _cleanup_(msc_freep) Msc *m2 = new_msc_full(1, &(const MscConfig) { .bulk_in_ep = 0x81,
                                                                            .bulk_out_ep = 0x02 });
        consume_unit_attention(m2, 0);
        tag = send_cbw(m2, 0, true, 192, CDB(0x1a, 0, 0x3f, 0, 192, 0));
        ASSERT_EQ(msc_bulk_in(m2, buf, 192), 44);
        ASSERT_EQ(msc_bulk_in(m2, buf, 12), -EOVERFLOW); /* a CSW URB too small; CSW stays queued */
        expect_csw(m2, tag, BOT_CSW_GOOD, 192 - 44);

        /* Without the stall, a short reply that fills the URB exactly ends with a zero-length packet. */
        tag = send_cbw(m2, 0, true, 192, CDB(0x1a, 0, 0x3f, 0, 192, 0));
        ASSERT_EQ(msc_bulk_in(m2, buf, 44), 44);
        ASSERT_EQ(msc_bulk_in(m2, buf, 148), 0);
        expect_csw(m2, tag, BOT_CSW_GOOD, 192 - 44);
}

static void test_hi_gt_dn_and_failed(void) {
        _cleanup_(msc_freep) Msc *m = new_msc(1);
        uint8_t buf[512];
        bool stalled;

        consume_unit_attention(m, 0);

        /* Case 4: TEST UNIT READY with a data-in length: the data phase stalls at once. */
        uint32_t tag = send_cbw(m, 0, true, 512, CDB(0x00, 0, 0, 0, 0, 0));
        ASSERT_EQ(read_data(m, buf, 512, 512, &stalled), 0);
        ASSERT_TRUE(stalled);
        expect_csw(m, tag, BOT_CSW_GOOD, 512);

        /* smartctl's ATA PASS-THROUGH(16) IDENTIFY: failed, the whole length as residue, and the sense. */
        tag = send_cbw(m, 0, true, 512, CDB(0x85, 0x08, 0x0e, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0xec, 0));
        ASSERT_EQ(read_data(m, buf, 512, 512, &stalled), 0);
        ASSERT_TRUE(stalled);
        expect_csw(m, tag, BOT_CSW_FAILED, 512);
        tag = send_cbw(m, 0, true, 18, CDB(0x03, 0, 0, 0, 18, 0));
        ASSERT_EQ(read_data(m, buf, 18, 18, &stalled), 18);
        ASSERT_EQ(buf[2], 0x05);
        ASSERT_EQ(buf[12], 0x20);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);

        /* Case 9: Ho > Dn: the data is taken and dropped. */
        tag = send_cbw(m, 0, false, 1024, CDB(0x00, 0, 0, 0, 0, 0));
        write_data(m, buf, 512, 512);
        ASSERT_EQ(msc_bulk_in(m, buf, 13), -EAGAIN);
        write_data(m, buf, 512, 512);
        expect_csw(m, tag, BOT_CSW_GOOD, 1024);

        /* A failed WRITE (out of range) with data: taken, dropped, FAILED. */
        tag = send_cbw(m, 0, false, 512, CDB(0x2a, 0, 0, 0, 0x08, 0x00, 0, 0, 1, 0));
        write_data(m, buf, 512, 512);
        expect_csw(m, tag, BOT_CSW_FAILED, 512);
}

static void test_phase_errors(void) {
        _cleanup_(msc_freep) Msc *m = new_msc(1);
        static uint8_t buf[2048], zero[1024];
        bool stalled;

        consume_unit_attention(m, 0);

        /* Case 2: Hn < Di. */
        uint32_t tag = send_cbw(m, 0, false, 0, CDB(0x12, 0, 0, 0, 36, 0));
        expect_csw(m, tag, BOT_CSW_PHASE_ERROR, 0);

        /* Case 3: Hn < Do: the WRITE is not carried out. */
        tag = send_cbw(m, 0, false, 0, CDB(0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0));
        expect_csw(m, tag, BOT_CSW_PHASE_ERROR, 0);

        /* Case 7: Hi < Di. */
        tag = send_cbw(m, 0, true, 512, CDB(0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0));
        ASSERT_EQ(read_data(m, buf, 512, 512, &stalled), 0);
        ASSERT_TRUE(stalled);
        expect_csw(m, tag, BOT_CSW_PHASE_ERROR, 512);

        /* Case 8: Hi <> Do. */
        tag = send_cbw(m, 0, true, 512, CDB(0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0));
        ASSERT_EQ(read_data(m, buf, 512, 512, &stalled), 0);
        ASSERT_TRUE(stalled);
        expect_csw(m, tag, BOT_CSW_PHASE_ERROR, 512);

        /* Case 10: Ho <> Di. */
        tag = send_cbw(m, 0, false, 512, CDB(0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0));
        write_data(m, buf, 512, 100);
        expect_csw(m, tag, BOT_CSW_PHASE_ERROR, 512);

        /* Case 13: Ho < Do: nothing lands on the medium. */
        memset(buf, 0xee, sizeof(buf));
        tag = send_cbw(m, 0, false, 512, CDB(0x2a, 0, 0, 0, 0, 4, 0, 0, 2, 0));
        write_data(m, buf, 512, 512);
        expect_csw(m, tag, BOT_CSW_PHASE_ERROR, 512);
        ASSERT_OK(image_read(scsi_lun_get_image(msc_get_lun(m, 0)), 4 * 512, buf, 1024));
        ASSERT_MEMEQ(buf, zero, 1024);

        /* Case 11: Ho > Do: the first block written, the rest dropped, residue. */
        memset(buf, 0x77, sizeof(buf));
        tag = send_cbw(m, 0, false, 1024, CDB(0x2a, 0, 0, 0, 0, 4, 0, 0, 1, 0));
        write_data(m, buf, 1024, 1024);
        expect_csw(m, tag, BOT_CSW_GOOD, 512);
        ASSERT_OK(image_read(scsi_lun_get_image(msc_get_lun(m, 0)), 4 * 512, buf + 1024, 1024));
        ASSERT_MEMEQ(buf + 1024, buf, 512);
        ASSERT_MEMEQ(buf + 1536, zero, 512);

        ASSERT_EQ(msc_get_stats(m)->phase_errors, 6);

        /* A CBW while the CSW is still due: the host is out of step; OUT stalls. */
        tag = send_cbw(m, 0, false, 0, CDB(0x00, 0, 0, 0, 0, 0));
        uint8_t raw[BOT_CBW_SIZE] = {};
        ASSERT_EQ(msc_bulk_out(m, raw, sizeof(raw)), -EPIPE);
        msc_clear_halt(m, 0x02);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);
}

static void test_class_requests(void) {
        _cleanup_(msc_freep) Msc *m = new_msc(3);
        uint8_t data[8] = { 0xaa };
        size_t len = sizeof(data);

        const UsbSetup get_max_lun = { 0xa1, BOT_REQ_GET_MAX_LUN, 0, 0, 1 };
        ASSERT_OK(msc_class_request(m, &get_max_lun, data, &len));
        ASSERT_EQ(len, 1);
        ASSERT_EQ(data[0], 2);

        UsbSetup bad = get_max_lun;
        bad.wLength = 2;
        len = sizeof(data);
        ASSERT_EQ(msc_class_request(m, &bad, data, &len), -EPIPE);
        bad = get_max_lun;
        bad.bmRequestType = 0x21;
        ASSERT_EQ(msc_class_request(m, &bad, data, &len), -EPIPE);
        bad = get_max_lun;
        bad.wIndex = 1;
        ASSERT_EQ(msc_class_request(m, &bad, data, &len), -EPIPE);
        bad = get_max_lun;
        bad.wValue = 1;
        ASSERT_EQ(msc_class_request(m, &bad, data, &len), -EPIPE);
        bad = get_max_lun;
        bad.bmRequestType = 0xc1; /* vendor */
        ASSERT_EQ(msc_class_request(m, &bad, data, &len), -EPIPE);

        const UsbSetup reset = { 0x21, BOT_REQ_RESET, 0, 0, 0 };
        bad = reset;
        bad.wLength = 1;
        ASSERT_EQ(msc_class_request(m, &bad, data, &len), -EPIPE);
        bad = reset;
        bad.bmRequestType = 0xa1;
        ASSERT_EQ(msc_class_request(m, &bad, data, &len), -EPIPE);
        bad = reset;
        bad.bRequest = 0x01;
        ASSERT_EQ(msc_class_request(m, &bad, data, &len), -EPIPE);

        /* A reset in the middle of a data phase: back to waiting for a CBW. */
        send_cbw(m, 0, false, 4096, CDB(0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0));
        write_data(m, data, 8, 8);
        len = 0;
        ASSERT_OK(msc_class_request(m, &reset, NULL, &len));
        ASSERT_EQ(msc_get_state(m), MSC_STATE_IDLE);
        ASSERT_EQ(msc_get_stats(m)->resets, 1);

        /* One LUN: 0. */
        _cleanup_(msc_freep) Msc *one = new_msc(1);
        len = sizeof(data);
        ASSERT_OK(msc_class_request(one, &get_max_lun, data, &len));
        ASSERT_EQ(data[0], 0);
}

static void test_multiple_luns(void) {
        _cleanup_(msc_freep) Msc *m = new_msc(2);
        uint8_t block[512], back[512];
        bool stalled;

        consume_unit_attention(m, 0);
        consume_unit_attention(m, 1);

        memset(block, 0x11, sizeof(block));
        uint32_t tag = send_cbw(m, 1, false, 512, CDB(0x2a, 0, 0, 0, 0, 7, 0, 0, 1, 0));
        write_data(m, block, 512, 512);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);

        tag = send_cbw(m, 0, true, 512, CDB(0x28, 0, 0, 0, 0, 7, 0, 0, 1, 0));
        ASSERT_EQ(read_data(m, back, 512, 512, &stalled), 512);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);
        ASSERT_EQ(back[0], 0);
        tag = send_cbw(m, 1, true, 512, CDB(0x28, 0, 0, 0, 0, 7, 0, 0, 1, 0));
        ASSERT_EQ(read_data(m, back, 512, 512, &stalled), 512);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);
        ASSERT_MEMEQ(back, block, 512);

        /* LUN 5 does not exist: INQUIRY says so (qualifier 3), others fail with LUN NOT SUPPORTED. */
        tag = send_cbw(m, 5, true, 36, CDB(0x12, 0, 0, 0, 36, 0));
        ASSERT_EQ(read_data(m, back, 36, 36, &stalled), 36);
        ASSERT_EQ(back[0], 0x7f);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);
        tag = send_cbw(m, 5, true, 512, CDB(0x28, 0, 0, 0, 0, 7, 0, 0, 1, 0));
        ASSERT_EQ(read_data(m, back, 512, 512, &stalled), 0);
        expect_csw(m, tag, BOT_CSW_FAILED, 512);
        tag = send_cbw(m, 5, true, 18, CDB(0x03, 0, 0, 0, 18, 0));
        ASSERT_EQ(read_data(m, back, 18, 18, &stalled), 18);
        ASSERT_EQ(back[12], 0x25);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);

        /* REPORT LUNS lists both. */
        uint8_t luns[64];
        tag = send_cbw(m, 0, true, 64, CDB(0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0));
        ASSERT_EQ(read_data(m, luns, 64, 64, &stalled), 24);
        ASSERT_EQ(luns[3], 16);
        ASSERT_EQ(luns[8 + 8 + 1], 1);
        expect_csw(m, tag, BOT_CSW_GOOD, 64 - 24);
}

static void test_bus_reset(void) {
        _cleanup_(msc_freep) Msc *m = new_msc(1);
        uint8_t buf[4096];

        consume_unit_attention(m, 0);
        send_cbw(m, 0, true, 4096, CDB(0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0));
        ASSERT_EQ(msc_bulk_in(m, buf, 1024), 1024);
        msc_bus_reset(m);
        ASSERT_EQ(msc_get_state(m), MSC_STATE_IDLE);
        ASSERT_EQ(msc_bulk_in(m, buf, 1024), -EAGAIN);
        ASSERT_EQ(msc_get_stats(m)->bus_resets, 1);
        consume_unit_attention(m, 0);
        /* SET_FEATURE(HALT) from the host is honoured and cleared normally. */
        msc_set_halt(m, 0x81);
        ASSERT_EQ(msc_bulk_in(m, buf, 13), -EPIPE);
        msc_clear_halt(m, 0x81);
        ASSERT_EQ(msc_bulk_in(m, buf, 13), -EAGAIN);
}

static void test_probe_sequence(void) {
        /* What sd_probe + the first open send (research notes §3.4), end to end. */
        _cleanup_(msc_freep) Msc *m = new_msc(1);
        uint8_t buf[4096];
        bool stalled;
        uint32_t tag;

        tag = send_cbw(m, 0, true, 36, CDB(0x12, 0, 0, 0, 36, 0));
        ASSERT_EQ(read_data(m, buf, 36, 36, &stalled), 36);
        expect_csw(m, tag, BOT_CSW_GOOD, 0); /* residue 0 on a full INQUIRY: no IGNORE_RESIDUE quirk */
        consume_unit_attention(m, 0);
        tag = send_cbw(m, 0, false, 0, CDB(0x00, 0, 0, 0, 0, 0));
        expect_csw(m, tag, BOT_CSW_GOOD, 0);
        tag = send_cbw(m, 0, true, 8, CDB(0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0));
        ASSERT_EQ(read_data(m, buf, 8, 8, &stalled), 8);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);
        ASSERT_EQ(get_be32(buf), N_BLOCKS - 1);
        tag = send_cbw(m, 0, true, 512, CDB(0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0));
        ASSERT_EQ(read_data(m, buf, 512, 512, &stalled), 512);
        expect_csw(m, tag, BOT_CSW_GOOD, 0);
        for (int i = 0; i < 2; i++) {
                tag = send_cbw(m, 0, true, 192, CDB(0x1a, 0, 0x3f, 0, 192, 0));
                ASSERT_EQ(read_data(m, buf, 192, 192, &stalled), 44);
                expect_csw(m, tag, BOT_CSW_GOOD, 148);
                ASSERT_EQ(buf[2] & 0x80, 0);
                ASSERT_EQ(buf[12], 0x08);
                ASSERT_EQ(buf[14] & 0x04, 0x04);
        }
        /* Runtime suspend: SYNCHRONIZE CACHE(10). */
        tag = send_cbw(m, 0, false, 0, CDB(0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0));
        expect_csw(m, tag, BOT_CSW_GOOD, 0);
        ASSERT_EQ(scsi_lun_get_stats(msc_get_lun(m, 0))->flushes, 1);
}

static void test_new_errors(void) {
        ScsiLun *luns[MSC_MAX_LUNS + 1] = {};
        Msc *m = NULL;

        ASSERT_ERR(msc_new(luns, 0, &m), EINVAL);
        ASSERT_ERR(msc_new(luns, MSC_MAX_LUNS + 1, &m), EINVAL);
        ASSERT_ERR(msc_new(luns, 1, &m), EINVAL); /* NULL LUN */
        ASSERT_TRUE(msc_free(NULL) == NULL);
        ASSERT_STREQ(msc_state_to_string(MSC_STATE_DATA_IN), "data-in");
}

TEST_MAIN(TEST(test_inquiry), TEST(test_read_write_chunks), TEST(test_invalid_cbw), TEST(test_hi_gt_di_short),
          TEST(test_hi_gt_dn_and_failed), TEST(test_phase_errors), TEST(test_class_requests),
          TEST(test_multiple_luns), TEST(test_bus_reset), TEST(test_probe_sequence), TEST(test_new_errors));
