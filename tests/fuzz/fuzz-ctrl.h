/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The harness shared by the fuzz-ctrl-* targets: a device model (disk, hub, keyboard) is driven through
 * usb_device_submit() exactly as a connection drives it, by a sequence of URBs decoded from the input,
 * and every completion is checked against what the host asked for.
 *
 * Input: one flags byte (FUZZ_CTRL_ENUMERATE: first replay the kernel's enumeration; bits 1..7 are the
 * target's), then records until the input ends, each starting with a tag byte t:
 *
 *   t % 8 == 0  control URB on ep0: 8 setup bytes; transfer_buffer_length by (t >> 3) & 3:
 *               0 = wLength (what the kernel sends), 1 = a le16 from the input, 2 = 0, 3 = wLength + a byte;
 *               the URB's direction is the setup's, or the opposite with t & 0x20; an OUT URB's data follows.
 *   t % 8 == 1  URB on another endpoint: an endpoint address byte (bit 7 = IN), a le16 length, the data of
 *               an OUT URB; t & 0x08 sets URB_SHORT_NOT_OK.
 *   t % 8 == 2  CMD_UNLINK of the URB submitted (byte + 1) URBs ago.
 *   t % 8 == 3  time passes: byte * 10 ms (silence then GET_STATUS is an inferred resume).
 *   t % 8 == 4  the upstream link changes to byte % 3 (connected, suspended, unplugged), unless the
 *               target's links belong to a hub model.
 *   t % 8 == 5  USB bus reset.
 *   t % 8 == 6  kick: waiting URBs are retried.
 *   t % 8 == 7  a target-specific event, which reads what it needs.
 *
 * Checked on every completion: a status is 0 or a negative errno; a failed URB moves no data (except
 * -EREMOTEIO, a short IN transfer); an IN control reply is at most wLength and transfer_buffer_length; a
 * successful OUT control URB consumed all its data. At the end, the device's count of waiting URBs is
 * exactly what was submitted and neither completed nor unlinked, and at most USB_DEVICE_MAX_PENDING. */

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "log.h"
#include "urb.h"
#include "usb-device.h"
#include "usbip.h"

#define FUZZ_CTRL_ENUMERATE 0x01
#define FUZZ_CTRL_MAX_RECORDS 4096

typedef struct FuzzInput {
        const uint8_t *p;
        size_t left;
} FuzzInput;

static inline uint8_t fuzz_u8(FuzzInput *in) {
        if (in->left == 0)
                return 0;
        in->left--;
        return *in->p++;
}

static inline uint16_t fuzz_le16(FuzzInput *in) {
        uint16_t lo = fuzz_u8(in);
        return (uint16_t) (lo | fuzz_u8(in) << 8);
}

static inline uint32_t fuzz_le32(FuzzInput *in) {
        uint32_t lo = fuzz_le16(in);
        return lo | (uint32_t) fuzz_le16(in) << 16;
}

/* What the input has of n bytes, zeros after its end. */
static inline void fuzz_bytes(FuzzInput *in, uint8_t *dst, size_t n) {
        size_t k = n < in->left ? n : in->left;
        memcpy(dst, in->p, k);
        memset(dst + k, 0, n - k);
        in->p += k;
        in->left -= k;
}

typedef struct FuzzCtrl FuzzCtrl;

/* Called for every completion before the generic checks, with the URB still intact. */
typedef void (*FuzzCtrlCompleteFunc)(FuzzCtrl *f, const Urb *u);

#define FUZZ_CTRL_MAX_TARGETS 8

typedef struct FuzzTarget {
        FuzzCtrl *ctrl;
        UsbDevice *device;
        unsigned outstanding;      /* submitted to this device, not completed or unlinked */
} FuzzTarget;

struct FuzzCtrl {
        FuzzTarget targets[FUZZ_CTRL_MAX_TARGETS];
        unsigned n_targets;
        FuzzTarget *target;        /* where URBs go */
        uint32_t seqnum;
        uint64_t now;
        uint64_t completed;
        FuzzCtrlCompleteFunc on_complete;
        void (*after_step)(FuzzCtrl *f);   /* the target's invariants, checked after every record */
        bool no_link_events;               /* a hub moves its children's links, not the input */
        void *userdata;
};

static inline void fuzz_ctrl_init(FuzzCtrl *f, UsbDevice *d) {
        *f = (FuzzCtrl) {};
        f->targets[0] = (FuzzTarget) { .ctrl = f, .device = d };
        f->n_targets = 1;
        f->target = &f->targets[0];
        f->now = 1000000;
}

static inline FuzzTarget *fuzz_ctrl_add_target(FuzzCtrl *f, UsbDevice *d) {
        CHECK(f->n_targets < FUZZ_CTRL_MAX_TARGETS);
        f->targets[f->n_targets] = (FuzzTarget) { .ctrl = f, .device = d };
        return &f->targets[f->n_targets++];
}

static inline void fuzz_ctrl_log_setup(void) {
        static bool done;
        if (done)
                return;
        /* Quiet by default (libFuzzer's own output stays readable); DROWSE_LOG_LEVEL=debug for a replay. */
        log_set_max_level(LOG_CRIT);
        log_parse_environment();
        done = true;
}

static void fuzz_ctrl_urb_done(Urb *u, void *userdata) {
        FuzzTarget *t = userdata;
        FuzzCtrl *f = t->ctrl;
        UsbSetup s;

        if (f->on_complete)
                f->on_complete(f, u);

        CHECK(u->status <= 0);
        CHECK(u->status == 0 || u->status == -EREMOTEIO || u->actual_length == 0);
        if (u->in)
                CHECK(u->actual_length <= u->length);
        if (u->ep == 0) {
                usb_setup_decode(u->setup, &s);
                if (u->status == 0 && usb_setup_is_in(&s)) {
                        CHECK(u->actual_length <= s.wLength);
                        CHECK(u->actual_length <= u->length);
                }
                if (u->status == 0 && !usb_setup_is_in(&s) && !u->in)
                        CHECK(u->actual_length == u->length);
        }
        CHECK(t->outstanding > 0);
        t->outstanding--;
        f->completed++;
        urb_free(u);
}

/* Submits one URB as a connection does: OUT data is in its buffer first. */
static inline void fuzz_ctrl_submit(FuzzCtrl *f, uint8_t ep, bool in, uint32_t length, uint32_t flags,
                                    const uint8_t setup[8], FuzzInput *data) {
        Urb *u = NULL;

        if (urb_new(++f->seqnum, ep & 0x0f, in, length, &u) < 0)
                return;
        u->transfer_flags = flags;
        if (setup)
                memcpy(u->setup, setup, 8);
        u->complete = fuzz_ctrl_urb_done;
        u->userdata = f->target;
        if (!in && length > 0) {
                CHECK(urb_ensure_buffer(u) >= 0);
                fuzz_bytes(data, urb_data(u), length);
        }
        f->target->outstanding++;
        if (usb_device_submit(f->target->device, u, f->now) < 0) {
                /* Refused (too many waiting): the caller still owns it, as connection.c frees it. */
                f->target->outstanding--;
                urb_free(u);
        }
        CHECK(f->target->device->n_pending <= USB_DEVICE_MAX_PENDING);
}

static inline void fuzz_ctrl_control(FuzzCtrl *f, uint8_t bmRequestType, uint8_t bRequest, uint16_t wValue,
                                     uint16_t wIndex, uint16_t wLength, const uint8_t *out_data) {
        uint8_t setup[8] = { bmRequestType, bRequest, wValue & 0xff, wValue >> 8,
                             wIndex & 0xff, wIndex >> 8, wLength & 0xff, wLength >> 8 };
        FuzzInput data = { out_data, out_data ? wLength : 0 };

        fuzz_ctrl_submit(f, 0, bmRequestType & USB_DIR_IN, wLength, 0, setup, &data);
}

/* What the kernel sends to a new device (kernel-deep-dive §1.3): the address-0 device descriptor read,
 * SET_ADDRESS (swallowed by vhci), the descriptors, the strings and SET_CONFIGURATION(1). */
static inline void fuzz_ctrl_enumerate(FuzzCtrl *f) {
        fuzz_ctrl_control(f, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_DEVICE << 8, 0, 64, NULL);
        fuzz_ctrl_control(f, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_DEVICE << 8, 0, 18, NULL);
        fuzz_ctrl_control(f, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_BOS << 8, 0, 5, NULL);
        fuzz_ctrl_control(f, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_CONFIG << 8, 0, 9, NULL);
        fuzz_ctrl_control(f, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_CONFIG << 8, 0, 255, NULL);
        fuzz_ctrl_control(f, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_STRING << 8, 0, 255, NULL);
        for (uint16_t i = 1; i <= 3; i++)
                fuzz_ctrl_control(f, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_STRING << 8 | i, 0x0409, 255, NULL);
        fuzz_ctrl_control(f, 0x00, USB_REQ_SET_CONFIGURATION, 1, 0, 0, NULL);
}

typedef void (*FuzzCtrlEventFunc)(FuzzCtrl *f, uint8_t tag, FuzzInput *in);

/* Runs the records of the input against f->target. */
static inline void fuzz_ctrl_run(FuzzCtrl *f, FuzzInput *in, FuzzCtrlEventFunc event) {
        for (unsigned records = 0; in->left > 0 && records < FUZZ_CTRL_MAX_RECORDS; records++) {
                uint8_t t = fuzz_u8(in);

                switch (t % 8) {
                case 0: {
                        uint8_t setup[8];
                        UsbSetup s;
                        uint32_t length;
                        bool in_dir;

                        fuzz_bytes(in, setup, sizeof(setup));
                        usb_setup_decode(setup, &s);
                        switch ((t >> 3) & 3) {
                        case 0:
                                length = s.wLength;
                                break;
                        case 1:
                                length = fuzz_le16(in);
                                break;
                        case 2:
                                length = 0;
                                break;
                        default:
                                length = (uint32_t) s.wLength + fuzz_u8(in);
                                break;
                        }
                        in_dir = usb_setup_is_in(&s) != !!(t & 0x20);
                        fuzz_ctrl_submit(f, 0, in_dir, length, 0, setup, in);
                        break;
                }
                case 1: {
                        uint8_t address = fuzz_u8(in);
                        uint16_t length = fuzz_le16(in);
                        fuzz_ctrl_submit(f, address, address & USB_DIR_IN, length,
                                         t & 0x08 ? USBIP_URB_SHORT_NOT_OK : 0, NULL, in);
                        break;
                }
                case 2: {
                        uint32_t back = (uint32_t) fuzz_u8(in) + 1;
                        Urb *u = usb_device_unlink(f->target->device, f->seqnum - back);
                        if (u) {
                                CHECK(f->target->outstanding > 0);
                                f->target->outstanding--;
                                urb_free(u);
                        }
                        break;
                }
                case 3:
                        f->now += (uint64_t) fuzz_u8(in) * 10000;
                        break;
                case 4:
                        if (f->no_link_events) {
                                (void) fuzz_u8(in);
                                break;
                        }
                        usb_device_set_link(f->target->device, (UsbLinkState) (fuzz_u8(in) % _USB_LINK_STATE_MAX), f->now);
                        break;
                case 5:
                        usb_device_bus_reset(f->target->device);
                        break;
                case 6:
                        usb_device_kick(f->target->device);
                        break;
                default:
                        if (event)
                                event(f, t, in);
                        break;
                }
                for (unsigned i = 0; i < f->n_targets; i++)
                        CHECK(f->targets[i].device->n_pending == f->targets[i].outstanding);
                if (f->after_step)
                        f->after_step(f);
                f->now += 1000;
        }
}

/* A disk for the targets that need one: images in a private directory made once per process, reopened
 * by every run (so, as on a real unit, what one run wrote is there for the next), removed at exit. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "disk.h"
#include "emu-config.h"

#define FUZZ_CTRL_DISK_BLOCKS 64

static char fuzz_ctrl_dir[64];

static void fuzz_ctrl_cleanup_dir(void) {
        char path[sizeof(fuzz_ctrl_dir) + 16];

        for (unsigned i = 0; i < 2; i++) {
                snprintf(path, sizeof(path), "%s/lun%u.img", fuzz_ctrl_dir, i);
                (void) unlink(path);
        }
        (void) rmdir(fuzz_ctrl_dir);
}

static inline UsbDevice *fuzz_ctrl_disk_new(unsigned n_luns, UsbSpeed speed) {
        char path0[sizeof(fuzz_ctrl_dir) + 16], path1[sizeof(fuzz_ctrl_dir) + 16];
        UsbDevice *d = NULL;

        if (fuzz_ctrl_dir[0] == 0) {
                snprintf(fuzz_ctrl_dir, sizeof(fuzz_ctrl_dir), "/tmp/drowse-fuzz-ctrl-XXXXXX");
                CHECK(mkdtemp(fuzz_ctrl_dir));
                atexit(fuzz_ctrl_cleanup_dir);
        }
        snprintf(path0, sizeof(path0), "%s/lun0.img", fuzz_ctrl_dir);
        snprintf(path1, sizeof(path1), "%s/lun1.img", fuzz_ctrl_dir);

        DiskConfig cfg = {
                .name = (char *) "fuzzdisk",
                .image = path0,
                .lun_images = { path1 },
                .n_extra_luns = n_luns > 1,
                .size = FUZZ_CTRL_DISK_BLOCKS * 512,
                .removable = true,
                .speed = speed,
                .serial = (char *) "FUZZ0001",
        };
        CHECK(disk_new(&cfg, &d) >= 0);
        return d;
}
