/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "usb-device.h"

/* A HID boot keyboard with a remote-wakeup capable configuration: usbhid arms remote wakeup while the
 * input device is open, so it is the device that shows whether wakeup really works. Key presses are
 * injected from outside; a press while the keyboard is suspended signals remote wakeup through its hub. */

#define KEYBOARD_QUEUE 256 /* reports waiting for the host; more typing than that is refused */

typedef struct Keyboard Keyboard;

int keyboard_new(const char *name, UsbDevice **ret);
Keyboard *keyboard_from_device(UsbDevice *d);

/* Queues a press and a release per character (a-z, A-Z, 0-9, space, newline, common punctuation).
 * Returns the number of characters queued, -EINVAL for a character with no key, -ENOBUFS when the
 * queue would overflow. If the keyboard is suspended, it signals remote wakeup (when armed). */
int keyboard_type(Keyboard *k, const char *text);
