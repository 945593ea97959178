/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <stdio.h>

#include "keyboard.h"
#include "log.h"

#define KEYBOARD_EP (USB_DIR_IN | 1)
#define REPORT_SIZE 8

#define HID_REQ_GET_REPORT 0x01
#define HID_REQ_GET_IDLE 0x02
#define HID_REQ_GET_PROTOCOL 0x03
#define HID_REQ_SET_REPORT 0x09
#define HID_REQ_SET_IDLE 0x0a
#define HID_REQ_SET_PROTOCOL 0x0b

#define MOD_LSHIFT 0x02

/* The boot keyboard report descriptor of HID 1.11 appendix B.1: modifiers, reserved byte, 5 LEDs,
 * six key slots. */
static const uint8_t report_descriptor[] = {
        0x05, 0x01, 0x09, 0x06, 0xa1, 0x01, 0x05, 0x07, 0x19, 0xe0, 0x29, 0xe7, 0x15, 0x00, 0x25, 0x01,
        0x75, 0x01, 0x95, 0x08, 0x81, 0x02, 0x95, 0x01, 0x75, 0x08, 0x81, 0x01, 0x95, 0x05, 0x75, 0x01,
        0x05, 0x08, 0x19, 0x01, 0x29, 0x05, 0x91, 0x02, 0x95, 0x01, 0x75, 0x03, 0x91, 0x01, 0x95, 0x06,
        0x75, 0x08, 0x15, 0x00, 0x25, 0x65, 0x05, 0x07, 0x19, 0x00, 0x29, 0x65, 0x81, 0x00, 0xc0,
};

static const uint8_t hid_descriptor[] = {
        9, USB_DT_HID,
        0x11, 0x01,                      /* bcdHID 1.11 */
        0,                               /* no country */
        1, USB_DT_REPORT,
        sizeof(report_descriptor), 0,
};
assert_cc(sizeof(report_descriptor) == 63);

static const UsbEndpointDesc keyboard_endpoints[] = {
        {
                .bEndpointAddress = KEYBOARD_EP,
                .bmAttributes = USB_ENDPOINT_XFER_INT,
                .wMaxPacketSize = REPORT_SIZE,
                .bInterval = 7, /* 2^6 microframes = 8 ms */
        },
};

static const UsbInterfaceDesc keyboard_interfaces[] = {
        {
                .bInterfaceClass = USB_CLASS_HID,
                .bInterfaceSubClass = 1, /* boot interface */
                .bInterfaceProtocol = 1, /* keyboard */
                .bNumEndpoints = ELEMENTSOF(keyboard_endpoints),
                .endpoints = keyboard_endpoints,
                .extra = hid_descriptor,
                .extra_len = sizeof(hid_descriptor),
        },
};

static const UsbConfigDesc keyboard_configs[] = {
        {
                .bConfigurationValue = 1,
                .bmAttributes = USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_WAKEUP,
                .bMaxPower = 50,
                .bNumInterfaces = ELEMENTSOF(keyboard_interfaces),
                .interfaces = keyboard_interfaces,
        },
};

static const UsbDeviceDesc keyboard_device_desc = {
        .bcdUSB = 0x0200,
        .bMaxPacketSize0 = 64,
        .idVendor = 0x1209,
        .idProduct = 0x0003,
        .bcdDevice = 0x0100,
        .iManufacturer = 1,
        .iProduct = 2,
        .iSerialNumber = 3,
        .bNumConfigurations = ELEMENTSOF(keyboard_configs),
        .configs = keyboard_configs,
};

struct Keyboard {
        UsbDevice *device;
        uint8_t queue[KEYBOARD_QUEUE][REPORT_SIZE];
        unsigned head, n;
        uint8_t current[REPORT_SIZE];
        uint8_t leds, idle, protocol;
        uint64_t keys_typed, reports_sent;
};

/* HID usage (keyboard page) and shift for an ASCII character, or 0. */
static uint8_t usage_for(char c, bool *shift) {
        /* From usage 0x1e on; \x7f stands for keys a US layout does not type (Non-US # and ~). */
        static const char *const unshifted = "1234567890\n\x1b\b\t -=[]\\\x7f;'`,./";
        static const char *const shifted = "!@#$%^&*()";
        static const char *const shifted_punct = "_+{}|\x7f:\"~<>?";
        const char *p;

        *shift = false;
        if (c == 0x7f)
                return 0;
        if (c >= 'a' && c <= 'z')
                return (uint8_t) (0x04 + c - 'a');
        if (c >= 'A' && c <= 'Z') {
                *shift = true;
                return (uint8_t) (0x04 + c - 'A');
        }
        if (c && (p = strchr(unshifted, c)))
                return (uint8_t) (0x1e + (p - unshifted));
        if (c && (p = strchr(shifted, c))) {
                *shift = true;
                return (uint8_t) (0x1e + (p - shifted));
        }
        if (c && (p = strchr(shifted_punct, c))) {
                /* The shifted forms of "-=[]\\#;'`,./" in the same order. */
                *shift = true;
                return (uint8_t) (0x2d + (p - shifted_punct));
        }
        return 0;
}

static void push(Keyboard *k, uint8_t modifiers, uint8_t key) {
        uint8_t *r = k->queue[(k->head + k->n) % KEYBOARD_QUEUE];

        memset(r, 0, REPORT_SIZE);
        r[0] = modifiers;
        r[2] = key;
        k->n++;
}

int keyboard_type(Keyboard *k, const char *text) {
        size_t len = strlen(text);
        int r;

        for (size_t i = 0; i < len; i++) {
                bool shift;
                if (!usage_for(text[i], &shift))
                        return -EINVAL;
        }
        if (k->n + 2 * len > KEYBOARD_QUEUE)
                return -ENOBUFS;

        for (size_t i = 0; i < len; i++) {
                bool shift;
                uint8_t key = usage_for(text[i], &shift);
                push(k, shift ? MOD_LSHIFT : 0, key);
                push(k, 0, 0);
        }
        k->keys_typed += len;

        if (k->device->link == USB_LINK_SUSPENDED) {
                r = usb_device_signal_wakeup(k->device, false);
                if (r < 0)
                        log_info("%s: key press while suspended, no wakeup: %s", k->device->name,
                                 r == -EPERM ? "the host did not arm remote wakeup" :
                                 r == -EOPNOTSUPP ? "not behind a hub (a vhci root port cannot carry wakeup)" :
                                 strerror(-r));
        } else
                usb_device_kick(k->device);
        return (int) len;
}

static bool keyboard_in_ready(void *function, uint8_t ep) {
        return ((Keyboard *) function)->n > 0;
}

static ssize_t keyboard_transfer(void *function, uint8_t ep, uint8_t *data, size_t size) {
        Keyboard *k = function;

        if (ep != KEYBOARD_EP || size < REPORT_SIZE)
                return -EPIPE;
        if (k->n == 0)
                return -EAGAIN; /* idle rate 0: report only on change */
        memcpy(data, k->queue[k->head], REPORT_SIZE);
        memcpy(k->current, data, REPORT_SIZE);
        k->head = (k->head + 1) % KEYBOARD_QUEUE;
        k->n--;
        k->reports_sent++;
        return REPORT_SIZE;
}

static int keyboard_control(void *function, const UsbSetup *s, uint8_t *data, size_t size) {
        Keyboard *k = function;

        if (usb_setup_type(s) == USB_TYPE_STANDARD && s->bRequest == USB_REQ_GET_DESCRIPTOR) {
                const uint8_t *desc;
                size_t len;
                switch (s->wValue >> 8) {
                case USB_DT_REPORT:
                        desc = report_descriptor, len = sizeof(report_descriptor);
                        break;
                case USB_DT_HID:
                        desc = hid_descriptor, len = sizeof(hid_descriptor);
                        break;
                default:
                        return -EPIPE;
                }
                len = MIN(len, MIN(size, s->wLength));
                if (len > 0) /* data is NULL when wLength is 0 */
                        memcpy(data, desc, len);
                return (int) len;
        }
        if (usb_setup_type(s) != USB_TYPE_CLASS || usb_setup_recipient(s) != USB_RECIP_INTERFACE)
                return -EPIPE;

        switch (s->bRequest) {
        case HID_REQ_GET_REPORT: {
                size_t n = MIN((size_t) REPORT_SIZE, MIN(size, s->wLength));
                if (n > 0) /* data is NULL when wLength is 0 */
                        memcpy(data, k->current, n);
                return (int) n;
        }
        case HID_REQ_SET_REPORT:
                if (s->wLength >= 1 && size >= 1)
                        k->leds = data[0];
                return 0;
        case HID_REQ_GET_IDLE:
                if (size < 1)
                        return -EPIPE;
                data[0] = k->idle;
                return 1;
        case HID_REQ_SET_IDLE:
                k->idle = (uint8_t) (s->wValue >> 8);
                return 0;
        case HID_REQ_GET_PROTOCOL:
                if (size < 1)
                        return -EPIPE;
                data[0] = k->protocol;
                return 1;
        case HID_REQ_SET_PROTOCOL:
                k->protocol = (uint8_t) s->wValue;
                return 0;
        default:
                return -EPIPE;
        }
}

static void keyboard_bus_reset(void *function) {
        Keyboard *k = function;
        k->protocol = 1; /* report protocol after reset */
        k->idle = 0;
}

static void keyboard_describe(void *function, FILE *f) {
        Keyboard *k = function;
        fprintf(f, "\"function\": \"keyboard\", \"queued_reports\": %u, \"keys_typed\": %" PRIu64
                ", \"reports_sent\": %" PRIu64 ", \"leds\": %u", k->n, k->keys_typed, k->reports_sent, k->leds);
}

static void keyboard_free(void *function) {
        free(function);
}

static const UsbFunctionOps keyboard_ops = {
        .control = keyboard_control,
        .transfer = keyboard_transfer,
        .in_ready = keyboard_in_ready,
        .bus_reset = keyboard_bus_reset,
        .describe = keyboard_describe,
        .free = keyboard_free,
};

Keyboard *keyboard_from_device(UsbDevice *d) {
        return d && d->ops == &keyboard_ops ? d->function : NULL;
}

int keyboard_new(const char *name, UsbDevice **ret) {
        _cleanup_(usb_device_freep) UsbDevice *d = NULL;
        Keyboard *k;
        int r;

        r = usb_device_new(name, &keyboard_device_desc, USB_SPEED_HIGH, &d);
        if (r < 0)
                return r;
        k = calloc(1, sizeof(Keyboard));
        if (!k)
                return -ENOMEM;
        k->device = d;
        k->protocol = 1;
        usb_device_set_function(d, &keyboard_ops, k);
        if (usb_device_set_string(d, 1, "drowse") < 0 || usb_device_set_string(d, 2, "drowse virtual keyboard") < 0 ||
            usb_device_set_string(d, 3, name) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(d);
        return 0;
}
