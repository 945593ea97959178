/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdlib.h>

#include "urb.h"

int urb_new(uint32_t seqnum, uint8_t ep, bool in, uint32_t length, Urb **ret) {
        Urb *u;

        if (length > USBIP_MAX_TRANSFER_LENGTH)
                return -EMSGSIZE;

        u = calloc(1, sizeof(Urb));
        if (!u)
                return -ENOMEM;
        *u = (Urb) {
                .seqnum = seqnum,
                .ep = ep,
                .in = in,
                .length = length,
        };
        *ret = u;
        return 0;
}

int urb_ensure_buffer(Urb *u) {
        if (u->buf || u->length == 0)
                return 0;
        /* Not zeroed: every byte of data that goes out was produced by the device first. */
        u->buf = malloc(u->length);
        if (!u->buf)
                return -ENOMEM;
        return 0;
}

Urb *urb_free(Urb *u) {
        if (!u)
                return NULL;
        free(u->buf);
        return mfree(u);
}

void urb_complete(Urb *u, int32_t status, uint32_t actual_length) {
        u->status = status;
        u->actual_length = u->in ? MIN(actual_length, u->length) : actual_length;
        u->complete(u, u->userdata);
}

void urb_queue_push(UrbQueue *q, Urb *u) {
        u->next = NULL;
        u->prev = q->tail;
        if (q->tail)
                q->tail->next = u;
        else
                q->head = u;
        q->tail = u;
        q->n++;
}

void urb_queue_push_front(UrbQueue *q, Urb *u) {
        u->prev = NULL;
        u->next = q->head;
        if (q->head)
                q->head->prev = u;
        else
                q->tail = u;
        q->head = u;
        q->n++;
}

void urb_queue_remove(UrbQueue *q, Urb *u) {
        if (u->prev)
                u->prev->next = u->next;
        else
                q->head = u->next;
        if (u->next)
                u->next->prev = u->prev;
        else
                q->tail = u->prev;
        u->next = u->prev = NULL;
        q->n--;
}

Urb *urb_queue_pop(UrbQueue *q) {
        Urb *u = q->head;
        if (u)
                urb_queue_remove(q, u);
        return u;
}

Urb *urb_queue_find(UrbQueue *q, uint32_t seqnum) {
        for (Urb *u = q->head; u; u = u->next)
                if (u->seqnum == seqnum)
                        return u;
        return NULL;
}
