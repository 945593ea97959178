/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "usb-device.h"

/* A USB 2.0 single-TT hub: the hub class requests, per-port status and change bits (power, reset,
 * enable, suspend, connection), and the status-change interrupt endpoint, which stays pending until
 * there is a change to report. Children are UsbDevices plugged into ports; the hub moves their link
 * state (suspended, connected, unplugged) as the host drives the port, and carries their remote wakeup
 * (C_PORT_SUSPEND) to the host.
 *
 * Resets and resumes complete at once: the kernel checks a reset after >= 10 ms and a resume 40 ms
 * after CLEAR_FEATURE(PORT_SUSPEND) (kernel-deep-dive §2.2), so the next GET_PORT_STATUS always sees
 * them done. */

typedef struct Hub Hub;

typedef struct HubOptions {
        unsigned n_ports;      /* 1..15: vhci routes children by port number, and has 15 ports */
        bool remote_wakeup;    /* advertise remote wakeup: the kernel then autosuspends the hub */
} HubOptions;

typedef struct HubStats {
        uint64_t port_resets, port_suspends, port_resumes, remote_wakeups, wakeups_held;
        uint64_t status_reports;   /* interrupt URBs completed */
} HubStats;

/* Called when the host finishes a reset of a port: the next address-0 request for that port number
 * comes from the child (the carrier connection switches to it). */
typedef void (*HubPortResetFunc)(Hub *h, unsigned port, UsbDevice *child, void *userdata);

int hub_new(const char *name, const HubOptions *options, UsbDevice **ret);
/* The hub behind a UsbDevice made by hub_new(), or NULL for any other device. */
Hub *hub_from_device(UsbDevice *d);

void hub_set_port_reset_callback(Hub *h, HubPortResetFunc func, void *userdata);

unsigned hub_get_n_ports(const Hub *h);
UsbDevice *hub_get_child(const Hub *h, unsigned port);
void hub_get_port_status(const Hub *h, unsigned port, uint16_t *ret_status, uint16_t *ret_change);
const HubStats *hub_get_stats(const Hub *h);

/* Plug a child into a free port (-EBUSY if taken, -ERANGE for a bad port): the port reports a
 * connection once it is powered. Unplug returns the child (the caller keeps owning it). */
int hub_plug(Hub *h, unsigned port, UsbDevice *child, uint64_t now_usec);
UsbDevice *hub_unplug(Hub *h, unsigned port, uint64_t now_usec);

/* The port reports over-current and switches its power off (a fault); power on clears it. */
int hub_port_over_current(Hub *h, unsigned port, uint64_t now_usec);
