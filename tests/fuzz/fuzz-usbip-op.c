/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The management phase as a server or client reads it: op_common, then the body its code
 * announces (an import request, an import reply's device record, or a device list). Every record
 * that decodes must survive encode + decode unchanged. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "usbip.h"


static size_t check_import_request(const uint8_t *data, size_t size) {
        char busid[USBIP_BUSID_SIZE], again[USBIP_BUSID_SIZE];
        uint8_t buf[USBIP_OP_IMPORT_REQ_SIZE];
        const char *error = NULL;

        int r = usbip_op_import_request_decode(data, size, busid, &error);
        if (r < 0) {
                CHECK(r == -EBADMSG && error);
                return 0;
        }
        size_t n = strnlen(busid, sizeof(busid));
        CHECK(n > 0 && n < sizeof(busid));
        for (size_t i = 0; i < n; i++)
                CHECK(busid[i] >= 0x20 && busid[i] <= 0x7e);

        usbip_op_import_request_encode(buf, busid);
        CHECK(memcmp(buf, data, n + 1) == 0);
        CHECK(usbip_op_import_request_decode(buf, sizeof(buf), again, NULL) == 0);
        CHECK(memcmp(busid, again, sizeof(busid)) == 0);
        return USBIP_OP_IMPORT_REQ_SIZE;
}

/* Returns the bytes consumed, 0 if the record was rejected. */
static size_t check_usb_device(const uint8_t *data, size_t size, uint8_t *ret_num_interfaces) {
        UsbipUsbDevice d, again;
        uint8_t buf[USBIP_USB_DEVICE_SIZE];
        const char *error = NULL;

        int r = usbip_usb_device_decode(data, size, &d, &error);
        if (r < 0) {
                CHECK(r == -EBADMSG && error);
                return 0;
        }
        CHECK(memchr(d.path, 0, sizeof(d.path)) && memchr(d.busid, 0, sizeof(d.busid)));

        usbip_usb_device_encode(buf, &d);
        /* The numeric tail is byte-exact; the strings up to their NUL. */
        CHECK(memcmp(buf + USBIP_DEV_OFF_BUSNUM, data + USBIP_DEV_OFF_BUSNUM,
                     USBIP_USB_DEVICE_SIZE - USBIP_DEV_OFF_BUSNUM) == 0);
        CHECK(memcmp(buf + USBIP_DEV_OFF_PATH, data + USBIP_DEV_OFF_PATH, strlen(d.path) + 1) == 0);
        CHECK(memcmp(buf + USBIP_DEV_OFF_BUSID, data + USBIP_DEV_OFF_BUSID, strlen(d.busid) + 1) == 0);
        CHECK(usbip_usb_device_decode(buf, sizeof(buf), &again, NULL) == 0);
        CHECK(memcmp(&d, &again, sizeof(d)) == 0);

        *ret_num_interfaces = d.bNumInterfaces;
        return USBIP_USB_DEVICE_SIZE;
}

static void check_devlist(const uint8_t *data, size_t size) {
        uint32_t ndev;
        if (usbip_op_devlist_reply_decode(data, size, &ndev) < 0)
                return;
        data += USBIP_OP_DEVLIST_REPLY_SIZE;
        size -= USBIP_OP_DEVLIST_REPLY_SIZE;

        /* ndev is the peer's claim: bounded here by the bytes actually present, as a client must. */
        for (uint32_t i = 0; i < ndev; i++) {
                uint8_t num_interfaces = 0;
                size_t n = check_usb_device(data, size, &num_interfaces);
                if (n == 0)
                        return;
                data += n;
                size -= n;
                for (unsigned j = 0; j < num_interfaces; j++) {
                        UsbipUsbInterface intf;
                        uint8_t buf[USBIP_USB_INTERFACE_SIZE];
                        if (usbip_usb_interface_decode(data, size, &intf) < 0)
                                return;
                        usbip_usb_interface_encode(buf, &intf);
                        CHECK(memcmp(buf, data, 3) == 0 && buf[3] == 0);
                        data += USBIP_USB_INTERFACE_SIZE;
                        size -= USBIP_USB_INTERFACE_SIZE;
                }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        UsbipOpCommon op;
        uint8_t buf[USBIP_OP_COMMON_SIZE];
        const char *error = NULL;

        int r = usbip_op_common_decode(data, size, &op, &error);
        if (r == -EBADMSG) {
                CHECK(error && size < USBIP_OP_COMMON_SIZE);
                return 0;
        }
        /* Version and code errors still fill *ret, and every field is represented. */
        CHECK(size >= USBIP_OP_COMMON_SIZE);
        usbip_op_common_encode(buf, &op);
        CHECK(memcmp(buf, data, sizeof(buf)) == 0);
        if (r < 0) {
                CHECK((r == -EPROTONOSUPPORT || r == -EOPNOTSUPP) && error);
                CHECK(r != -EPROTONOSUPPORT || op.version != USBIP_VERSION);
                CHECK(r != -EOPNOTSUPP || !usbip_op_code_to_string((UsbipOpCode) op.code));
                return 0;
        }
        CHECK(op.version == USBIP_VERSION && usbip_op_code_to_string((UsbipOpCode) op.code));

        const uint8_t *body = data + USBIP_OP_COMMON_SIZE;
        size_t body_size = size - USBIP_OP_COMMON_SIZE;
        uint8_t num_interfaces;

        switch ((UsbipOpCode) op.code) {
        case USBIP_OP_REQ_IMPORT:
                (void) check_import_request(body, body_size);
                break;
        case USBIP_OP_REP_IMPORT:
        case USBIP_OP_REQ_DEVINFO:
        case USBIP_OP_REP_DEVINFO:
                (void) check_usb_device(body, body_size, &num_interfaces);
                break;
        case USBIP_OP_REP_DEVLIST:
                check_devlist(body, body_size);
                break;
        case USBIP_OP_REQ_DEVLIST:
                /* No body; a server ignores anything after it until the next request. Decode
                 * the rest as an import request anyway, to exercise that parser on raw input. */
                (void) check_import_request(body, body_size);
                break;
        }

        return 0;
}
