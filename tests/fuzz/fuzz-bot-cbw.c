/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The CBW is the first thing a USB/IP peer controls on a disk's bulk OUT endpoint. Anything the
 * decoder accepts must survive a re-encode unchanged, and a CSW made from it must decode back. */

#include <stdio.h>

#include "bot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uint8_t out[BOT_CBW_SIZE], csw[BOT_CSW_SIZE];
        const char *error = NULL;
        BotCsw decoded;
        BotCbw c;
        int r;

        r = bot_cbw_decode(data, size, &c, &error);
        if (r < 0) {
                if ((r != -EBADMSG && r != -EINVAL) || !error)
                        abort();
                if (r == -EBADMSG)
                        return 0;
        }

        /* Valid (and possibly meaningful): every byte was captured. */
        bot_cbw_encode(out, &c);
        if (memcmp(out, data, BOT_CBW_SIZE) != 0)
                abort();
        if (r == 0 && (c.lun > BOT_MAX_LUN || c.cb_length < 1 || c.cb_length > BOT_CB_MAX ||
                       (c.flags & ~BOT_CBW_FLAG_IN)))
                abort();

        bot_csw_encode(csw, c.tag, c.data_transfer_length, BOT_CSW_PHASE_ERROR);
        if (bot_csw_decode(csw, sizeof(csw), &decoded) < 0 || decoded.tag != c.tag ||
            decoded.residue != c.data_transfer_length || decoded.status != BOT_CSW_PHASE_ERROR)
                abort();

        /* And the CSW decoder sees arbitrary bytes too. */
        (void) bot_csw_decode(data, size, &decoded);
        return 0;
}
