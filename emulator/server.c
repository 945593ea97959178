/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>

#include "log.h"
#include "server.h"
#include "hub.h"
#include "vhci-attach.h"

#define USBIP_DEFAULT_PORT "3240"

int server_new(sd_event *event, Server **ret) {
        Server *s = calloc(1, sizeof(Server));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->listen_fd = -EBADF;
        s->max_connections = SERVER_DEFAULT_MAX_CONNECTIONS;
        *ret = s;
        return 0;
}

static Export *export_free(Export *e) {
        if (!e)
                return NULL;
        /* A child leaves its hub before it goes, so the hub never points at a freed device. */
        if (e->hub_export) {
                Hub *h = hub_from_device(e->hub_export->device);
                if (h && hub_get_child(h, e->hub_port) == e->device)
                        (void) hub_unplug(h, e->hub_port, 0);
        }
        usb_device_free(e->device);
        usb_device_free(e->zombie);
        return mfree(e);
}

Server *server_free(Server *s) {
        if (!s)
                return NULL;
        while (s->connections)
                connection_free(s->connections);
        /* Newest first: children go before the hubs they were added to. */
        for (size_t i = s->n_exports; i-- > 0;) {
                if (s->exports[i]->vhci_port >= 0)
                        (void) server_detach_local(s, s->exports[i]);
                export_free(s->exports[i]);
        }
        sd_event_source_disable_unref(s->listen_source);
        safe_close(s->listen_fd);
        sd_event_unref(s->event);
        free(s->allow);
        return mfree(s);
}

int server_set_allow(Server *s, const InAddrPrefix *allow, size_t n) {
        InAddrPrefix *copy = NULL;

        if (n > 0) {
                copy = calloc(n, sizeof(InAddrPrefix));
                if (!copy)
                        return -ENOMEM;
                memcpy(copy, allow, n * sizeof(InAddrPrefix));
        }
        free(s->allow);
        s->allow = copy;
        s->n_allow = n;
        return 0;
}

int server_set_max_connections(Server *s, unsigned n) {
        if (n < 1 || n > SERVER_MAX_CONNECTIONS)
                return -ERANGE;
        s->max_connections = n;
        return 0;
}

bool server_peer_allowed(const Server *s, const struct sockaddr *sa, socklen_t salen) {
        if (s->n_allow == 0)
                return true;
        for (size_t i = 0; i < s->n_allow; i++)
                if (in_addr_prefix_match(&s->allow[i], sa, salen))
                        return true;
        return false;
}

void server_connection_gone(Server *s, Connection *c) {
        Export *e = c->export;

        if (e && e->vhci_port >= 0) {
                /* The kernel closed its end (detach from outside, or vhci gave up on the device). */
                log_info("%s: %s detached from vhci port %d", e->device->name, e->busid, e->vhci_port);
                e->vhci_port = -1;
        }
}

Export *server_find_export(Server *s, const char *busid) {
        for (size_t i = 0; i < s->n_exports; i++)
                if (streq(s->exports[i]->busid, busid))
                        return s->exports[i];
        return NULL;
}

Export *server_lookup(Server *s, const char *name_or_busid) {
        for (size_t i = 0; i < s->n_exports; i++)
                if (streq(s->exports[i]->device->name, name_or_busid))
                        return s->exports[i];
        return server_find_export(s, name_or_busid);
}

int server_add_device(Server *s, UsbDevice *d, Export **ret) {
        Export *e;
        uint32_t devnum = 1;

        if (s->n_exports >= SERVER_MAX_EXPORTS)
                return -E2BIG;
        if (server_lookup(s, d->name))
                return -EEXIST;
        /* Lowest free device number, so busids stay stable when devices come and go. */
        for (bool taken = true; taken; ) {
                taken = false;
                for (size_t i = 0; i < s->n_exports; i++)
                        if (s->exports[i]->devnum == devnum) {
                                taken = true;
                                devnum++;
                        }
        }

        e = calloc(1, sizeof(Export));
        if (!e)
                return -ENOMEM;
        e->server = s;
        e->busnum = 1;
        e->devnum = devnum;
        e->vhci_port = -1;
        e->controller = -1;
        snprintf(e->busid, sizeof(e->busid), "%u-%u", e->busnum, e->devnum);
        e->device = d;
        s->exports[s->n_exports++] = e;
        if (ret)
                *ret = e;
        return 0;
}

int server_remove_export(Server *s, Export *e) {
        for (size_t i = 0; i < s->n_exports; i++) {
                if (s->exports[i] != e)
                        continue;
                if (e->connection)
                        connection_free(e->connection);
                if (e->vhci_port >= 0)
                        (void) server_detach_local(s, e);
                memmove(s->exports + i, s->exports + i + 1, (s->n_exports - i - 1) * sizeof(Export *));
                s->n_exports--;
                export_free(e);
                return 0;
        }
        return -ENOENT;
}

void server_fill_usbip_device(const Export *e, UsbipUsbDevice *ret) {
        const UsbDevice *d = e->device;
        const UsbConfigDesc *cfg = d->desc.configs;

        *ret = (UsbipUsbDevice) {
                .busnum = e->busnum,
                .devnum = e->devnum,
                .speed = d->speed,
                .idVendor = d->desc.idVendor,
                .idProduct = d->desc.idProduct,
                .bcdDevice = d->desc.bcdDevice,
                .bDeviceClass = d->desc.bDeviceClass,
                .bDeviceSubClass = d->desc.bDeviceSubClass,
                .bDeviceProtocol = d->desc.bDeviceProtocol,
                .bConfigurationValue = d->configuration,
                .bNumConfigurations = d->desc.bNumConfigurations,
                .bNumInterfaces = cfg ? cfg->bNumInterfaces : 0,
        };
        snprintf(ret->path, sizeof(ret->path), "/sys/devices/drowse/%s", e->busid);
        snprintf(ret->busid, sizeof(ret->busid), "%s", e->busid);
}

static int on_accept(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Server *s = userdata;
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?", peer[NI_MAXHOST + NI_MAXSERV + 4];
        Connection *c;
        int cfd, r, one = 1;

        cfd = accept4(fd, (struct sockaddr *) &sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
                if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                        log_warning_errno(errno, "accept() failed: %m");
                return 0;
        }
        (void) getnameinfo((struct sockaddr *) &sa, salen, host, sizeof(host), serv, sizeof(serv),
                           NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(peer, sizeof(peer), sa.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);

        if (!server_peer_allowed(s, (struct sockaddr *) &sa, salen)) {
                log_warning("%s: refused: not in an allowed client network (--allow)", peer);
                safe_close(cfd);
                return 0;
        }
        if (s->n_connections >= s->max_connections) {
                log_warning("%s: refused, already %u connections (--max-connections)", peer,
                            s->n_connections);
                safe_close(cfd);
                return 0;
        }
        /* URB headers are small and latency-bound: do not let Nagle hold them back. */
        (void) setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

        r = connection_new(s, cfd, CONNECTION_PHASE_OP, peer, &c);
        if (r < 0) {
                log_error_errno(r, "%s: cannot set up connection: %m", peer);
                safe_close(cfd);
                return 0;
        }
        log_debug("%s: connected", peer);
        return 0;
}

static int parse_address(const char *address, char **ret_host, char **ret_port) {
        _cleanup_free_ char *copy = strdup(address);
        char *host = copy, *port = NULL;

        if (!copy)
                return -ENOMEM;
        if (host[0] == '[') {
                char *end = strchr(host, ']');
                if (!end)
                        return -EINVAL;
                *end = 0;
                host++;
                if (end[1] == ':')
                        port = end + 2;
                else if (end[1] != 0)
                        return -EINVAL;
        } else {
                char *colon = strrchr(host, ':');
                if (colon && strchr(host, ':') == colon) {
                        *colon = 0;
                        port = colon + 1;
                }
        }
        *ret_host = strdup(host[0] ? host : "127.0.0.1");
        *ret_port = strdup(port && port[0] ? port : USBIP_DEFAULT_PORT);
        if (!*ret_host || !*ret_port)
                return -ENOMEM;
        return 0;
}

int server_listen(Server *s, const char *address) {
        _cleanup_free_ char *host = NULL, *port = NULL;
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
        struct addrinfo *ai = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r, one = 1;

        r = parse_address(address, &host, &port);
        if (r < 0)
                return log_error_errno(r, "Invalid listen address '%s': expected ADDR[:PORT], [ADDR6]:PORT or :PORT",
                                       address);
        r = getaddrinfo(host, port, &hints, &ai);
        if (r != 0)
                return log_error_errno(EINVAL, "Invalid listen address '%s': %s", address, gai_strerror(r));

        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                r = negative_errno();
                freeaddrinfo(ai);
                return log_error_errno(r, "Cannot create socket: %m");
        }
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
                r = negative_errno();
                freeaddrinfo(ai);
                return log_error_errno(r, "Cannot listen on %s:%s: %m", host, port);
        }
        freeaddrinfo(ai);
        /* A deep accept queue: during a connection flood a short one makes the kernel drop SYNs, and a
         * well-behaved client then waits out SYN retransmits (1 s, 3 s, ...) before we ever see it. The
         * kernel bounds it (net.core.somaxconn); --max-connections bounds what we hold. */
        if (listen(fd, SOMAXCONN) < 0)
                return log_error_errno(errno, "listen() failed: %m");

        r = sd_event_add_io(s->event, &s->listen_source, fd, EPOLLIN, on_accept, s);
        if (r < 0)
                return log_error_errno(r, "Cannot watch listening socket: %m");
        s->listen_fd = TAKE_FD(fd);
        log_info("Listening for USB/IP clients on %s:%s", host, port);
        return 0;
}

int server_attach_local(Server *s, Export *e, int vhci_port) {
        _cleanup_close_ int ours = -EBADF, kernels = -EBADF;
        int pair[2], r;
        char peer[64];
        Connection *c;

        if (e->connection)
                return log_error_errno(EBUSY, "%s: already imported by %s", e->busid, e->connection->peer);

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
                return log_error_errno(errno, "socketpair() failed: %m");
        ours = pair[0];
        kernels = pair[1];
        if (fcntl(ours, F_SETFL, O_NONBLOCK) < 0)
                return log_error_errno(errno, "Cannot make socket non-blocking: %m");

        snprintf(peer, sizeof(peer), "vhci port %d", vhci_port);
        r = connection_new(s, ours, CONNECTION_PHASE_URB, peer, &c);
        if (r < 0)
                return log_error_errno(r, "Cannot set up local connection: %m");
        TAKE_FD(ours);
        connection_bind_export(c, e);

        r = vhci_attach(vhci_port, kernels, (e->busnum << 16) | e->devnum, e->device->speed);
        if (r < 0) {
                connection_free(c);
                return log_error_errno(r, "%s: attaching to vhci port %d failed: %m%s", e->busid, vhci_port,
                                       r == -EBUSY ? " (port in use)" :
                                       r == -ENOENT ? " (is vhci-hcd loaded?)" : "");
        }
        /* The kernel holds its own reference to its end now. */
        e->vhci_port = vhci_port;
        log_info("%s: %s attached to vhci port %d (%s speed)", e->device->name, e->busid, vhci_port,
                 usb_speed_to_string(e->device->speed));
        return 0;
}

int server_attach_auto(Server *s, Export *e, int controller) {
        VhciLayout layout;
        int port, r;

        r = vhci_read_layout(&layout);
        if (r < 0)
                return log_error_errno(r, "Cannot use vhci_hcd: %m%s",
                                       r == -ENODEV ? " (load it with: modprobe vhci-hcd)" : "");
        r = vhci_find_free_port(&layout, e->device->speed, controller, &port);
        if (r < 0)
                return log_error_errno(r, "No free %s vhci port for %s%s: %m",
                                       usb_speed_is_super(e->device->speed) ? "SuperSpeed" : "high-speed",
                                       e->device->name, controller >= 0 ? " on the chosen controller" : "");
        return server_attach_local(s, e, port);
}

int server_detach_local(Server *s, Export *e) {
        int port = e->vhci_port, r;

        if (port < 0)
                return 0;
        e->vhci_port = -1;
        r = vhci_detach(port);
        /* -EINVAL: the port is no longer connected, which is what we wanted. */
        if (r < 0 && r != -EINVAL)
                return log_warning_errno(r, "%s: detaching vhci port %d failed: %m", e->busid, port);
        log_info("%s: %s detached from vhci port %d", e->device->name, e->busid, port);
        return 0;
}
