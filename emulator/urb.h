/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>

#include "macro.h"
#include "usbip.h"

/* One USB request block as the kernel's vhci_hcd submitted it. OUT data is read from the socket straight
 * into buf and IN data is produced straight into it (pread for disk reads), then sent from there with
 * the reply header beside it: a transfer's data is never copied in userspace. */
typedef struct Urb Urb;

#define URB_HOLD_FOREVER UINT64_MAX

typedef void (*UrbCompleteFunc)(Urb *urb, void *userdata);

struct Urb {
        uint32_t seqnum;
        uint8_t ep;              /* endpoint number 0..15, without the direction bit */
        bool in;                 /* direction: device to host */
        uint32_t transfer_flags;
        uint32_t length;         /* transfer_buffer_length */
        uint8_t setup[8];
        int32_t number_of_packets; /* echoed in RET_SUBMIT, as usbip-host does */

        int32_t status;          /* 0 or a negative errno as the kernel expects it in RET_SUBMIT */
        uint32_t actual_length;

        uint8_t *buf;            /* `length` bytes of data, allocated when needed */

        /* Fault injection: the device asks the transport to send the completion this much later
         * (URB_HOLD_FOREVER: never, until the kernel unlinks it). release_usec is when, while held. */
        uint64_t hold_usec, release_usec;

        UrbCompleteFunc complete;
        void *userdata;

        /* Pending-queue links (one queue per endpoint of a device). */
        Urb *next, *prev;
};

static inline uint8_t *urb_data(Urb *u) {
        return u->buf;
}

/* An IN URB's data buffer is only allocated when data exists, so a pending URB costs a few bytes. */
int urb_new(uint32_t seqnum, uint8_t ep, bool in, uint32_t length, Urb **ret);
int urb_ensure_buffer(Urb *u);
Urb *urb_free(Urb *u);
DEFINE_TRIVIAL_CLEANUP_FUNC(Urb *, urb_free);

/* Hands the URB to its owner (the connection), which sends RET_SUBMIT and frees it. */
void urb_complete(Urb *u, int32_t status, uint32_t actual_length);

typedef struct UrbQueue {
        Urb *head, *tail;
        unsigned n;
} UrbQueue;

void urb_queue_push(UrbQueue *q, Urb *u);
void urb_queue_push_front(UrbQueue *q, Urb *u);
Urb *urb_queue_pop(UrbQueue *q);
void urb_queue_remove(UrbQueue *q, Urb *u);
Urb *urb_queue_find(UrbQueue *q, uint32_t seqnum);
