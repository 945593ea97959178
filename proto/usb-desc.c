/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "bot.h"
#include "usb-desc.h"
#include "usb.h"

/* Byte offsets of the multi-byte and derived fields; every other byte is written at its offset
 * in the encoders below, with the spec table named where it is built. */
assert_cc(USB_DT_DEVICE_SIZE == 18);
assert_cc(USB_DT_CONFIG_SIZE == 9);
assert_cc(USB_DT_INTERFACE_SIZE == 9);
assert_cc(USB_DT_ENDPOINT_SIZE == 7);
assert_cc(USB_DT_SS_EP_COMP_SIZE == 6);
assert_cc(USB_DT_DEVICE_QUALIFIER_SIZE == 10);
assert_cc(USB_DT_BOS_SIZE + USB_DT_USB_EXT_CAP_SIZE + USB_DT_USB_SS_CAP_SIZE == 22);
assert_cc(2 + 2 * USB_STRING_MAX_UNITS <= 255);
assert_cc(USB_HUB_MAX_PORTS < sizeof(uint32_t) * 8);

static const char *const usb_speed_table[_USB_SPEED_MAX] = {
        [USB_SPEED_UNKNOWN] = "unknown",
        [USB_SPEED_LOW] = "low",
        [USB_SPEED_FULL] = "full",
        [USB_SPEED_HIGH] = "high",
        [USB_SPEED_WIRELESS] = "wireless",
        [USB_SPEED_SUPER] = "super",
        [USB_SPEED_SUPER_PLUS] = "super-plus",
};

DEFINE_STRING_TABLE_LOOKUP(usb_speed, UsbSpeed);

/* ---- SETUP packet ---- */

void usb_setup_decode(const uint8_t raw[static USB_SETUP_SIZE], UsbSetup *ret) {
        *ret = (UsbSetup) {
                .bmRequestType = raw[0],
                .bRequest = raw[1],
                .wValue = get_le16(raw + 2),
                .wIndex = get_le16(raw + 4),
                .wLength = get_le16(raw + 6),
        };
}

void usb_setup_encode(uint8_t raw[static USB_SETUP_SIZE], const UsbSetup *s) {
        raw[0] = s->bmRequestType;
        raw[1] = s->bRequest;
        put_le16(raw + 2, s->wValue);
        put_le16(raw + 4, s->wIndex);
        put_le16(raw + 6, s->wLength);
}

static const char *const usb_request_table[] = {
        [USB_REQ_GET_STATUS] = "GET_STATUS",
        [USB_REQ_CLEAR_FEATURE] = "CLEAR_FEATURE",
        [USB_REQ_SET_FEATURE] = "SET_FEATURE",
        [USB_REQ_SET_ADDRESS] = "SET_ADDRESS",
        [USB_REQ_GET_DESCRIPTOR] = "GET_DESCRIPTOR",
        [USB_REQ_SET_DESCRIPTOR] = "SET_DESCRIPTOR",
        [USB_REQ_GET_CONFIGURATION] = "GET_CONFIGURATION",
        [USB_REQ_SET_CONFIGURATION] = "SET_CONFIGURATION",
        [USB_REQ_GET_INTERFACE] = "GET_INTERFACE",
        [USB_REQ_SET_INTERFACE] = "SET_INTERFACE",
        [USB_REQ_SYNCH_FRAME] = "SYNCH_FRAME",
        [USB_REQ_SET_SEL] = "SET_SEL",
        [USB_REQ_SET_ISOCH_DELAY] = "SET_ISOCH_DELAY",
};

DEFINE_STRING_TABLE_TO_STRING(usb_request, uint8_t);

static const char *const usb_descriptor_type_table[] = {
        [USB_DT_DEVICE] = "DEVICE",
        [USB_DT_CONFIG] = "CONFIG",
        [USB_DT_STRING] = "STRING",
        [USB_DT_INTERFACE] = "INTERFACE",
        [USB_DT_ENDPOINT] = "ENDPOINT",
        [USB_DT_DEVICE_QUALIFIER] = "DEVICE_QUALIFIER",
        [USB_DT_OTHER_SPEED_CONFIG] = "OTHER_SPEED_CONFIG",
        [USB_DT_INTERFACE_POWER] = "INTERFACE_POWER",
        [USB_DT_OTG] = "OTG",
        [USB_DT_DEBUG] = "DEBUG",
        [USB_DT_INTERFACE_ASSOCIATION] = "INTERFACE_ASSOCIATION",
        [USB_DT_BOS] = "BOS",
        [USB_DT_DEVICE_CAPABILITY] = "DEVICE_CAPABILITY",
        [USB_DT_HID] = "HID",
        [USB_DT_REPORT] = "REPORT",
        [USB_DT_HUB] = "HUB",
        [USB_DT_SS_HUB] = "SS_HUB",
        [USB_DT_SS_ENDPOINT_COMP] = "SS_ENDPOINT_COMP",
};

DEFINE_STRING_TABLE_TO_STRING(usb_descriptor_type, uint8_t);

static const char *const usb_port_feature_table[] = {
        [USB_PORT_FEAT_CONNECTION] = "CONNECTION",
        [USB_PORT_FEAT_ENABLE] = "ENABLE",
        [USB_PORT_FEAT_SUSPEND] = "SUSPEND",
        [USB_PORT_FEAT_OVER_CURRENT] = "OVER_CURRENT",
        [USB_PORT_FEAT_RESET] = "RESET",
        [USB_PORT_FEAT_POWER] = "POWER",
        [USB_PORT_FEAT_LOWSPEED] = "LOWSPEED",
        [USB_PORT_FEAT_C_CONNECTION] = "C_CONNECTION",
        [USB_PORT_FEAT_C_ENABLE] = "C_ENABLE",
        [USB_PORT_FEAT_C_SUSPEND] = "C_SUSPEND",
        [USB_PORT_FEAT_C_OVER_CURRENT] = "C_OVER_CURRENT",
        [USB_PORT_FEAT_C_RESET] = "C_RESET",
        [USB_PORT_FEAT_TEST] = "TEST",
        [USB_PORT_FEAT_INDICATOR] = "INDICATOR",
};

static const char *const usb_hub_feature_table[] = {
        [USB_HUB_FEAT_C_LOCAL_POWER] = "C_HUB_LOCAL_POWER",
        [USB_HUB_FEAT_C_OVER_CURRENT] = "C_HUB_OVER_CURRENT",
};

static const char *const usb_type_table[] = { "std", "class", "vendor", "reserved" };
static const char *const usb_recipient_table[] = { "device", "interface", "endpoint", "other" };

#define TABLE_LOOKUP(table, i) ((size_t) (i) < ELEMENTSOF(table) ? (table)[i] : NULL)

/* snprintf() into the rest of buf, counting what would have been written once buf is full. */
_printf_(4, 5) static void append(char *buf, size_t size, size_t *pos, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        if (*pos < size)
                r = vsnprintf(buf + *pos, size - *pos, fmt, ap);
        else
                r = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (r > 0)
                *pos += (size_t) r;
}

static void append_name(char *buf, size_t size, size_t *pos, const char *name, unsigned value) {
        if (name)
                append(buf, size, pos, "%s", name);
        else
                append(buf, size, pos, "%u", value);
}

static void append_descriptor(char *buf, size_t size, size_t *pos, const UsbSetup *s) {
        uint8_t type = s->wValue >> 8, index = s->wValue & 0xff;
        const char *name = usb_descriptor_type_to_string(type);

        if (name)
                append(buf, size, pos, "(%s", name);
        else
                append(buf, size, pos, "(0x%02x", type);
        /* String descriptor 0 is the LANGID table, so a string index is always worth showing. */
        if (index != 0 || type == USB_DT_STRING)
                append(buf, size, pos, " %u", index);
        append(buf, size, pos, ", %u)", s->wLength);
}

static void format_standard(char *buf, size_t size, size_t *pos, const UsbSetup *s) {
        const char *name = usb_request_to_string(s->bRequest);
        uint8_t recip = usb_setup_recipient(s);

        if (!name) {
                append(buf, size, pos, "REQUEST_0x%02x", s->bRequest);
                return;
        }
        append(buf, size, pos, "%s", name);

        switch (s->bRequest) {
        case USB_REQ_GET_DESCRIPTOR:
        case USB_REQ_SET_DESCRIPTOR:
                append_descriptor(buf, size, pos, s);
                break;
        case USB_REQ_SET_FEATURE:
        case USB_REQ_CLEAR_FEATURE: {
                const char *f = NULL;
                if (recip == USB_RECIP_DEVICE && s->wValue == USB_DEVICE_REMOTE_WAKEUP)
                        f = "DEVICE_REMOTE_WAKEUP";
                else if (recip == USB_RECIP_DEVICE && s->wValue == USB_DEVICE_TEST_MODE)
                        f = "TEST_MODE";
                else if (recip == USB_RECIP_ENDPOINT && s->wValue == USB_ENDPOINT_HALT)
                        f = "ENDPOINT_HALT";
                append(buf, size, pos, "(");
                append_name(buf, size, pos, f, s->wValue);
                append(buf, size, pos, ")");
                if (recip == USB_RECIP_ENDPOINT)
                        append(buf, size, pos, " ep 0x%02x", s->wIndex & 0xff);
                else if (recip == USB_RECIP_INTERFACE)
                        append(buf, size, pos, " intf %u", s->wIndex & 0xff);
                break;
        }
        case USB_REQ_GET_STATUS:
                if (recip == USB_RECIP_ENDPOINT)
                        append(buf, size, pos, " ep 0x%02x", s->wIndex & 0xff);
                else if (recip == USB_RECIP_INTERFACE)
                        append(buf, size, pos, " intf %u", s->wIndex & 0xff);
                break;
        case USB_REQ_SET_ADDRESS:
        case USB_REQ_SET_CONFIGURATION:
                append(buf, size, pos, "(%u)", s->wValue);
                break;
        case USB_REQ_SET_INTERFACE:
                append(buf, size, pos, "(%u, alt %u)", s->wIndex, s->wValue);
                break;
        case USB_REQ_GET_INTERFACE:
                append(buf, size, pos, "(%u)", s->wIndex);
                break;
        }
}

/* Hub requests (USB 2.0 11.24.2): the recipient tells hub from port requests. */
static void format_class(char *buf, size_t size, size_t *pos, const UsbSetup *s) {
        uint8_t recip = usb_setup_recipient(s);
        bool port = recip == USB_RECIP_OTHER, hub = recip == USB_RECIP_DEVICE;
        const char *name = NULL;

        switch (s->bRequest) {
        case USB_REQ_GET_STATUS:
                name = port ? "GET_PORT_STATUS" : hub ? "GET_HUB_STATUS" : NULL;
                break;
        case USB_REQ_CLEAR_FEATURE:
                name = port ? "CLEAR_PORT_FEATURE" : hub ? "CLEAR_HUB_FEATURE" : NULL;
                break;
        case USB_REQ_SET_FEATURE:
                name = port ? "SET_PORT_FEATURE" : hub ? "SET_HUB_FEATURE" : NULL;
                break;
        case USB_REQ_GET_DESCRIPTOR:
                name = hub ? "GET_HUB_DESCRIPTOR" : NULL;
                break;
        case USB_REQ_SET_DESCRIPTOR:
                name = hub ? "SET_HUB_DESCRIPTOR" : NULL;
                break;
        case USB_REQ_CLEAR_TT_BUFFER:
                name = port ? "CLEAR_TT_BUFFER" : NULL;
                break;
        case USB_REQ_RESET_TT:
                name = port ? "RESET_TT" : NULL;
                break;
        case USB_REQ_GET_TT_STATE:
                name = port ? "GET_TT_STATE" : NULL;
                break;
        case USB_REQ_STOP_TT:
                name = port ? "STOP_TT" : NULL;
                break;
        case BOT_REQ_GET_MAX_LUN:
                name = recip == USB_RECIP_INTERFACE ? "GET_MAX_LUN" : NULL;
                break;
        case BOT_REQ_RESET:
                name = recip == USB_RECIP_INTERFACE ? "BULK_ONLY_RESET" : NULL;
                break;
        }

        if (!name) {
                append(buf, size, pos, "CLASS_REQUEST_0x%02x", s->bRequest);
                return;
        }
        append(buf, size, pos, "%s", name);

        switch (s->bRequest) {
        case USB_REQ_GET_DESCRIPTOR:
        case USB_REQ_SET_DESCRIPTOR:
                append_descriptor(buf, size, pos, s);
                break;
        case USB_REQ_SET_FEATURE:
        case USB_REQ_CLEAR_FEATURE:
                append(buf, size, pos, "(");
                append_name(buf, size, pos,
                            port ? TABLE_LOOKUP(usb_port_feature_table, s->wValue)
                                 : TABLE_LOOKUP(usb_hub_feature_table, s->wValue),
                            s->wValue);
                append(buf, size, pos, ")");
                break;
        }
        if (port)
                append(buf, size, pos, " port %u", s->wIndex & 0xff);
        else if (recip == USB_RECIP_INTERFACE)
                append(buf, size, pos, " intf %u", s->wIndex & 0xff);
}

int usb_setup_format(const UsbSetup *s, char *buf, size_t size) {
        size_t pos = 0;
        const char *recip;

        if (size > 0)
                buf[0] = '\0';

        switch (usb_setup_type(s)) {
        case USB_TYPE_STANDARD:
                format_standard(buf, size, &pos, s);
                break;
        case USB_TYPE_CLASS:
                format_class(buf, size, &pos, s);
                break;
        default:
                append(buf, size, &pos, "%s_REQUEST_0x%02x",
                       usb_setup_type(s) == USB_TYPE_VENDOR ? "VENDOR" : "RESERVED", s->bRequest);
                break;
        }

        recip = TABLE_LOOKUP(usb_recipient_table, usb_setup_recipient(s));
        append(buf, size, &pos, " type=%s recip=%s wValue=0x%04x wIndex=0x%04x wLength=%u",
               usb_type_table[usb_setup_type(s) >> 5], recip ?: "reserved", s->wValue, s->wIndex,
               s->wLength);

        return (int) MIN(pos, (size_t) INT32_MAX);
}

/* ---- Encoders ---- */

/* Writes what fits of the descriptor stream and counts all of it: the caller learns the full
 * length from a truncated GET_DESCRIPTOR buffer in the same pass. */
typedef struct DescWriter {
        uint8_t *buf;
        size_t size;
        size_t pos;
} DescWriter;

static void writer_put(DescWriter *w, const uint8_t *data, size_t n) {
        if (w->pos < w->size)
                memcpy(w->buf + w->pos, data, MIN(n, w->size - w->pos));
        w->pos += n;
}

static int writer_finish(const DescWriter *w) {
        /* Every wTotalLength is 16 bits; nothing this encoder emits may be longer. */
        if (w->pos > UINT16_MAX)
                return -EINVAL;
        return (int) w->pos;
}

typedef enum SpeedClass {
        SPEED_CLASS_LOW,
        SPEED_CLASS_FULL,
        SPEED_CLASS_HIGH,
        SPEED_CLASS_SUPER,
} SpeedClass;

/* Wireless USB has its own descriptors, and unknown is no speed at all: neither can be encoded. */
static int speed_class(UsbSpeed speed, SpeedClass *ret) {
        switch (speed) {
        case USB_SPEED_LOW:
                *ret = SPEED_CLASS_LOW;
                return 0;
        case USB_SPEED_FULL:
                *ret = SPEED_CLASS_FULL;
                return 0;
        case USB_SPEED_HIGH:
                *ret = SPEED_CLASS_HIGH;
                return 0;
        case USB_SPEED_SUPER:
        case USB_SPEED_SUPER_PLUS:
                *ret = SPEED_CLASS_SUPER;
                return 0;
        case USB_SPEED_UNKNOWN:
        case USB_SPEED_WIRELESS:
        case _USB_SPEED_MAX:
        case _USB_SPEED_INVALID:
                break;
        }
        return -EINVAL;
}

static bool is_ep0_packet_size(uint8_t v) {
        return v == 8 || v == 16 || v == 32 || v == 64;
}

/* USB 3.2 9.6.1: bcdUSB 0x0300+ only at SuperSpeed; a USB 3 device below it says 0x0210. */
static uint16_t device_bcd_usb(uint16_t bcd, SpeedClass sc) {
        switch (sc) {
        case SPEED_CLASS_SUPER:
                return MAX(bcd, 0x0300);
        case SPEED_CLASS_HIGH:
                return bcd >= 0x0300 ? 0x0210 : MAX(bcd, 0x0200);
        case SPEED_CLASS_LOW:
        case SPEED_CLASS_FULL:
                return bcd >= 0x0300 ? 0x0210 : bcd;
        }
        return bcd;
}

int usb_desc_encode_device(const UsbDeviceDesc *d, UsbSpeed speed, uint8_t *buf, size_t size) {
        uint8_t b[USB_DT_DEVICE_SIZE], mps0 = 0;
        DescWriter w = { buf, size, 0 };
        SpeedClass sc;
        int r;

        r = speed_class(speed, &sc);
        if (r < 0)
                return r;

        /* USB 2.0 5.5.3 and USB 3.2 9.6.1: only full speed lets the device choose. */
        switch (sc) {
        case SPEED_CLASS_LOW:
                mps0 = 8;
                break;
        case SPEED_CLASS_FULL:
                if (!is_ep0_packet_size(d->bMaxPacketSize0))
                        return -EINVAL;
                mps0 = d->bMaxPacketSize0;
                break;
        case SPEED_CLASS_HIGH:
                mps0 = 64;
                break;
        case SPEED_CLASS_SUPER:
                mps0 = 9; /* 2^9 = 512 */
                break;
        }

        b[0] = USB_DT_DEVICE_SIZE;
        b[1] = USB_DT_DEVICE;
        put_le16(b + 2, device_bcd_usb(d->bcdUSB, sc));
        b[4] = d->bDeviceClass;
        b[5] = d->bDeviceSubClass;
        b[6] = d->bDeviceProtocol;
        b[7] = mps0;
        put_le16(b + 8, d->idVendor);
        put_le16(b + 10, d->idProduct);
        put_le16(b + 12, d->bcdDevice);
        b[14] = d->iManufacturer;
        b[15] = d->iProduct;
        b[16] = d->iSerialNumber;
        b[17] = d->bNumConfigurations;
        writer_put(&w, b, sizeof(b));
        return writer_finish(&w);
}

int usb_desc_encode_qualifier(const UsbDeviceDesc *d, uint8_t *buf, size_t size) {
        uint8_t b[USB_DT_DEVICE_QUALIFIER_SIZE];
        DescWriter w = { buf, size, 0 };

        /* The qualifier describes the other of full and high speed; 64 is the only ep0 size valid
         * at high speed, and at full speed the table's must be a legal one. */
        if (!is_ep0_packet_size(d->bMaxPacketSize0))
                return -EINVAL;

        b[0] = USB_DT_DEVICE_QUALIFIER_SIZE;
        b[1] = USB_DT_DEVICE_QUALIFIER;
        put_le16(b + 2, d->bcdUSB >= 0x0300 ? 0x0210 : MAX(d->bcdUSB, 0x0200));
        b[4] = d->bDeviceClass;
        b[5] = d->bDeviceSubClass;
        b[6] = d->bDeviceProtocol;
        b[7] = d->bMaxPacketSize0;
        b[8] = d->bNumConfigurations;
        b[9] = 0; /* bReserved */
        writer_put(&w, b, sizeof(b));
        return writer_finish(&w);
}

/* USB 2.0 9.6.6 and 5.6-5.8: what the endpoint's wire wMaxPacketSize is at this speed, and whether
 * its bInterval is valid there. */
static int endpoint_max_packet(const UsbEndpointDesc *e, SpeedClass sc, uint16_t *ret) {
        uint16_t mps = e->wMaxPacketSize, size = mps & 0x7ff, mult = (mps >> 11) & 0x3;
        bool high_mult_ok = sc == SPEED_CLASS_HIGH && mult <= 2;

        if (mps & 0xe000)
                return -EINVAL;
        if (mult != 0 && !high_mult_ok)
                return -EINVAL;

        switch (e->bmAttributes & USB_ENDPOINT_XFERTYPE_MASK) {
        case USB_ENDPOINT_XFER_CONTROL:
                *ret = mps;
                return 0;

        case USB_ENDPOINT_XFER_BULK:
                switch (sc) {
                case SPEED_CLASS_LOW:
                        return -EINVAL; /* no bulk at low speed */
                case SPEED_CLASS_FULL:
                        *ret = size == 8 || size == 16 || size == 32 ? size : 64;
                        return 0;
                case SPEED_CLASS_HIGH:
                        *ret = 512;
                        return 0;
                case SPEED_CLASS_SUPER:
                        *ret = 1024;
                        return 0;
                }
                return -EINVAL;

        case USB_ENDPOINT_XFER_INT:
                switch (sc) {
                case SPEED_CLASS_LOW:
                        if (size > 8 || e->bInterval == 0)
                                return -EINVAL;
                        break;
                case SPEED_CLASS_FULL:
                        if (size > 64 || e->bInterval == 0)
                                return -EINVAL;
                        break;
                case SPEED_CLASS_HIGH:
                case SPEED_CLASS_SUPER:
                        if (size > 1024 || e->bInterval < 1 || e->bInterval > 16)
                                return -EINVAL;
                        break;
                }
                *ret = mps;
                return 0;

        case USB_ENDPOINT_XFER_ISOC:
                if (e->bInterval < 1 || e->bInterval > 16)
                        return -EINVAL;
                switch (sc) {
                case SPEED_CLASS_LOW:
                        return -EINVAL;
                case SPEED_CLASS_FULL:
                        if (size > 1023)
                                return -EINVAL;
                        break;
                case SPEED_CLASS_HIGH:
                case SPEED_CLASS_SUPER:
                        if (size > 1024)
                                return -EINVAL;
                        break;
                }
                *ret = mps;
                return 0;
        }
        return -EINVAL;
}

static int endpoint_emit(const UsbEndpointDesc *e, SpeedClass sc, DescWriter *w) {
        uint8_t b[USB_DT_ENDPOINT_SIZE];
        uint16_t mps;
        int r;

        /* Bits 6:4 are reserved and endpoint 0 is never described (USB 2.0 table 9-13). */
        if ((e->bEndpointAddress & 0x70) || (e->bEndpointAddress & USB_ENDPOINT_NUMBER_MASK) == 0)
                return -EINVAL;

        r = endpoint_max_packet(e, sc, &mps);
        if (r < 0)
                return r;

        b[0] = USB_DT_ENDPOINT_SIZE;
        b[1] = USB_DT_ENDPOINT;
        b[2] = e->bEndpointAddress;
        b[3] = e->bmAttributes;
        put_le16(b + 4, mps);
        b[6] = e->bInterval;
        writer_put(w, b, sizeof(b));

        if (sc == SPEED_CLASS_SUPER) {
                /* USB 3.2 9.6.7: every SuperSpeed endpoint is followed by its companion. */
                uint8_t c[USB_DT_SS_EP_COMP_SIZE];
                uint8_t type = e->bmAttributes & USB_ENDPOINT_XFERTYPE_MASK;
                bool periodic = type == USB_ENDPOINT_XFER_INT || type == USB_ENDPOINT_XFER_ISOC;

                if (e->bMaxBurst > 15)
                        return -EINVAL;

                c[0] = USB_DT_SS_EP_COMP_SIZE;
                c[1] = USB_DT_SS_ENDPOINT_COMP;
                c[2] = e->bMaxBurst;
                c[3] = 0; /* bmAttributes: no streams, Mult 0 */
                /* Only periodic endpoints reserve bandwidth per service interval. */
                put_le16(c + 4, periodic ? (uint16_t) (mps * (e->bMaxBurst + 1u)) : 0);
                writer_put(w, c, sizeof(c));
        }
        return 0;
}

/* Class descriptors are opaque here, but a broken run would make the host's parser reject the
 * whole configuration, so check they chain exactly. */
static int extra_validate(const uint8_t *extra, size_t len) {
        size_t pos = 0;

        if (len > 0 && !extra)
                return -EINVAL;
        while (pos < len) {
                if (len - pos < 2 || extra[pos] < 2 || extra[pos] > len - pos)
                        return -EINVAL;
                pos += extra[pos];
        }
        return 0;
}

static int interface_emit(const UsbInterfaceDesc *i, SpeedClass sc, DescWriter *w) {
        uint8_t b[USB_DT_INTERFACE_SIZE];
        int r;

        if (i->bNumEndpoints > 0 && !i->endpoints)
                return -EINVAL;
        r = extra_validate(i->extra, i->extra_len);
        if (r < 0)
                return r;

        b[0] = USB_DT_INTERFACE_SIZE;
        b[1] = USB_DT_INTERFACE;
        b[2] = i->bInterfaceNumber;
        b[3] = i->bAlternateSetting;
        b[4] = i->bNumEndpoints;
        b[5] = i->bInterfaceClass;
        b[6] = i->bInterfaceSubClass;
        b[7] = i->bInterfaceProtocol;
        b[8] = i->iInterface;
        writer_put(w, b, sizeof(b));

        if (i->extra_len > 0)
                writer_put(w, i->extra, i->extra_len);

        for (size_t e = 0; e < i->bNumEndpoints; e++) {
                r = endpoint_emit(&i->endpoints[e], sc, w);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int config_emit(const UsbConfigDesc *c, SpeedClass sc, uint8_t type, uint16_t total, DescWriter *w) {
        uint8_t b[USB_DT_CONFIG_SIZE];
        unsigned n_interfaces = 0;
        int r;

        if (c->bNumInterfaces > 0 && !c->interfaces)
                return -EINVAL;
        /* Bit 7 is mandatory and bits 4:0 reserved (USB 2.0 table 9-10). */
        if (!(c->bmAttributes & USB_CONFIG_ATT_ONE) || (c->bmAttributes & 0x1f))
                return -EINVAL;

        for (size_t i = 0; i < c->bNumInterfaces; i++)
                if (c->interfaces[i].bAlternateSetting == 0)
                        n_interfaces++;

        b[0] = USB_DT_CONFIG_SIZE;
        b[1] = type;
        put_le16(b + 2, total);
        b[4] = (uint8_t) n_interfaces;
        b[5] = c->bConfigurationValue;
        b[6] = c->iConfiguration;
        b[7] = c->bmAttributes;
        /* USB 3.2 9.6.3: 8 mA units at SuperSpeed, 2 mA below; round up so we never under-declare. */
        b[8] = sc == SPEED_CLASS_SUPER ? (uint8_t) DIV_ROUND_UP(c->bMaxPower * 2u, 8u) : c->bMaxPower;
        writer_put(w, b, sizeof(b));

        for (size_t i = 0; i < c->bNumInterfaces; i++) {
                r = interface_emit(&c->interfaces[i], sc, w);
                if (r < 0)
                        return r;
        }
        return writer_finish(w);
}

int usb_desc_encode_config(const UsbConfigDesc *c, UsbSpeed speed, uint8_t bDescriptorType, uint8_t *buf,
                           size_t size) {
        DescWriter count = {}, w = { buf, size, 0 };
        SpeedClass sc;
        int r;

        r = speed_class(speed, &sc);
        if (r < 0)
                return r;

        if (bDescriptorType == USB_DT_OTHER_SPEED_CONFIG) {
                /* USB 2.0 9.6.4: only a device that runs at both full and high speed has one. */
                if (sc != SPEED_CLASS_FULL && sc != SPEED_CLASS_HIGH)
                        return -EINVAL;
        } else if (bDescriptorType != USB_DT_CONFIG)
                return -EINVAL;

        /* First pass validates the table and learns wTotalLength, second one writes it. */
        r = config_emit(c, sc, bDescriptorType, 0, &count);
        if (r < 0)
                return r;

        return config_emit(c, sc, bDescriptorType, (uint16_t) r, &w);
}

/* Returns the code point and advances *p, or -EINVAL for anything RFC 3629 does not allow. */
static int32_t utf8_next(const uint8_t **p) {
        const uint8_t *s = *p;
        uint32_t cp, min;
        size_t n;

        if (s[0] < 0x80) {
                *p = s + 1;
                return s[0];
        } else if ((s[0] & 0xe0) == 0xc0) {
                cp = s[0] & 0x1f;
                n = 1;
                min = 0x80;
        } else if ((s[0] & 0xf0) == 0xe0) {
                cp = s[0] & 0x0f;
                n = 2;
                min = 0x800;
        } else if ((s[0] & 0xf8) == 0xf0) {
                cp = s[0] & 0x07;
                n = 3;
                min = 0x10000;
        } else
                return -EINVAL;

        /* A NUL ends the loop here too, so a truncated sequence never reads past the string. */
        for (size_t k = 1; k <= n; k++) {
                if ((s[k] & 0xc0) != 0x80)
                        return -EINVAL;
                cp = cp << 6 | (s[k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return -EINVAL;

        *p = s + n + 1;
        return (int32_t) cp;
}

int usb_desc_encode_string(const char *utf8, uint8_t *buf, size_t size) {
        uint8_t units[2 + 2 * USB_STRING_MAX_UNITS];
        const uint8_t *p = (const uint8_t *) utf8;
        DescWriter w = { buf, size, 0 };
        size_t n = 0;

        if (!utf8)
                return -EINVAL;

        /* Validate the whole string even past the cap: invalid input is an error, not a tail. */
        while (*p) {
                int32_t cp = utf8_next(&p);
                if (cp < 0)
                        return -EINVAL;

                if (cp >= 0x10000) {
                        if (n + 2 > USB_STRING_MAX_UNITS) {
                                n = USB_STRING_MAX_UNITS + 1; /* full: stop storing */
                                continue;
                        }
                        cp -= 0x10000;
                        put_le16(units + 2 + 2 * n++, (uint16_t) (0xd800 | cp >> 10));
                        put_le16(units + 2 + 2 * n++, (uint16_t) (0xdc00 | (cp & 0x3ff)));
                } else {
                        if (n + 1 > USB_STRING_MAX_UNITS) {
                                n = USB_STRING_MAX_UNITS + 1;
                                continue;
                        }
                        put_le16(units + 2 + 2 * n++, (uint16_t) cp);
                }
        }
        n = MIN(n, (size_t) USB_STRING_MAX_UNITS);

        units[0] = (uint8_t) (2 + 2 * n);
        units[1] = USB_DT_STRING;
        writer_put(&w, units, 2 + 2 * n);
        return writer_finish(&w);
}

int usb_desc_encode_langids(const uint16_t *langids, size_t n, uint8_t *buf, size_t size) {
        DescWriter w = { buf, size, 0 };
        uint8_t b[2];

        if (n > USB_STRING_MAX_UNITS || (n > 0 && !langids))
                return -EINVAL;

        b[0] = (uint8_t) (2 + 2 * n);
        b[1] = USB_DT_STRING;
        writer_put(&w, b, sizeof(b));
        for (size_t i = 0; i < n; i++) {
                put_le16(b, langids[i]);
                writer_put(&w, b, sizeof(b));
        }
        return writer_finish(&w);
}

int usb_desc_encode_bos(UsbSpeed speed, uint8_t *buf, size_t size) {
        uint8_t b[USB_DT_BOS_SIZE + USB_DT_USB_EXT_CAP_SIZE + USB_DT_USB_SS_CAP_SIZE];
        DescWriter w = { buf, size, 0 };
        bool super;
        SpeedClass sc;
        size_t len;
        int r;

        r = speed_class(speed, &sc);
        if (r < 0)
                return r;
        super = sc == SPEED_CLASS_SUPER;
        len = USB_DT_BOS_SIZE + USB_DT_USB_EXT_CAP_SIZE + (super ? USB_DT_USB_SS_CAP_SIZE : 0);

        /* USB 3.2 9.6.2 */
        b[0] = USB_DT_BOS_SIZE;
        b[1] = USB_DT_BOS;
        put_le16(b + 2, (uint16_t) len);
        b[4] = super ? 2 : 1;

        /* USB 2.0 ECN LPM, table 9-13: bmAttributes bit 1 (LPM) clear, vhci cannot do L1 anyway. */
        b[5] = USB_DT_USB_EXT_CAP_SIZE;
        b[6] = USB_DT_DEVICE_CAPABILITY;
        b[7] = USB_CAP_TYPE_EXT;
        put_le32(b + 8, 0);

        if (super) {
                /* USB 3.2 table 9-15; exit latencies are the kernel gadget defaults. */
                b[12] = USB_DT_USB_SS_CAP_SIZE;
                b[13] = USB_DT_DEVICE_CAPABILITY;
                b[14] = USB_SS_CAP_TYPE;
                b[15] = 0;                /* bmAttributes: no LTM */
                put_le16(b + 16, 0x000e); /* wSpeedsSupported: full, high, super */
                b[18] = 1;                /* bFunctionalitySupport: everything works from full speed */
                b[19] = 0x01;             /* bU1DevExitLat, us */
                put_le16(b + 20, 0x01f4); /* wU2DevExitLat, us */
        }
        writer_put(&w, b, len);
        return writer_finish(&w);
}

int usb_desc_encode_hub(const UsbHubDesc *h, uint8_t *buf, size_t size) {
        uint8_t b[USB_DT_HUB_NONVAR_SIZE + 2 * DIV_ROUND_UP(USB_HUB_MAX_PORTS + 1, 8)];
        DescWriter w = { buf, size, 0 };
        size_t bitmap_len, len;

        if (h->bNbrPorts < 1 || h->bNbrPorts > USB_HUB_MAX_PORTS)
                return -EINVAL;
        /* Bit 0 is reserved, and a bit for a port that does not exist would be read as one by a
         * hub driver sizing the bitmap differently. */
        if (h->removable_mask & (1u | ~(uint32_t) ((2ull << h->bNbrPorts) - 1)))
                return -EINVAL;

        /* USB 2.0 table 11-13: one bit per port plus reserved bit 0, rounded up to bytes. */
        bitmap_len = DIV_ROUND_UP(h->bNbrPorts + 1u, 8u);
        len = USB_DT_HUB_NONVAR_SIZE + 2 * bitmap_len;

        b[0] = (uint8_t) len;
        b[1] = USB_DT_HUB;
        b[2] = h->bNbrPorts;
        put_le16(b + 3, h->wHubCharacteristics);
        b[5] = h->bPwrOn2PwrGood;
        b[6] = h->bHubContrCurrent;
        for (size_t i = 0; i < bitmap_len; i++) {
                b[7 + i] = (uint8_t) (h->removable_mask >> (8 * i));
                /* PortPwrCtrlMask: USB 1.0 leftover, all ones per USB 2.0 11.23.2.1. */
                b[7 + bitmap_len + i] = 0xff;
        }
        writer_put(&w, b, len);
        return writer_finish(&w);
}

/* ---- Decoders ---- */

int usb_desc_parse_device(const uint8_t *buf, size_t len, UsbDeviceDesc *ret) {
        if (!buf || len < USB_DT_DEVICE_SIZE)
                return -EBADMSG;
        if (buf[0] < USB_DT_DEVICE_SIZE || buf[0] > len || buf[1] != USB_DT_DEVICE)
                return -EBADMSG;

        *ret = (UsbDeviceDesc) {
                .bcdUSB = get_le16(buf + 2),
                .bDeviceClass = buf[4],
                .bDeviceSubClass = buf[5],
                .bDeviceProtocol = buf[6],
                .bMaxPacketSize0 = buf[7],
                .idVendor = get_le16(buf + 8),
                .idProduct = get_le16(buf + 10),
                .bcdDevice = get_le16(buf + 12),
                .iManufacturer = buf[14],
                .iProduct = buf[15],
                .iSerialNumber = buf[16],
                .bNumConfigurations = buf[17],
                .configs = NULL,
        };
        return 0;
}

int usb_desc_parse_config_header(const uint8_t *buf, size_t len, UsbConfigDesc *ret,
                                 uint16_t *ret_total_length) {
        uint16_t total;

        if (!buf || len < USB_DT_CONFIG_SIZE)
                return -EBADMSG;
        if (buf[0] < USB_DT_CONFIG_SIZE || buf[0] > len)
                return -EBADMSG;
        if (buf[1] != USB_DT_CONFIG && buf[1] != USB_DT_OTHER_SPEED_CONFIG)
                return -EBADMSG;
        total = get_le16(buf + 2);
        if (total < buf[0])
                return -EBADMSG;

        if (ret)
                *ret = (UsbConfigDesc) {
                        .bNumInterfaces = buf[4],
                        .bConfigurationValue = buf[5],
                        .iConfiguration = buf[6],
                        .bmAttributes = buf[7],
                        .bMaxPower = buf[8],
                        .interfaces = NULL,
                };
        if (ret_total_length)
                *ret_total_length = total;
        return 0;
}

int usb_desc_parse_interface(const uint8_t *desc, size_t len, UsbInterfaceDesc *ret) {
        if (!desc || len < USB_DT_INTERFACE_SIZE)
                return -EBADMSG;
        if (desc[0] < USB_DT_INTERFACE_SIZE || desc[0] > len || desc[1] != USB_DT_INTERFACE)
                return -EBADMSG;

        *ret = (UsbInterfaceDesc) {
                .bInterfaceNumber = desc[2],
                .bAlternateSetting = desc[3],
                .bNumEndpoints = desc[4],
                .bInterfaceClass = desc[5],
                .bInterfaceSubClass = desc[6],
                .bInterfaceProtocol = desc[7],
                .iInterface = desc[8],
        };
        return 0;
}

int usb_desc_parse_endpoint(const uint8_t *desc, size_t len, UsbEndpointDesc *ret) {
        if (!desc || len < USB_DT_ENDPOINT_SIZE)
                return -EBADMSG;
        if (desc[0] < USB_DT_ENDPOINT_SIZE || desc[0] > len || desc[1] != USB_DT_ENDPOINT)
                return -EBADMSG;

        *ret = (UsbEndpointDesc) {
                .bEndpointAddress = desc[2],
                .bmAttributes = desc[3],
                .wMaxPacketSize = get_le16(desc + 4),
                .bInterval = desc[6],
        };
        return 0;
}

static size_t descriptor_min_length(uint8_t type) {
        switch (type) {
        case USB_DT_INTERFACE:
                return USB_DT_INTERFACE_SIZE;
        case USB_DT_ENDPOINT:
                return USB_DT_ENDPOINT_SIZE;
        case USB_DT_SS_ENDPOINT_COMP:
                return USB_DT_SS_EP_COMP_SIZE;
        }
        return 2;
}

int usb_desc_walk(const uint8_t *buf, size_t len, usb_desc_walk_func_t cb, void *userdata) {
        uint16_t total;
        int r, n = 0;

        r = usb_desc_parse_config_header(buf, len, NULL, &total);
        if (r < 0)
                return r;
        /* A short read is the caller's problem to retry with wTotalLength; never walk past it. */
        if (total > len)
                return -EBADMSG;

        /* Validate everything before the first callback, so callers never act on half a bad set. */
        for (size_t pos = 0; pos < total; pos += buf[pos]) {
                size_t remaining = total - pos;

                if (remaining < 2 || buf[pos] < 2 || buf[pos] > remaining)
                        return -EBADMSG;
                if (buf[pos] < descriptor_min_length(buf[pos + 1]))
                        return -EBADMSG;
                /* A second header inside the set is how parsers get confused about where it ends. */
                if (pos > 0 && (buf[pos + 1] == USB_DT_DEVICE || buf[pos + 1] == USB_DT_CONFIG ||
                                buf[pos + 1] == USB_DT_OTHER_SPEED_CONFIG))
                        return -EBADMSG;
                n++;
        }

        if (cb)
                for (size_t pos = 0; pos < total; pos += buf[pos]) {
                        r = cb(buf[pos + 1], buf + pos, buf[pos], userdata);
                        if (r < 0)
                                return r;
                }
        return n;
}
