/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Chapter 9 standard requests (usb-device.c) on each kind of device we emulate: bits 1..2 of the flags
 * byte pick a high-speed disk, a SuperSpeed disk, a hub or a keyboard. Records are those of fuzz-ctrl.h;
 * the target event is a standard request built from fields (bRequest % 13, recipient), so the fuzzer
 * reaches every handler without guessing bmRequestType bits.
 *
 * Checked besides fuzz-ctrl.h's invariants: the state machine's values stay consistent (configured iff a
 * configuration is set), GET_CONFIGURATION answers the configuration, a descriptor reply carries the type
 * asked for and a length byte that fits the descriptor's kind, and GET_STATUS answers 2 bytes. */

#include "fuzz-ctrl.h"
#include "hub.h"
#include "keyboard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void std_complete(FuzzCtrl *f, const Urb *u) {
        UsbDevice *d = ((FuzzTarget *) u->userdata)->device;
        const uint8_t *b = u->buf;
        UsbSetup s;

        if (u->ep != 0 || u->status != 0 || !u->in)
                return;
        usb_setup_decode(u->setup, &s);
        if (usb_setup_type(&s) != USB_TYPE_STANDARD || !usb_setup_is_in(&s))
                return;

        switch (s.bRequest) {
        case USB_REQ_GET_CONFIGURATION:
                CHECK(u->actual_length == 1);
                CHECK(b[0] == d->configuration);
                break;
        case USB_REQ_GET_STATUS:
                CHECK(u->actual_length == 2);
                break;
        case USB_REQ_GET_DESCRIPTOR: {
                uint8_t type = s.wValue >> 8;
                if (usb_setup_recipient(&s) != USB_RECIP_DEVICE || u->actual_length < 2)
                        break;
                CHECK(b[1] == type);
                if (type == USB_DT_DEVICE)
                        CHECK(b[0] == USB_DT_DEVICE_SIZE);
                else if (type == USB_DT_CONFIG || type == USB_DT_OTHER_SPEED_CONFIG) {
                        CHECK(b[0] == USB_DT_CONFIG_SIZE);
                        if (u->actual_length >= 4)
                                CHECK(get_le16(b + 2) >= USB_DT_CONFIG_SIZE);
                } else if (type == USB_DT_STRING)
                        CHECK(b[0] >= 2 && b[0] % 2 == 0);
                break;
        }
        default:
                break;
        }
}

static void std_after_step(FuzzCtrl *f) {
        UsbDevice *d = f->target->device;

        CHECK(d->state >= 0 && d->state < _USB_DEVICE_STATE_MAX);
        CHECK((d->state == USB_DEVICE_STATE_CONFIGURED) == (d->configuration != 0));
        CHECK(d->configuration == 0 || usb_device_active_config(d));
        CHECK(d->link >= 0 && d->link < _USB_LINK_STATE_MAX);
}

static void std_event(FuzzCtrl *f, uint8_t tag, FuzzInput *in) {
        uint8_t request = fuzz_u8(in) % 13, recipient = fuzz_u8(in);
        uint16_t wValue = fuzz_le16(in), wIndex = fuzz_le16(in), wLength = fuzz_le16(in);
        bool in_dir = tag & 0x08;
        uint8_t setup[8] = { (uint8_t) ((in_dir ? USB_DIR_IN : 0) | (recipient & 0x03)), request,
                             wValue & 0xff, wValue >> 8, wIndex & 0xff, wIndex >> 8, wLength & 0xff,
                             wLength >> 8 };

        fuzz_ctrl_submit(f, 0, in_dir, wLength, 0, setup, in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        FuzzInput in = { data, size };
        UsbDevice *d = NULL;
        FuzzCtrl f;
        uint8_t flags;

        if (size < 1)
                return 0;
        fuzz_ctrl_log_setup();
        flags = fuzz_u8(&in);

        switch ((flags >> 1) & 3) {
        case 0:
                d = fuzz_ctrl_disk_new(1, USB_SPEED_HIGH);
                break;
        case 1:
                d = fuzz_ctrl_disk_new(1, USB_SPEED_SUPER);
                break;
        case 2:
                CHECK(hub_new("fuzzhub", &(HubOptions) { .n_ports = 4, .remote_wakeup = flags & 0x08 }, &d) >= 0);
                break;
        default:
                CHECK(keyboard_new("fuzzkbd", &d) >= 0);
                break;
        }

        fuzz_ctrl_init(&f, d);
        f.on_complete = std_complete;
        f.after_step = std_after_step;
        if (flags & FUZZ_CTRL_ENUMERATE)
                fuzz_ctrl_enumerate(&f);
        fuzz_ctrl_run(&f, &in, std_event);

        usb_device_free(d);
        return 0;
}
