/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* USB Mass Storage Class Bulk-Only Transport, revision 1.0: the Command Block Wrapper the host
 * sends on bulk OUT and the Command Status Wrapper the device answers with on bulk IN. Both are
 * little-endian on the wire (BOT 5.1, 5.2). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define BOT_CBW_SIZE 31
#define BOT_CSW_SIZE 13
#define BOT_CBW_SIGNATURE UINT32_C(0x43425355) /* "USBC" */
#define BOT_CSW_SIGNATURE UINT32_C(0x53425355) /* "USBS" */
#define BOT_CBW_FLAG_IN 0x80
#define BOT_CB_MAX 16
#define BOT_MAX_LUN 15

/* Class requests (BOT 3.1, 3.2) */
#define BOT_REQ_GET_MAX_LUN 0xfe
#define BOT_REQ_RESET 0xff

/* bInterfaceSubClass / bInterfaceProtocol of a SCSI-over-BOT interface (MSC overview 2, 3) */
#define USB_SUBCLASS_SCSI 0x06
#define USB_PR_BULK 0x50

typedef struct BotCbw {
        uint32_t tag;
        uint32_t data_transfer_length;
        uint8_t flags;
        uint8_t lun;
        uint8_t cb_length;
        uint8_t cb[BOT_CB_MAX];
} BotCbw;

static inline bool bot_cbw_is_in(const BotCbw *c) {
        return c->flags & BOT_CBW_FLAG_IN;
}

/* BOT 6.2.1 and 6.2.2. Returns -EBADMSG if the CBW is not "valid" (not exactly BOT_CBW_SIZE bytes
 * or a wrong signature; ret is untouched), -EINVAL if it is valid but not "meaningful" (reserved
 * bits set, LUN above 15, bCBWCBLength not 1..16; ret holds the raw fields, so the tag can still be
 * logged), 0 otherwise. Either way the device answers with reset recovery (BOT 6.6.1).
 * *ret_error, if given, gets a static string saying what was wrong. */
int bot_cbw_decode(const uint8_t *buf, size_t len, BotCbw *ret, const char **ret_error);

/* For hosts and tests; writes the fields as they are, without judging them. */
void bot_cbw_encode(uint8_t buf[static BOT_CBW_SIZE], const BotCbw *c);

typedef enum BotCswStatus {
        BOT_CSW_GOOD = 0,
        BOT_CSW_FAILED = 1,
        BOT_CSW_PHASE_ERROR = 2,
        _BOT_CSW_STATUS_MAX,
        _BOT_CSW_STATUS_INVALID = -EINVAL,
} BotCswStatus;

const char *bot_csw_status_to_string(BotCswStatus s) _const_;
BotCswStatus bot_csw_status_from_string(const char *s) _pure_;

typedef struct BotCsw {
        uint32_t tag;
        uint32_t residue;
        BotCswStatus status;
} BotCsw;

void bot_csw_encode(uint8_t buf[static BOT_CSW_SIZE], uint32_t tag, uint32_t residue, BotCswStatus status);

/* BOT 6.3: -EBADMSG unless exactly BOT_CSW_SIZE bytes, the right signature and a defined status. */
int bot_csw_decode(const uint8_t *buf, size_t len, BotCsw *ret);
