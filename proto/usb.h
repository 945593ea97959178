/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* USB chapter 9 (and chapter 11, hubs) constants and the SETUP packet. Names mirror
 * linux/usb/ch9.h and linux/usb/ch11.h with a USB_ prefix, so a reader who knows the kernel
 * finds the same words here; values are taken from the USB 2.0 and 3.2 specifications. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* bmRequestType (USB 2.0 9.3.1) */
#define USB_DIR_OUT 0x00
#define USB_DIR_IN 0x80

#define USB_TYPE_MASK (0x03 << 5)
#define USB_TYPE_STANDARD (0x00 << 5)
#define USB_TYPE_CLASS (0x01 << 5)
#define USB_TYPE_VENDOR (0x02 << 5)
#define USB_TYPE_RESERVED (0x03 << 5)

#define USB_RECIP_MASK 0x1f
#define USB_RECIP_DEVICE 0x00
#define USB_RECIP_INTERFACE 0x01
#define USB_RECIP_ENDPOINT 0x02
#define USB_RECIP_OTHER 0x03

/* Standard requests (USB 2.0 table 9-4, USB 3.2 table 9-5) */
#define USB_REQ_GET_STATUS 0x00
#define USB_REQ_CLEAR_FEATURE 0x01
#define USB_REQ_SET_FEATURE 0x03
#define USB_REQ_SET_ADDRESS 0x05
#define USB_REQ_GET_DESCRIPTOR 0x06
#define USB_REQ_SET_DESCRIPTOR 0x07
#define USB_REQ_GET_CONFIGURATION 0x08
#define USB_REQ_SET_CONFIGURATION 0x09
#define USB_REQ_GET_INTERFACE 0x0a
#define USB_REQ_SET_INTERFACE 0x0b
#define USB_REQ_SYNCH_FRAME 0x0c
#define USB_REQ_SET_SEL 0x30
#define USB_REQ_SET_ISOCH_DELAY 0x31

/* Hub class requests (USB 2.0 table 11-16). GET_STATUS, CLEAR_FEATURE, SET_FEATURE and
 * GET_DESCRIPTOR are reused with USB_TYPE_CLASS; these four reuse codes 8..11 that mean something
 * else as standard requests, so the request type decides. */
#define USB_REQ_CLEAR_TT_BUFFER 0x08
#define USB_REQ_RESET_TT 0x09
#define USB_REQ_GET_TT_STATE 0x0a
#define USB_REQ_STOP_TT 0x0b

/* bmRequestType of hub requests, as linux/usb/ch11.h spells them */
#define USB_RT_HUB (USB_TYPE_CLASS | USB_RECIP_DEVICE)
#define USB_RT_PORT (USB_TYPE_CLASS | USB_RECIP_OTHER)

/* Descriptor types (USB 2.0 table 9-5, USB 3.2 table 9-6, HID 1.11 7.1, USB 2.0 11.23) */
#define USB_DT_DEVICE 0x01
#define USB_DT_CONFIG 0x02
#define USB_DT_STRING 0x03
#define USB_DT_INTERFACE 0x04
#define USB_DT_ENDPOINT 0x05
#define USB_DT_DEVICE_QUALIFIER 0x06
#define USB_DT_OTHER_SPEED_CONFIG 0x07
#define USB_DT_INTERFACE_POWER 0x08
#define USB_DT_OTG 0x09
#define USB_DT_DEBUG 0x0a
#define USB_DT_INTERFACE_ASSOCIATION 0x0b
#define USB_DT_BOS 0x0f
#define USB_DT_DEVICE_CAPABILITY 0x10
#define USB_DT_HID 0x21
#define USB_DT_REPORT 0x22
#define USB_DT_HUB 0x29
#define USB_DT_SS_HUB 0x2a
#define USB_DT_SS_ENDPOINT_COMP 0x30

/* Fixed wire sizes (bLength) of the descriptors drowse encodes */
#define USB_DT_DEVICE_SIZE 18
#define USB_DT_CONFIG_SIZE 9
#define USB_DT_INTERFACE_SIZE 9
#define USB_DT_ENDPOINT_SIZE 7
#define USB_DT_SS_EP_COMP_SIZE 6
#define USB_DT_DEVICE_QUALIFIER_SIZE 10
#define USB_DT_BOS_SIZE 5
#define USB_DT_USB_EXT_CAP_SIZE 7
#define USB_DT_USB_SS_CAP_SIZE 10
#define USB_DT_HUB_NONVAR_SIZE 7

/* bDevCapabilityType (USB 3.2 table 9-14) */
#define USB_CAP_TYPE_EXT 0x02
#define USB_SS_CAP_TYPE 0x03

/* Feature selectors (USB 2.0 table 9-6) */
#define USB_ENDPOINT_HALT 0
#define USB_DEVICE_REMOTE_WAKEUP 1
#define USB_DEVICE_TEST_MODE 2

/* GET_STATUS(device) bits */
#define USB_DEVICE_STATUS_SELF_POWERED 0x01
#define USB_DEVICE_STATUS_REMOTE_WAKEUP 0x02

/* Configuration bmAttributes; bit 7 must always be set for USB 1.0 compatibility */
#define USB_CONFIG_ATT_ONE 0x80
#define USB_CONFIG_ATT_SELFPOWER 0x40
#define USB_CONFIG_ATT_WAKEUP 0x20

/* Endpoint bEndpointAddress and bmAttributes */
#define USB_ENDPOINT_NUMBER_MASK 0x0f
#define USB_ENDPOINT_DIR_MASK 0x80
#define USB_ENDPOINT_XFERTYPE_MASK 0x03
#define USB_ENDPOINT_XFER_CONTROL 0
#define USB_ENDPOINT_XFER_ISOC 1
#define USB_ENDPOINT_XFER_BULK 2
#define USB_ENDPOINT_XFER_INT 3

/* bDeviceClass / bInterfaceClass */
#define USB_CLASS_PER_INTERFACE 0x00
#define USB_CLASS_HID 0x03
#define USB_CLASS_MASS_STORAGE 0x08
#define USB_CLASS_HUB 0x09
#define USB_CLASS_VENDOR_SPEC 0xff

/* Hub feature selectors (USB 2.0 table 11-17). Hub-level ones first, then port-level. */
#define USB_HUB_FEAT_C_LOCAL_POWER 0
#define USB_HUB_FEAT_C_OVER_CURRENT 1

#define USB_PORT_FEAT_CONNECTION 0
#define USB_PORT_FEAT_ENABLE 1
#define USB_PORT_FEAT_SUSPEND 2
#define USB_PORT_FEAT_OVER_CURRENT 3
#define USB_PORT_FEAT_RESET 4
#define USB_PORT_FEAT_POWER 8
#define USB_PORT_FEAT_LOWSPEED 9
#define USB_PORT_FEAT_C_CONNECTION 16
#define USB_PORT_FEAT_C_ENABLE 17
#define USB_PORT_FEAT_C_SUSPEND 18
#define USB_PORT_FEAT_C_OVER_CURRENT 19
#define USB_PORT_FEAT_C_RESET 20
#define USB_PORT_FEAT_TEST 21
#define USB_PORT_FEAT_INDICATOR 22

/* wPortStatus (USB 2.0 table 11-21) */
#define USB_PORT_STAT_CONNECTION 0x0001
#define USB_PORT_STAT_ENABLE 0x0002
#define USB_PORT_STAT_SUSPEND 0x0004
#define USB_PORT_STAT_OVERCURRENT 0x0008
#define USB_PORT_STAT_RESET 0x0010
#define USB_PORT_STAT_POWER 0x0100
#define USB_PORT_STAT_LOW_SPEED 0x0200
#define USB_PORT_STAT_HIGH_SPEED 0x0400
#define USB_PORT_STAT_TEST 0x0800
#define USB_PORT_STAT_INDICATOR 0x1000

/* wPortChange (USB 2.0 table 11-22) */
#define USB_PORT_STAT_C_CONNECTION 0x0001
#define USB_PORT_STAT_C_ENABLE 0x0002
#define USB_PORT_STAT_C_SUSPEND 0x0004
#define USB_PORT_STAT_C_OVERCURRENT 0x0008
#define USB_PORT_STAT_C_RESET 0x0010

/* wHubStatus / wHubChange (USB 2.0 tables 11-19, 11-20) */
#define USB_HUB_STATUS_LOCAL_POWER 0x0001
#define USB_HUB_STATUS_OVERCURRENT 0x0002
#define USB_HUB_CHANGE_LOCAL_POWER 0x0001
#define USB_HUB_CHANGE_OVERCURRENT 0x0002

/* wHubCharacteristics (USB 2.0 table 11-13) */
#define USB_HUB_CHAR_LPSM_MASK 0x0003
#define USB_HUB_CHAR_LPSM_COMMON 0x0000
#define USB_HUB_CHAR_LPSM_INDV 0x0001
#define USB_HUB_CHAR_LPSM_NO 0x0002
#define USB_HUB_CHAR_COMPOUND 0x0004
#define USB_HUB_CHAR_OCPM_MASK 0x0018
#define USB_HUB_CHAR_OCPM_COMMON 0x0000
#define USB_HUB_CHAR_OCPM_INDV 0x0008
#define USB_HUB_CHAR_OCPM_NO 0x0010
#define USB_HUB_CHAR_TTTT_MASK 0x0060
#define USB_HUB_CHAR_PORTIND 0x0080

/* Same values as the kernel's enum usb_device_speed: vhci's sysfs attach file and USB/IP's
 * OP_REP_IMPORT/devlist speed field carry these numbers verbatim. */
typedef enum UsbSpeed {
        USB_SPEED_UNKNOWN = 0,
        USB_SPEED_LOW,
        USB_SPEED_FULL,
        USB_SPEED_HIGH,
        USB_SPEED_WIRELESS,
        USB_SPEED_SUPER,
        USB_SPEED_SUPER_PLUS,
        _USB_SPEED_MAX,
        _USB_SPEED_INVALID = -EINVAL,
} UsbSpeed;

/* "low", "full", "high", "wireless", "super", "super-plus"; USB_SPEED_UNKNOWN maps to "unknown". */
const char *usb_speed_to_string(UsbSpeed s) _const_;
UsbSpeed usb_speed_from_string(const char *s) _pure_;

static inline bool usb_speed_is_super(UsbSpeed s) {
        return s == USB_SPEED_SUPER || s == USB_SPEED_SUPER_PLUS;
}

/* The 8-byte SETUP packet (USB 2.0 9.3), decoded into host order. */
#define USB_SETUP_SIZE 8

typedef struct UsbSetup {
        uint8_t bmRequestType, bRequest;
        uint16_t wValue, wIndex, wLength;
} UsbSetup;

void usb_setup_decode(const uint8_t raw[static USB_SETUP_SIZE], UsbSetup *ret);
void usb_setup_encode(uint8_t raw[static USB_SETUP_SIZE], const UsbSetup *s);

static inline uint8_t usb_setup_type(const UsbSetup *s) {
        return s->bmRequestType & USB_TYPE_MASK;
}

static inline uint8_t usb_setup_recipient(const UsbSetup *s) {
        return s->bmRequestType & USB_RECIP_MASK;
}

static inline bool usb_setup_is_in(const UsbSetup *s) {
        return s->bmRequestType & USB_DIR_IN;
}

/* Name of a *standard* request code ("GET_DESCRIPTOR"), or NULL if the code is not a standard one.
 * Class requests reuse these codes with other meanings; usb_setup_format() knows the hub ones. */
const char *usb_request_to_string(uint8_t bRequest) _const_;

/* Descriptor type name without the USB_DT_ prefix ("DEVICE", "HID"), NULL if unknown. */
const char *usb_descriptor_type_to_string(uint8_t type) _const_;

/* One human-readable line for logs, e.g.
 *   GET_DESCRIPTOR(DEVICE, 18) type=std recip=device wValue=0x0100 wIndex=0x0000 wLength=18
 *   SET_PORT_FEATURE(SUSPEND) port 2 type=class recip=other wValue=0x0002 wIndex=0x0002 wLength=0
 * Like snprintf(): always NUL-terminates when size > 0, truncates to fit, and returns the length
 * the full line has (so a return >= size means it was cut short). */
int usb_setup_format(const UsbSetup *s, char *buf, size_t size);
