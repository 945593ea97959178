/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "usb.h"

/* The kernel's vhci_hcd driver seen through sysfs: which ports exist and which are free, and the
 * attach/detach files that hand it a socket. Port numbers are vhci's global ones: controller N owns
 * 2 * ports_per_hub ports starting at N * 2 * ports_per_hub, high speed first, then SuperSpeed. */

#define VHCI_SYSFS_DIR "/sys/devices/platform/vhci_hcd.0"

typedef struct VhciLayout {
        unsigned n_controllers;
        unsigned ports_per_hub;  /* VHCI_HC_PORTS: 15 on Debian */
} VhciLayout;

int vhci_read_layout(VhciLayout *ret);

/* First free port of the right root hub (high speed for speed < SuperSpeed), on `controller` or on any
 * controller when it is negative. */
int vhci_find_free_port(const VhciLayout *l, UsbSpeed speed, int controller, int *ret_port);

/* 1 if free, 0 if in use, negative errno if the status file cannot be read. */
int vhci_port_is_free(unsigned controller, int port);

int vhci_port_for(const VhciLayout *l, unsigned controller, bool superspeed, unsigned rhport, int *ret_port);

/* The fd must stay open in this process until the write returns; the kernel takes its own reference. */
int vhci_attach(int port, int fd, uint32_t devid, UsbSpeed speed);
int vhci_detach(int port);
