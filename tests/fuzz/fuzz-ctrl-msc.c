/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The mass-storage disk (msc.c through disk.c): the BOT class requests (GET_MAX_LUN, Bulk-Only Mass
 * Storage Reset) and the bulk data phase, on a disk with one or (flags bit 1) two LUNs, high-speed or
 * (bit 2) SuperSpeed. With FUZZ_CTRL_ENUMERATE, enumeration is followed by usb-storage's GET_MAX_LUN.
 * Target events (tag >> 3) % 4: a well-formed CBW from fields (tag, dCBWDataTransferLength, flags, LUN,
 * CDB length and bytes) on bulk OUT; a bulk IN URB as usb-storage submits it (URB_SHORT_NOT_OK); a
 * CLEAR_FEATURE(ENDPOINT_HALT); reset recovery (Bulk-Only Mass Storage Reset and both clear-halts).
 *
 * Checked besides fuzz-ctrl.h's invariants: the data phase never sends more than the CBW's
 * dCBWDataTransferLength; every CSW (the 13 bytes that end a command) has the CSW signature, the tag
 * of the CBW it answers, a defined status and a residue no larger than dCBWDataTransferLength; GET_MAX_LUN
 * answers the number of LUNs minus one. */

#include "bot.h"
#include "fuzz-ctrl.h"
#include "msc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct MscFuzz {
        Msc *msc;
        unsigned n_luns;
        MscState state;            /* as of the last completion or record */
        uint64_t commands;
        uint32_t tag, host_length; /* of the CBW being answered */
        uint64_t data_in;          /* bytes sent in its data phase */
} MscFuzz;

static void msc_complete(FuzzCtrl *f, const Urb *u) {
        MscFuzz *mf = f->userdata;
        MscState now = msc_get_state(mf->msc);
        UsbSetup s;

        if (u->ep == 2 && !u->in && msc_get_stats(mf->msc)->commands != mf->commands) {
                /* This URB carried a CBW the device took: it is the one the next CSW must answer. */
                mf->commands = msc_get_stats(mf->msc)->commands;
                CHECK(u->length == BOT_CBW_SIZE);
                mf->tag = get_le32(u->buf + 4);
                mf->host_length = get_le32(u->buf + 8);
                mf->data_in = 0;
        } else if (u->ep == 1 && u->in && u->status >= 0 && u->status != -EPIPE) {
                if (mf->state == MSC_STATE_DATA_IN) {
                        mf->data_in += u->actual_length;
                        CHECK(mf->data_in <= mf->host_length);
                } else if (mf->state == MSC_STATE_STATUS && now == MSC_STATE_IDLE) {
                        BotCsw csw;
                        CHECK(u->actual_length == BOT_CSW_SIZE);
                        CHECK(bot_csw_decode(u->buf, u->actual_length, &csw) >= 0);
                        CHECK(csw.tag == mf->tag);
                        CHECK(csw.residue <= mf->host_length);
                }
        } else if (u->ep == 0 && u->status == 0 && u->in) {
                usb_setup_decode(u->setup, &s);
                if (usb_setup_type(&s) == USB_TYPE_CLASS && s.bRequest == BOT_REQ_GET_MAX_LUN) {
                        CHECK(u->actual_length == 1);
                        CHECK(u->buf[0] == mf->n_luns - 1);
                }
        }
        mf->state = now;
}

static void msc_after_step(FuzzCtrl *f) {
        MscFuzz *mf = f->userdata;

        mf->state = msc_get_state(mf->msc);
        CHECK(mf->state >= 0 && mf->state < _MSC_STATE_MAX);
}

static void msc_event(FuzzCtrl *f, uint8_t tag, FuzzInput *in) {
        switch ((tag >> 3) % 4) {
        case 0: {
                BotCbw cbw = {
                        .tag = fuzz_le32(in),
                        /* Mostly what fits a few URBs; now and then anything. */
                        .data_transfer_length = tag & 0x20 ? fuzz_le32(in) : fuzz_le16(in),
                        .flags = fuzz_u8(in) & BOT_CBW_FLAG_IN,
                        .lun = fuzz_u8(in) % 4,
                };
                uint8_t buf[BOT_CBW_SIZE];

                cbw.cb_length = 1 + fuzz_u8(in) % BOT_CB_MAX;
                fuzz_bytes(in, cbw.cb, cbw.cb_length);
                bot_cbw_encode(buf, &cbw);
                FuzzInput data = { buf, sizeof(buf) };
                fuzz_ctrl_submit(f, 2, false, sizeof(buf), 0, NULL, &data);
                break;
        }
        case 1:
                fuzz_ctrl_submit(f, USB_DIR_IN | 1, true, fuzz_le16(in), USBIP_URB_SHORT_NOT_OK, NULL, in);
                break;
        case 2:
                fuzz_ctrl_control(f, USB_RECIP_ENDPOINT, USB_REQ_CLEAR_FEATURE, USB_ENDPOINT_HALT,
                                  fuzz_u8(in) & 1 ? USB_DIR_IN | 1 : 2, 0, NULL);
                break;
        default:
                fuzz_ctrl_control(f, USB_TYPE_CLASS | USB_RECIP_INTERFACE, BOT_REQ_RESET, 0, 0, 0, NULL);
                fuzz_ctrl_control(f, USB_RECIP_ENDPOINT, USB_REQ_CLEAR_FEATURE, USB_ENDPOINT_HALT, USB_DIR_IN | 1, 0, NULL);
                fuzz_ctrl_control(f, USB_RECIP_ENDPOINT, USB_REQ_CLEAR_FEATURE, USB_ENDPOINT_HALT, 2, 0, NULL);
                break;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        FuzzInput in = { data, size };
        MscFuzz mf = {};
        UsbDevice *d;
        FuzzCtrl f;
        uint8_t flags;

        if (size < 1)
                return 0;
        fuzz_ctrl_log_setup();
        flags = fuzz_u8(&in);
        mf.n_luns = flags & 0x02 ? 2 : 1;
        d = fuzz_ctrl_disk_new(mf.n_luns, flags & 0x04 ? USB_SPEED_SUPER : USB_SPEED_HIGH);
        mf.msc = d->function;
        mf.state = msc_get_state(mf.msc);

        fuzz_ctrl_init(&f, d);
        f.userdata = &mf;
        f.on_complete = msc_complete;
        f.after_step = msc_after_step;
        if (flags & FUZZ_CTRL_ENUMERATE) {
                fuzz_ctrl_enumerate(&f);
                fuzz_ctrl_control(&f, USB_DIR_IN | USB_TYPE_CLASS | USB_RECIP_INTERFACE, BOT_REQ_GET_MAX_LUN, 0, 0, 1,
                                  NULL);
        }
        fuzz_ctrl_run(&f, &in, msc_event);

        usb_device_free(d);
        return 0;
}
