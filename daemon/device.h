/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* One USB device drowsed looks after, with everything below it that its autosuspend depends on (the
 * interfaces and, for USB storage, every SCSI LUN and its disk), and what drowsed decided about it. */

#include <libudev.h>
#include <stdio.h>

#include "policy.h"

typedef enum DeviceState {
        DEVICE_PENDING,     /* waiting for interfaces or SCSI LUNs to bind */
        DEVICE_AUTOSUSPEND, /* the whole chain is set to autosuspend */
        DEVICE_EXCLUDED,    /* policy says no */
        DEVICE_REFUSED,     /* policy says yes, but the chain cannot suspend */
        DEVICE_IGNORED,     /* never touched: hubs, the emulator's vhci carriers */
        DEVICE_GONE,        /* vanished while we looked at it */
        _DEVICE_STATE_MAX,
        _DEVICE_STATE_INVALID = -EINVAL,
} DeviceState;

typedef struct Device {
        char *syspath;
        char *sysname;         /* "1-1.2" */
        char *devpath;         /* "/devices/..." */
        char id[10];           /* "vvvv:pppp" */
        char serial[128];
        char vhci[64];         /* "vhci_hcd.0" if behind vhci, else "" */
        bool vhci_root_port;   /* plugged into a vhci root hub directly */
        DeviceState state;
        char reason[320];
        char rule[64];         /* the matching rule, "" for none */
        int delay_ms, disk_delay_ms;
        unsigned n_luns;
        bool wrote_control;    /* drowsed set the USB device's power/control=auto */
        bool dirty;            /* to be (re)applied */
} Device;

int device_new(struct udev_device *dev, Device **ret);
Device *device_free(Device *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(Device *, device_free);

/* Reads the device's subtree, decides with P (on POWER), and writes what the decision needs. vhci_holder
 * names another root-port device of the same vhci_hcd that already autosuspends (NULL if none). Logs the
 * decision at info when it changes. Returns 0, or a negative errno for failures of drowsed itself. */
int device_apply(Device *d, struct udev *udev, const Policy *p, PowerSource power, const char *vhci_holder);

/* JSON object for list/show, and "why won't it suspend": a live walk of the subtree. */
void device_dump_json(const Device *d, FILE *f);
void device_dump_text(const Device *d, FILE *f);
int device_why(const Device *d, struct udev *udev, bool json, FILE *f);

const char *device_state_to_string(DeviceState s) _const_;
DeviceState device_state_from_string(const char *s) _pure_;
