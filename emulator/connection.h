/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-event.h>

#include "macro.h"
#include "urb.h"

/* One USB/IP stream: a TCP client of the listener (starting in the management phase, OP_REQ_*), or one
 * end of a socketpair whose other end was handed to vhci_hcd (starting in the URB phase). Everything the
 * peer can make us allocate is bounded here. */

typedef struct Server Server;
typedef struct Export Export;
typedef struct Connection Connection;

typedef enum ConnectionPhase {
        CONNECTION_PHASE_OP,   /* OP_REQ_DEVLIST / OP_REQ_IMPORT */
        CONNECTION_PHASE_URB,  /* CMD_SUBMIT / CMD_UNLINK for one imported device */
        _CONNECTION_PHASE_MAX,
        _CONNECTION_PHASE_INVALID = -EINVAL,
} ConnectionPhase;

/* Stop reading from a peer while this much reply data waits to be written: a client that does not read
 * its replies cannot make us queue without bound. */
#define CONNECTION_TX_HIGH_WATER (8u * 1024 * 1024)
#define CONNECTION_TX_LOW_WATER (1u * 1024 * 1024)
/* Data buffers a peer may keep allocated through outstanding URBs at once. */
#define CONNECTION_MAX_URB_BYTES (64u * 1024 * 1024)
/* A management-phase client has this long to finish its request. */
#define CONNECTION_OP_TIMEOUT_USEC (10 * 1000000ULL)

/* Completions that injected faults may hold back at once; beyond that they go out on time. */
#define CONNECTION_MAX_HELD 1024u

typedef struct TxItem TxItem;

struct Connection {
        Server *server;
        int fd;
        sd_event_source *io_source;
        sd_event_source *timeout_source;
        char *peer;                 /* for logs: "127.0.0.1:40512" or "vhci port 3" */
        ConnectionPhase phase;
        Export *export;             /* the imported device in the URB phase */

        /* Receive state: a fixed header, then a payload into a buffer sized from the validated header. */
        uint8_t rx_header[48];
        size_t rx_header_got;
        size_t rx_header_need;      /* 8 for op_common, 32 for an import body, 48 for URB headers */
        uint8_t *rx_payload;
        size_t rx_payload_got, rx_payload_need;
        Urb *rx_urb;                /* CMD_SUBMIT whose OUT data is being received */
        uint16_t rx_op_code;

        /* Completions an injected fault holds back (fault.h): sent at their release time, or never
         * (until the kernel unlinks them). */
        UrbQueue held;
        sd_event_source *held_timer;

        TxItem *tx_head, *tx_tail;
        size_t tx_bytes;
        size_t urb_bytes;           /* data buffers of URBs this connection owns */
        bool reading_paused;        /* too much reply data queued */
        bool closing;               /* last reply queued; close once it is written */
        bool dispatching;           /* inside on_io(): it writes and updates events itself */
        uint32_t events;            /* what epoll watches now */

        uint64_t submits, unlinks;

        Connection *next, *prev;    /* in the server's list */
};

int connection_new(Server *s, int fd, ConnectionPhase phase, const char *peer, Connection **ret);
/* Unregisters, drops the device's waiting URBs and closes the socket. */
Connection *connection_free(Connection *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Connection *, connection_free);

/* Binds a URB-phase connection to an export (local attach binds before the kernel sends anything). */
void connection_bind_export(Connection *c, Export *e);

const char *connection_phase_to_string(ConnectionPhase p) _const_;
