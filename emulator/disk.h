/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "emu-config.h"
#include "usb-device.h"

/* A USB mass-storage disk: the Bulk-Only Transport function on an image file, with its descriptors. */
int disk_new(const DiskConfig *cfg, UsbDevice **ret);
/* Why an image could not be used, for a human: what disk_new() returned when it failed on the image. */
const char *disk_image_error(int r);
/* Whether a device is one of ours made by disk_new() (storage faults apply to it). */
bool disk_is_disk(const UsbDevice *d);
