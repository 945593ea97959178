/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-event.h>

#include "emu-config.h"
#include "usb-device.h"

/* A real USB device on this machine, exported through USB/IP as it is: opened with libusb-1.0, its
 * kernel drivers detached while it is exported and given back when it is freed, every URB forwarded
 * to it asynchronously on the event loop (libusb's file descriptors are sd-event sources). The
 * exported UsbDevice carries the real descriptors; the device itself answers every request but the
 * few the kernel must make itself (SET_CONFIGURATION, SET_INTERFACE, CLEAR_FEATURE(ENDPOINT_HALT)).
 * Devices with isochronous endpoints, and hubs, are refused.
 *
 * Behind one of our hubs, the port's suspend lets the real device autosuspend under its own kernel's
 * policy, the port's resume wakes it before traffic flows, and a resume of its own (remote wakeup) is
 * signalled through the hub (docs/passthrough.md says exactly what maps and what cannot). */

typedef struct Passthrough Passthrough;

/* Called once, from the event loop, when the real device is gone (unplugged, or its usbfs file hung
 * up): the owner unplugs or removes the exported device, which may free it and the Passthrough. */
typedef void (*PassthroughGoneFunc)(UsbDevice *d, void *userdata);

/* Finds, opens and takes over the device cfg names. Every refusal is logged here, with the reason. */
int passthrough_new(sd_event *event, const PassthroughConfig *cfg, UsbDevice **ret);
/* NULL unless d was made by passthrough_new(). */
Passthrough *passthrough_from_device(UsbDevice *d);
void passthrough_set_gone_handler(Passthrough *p, PassthroughGoneFunc func, void *userdata);

/* The tables usb-device.h describes a configuration with, from the raw configuration descriptor set a
 * device answers (all alternate settings; class descriptors are not kept: the real device answers for
 * them). Returns -EBADMSG for a malformed set, -E2BIG for more than 255 interface descriptors. Free
 * with passthrough_config_desc_done(). */
int passthrough_parse_config(const uint8_t *raw, size_t len, UsbConfigDesc *ret);
void passthrough_config_desc_done(UsbConfigDesc *c);
/* The first isochronous endpoint of a configuration (and its interface), or NULL. */
const UsbEndpointDesc *passthrough_find_isochronous(const UsbConfigDesc *c, const UsbInterfaceDesc **ret_intf);

/* A real device's power/control, read from its sysfs directory: 1 "auto" (it may autosuspend), 0 "on",
 * -EBADMSG for anything else, or the negative errno of reading it. */
int passthrough_power_control(const char *sysfs_dir);

/* What a control request the real device completed says of its remote wakeup setting. */
typedef enum PassthroughWakeupNote {
        PASSTHROUGH_WAKEUP_NOTHING,
        PASSTHROUGH_WAKEUP_ARMED_BY_HOST,     /* SET_FEATURE(DEVICE_REMOTE_WAKEUP) went through */
        PASSTHROUGH_WAKEUP_DISARMED_BY_HOST,  /* CLEAR_FEATURE(DEVICE_REMOTE_WAKEUP) went through */
        PASSTHROUGH_WAKEUP_ARMED,             /* GET_STATUS(device) says armed */
        PASSTHROUGH_WAKEUP_DISARMED,          /* GET_STATUS(device) says not armed */
} PassthroughWakeupNote;

/* setup: the 8 bytes of the request; data/actual: what the device answered; status: how it completed. */
PassthroughWakeupNote passthrough_wakeup_note(const uint8_t setup[static 8], int32_t status,
                                              const uint8_t *data, uint32_t actual);
