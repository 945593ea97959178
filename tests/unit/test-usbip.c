/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>

#include "tests.h"
#include "usbip.h"

/* Every rejection must come with a text that names the problem, not just an errno. */
#define ASSERT_REJECTED(call, err, error_var)                                                      \
        do {                                                                                       \
                (error_var) = NULL;                                                                \
                ASSERT_ERR(call, err);                                                             \
                if (!(error_var))                                                                  \
                        TEST_FAIL("%s: no error string", #call);                                   \
        } while (0)

/* ---- vectors (hand-written, as the kernel puts them on the wire) ----------------------------- */

/* vhci's first control transfer to a newly attached device: GET_DESCRIPTOR(DEVICE) with
 * wLength 64 (hub_port_init()'s "new scheme"), devid 1-2, URB_DIR_IN mapped by urb_to_usbip(). */
static const uint8_t vec_cmd_submit_get_descriptor[USBIP_HEADER_SIZE] = {
        0x00, 0x00, 0x00, 0x01, /* command: CMD_SUBMIT */
        0x00, 0x00, 0x00, 0x02, /* seqnum */
        0x00, 0x01, 0x00, 0x02, /* devid: busnum 1 << 16 | devnum 2 */
        0x00, 0x00, 0x00, 0x01, /* direction: IN */
        0x00, 0x00, 0x00, 0x00, /* ep 0 */
        0x00, 0x00, 0x02, 0x00, /* transfer_flags: USBIP_URB_DIR_IN */
        0x00, 0x00, 0x00, 0x40, /* transfer_buffer_length 64 */
        0x00, 0x00, 0x00, 0x00, /* start_frame */
        0x00, 0x00, 0x00, 0x00, /* number_of_packets: vhci copies urb->number_of_packets = 0 */
        0x00, 0x00, 0x00, 0x00, /* interval */
        0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x40, 0x00, /* setup, raw: bmRequestType 0x80,
                                                         * GET_DESCRIPTOR, wValue 0x0100 (LE),
                                                         * wIndex 0, wLength 64 (LE) */
};

/* The answer: 18 bytes of device descriptor; devid/direction/ep are 0 as the stub sends them. */
static const uint8_t vec_ret_submit[USBIP_HEADER_SIZE] = {
        0x00, 0x00, 0x00, 0x03, /* command: RET_SUBMIT */
        0x00, 0x00, 0x00, 0x02, /* seqnum */
        0x00, 0x00, 0x00, 0x00, /* devid */
        0x00, 0x00, 0x00, 0x00, /* direction */
        0x00, 0x00, 0x00, 0x00, /* ep */
        0x00, 0x00, 0x00, 0x00, /* status 0 */
        0x00, 0x00, 0x00, 0x12, /* actual_length 18 */
        0x00, 0x00, 0x00, 0x00, /* start_frame */
        0x00, 0x00, 0x00, 0x00, /* number_of_packets */
        0x00, 0x00, 0x00, 0x00, /* error_count */
        0, 0, 0, 0, 0, 0, 0, 0, /* padding */
};

/* A STALL: status -EPIPE. */
static const uint8_t vec_ret_submit_stall[USBIP_HEADER_SIZE] = {
        0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0xff, 0xff, 0xff, 0xe0, /* status -32 */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

static const uint8_t vec_cmd_unlink[USBIP_HEADER_SIZE] = {
        0x00, 0x00, 0x00, 0x02, /* command: CMD_UNLINK */
        0x00, 0x00, 0x00, 0x05, /* seqnum of the unlink itself */
        0x00, 0x01, 0x00, 0x02, /* devid */
        0x00, 0x00, 0x00, 0x00, /* direction: vhci leaves it 0 */
        0x00, 0x00, 0x00, 0x00, /* ep */
        0x00, 0x00, 0x00, 0x04, /* victim's seqnum */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* padding */
};

static const uint8_t vec_ret_unlink[USBIP_HEADER_SIZE] = {
        0x00, 0x00, 0x00, 0x04, /* command: RET_UNLINK */
        0x00, 0x00, 0x00, 0x05, /* the CMD_UNLINK's seqnum, not the victim's */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0xff, 0xff, 0xff, 0x98, /* status -ECONNRESET (-104): the unlink won */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* padding */
};

static const uint8_t vec_op_req_devlist[USBIP_OP_COMMON_SIZE] = {
        0x01, 0x11, /* version 1.1.1 */
        0x80, 0x05, /* OP_REQ_DEVLIST */
        0x00, 0x00, 0x00, 0x00, /* status */
};

#define IMPORT_PATH "/sys/devices/platform/dummy_hcd.0/usb1/1-1"

/* OP_REP_IMPORT for a g_mass_storage gadget: op_common, then usbip_usb_device. Only the tail of
 * the record is spelled out here; the strings are placed by make_op_rep_import(). */
static const uint8_t vec_op_rep_import_common[USBIP_OP_COMMON_SIZE] = {
        0x01, 0x11, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00,
};
static const uint8_t vec_op_rep_import_tail[USBIP_USB_DEVICE_SIZE - USBIP_DEV_OFF_BUSNUM] = {
        0x00, 0x00, 0x00, 0x01, /* busnum */
        0x00, 0x00, 0x00, 0x02, /* devnum */
        0x00, 0x00, 0x00, 0x03, /* speed: USB_SPEED_HIGH */
        0x05, 0x25,             /* idVendor (BE here, unlike in USB descriptors) */
        0xa4, 0xa5,             /* idProduct */
        0x04, 0x09,             /* bcdDevice */
        0x00, 0x00, 0x00,       /* class, subclass, protocol */
        0x01,                   /* bConfigurationValue */
        0x01,                   /* bNumConfigurations */
        0x01,                   /* bNumInterfaces */
};

static void make_op_rep_import(uint8_t buf[static USBIP_OP_COMMON_SIZE + USBIP_USB_DEVICE_SIZE]) {
        memset(buf, 0, USBIP_OP_COMMON_SIZE + USBIP_USB_DEVICE_SIZE);
        memcpy(buf, vec_op_rep_import_common, sizeof(vec_op_rep_import_common));
        uint8_t *d = buf + USBIP_OP_COMMON_SIZE;
        memcpy(d + 0, IMPORT_PATH, strlen(IMPORT_PATH));
        memcpy(d + 256, "1-1", 3);
        memcpy(d + 288, vec_op_rep_import_tail, sizeof(vec_op_rep_import_tail));
}

static const UsbipUsbDevice import_device = {
        .path = IMPORT_PATH,
        .busid = "1-1",
        .busnum = 1,
        .devnum = 2,
        .speed = 3,
        .idVendor = 0x0525,
        .idProduct = 0xa4a5,
        .bcdDevice = 0x0409,
        .bConfigurationValue = 1,
        .bNumConfigurations = 1,
        .bNumInterfaces = 1,
};

static UsbipHeader valid_cmd_submit(void) {
        UsbipHeader h = {
                .command = USBIP_CMD_SUBMIT,
                .seqnum = 2,
                .devid = 0x00010002,
                .direction = USBIP_DIR_IN,
                .ep = 0,
                .u.cmd_submit = {
                        .transfer_flags = USBIP_URB_DIR_IN,
                        .transfer_buffer_length = 64,
                        .setup = {0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x40, 0x00},
                },
        };
        return h;
}

static void header_bytes(const UsbipHeader *h, uint8_t buf[static USBIP_HEADER_SIZE]) {
        usbip_header_encode(buf, h);
}

/* ---- management phase ------------------------------------------------------------------------ */

static void test_op_common_vector(void) {
        UsbipOpCommon op;
        const char *error = NULL;
        ASSERT_OK(usbip_op_common_decode(vec_op_req_devlist, sizeof(vec_op_req_devlist), &op, &error));
        ASSERT_EQ(op.version, USBIP_VERSION);
        ASSERT_EQ(op.code, USBIP_OP_REQ_DEVLIST);
        ASSERT_EQ(op.status, USBIP_ST_OK);

        uint8_t buf[USBIP_OP_COMMON_SIZE];
        usbip_op_common_encode(buf,
                               &(UsbipOpCommon) {.version = USBIP_VERSION, .code = USBIP_OP_REQ_DEVLIST});
        ASSERT_MEMEQ(buf, vec_op_req_devlist, sizeof(buf));
}

static void test_op_common_round_trip(void) {
        static const UsbipOpCode codes[] = {
                USBIP_OP_REQ_DEVINFO, USBIP_OP_REP_DEVINFO, USBIP_OP_REQ_IMPORT,
                USBIP_OP_REP_IMPORT,  USBIP_OP_REQ_DEVLIST, USBIP_OP_REP_DEVLIST,
        };
        for (size_t i = 0; i < ELEMENTSOF(codes); i++)
                for (uint32_t status = USBIP_ST_OK; status <= USBIP_ST_ERROR; status++) {
                        UsbipOpCommon in = {.version = USBIP_VERSION, .code = codes[i], .status = status},
                                      out;
                        uint8_t buf[USBIP_OP_COMMON_SIZE];
                        usbip_op_common_encode(buf, &in);
                        ASSERT_OK(usbip_op_common_decode(buf, sizeof(buf), &out, NULL));
                        ASSERT_EQ(out.version, in.version);
                        ASSERT_EQ(out.code, in.code);
                        ASSERT_EQ(out.status, in.status);
                        ASSERT_TRUE(usbip_op_code_to_string(codes[i]));
                        ASSERT_TRUE(usbip_op_status_to_string((UsbipOpStatus) status));
                }
}

static void test_op_common_rejects(void) {
        UsbipOpCommon op;
        const char *error;

        ASSERT_REJECTED(usbip_op_common_decode(vec_op_req_devlist, USBIP_OP_COMMON_SIZE - 1, &op, &error),
                        EBADMSG, error);
        ASSERT_REJECTED(usbip_op_common_decode(NULL, 0, &op, &error), EBADMSG, error);

        /* An old peer speaking 1.0.6: the caller must still be able to print what it got. */
        uint8_t old[] = {0x01, 0x06, 0x80, 0x05, 0, 0, 0, 0};
        ASSERT_REJECTED(usbip_op_common_decode(old, sizeof(old), &op, &error), EPROTONOSUPPORT, error);
        ASSERT_EQ(op.version, 0x0106);
        ASSERT_EQ(op.code, USBIP_OP_REQ_DEVLIST);

        /* OP_REQ_CRYPKEY exists in the headers but was never implemented. */
        uint8_t crypkey[] = {0x01, 0x11, 0x80, 0x04, 0, 0, 0, 0};
        ASSERT_REJECTED(usbip_op_common_decode(crypkey, sizeof(crypkey), &op, &error), EOPNOTSUPP, error);
        ASSERT_EQ(op.version, USBIP_VERSION);
        ASSERT_EQ(op.code, 0x8004);

        /* Version is judged before the code. */
        uint8_t both[] = {0x02, 0x00, 0x12, 0x34, 0, 0, 0, 0};
        ASSERT_REJECTED(usbip_op_common_decode(both, sizeof(both), &op, &error), EPROTONOSUPPORT, error);
}

static void test_import_request(void) {
        uint8_t buf[USBIP_OP_IMPORT_REQ_SIZE];
        char busid[USBIP_BUSID_SIZE];
        const char *error = NULL;

        usbip_op_import_request_encode(buf, "1-1.2");
        ASSERT_MEMEQ(buf, "1-1.2", 6);
        for (size_t i = 5; i < sizeof(buf); i++)
                ASSERT_EQ(buf[i], 0);
        ASSERT_OK(usbip_op_import_request_decode(buf, sizeof(buf), busid, &error));
        ASSERT_STREQ(busid, "1-1.2");

        /* 31 characters is the longest busid that fits. */
        const char *longest = "0123456789012345678901234567890";
        usbip_op_import_request_encode(buf, longest);
        ASSERT_OK(usbip_op_import_request_decode(buf, sizeof(buf), busid, &error));
        ASSERT_STREQ(busid, longest);

        /* Too long is truncated on encode, never left unterminated. */
        usbip_op_import_request_encode(buf, "0123456789012345678901234567890123456789");
        ASSERT_EQ(buf[31], 0);
        ASSERT_OK(usbip_op_import_request_decode(buf, sizeof(buf), busid, &error));
        ASSERT_EQ(strlen(busid), 31);
}

static void test_import_request_rejects(void) {
        uint8_t buf[USBIP_OP_IMPORT_REQ_SIZE];
        char busid[USBIP_BUSID_SIZE];
        const char *error;

        usbip_op_import_request_encode(buf, "1-1");
        ASSERT_REJECTED(usbip_op_import_request_decode(buf, sizeof(buf) - 1, busid, &error), EBADMSG, error);

        memset(buf, 'a', sizeof(buf));
        ASSERT_REJECTED(usbip_op_import_request_decode(buf, sizeof(buf), busid, &error), EBADMSG, error);
        ASSERT_EQ(busid[0], 0);

        memset(buf, 0, sizeof(buf));
        ASSERT_REJECTED(usbip_op_import_request_decode(buf, sizeof(buf), busid, &error), EBADMSG, error);

        memcpy(buf, "1-\n1", 5);
        ASSERT_REJECTED(usbip_op_import_request_decode(buf, sizeof(buf), busid, &error), EBADMSG, error);

        memcpy(buf, "1-\x80", 4);
        ASSERT_REJECTED(usbip_op_import_request_decode(buf, sizeof(buf), busid, &error), EBADMSG, error);

        memcpy(buf, "1-\x7f", 4);
        ASSERT_REJECTED(usbip_op_import_request_decode(buf, sizeof(buf), busid, &error), EBADMSG, error);
}

static void test_op_rep_import_vector(void) {
        uint8_t expected[USBIP_OP_COMMON_SIZE + USBIP_USB_DEVICE_SIZE], buf[sizeof(expected)];
        make_op_rep_import(expected);

        usbip_op_common_encode(buf,
                               &(UsbipOpCommon) {.version = USBIP_VERSION, .code = USBIP_OP_REP_IMPORT});
        usbip_usb_device_encode(buf + USBIP_OP_COMMON_SIZE, &import_device);
        ASSERT_MEMEQ(buf, expected, sizeof(expected));

        UsbipOpCommon op;
        UsbipUsbDevice d;
        const char *error = NULL;
        ASSERT_OK(usbip_op_common_decode(expected, sizeof(expected), &op, &error));
        ASSERT_EQ(op.code, USBIP_OP_REP_IMPORT);
        ASSERT_OK(usbip_usb_device_decode(
                        expected + USBIP_OP_COMMON_SIZE, USBIP_USB_DEVICE_SIZE, &d, &error));
        ASSERT_STREQ(d.path, IMPORT_PATH);
        ASSERT_STREQ(d.busid, "1-1");
        ASSERT_EQ(d.busnum, 1);
        ASSERT_EQ(d.devnum, 2);
        ASSERT_EQ(d.speed, 3);
        ASSERT_EQ(d.idVendor, 0x0525);
        ASSERT_EQ(d.idProduct, 0xa4a5);
        ASSERT_EQ(d.bcdDevice, 0x0409);
        ASSERT_EQ(d.bConfigurationValue, 1);
        ASSERT_EQ(d.bNumConfigurations, 1);
        ASSERT_EQ(d.bNumInterfaces, 1);
        ASSERT_MEMEQ(&d, &import_device, sizeof(d));
}

static void test_usb_device_round_trip(void) {
        UsbipUsbDevice in = {
                .busnum = 0xfedcba98,
                .devnum = 0x01234567,
                .speed = 6,
                .idVendor = 0x1d6b,
                .idProduct = 0x0104,
                .bcdDevice = 0xffff,
                .bDeviceClass = 0x09,
                .bDeviceSubClass = 0xfe,
                .bDeviceProtocol = 0x02,
                .bConfigurationValue = 0xff,
                .bNumConfigurations = 0x80,
                .bNumInterfaces = 0x20,
        }, out;
        memset(in.path, 'p', sizeof(in.path) - 1); /* longest path that fits */
        memset(in.busid, 'b', sizeof(in.busid) - 1);

        uint8_t buf[USBIP_USB_DEVICE_SIZE];
        usbip_usb_device_encode(buf, &in);
        ASSERT_EQ(buf[USBIP_DEV_OFF_BUSID - 1], 0);
        ASSERT_EQ(buf[USBIP_DEV_OFF_BUSNUM - 1], 0);
        ASSERT_EQ(buf[USBIP_DEV_OFF_BUSNUM], 0xfe);
        ASSERT_EQ(buf[USBIP_DEV_OFF_NUM_INTERFACES], 0x20);
        ASSERT_OK(usbip_usb_device_decode(buf, sizeof(buf), &out, NULL));
        ASSERT_MEMEQ(&out, &in, sizeof(in));

        /* A struct whose strings fill their arrays (a caller bug) still encodes terminated. */
        memset(in.path, 'x', sizeof(in.path));
        memset(in.busid, 'y', sizeof(in.busid));
        usbip_usb_device_encode(buf, &in);
        ASSERT_OK(usbip_usb_device_decode(buf, sizeof(buf), &out, NULL));
        ASSERT_EQ(strlen(out.path), USBIP_PATH_SIZE - 1);
        ASSERT_EQ(strlen(out.busid), USBIP_BUSID_SIZE - 1);

        /* Garbage after the NUL is not kept. */
        usbip_usb_device_encode(buf, &import_device);
        buf[USBIP_DEV_OFF_BUSID + 10] = 'z';
        ASSERT_OK(usbip_usb_device_decode(buf, sizeof(buf), &out, NULL));
        ASSERT_MEMEQ(&out, &import_device, sizeof(out));
}

static void test_usb_device_rejects(void) {
        uint8_t buf[USBIP_USB_DEVICE_SIZE];
        UsbipUsbDevice d;
        const char *error;

        usbip_usb_device_encode(buf, &import_device);
        ASSERT_REJECTED(usbip_usb_device_decode(buf, sizeof(buf) - 1, &d, &error), EBADMSG, error);

        memset(buf + USBIP_DEV_OFF_PATH, '/', USBIP_PATH_SIZE);
        ASSERT_REJECTED(usbip_usb_device_decode(buf, sizeof(buf), &d, &error), EBADMSG, error);
        ASSERT_EQ(d.devnum, 2); /* the numbers are there for the log line */

        usbip_usb_device_encode(buf, &import_device);
        memset(buf + USBIP_DEV_OFF_BUSID, '1', USBIP_BUSID_SIZE);
        ASSERT_REJECTED(usbip_usb_device_decode(buf, sizeof(buf), &d, &error), EBADMSG, error);
}

static void test_usb_interface(void) {
        UsbipUsbInterface out, in = {
                .bInterfaceClass = 0x08,
                .bInterfaceSubClass = 0x06,
                .bInterfaceProtocol = 0x50,
        };
        uint8_t buf[USBIP_USB_INTERFACE_SIZE] = {0xff, 0xff, 0xff, 0xff};
        usbip_usb_interface_encode(buf, &in);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) {0x08, 0x06, 0x50, 0x00}), sizeof(buf));
        ASSERT_OK(usbip_usb_interface_decode(buf, sizeof(buf), &out));
        ASSERT_EQ(out.bInterfaceClass, 0x08);
        ASSERT_EQ(out.bInterfaceSubClass, 0x06);
        ASSERT_EQ(out.bInterfaceProtocol, 0x50);

        buf[3] = 0xaa; /* padding is ignored */
        ASSERT_OK(usbip_usb_interface_decode(buf, sizeof(buf), &out));
        ASSERT_ERR(usbip_usb_interface_decode(buf, 3, &out), EBADMSG);
}

static void test_devlist_reply(void) {
        uint8_t buf[USBIP_OP_DEVLIST_REPLY_SIZE];
        uint32_t n;
        usbip_op_devlist_reply_encode(buf, 0x01020304);
        ASSERT_MEMEQ(buf, ((const uint8_t[]) {1, 2, 3, 4}), sizeof(buf));
        ASSERT_OK(usbip_op_devlist_reply_decode(buf, sizeof(buf), &n));
        ASSERT_EQ(n, 0x01020304);
        ASSERT_ERR(usbip_op_devlist_reply_decode(buf, 3, &n), EBADMSG);
        ASSERT_EQ(n, 0);
}

/* ---- URB phase ------------------------------------------------------------------------------- */

static void test_header_cmd_submit_vector(void) {
        UsbipHeader h;
        const char *error = NULL;
        ASSERT_OK(usbip_header_decode(vec_cmd_submit_get_descriptor, USBIP_HEADER_SIZE, &h, &error));
        ASSERT_EQ(h.command, USBIP_CMD_SUBMIT);
        ASSERT_EQ(h.seqnum, 2);
        ASSERT_EQ(h.devid, 0x00010002);
        ASSERT_EQ(h.direction, USBIP_DIR_IN);
        ASSERT_EQ(h.ep, 0);
        ASSERT_EQ(h.u.cmd_submit.transfer_flags, USBIP_URB_DIR_IN);
        ASSERT_EQ(h.u.cmd_submit.transfer_buffer_length, 64);
        ASSERT_EQ(h.u.cmd_submit.start_frame, 0);
        ASSERT_EQ(h.u.cmd_submit.number_of_packets, 0);
        ASSERT_EQ(h.u.cmd_submit.interval, 0);
        /* The setup packet stays little-endian: wValue 0x0100 reads back as LE. */
        ASSERT_EQ(h.u.cmd_submit.setup[0], 0x80);
        ASSERT_EQ(h.u.cmd_submit.setup[1], 0x06);
        ASSERT_EQ(get_le16(h.u.cmd_submit.setup + 2), 0x0100);
        ASSERT_EQ(get_le16(h.u.cmd_submit.setup + 6), 64);
        ASSERT_EQ(usbip_cmd_submit_payload_size(&h), 0); /* IN: no data follows */

        UsbipHeader built = valid_cmd_submit();
        uint8_t buf[USBIP_HEADER_SIZE];
        header_bytes(&built, buf);
        ASSERT_MEMEQ(buf, vec_cmd_submit_get_descriptor, USBIP_HEADER_SIZE);
}

static void test_header_ret_submit_vector(void) {
        UsbipHeader h;
        uint8_t buf[USBIP_HEADER_SIZE];
        const char *error = NULL;

        ASSERT_OK(usbip_header_decode(vec_ret_submit, sizeof(vec_ret_submit), &h, &error));
        ASSERT_EQ(h.command, USBIP_RET_SUBMIT);
        ASSERT_EQ(h.seqnum, 2);
        ASSERT_EQ(h.u.ret_submit.status, 0);
        ASSERT_EQ(h.u.ret_submit.actual_length, 18);
        ASSERT_EQ(usbip_cmd_submit_payload_size(&h), 0);

        UsbipHeader r = {.command = USBIP_RET_SUBMIT, .seqnum = 2, .u.ret_submit.actual_length = 18};
        usbip_header_encode(buf, &r);
        ASSERT_MEMEQ(buf, vec_ret_submit, sizeof(buf));

        ASSERT_OK(usbip_header_decode(vec_ret_submit_stall, sizeof(vec_ret_submit_stall), &h, &error));
        ASSERT_EQ(h.u.ret_submit.status, -EPIPE);
        r = (UsbipHeader) {.command = USBIP_RET_SUBMIT, .seqnum = 7, .u.ret_submit.status = -EPIPE};
        usbip_header_encode(buf, &r);
        ASSERT_MEMEQ(buf, vec_ret_submit_stall, sizeof(buf));
}

static void test_header_unlink_vectors(void) {
        UsbipHeader h;
        uint8_t buf[USBIP_HEADER_SIZE];
        const char *error = NULL;

        ASSERT_OK(usbip_header_decode(vec_cmd_unlink, sizeof(vec_cmd_unlink), &h, &error));
        ASSERT_EQ(h.command, USBIP_CMD_UNLINK);
        ASSERT_EQ(h.seqnum, 5);
        ASSERT_EQ(h.devid, 0x00010002);
        ASSERT_EQ(h.u.cmd_unlink.seqnum, 4);
        usbip_header_encode(buf, &h);
        ASSERT_MEMEQ(buf, vec_cmd_unlink, sizeof(buf));

        ASSERT_OK(usbip_header_decode(vec_ret_unlink, sizeof(vec_ret_unlink), &h, &error));
        ASSERT_EQ(h.command, USBIP_RET_UNLINK);
        ASSERT_EQ(h.seqnum, 5);
        ASSERT_EQ(h.u.ret_unlink.status, -ECONNRESET);
        UsbipHeader r = {.command = USBIP_RET_UNLINK, .seqnum = 5, .u.ret_unlink.status = -ECONNRESET};
        usbip_header_encode(buf, &r);
        ASSERT_MEMEQ(buf, vec_ret_unlink, sizeof(buf));
}

/* Field by field: a union initialised through a smaller member leaves the rest unspecified. */
static void assert_header_equal(const UsbipHeader *a, const UsbipHeader *b) {
        ASSERT_EQ(a->command, b->command);
        ASSERT_EQ(a->seqnum, b->seqnum);
        ASSERT_EQ(a->devid, b->devid);
        ASSERT_EQ(a->direction, b->direction);
        ASSERT_EQ(a->ep, b->ep);
        switch ((UsbipCommand) a->command) {
        case USBIP_CMD_SUBMIT:
                ASSERT_EQ(a->u.cmd_submit.transfer_flags, b->u.cmd_submit.transfer_flags);
                ASSERT_EQ(a->u.cmd_submit.transfer_buffer_length, b->u.cmd_submit.transfer_buffer_length);
                ASSERT_EQ(a->u.cmd_submit.start_frame, b->u.cmd_submit.start_frame);
                ASSERT_EQ(a->u.cmd_submit.number_of_packets, b->u.cmd_submit.number_of_packets);
                ASSERT_EQ(a->u.cmd_submit.interval, b->u.cmd_submit.interval);
                ASSERT_MEMEQ(a->u.cmd_submit.setup, b->u.cmd_submit.setup, 8);
                break;
        case USBIP_RET_SUBMIT:
                ASSERT_EQ(a->u.ret_submit.status, b->u.ret_submit.status);
                ASSERT_EQ(a->u.ret_submit.actual_length, b->u.ret_submit.actual_length);
                ASSERT_EQ(a->u.ret_submit.start_frame, b->u.ret_submit.start_frame);
                ASSERT_EQ(a->u.ret_submit.number_of_packets, b->u.ret_submit.number_of_packets);
                ASSERT_EQ(a->u.ret_submit.error_count, b->u.ret_submit.error_count);
                break;
        case USBIP_CMD_UNLINK:
                ASSERT_EQ(a->u.cmd_unlink.seqnum, b->u.cmd_unlink.seqnum);
                break;
        case USBIP_RET_UNLINK:
                ASSERT_EQ(a->u.ret_unlink.status, b->u.ret_unlink.status);
                break;
        }
}

static void assert_header_round_trip(const UsbipHeader *in) {
        uint8_t buf[USBIP_HEADER_SIZE], again[USBIP_HEADER_SIZE];
        UsbipHeader out;
        const char *error = NULL;

        usbip_header_encode(buf, in);
        int r = usbip_header_decode(buf, sizeof(buf), &out, &error);
        if (r < 0)
                TEST_FAIL("decode of %s failed: %s", usbip_command_to_string(in->command), error);
        assert_header_equal(&out, in);
        usbip_header_encode(again, &out);
        ASSERT_MEMEQ(again, buf, sizeof(buf));
}

static void test_header_round_trip(void) {
        UsbipHeader h = valid_cmd_submit();
        assert_header_round_trip(&h);

        /* Every field at a value with all four bytes distinct, to catch swapped offsets. */
        h = (UsbipHeader) {
                .command = USBIP_CMD_SUBMIT,
                .seqnum = 0x11223344,
                .devid = 0x55667788,
                .direction = USBIP_DIR_OUT,
                .ep = 15,
                .u.cmd_submit = {
                        .transfer_flags = USBIP_URB_ISO_ASAP | 0x00010000,
                        .transfer_buffer_length = 0x00a1b2c3,
                        .start_frame = -0x12345678,
                        .number_of_packets = 0x3ff,
                        .interval = 0x7edcba98,
                        .setup = {1, 2, 3, 4, 5, 6, 7, 8},
                },
        };
        assert_header_round_trip(&h);

        h = (UsbipHeader) {
                .command = USBIP_RET_SUBMIT,
                .seqnum = 0xfffffffe,
                .devid = 1,
                .direction = USBIP_DIR_IN,
                .ep = 3,
                .u.ret_submit = {
                        .status = -EXDEV,
                        .actual_length = USBIP_MAX_TRANSFER_LENGTH,
                        .start_frame = 0x0a0b0c0d,
                        .number_of_packets = 7,
                        .error_count = -0x0e0f1011,
                },
        };
        assert_header_round_trip(&h);

        h = (UsbipHeader) {
                .command = USBIP_CMD_UNLINK,
                .seqnum = 0xffffffff,
                .devid = 0x10002,
                .u.cmd_unlink.seqnum = 0xabcdef01,
        };
        assert_header_round_trip(&h);

        h = (UsbipHeader) {.command = USBIP_RET_UNLINK, .seqnum = 9, .u.ret_unlink.status = 0};
        assert_header_round_trip(&h);

        for (UsbipCommand c = USBIP_CMD_SUBMIT; c <= USBIP_RET_UNLINK; c++)
                ASSERT_TRUE(usbip_command_to_string(c));
}

/* Encodes h, expects decode to fail with EBADMSG and a message. */
static void assert_header_rejected(const UsbipHeader *h, const char *what) {
        uint8_t buf[USBIP_HEADER_SIZE];
        UsbipHeader out;
        const char *error = NULL;

        usbip_header_encode(buf, h);
        int r = usbip_header_decode(buf, sizeof(buf), &out, &error);
        if (r != -EBADMSG)
                TEST_FAIL("%s: expected -EBADMSG, got %d", what, r);
        if (!error)
                TEST_FAIL("%s: no error string", what);
        /* Values are filled for the log line even on rejection. */
        ASSERT_EQ(out.command, h->command);
        ASSERT_EQ(out.seqnum, h->seqnum);
        ASSERT_EQ(out.direction, h->direction);
        ASSERT_EQ(out.ep, h->ep);
}

static void assert_header_accepted(const UsbipHeader *h, const char *what) {
        uint8_t buf[USBIP_HEADER_SIZE];
        UsbipHeader out;
        const char *error = NULL;

        usbip_header_encode(buf, h);
        int r = usbip_header_decode(buf, sizeof(buf), &out, &error);
        if (r < 0)
                TEST_FAIL("%s: rejected: %s", what, error);
}

static void test_header_rejects_basic(void) {
        UsbipHeader h, out;
        const char *error;

        ASSERT_REJECTED(usbip_header_decode(
                                vec_cmd_submit_get_descriptor, USBIP_HEADER_SIZE - 1, &out, &error),
                        EBADMSG, error);
        ASSERT_REJECTED(usbip_header_decode(NULL, 0, &out, &error), EBADMSG, error);

        uint8_t buf[USBIP_HEADER_SIZE];
        memcpy(buf, vec_cmd_submit_get_descriptor, sizeof(buf));
        buf[3] = 0; /* command 0 */
        ASSERT_REJECTED(usbip_header_decode(buf, sizeof(buf), &out, &error), EBADMSG, error);
        ASSERT_EQ(out.seqnum, 2);
        buf[3] = 5;
        ASSERT_REJECTED(usbip_header_decode(buf, sizeof(buf), &out, &error), EBADMSG, error);
        buf[0] = 0x80; /* a large command that would be negative as an int enum */
        buf[3] = 1;
        ASSERT_REJECTED(usbip_header_decode(buf, sizeof(buf), &out, &error), EBADMSG, error);

        /* vhci's seqnum counter wraps through 0: a connection that lives that long must go on. */
        h = valid_cmd_submit();
        h.seqnum = 0;
        assert_header_accepted(&h, "seqnum 0");
        h = (UsbipHeader) {.command = USBIP_RET_UNLINK};
        assert_header_accepted(&h, "RET_UNLINK seqnum 0");

        h = valid_cmd_submit();
        h.direction = 2;
        assert_header_rejected(&h, "direction 2");
        h.direction = 0xffffffff;
        assert_header_rejected(&h, "direction -1");
        h = (UsbipHeader) {.command = USBIP_RET_SUBMIT, .seqnum = 1, .direction = 2};
        assert_header_rejected(&h, "RET_SUBMIT direction 2");

        h = valid_cmd_submit();
        h.ep = 15;
        assert_header_accepted(&h, "ep 15");
        h.ep = 16;
        assert_header_rejected(&h, "ep 16");
        h.ep = 0x80; /* an endpoint address with the direction bit is not an endpoint number */
        assert_header_rejected(&h, "ep 0x80");
        h = (UsbipHeader) {.command = USBIP_CMD_UNLINK, .seqnum = 3, .ep = 16, .u.cmd_unlink.seqnum = 2};
        assert_header_rejected(&h, "CMD_UNLINK ep 16");

        h = (UsbipHeader) {.command = USBIP_CMD_UNLINK, .seqnum = 3, .u.cmd_unlink.seqnum = 0};
        assert_header_accepted(&h, "unlink of seqnum 0");
}

static void test_header_rejects_cmd_submit(void) {
        UsbipHeader h;

        /* Transfer length at the limit and one above; a "negative" s32 length. */
        h = valid_cmd_submit();
        h.direction = USBIP_DIR_OUT;
        h.ep = 2;
        h.u.cmd_submit.transfer_flags = 0;
        h.u.cmd_submit.transfer_buffer_length = USBIP_MAX_TRANSFER_LENGTH;
        assert_header_accepted(&h, "length at the limit");
        ASSERT_EQ(usbip_cmd_submit_payload_size(&h), USBIP_MAX_TRANSFER_LENGTH);
        h.u.cmd_submit.transfer_buffer_length = USBIP_MAX_TRANSFER_LENGTH + 1;
        assert_header_rejected(&h, "length one above the limit");
        h.u.cmd_submit.transfer_buffer_length = 0xffffffff;
        assert_header_rejected(&h, "length -1");
        h.u.cmd_submit.transfer_buffer_length = 0x80000000;
        assert_header_rejected(&h, "length INT_MIN");

        /* number_of_packets: 0, -1, 1..1024 are fine, nothing else. */
        h = valid_cmd_submit();
        h.ep = 1;
        h.u.cmd_submit.number_of_packets = -1;
        assert_header_accepted(&h, "number_of_packets -1");
        h.u.cmd_submit.number_of_packets = 1;
        assert_header_accepted(&h, "number_of_packets 1");
        h.u.cmd_submit.number_of_packets = USBIP_MAX_ISO_PACKETS;
        assert_header_accepted(&h, "number_of_packets 1024");
        h.u.cmd_submit.number_of_packets = USBIP_MAX_ISO_PACKETS + 1;
        assert_header_rejected(&h, "number_of_packets 1025");
        h.u.cmd_submit.number_of_packets = -2;
        assert_header_rejected(&h, "number_of_packets -2");
        h.u.cmd_submit.number_of_packets = INT32_MIN;
        assert_header_rejected(&h, "number_of_packets INT32_MIN");
        h.u.cmd_submit.number_of_packets = INT32_MAX;
        assert_header_rejected(&h, "number_of_packets INT32_MAX");

        /* ISO on the control endpoint, either direction. */
        h = valid_cmd_submit();
        h.u.cmd_submit.number_of_packets = 1;
        assert_header_rejected(&h, "ISO IN on ep 0");
        h.direction = USBIP_DIR_OUT;
        h.u.cmd_submit.transfer_flags = 0;
        assert_header_rejected(&h, "ISO OUT on ep 0");
        h.u.cmd_submit.number_of_packets = -1;
        assert_header_accepted(&h, "non-ISO -1 on ep 0");

        /* On data endpoints direction and URB_DIR_IN must agree. */
        h = valid_cmd_submit();
        h.ep = 1;
        h.u.cmd_submit.transfer_flags = 0;
        assert_header_rejected(&h, "bulk IN without URB_DIR_IN");
        h = valid_cmd_submit();
        h.ep = 2;
        h.direction = USBIP_DIR_OUT;
        assert_header_rejected(&h, "bulk OUT with URB_DIR_IN");
        h.u.cmd_submit.transfer_flags = USBIP_URB_ZERO_PACKET | USBIP_URB_NO_INTERRUPT;
        assert_header_accepted(&h, "bulk OUT with other flags");

        /* On ep 0 the kernel derives URB_DIR_IN from the setup packet, not the pipe: a zero-length
         * request sent on a receive pipe ("BOGUS control dir", a WARN but still submitted) goes
         * out as direction IN without the flag, and must not cost the device its connection. */
        h = valid_cmd_submit();
        h.u.cmd_submit.transfer_flags = 0;
        h.u.cmd_submit.transfer_buffer_length = 0;
        assert_header_accepted(&h, "control IN pipe, zero-length, URB_DIR_OUT");
        h = valid_cmd_submit();
        h.direction = USBIP_DIR_OUT;
        assert_header_accepted(&h, "control OUT pipe with URB_DIR_IN");
}

static void test_header_rejects_ret_submit(void) {
        UsbipHeader h = {.command = USBIP_RET_SUBMIT, .seqnum = 1};

        h.u.ret_submit.actual_length = USBIP_MAX_TRANSFER_LENGTH;
        assert_header_accepted(&h, "actual_length at the limit");
        h.u.ret_submit.actual_length = USBIP_MAX_TRANSFER_LENGTH + 1;
        assert_header_rejected(&h, "actual_length above the limit");

        h.u.ret_submit.actual_length = 0;
        h.u.ret_submit.number_of_packets = USBIP_MAX_ISO_PACKETS;
        assert_header_accepted(&h, "RET_SUBMIT 1024 packets (ep 0 in replies is normal)");
        h.u.ret_submit.number_of_packets = USBIP_MAX_ISO_PACKETS + 1;
        assert_header_rejected(&h, "RET_SUBMIT 1025 packets");
        h.u.ret_submit.number_of_packets = -5;
        assert_header_rejected(&h, "RET_SUBMIT -5 packets");
}

static void test_header_padding(void) {
        UsbipHeader h;
        uint8_t buf[USBIP_HEADER_SIZE], again[USBIP_HEADER_SIZE];

        /* The kernel never reads the padding, so neither do we; encode always writes zeros. */
        memcpy(buf, vec_cmd_unlink, sizeof(buf));
        memset(buf + USBIP_HDR_UNLINK_END, 0xa5, USBIP_HEADER_SIZE - USBIP_HDR_UNLINK_END);
        ASSERT_OK(usbip_header_decode(buf, sizeof(buf), &h, NULL));
        usbip_header_encode(again, &h);
        ASSERT_MEMEQ(again, vec_cmd_unlink, sizeof(again));

        memcpy(buf, vec_ret_submit, sizeof(buf));
        memset(buf + USBIP_HDR_RET_SUBMIT_END, 0xff, USBIP_HEADER_SIZE - USBIP_HDR_RET_SUBMIT_END);
        ASSERT_OK(usbip_header_decode(buf, sizeof(buf), &h, NULL));
        usbip_header_encode(again, &h);
        ASSERT_MEMEQ(again, vec_ret_submit, sizeof(again));

        /* Extra bytes after the header are not the decoder's business. */
        uint8_t longer[USBIP_HEADER_SIZE + 10] = {};
        memcpy(longer, vec_cmd_submit_get_descriptor, USBIP_HEADER_SIZE);
        ASSERT_OK(usbip_header_decode(longer, sizeof(longer), &h, NULL));
}

static void test_payload_size(void) {
        UsbipHeader h = valid_cmd_submit();
        ASSERT_EQ(usbip_cmd_submit_payload_size(&h), 0);

        h.direction = USBIP_DIR_OUT;
        h.u.cmd_submit.transfer_flags = 0;
        h.u.cmd_submit.transfer_buffer_length = 31; /* a CBW */
        ASSERT_EQ(usbip_cmd_submit_payload_size(&h), 31);

        h.ep = 1;
        h.u.cmd_submit.number_of_packets = 3;
        h.u.cmd_submit.transfer_buffer_length = 3 * 192;
        ASSERT_EQ(usbip_cmd_submit_payload_size(&h), 3 * 192 + 3 * USBIP_ISO_PACKET_DESC_SIZE);

        h.direction = USBIP_DIR_IN;
        h.u.cmd_submit.transfer_flags = USBIP_URB_DIR_IN;
        ASSERT_EQ(usbip_cmd_submit_payload_size(&h), 3 * USBIP_ISO_PACKET_DESC_SIZE);

        h.u.cmd_submit.number_of_packets = -1;
        ASSERT_EQ(usbip_cmd_submit_payload_size(&h), 0);

        h.u.cmd_submit.number_of_packets = USBIP_MAX_ISO_PACKETS;
        ASSERT_EQ(usbip_cmd_submit_payload_size(&h), USBIP_MAX_ISO_PACKETS * USBIP_ISO_PACKET_DESC_SIZE);

        UsbipHeader r = {.command = USBIP_RET_SUBMIT, .seqnum = 1, .u.ret_submit.actual_length = 512};
        ASSERT_EQ(usbip_cmd_submit_payload_size(&r), 0);
}

static void test_iso_packets(void) {
        static uint8_t buf[(USBIP_MAX_ISO_PACKETS + 1) * USBIP_ISO_PACKET_DESC_SIZE];
        static UsbipIsoPacket out[USBIP_MAX_ISO_PACKETS + 1];
        const char *error = NULL;

        /* As vhci sends them: usb_submit_urb() set status -EXDEV and actual_length 0. */
        static const uint8_t vec[2 * USBIP_ISO_PACKET_DESC_SIZE] = {
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xee,
                0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0xc0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xee,
        };
        ASSERT_OK(usbip_iso_packets_decode(vec, sizeof(vec), 2, 384, out, &error));
        ASSERT_EQ(out[0].offset, 0);
        ASSERT_EQ(out[0].length, 192);
        ASSERT_EQ(out[0].status, -EXDEV);
        ASSERT_EQ(out[1].offset, 192);
        uint8_t enc[USBIP_ISO_PACKET_DESC_SIZE];
        usbip_iso_packet_encode(enc, &out[1]);
        ASSERT_MEMEQ(enc, vec + USBIP_ISO_PACKET_DESC_SIZE, sizeof(enc));

        /* Exactly at the end of the buffer is fine; one byte further is not. */
        ASSERT_REJECTED(usbip_iso_packets_decode(vec, sizeof(vec), 2, 383, out, &error), EBADMSG, error);

        /* 1024 descriptors decode; 1025 do not, even with the bytes there. */
        for (uint32_t i = 0; i <= USBIP_MAX_ISO_PACKETS; i++) {
                UsbipIsoPacket p = {
                        .offset = i * 8,
                        .length = 8,
                        .actual_length = i % 9,
                        .status = -(int32_t) i,
                };
                usbip_iso_packet_encode(buf + i * USBIP_ISO_PACKET_DESC_SIZE, &p);
        }
        ASSERT_OK(usbip_iso_packets_decode(
                        buf, sizeof(buf), USBIP_MAX_ISO_PACKETS, USBIP_MAX_ISO_PACKETS * 8, out, &error));
        ASSERT_EQ(out[1023].offset, 1023 * 8);
        ASSERT_EQ(out[1023].status, -1023);
        ASSERT_REJECTED(usbip_iso_packets_decode(buf, sizeof(buf), USBIP_MAX_ISO_PACKETS + 1,
                                                 (USBIP_MAX_ISO_PACKETS + 1) * 8, out, &error),
                        EBADMSG, error);
        ASSERT_REJECTED(usbip_iso_packets_decode(
                                buf, 3 * USBIP_ISO_PACKET_DESC_SIZE - 1, 3, 1000, out, &error),
                        EBADMSG, error);
        ASSERT_OK(usbip_iso_packets_decode(NULL, 0, 0, 0, out, &error));

        /* offset + length wraps to 0x10 in 32 bits, which would pass a naive check. */
        UsbipIsoPacket wrap = {.offset = 0xfffffff0, .length = 0x20};
        usbip_iso_packet_encode(enc, &wrap);
        ASSERT_REJECTED(usbip_iso_packets_decode(enc, sizeof(enc), 1, 0x1000, out, &error), EBADMSG, error);
        wrap = (UsbipIsoPacket) {.offset = 0x10, .length = 0xffffffff};
        usbip_iso_packet_encode(enc, &wrap);
        ASSERT_REJECTED(usbip_iso_packets_decode(enc, sizeof(enc), 1, 0xffffffff, out, &error),
                        EBADMSG, error);
        wrap = (UsbipIsoPacket) {.offset = 0, .length = 0xffffffff};
        usbip_iso_packet_encode(enc, &wrap);
        ASSERT_OK(usbip_iso_packets_decode(enc, sizeof(enc), 1, 0xffffffff, out, &error));

        /* A packet cannot have moved more than it asked for. */
        UsbipIsoPacket over = {.offset = 0, .length = 8, .actual_length = 9};
        usbip_iso_packet_encode(enc, &over);
        ASSERT_REJECTED(usbip_iso_packets_decode(enc, sizeof(enc), 1, 64, out, &error), EBADMSG, error);
}

static void test_to_string(void) {
        ASSERT_STREQ(usbip_command_to_string(USBIP_CMD_SUBMIT), "CMD_SUBMIT");
        ASSERT_STREQ(usbip_command_to_string(USBIP_RET_UNLINK), "RET_UNLINK");
        ASSERT_TRUE(usbip_command_to_string((UsbipCommand) 0) == NULL);
        ASSERT_TRUE(usbip_command_to_string((UsbipCommand) 5) == NULL);
        ASSERT_STREQ(usbip_op_code_to_string(USBIP_OP_REQ_IMPORT), "OP_REQ_IMPORT");
        ASSERT_TRUE(usbip_op_code_to_string((UsbipOpCode) 0x8004) == NULL);
        ASSERT_STREQ(usbip_op_status_to_string(USBIP_ST_DEV_BUSY), "device busy");
        ASSERT_TRUE(usbip_op_status_to_string((UsbipOpStatus) 6) == NULL);
}

TEST_MAIN(TEST(test_op_common_vector),
          TEST(test_op_common_round_trip),
          TEST(test_op_common_rejects),
          TEST(test_import_request),
          TEST(test_import_request_rejects),
          TEST(test_op_rep_import_vector),
          TEST(test_usb_device_round_trip),
          TEST(test_usb_device_rejects),
          TEST(test_usb_interface),
          TEST(test_devlist_reply),
          TEST(test_header_cmd_submit_vector),
          TEST(test_header_ret_submit_vector),
          TEST(test_header_unlink_vectors),
          TEST(test_header_round_trip),
          TEST(test_header_rejects_basic),
          TEST(test_header_rejects_cmd_submit),
          TEST(test_header_rejects_ret_submit),
          TEST(test_header_padding),
          TEST(test_payload_size),
          TEST(test_iso_packets),
          TEST(test_to_string))
