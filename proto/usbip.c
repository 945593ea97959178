/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <string.h>

#include "usbip.h"

/* Every decoder reports through this so that a NULL ret_error is allowed and the errno and the
 * text are decided on one line. */
static int fail(const char **ret_error, int error, const char *text) {
        if (ret_error)
                *ret_error = text;
        return -error;
}

int usbip_op_common_decode(const uint8_t *buf, size_t len, UsbipOpCommon *ret, const char **ret_error) {
        *ret = (UsbipOpCommon) {};

        if (!buf || len < USBIP_OP_COMMON_SIZE)
                return fail(ret_error, EBADMSG, "truncated operation header");

        ret->version = get_be16(buf + USBIP_OP_OFF_VERSION);
        ret->code = get_be16(buf + USBIP_OP_OFF_CODE);
        ret->status = get_be32(buf + USBIP_OP_OFF_STATUS);

        /* Same rule as the usbip tools (usbip_net_recv_op_common): any other version is a peer we
         * cannot talk to, and the code that follows would be guesswork. */
        if (ret->version != USBIP_VERSION)
                return fail(ret_error, EPROTONOSUPPORT, "unsupported protocol version");
        if (!usbip_op_code_to_string((UsbipOpCode) ret->code))
                return fail(ret_error, EOPNOTSUPP, "unknown operation code");

        return 0;
}

void usbip_op_common_encode(uint8_t buf[static USBIP_OP_COMMON_SIZE], const UsbipOpCommon *op) {
        put_be16(buf + USBIP_OP_OFF_VERSION, op->version);
        put_be16(buf + USBIP_OP_OFF_CODE, op->code);
        put_be32(buf + USBIP_OP_OFF_STATUS, op->status);
}

/* Copies a fixed-size, NUL-terminated wire string field; the tail after the NUL is zeroed so that
 * decoded structs compare equal whatever garbage the peer left there. */
static int string_field_decode(const uint8_t *field, size_t size, char *ret) {
        const uint8_t *nul = memchr(field, 0, size);
        if (!nul)
                return -EBADMSG;

        size_t n = (size_t) (nul - field);
        memcpy(ret, field, n);
        memset(ret + n, 0, size - n);
        return 0;
}

static void string_field_encode(uint8_t *field, size_t size, const char *s) {
        size_t n = strnlen(s, size - 1);
        memcpy(field, s, n);
        memset(field + n, 0, size - n);
}

int usbip_op_import_request_decode(
                const uint8_t *buf,
                size_t len,
                char ret_busid[static USBIP_BUSID_SIZE],
                const char **ret_error) {

        memset(ret_busid, 0, USBIP_BUSID_SIZE);

        if (!buf || len < USBIP_OP_IMPORT_REQ_SIZE)
                return fail(ret_error, EBADMSG, "truncated import request");

        char busid[USBIP_BUSID_SIZE];
        if (string_field_decode(buf, USBIP_BUSID_SIZE, busid) < 0)
                return fail(ret_error, EBADMSG, "busid is not NUL-terminated");
        if (busid[0] == '\0')
                return fail(ret_error, EBADMSG, "busid is empty");
        /* The busid ends up in log lines and is compared against sysfs-style names: control
         * characters and bytes >= 0x80 are never part of a real one. */
        for (const char *p = busid; *p; p++)
                if ((unsigned char) *p < 0x20 || (unsigned char) *p > 0x7e)
                        return fail(ret_error, EBADMSG, "busid contains non-printable characters");

        memcpy(ret_busid, busid, USBIP_BUSID_SIZE);
        return 0;
}

void usbip_op_import_request_encode(uint8_t buf[static USBIP_OP_IMPORT_REQ_SIZE], const char *busid) {
        string_field_encode(buf, USBIP_BUSID_SIZE, busid);
}

void usbip_op_devlist_reply_encode(uint8_t buf[static USBIP_OP_DEVLIST_REPLY_SIZE], uint32_t ndev) {
        put_be32(buf, ndev);
}

int usbip_op_devlist_reply_decode(const uint8_t *buf, size_t len, uint32_t *ret_ndev) {
        *ret_ndev = 0;
        if (!buf || len < USBIP_OP_DEVLIST_REPLY_SIZE)
                return -EBADMSG;
        *ret_ndev = get_be32(buf);
        return 0;
}

void usbip_usb_device_encode(uint8_t buf[static USBIP_USB_DEVICE_SIZE], const UsbipUsbDevice *d) {
        string_field_encode(buf + USBIP_DEV_OFF_PATH, USBIP_PATH_SIZE, d->path);
        string_field_encode(buf + USBIP_DEV_OFF_BUSID, USBIP_BUSID_SIZE, d->busid);
        put_be32(buf + USBIP_DEV_OFF_BUSNUM, d->busnum);
        put_be32(buf + USBIP_DEV_OFF_DEVNUM, d->devnum);
        put_be32(buf + USBIP_DEV_OFF_SPEED, d->speed);
        put_be16(buf + USBIP_DEV_OFF_ID_VENDOR, d->idVendor);
        put_be16(buf + USBIP_DEV_OFF_ID_PRODUCT, d->idProduct);
        put_be16(buf + USBIP_DEV_OFF_BCD_DEVICE, d->bcdDevice);
        buf[USBIP_DEV_OFF_DEVICE_CLASS] = d->bDeviceClass;
        buf[USBIP_DEV_OFF_DEVICE_SUBCLASS] = d->bDeviceSubClass;
        buf[USBIP_DEV_OFF_DEVICE_PROTOCOL] = d->bDeviceProtocol;
        buf[USBIP_DEV_OFF_CONFIGURATION_VALUE] = d->bConfigurationValue;
        buf[USBIP_DEV_OFF_NUM_CONFIGURATIONS] = d->bNumConfigurations;
        buf[USBIP_DEV_OFF_NUM_INTERFACES] = d->bNumInterfaces;
}

int usbip_usb_device_decode(const uint8_t *buf, size_t len, UsbipUsbDevice *ret, const char **ret_error) {
        *ret = (UsbipUsbDevice) {};

        if (!buf || len < USBIP_USB_DEVICE_SIZE)
                return fail(ret_error, EBADMSG, "truncated device record");

        /* Numbers first, so a caller logging a bad record still sees which device it was. */
        ret->busnum = get_be32(buf + USBIP_DEV_OFF_BUSNUM);
        ret->devnum = get_be32(buf + USBIP_DEV_OFF_DEVNUM);
        ret->speed = get_be32(buf + USBIP_DEV_OFF_SPEED);
        ret->idVendor = get_be16(buf + USBIP_DEV_OFF_ID_VENDOR);
        ret->idProduct = get_be16(buf + USBIP_DEV_OFF_ID_PRODUCT);
        ret->bcdDevice = get_be16(buf + USBIP_DEV_OFF_BCD_DEVICE);
        ret->bDeviceClass = buf[USBIP_DEV_OFF_DEVICE_CLASS];
        ret->bDeviceSubClass = buf[USBIP_DEV_OFF_DEVICE_SUBCLASS];
        ret->bDeviceProtocol = buf[USBIP_DEV_OFF_DEVICE_PROTOCOL];
        ret->bConfigurationValue = buf[USBIP_DEV_OFF_CONFIGURATION_VALUE];
        ret->bNumConfigurations = buf[USBIP_DEV_OFF_NUM_CONFIGURATIONS];
        ret->bNumInterfaces = buf[USBIP_DEV_OFF_NUM_INTERFACES];

        if (string_field_decode(buf + USBIP_DEV_OFF_PATH, USBIP_PATH_SIZE, ret->path) < 0)
                return fail(ret_error, EBADMSG, "device path is not NUL-terminated");
        if (string_field_decode(buf + USBIP_DEV_OFF_BUSID, USBIP_BUSID_SIZE, ret->busid) < 0)
                return fail(ret_error, EBADMSG, "device busid is not NUL-terminated");

        return 0;
}

void usbip_usb_interface_encode(uint8_t buf[static USBIP_USB_INTERFACE_SIZE], const UsbipUsbInterface *i) {
        buf[0] = i->bInterfaceClass;
        buf[1] = i->bInterfaceSubClass;
        buf[2] = i->bInterfaceProtocol;
        buf[3] = 0;
}

int usbip_usb_interface_decode(const uint8_t *buf, size_t len, UsbipUsbInterface *ret) {
        *ret = (UsbipUsbInterface) {};
        if (!buf || len < USBIP_USB_INTERFACE_SIZE)
                return -EBADMSG;
        ret->bInterfaceClass = buf[0];
        ret->bInterfaceSubClass = buf[1];
        ret->bInterfaceProtocol = buf[2];
        return 0;
}

/* 0 and -1 (0xffffffff, what the protocol document prescribes for non-ISO; vhci actually sends
 * urb->number_of_packets, i.e. 0) mean "not ISO"; anything else must be a count the kernel itself
 * would accept. */
static bool number_of_packets_is_valid(int32_t n) {
        return n == 0 || n == -1 || (n >= 1 && n <= USBIP_MAX_ISO_PACKETS);
}

int usbip_header_decode(const uint8_t *buf, size_t len, UsbipHeader *ret, const char **ret_error) {
        *ret = (UsbipHeader) {};

        if (!buf || len < USBIP_HEADER_SIZE)
                return fail(ret_error, EBADMSG, "truncated URB header");

        ret->command = get_be32(buf + USBIP_HDR_OFF_COMMAND);
        ret->seqnum = get_be32(buf + USBIP_HDR_OFF_SEQNUM);
        ret->devid = get_be32(buf + USBIP_HDR_OFF_DEVID);
        ret->direction = get_be32(buf + USBIP_HDR_OFF_DIRECTION);
        ret->ep = get_be32(buf + USBIP_HDR_OFF_EP);

        /* Fill the union before validating anything, so a rejected header can still be logged. */
        switch ((UsbipCommand) ret->command) {
        case USBIP_CMD_SUBMIT: {
                typeof(ret->u.cmd_submit) *s = &ret->u.cmd_submit;
                s->transfer_flags = get_be32(buf + USBIP_HDR_OFF_TRANSFER_FLAGS);
                s->transfer_buffer_length = get_be32(buf + USBIP_HDR_OFF_TRANSFER_BUFFER_LENGTH);
                s->start_frame = (int32_t) get_be32(buf + USBIP_HDR_OFF_START_FRAME);
                s->number_of_packets = (int32_t) get_be32(buf + USBIP_HDR_OFF_NUMBER_OF_PACKETS);
                s->interval = (int32_t) get_be32(buf + USBIP_HDR_OFF_INTERVAL);
                memcpy(s->setup, buf + USBIP_HDR_OFF_SETUP, sizeof(s->setup));
                break;
        }
        case USBIP_RET_SUBMIT: {
                typeof(ret->u.ret_submit) *s = &ret->u.ret_submit;
                s->status = (int32_t) get_be32(buf + USBIP_HDR_OFF_STATUS);
                s->actual_length = get_be32(buf + USBIP_HDR_OFF_ACTUAL_LENGTH);
                s->start_frame = (int32_t) get_be32(buf + USBIP_HDR_OFF_START_FRAME);
                s->number_of_packets = (int32_t) get_be32(buf + USBIP_HDR_OFF_NUMBER_OF_PACKETS);
                s->error_count = (int32_t) get_be32(buf + USBIP_HDR_OFF_ERROR_COUNT);
                break;
        }
        case USBIP_CMD_UNLINK:
                ret->u.cmd_unlink.seqnum = get_be32(buf + USBIP_HDR_OFF_UNLINK_SEQNUM);
                break;
        case USBIP_RET_UNLINK:
                ret->u.ret_unlink.status = (int32_t) get_be32(buf + USBIP_HDR_OFF_STATUS);
                break;
        }
        /* The wire can carry any number; only the four above have a layout we know. */
        if (!usbip_command_to_string((UsbipCommand) ret->command))
                return fail(ret_error, EBADMSG, "unknown command");

        /* vhci numbers URBs from 1; a 0 can only come from a broken or hostile peer. */
        if (ret->direction != USBIP_DIR_OUT && ret->direction != USBIP_DIR_IN)
                return fail(ret_error, EBADMSG, "direction is neither OUT (0) nor IN (1)");
        /* USB has 16 endpoint numbers; the kernel's stub rejects the same (get_pipe()). */
        if (ret->ep > 15)
                return fail(ret_error, EBADMSG, "endpoint number above 15");

        switch ((UsbipCommand) ret->command) {
        case USBIP_CMD_SUBMIT: {
                /* transfer_buffer_length is s32 in the kernel; a "negative" one is huge here and
                 * rejected with the rest, before anybody allocates for it. */
                if (ret->u.cmd_submit.transfer_buffer_length > USBIP_MAX_TRANSFER_LENGTH)
                        return fail(ret_error, EBADMSG, "transfer_buffer_length above limit");
                int32_t n = ret->u.cmd_submit.number_of_packets;
                if (!number_of_packets_is_valid(n))
                        return fail(ret_error, EBADMSG, "number_of_packets out of range");
                /* Endpoint 0 is always the control pipe, which cannot be isochronous. */
                if (n > 0 && ret->ep == 0)
                        return fail(ret_error, EBADMSG, "isochronous packets on endpoint 0");
                /* For data endpoints usb_submit_urb() sets URB_DIR_IN from the same pipe vhci takes the
                 * direction from, so a disagreement means the peer is not a sane client. Control URBs
                 * are exempt: there the flag follows the setup packet (a zero-length request on a
                 * receive pipe is URB_DIR_OUT), not the pipe. */
                bool flag_in = ret->u.cmd_submit.transfer_flags & USBIP_URB_DIR_IN;
                if (ret->ep != 0 && flag_in != (ret->direction == USBIP_DIR_IN))
                        return fail(ret_error, EBADMSG, "direction disagrees with transfer flag URB_DIR_IN");
                break;
        }
        case USBIP_RET_SUBMIT:
                if (ret->u.ret_submit.actual_length > USBIP_MAX_TRANSFER_LENGTH)
                        return fail(ret_error, EBADMSG, "actual_length above limit");
                if (!number_of_packets_is_valid(ret->u.ret_submit.number_of_packets))
                        return fail(ret_error, EBADMSG, "number_of_packets out of range");
                break;
        case USBIP_CMD_UNLINK:
                break;
        case USBIP_RET_UNLINK:
                break;
        }

        return 0;
}

void usbip_header_encode(uint8_t buf[static USBIP_HEADER_SIZE], const UsbipHeader *h) {
        memset(buf, 0, USBIP_HEADER_SIZE);

        put_be32(buf + USBIP_HDR_OFF_COMMAND, h->command);
        put_be32(buf + USBIP_HDR_OFF_SEQNUM, h->seqnum);
        put_be32(buf + USBIP_HDR_OFF_DEVID, h->devid);
        put_be32(buf + USBIP_HDR_OFF_DIRECTION, h->direction);
        put_be32(buf + USBIP_HDR_OFF_EP, h->ep);

        switch ((UsbipCommand) h->command) {
        case USBIP_CMD_SUBMIT: {
                const typeof(h->u.cmd_submit) *s = &h->u.cmd_submit;
                put_be32(buf + USBIP_HDR_OFF_TRANSFER_FLAGS, s->transfer_flags);
                put_be32(buf + USBIP_HDR_OFF_TRANSFER_BUFFER_LENGTH, s->transfer_buffer_length);
                put_be32(buf + USBIP_HDR_OFF_START_FRAME, (uint32_t) s->start_frame);
                put_be32(buf + USBIP_HDR_OFF_NUMBER_OF_PACKETS, (uint32_t) s->number_of_packets);
                put_be32(buf + USBIP_HDR_OFF_INTERVAL, (uint32_t) s->interval);
                memcpy(buf + USBIP_HDR_OFF_SETUP, s->setup, sizeof(s->setup));
                break;
        }
        case USBIP_RET_SUBMIT: {
                const typeof(h->u.ret_submit) *s = &h->u.ret_submit;
                put_be32(buf + USBIP_HDR_OFF_STATUS, (uint32_t) s->status);
                put_be32(buf + USBIP_HDR_OFF_ACTUAL_LENGTH, s->actual_length);
                put_be32(buf + USBIP_HDR_OFF_START_FRAME, (uint32_t) s->start_frame);
                put_be32(buf + USBIP_HDR_OFF_NUMBER_OF_PACKETS, (uint32_t) s->number_of_packets);
                put_be32(buf + USBIP_HDR_OFF_ERROR_COUNT, (uint32_t) s->error_count);
                break;
        }
        case USBIP_CMD_UNLINK:
                put_be32(buf + USBIP_HDR_OFF_UNLINK_SEQNUM, h->u.cmd_unlink.seqnum);
                break;
        case USBIP_RET_UNLINK:
                put_be32(buf + USBIP_HDR_OFF_STATUS, (uint32_t) h->u.ret_unlink.status);
                break;
        }
}

size_t usbip_cmd_submit_payload_size(const UsbipHeader *h) {
        if (h->command != USBIP_CMD_SUBMIT)
                return 0;

        size_t size = 0;
        if (h->direction == USBIP_DIR_OUT)
                size += h->u.cmd_submit.transfer_buffer_length;
        /* Re-checked here so that even a caller that skipped validation gets a bounded answer. */
        int32_t n = h->u.cmd_submit.number_of_packets;
        if (n > 0 && n <= USBIP_MAX_ISO_PACKETS)
                size += (size_t) n * USBIP_ISO_PACKET_DESC_SIZE;
        return size;
}

int usbip_iso_packets_decode(
                const uint8_t *buf,
                size_t len,
                uint32_t n,
                uint32_t transfer_length,
                UsbipIsoPacket *ret,
                const char **ret_error) {

        if (n > USBIP_MAX_ISO_PACKETS)
                return fail(ret_error, EBADMSG, "too many ISO packet descriptors");
        /* n is bounded above, so the product cannot overflow. */
        if ((n > 0 && !buf) || len < (size_t) n * USBIP_ISO_PACKET_DESC_SIZE)
                return fail(ret_error, EBADMSG, "truncated ISO packet descriptors");

        for (uint32_t i = 0; i < n; i++) {
                const uint8_t *p = buf + (size_t) i * USBIP_ISO_PACKET_DESC_SIZE;
                UsbipIsoPacket *iso = ret + i;

                iso->offset = get_be32(p + USBIP_ISO_OFF_OFFSET);
                iso->length = get_be32(p + USBIP_ISO_OFF_LENGTH);
                iso->actual_length = get_be32(p + USBIP_ISO_OFF_ACTUAL_LENGTH);
                iso->status = (int32_t) get_be32(p + USBIP_ISO_OFF_STATUS);

                /* In 64 bits, so that offset 0xfffffff0 + length 0x20 cannot wrap to a small sum. */
                if ((uint64_t) iso->offset + iso->length > transfer_length)
                        return fail(ret_error, EBADMSG, "ISO packet lies outside the transfer buffer");
                if (iso->actual_length > iso->length)
                        return fail(ret_error, EBADMSG, "ISO packet actual_length exceeds its length");
        }

        return 0;
}

void usbip_iso_packet_encode(uint8_t buf[static USBIP_ISO_PACKET_DESC_SIZE], const UsbipIsoPacket *p) {
        put_be32(buf + USBIP_ISO_OFF_OFFSET, p->offset);
        put_be32(buf + USBIP_ISO_OFF_LENGTH, p->length);
        put_be32(buf + USBIP_ISO_OFF_ACTUAL_LENGTH, p->actual_length);
        put_be32(buf + USBIP_ISO_OFF_STATUS, (uint32_t) p->status);
}

const char *usbip_command_to_string(UsbipCommand c) {
        switch (c) {
        case USBIP_CMD_SUBMIT:
                return "CMD_SUBMIT";
        case USBIP_CMD_UNLINK:
                return "CMD_UNLINK";
        case USBIP_RET_SUBMIT:
                return "RET_SUBMIT";
        case USBIP_RET_UNLINK:
                return "RET_UNLINK";
        }
        return NULL;
}

const char *usbip_op_code_to_string(UsbipOpCode c) {
        switch (c) {
        case USBIP_OP_REQ_DEVINFO:
                return "OP_REQ_DEVINFO";
        case USBIP_OP_REP_DEVINFO:
                return "OP_REP_DEVINFO";
        case USBIP_OP_REQ_IMPORT:
                return "OP_REQ_IMPORT";
        case USBIP_OP_REP_IMPORT:
                return "OP_REP_IMPORT";
        case USBIP_OP_REQ_DEVLIST:
                return "OP_REQ_DEVLIST";
        case USBIP_OP_REP_DEVLIST:
                return "OP_REP_DEVLIST";
        }
        return NULL;
}

const char *usbip_op_status_to_string(UsbipOpStatus s) {
        switch (s) {
        case USBIP_ST_OK:
                return "ok";
        case USBIP_ST_NA:
                return "device not available";
        case USBIP_ST_DEV_BUSY:
                return "device busy";
        case USBIP_ST_DEV_ERR:
                return "device in error";
        case USBIP_ST_NODEV:
                return "device not found";
        case USBIP_ST_ERROR:
                return "unexpected response";
        }
        return NULL;
}
