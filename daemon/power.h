/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* AC or battery, from /sys/class/power_supply: AC when a mains supply (or, if configured, a USB one)
 * is online; battery when none is and a system battery exists; AC on machines without a battery. */

#include <libudev.h>

#include "policy.h"

int power_source_detect(struct udev *udev, bool usb_supplies, PowerSource *ret, char *why, size_t why_size);
