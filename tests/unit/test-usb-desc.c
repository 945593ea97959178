/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "tests.h"
#include "bot.h"
#include "usb-desc.h"
#include "usb.h"

/* ---- Tables, declared the way devices declare them ---- */

/* A Realtek 0bda:0158 USB 2.0 card reader, as `lsusb -v` shows it: the vector below is that
 * device's configuration descriptor set byte for byte, endpoint order included. */
static const UsbEndpointDesc realtek_eps[] = {
        { .bEndpointAddress = USB_DIR_OUT | 0x01, .bmAttributes = USB_ENDPOINT_XFER_BULK },
        { .bEndpointAddress = USB_DIR_IN | 0x02, .bmAttributes = USB_ENDPOINT_XFER_BULK },
};
static const UsbInterfaceDesc realtek_iface = {
        .bInterfaceClass = USB_CLASS_MASS_STORAGE,
        .bInterfaceSubClass = USB_SUBCLASS_SCSI,
        .bInterfaceProtocol = USB_PR_BULK,
        .iInterface = 5,
        .bNumEndpoints = 2,
        .endpoints = realtek_eps,
};
static const UsbConfigDesc realtek_config = {
        .bConfigurationValue = 1,
        .iConfiguration = 4,
        .bmAttributes = USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_WAKEUP,
        .bMaxPower = 250, /* 500 mA */
        .bNumInterfaces = 1,
        .interfaces = &realtek_iface,
};
static const uint8_t realtek_config_hs[] = {
        0x09, 0x02, 0x20, 0x00, 0x01, 0x01, 0x04, 0xa0, 0xfa, /* config, wTotalLength 32 */
        0x09, 0x04, 0x00, 0x00, 0x02, 0x08, 0x06, 0x50, 0x05, /* interface 08/06/50 */
        0x07, 0x05, 0x01, 0x02, 0x00, 0x02, 0x00,             /* bulk OUT 0x01, 512 */
        0x07, 0x05, 0x82, 0x02, 0x00, 0x02, 0x00,             /* bulk IN 0x82, 512 */
};

/* drowse's own disk layout: bulk IN 0x81 + OUT 0x02. wMaxPacketSize 0 lets the speed decide. */
static const UsbEndpointDesc msc_eps[] = {
        { .bEndpointAddress = USB_DIR_IN | 0x01, .bmAttributes = USB_ENDPOINT_XFER_BULK },
        { .bEndpointAddress = USB_DIR_OUT | 0x02, .bmAttributes = USB_ENDPOINT_XFER_BULK },
};
static const UsbInterfaceDesc msc_iface = {
        .bInterfaceClass = USB_CLASS_MASS_STORAGE,
        .bInterfaceSubClass = USB_SUBCLASS_SCSI,
        .bInterfaceProtocol = USB_PR_BULK,
        .bNumEndpoints = 2,
        .endpoints = msc_eps,
};
static const UsbConfigDesc msc_config = {
        .bConfigurationValue = 1,
        .bmAttributes = USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_SELFPOWER | USB_CONFIG_ATT_WAKEUP,
        .bMaxPower = 50, /* 100 mA */
        .bNumInterfaces = 1,
        .interfaces = &msc_iface,
};
static const uint8_t msc_config_hs[] = {
        0x09, 0x02, 0x20, 0x00, 0x01, 0x01, 0x00, 0xe0, 0x32,
        0x09, 0x04, 0x00, 0x00, 0x02, 0x08, 0x06, 0x50, 0x00,
        0x07, 0x05, 0x81, 0x02, 0x00, 0x02, 0x00,
        0x07, 0x05, 0x02, 0x02, 0x00, 0x02, 0x00,
};
static const uint8_t msc_config_ss[] = {
        0x09, 0x02, 0x2c, 0x00, 0x01, 0x01, 0x00, 0xe0, 0x0d, /* 100 mA = 13 * 8 mA, rounded up */
        0x09, 0x04, 0x00, 0x00, 0x02, 0x08, 0x06, 0x50, 0x00,
        0x07, 0x05, 0x81, 0x02, 0x00, 0x04, 0x00,             /* 1024 */
        0x06, 0x30, 0x00, 0x00, 0x00, 0x00,                   /* companion, no burst */
        0x07, 0x05, 0x02, 0x02, 0x00, 0x04, 0x00,
        0x06, 0x30, 0x00, 0x00, 0x00, 0x00,
};

static const UsbDeviceDesc msc_device = {
        .bcdUSB = 0x0200,
        .bMaxPacketSize0 = 64,
        .idVendor = 0x1d6b,
        .idProduct = 0x0104,
        .bcdDevice = 0x0100,
        .iManufacturer = 1,
        .iProduct = 2,
        .iSerialNumber = 3,
        .bNumConfigurations = 1,
        .configs = &msc_config,
};

/* HID 1.11 appendix B.1 boot keyboard, report descriptor of 63 bytes. */
static const uint8_t kbd_hid_desc[] = {
        0x09, USB_DT_HID, 0x11, 0x01, 0x00, 0x01, USB_DT_REPORT, 0x3f, 0x00,
};
static const UsbEndpointDesc kbd_eps[] = {
        { .bEndpointAddress = USB_DIR_IN | 0x01, .bmAttributes = USB_ENDPOINT_XFER_INT,
          .wMaxPacketSize = 8, .bInterval = 10 },
};
static const UsbInterfaceDesc kbd_iface = {
        .bInterfaceClass = USB_CLASS_HID,
        .bInterfaceSubClass = 1,
        .bInterfaceProtocol = 1,
        .bNumEndpoints = 1,
        .endpoints = kbd_eps,
        .extra = kbd_hid_desc,
        .extra_len = sizeof(kbd_hid_desc),
};
static const UsbConfigDesc kbd_config = {
        .bConfigurationValue = 1,
        .bmAttributes = USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_WAKEUP,
        .bMaxPower = 50,
        .bNumInterfaces = 1,
        .interfaces = &kbd_iface,
};
static const uint8_t kbd_config_fs[] = {
        0x09, 0x02, 0x22, 0x00, 0x01, 0x01, 0x00, 0xa0, 0x32,
        0x09, 0x04, 0x00, 0x00, 0x01, 0x03, 0x01, 0x01, 0x00,
        0x09, 0x21, 0x11, 0x01, 0x00, 0x01, 0x22, 0x3f, 0x00, /* HID, before the endpoint */
        0x07, 0x05, 0x81, 0x03, 0x08, 0x00, 0x0a,
};

static const UsbEndpointDesc hub_eps[] = {
        { .bEndpointAddress = USB_DIR_IN | 0x01, .bmAttributes = USB_ENDPOINT_XFER_INT,
          .wMaxPacketSize = 1, .bInterval = 12 },
};
static const UsbInterfaceDesc hub_iface = {
        .bInterfaceClass = USB_CLASS_HUB,
        .bNumEndpoints = 1,
        .endpoints = hub_eps,
};
static const UsbConfigDesc hub_config = {
        .bConfigurationValue = 1,
        .bmAttributes = USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_SELFPOWER | USB_CONFIG_ATT_WAKEUP,
        .bMaxPower = 0,
        .bNumInterfaces = 1,
        .interfaces = &hub_iface,
};
static const uint8_t hub_config_hs[] = {
        0x09, 0x02, 0x19, 0x00, 0x01, 0x01, 0x00, 0xe0, 0x00,
        0x09, 0x04, 0x00, 0x00, 0x01, 0x09, 0x00, 0x00, 0x00,
        0x07, 0x05, 0x81, 0x03, 0x01, 0x00, 0x0c,
};

/* ---- Helpers ---- */

typedef struct WalkCount {
        unsigned interfaces, endpoints, companions, other;
        size_t bytes;
} WalkCount;

static int count_cb(uint8_t type, const uint8_t *desc, size_t desc_len, void *userdata) {
        WalkCount *c = userdata;

        ASSERT_EQ(desc[0], desc_len);
        ASSERT_EQ(desc[1], type);
        c->bytes += desc_len;
        if (type == USB_DT_INTERFACE) {
                UsbInterfaceDesc i;
                ASSERT_OK(usb_desc_parse_interface(desc, desc_len, &i));
                c->interfaces++;
        } else if (type == USB_DT_ENDPOINT) {
                UsbEndpointDesc e;
                ASSERT_OK(usb_desc_parse_endpoint(desc, desc_len, &e));
                c->endpoints++;
        } else if (type == USB_DT_SS_ENDPOINT_COMP)
                c->companions++;
        else
                c->other++;
        return 0;
}

static void check_config(const UsbConfigDesc *c, UsbSpeed speed, const uint8_t *expected, size_t n,
                         int n_descriptors) {
        uint8_t buf[512];
        WalkCount wc = {};

        memset(buf, 0xaa, sizeof(buf));
        ASSERT_EQ(usb_desc_encode_config(c, speed, USB_DT_CONFIG, buf, sizeof(buf)), n);
        ASSERT_MEMEQ(buf, expected, n);
        ASSERT_EQ(buf[n], 0xaa);
        ASSERT_EQ(usb_desc_walk(buf, n, count_cb, &wc), n_descriptors);
        ASSERT_EQ(wc.bytes, n);
}

/* ---- Tests ---- */

static void test_real_mass_storage_config(void) {
        check_config(&realtek_config, USB_SPEED_HIGH, realtek_config_hs, sizeof(realtek_config_hs), 4);
}

/* The config encoder into the local `buf`, to keep the speed tables below readable. */
#define ENCODE_CONFIG(c, speed, type) usb_desc_encode_config((c), (speed), (type), buf, sizeof(buf))

static void test_msc_config_speeds(void) {
        uint8_t buf[256];
        WalkCount wc = {};
        int r;

        check_config(&msc_config, USB_SPEED_HIGH, msc_config_hs, sizeof(msc_config_hs), 4);

        /* Full speed: same layout, 64-byte bulk packets. */
        ASSERT_EQ(ENCODE_CONFIG(&msc_config, USB_SPEED_FULL, USB_DT_CONFIG), 32);
        ASSERT_EQ(get_le16(buf + 2), 32);
        ASSERT_EQ(get_le16(buf + 9 + 9 + 4), 64);
        ASSERT_EQ(get_le16(buf + 9 + 9 + 7 + 4), 64);

        /* SuperSpeed: companions, 1024-byte packets, 8 mA power units. */
        r = ENCODE_CONFIG(&msc_config, USB_SPEED_SUPER, USB_DT_CONFIG);
        ASSERT_EQ(r, sizeof(msc_config_ss));
        ASSERT_MEMEQ(buf, msc_config_ss, sizeof(msc_config_ss));
        ASSERT_EQ(usb_desc_walk(buf, (size_t) r, count_cb, &wc), 6);
        ASSERT_EQ(wc.companions, 2);
        ASSERT_EQ(wc.endpoints, 2);
        ASSERT_EQ(usb_desc_encode_config(&msc_config, USB_SPEED_SUPER_PLUS, USB_DT_CONFIG, NULL, 0), 44);

        /* No bulk at low speed, and no descriptors at speeds we cannot describe. */
        ASSERT_ERR(ENCODE_CONFIG(&msc_config, USB_SPEED_LOW, USB_DT_CONFIG), EINVAL);
        ASSERT_ERR(ENCODE_CONFIG(&msc_config, USB_SPEED_UNKNOWN, USB_DT_CONFIG), EINVAL);
        ASSERT_ERR(ENCODE_CONFIG(&msc_config, USB_SPEED_WIRELESS, USB_DT_CONFIG), EINVAL);
        ASSERT_ERR(ENCODE_CONFIG(&msc_config, _USB_SPEED_MAX, USB_DT_CONFIG), EINVAL);

        /* Other-speed: the type byte changes, nothing else; never at SuperSpeed. */
        ASSERT_EQ(ENCODE_CONFIG(&msc_config, USB_SPEED_FULL, USB_DT_OTHER_SPEED_CONFIG), 32);
        ASSERT_EQ(buf[1], USB_DT_OTHER_SPEED_CONFIG);
        ASSERT_EQ(usb_desc_walk(buf, 32, NULL, NULL), 4);
        ASSERT_ERR(ENCODE_CONFIG(&msc_config, USB_SPEED_SUPER, USB_DT_OTHER_SPEED_CONFIG), EINVAL);
        ASSERT_ERR(ENCODE_CONFIG(&msc_config, USB_SPEED_HIGH, USB_DT_DEVICE), EINVAL);
}

static void test_hid_keyboard_config(void) {
        WalkCount wc = {};
        uint8_t buf[64];

        check_config(&kbd_config, USB_SPEED_FULL, kbd_config_fs, sizeof(kbd_config_fs), 4);
        ASSERT_EQ(usb_desc_walk(kbd_config_fs, sizeof(kbd_config_fs), count_cb, &wc), 4);
        ASSERT_EQ(wc.other, 2); /* config + HID */

        /* Interrupt endpoints keep the table's packet size at every speed. */
        ASSERT_EQ(usb_desc_encode_config(&kbd_config, USB_SPEED_LOW, USB_DT_CONFIG, buf, sizeof(buf)), 34);
        ASSERT_EQ(usb_desc_encode_config(&kbd_config, USB_SPEED_HIGH, USB_DT_CONFIG, buf, sizeof(buf)), 34);
        ASSERT_EQ(get_le16(buf + 27 + 4), 8);
        ASSERT_EQ(usb_desc_encode_config(&kbd_config, USB_SPEED_SUPER, USB_DT_CONFIG, buf, sizeof(buf)), 40);
        ASSERT_EQ(get_le16(buf + 27 + 4), 8);
        ASSERT_EQ(buf[34 + 1], USB_DT_SS_ENDPOINT_COMP);
        ASSERT_EQ(get_le16(buf + 34 + 4), 8); /* wBytesPerInterval of a periodic endpoint */
}

static void test_hub_config(void) {
        uint8_t buf[64];

        check_config(&hub_config, USB_SPEED_HIGH, hub_config_hs, sizeof(hub_config_hs), 3);
        ASSERT_EQ(usb_desc_encode_config(&hub_config, USB_SPEED_FULL, USB_DT_CONFIG, buf, sizeof(buf)), 25);
        ASSERT_EQ(usb_desc_encode_config(&hub_config, USB_SPEED_SUPER, USB_DT_CONFIG, buf, sizeof(buf)), 31);
        ASSERT_EQ(get_le16(buf + 2), 31);
}

static void test_truncated_output(void) {
        uint8_t buf[64];

        for (size_t size = 0; size <= sizeof(msc_config_hs); size++) {
                memset(buf, 0xaa, sizeof(buf));
                ASSERT_EQ(usb_desc_encode_config(&msc_config, USB_SPEED_HIGH, USB_DT_CONFIG, buf, size),
                          sizeof(msc_config_hs));
                ASSERT_MEMEQ(buf, msc_config_hs, size);
                ASSERT_EQ(buf[size], 0xaa);
        }
        ASSERT_EQ(usb_desc_encode_config(&msc_config, USB_SPEED_HIGH, USB_DT_CONFIG, NULL, 0), 32);

        memset(buf, 0xaa, sizeof(buf));
        ASSERT_EQ(usb_desc_encode_device(&msc_device, USB_SPEED_HIGH, buf, 8), 18);
        ASSERT_EQ(buf[7], 64);
        ASSERT_EQ(buf[8], 0xaa);

        memset(buf, 0xaa, sizeof(buf));
        ASSERT_EQ(usb_desc_encode_string("drowse", buf, 3), 14);
        ASSERT_EQ(buf[0], 14);
        ASSERT_EQ(buf[2], 'd');
        ASSERT_EQ(buf[3], 0xaa);
}

static void test_device(void) {
        static const uint8_t expected_hs[] = {
                0x12, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x40, 0x6b, 0x1d,
                0x04, 0x01, 0x00, 0x01, 0x01, 0x02, 0x03, 0x01,
        };
        UsbDeviceDesc d = msc_device, parsed;
        uint8_t buf[32];

        ASSERT_EQ(usb_desc_encode_device(&d, USB_SPEED_HIGH, buf, sizeof(buf)), 18);
        ASSERT_MEMEQ(buf, expected_hs, sizeof(expected_hs));

        ASSERT_OK(usb_desc_parse_device(buf, 18, &parsed));
        ASSERT_EQ(parsed.idVendor, 0x1d6b);
        ASSERT_EQ(parsed.idProduct, 0x0104);
        ASSERT_EQ(parsed.bcdDevice, 0x0100);
        ASSERT_EQ(parsed.iSerialNumber, 3);
        ASSERT_EQ(parsed.bNumConfigurations, 1);
        ASSERT_TRUE(parsed.configs == NULL);

        /* SuperSpeed: exponent and 3.x */
        ASSERT_EQ(usb_desc_encode_device(&d, USB_SPEED_SUPER, buf, sizeof(buf)), 18);
        ASSERT_EQ(get_le16(buf + 2), 0x0300);
        ASSERT_EQ(buf[7], 9);

        /* A USB 3 table below SuperSpeed says 2.10. */
        d.bcdUSB = 0x0320;
        ASSERT_EQ(usb_desc_encode_device(&d, USB_SPEED_SUPER, buf, sizeof(buf)), 18);
        ASSERT_EQ(get_le16(buf + 2), 0x0320);
        ASSERT_EQ(usb_desc_encode_device(&d, USB_SPEED_HIGH, buf, sizeof(buf)), 18);
        ASSERT_EQ(get_le16(buf + 2), 0x0210);

        /* Full speed honours legal ep0 sizes only; low speed is always 8. */
        d.bMaxPacketSize0 = 16;
        ASSERT_EQ(usb_desc_encode_device(&d, USB_SPEED_FULL, buf, sizeof(buf)), 18);
        ASSERT_EQ(buf[7], 16);
        ASSERT_EQ(usb_desc_encode_device(&d, USB_SPEED_LOW, buf, sizeof(buf)), 18);
        ASSERT_EQ(buf[7], 8);
        d.bMaxPacketSize0 = 12;
        ASSERT_ERR(usb_desc_encode_device(&d, USB_SPEED_FULL, buf, sizeof(buf)), EINVAL);
        ASSERT_ERR(usb_desc_encode_device(&msc_device, USB_SPEED_UNKNOWN, buf, sizeof(buf)), EINVAL);

        /* Malformed device descriptors */
        ASSERT_ERR(usb_desc_parse_device(expected_hs, 17, &parsed), EBADMSG);
        memcpy(buf, expected_hs, 18);
        buf[0] = 17;
        ASSERT_ERR(usb_desc_parse_device(buf, 18, &parsed), EBADMSG);
        buf[0] = 19;
        ASSERT_ERR(usb_desc_parse_device(buf, 18, &parsed), EBADMSG);
        buf[0] = 18;
        buf[1] = USB_DT_CONFIG;
        ASSERT_ERR(usb_desc_parse_device(buf, 18, &parsed), EBADMSG);
        ASSERT_ERR(usb_desc_parse_device(NULL, 0, &parsed), EBADMSG);
}

static void test_qualifier(void) {
        static const uint8_t expected[] = { 0x0a, 0x06, 0x00, 0x02, 0x00, 0x00, 0x00, 0x40, 0x01, 0x00 };
        UsbDeviceDesc d = msc_device;
        uint8_t buf[16];

        ASSERT_EQ(usb_desc_encode_qualifier(&d, buf, sizeof(buf)), 10);
        ASSERT_MEMEQ(buf, expected, sizeof(expected));
        d.bMaxPacketSize0 = 9;
        ASSERT_ERR(usb_desc_encode_qualifier(&d, buf, sizeof(buf)), EINVAL);
}

static void test_strings(void) {
        static const uint8_t unicode[] = {
                0x10, 0x03, 0xdc, 0x00, 'n', 0, 0xef, 0x00, 'c', 0, 'o', 0, 'd', 0, 'e', 0,
        };
        static const uint8_t emoji[] = { 0x06, 0x03, 0x3d, 0xd8, 0x34, 0xdc }; /* U+1F434 */
        char long_ascii[200], long_emoji[4 * 64 + 1];
        uint8_t buf[256];

        ASSERT_EQ(usb_desc_encode_string("\xc3\x9c" "n\xc3\xaf" "code", buf, sizeof(buf)), sizeof(unicode));
        ASSERT_MEMEQ(buf, unicode, sizeof(unicode));
        ASSERT_EQ(usb_desc_encode_string("\xf0\x9f\x90\xb4", buf, sizeof(buf)), sizeof(emoji));
        ASSERT_MEMEQ(buf, emoji, sizeof(emoji));
        ASSERT_EQ(usb_desc_encode_string("", buf, sizeof(buf)), 2);
        ASSERT_EQ(buf[0], 2);
        ASSERT_EQ(buf[1], USB_DT_STRING);

        /* The 126-unit cap: exactly 126 fits, 127 and more are cut. */
        memset(long_ascii, 'x', sizeof(long_ascii));
        long_ascii[126] = '\0';
        ASSERT_EQ(usb_desc_encode_string(long_ascii, buf, sizeof(buf)), 254);
        long_ascii[126] = 'y';
        long_ascii[sizeof(long_ascii) - 1] = '\0';
        ASSERT_EQ(usb_desc_encode_string(long_ascii, buf, sizeof(buf)), 254);
        ASSERT_EQ(buf[0], 254);
        ASSERT_EQ(buf[253], 0);
        ASSERT_EQ(buf[252], 'x');

        /* 63 surrogate pairs are 126 units; the 64th pair must not be split in half. */
        for (size_t i = 0; i < 64; i++)
                memcpy(long_emoji + 4 * i, "\xf0\x9f\x90\xb4", 4);
        long_emoji[4 * 64] = '\0';
        ASSERT_EQ(usb_desc_encode_string(long_emoji, buf, sizeof(buf)), 254);
        ASSERT_EQ(get_le16(buf + 250), 0xd83d);
        ASSERT_EQ(get_le16(buf + 252), 0xdc34);

        /* Invalid UTF-8, including after the cap */
        ASSERT_ERR(usb_desc_encode_string("\xc3", buf, sizeof(buf)), EINVAL);            /* truncated */
        ASSERT_ERR(usb_desc_encode_string("\xc0\xaf", buf, sizeof(buf)), EINVAL);        /* overlong */
        ASSERT_ERR(usb_desc_encode_string("\xed\xa0\x80", buf, sizeof(buf)), EINVAL);    /* surrogate */
        ASSERT_ERR(usb_desc_encode_string("\xf4\x90\x80\x80", buf, sizeof(buf)), EINVAL); /* > U+10FFFF */
        ASSERT_ERR(usb_desc_encode_string("\xff", buf, sizeof(buf)), EINVAL);
        ASSERT_ERR(usb_desc_encode_string("a\x80", buf, sizeof(buf)), EINVAL);
        long_ascii[150] = '\xfe';
        ASSERT_ERR(usb_desc_encode_string(long_ascii, buf, sizeof(buf)), EINVAL);
        ASSERT_ERR(usb_desc_encode_string(NULL, buf, sizeof(buf)), EINVAL);
}

static void test_langids(void) {
        static const uint16_t ids[] = { USB_LANGID_EN_US, 0x0407 };
        static const uint8_t expected[] = { 0x06, 0x03, 0x09, 0x04, 0x07, 0x04 };
        uint8_t buf[16];

        ASSERT_EQ(usb_desc_encode_langids(ids, 2, buf, sizeof(buf)), 6);
        ASSERT_MEMEQ(buf, expected, sizeof(expected));
        ASSERT_EQ(usb_desc_encode_langids(ids, 2, buf, 3), 6);
        ASSERT_EQ(usb_desc_encode_langids(NULL, 0, buf, sizeof(buf)), 2);
        ASSERT_ERR(usb_desc_encode_langids(ids, 127, buf, sizeof(buf)), EINVAL);
}

static void test_bos(void) {
        static const uint8_t expected_hs[] = {
                0x05, 0x0f, 0x0c, 0x00, 0x01,
                0x07, 0x10, 0x02, 0x00, 0x00, 0x00, 0x00,
        };
        static const uint8_t expected_ss[] = {
                0x05, 0x0f, 0x16, 0x00, 0x02,
                0x07, 0x10, 0x02, 0x00, 0x00, 0x00, 0x00,
                0x0a, 0x10, 0x03, 0x00, 0x0e, 0x00, 0x01, 0x01, 0xf4, 0x01,
        };
        uint8_t buf[32];

        ASSERT_EQ(usb_desc_encode_bos(USB_SPEED_HIGH, buf, sizeof(buf)), sizeof(expected_hs));
        ASSERT_MEMEQ(buf, expected_hs, sizeof(expected_hs));
        ASSERT_EQ(usb_desc_encode_bos(USB_SPEED_SUPER, buf, sizeof(buf)), sizeof(expected_ss));
        ASSERT_MEMEQ(buf, expected_ss, sizeof(expected_ss));
        ASSERT_EQ(usb_desc_encode_bos(USB_SPEED_SUPER, buf, 5), 22);
        ASSERT_ERR(usb_desc_encode_bos(USB_SPEED_UNKNOWN, buf, sizeof(buf)), EINVAL);
}

static void test_hub_descriptor(void) {
        static const uint8_t expected4[] = { 0x09, 0x29, 0x04, 0x09, 0x00, 0x32, 0x00, 0x00, 0xff };
        static const uint8_t expected7[] = { 0x09, 0x29, 0x07, 0x09, 0x00, 0x32, 0x00, 0x80, 0xff };
        static const uint8_t expected8[] = {
                0x0b, 0x29, 0x08, 0x09, 0x00, 0x32, 0x00, 0x00, 0x01, 0xff, 0xff,
        };
        static const uint8_t expected15[] = {
                0x0b, 0x29, 0x0f, 0x09, 0x00, 0x32, 0x00, 0x04, 0x80, 0xff, 0xff,
        };
        UsbHubDesc h = {
                .wHubCharacteristics = USB_HUB_CHAR_LPSM_INDV | USB_HUB_CHAR_OCPM_INDV,
                .bPwrOn2PwrGood = 50,
        };
        uint8_t buf[32];

        h.bNbrPorts = 4;
        ASSERT_EQ(usb_desc_encode_hub(&h, buf, sizeof(buf)), 9);
        ASSERT_MEMEQ(buf, expected4, sizeof(expected4));

        h.bNbrPorts = 7;
        h.removable_mask = 1u << 7;
        ASSERT_EQ(usb_desc_encode_hub(&h, buf, sizeof(buf)), 9);
        ASSERT_MEMEQ(buf, expected7, sizeof(expected7));

        /* Port 8 needs bit 8: the bitmaps grow to two bytes each. */
        h.bNbrPorts = 8;
        h.removable_mask = 1u << 8;
        ASSERT_EQ(usb_desc_encode_hub(&h, buf, sizeof(buf)), 11);
        ASSERT_MEMEQ(buf, expected8, sizeof(expected8));

        h.bNbrPorts = 15;
        h.removable_mask = 1u << 2 | 1u << 15;
        ASSERT_EQ(usb_desc_encode_hub(&h, buf, sizeof(buf)), 11);
        ASSERT_MEMEQ(buf, expected15, sizeof(expected15));

        h.bNbrPorts = 31;
        h.removable_mask = 1u << 31;
        ASSERT_EQ(usb_desc_encode_hub(&h, buf, sizeof(buf)), 7 + 2 * 4);
        ASSERT_EQ(buf[10], 0x80);

        /* Reserved bit 0, a port that does not exist, port counts out of range */
        h.removable_mask = 1;
        ASSERT_ERR(usb_desc_encode_hub(&h, buf, sizeof(buf)), EINVAL);
        h.bNbrPorts = 4;
        h.removable_mask = 1u << 5;
        ASSERT_ERR(usb_desc_encode_hub(&h, buf, sizeof(buf)), EINVAL);
        h.removable_mask = 0;
        h.bNbrPorts = 0;
        ASSERT_ERR(usb_desc_encode_hub(&h, buf, sizeof(buf)), EINVAL);
        h.bNbrPorts = 32;
        ASSERT_ERR(usb_desc_encode_hub(&h, buf, sizeof(buf)), EINVAL);
}

static void test_invalid_tables(void) {
        UsbEndpointDesc ep = { .bEndpointAddress = 0x81, .bmAttributes = USB_ENDPOINT_XFER_INT,
                               .wMaxPacketSize = 8, .bInterval = 10 };
        UsbInterfaceDesc iface = { .bInterfaceClass = USB_CLASS_HID, .bNumEndpoints = 1, .endpoints = &ep };
        UsbConfigDesc c = { .bConfigurationValue = 1, .bmAttributes = USB_CONFIG_ATT_ONE,
                            .bNumInterfaces = 1, .interfaces = &iface };
        static const uint8_t bad_extra[] = { 0x09, 0x21, 0x11 };
        uint8_t buf[64];

        ASSERT_EQ(usb_desc_encode_config(&c, USB_SPEED_HIGH, USB_DT_CONFIG, buf, sizeof(buf)), 25);

        /* High-speed intervals are exponents */
        ep.bInterval = 17;
        ASSERT_ERR(usb_desc_encode_config(&c, USB_SPEED_HIGH, USB_DT_CONFIG, buf, sizeof(buf)), EINVAL);
        ASSERT_EQ(usb_desc_encode_config(&c, USB_SPEED_FULL, USB_DT_CONFIG, buf, sizeof(buf)), 25);
        ep.bInterval = 10;

        ep.wMaxPacketSize = 65;
        ASSERT_ERR(usb_desc_encode_config(&c, USB_SPEED_FULL, USB_DT_CONFIG, buf, sizeof(buf)), EINVAL);
        ep.wMaxPacketSize = 1024 | 2 << 11; /* high-bandwidth: legal at high speed only */
        ASSERT_EQ(usb_desc_encode_config(&c, USB_SPEED_HIGH, USB_DT_CONFIG, buf, sizeof(buf)), 25);
        ASSERT_ERR(usb_desc_encode_config(&c, USB_SPEED_SUPER, USB_DT_CONFIG, buf, sizeof(buf)), EINVAL);
        ep.wMaxPacketSize = 8;

        ep.bEndpointAddress = 0x80;
        ASSERT_ERR(usb_desc_encode_config(&c, USB_SPEED_HIGH, USB_DT_CONFIG, buf, sizeof(buf)), EINVAL);
        ep.bEndpointAddress = 0x81;

        ep.bMaxBurst = 16;
        ASSERT_ERR(usb_desc_encode_config(&c, USB_SPEED_SUPER, USB_DT_CONFIG, buf, sizeof(buf)), EINVAL);
        ep.bMaxBurst = 0;

        iface.extra = bad_extra;
        iface.extra_len = sizeof(bad_extra);
        ASSERT_ERR(usb_desc_encode_config(&c, USB_SPEED_HIGH, USB_DT_CONFIG, buf, sizeof(buf)), EINVAL);
        iface.extra = NULL;
        ASSERT_ERR(usb_desc_encode_config(&c, USB_SPEED_HIGH, USB_DT_CONFIG, buf, sizeof(buf)), EINVAL);
        iface.extra_len = 0;

        c.bmAttributes = USB_CONFIG_ATT_SELFPOWER;
        ASSERT_ERR(usb_desc_encode_config(&c, USB_SPEED_HIGH, USB_DT_CONFIG, buf, sizeof(buf)), EINVAL);
        c.bmAttributes = USB_CONFIG_ATT_ONE | 0x01;
        ASSERT_ERR(usb_desc_encode_config(&c, USB_SPEED_HIGH, USB_DT_CONFIG, buf, sizeof(buf)), EINVAL);
        c.bmAttributes = USB_CONFIG_ATT_ONE;

        iface.endpoints = NULL;
        ASSERT_ERR(usb_desc_encode_config(&c, USB_SPEED_HIGH, USB_DT_CONFIG, buf, sizeof(buf)), EINVAL);
}

static void test_alt_settings_and_total_limit(void) {
        static UsbEndpointDesc eps[255];
        static UsbInterfaceDesc ifaces[40];
        UsbConfigDesc c = { .bConfigurationValue = 1, .bmAttributes = USB_CONFIG_ATT_ONE };
        uint8_t buf[64];
        int r;

        for (size_t i = 0; i < ELEMENTSOF(eps); i++)
                eps[i] = (UsbEndpointDesc) { .bEndpointAddress = 0x81,
                                             .bmAttributes = USB_ENDPOINT_XFER_BULK };

        /* Interface 0 with alternate settings 0 and 1, interface 1: the wire says 2 interfaces. */
        ifaces[0] = (UsbInterfaceDesc) { .bInterfaceNumber = 0, .bAlternateSetting = 0 };
        ifaces[1] = (UsbInterfaceDesc) { .bInterfaceNumber = 0, .bAlternateSetting = 1, .bNumEndpoints = 1,
                                         .endpoints = eps };
        ifaces[2] = (UsbInterfaceDesc) { .bInterfaceNumber = 1, .bAlternateSetting = 0 };
        c.interfaces = ifaces;
        c.bNumInterfaces = 3;
        r = usb_desc_encode_config(&c, USB_SPEED_HIGH, USB_DT_CONFIG, buf, sizeof(buf));
        ASSERT_EQ(r, 9 + 3 * 9 + 7);
        ASSERT_EQ(buf[4], 2);

        /* 40 interfaces of 255 endpoints each is 9 + 40 * (9 + 255 * 7) bytes, beyond wTotalLength. */
        for (size_t i = 0; i < ELEMENTSOF(ifaces); i++)
                ifaces[i] = (UsbInterfaceDesc) { .bInterfaceNumber = (uint8_t) i, .bNumEndpoints = 255,
                                                 .endpoints = eps };
        c.bNumInterfaces = ELEMENTSOF(ifaces);
        ASSERT_ERR(usb_desc_encode_config(&c, USB_SPEED_HIGH, USB_DT_CONFIG, buf, sizeof(buf)), EINVAL);
        c.bNumInterfaces = 36; /* 9 + 36 * 1794 = 64593 */
        ASSERT_EQ(usb_desc_encode_config(&c, USB_SPEED_HIGH, USB_DT_CONFIG, NULL, 0), 64593);
}

static int stop_cb(uint8_t type, const uint8_t *desc, size_t desc_len, void *userdata) {
        unsigned *n = userdata;
        return ++*n == 2 ? -ECANCELED : 0;
}

static void test_walk_malformed(void) {
        uint8_t buf[64];
        unsigned n = 0;

        memset(buf, 0, sizeof(buf));
        memcpy(buf, msc_config_hs, sizeof(msc_config_hs));
        ASSERT_EQ(usb_desc_walk(buf, sizeof(msc_config_hs), NULL, NULL), 4);
        /* Extra bytes after wTotalLength are not part of the set. */
        ASSERT_EQ(usb_desc_walk(buf, sizeof(buf), NULL, NULL), 4);
        ASSERT_ERR(usb_desc_walk(buf, sizeof(msc_config_hs), stop_cb, &n), ECANCELED);
        ASSERT_EQ(n, 2);

        /* Short buffer, short header, wrong type */
        ASSERT_ERR(usb_desc_walk(buf, sizeof(msc_config_hs) - 1, NULL, NULL), EBADMSG);
        ASSERT_ERR(usb_desc_walk(buf, 8, NULL, NULL), EBADMSG);
        ASSERT_ERR(usb_desc_walk(NULL, 0, NULL, NULL), EBADMSG);
        buf[1] = USB_DT_DEVICE;
        ASSERT_ERR(usb_desc_walk(buf, sizeof(msc_config_hs), NULL, NULL), EBADMSG);
        buf[1] = USB_DT_CONFIG;

        /* wTotalLength smaller than the header */
        put_le16(buf + 2, 8);
        ASSERT_ERR(usb_desc_walk(buf, sizeof(msc_config_hs), NULL, NULL), EBADMSG);
        /* wTotalLength ending inside a descriptor */
        put_le16(buf + 2, 30);
        ASSERT_ERR(usb_desc_walk(buf, sizeof(msc_config_hs), NULL, NULL), EBADMSG);
        put_le16(buf + 2, 32);

        /* bLength 0 (would loop forever), 1, past the end, too short for an endpoint */
        buf[18] = 0;
        ASSERT_ERR(usb_desc_walk(buf, sizeof(msc_config_hs), NULL, NULL), EBADMSG);
        buf[18] = 1;
        ASSERT_ERR(usb_desc_walk(buf, sizeof(msc_config_hs), NULL, NULL), EBADMSG);
        buf[18] = 15;
        ASSERT_ERR(usb_desc_walk(buf, sizeof(msc_config_hs), NULL, NULL), EBADMSG);
        buf[18] = 6;
        ASSERT_ERR(usb_desc_walk(buf, sizeof(msc_config_hs), NULL, NULL), EBADMSG);
        buf[18] = 7;

        /* A configuration header nested inside the set */
        buf[9 + 1] = USB_DT_CONFIG;
        ASSERT_ERR(usb_desc_walk(buf, sizeof(msc_config_hs), NULL, NULL), EBADMSG);
        buf[9 + 1] = USB_DT_INTERFACE;

        /* No callback ran for a set that turned out bad at its end. */
        n = 0;
        buf[25] = 8;
        ASSERT_ERR(usb_desc_walk(buf, sizeof(msc_config_hs), stop_cb, &n), EBADMSG);
        ASSERT_EQ(n, 0);
}

static void test_config_header(void) {
        UsbConfigDesc c;
        uint16_t total;

        ASSERT_OK(usb_desc_parse_config_header(msc_config_hs, 9, &c, &total));
        ASSERT_EQ(total, 32);
        ASSERT_EQ(c.bNumInterfaces, 1);
        ASSERT_EQ(c.bConfigurationValue, 1);
        ASSERT_EQ(c.bmAttributes, 0xe0);
        ASSERT_EQ(c.bMaxPower, 0x32);
        ASSERT_ERR(usb_desc_parse_config_header(msc_config_hs, 8, &c, &total), EBADMSG);
}

static void test_setup(void) {
        static const uint8_t raw[] = { 0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00 };
        uint8_t out[8];
        UsbSetup s;

        usb_setup_decode(raw, &s);
        ASSERT_EQ(s.bmRequestType, 0x80);
        ASSERT_EQ(s.bRequest, USB_REQ_GET_DESCRIPTOR);
        ASSERT_EQ(s.wValue, 0x0100);
        ASSERT_EQ(s.wIndex, 0);
        ASSERT_EQ(s.wLength, 18);
        ASSERT_TRUE(usb_setup_is_in(&s));
        ASSERT_EQ(usb_setup_type(&s), USB_TYPE_STANDARD);
        ASSERT_EQ(usb_setup_recipient(&s), USB_RECIP_DEVICE);
        usb_setup_encode(out, &s);
        ASSERT_MEMEQ(out, raw, 8);

        s = (UsbSetup) { USB_RT_PORT, USB_REQ_SET_FEATURE, 0xa1b2, 0xc3d4, 0xe5f6 };
        usb_setup_encode(out, &s);
        ASSERT_EQ(out[2], 0xb2);
        ASSERT_EQ(out[3], 0xa1);
        ASSERT_EQ(get_le16(out + 4), 0xc3d4);
        ASSERT_EQ(get_le16(out + 6), 0xe5f6);
        ASSERT_FALSE(usb_setup_is_in(&s));
        ASSERT_EQ(usb_setup_type(&s), USB_TYPE_CLASS);
        ASSERT_EQ(usb_setup_recipient(&s), USB_RECIP_OTHER);

        ASSERT_STREQ(usb_request_to_string(USB_REQ_SET_INTERFACE), "SET_INTERFACE");
        ASSERT_TRUE(usb_request_to_string(2) == NULL);
        ASSERT_TRUE(usb_request_to_string(0xff) == NULL);
}

static void check_format(UsbSetup s, const char *expected) {
        char buf[160];
        int r;

        r = usb_setup_format(&s, buf, sizeof(buf));
        ASSERT_STREQ(buf, expected);
        ASSERT_EQ(r, strlen(expected));
}

static void test_setup_format(void) {
        char small[8];

        check_format((UsbSetup) { USB_DIR_IN, USB_REQ_GET_DESCRIPTOR, 0x0100, 0, 18 },
                     "GET_DESCRIPTOR(DEVICE, 18) type=std recip=device wValue=0x0100 wIndex=0x0000 "
                     "wLength=18");
        check_format((UsbSetup) { USB_DIR_IN, USB_REQ_GET_DESCRIPTOR, 0x0302, 0x0409, 255 },
                     "GET_DESCRIPTOR(STRING 2, 255) type=std recip=device wValue=0x0302 wIndex=0x0409 "
                     "wLength=255");
        check_format((UsbSetup) { USB_RT_PORT, USB_REQ_SET_FEATURE, USB_PORT_FEAT_SUSPEND, 2, 0 },
                     "SET_PORT_FEATURE(SUSPEND) port 2 type=class recip=other wValue=0x0002 wIndex=0x0002 "
                     "wLength=0");
        check_format((UsbSetup) { USB_RT_PORT, USB_REQ_CLEAR_FEATURE, USB_PORT_FEAT_C_SUSPEND, 3, 0 },
                     "CLEAR_PORT_FEATURE(C_SUSPEND) port 3 type=class recip=other wValue=0x0012 "
                     "wIndex=0x0003 wLength=0");
        check_format((UsbSetup) { USB_DIR_IN | USB_RT_PORT, USB_REQ_GET_STATUS, 0, 1, 4 },
                     "GET_PORT_STATUS port 1 type=class recip=other wValue=0x0000 wIndex=0x0001 wLength=4");
        check_format((UsbSetup) { USB_DIR_IN | USB_RT_HUB, USB_REQ_GET_DESCRIPTOR, USB_DT_HUB << 8, 0, 71 },
                     "GET_HUB_DESCRIPTOR(HUB, 71) type=class recip=device wValue=0x2900 wIndex=0x0000 "
                     "wLength=71");
        check_format((UsbSetup) { USB_RT_PORT, USB_REQ_CLEAR_TT_BUFFER, 0x1234, 1, 0 },
                     "CLEAR_TT_BUFFER port 1 type=class recip=other wValue=0x1234 wIndex=0x0001 wLength=0");
        check_format((UsbSetup) { 0, USB_REQ_SET_FEATURE, USB_DEVICE_REMOTE_WAKEUP, 0, 0 },
                     "SET_FEATURE(DEVICE_REMOTE_WAKEUP) type=std recip=device wValue=0x0001 wIndex=0x0000 "
                     "wLength=0");
        check_format((UsbSetup) { USB_RECIP_ENDPOINT, USB_REQ_CLEAR_FEATURE, USB_ENDPOINT_HALT, 0x81, 0 },
                     "CLEAR_FEATURE(ENDPOINT_HALT) ep 0x81 type=std recip=endpoint wValue=0x0000 "
                     "wIndex=0x0081 wLength=0");
        check_format((UsbSetup) { 0, USB_REQ_SET_CONFIGURATION, 1, 0, 0 },
                     "SET_CONFIGURATION(1) type=std recip=device wValue=0x0001 wIndex=0x0000 wLength=0");
        check_format((UsbSetup) { USB_DIR_IN | USB_TYPE_CLASS | USB_RECIP_INTERFACE, BOT_REQ_GET_MAX_LUN,
                                  0, 0, 1 },
                     "GET_MAX_LUN intf 0 type=class recip=interface wValue=0x0000 wIndex=0x0000 wLength=1");
        check_format((UsbSetup) { USB_DIR_IN | USB_TYPE_VENDOR, 0x42, 0, 0, 4 },
                     "VENDOR_REQUEST_0x42 type=vendor recip=device wValue=0x0000 wIndex=0x0000 wLength=4");
        check_format((UsbSetup) { 0x1f, 0x02, 0, 0, 0 },
                     "REQUEST_0x02 type=std recip=reserved wValue=0x0000 wIndex=0x0000 wLength=0");

        /* snprintf semantics: truncated, terminated, full length returned */
        UsbSetup s = { USB_DIR_IN, USB_REQ_GET_DESCRIPTOR, 0x0100, 0, 18 };
        ASSERT_EQ(usb_setup_format(&s, small, sizeof(small)),
                  strlen("GET_DESCRIPTOR(DEVICE, 18) type=std recip=device wValue=0x0100 wIndex=0x0000 "
                         "wLength=18"));
        ASSERT_STREQ(small, "GET_DES");
        ASSERT_TRUE(usb_setup_format(&s, NULL, 0) > 0);
}

static void test_speed_table(void) {
        for (UsbSpeed s = 0; s < _USB_SPEED_MAX; s++) {
                const char *name = usb_speed_to_string(s);
                ASSERT_TRUE(name);
                ASSERT_EQ(usb_speed_from_string(name), s);
        }
        ASSERT_STREQ(usb_speed_to_string(USB_SPEED_SUPER_PLUS), "super-plus");
        ASSERT_EQ(usb_speed_from_string("high"), USB_SPEED_HIGH);
        ASSERT_EQ(usb_speed_from_string("High"), _USB_SPEED_INVALID);
        ASSERT_EQ(usb_speed_from_string(NULL), _USB_SPEED_INVALID);
        ASSERT_TRUE(usb_speed_to_string(_USB_SPEED_MAX) == NULL);
        /* The kernel's enum usb_device_speed, which vhci's attach file takes as a number */
        ASSERT_EQ(USB_SPEED_HIGH, 3);
        ASSERT_EQ(USB_SPEED_SUPER, 5);
        ASSERT_EQ(USB_SPEED_SUPER_PLUS, 6);
}

TEST_MAIN(TEST(test_real_mass_storage_config),
          TEST(test_msc_config_speeds),
          TEST(test_hid_keyboard_config),
          TEST(test_hub_config),
          TEST(test_truncated_output),
          TEST(test_device),
          TEST(test_qualifier),
          TEST(test_strings),
          TEST(test_langids),
          TEST(test_bos),
          TEST(test_hub_descriptor),
          TEST(test_invalid_tables),
          TEST(test_alt_settings_and_total_limit),
          TEST(test_walk_malformed),
          TEST(test_config_header),
          TEST(test_setup),
          TEST(test_setup_format),
          TEST(test_speed_table))
