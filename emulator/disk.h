/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "emu-config.h"
#include "usb-device.h"

/* A USB mass-storage disk: the Bulk-Only Transport function on an image file, with its descriptors. */
int disk_new(const DiskConfig *cfg, UsbDevice **ret);
