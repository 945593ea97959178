/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "tests.h"
#include "bot.h"

/* TEST UNIT READY to LUN 0, tag 0x12345678, no data (BOT 5.1 layout). */
static const uint8_t cbw_tur[BOT_CBW_SIZE] = {
        0x55, 0x53, 0x42, 0x43,                         /* dCBWSignature "USBC" */
        0x78, 0x56, 0x34, 0x12,                         /* dCBWTag */
        0x00, 0x00, 0x00, 0x00,                         /* dCBWDataTransferLength */
        0x00,                                           /* bmCBWFlags */
        0x00,                                           /* bCBWLUN */
        0x06,                                           /* bCBWCBLength */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* CBWCB */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

/* READ(10) of 8 blocks from LBA 0x100 on LUN 1: 4096 bytes IN. */
static const uint8_t cbw_read10[BOT_CBW_SIZE] = {
        0x55, 0x53, 0x42, 0x43,
        0x01, 0x00, 0x00, 0x00,
        0x00, 0x10, 0x00, 0x00,
        0x80,
        0x01,
        0x0a,
        0x28, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static void check_cbw_error(const uint8_t *buf, size_t len, int expected) {
        const char *error = NULL;
        BotCbw c;

        ASSERT_EQ(bot_cbw_decode(buf, len, &c, &error), expected);
        ASSERT_TRUE(error);
        ASSERT_TRUE(strlen(error) > 0);
        /* The error is optional. */
        ASSERT_EQ(bot_cbw_decode(buf, len, &c, NULL), expected);
}

static void test_cbw_valid(void) {
        const char *error = "unset";
        uint8_t out[BOT_CBW_SIZE];
        BotCbw c;

        ASSERT_OK(bot_cbw_decode(cbw_tur, sizeof(cbw_tur), &c, &error));
        ASSERT_TRUE(error == NULL);
        ASSERT_EQ(c.tag, 0x12345678);
        ASSERT_EQ(c.data_transfer_length, 0);
        ASSERT_FALSE(bot_cbw_is_in(&c));
        ASSERT_EQ(c.lun, 0);
        ASSERT_EQ(c.cb_length, 6);

        ASSERT_OK(bot_cbw_decode(cbw_read10, sizeof(cbw_read10), &c, NULL));
        ASSERT_EQ(c.tag, 1);
        ASSERT_EQ(c.data_transfer_length, 4096);
        ASSERT_TRUE(bot_cbw_is_in(&c));
        ASSERT_EQ(c.lun, 1);
        ASSERT_EQ(c.cb_length, 10);
        ASSERT_EQ(c.cb[0], 0x28);
        ASSERT_EQ(c.cb[5], 0x00);
        ASSERT_EQ(c.cb[4], 0x01);
        ASSERT_EQ(c.cb[8], 0x08);

        bot_cbw_encode(out, &c);
        ASSERT_MEMEQ(out, cbw_read10, BOT_CBW_SIZE);

        /* Boundaries that are still meaningful */
        memcpy(out, cbw_tur, BOT_CBW_SIZE);
        out[13] = 15;
        out[14] = 16;
        ASSERT_OK(bot_cbw_decode(out, BOT_CBW_SIZE, &c, NULL));
        out[14] = 1;
        ASSERT_OK(bot_cbw_decode(out, BOT_CBW_SIZE, &c, NULL));
}

static void test_cbw_not_valid(void) {
        uint8_t buf[BOT_CBW_SIZE + 1];
        BotCbw c = { .tag = 0xdeadbeef };

        /* BOT 6.2.1: size and signature */
        check_cbw_error(cbw_tur, BOT_CBW_SIZE - 1, -EBADMSG);
        memcpy(buf, cbw_tur, BOT_CBW_SIZE);
        buf[BOT_CBW_SIZE] = 0;
        check_cbw_error(buf, BOT_CBW_SIZE + 1, -EBADMSG);
        check_cbw_error(cbw_tur, 0, -EBADMSG);
        check_cbw_error(NULL, 0, -EBADMSG);

        buf[0] = 0x43; /* big-endian signature */
        buf[3] = 0x55;
        check_cbw_error(buf, BOT_CBW_SIZE, -EBADMSG);
        ASSERT_EQ(bot_cbw_decode(buf, BOT_CBW_SIZE, &c, NULL), -EBADMSG);
        ASSERT_EQ(c.tag, 0xdeadbeef); /* untouched */

        memcpy(buf, cbw_tur, BOT_CBW_SIZE);
        buf[0] = 0x00;
        check_cbw_error(buf, BOT_CBW_SIZE, -EBADMSG);
}

static void test_cbw_not_meaningful(void) {
        uint8_t buf[BOT_CBW_SIZE];
        const char *error;
        BotCbw c;

        memcpy(buf, cbw_tur, BOT_CBW_SIZE);
        buf[13] = 16; /* LUN 16 */
        check_cbw_error(buf, BOT_CBW_SIZE, -EINVAL);
        ASSERT_EQ(bot_cbw_decode(buf, BOT_CBW_SIZE, &c, &error), -EINVAL);
        ASSERT_STREQ(error, "CBW bCBWLUN is above 15");
        ASSERT_EQ(c.tag, 0x12345678); /* still there for the log line */

        memcpy(buf, cbw_tur, BOT_CBW_SIZE);
        buf[14] = 0;
        check_cbw_error(buf, BOT_CBW_SIZE, -EINVAL);
        buf[14] = 17;
        check_cbw_error(buf, BOT_CBW_SIZE, -EINVAL);
        buf[14] = 0x26; /* reserved bit 5 with an otherwise fine length */
        check_cbw_error(buf, BOT_CBW_SIZE, -EINVAL);

        memcpy(buf, cbw_tur, BOT_CBW_SIZE);
        for (unsigned bit = 0; bit < 7; bit++) {
                buf[12] = (uint8_t) (1u << bit);
                check_cbw_error(buf, BOT_CBW_SIZE, -EINVAL);
                ASSERT_EQ(bot_cbw_decode(buf, BOT_CBW_SIZE, &c, &error), -EINVAL);
                ASSERT_STREQ(error, "CBW bmCBWFlags has reserved bits set");
        }
        buf[12] = 0x81;
        check_cbw_error(buf, BOT_CBW_SIZE, -EINVAL);
}

static void test_csw(void) {
        static const uint8_t expected[BOT_CSW_SIZE] = {
                0x55, 0x53, 0x42, 0x53, /* "USBS" */
                0x78, 0x56, 0x34, 0x12, /* dCSWTag */
                0x00, 0x02, 0x00, 0x00, /* dCSWDataResidue 512 */
                0x01,                   /* bCSWStatus: failed */
        };
        uint8_t buf[BOT_CSW_SIZE + 1];
        BotCsw csw;

        bot_csw_encode(buf, 0x12345678, 512, BOT_CSW_FAILED);
        ASSERT_MEMEQ(buf, expected, BOT_CSW_SIZE);

        for (BotCswStatus s = 0; s < _BOT_CSW_STATUS_MAX; s++) {
                bot_csw_encode(buf, 0xfffffffe, 0xffffffff, s);
                ASSERT_OK(bot_csw_decode(buf, BOT_CSW_SIZE, &csw));
                ASSERT_EQ(csw.tag, 0xfffffffe);
                ASSERT_EQ(csw.residue, 0xffffffff);
                ASSERT_EQ(csw.status, s);
                ASSERT_EQ(bot_csw_status_from_string(bot_csw_status_to_string(s)), s);
        }
        ASSERT_STREQ(bot_csw_status_to_string(BOT_CSW_PHASE_ERROR), "phase-error");

        ASSERT_ERR(bot_csw_decode(buf, BOT_CSW_SIZE - 1, &csw), EBADMSG);
        ASSERT_ERR(bot_csw_decode(buf, BOT_CSW_SIZE + 1, &csw), EBADMSG);
        buf[12] = 3;
        ASSERT_ERR(bot_csw_decode(buf, BOT_CSW_SIZE, &csw), EBADMSG);
        buf[12] = 0;
        buf[3] = 0x43; /* a CBW signature is not a CSW */
        ASSERT_ERR(bot_csw_decode(buf, BOT_CSW_SIZE, &csw), EBADMSG);
}

TEST_MAIN(TEST(test_cbw_valid),
          TEST(test_cbw_not_valid),
          TEST(test_cbw_not_meaningful),
          TEST(test_csw))
