/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "connection.h"
#include "injector.h"
#include "log.h"
#include "server.h"

/* PDUs handled per wakeup before other sources get their turn: one busy peer must not starve the rest. */
#define RX_BUDGET 64

struct TxItem {
        TxItem *next;
        uint8_t header[USBIP_HEADER_SIZE];
        size_t header_len;
        const uint8_t *data;
        size_t data_len;
        size_t sent;
        Urb *urb;       /* owns data when set */
        uint8_t *blob;  /* owns data when set */
};

static const char *const connection_phase_table[_CONNECTION_PHASE_MAX] = {
        [CONNECTION_PHASE_OP] = "management",
        [CONNECTION_PHASE_URB] = "urb",
};

DEFINE_STRING_TABLE_TO_STRING(connection_phase, ConnectionPhase);

static void tx_item_free(Connection *c, TxItem *t) {
        if (t->urb) {
                c->urb_bytes -= t->urb->length;
                urb_free(t->urb);
        }
        free(t->blob);
        free(t);
}

/* Asks epoll for what we need now. Inside the I/O handler this waits until the handler is done (it
 * writes replies itself), and nothing is asked twice: each change is an epoll_ctl() on the URB path. */
static void update_events(Connection *c) {
        uint32_t events = 0;

        if (c->dispatching)
                return;
        if (!c->reading_paused && !c->closing)
                events |= EPOLLIN;
        if (c->tx_head)
                events |= EPOLLOUT;
        if (events == c->events)
                return;
        if (sd_event_source_set_io_events(c->io_source, events) >= 0)
                c->events = events;
}

static void expect_header(Connection *c, size_t n) {
        c->rx_header_got = 0;
        c->rx_header_need = n;
        c->rx_payload = NULL;
        c->rx_payload_got = c->rx_payload_need = 0;
}

/* Writes what the socket takes. Returns 0, or a negative errno when the peer is gone. */
static int flush_tx(Connection *c) {
        while (c->tx_head) {
                TxItem *t = c->tx_head;
                struct iovec iov[2];
                int n_iov = 0;
                size_t total = t->header_len + t->data_len;
                ssize_t k;

                if (t->sent < t->header_len)
                        iov[n_iov++] = (struct iovec) { t->header + t->sent, t->header_len - t->sent };
                if (t->data_len > 0) {
                        size_t off = t->sent > t->header_len ? t->sent - t->header_len : 0;
                        iov[n_iov++] = (struct iovec) { (void *) (t->data + off), t->data_len - off };
                }

                k = writev(c->fd, iov, n_iov);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                break;
                        return negative_errno();
                }
                t->sent += (size_t) k;
                c->tx_bytes -= (size_t) k;
                if (t->sent < total)
                        break;

                c->tx_head = t->next;
                if (!c->tx_head)
                        c->tx_tail = NULL;
                tx_item_free(c, t);
        }

        if (c->reading_paused && c->tx_bytes <= CONNECTION_TX_LOW_WATER)
                c->reading_paused = false;
        update_events(c);
        return 0;
}

static void tx_enqueue(Connection *c, TxItem *t) {
        t->next = NULL;
        if (c->tx_tail)
                c->tx_tail->next = t;
        else
                c->tx_head = t;
        c->tx_tail = t;
        c->tx_bytes += t->header_len + t->data_len;
        if (c->tx_bytes > CONNECTION_TX_HIGH_WATER)
                c->reading_paused = true;
}

static int send_blob(Connection *c, uint8_t *blob, size_t len) {
        TxItem *t = calloc(1, sizeof(TxItem));
        if (!t) {
                free(blob);
                return -ENOMEM;
        }
        t->blob = blob;
        t->data = blob;
        t->data_len = len;
        tx_enqueue(c, t);
        return 0;
}

static void send_ret_submit(Connection *c, Urb *u) {
        TxItem *t;

        t = calloc(1, sizeof(TxItem));
        if (!t) {
                /* Nothing sensible is left to tell the kernel; it will time the URB out. */
                c->urb_bytes -= u->length;
                urb_free(u);
                return;
        }
        usbip_header_encode(t->header, &(UsbipHeader) {
                .command = USBIP_RET_SUBMIT,
                .seqnum = u->seqnum,
                .u.ret_submit = {
                        .status = u->status,
                        .actual_length = u->actual_length,
                        .number_of_packets = u->number_of_packets,
                },
        });
        t->header_len = USBIP_HEADER_SIZE;
        if (u->in && u->actual_length > 0) {
                t->data = urb_data(u);
                t->data_len = u->actual_length;
        }
        t->urb = u;
        tx_enqueue(c, t);
        /* Written from the I/O handler or the next EPOLLOUT; completions never write directly, so a
         * completion inside a device callback cannot free the connection under its caller. */
        update_events(c);
}

static void arm_held_timer(Connection *c);

static int on_held_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Connection *c = userdata;
        uint64_t now = 0;
        Urb *u, *next;

        (void) sd_event_now(c->server->event, CLOCK_MONOTONIC, &now);
        for (u = c->held.head; u; u = next) {
                next = u->next;
                if (u->release_usec > now)
                        continue;
                urb_queue_remove(&c->held, u);
                send_ret_submit(c, u);
        }
        arm_held_timer(c);
        return 0;
}

static void arm_held_timer(Connection *c) {
        uint64_t next = UINT64_MAX;
        int r;

        for (Urb *u = c->held.head; u; u = u->next)
                next = MIN(next, u->release_usec);
        if (next == UINT64_MAX) {
                if (c->held_timer)
                        (void) sd_event_source_set_enabled(c->held_timer, SD_EVENT_OFF);
                return;
        }
        if (c->held_timer) {
                r = sd_event_source_set_time(c->held_timer, next);
                if (r >= 0)
                        r = sd_event_source_set_enabled(c->held_timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time(c->server->event, &c->held_timer, CLOCK_MONOTONIC, next, 0, on_held_timer, c);
        if (r < 0)
                log_warning_errno(r, "%s: cannot arm the timer for held completions: %m", c->peer);
}

static void on_urb_complete(Urb *u, void *userdata) {
        Connection *c = userdata;
        UsbDevice *target = c->export ? export_target(c->export) : NULL;
        uint64_t now = 0, hold = u->hold_usec;

        /* The per-URB path: without a fault on the device there is nothing to look up. */
        if (hold == 0 && (!target || !target->faults)) {
                send_ret_submit(c, u);
                return;
        }
        (void) sd_event_now(c->server->event, CLOCK_MONOTONIC, &now);
        if (target) {
                uint64_t fault_hold = injector_completion_hold(target, u, now);
                hold = MAX(hold, fault_hold);
        }
        if (hold == 0 || c->held.n >= CONNECTION_MAX_HELD) {
                if (hold)
                        log_warning("%s: %u completions already held by faults, sending URB %u now", c->peer,
                                    c->held.n, u->seqnum);
                send_ret_submit(c, u);
                return;
        }
        /* An injected fault: the completion waits here, where CMD_UNLINK still finds it. */
        u->hold_usec = 0;
        u->release_usec = hold == URB_HOLD_FOREVER ? UINT64_MAX : now + hold;
        urb_queue_push(&c->held, u);
        arm_held_timer(c);
}

static int send_ret_unlink(Connection *c, uint32_t seqnum, int32_t status) {
        TxItem *t = calloc(1, sizeof(TxItem));
        if (!t)
                return -ENOMEM;
        usbip_header_encode(t->header, &(UsbipHeader) {
                .command = USBIP_RET_UNLINK,
                .seqnum = seqnum,
                .u.ret_unlink.status = status,
        });
        t->header_len = USBIP_HEADER_SIZE;
        tx_enqueue(c, t);
        return 0;
}

void connection_bind_export(Connection *c, Export *e) {
        c->export = e;
        e->connection = c;
        c->phase = CONNECTION_PHASE_URB;
        expect_header(c, USBIP_HEADER_SIZE);
        c->timeout_source = sd_event_source_disable_unref(c->timeout_source);
}

/* Management phase. Returns 0 to go on, 1 to close once the reply is written, <0 to close now. */
static int handle_devlist(Connection *c) {
        Server *s = c->server;
        size_t size = USBIP_OP_COMMON_SIZE + 4;
        uint8_t *blob, *p;

        size_t n = 0;
        for (size_t i = 0; i < s->n_exports; i++) {
                const UsbConfigDesc *cfg = s->exports[i]->device->desc.configs;
                if (s->exports[i]->local_only)
                        continue;
                size += USBIP_USB_DEVICE_SIZE + (size_t) cfg->bNumInterfaces * USBIP_USB_INTERFACE_SIZE;
                n++;
        }
        blob = malloc(size);
        if (!blob)
                return -ENOMEM;

        usbip_op_common_encode(blob, &(UsbipOpCommon) {
                .version = USBIP_VERSION, .code = USBIP_OP_REP_DEVLIST, .status = USBIP_ST_OK });
        put_be32(blob + USBIP_OP_COMMON_SIZE, (uint32_t) n);
        p = blob + USBIP_OP_COMMON_SIZE + 4;
        for (size_t i = 0; i < s->n_exports; i++) {
                const Export *e = s->exports[i];
                const UsbConfigDesc *cfg = e->device->desc.configs;
                UsbipUsbDevice d;

                if (e->local_only)
                        continue;
                server_fill_usbip_device(e, &d);
                usbip_usb_device_encode(p, &d);
                p += USBIP_USB_DEVICE_SIZE;
                for (unsigned k = 0; k < cfg->bNumInterfaces; k++) {
                        const UsbInterfaceDesc *intf = &cfg->interfaces[k];
                        usbip_usb_interface_encode(p, &(UsbipUsbInterface) {
                                .bInterfaceClass = intf->bInterfaceClass,
                                .bInterfaceSubClass = intf->bInterfaceSubClass,
                                .bInterfaceProtocol = intf->bInterfaceProtocol,
                        });
                        p += USBIP_USB_INTERFACE_SIZE;
                }
        }
        log_info("%s: listed %zu device(s)", c->peer, n);
        return send_blob(c, blob, size) < 0 ? -ENOMEM : 1;
}

static int handle_import(Connection *c, const char *busid) {
        Export *e = server_find_export(c->server, busid);
        UsbipOpStatus status = USBIP_ST_OK;
        size_t size = USBIP_OP_COMMON_SIZE;
        uint8_t *blob;

        if (!e) {
                log_warning("%s: import of unknown device %s refused", c->peer, busid);
                status = USBIP_ST_NODEV;
        } else if (e->local_only) {
                log_warning("%s: import of %s refused: hubs and the devices behind them need local attach "
                            "(vhci routes by root port number, which only drowse-emu --attach controls)",
                            c->peer, busid);
                status = USBIP_ST_NA;
        } else if (e->connection) {
                log_warning("%s: import of %s refused: already imported by %s", c->peer, busid,
                            e->connection->peer);
                status = USBIP_ST_DEV_BUSY;
        } else
                size += USBIP_USB_DEVICE_SIZE;

        blob = malloc(size);
        if (!blob)
                return -ENOMEM;
        usbip_op_common_encode(blob, &(UsbipOpCommon) {
                .version = USBIP_VERSION, .code = USBIP_OP_REP_IMPORT, .status = status });
        if (status == USBIP_ST_OK) {
                UsbipUsbDevice d;
                server_fill_usbip_device(e, &d);
                usbip_usb_device_encode(blob + USBIP_OP_COMMON_SIZE, &d);
        }
        if (send_blob(c, blob, size) < 0)
                return -ENOMEM;
        if (status != USBIP_ST_OK)
                return 1;

        log_info("%s: imported %s (%s)", c->peer, e->busid, e->device->name);
        connection_bind_export(c, e);
        return 0;
}

static int handle_op_header(Connection *c) {
        UsbipOpCommon op = {};
        const char *error = NULL;
        int r;

        if (c->rx_header_need == USBIP_OP_COMMON_SIZE) {
                r = usbip_op_common_decode(c->rx_header, USBIP_OP_COMMON_SIZE, &op, &error);
                if (r < 0)
                        return log_warning_errno(r, "%s: bad management request (version 0x%04x, code 0x%04x): %s",
                                                 c->peer, op.version, op.code, error);
                c->rx_op_code = op.code;
                switch (op.code) {
                case USBIP_OP_REQ_DEVLIST:
                        return handle_devlist(c);
                case USBIP_OP_REQ_IMPORT:
                        /* The busid follows; read it into the same header buffer. */
                        c->rx_header_need = USBIP_OP_COMMON_SIZE + USBIP_OP_IMPORT_REQ_SIZE;
                        return 0;
                case USBIP_OP_REQ_DEVINFO:
                case USBIP_OP_REP_DEVINFO:
                case USBIP_OP_REP_IMPORT:
                case USBIP_OP_REP_DEVLIST:
                        break;
                }
                return log_warning_errno(EOPNOTSUPP, "%s: unsupported management request %s (0x%04x)", c->peer,
                                         usbip_op_code_to_string(op.code) ?: "unknown", op.code);
        }

        char busid[USBIP_BUSID_SIZE];
        r = usbip_op_import_request_decode(c->rx_header + USBIP_OP_COMMON_SIZE, USBIP_OP_IMPORT_REQ_SIZE, busid,
                                           &error);
        if (r < 0)
                return log_warning_errno(r, "%s: bad import request: %s", c->peer, error);
        return handle_import(c, busid);
}

static int submit_urb(Connection *c, Urb *u) {
        uint64_t now = 0;
        int r;

        c->submits++;
        (void) sd_event_now(c->server->event, CLOCK_MONOTONIC, &now);
        r = usb_device_submit(export_target(c->export), u, now);
        if (r < 0) {
                c->urb_bytes -= u->length;
                urb_free(u);
                return log_warning_errno(r, "%s: %s has too many URBs waiting (%u): a broken or hostile client",
                                         c->peer, export_target(c->export)->name, export_target(c->export)->n_pending);
        }
        return 0;
}

static int handle_urb_header(Connection *c) {
        UsbipHeader h = {};
        const char *error = NULL;
        int r;

        r = usbip_header_decode(c->rx_header, USBIP_HEADER_SIZE, &h, &error);
        if (r < 0)
                return log_warning_errno(r, "%s: malformed USB/IP header (command %u, seqnum %u): %s", c->peer,
                                         h.command, h.seqnum, error);

        switch ((UsbipCommand) h.command) {
        case USBIP_CMD_SUBMIT: {
                _cleanup_(urb_freep) Urb *u = NULL;
                bool in = h.direction == USBIP_DIR_IN;
                uint32_t length = h.u.cmd_submit.transfer_buffer_length;

                if (h.u.cmd_submit.number_of_packets > 0)
                        /* None of our devices has an isochronous endpoint, and vhci only sends ISO
                         * packets to one; anything else is not a kernel talking to us. */
                        return log_warning_errno(EPROTO, "%s: isochronous CMD_SUBMIT (%d packets) to endpoint %u, "
                                                 "which is not isochronous", c->peer,
                                                 h.u.cmd_submit.number_of_packets, h.ep);
                if (usb_device_find_pending(export_target(c->export), h.seqnum))
                        return log_warning_errno(EPROTO, "%s: CMD_SUBMIT reuses seqnum %u of a waiting URB",
                                                 c->peer, h.seqnum);
                if (c->urb_bytes + length > CONNECTION_MAX_URB_BYTES)
                        return log_warning_errno(ENOBUFS, "%s: outstanding URBs would hold more than %u MiB",
                                                 c->peer, CONNECTION_MAX_URB_BYTES >> 20);

                r = urb_new(h.seqnum, h.ep, in, length, &u);
                if (r < 0)
                        return log_error_errno(r, "%s: cannot allocate URB: %m", c->peer);
                u->transfer_flags = h.u.cmd_submit.transfer_flags;
                u->number_of_packets = h.u.cmd_submit.number_of_packets;
                memcpy(u->setup, h.u.cmd_submit.setup, sizeof(u->setup));
                u->complete = on_urb_complete;
                u->userdata = c;
                c->urb_bytes += length;

                if (!in && length > 0) {
                        r = urb_ensure_buffer(u);
                        if (r < 0) {
                                c->urb_bytes -= length;
                                return log_error_errno(r, "%s: cannot allocate %u bytes: %m", c->peer, length);
                        }
                        c->rx_urb = TAKE_PTR(u);
                        c->rx_payload = urb_data(c->rx_urb);
                        c->rx_payload_need = length;
                        c->rx_payload_got = 0;
                        return 0;
                }
                r = submit_urb(c, TAKE_PTR(u));
                expect_header(c, USBIP_HEADER_SIZE);
                return r;
        }

        case USBIP_CMD_UNLINK: {
                Urb *u = urb_queue_find(&c->held, h.u.cmd_unlink.seqnum);
                if (u)
                        urb_queue_remove(&c->held, u);
                else
                        u = usb_device_unlink(export_target(c->export), h.u.cmd_unlink.seqnum);
                if (!u && c->export->zombie)
                        u = usb_device_unlink(c->export->zombie == export_target(c->export) ? c->export->device
                                                                                              : c->export->zombie,
                                              h.u.cmd_unlink.seqnum);
                c->unlinks++;
                if (u) {
                        c->urb_bytes -= u->length;
                        urb_free(u);
                        log_debug("%s: unlinked waiting URB %u", c->peer, h.u.cmd_unlink.seqnum);
                }
                /* -ECONNRESET when we cancelled it; 0 when it already completed (its RET_SUBMIT is ahead
                 * of this reply in the stream), as usbip-host answers. */
                r = send_ret_unlink(c, h.seqnum, u ? -ECONNRESET : 0);
                expect_header(c, USBIP_HEADER_SIZE);
                return r;
        }

        case USBIP_RET_SUBMIT:
        case USBIP_RET_UNLINK:
                break;
        }
        return log_warning_errno(EPROTO, "%s: %s from the client: only a server sends that", c->peer,
                                 usbip_command_to_string(h.command) ?: "unknown command");
}

/* Reads and handles up to RX_BUDGET PDUs. Returns 0 to go on, 1 to close once the queue is written,
 * <0 to close now. */
static int receive(Connection *c) {
        for (unsigned budget = RX_BUDGET; budget > 0 && !c->reading_paused;) {
                uint8_t *dst;
                size_t want;
                ssize_t k;
                int r;

                if (c->rx_payload_need > 0) {
                        dst = c->rx_payload + c->rx_payload_got;
                        want = c->rx_payload_need - c->rx_payload_got;
                } else {
                        dst = c->rx_header + c->rx_header_got;
                        want = c->rx_header_need - c->rx_header_got;
                }

                k = read(c->fd, dst, want);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        return log_info_errno(errno, "%s: read failed: %m", c->peer);
                }
                if (k == 0) {
                        if (c->rx_header_got > 0 || c->rx_payload_need > 0)
                                log_warning("%s: connection closed in the middle of a PDU", c->peer);
                        else
                                log_info("%s: connection closed by the peer", c->peer);
                        return -ECONNRESET;
                }

                /* A short read means the socket is drained: wait for epoll rather than read() once more
                 * only to hear EAGAIN. */
                if (c->rx_payload_need > 0) {
                        c->rx_payload_got += (size_t) k;
                        if (c->rx_payload_got < c->rx_payload_need)
                                return 0;
                        Urb *u = TAKE_PTR(c->rx_urb);
                        expect_header(c, USBIP_HEADER_SIZE);
                        r = submit_urb(c, u);
                        budget--;
                } else {
                        c->rx_header_got += (size_t) k;
                        if (c->rx_header_got < c->rx_header_need)
                                return 0;
                        if (c->phase == CONNECTION_PHASE_OP) {
                                size_t before = c->rx_header_need;
                                r = handle_op_header(c);
                                /* An import request grows the header; keep reading it. */
                                if (r == 0 && c->phase == CONNECTION_PHASE_OP && c->rx_header_need > before)
                                        continue;
                        } else
                                r = handle_urb_header(c);
                        budget--;
                }
                if (r != 0)
                        return r;
        }
        return 0;
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Connection *c = userdata;
        int r = 0;

        c->dispatching = true;
        if ((revents & EPOLLIN) && !c->closing) {
                r = receive(c);
                if (r == 1) {
                        /* Say what we have to say, then hang up: management connections end here. */
                        c->closing = true;
                        r = 0;
                }
        }
        if (r >= 0 && c->tx_head) {
                r = flush_tx(c);
                if (r < 0)
                        log_info_errno(r, "%s: write failed: %m", c->peer);
        }
        if (r >= 0 && c->closing && !c->tx_head)
                r = -ECONNRESET; /* the final management reply is out */
        if (r >= 0 && (revents & (EPOLLHUP | EPOLLERR)) && !(revents & EPOLLIN))
                r = -ECONNRESET;

        c->dispatching = false;
        if (r < 0)
                connection_free(c);
        else
                update_events(c);
        return 0;
}

static int on_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        Connection *c = userdata;

        log_warning("%s: no complete management request within %llu s, closing", c->peer,
                    (unsigned long long) (CONNECTION_OP_TIMEOUT_USEC / 1000000));
        connection_free(c);
        return 0;
}

int connection_new(Server *s, int fd, ConnectionPhase phase, const char *peer, Connection **ret) {
        Connection *c;
        int r;

        c = calloc(1, sizeof(Connection));
        if (!c)
                return -ENOMEM;
        c->server = s;
        c->fd = fd;
        c->phase = phase;
        c->peer = strdup(peer);
        if (!c->peer) {
                free(c);
                return -ENOMEM;
        }
        expect_header(c, phase == CONNECTION_PHASE_OP ? USBIP_OP_COMMON_SIZE : USBIP_HEADER_SIZE);

        r = sd_event_add_io(s->event, &c->io_source, fd, EPOLLIN, on_io, c);
        if (r < 0)
                goto fail;
        if (phase == CONNECTION_PHASE_OP) {
                /* Slowloris: a management peer that trickles bytes or says nothing is cut off. */
                r = sd_event_add_time_relative(s->event, &c->timeout_source, CLOCK_MONOTONIC,
                                               CONNECTION_OP_TIMEOUT_USEC, 0, on_timeout, c);
                if (r < 0)
                        goto fail;
        }

        c->next = s->connections;
        if (s->connections)
                s->connections->prev = c;
        s->connections = c;
        s->n_connections++;

        *ret = c;
        return 0;

fail:
        c->fd = -EBADF; /* the caller still owns fd */
        connection_free(c);
        return r;
}

Connection *connection_free(Connection *c) {
        if (!c)
                return NULL;

        if (c->server) {
                if (c->prev)
                        c->prev->next = c->next;
                else if (c->server->connections == c)
                        c->server->connections = c->next;
                if (c->next)
                        c->next->prev = c->prev;
                c->server->n_connections--;
                server_connection_gone(c->server, c);
        }
        if (c->export) {
                usb_device_drop_pending(c->export->device);
                if (c->export->zombie)
                        usb_device_drop_pending(c->export->zombie);
                c->export->connection = NULL;
        }

        urb_free(c->rx_urb);
        for (Urb *u; (u = urb_queue_pop(&c->held));)
                urb_free(u);
        sd_event_source_disable_unref(c->held_timer);
        while (c->tx_head) {
                TxItem *t = c->tx_head;
                c->tx_head = t->next;
                tx_item_free(c, t);
        }
        sd_event_source_disable_unref(c->io_source);
        sd_event_source_disable_unref(c->timeout_source);
        safe_close(c->fd);
        free(c->peer);
        return mfree(c);
}
