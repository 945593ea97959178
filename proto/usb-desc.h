/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* USB descriptors as const data, and the one encoder per descriptor kind that turns them into
 * wire bytes (after QEMU hw/usb/desc.c). Devices declare their descriptors once; the encoder
 * fills in everything derived (bLength, wTotalLength, bNumInterfaces, speed-dependent packet
 * sizes, SuperSpeed companions), so nobody counts bytes by hand.
 *
 * Decoders are here too, for tests, tools and fuzzing: they validate every length against the
 * buffer before reading a field, the way libusb's descriptor.c does. */

#include <stddef.h>
#include <stdint.h>

#include "usb.h"

typedef struct UsbEndpointDesc {
        uint8_t bEndpointAddress, bmAttributes;
        /* Interrupt and isochronous endpoints: used as given (bits 12:11 = extra transactions per
         * microframe at high speed). Bulk: fixed by the speed (high 512, super 1024); at full speed a
         * table value of 8, 16 or 32 is honoured, anything else becomes 64. */
        uint16_t wMaxPacketSize;
        /* Used as given; at high and super speed interrupt/isochronous intervals are 2^(bInterval-1)
         * (micro)frames, so they must be 1..16 there or the encoder refuses the table. */
        uint8_t bInterval;
        uint8_t bMaxBurst; /* SS companion, used at SuperSpeed (0..15) */
} UsbEndpointDesc;

typedef struct UsbInterfaceDesc {
        uint8_t bInterfaceNumber, bAlternateSetting, bInterfaceClass, bInterfaceSubClass,
                bInterfaceProtocol, iInterface;
        uint8_t bNumEndpoints;
        const UsbEndpointDesc *endpoints;
        /* Class descriptors (e.g. HID) emitted verbatim after the interface descriptor. They must
         * be a well-formed run of descriptors (bLength >= 2 each, adding up to extra_len). */
        const uint8_t *extra;
        size_t extra_len;
} UsbInterfaceDesc;

typedef struct UsbConfigDesc {
        uint8_t bConfigurationValue, iConfiguration, bmAttributes;
        /* In USB 2.0 units of 2 mA; at SuperSpeed the encoder converts to 8 mA units, rounding up. */
        uint8_t bMaxPower;
        /* Number of entries in `interfaces`, alternate settings included. The wire bNumInterfaces
         * counts interfaces, i.e. the entries with bAlternateSetting 0. */
        uint8_t bNumInterfaces;
        const UsbInterfaceDesc *interfaces;
} UsbConfigDesc;

typedef struct UsbDeviceDesc {
        uint16_t bcdUSB;
        uint8_t bDeviceClass, bDeviceSubClass, bDeviceProtocol, bMaxPacketSize0;
        uint16_t idVendor, idProduct, bcdDevice;
        uint8_t iManufacturer, iProduct, iSerialNumber;
        uint8_t bNumConfigurations;
        const UsbConfigDesc *configs;
} UsbDeviceDesc;

typedef struct UsbHubDesc {
        uint8_t bNbrPorts; /* 1..31 */
        uint16_t wHubCharacteristics;
        uint8_t bPwrOn2PwrGood, bHubContrCurrent;
        /* The DeviceRemovable bitmap as USB 2.0 table 11-13 defines it: bit p set = the device on
         * port p is NOT removable (built in). Bit 0 is reserved, bits above bNbrPorts must be 0. */
        uint32_t removable_mask;
} UsbHubDesc;

#define USB_HUB_MAX_PORTS 31
#define USB_STRING_MAX_UNITS 126 /* bLength is a byte and even: (255 - 2) / 2 */
#define USB_LANGID_EN_US 0x0409

/* All encoders write at most `size` bytes into buf (buf may be NULL when size is 0) and return the
 * full length the descriptor has, so a GET_DESCRIPTOR answer is min(wLength, returned length) bytes
 * of buf. A table the encoder cannot represent validly gives a negative errno (-EINVAL, e.g. a
 * total length over 65535) and nothing meaningful in buf. */

/* At SuperSpeed bMaxPacketSize0 is 9 (an exponent) and bcdUSB at least 0x0300; below it a USB 3
 * device reports 0x0210 (USB 3.2 9.6.1), high speed forces bMaxPacketSize0 64 and low speed 8. */
int usb_desc_encode_device(const UsbDeviceDesc *d, UsbSpeed speed, uint8_t *buf, size_t size);

/* bDescriptorType is USB_DT_CONFIG, or USB_DT_OTHER_SPEED_CONFIG with `speed` being the *other*
 * speed (full or high) the device could run at. SuperSpeed adds endpoint companions. */
int usb_desc_encode_config(const UsbConfigDesc *c, UsbSpeed speed, uint8_t bDescriptorType, uint8_t *buf,
                           size_t size);

/* For a high-speed capable device (USB 2.0 9.6.2); bMaxPacketSize0 is the table's, which must be
 * valid at full speed (8, 16, 32, 64). */
int usb_desc_encode_qualifier(const UsbDeviceDesc *d, uint8_t *buf, size_t size);

/* UTF-8 -> UTF-16LE; longer strings are cut to USB_STRING_MAX_UNITS code units (never inside a
 * surrogate pair). Invalid UTF-8 (overlong, surrogates, > U+10FFFF, truncated) is -EINVAL. */
int usb_desc_encode_string(const char *utf8, uint8_t *buf, size_t size);

/* String descriptor 0; n at most USB_STRING_MAX_UNITS. */
int usb_desc_encode_langids(const uint16_t *langids, size_t n, uint8_t *buf, size_t size);

/* USB 2.0 extension (LPM off) and, at SuperSpeed, the SuperSpeed device capability. */
int usb_desc_encode_bos(UsbSpeed speed, uint8_t *buf, size_t size);

/* USB 2.0 hub descriptor; DeviceRemovable and PortPwrCtrlMask are (bNbrPorts + 1 + 7) / 8 bytes each. */
int usb_desc_encode_hub(const UsbHubDesc *h, uint8_t *buf, size_t size);

/* Decoders. All return -EBADMSG for malformed input. */

/* configs is set to NULL and bNumConfigurations is the wire value. */
int usb_desc_parse_device(const uint8_t *buf, size_t len, UsbDeviceDesc *ret);

/* The 9-byte header of a configuration (or other-speed) descriptor, enough to learn wTotalLength
 * before reading the rest. interfaces is NULL, bNumInterfaces the wire value, bMaxPower raw. */
int usb_desc_parse_config_header(const uint8_t *buf, size_t len, UsbConfigDesc *ret,
                                 uint16_t *ret_total_length);

/* Single interface and endpoint descriptors, for walker callbacks. endpoints/extra are NULL, and
 * bMaxBurst is 0: the companion is a descriptor of its own. */
int usb_desc_parse_interface(const uint8_t *desc, size_t len, UsbInterfaceDesc *ret);
int usb_desc_parse_endpoint(const uint8_t *desc, size_t len, UsbEndpointDesc *ret);

typedef int (*usb_desc_walk_func_t)(uint8_t type, const uint8_t *desc, size_t desc_len, void *userdata);

/* Walks a complete configuration descriptor set, calling cb for every descriptor in it, the
 * configuration header first. Checks before any callback that the header is sane, that
 * wTotalLength fits in len (bytes after it are ignored), and that every descriptor has bLength >= 2,
 * fits in what remains, is at least as long as its type requires (interface 9, endpoint 7, SS
 * companion 6) and is not a nested device or configuration descriptor; any violation is -EBADMSG.
 * A negative return from cb stops the walk and is returned; otherwise the number of descriptors. */
int usb_desc_walk(const uint8_t *buf, size_t len, usb_desc_walk_func_t cb, void *userdata);
