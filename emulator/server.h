/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-event.h>

#include "connection.h"
#include "in-addr-prefix.h"
#include "usb-device.h"
#include "usbip.h"

/* The set of exported devices and the sockets that reach them. */

struct Export {
        Server *server;
        char busid[USBIP_BUSID_SIZE]; /* "1-1", "1-2", ... as usbip list shows them */
        uint32_t busnum, devnum;
        UsbDevice *device;
        Connection *connection;       /* the importer, NULL while free */
        int vhci_port;                /* vhci port we attached it to ourselves, or -1 */

        /* Hub trees (tree.c). vhci routes a child on hub port p to the connection on root port p, so
         * each child rides a "carrier" export attached there: until the hub first resets port p, that
         * connection's traffic is the carrier's own root device (the zombie, 0 interfaces); after, the
         * child's. Hubs and carriers only work by local attach: the root port numbers are the design. */
        UsbDevice *zombie;
        bool child_active;
        bool local_only;
        Export *hub_export;           /* for a child: its hub */
        unsigned hub_port;
        int controller;               /* for a hub: its vhci controller, -1 until placed */
};

/* Where the connection's URBs go right now. */
static inline UsbDevice *export_target(const Export *e) {
        return e->zombie && !e->child_active ? e->zombie : e->device;
}

#define SERVER_MAX_EXPORTS 512 /* disks (256) with the hubs' carriers, keyboards, passthroughs */
#define SERVER_DEFAULT_MAX_CONNECTIONS 256
#define SERVER_MAX_CONNECTIONS 4096 /* each is an fd and up to CONNECTION_MAX_URB_BYTES of buffers */

struct Server {
        sd_event *event;
        int listen_fd;
        sd_event_source *listen_source;
        Export *exports[SERVER_MAX_EXPORTS];
        size_t n_exports;
        Connection *connections;
        unsigned n_connections, max_connections;
        struct Injector *injector;    /* fault injection (injector.h); NULL when not set up */
        /* TCP clients must come from one of these networks; none: any client that reaches the socket
         * (which listens on loopback unless told otherwise). */
        InAddrPrefix *allow;
        size_t n_allow;
};

int server_new(sd_event *event, Server **ret);
Server *server_free(Server *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Server *, server_free);

/* Replaces the allow-list of client networks (a copy is kept); n == 0 allows every client. */
int server_set_allow(Server *s, const InAddrPrefix *allow, size_t n);
/* TCP clients served at once, 1..SERVER_MAX_CONNECTIONS; more are refused at accept(). */
int server_set_max_connections(Server *s, unsigned n);
bool server_peer_allowed(const Server *s, const struct sockaddr *sa, socklen_t salen) _pure_;

/* "127.0.0.1", "127.0.0.1:3240", "[::1]:3240", ":3240". */
int server_listen(Server *s, const char *address);

/* Takes ownership of the device; busid "1-N" is assigned in order. */
int server_add_device(Server *s, UsbDevice *d, Export **ret);
int server_remove_export(Server *s, Export *e);
Export *server_find_export(Server *s, const char *busid);
/* By device name ("disk0") or busid ("1-1"). */
Export *server_lookup(Server *s, const char *name_or_busid);

/* Local attach: a socketpair, one end to vhci_hcd, the other served here. */
int server_attach_local(Server *s, Export *e, int vhci_port);
/* The same on the first free port of the right speed, on `controller` or any when it is negative. */
int server_attach_auto(Server *s, Export *e, int controller);
int server_detach_local(Server *s, Export *e);

void server_fill_usbip_device(const Export *e, UsbipUsbDevice *ret);

void server_connection_gone(Server *s, Connection *c);
