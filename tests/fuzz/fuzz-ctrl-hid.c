/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The HID boot keyboard (keyboard.c): its class requests, its class descriptors, and its interrupt IN
 * endpoint fed by typed keys. With FUZZ_CTRL_ENUMERATE the kernel's usbhid start follows enumeration
 * (SET_IDLE(0), the report descriptor, the LED report, the interrupt URB). Target events (tag >> 3) % 4:
 * 0 types up to 8 characters from the input, 1 is a HID class request from fields, 2 an interrupt IN URB,
 * 3 a class descriptor read (HID or report) of any length.
 *
 * Checked besides fuzz-ctrl.h's invariants: an interrupt report is exactly 8 bytes; GET_REPORT answers
 * at most 8; GET_IDLE and GET_PROTOCOL answer one byte; the report queue never holds more than
 * KEYBOARD_QUEUE reports (typing beyond it is refused, not lost silently). */

#include "fuzz-ctrl.h"
#include "keyboard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void hid_complete(FuzzCtrl *f, const Urb *u) {
        UsbSetup s;

        if (u->status != 0)
                return;
        if (u->ep == 1 && u->in) {
                CHECK(u->actual_length == 8);
                return;
        }
        if (u->ep != 0 || !u->in)
                return;
        usb_setup_decode(u->setup, &s);
        if (usb_setup_type(&s) != USB_TYPE_CLASS || !usb_setup_is_in(&s))
                return;
        if (s.bRequest == 0x01) /* GET_REPORT */
                CHECK(u->actual_length <= 8);
        else if (s.bRequest == 0x02 || s.bRequest == 0x03) /* GET_IDLE, GET_PROTOCOL */
                CHECK(u->actual_length <= 1);
}

static void hid_event(FuzzCtrl *f, uint8_t tag, FuzzInput *in) {
        Keyboard *k = keyboard_from_device(f->target->device);

        switch ((tag >> 3) % 4) {
        case 0: {
                char text[9] = {};
                fuzz_bytes(in, (uint8_t *) text, fuzz_u8(in) % 9);
                int r = keyboard_type(k, text);
                CHECK(r >= 0 || r == -EINVAL || r == -ENOBUFS);
                break;
        }
        case 1: {
                static const uint8_t requests[] = { 0x01, 0x02, 0x03, 0x09, 0x0a, 0x0b };
                uint8_t request = requests[fuzz_u8(in) % sizeof(requests)];
                bool in_dir = request <= 0x03;
                uint16_t wValue = fuzz_le16(in), wLength = fuzz_u8(in) % 16;
                uint8_t setup[8] = { (uint8_t) ((in_dir ? USB_DIR_IN : 0) | USB_TYPE_CLASS | USB_RECIP_INTERFACE),
                                     request, wValue & 0xff, wValue >> 8, 0, 0, wLength & 0xff, 0 };
                fuzz_ctrl_submit(f, 0, in_dir, wLength, 0, setup, in);
                break;
        }
        case 2:
                fuzz_ctrl_submit(f, USB_DIR_IN | 1, true, fuzz_u8(in) % 16, 0, NULL, in);
                break;
        default: {
                uint8_t type = fuzz_u8(in) & 1 ? USB_DT_REPORT : USB_DT_HID;
                fuzz_ctrl_control(f, USB_DIR_IN | USB_RECIP_INTERFACE, USB_REQ_GET_DESCRIPTOR, type << 8, 0,
                                  fuzz_le16(in), NULL);
                break;
        }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const uint8_t leds[1] = { 0x01 };
        FuzzInput in = { data, size };
        UsbDevice *d = NULL;
        FuzzCtrl f;
        uint8_t flags;

        if (size < 1)
                return 0;
        fuzz_ctrl_log_setup();
        flags = fuzz_u8(&in);
        CHECK(keyboard_new("fuzzkbd", &d) >= 0);

        fuzz_ctrl_init(&f, d);
        f.on_complete = hid_complete;
        if (flags & FUZZ_CTRL_ENUMERATE) {
                fuzz_ctrl_enumerate(&f);
                fuzz_ctrl_control(&f, 0x21, 0x0a, 0, 0, 0, NULL);                      /* SET_IDLE(0) */
                fuzz_ctrl_control(&f, 0x81, USB_REQ_GET_DESCRIPTOR, USB_DT_REPORT << 8, 0, 63, NULL);
                fuzz_ctrl_control(&f, 0x21, 0x09, 0x0200, 0, 1, leds);                 /* SET_REPORT(LEDs) */
                fuzz_ctrl_submit(&f, USB_DIR_IN | 1, true, 8, 0, NULL, &in);
        }
        fuzz_ctrl_run(&f, &in, hid_event);

        usb_device_free(d);
        return 0;
}
