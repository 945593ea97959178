/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* USB/IP v1.1.1 wire codec: pure encode/decode on byte buffers, no I/O.
 *
 * Every multi-byte USB/IP field is big-endian on the wire and is read or written through
 * get_be*()/put_be*() at the offset listed below; the 8 setup bytes of CMD_SUBMIT are the USB
 * setup packet copied raw (its own fields stay little-endian). Decoders check each length against
 * the buffer and against the limits below before use, and never trust a length from the wire.
 *
 * Layouts verified against drivers/usb/usbip/usbip_common.h (struct usbip_header and friends are
 * __packed) and tools/usb/usbip/src/usbip_network.h, libsrc/usbip_common.h. */

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define USBIP_VERSION 0x0111
#define USBIP_OP_COMMON_SIZE 8
#define USBIP_OP_IMPORT_REQ_SIZE 32 /* busid[32] after op_common */
#define USBIP_USB_DEVICE_SIZE 312   /* 0x138 */
#define USBIP_USB_INTERFACE_SIZE 4
#define USBIP_OP_DEVLIST_REPLY_SIZE 4 /* ndev after op_common, then the devices */
#define USBIP_HEADER_SIZE 48
#define USBIP_ISO_PACKET_DESC_SIZE 16
#define USBIP_MAX_ISO_PACKETS 1024                    /* kernel's USBIP_MAX_ISO_PACKETS */
#define USBIP_MAX_TRANSFER_LENGTH (16u * 1024 * 1024) /* hostile lengths above this are rejected */
#define USBIP_BUSID_SIZE 32
#define USBIP_PATH_SIZE 256

/* ---- Management phase ------------------------------------------------------------------------ */

/* struct op_common: */
#define USBIP_OP_OFF_VERSION 0 /* be16 */
#define USBIP_OP_OFF_CODE 2    /* be16 */
#define USBIP_OP_OFF_STATUS 4  /* be32 */
assert_cc(USBIP_OP_OFF_STATUS + 4 == USBIP_OP_COMMON_SIZE);

typedef enum UsbipOpCode {
        USBIP_OP_REQ_DEVINFO = 0x8002,
        USBIP_OP_REP_DEVINFO = 0x0002,
        USBIP_OP_REQ_IMPORT = 0x8003,
        USBIP_OP_REP_IMPORT = 0x0003,
        USBIP_OP_REQ_DEVLIST = 0x8005,
        USBIP_OP_REP_DEVLIST = 0x0005,
} UsbipOpCode;

typedef enum UsbipOpStatus {
        USBIP_ST_OK = 0,
        USBIP_ST_NA = 1,
        USBIP_ST_DEV_BUSY = 2,
        USBIP_ST_DEV_ERR = 3,
        USBIP_ST_NODEV = 4,
        USBIP_ST_ERROR = 5,
} UsbipOpStatus;

typedef struct UsbipOpCommon {
        uint16_t version;
        uint16_t code;
        uint32_t status;
} UsbipOpCommon;

/* -EBADMSG if short; -EPROTONOSUPPORT if version != USBIP_VERSION; -EOPNOTSUPP for an unknown code.
 * *ret is filled even on the version and code errors so the caller can print the numbers;
 * *ret_error (optional) gets a static string naming the problem. */
int usbip_op_common_decode(const uint8_t *buf, size_t len, UsbipOpCommon *ret, const char **ret_error);
void usbip_op_common_encode(uint8_t buf[static USBIP_OP_COMMON_SIZE], const UsbipOpCommon *op);

/* OP_REQ_IMPORT body (after op_common): busid[32]. The busid must be non-empty printable ASCII,
 * NUL-terminated within the 32 bytes; ret_busid gets it NUL-padded. -EBADMSG otherwise. */
int usbip_op_import_request_decode(
                const uint8_t *buf,
                size_t len,
                char ret_busid[static USBIP_BUSID_SIZE],
                const char **ret_error);
/* Truncates busid to 31 bytes and NUL-pads the field. */
void usbip_op_import_request_encode(uint8_t buf[static USBIP_OP_IMPORT_REQ_SIZE], const char *busid);

/* OP_REP_DEVLIST body (after op_common): ndev be32, then ndev × (usb_device + bNumInterfaces ×
 * usb_interface). Decoding only checks the length: the caller bounds ndev by what it will read. */
void usbip_op_devlist_reply_encode(uint8_t buf[static USBIP_OP_DEVLIST_REPLY_SIZE], uint32_t ndev);
int usbip_op_devlist_reply_decode(const uint8_t *buf, size_t len, uint32_t *ret_ndev);

/* struct usbip_usb_device: */
#define USBIP_DEV_OFF_PATH 0                  /* char[256] */
#define USBIP_DEV_OFF_BUSID 256               /* char[32] */
#define USBIP_DEV_OFF_BUSNUM 288              /* be32 */
#define USBIP_DEV_OFF_DEVNUM 292              /* be32 */
#define USBIP_DEV_OFF_SPEED 296               /* be32, enum usb_device_speed */
#define USBIP_DEV_OFF_ID_VENDOR 300           /* be16 */
#define USBIP_DEV_OFF_ID_PRODUCT 302          /* be16 */
#define USBIP_DEV_OFF_BCD_DEVICE 304          /* be16 */
#define USBIP_DEV_OFF_DEVICE_CLASS 306        /* u8 */
#define USBIP_DEV_OFF_DEVICE_SUBCLASS 307     /* u8 */
#define USBIP_DEV_OFF_DEVICE_PROTOCOL 308     /* u8 */
#define USBIP_DEV_OFF_CONFIGURATION_VALUE 309 /* u8 */
#define USBIP_DEV_OFF_NUM_CONFIGURATIONS 310  /* u8 */
#define USBIP_DEV_OFF_NUM_INTERFACES 311      /* u8 */
assert_cc(USBIP_DEV_OFF_BUSID == USBIP_DEV_OFF_PATH + USBIP_PATH_SIZE);
assert_cc(USBIP_DEV_OFF_BUSNUM == USBIP_DEV_OFF_BUSID + USBIP_BUSID_SIZE);
assert_cc(USBIP_DEV_OFF_NUM_INTERFACES + 1 == USBIP_USB_DEVICE_SIZE);
assert_cc(USBIP_USB_DEVICE_SIZE == 0x138);

typedef struct UsbipUsbDevice {
        char path[USBIP_PATH_SIZE];
        char busid[USBIP_BUSID_SIZE];
        uint32_t busnum, devnum, speed;
        uint16_t idVendor, idProduct, bcdDevice;
        uint8_t bDeviceClass, bDeviceSubClass, bDeviceProtocol, bConfigurationValue, bNumConfigurations,
                bNumInterfaces;
} UsbipUsbDevice;

/* struct usbip_usb_interface: class, subclass, protocol, one pad byte. */
typedef struct UsbipUsbInterface {
        uint8_t bInterfaceClass, bInterfaceSubClass, bInterfaceProtocol;
} UsbipUsbInterface;

/* path and busid are truncated to fit with a NUL and NUL-padded. */
void usbip_usb_device_encode(uint8_t buf[static USBIP_USB_DEVICE_SIZE], const UsbipUsbDevice *d);
/* -EBADMSG if short or if path/busid is not NUL-terminated within its field. */
int usbip_usb_device_decode(const uint8_t *buf, size_t len, UsbipUsbDevice *ret, const char **ret_error);
void usbip_usb_interface_encode(uint8_t buf[static USBIP_USB_INTERFACE_SIZE], const UsbipUsbInterface *i);
int usbip_usb_interface_decode(const uint8_t *buf, size_t len, UsbipUsbInterface *ret);

/* ---- URB phase ------------------------------------------------------------------------------- */

typedef enum UsbipCommand {
        USBIP_CMD_SUBMIT = 1,
        USBIP_CMD_UNLINK = 2,
        USBIP_RET_SUBMIT = 3,
        USBIP_RET_UNLINK = 4,
} UsbipCommand;

typedef enum UsbipDirection {
        USBIP_DIR_OUT = 0,
        USBIP_DIR_IN = 1,
} UsbipDirection;

/* transfer_flags bits (include/uapi/linux/usbip.h); the DMA bits >= 0x10000 carry no meaning for a
 * server and are passed through untouched. */
#define USBIP_URB_SHORT_NOT_OK 0x0001u
#define USBIP_URB_ISO_ASAP 0x0002u
#define USBIP_URB_NO_TRANSFER_DMA_MAP 0x0004u
#define USBIP_URB_ZERO_PACKET 0x0040u
#define USBIP_URB_NO_INTERRUPT 0x0080u
#define USBIP_URB_FREE_BUFFER 0x0100u
#define USBIP_URB_DIR_IN 0x0200u

/* struct usbip_header (48 bytes, packed) = usbip_header_basic (20) + a 28-byte union: */
#define USBIP_HDR_OFF_COMMAND 0   /* be32 */
#define USBIP_HDR_OFF_SEQNUM 4    /* be32 */
#define USBIP_HDR_OFF_DEVID 8     /* be32, (busnum << 16) | devnum */
#define USBIP_HDR_OFF_DIRECTION 12 /* be32 */
#define USBIP_HDR_OFF_EP 16       /* be32 */
#define USBIP_HDR_BASIC_SIZE 20
/* CMD_SUBMIT */
#define USBIP_HDR_OFF_TRANSFER_FLAGS 20         /* be32 */
#define USBIP_HDR_OFF_TRANSFER_BUFFER_LENGTH 24 /* be32 (s32 in the kernel) */
#define USBIP_HDR_OFF_START_FRAME 28            /* be32 s32 */
#define USBIP_HDR_OFF_NUMBER_OF_PACKETS 32      /* be32 s32; also RET_SUBMIT */
#define USBIP_HDR_OFF_INTERVAL 36               /* be32 s32 */
#define USBIP_HDR_OFF_SETUP 40                  /* 8 raw bytes */
/* RET_SUBMIT: status 20, actual_length 24, start_frame 28, number_of_packets 32, error_count 36,
 * then 8 bytes of padding (the union is as large as cmd_submit). */
#define USBIP_HDR_OFF_STATUS 20        /* be32 s32; also RET_UNLINK */
#define USBIP_HDR_OFF_ACTUAL_LENGTH 24 /* be32 (s32 in the kernel) */
#define USBIP_HDR_OFF_ERROR_COUNT 36   /* be32 s32 */
#define USBIP_HDR_RET_SUBMIT_END 40
/* CMD_UNLINK: the victim's seqnum at 20, then 24 bytes of padding. RET_UNLINK: status at 20, pad. */
#define USBIP_HDR_OFF_UNLINK_SEQNUM 20 /* be32 */
#define USBIP_HDR_UNLINK_END 24
assert_cc(USBIP_HDR_OFF_EP + 4 == USBIP_HDR_BASIC_SIZE);
assert_cc(USBIP_HDR_OFF_SETUP + 8 == USBIP_HEADER_SIZE);
assert_cc(USBIP_HDR_BASIC_SIZE + 28 == USBIP_HEADER_SIZE);

typedef struct UsbipHeader {
        uint32_t command, seqnum, devid, direction, ep;
        union {
                struct {
                        uint32_t transfer_flags;
                        uint32_t transfer_buffer_length;
                        int32_t start_frame;
                        int32_t number_of_packets;
                        int32_t interval;
                        uint8_t setup[8];
                } cmd_submit;
                struct {
                        int32_t status;
                        uint32_t actual_length;
                        int32_t start_frame;
                        int32_t number_of_packets;
                        int32_t error_count;
                } ret_submit;
                struct {
                        uint32_t seqnum;
                } cmd_unlink;
                struct {
                        int32_t status;
                } ret_unlink;
        } u;
} UsbipHeader;
assert_cc(sizeof(((UsbipHeader *) NULL)->u.cmd_submit.setup) == USBIP_HEADER_SIZE - USBIP_HDR_OFF_SETUP);

/* Decodes and validates one 48-byte header. Returns -EBADMSG, with *ret_error (optional) a static
 * string naming the field, for: len < 48, an unknown command, direction not 0/1, ep > 15;
 * number_of_packets (CMD_SUBMIT and RET_SUBMIT) neither 0, -1 nor 1..USBIP_MAX_ISO_PACKETS;
 * CMD_SUBMIT: transfer_buffer_length > USBIP_MAX_TRANSFER_LENGTH, ISO packets on ep 0, direction
 * disagreeing with USBIP_URB_DIR_IN on ep 1..15 (on ep 0 the kernel takes the flag from the setup
 * packet, not the pipe, so the two may differ); RET_SUBMIT: actual_length > USBIP_MAX_TRANSFER_LENGTH;
 * Padding is ignored, as the kernel ignores it. Any seqnum is valid, 0 included: vhci's counter is an
 * atomic_t that wraps through 0 on a long-lived connection.
 * *ret is filled wherever the bytes were there, even on error, so the caller can log values. */
int usbip_header_decode(const uint8_t *buf, size_t len, UsbipHeader *ret, const char **ret_error);
/* Writes all 48 bytes, padding zeroed. For RET_* devid/direction/ep go out as given (the protocol
 * document says 0, and vhci ignores them). */
void usbip_header_encode(uint8_t buf[static USBIP_HEADER_SIZE], const UsbipHeader *h);

/* Bytes that follow a CMD_SUBMIT header on the wire: the OUT data (transfer_buffer_length if the
 * direction is OUT) and then 16 × number_of_packets ISO descriptors (if > 0). Assumes a header that
 * passed usbip_header_decode(); 0 for any other command. */
size_t usbip_cmd_submit_payload_size(const UsbipHeader *h);

/* struct usbip_iso_packet_descriptor: offset, length, actual_length, status, be32 each. */
#define USBIP_ISO_OFF_OFFSET 0
#define USBIP_ISO_OFF_LENGTH 4
#define USBIP_ISO_OFF_ACTUAL_LENGTH 8
#define USBIP_ISO_OFF_STATUS 12
assert_cc(USBIP_ISO_OFF_STATUS + 4 == USBIP_ISO_PACKET_DESC_SIZE);

typedef struct UsbipIsoPacket {
        uint32_t offset, length, actual_length;
        int32_t status;
} UsbipIsoPacket;

/* Decodes n descriptors into ret[0..n-1]. -EBADMSG if n > USBIP_MAX_ISO_PACKETS, len < 16 × n, or
 * a descriptor has offset + length beyond transfer_length (computed without wrap-around) or
 * actual_length > length. */
int usbip_iso_packets_decode(
                const uint8_t *buf,
                size_t len,
                uint32_t n,
                uint32_t transfer_length,
                UsbipIsoPacket *ret,
                const char **ret_error);
void usbip_iso_packet_encode(uint8_t buf[static USBIP_ISO_PACKET_DESC_SIZE], const UsbipIsoPacket *p);

/* NULL for values outside the enums. */
const char *usbip_command_to_string(UsbipCommand c) _const_;
const char *usbip_op_code_to_string(UsbipOpCode c) _const_;
const char *usbip_op_status_to_string(UsbipOpStatus s) _const_;
