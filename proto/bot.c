/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>

#include "bot.h"

/* BOT 5.1, table 5.1 */
enum {
        CBW_OFF_SIGNATURE = 0,
        CBW_OFF_TAG = 4,
        CBW_OFF_DATA_TRANSFER_LENGTH = 8,
        CBW_OFF_FLAGS = 12,
        CBW_OFF_LUN = 13,
        CBW_OFF_CB_LENGTH = 14,
        CBW_OFF_CB = 15,
};
assert_cc(CBW_OFF_CB + BOT_CB_MAX == BOT_CBW_SIZE);
assert_cc(sizeof(((BotCbw *) NULL)->cb) == BOT_CB_MAX);

/* BOT 5.2, table 5.2 */
enum {
        CSW_OFF_SIGNATURE = 0,
        CSW_OFF_TAG = 4,
        CSW_OFF_DATA_RESIDUE = 8,
        CSW_OFF_STATUS = 12,
};
assert_cc(CSW_OFF_STATUS + 1 == BOT_CSW_SIZE);

static const char *const bot_csw_status_table[_BOT_CSW_STATUS_MAX] = {
        [BOT_CSW_GOOD] = "good",
        [BOT_CSW_FAILED] = "failed",
        [BOT_CSW_PHASE_ERROR] = "phase-error",
};

DEFINE_STRING_TABLE_LOOKUP(bot_csw_status, BotCswStatus);

static int cbw_error(const char **ret_error, const char *msg, int r) {
        if (ret_error)
                *ret_error = msg;
        return r;
}

int bot_cbw_decode(const uint8_t *buf, size_t len, BotCbw *ret, const char **ret_error) {
        /* BOT 6.2.1: a CBW of any other size is not valid, even if the rest would parse. */
        if (!buf || len != BOT_CBW_SIZE)
                return cbw_error(ret_error, "CBW is not 31 bytes long", -EBADMSG);
        if (get_le32(buf + CBW_OFF_SIGNATURE) != BOT_CBW_SIGNATURE)
                return cbw_error(ret_error, "CBW signature is not 0x43425355", -EBADMSG);

        *ret = (BotCbw) {
                .tag = get_le32(buf + CBW_OFF_TAG),
                .data_transfer_length = get_le32(buf + CBW_OFF_DATA_TRANSFER_LENGTH),
                .flags = buf[CBW_OFF_FLAGS],
                .lun = buf[CBW_OFF_LUN],
                .cb_length = buf[CBW_OFF_CB_LENGTH],
        };
        memcpy(ret->cb, buf + CBW_OFF_CB, BOT_CB_MAX);

        /* BOT 6.2.2: meaningful = reserved bits zero, LUN supported, length within the CB field.
         * The upper nibble of bCBWLUN and upper three bits of bCBWCBLength are reserved, so a LUN of
         * 16 or a length of 32 show up as reserved bits; name the field, which is what a log reader
         * wants. */
        if (ret->flags & ~BOT_CBW_FLAG_IN)
                return cbw_error(ret_error, "CBW bmCBWFlags has reserved bits set", -EINVAL);
        if (ret->lun > BOT_MAX_LUN)
                return cbw_error(ret_error, "CBW bCBWLUN is above 15", -EINVAL);
        if (ret->cb_length < 1 || ret->cb_length > BOT_CB_MAX)
                return cbw_error(ret_error, "CBW bCBWCBLength is not 1..16", -EINVAL);

        if (ret_error)
                *ret_error = NULL;
        return 0;
}

void bot_cbw_encode(uint8_t buf[static BOT_CBW_SIZE], const BotCbw *c) {
        put_le32(buf + CBW_OFF_SIGNATURE, BOT_CBW_SIGNATURE);
        put_le32(buf + CBW_OFF_TAG, c->tag);
        put_le32(buf + CBW_OFF_DATA_TRANSFER_LENGTH, c->data_transfer_length);
        buf[CBW_OFF_FLAGS] = c->flags;
        buf[CBW_OFF_LUN] = c->lun;
        buf[CBW_OFF_CB_LENGTH] = c->cb_length;
        memcpy(buf + CBW_OFF_CB, c->cb, BOT_CB_MAX);
}

void bot_csw_encode(uint8_t buf[static BOT_CSW_SIZE], uint32_t tag, uint32_t residue, BotCswStatus status) {
        put_le32(buf + CSW_OFF_SIGNATURE, BOT_CSW_SIGNATURE);
        put_le32(buf + CSW_OFF_TAG, tag);
        put_le32(buf + CSW_OFF_DATA_RESIDUE, residue);
        buf[CSW_OFF_STATUS] = (uint8_t) status;
}

int bot_csw_decode(const uint8_t *buf, size_t len, BotCsw *ret) {
        uint8_t status;

        if (!buf || len != BOT_CSW_SIZE)
                return -EBADMSG;
        if (get_le32(buf + CSW_OFF_SIGNATURE) != BOT_CSW_SIGNATURE)
                return -EBADMSG;
        status = buf[CSW_OFF_STATUS];
        /* 03h-FFh are reserved (BOT table 5.3); a host treats them like a bad CSW. */
        if (status >= _BOT_CSW_STATUS_MAX)
                return -EBADMSG;

        *ret = (BotCsw) {
                .tag = get_le32(buf + CSW_OFF_TAG),
                .residue = get_le32(buf + CSW_OFF_DATA_RESIDUE),
                .status = (BotCswStatus) status,
        };
        return 0;
}
