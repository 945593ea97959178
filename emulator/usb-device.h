/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdio.h>
#include <sys/types.h>

#include "fault.h"
#include "macro.h"
#include "urb.h"
#include "usb-desc.h"
#include "usb.h"

/* A USB device as chapter 9 defines it: descriptors, configuration state, endpoint halts, remote
 * wakeup, and the URBs that wait on its endpoints. What the device *does* (mass storage, hub, HID)
 * is a function plugged in through UsbFunctionOps; this file answers the standard requests. */

typedef enum UsbDeviceState {
        USB_DEVICE_STATE_DEFAULT,    /* after attach or bus reset */
        USB_DEVICE_STATE_ADDRESSED,  /* vhci swallows SET_ADDRESS: inferred from the first non-addr-0 request */
        USB_DEVICE_STATE_CONFIGURED,
        _USB_DEVICE_STATE_MAX,
        _USB_DEVICE_STATE_INVALID = -EINVAL,
} UsbDeviceState;

const char *usb_device_state_to_string(UsbDeviceState s) _const_;

/* How the device is connected, as its upstream port sees it. A device on a vhci root port is always
 * CONNECTED: vhci keeps root-port suspend local. Behind our hub the hub model moves it. */
typedef enum UsbLinkState {
        USB_LINK_CONNECTED,
        USB_LINK_SUSPENDED,    /* the hub port is suspended: the device answers nothing */
        USB_LINK_UNPLUGGED,    /* no longer on any port */
        _USB_LINK_STATE_MAX,
        _USB_LINK_STATE_INVALID = -EINVAL,
} UsbLinkState;

const char *usb_link_state_to_string(UsbLinkState s) _const_;

typedef struct UsbFunctionOps {
        /* Class or vendor request on ep0. OUT data is in data[0..setup->wLength). Returns the number of
         * IN bytes written to data (at most size), 0 for OUT, or -EPIPE to STALL. */
        int (*control)(void *function, const UsbSetup *setup, uint8_t *data, size_t size);
        /* Data stage on a non-control endpoint. IN: produce at most size bytes; OUT: consume size bytes.
         * Returns bytes moved, -EAGAIN when there is nothing to say yet (the URB waits), -EPIPE to
         * halt the endpoint. */
        ssize_t (*transfer)(void *function, uint8_t ep_address, uint8_t *data, size_t size);
        /* Whether an IN transfer on this endpoint would produce something now; lets a waiting URB
         * stay cheap (no buffer) until then. */
        bool (*in_ready)(void *function, uint8_t ep_address);
        void (*clear_halt)(void *function, uint8_t ep_address);
        void (*bus_reset)(void *function);
        void (*set_configuration)(void *function, uint8_t value);
        /* Writes the function's own state as JSON members (`"key": value, ...`, no braces) for the
         * control interface. */
        void (*describe)(void *function, FILE *f);
        void (*free)(void *function);

        /* A function that forwards URBs elsewhere (passthrough: a real device) sets these instead of
         * control/transfer/in_ready. `submit` gets every URB the link lets through, ep0 included: the
         * device neither answers standard requests nor queues by endpoint for it. The URB stays in
         * the device's pending set, where CMD_UNLINK finds it, until the function hands it back with
         * usb_device_complete(), possibly from inside `submit`. Returns 0, or -ENOBUFS to refuse
         * (the caller keeps the URB). `cancel` says the URB is leaving without completing (unlinked,
         * connection gone): the function must drop every reference to it, its buffer included. */
        int (*submit)(void *function, Urb *u);
        void (*cancel)(void *function, Urb *u);
        /* The upstream port moved the link, told before waiting URBs are retried and before the fault
         * injector hears of it: a forwarding function lets what it forwards to idle while the link is
         * suspended, and wakes it before traffic flows again. */
        void (*link_changed)(void *function, UsbLinkState old, UsbLinkState link);
} UsbFunctionOps;

#define USB_DEVICE_MAX_STRINGS 8
#define USB_DEVICE_MAX_PENDING 256   /* URBs one device lets wait; more is a hostile or broken host */

typedef struct UsbDeviceStats {
        uint64_t urbs;
        uint64_t control_requests;
        uint64_t stalls;
        uint64_t unlinks_pending;     /* CMD_UNLINK that cancelled a waiting URB (kernel quiescing) */
        uint64_t unlinks_late;        /* CMD_UNLINK for an URB already completed */
        uint64_t resumes_inferred;    /* GET_STATUS(device) after silence: the host resumed us */
        uint64_t bus_resets_inferred; /* addr-0 device descriptor read while configured */
        uint64_t remote_wakeup_sets, remote_wakeup_clears;
} UsbDeviceStats;

typedef struct UsbDevice UsbDevice;

/* Asks the upstream port (our hub) to carry a remote wakeup; returns 0 or a negative errno. */
typedef int (*UsbWakeupFunc)(UsbDevice *d, void *userdata);
/* Told of every link change (fault injection acts on suspends). */
typedef void (*UsbLinkHook)(UsbDevice *d, UsbLinkState old, void *userdata);

struct UsbDevice {
        char *name;
        UsbDeviceDesc desc;            /* a copy so ids can be set per device; configs stay const tables */
        char *strings[USB_DEVICE_MAX_STRINGS];
        UsbSpeed speed;

        UsbDeviceState state;
        uint8_t configuration;         /* bConfigurationValue, 0 when not configured */
        bool remote_wakeup;            /* armed by SET_FEATURE(DEVICE_REMOTE_WAKEUP) */
        uint32_t halted;               /* bit (ep | in << 4) */
        UrbQueue pending[32];          /* index (ep | in << 4) */
        unsigned n_pending;

        const UsbFunctionOps *ops;
        void *function;

        uint64_t last_urb_usec;        /* CLOCK_MONOTONIC of the last URB from the host */
        UsbDeviceStats stats;

        UsbLinkState link;
        uint64_t link_since_usec;      /* when link last changed */
        UsbWakeupFunc wakeup;          /* set by the hub the device is plugged into */
        void *wakeup_userdata;
        uint64_t suspends, resumes, wakeups_signalled;
        /* The next GET_STATUS(device) is the one the kernel sends to finish a resume (behind a hub the
         * link tells us; on a root port the silence before it does). */
        bool resume_status_due;

        Fault *faults;                 /* injected faults (fault.h); NULL on the fast path */
        UsbLinkHook link_hook;
        void *link_hook_userdata;
};

/* CLOCK_MONOTONIC in microseconds, the clock every time in the device models is on. */
uint64_t usb_device_now_usec(void);

int usb_device_new(const char *name, const UsbDeviceDesc *desc, UsbSpeed speed, UsbDevice **ret);
UsbDevice *usb_device_free(UsbDevice *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(UsbDevice *, usb_device_free);

/* Takes ownership of the function (ops->free releases it). */
void usb_device_set_function(UsbDevice *d, const UsbFunctionOps *ops, void *function);
int usb_device_set_string(UsbDevice *d, uint8_t index, const char *s);

/* Hands an URB to the device. It is completed through urb_complete(), now or later; a negative return
 * means the device refused to take it (the caller still owns it). */
int usb_device_submit(UsbDevice *d, Urb *u, uint64_t now_usec);

/* Cancels a waiting URB: returns it (the caller frees it) if it was waiting, NULL if it is not known
 * here, i.e. it was already completed. */
Urb *usb_device_unlink(UsbDevice *d, uint32_t seqnum);
Urb *usb_device_find_pending(UsbDevice *d, uint32_t seqnum);

/* Completes an URB a forwarding function (UsbFunctionOps.submit) took: out of the pending set, then
 * urb_complete(). */
void usb_device_complete(UsbDevice *d, Urb *u, int32_t status, uint32_t actual_length);

/* A forwarding function reports the configuration the device really took (SET_CONFIGURATION). */
void usb_device_set_configured(UsbDevice *d, uint8_t value);
/* A forwarding function reports the remote wakeup setting of the device it forwards to: what a
 * SET/CLEAR_FEATURE(DEVICE_REMOTE_WAKEUP) of the host left (`by_host`, counted in the stats), or what
 * the device's answer to GET_STATUS says. */
void usb_device_note_remote_wakeup(UsbDevice *d, bool armed, bool by_host);

/* Retries waiting URBs, e.g. after the function got new data from outside. */
void usb_device_kick(UsbDevice *d);

/* Drops every waiting URB without completing it: the connection is gone. */
void usb_device_drop_pending(UsbDevice *d);

void usb_device_bus_reset(UsbDevice *d);

/* Called by the hub model when the upstream port changes. Resuming kicks waiting URBs. */
void usb_device_set_link(UsbDevice *d, UsbLinkState link, uint64_t now_usec);

/* The device signals remote wakeup (a key press, an injected wakeup): only a suspended device behind a
 * hub can, and only when the host armed it, unless `force` (fault injection: wakeup while not armed).
 * Returns 0, -EAGAIN when not suspended, -EPERM when not armed, -EOPNOTSUPP without a hub. */
int usb_device_signal_wakeup(UsbDevice *d, bool force);

const UsbConfigDesc *usb_device_active_config(const UsbDevice *d);
