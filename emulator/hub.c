/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "hub.h"
#include "json.h"
#include "log.h"

#define HUB_STATUS_EP (USB_DIR_IN | 1)

typedef struct HubPort {
        uint16_t status, change;
        UsbDevice *child;
        uint64_t resume_done_usec;    /* a slow resume (fault) completes at this time; 0 if none */
} HubPort;

struct Hub {
        UsbDevice *device;            /* the hub itself */
        HubOptions options;
        HubPort ports[USB_HUB_MAX_PORTS + 1]; /* 1-based, as the wire numbers them */
        uint16_t hub_status, hub_change;
        HubPortResetFunc port_reset;
        void *port_reset_userdata;
        HubStats stats;
        UsbEndpointDesc endpoint;
        UsbInterfaceDesc interface;
        UsbConfigDesc config;
};

enum {
        HUB_STRING_MANUFACTURER = 1,
        HUB_STRING_PRODUCT,
        HUB_STRING_SERIAL,
};

static const UsbHubDesc *hub_descriptor(const Hub *h, UsbHubDesc *d) {
        *d = (UsbHubDesc) {
                .bNbrPorts = (uint8_t) h->options.n_ports,
                /* Per-port power switching and over-current reporting, as the kernel expects of a real
                 * hub; no TT think time beyond the minimum. */
                .wHubCharacteristics = USB_HUB_CHAR_LPSM_INDV | USB_HUB_CHAR_OCPM_INDV,
                .bPwrOn2PwrGood = 10, /* 20 ms */
                .bHubContrCurrent = 0,
        };
        return d;
}

static bool port_valid(const Hub *h, unsigned port) {
        return port >= 1 && port <= h->options.n_ports;
}


/* A change bit was set: the status-change URB, if one waits, completes now. */
static void changed(Hub *h) {
        usb_device_kick(h->device);
}

static void set_change(Hub *h, HubPort *p, uint16_t bit) {
        p->change |= bit;
        changed(h);
}

/* What a powered port with a device on it reports. */
static void port_connect(Hub *h, HubPort *p) {
        if (!p->child || !(p->status & USB_PORT_STAT_POWER) || (p->status & USB_PORT_STAT_CONNECTION))
                return;
        p->status |= USB_PORT_STAT_CONNECTION;
        set_change(h, p, USB_PORT_STAT_C_CONNECTION);
}

static void port_disconnect(Hub *h, HubPort *p, uint64_t now) {
        if (!(p->status & USB_PORT_STAT_CONNECTION))
                return;
        p->status &= (uint16_t) ~(USB_PORT_STAT_CONNECTION | USB_PORT_STAT_ENABLE | USB_PORT_STAT_SUSPEND |
                                  USB_PORT_STAT_HIGH_SPEED | USB_PORT_STAT_LOW_SPEED);
        p->resume_done_usec = 0;
        set_change(h, p, USB_PORT_STAT_C_CONNECTION);
}

/* Without power the child forgets everything: it comes back unconfigured, not suspended. */
static void port_power_lost(HubPort *p, uint64_t now) {
        p->resume_done_usec = 0;
        if (p->child) {
                usb_device_set_link(p->child, USB_LINK_CONNECTED, now);
                usb_device_bus_reset(p->child);
        }
}

static int port_set_feature(Hub *h, unsigned port, uint16_t feature) {
        HubPort *p = &h->ports[port];
        uint64_t now = usb_device_now_usec();

        switch (feature) {
        case USB_PORT_FEAT_POWER:
                /* An injected over-current was a moment's short: power comes back. */
                p->status &= (uint16_t) ~USB_PORT_STAT_OVERCURRENT;
                p->status |= USB_PORT_STAT_POWER;
                port_connect(h, p);
                return 0;

        case USB_PORT_FEAT_RESET:
                h->stats.port_resets++;
                if (!(p->status & USB_PORT_STAT_CONNECTION)) {
                        /* Nothing to enable; the reset still "completes". */
                        set_change(h, p, USB_PORT_STAT_C_RESET);
                        return 0;
                }
                p->status &= (uint16_t) ~(USB_PORT_STAT_SUSPEND | USB_PORT_STAT_RESET | USB_PORT_STAT_LOW_SPEED |
                                          USB_PORT_STAT_HIGH_SPEED);
                p->resume_done_usec = 0;
                p->status |= USB_PORT_STAT_ENABLE;
                if (p->child->speed == USB_SPEED_HIGH)
                        p->status |= USB_PORT_STAT_HIGH_SPEED;
                else if (p->child->speed == USB_SPEED_LOW)
                        p->status |= USB_PORT_STAT_LOW_SPEED;
                usb_device_set_link(p->child, USB_LINK_CONNECTED, now);
                usb_device_bus_reset(p->child);
                log_debug("%s: port %u reset, %s enabled", h->device->name, port, p->child->name);
                if (h->port_reset)
                        h->port_reset(h, port, p->child, h->port_reset_userdata);
                set_change(h, p, USB_PORT_STAT_C_RESET);
                return 0;

        case USB_PORT_FEAT_SUSPEND:
                if (!(p->status & USB_PORT_STAT_ENABLE))
                        return 0; /* suspending a disabled port does nothing */
                p->status |= USB_PORT_STAT_SUSPEND;
                h->stats.port_suspends++;
                log_info("%s: port %u suspended (%s)%s", h->device->name, port, p->child->name,
                         p->child->remote_wakeup ? ", remote wakeup armed" : "");
                usb_device_set_link(p->child, USB_LINK_SUSPENDED, now);
                return 0;

        case USB_PORT_FEAT_ENABLE:      /* only the hub enables a port (after a reset) */
        case USB_PORT_FEAT_INDICATOR:
        case USB_PORT_FEAT_TEST:
                return 0;

        default:
                return -EPIPE;
        }
}

static void port_resume(Hub *h, unsigned port, uint64_t now) {
        HubPort *p = &h->ports[port];

        p->status &= (uint16_t) ~USB_PORT_STAT_SUSPEND;
        p->resume_done_usec = 0;
        h->stats.port_resumes++;
        usb_device_set_link(p->child, USB_LINK_CONNECTED, now);
        if (fault_fire(p->child, FAULT_RESUME_RESET, now,
                       "port %u resumes disabled: the device lost its address and configuration", port)) {
                /* No C_ENABLE: the kernel would take that for EMI and re-enumerate instead. */
                p->status &= (uint16_t) ~USB_PORT_STAT_ENABLE;
                usb_device_bus_reset(p->child);
        }
        set_change(h, p, USB_PORT_STAT_C_SUSPEND);
}

/* The host's ClearPortFeature(SUSPEND), and what injected faults make of it. */
static void port_host_resume(Hub *h, unsigned port, uint64_t now) {
        HubPort *p = &h->ports[port];
        Fault *slow;

        if (fault_fire(p->child, FAULT_UNPLUG_RESUME, now, "unplugged from port %u as the host resumed it", port)) {
                (void) hub_unplug(h, port, now);
                return;
        }
        if (fault_fire(p->child, FAULT_RESUME_STUCK, now, "port %u stays suspended", port))
                return;
        slow = fault_find(p->child, FAULT_RESUME_SLOW);
        if (slow && fault_fire_one(p->child, slow, now, "port %u resumes %" PRIu64 " ms late", port,
                                   slow->params.delay_usec / 1000)) {
                p->resume_done_usec = now + MAX(slow->params.delay_usec, 1);
                return;
        }
        log_info("%s: port %u resumed by the host (%s)", h->device->name, port, p->child->name);
        port_resume(h, port, now);
}

static int port_clear_feature(Hub *h, unsigned port, uint16_t feature) {
        HubPort *p = &h->ports[port];
        uint64_t now = usb_device_now_usec();

        switch (feature) {
        case USB_PORT_FEAT_ENABLE:
                p->status &= (uint16_t) ~(USB_PORT_STAT_ENABLE | USB_PORT_STAT_SUSPEND);
                p->resume_done_usec = 0;
                if (p->child && p->child->link == USB_LINK_SUSPENDED)
                        usb_device_set_link(p->child, USB_LINK_CONNECTED, now);
                return 0;

        case USB_PORT_FEAT_SUSPEND:
                if ((p->status & USB_PORT_STAT_SUSPEND) && !p->resume_done_usec)
                        port_host_resume(h, port, now);
                return 0;

        case USB_PORT_FEAT_POWER:
                /* Unpowered, the device is gone until power returns; then it needs a reset. It lost its
                 * state with the power, as on over-current. */
                if (p->status & USB_PORT_STAT_CONNECTION)
                        port_disconnect(h, p, now);
                p->status &= (uint16_t) ~USB_PORT_STAT_POWER;
                port_power_lost(p, now);
                return 0;

        case USB_PORT_FEAT_C_CONNECTION:
                p->change &= (uint16_t) ~USB_PORT_STAT_C_CONNECTION;
                return 0;
        case USB_PORT_FEAT_C_ENABLE:
                p->change &= (uint16_t) ~USB_PORT_STAT_C_ENABLE;
                return 0;
        case USB_PORT_FEAT_C_SUSPEND:
                p->change &= (uint16_t) ~USB_PORT_STAT_C_SUSPEND;
                return 0;
        case USB_PORT_FEAT_C_OVER_CURRENT:
                p->change &= (uint16_t) ~USB_PORT_STAT_C_OVERCURRENT;
                return 0;
        case USB_PORT_FEAT_C_RESET:
                p->change &= (uint16_t) ~USB_PORT_STAT_C_RESET;
                return 0;
        case USB_PORT_FEAT_INDICATOR:
                return 0;

        default:
                return -EPIPE;
        }
}

static int hub_control(void *function, const UsbSetup *s, uint8_t *data, size_t size) {
        Hub *h = function;
        uint8_t recipient = usb_setup_recipient(s);
        unsigned port = s->wIndex & 0xff;
        UsbHubDesc desc;
        int r;

        if (usb_setup_type(s) != USB_TYPE_CLASS)
                return -EPIPE;

        switch (s->bRequest) {
        case USB_REQ_GET_DESCRIPTOR:
                if (recipient != USB_RECIP_DEVICE || (s->wValue >> 8) != USB_DT_HUB)
                        return -EPIPE;
                r = usb_desc_encode_hub(hub_descriptor(h, &desc), data, size);
                return r < 0 ? -EPIPE : (int) MIN((size_t) r, MIN(size, s->wLength));

        case USB_REQ_GET_STATUS:
                if (s->wLength != 4 || size < 4)
                        return -EPIPE;
                if (recipient == USB_RECIP_DEVICE) {
                        put_le16(data, h->hub_status);
                        put_le16(data + 2, h->hub_change);
                        return 4;
                }
                if (recipient != USB_RECIP_OTHER || !port_valid(h, port))
                        return -EPIPE;
                if (h->ports[port].resume_done_usec && usb_device_now_usec() >= h->ports[port].resume_done_usec) {
                        log_info("%s: port %u finished its slow resume", h->device->name, port);
                        port_resume(h, port, usb_device_now_usec());
                }
                put_le16(data, h->ports[port].status);
                put_le16(data + 2, h->ports[port].change);
                return 4;

        case USB_REQ_SET_FEATURE:
        case USB_REQ_CLEAR_FEATURE:
                if (recipient == USB_RECIP_DEVICE) {
                        /* C_HUB_LOCAL_POWER, C_HUB_OVER_CURRENT: nothing ever sets them. */
                        if (s->bRequest == USB_REQ_CLEAR_FEATURE && s->wValue <= USB_HUB_FEAT_C_OVER_CURRENT) {
                                h->hub_change &= (uint16_t) ~(1u << s->wValue);
                                return 0;
                        }
                        return -EPIPE;
                }
                if (recipient != USB_RECIP_OTHER || !port_valid(h, port))
                        return -EPIPE;
                return s->bRequest == USB_REQ_SET_FEATURE ? port_set_feature(h, port, s->wValue)
                                                          : port_clear_feature(h, port, s->wValue);

        case USB_REQ_CLEAR_TT_BUFFER:
        case USB_REQ_RESET_TT:
        case USB_REQ_STOP_TT:
                /* Our TT has nothing buffered: full/low-speed traffic never really crosses it. */
                return 0;

        default:
                return -EPIPE;
        }
}

static bool hub_in_ready(void *function, uint8_t ep) {
        Hub *h = function;

        if (h->hub_change)
                return true;
        for (unsigned p = 1; p <= h->options.n_ports; p++)
                if (h->ports[p].change)
                        return true;
        return false;
}

static ssize_t hub_transfer(void *function, uint8_t ep, uint8_t *data, size_t size) {
        Hub *h = function;
        size_t n = DIV_ROUND_UP(h->options.n_ports + 1, 8);

        if (ep != HUB_STATUS_EP)
                return -EPIPE;
        if (!hub_in_ready(h, ep))
                return -EAGAIN;
        n = MIN(n, size);
        if (n == 0)
                return -EOVERFLOW; /* no room for even the first status byte: babble */
        memset(data, 0, n);
        if (h->hub_change)
                data[0] |= 1;
        for (unsigned p = 1; p <= h->options.n_ports; p++)
                if (h->ports[p].change && p / 8 < n)
                        data[p / 8] |= (uint8_t) (1u << (p % 8));
        h->stats.status_reports++;
        return (ssize_t) n;
}

static void hub_bus_reset(void *function) {
        Hub *h = function;
        uint64_t now = usb_device_now_usec();

        /* The hub lost its configuration: every port is unpowered again, children off the bus. */
        for (unsigned p = 1; p <= h->options.n_ports; p++) {
                HubPort *port = &h->ports[p];
                port->status = 0;
                port->change = 0;
                if (port->child && port->child->link == USB_LINK_SUSPENDED)
                        usb_device_set_link(port->child, USB_LINK_CONNECTED, now);
        }
        h->hub_status = h->hub_change = 0;
}

static int child_wakeup(UsbDevice *child, void *userdata) {
        Hub *h = userdata;

        for (unsigned p = 1; p <= h->options.n_ports; p++) {
                if (h->ports[p].child != child)
                        continue;
                if (!(h->ports[p].status & USB_PORT_STAT_SUSPEND))
                        return -EAGAIN;
                if (fault_fire(child, FAULT_WAKEUP_LOST, usb_device_now_usec(), "wakeup on port %u never reported", p))
                        return 0;
                h->stats.remote_wakeups++;
                /* Resume signalling, then the port reports C_PORT_SUSPEND with SUSPEND clear. If the
                 * hub itself is suspended nothing waits on its status endpoint: the change is held
                 * until the host resumes the hub (kernel-deep-dive §2.4). */
                if (h->device->n_pending == 0) {
                        h->stats.wakeups_held++;
                        log_notice("%s: %s signals wakeup on port %u, but no status URB waits (hub suspended?): "
                                   "held until the host polls the hub", h->device->name, child->name, p);
                } else
                        log_info("%s: %s signals remote wakeup on port %u", h->device->name, child->name, p);
                port_resume(h, p, usb_device_now_usec());
                return 0;
        }
        return -ENODEV;
}

int hub_plug(Hub *h, unsigned port, UsbDevice *child, uint64_t now) {
        HubPort *p;

        if (!port_valid(h, port))
                return -ERANGE;
        p = &h->ports[port];
        if (p->child)
                return -EBUSY;
        p->child = child;
        child->wakeup = child_wakeup;
        child->wakeup_userdata = h;
        usb_device_set_link(child, USB_LINK_CONNECTED, now);
        child->state = USB_DEVICE_STATE_DEFAULT;
        port_connect(h, p);
        log_info("%s: %s plugged into port %u", h->device->name, child->name, port);
        return 0;
}

UsbDevice *hub_unplug(Hub *h, unsigned port, uint64_t now) {
        HubPort *p;
        UsbDevice *child;

        if (!port_valid(h, port) || !h->ports[port].child)
                return NULL;
        p = &h->ports[port];
        child = p->child;
        port_disconnect(h, p, now);
        p->child = NULL;
        child->wakeup = NULL;
        child->wakeup_userdata = NULL;
        usb_device_set_link(child, USB_LINK_UNPLUGGED, now);
        log_info("%s: %s unplugged from port %u", h->device->name, child->name, port);
        return child;
}

int hub_port_over_current(Hub *h, unsigned port, uint64_t now) {
        HubPort *p;

        if (!port_valid(h, port))
                return -ERANGE;
        p = &h->ports[port];
        if (!(p->status & USB_PORT_STAT_POWER))
                return -ENOLINK;
        /* The port switches its power off: the device is gone until the host powers the port again, and
         * comes back unconfigured. */
        p->status |= USB_PORT_STAT_OVERCURRENT;
        p->change |= USB_PORT_STAT_C_OVERCURRENT;
        port_disconnect(h, p, now);
        p->status &= (uint16_t) ~USB_PORT_STAT_POWER;
        port_power_lost(p, now);
        log_notice("%s: over-current on port %u, port powered off", h->device->name, port);
        changed(h);
        return 0;
}

static void hub_describe(void *function, FILE *f) {
        Hub *h = function;

        fprintf(f, "\"function\": \"hub\", \"remote_wakeup_capable\": %s, \"ports\": [",
                h->options.remote_wakeup ? "true" : "false");
        for (unsigned p = 1; p <= h->options.n_ports; p++) {
                const HubPort *port = &h->ports[p];
                fprintf(f, "%s{\"port\": %u, \"status\": \"0x%04x\", \"change\": \"0x%04x\", \"powered\": %s, "
                        "\"connected\": %s, \"enabled\": %s, \"suspended\": %s, \"child\": ",
                        p > 1 ? ", " : "", p, port->status, port->change,
                        port->status & USB_PORT_STAT_POWER ? "true" : "false",
                        port->status & USB_PORT_STAT_CONNECTION ? "true" : "false",
                        port->status & USB_PORT_STAT_ENABLE ? "true" : "false",
                        port->status & USB_PORT_STAT_SUSPEND ? "true" : "false");
                if (port->child)
                        json_write_string(f, port->child->name);
                else
                        fputs("null", f);
                fputc('}', f);
        }
        fprintf(f, "], \"hub_stats\": {\"port_resets\": %" PRIu64 ", \"port_suspends\": %" PRIu64
                ", \"port_resumes\": %" PRIu64 ", \"remote_wakeups\": %" PRIu64 ", \"wakeups_held\": %" PRIu64
                ", \"status_reports\": %" PRIu64 "}",
                h->stats.port_resets, h->stats.port_suspends, h->stats.port_resumes, h->stats.remote_wakeups,
                h->stats.wakeups_held, h->stats.status_reports);
}

static void hub_free(void *function) {
        Hub *h = function;

        for (unsigned p = 1; p <= h->options.n_ports; p++)
                if (h->ports[p].child) {
                        h->ports[p].child->wakeup = NULL;
                        h->ports[p].child->wakeup_userdata = NULL;
                }
        free(h);
}

static const UsbFunctionOps hub_ops = {
        .control = hub_control,
        .transfer = hub_transfer,
        .in_ready = hub_in_ready,
        .bus_reset = hub_bus_reset,
        .describe = hub_describe,
        .free = hub_free,
};

static const UsbDeviceDesc hub_device_desc = {
        .bcdUSB = 0x0200,
        .bDeviceClass = USB_CLASS_HUB,
        .bDeviceProtocol = 1, /* single TT: no SET_INTERFACE to pick a TT mode */
        .bMaxPacketSize0 = 64,
        .idVendor = 0x1209,
        .idProduct = 0x0002,
        .bcdDevice = 0x0100,
        .iManufacturer = HUB_STRING_MANUFACTURER,
        .iProduct = HUB_STRING_PRODUCT,
        .iSerialNumber = HUB_STRING_SERIAL,
        .bNumConfigurations = 1,
};

Hub *hub_from_device(UsbDevice *d) {
        return d && d->ops == &hub_ops ? d->function : NULL;
}

void hub_set_port_reset_callback(Hub *h, HubPortResetFunc func, void *userdata) {
        h->port_reset = func;
        h->port_reset_userdata = userdata;
}

unsigned hub_get_n_ports(const Hub *h) {
        return h->options.n_ports;
}

UsbDevice *hub_get_child(const Hub *h, unsigned port) {
        return port_valid(h, port) ? h->ports[port].child : NULL;
}

void hub_get_port_status(const Hub *h, unsigned port, uint16_t *ret_status, uint16_t *ret_change) {
        *ret_status = port_valid(h, port) ? h->ports[port].status : 0;
        *ret_change = port_valid(h, port) ? h->ports[port].change : 0;
}

const HubStats *hub_get_stats(const Hub *h) {
        return &h->stats;
}

int hub_new(const char *name, const HubOptions *options, UsbDevice **ret) {
        _cleanup_(usb_device_freep) UsbDevice *d = NULL;
        UsbDeviceDesc desc = hub_device_desc;
        Hub *h;
        int r;

        if (options->n_ports < 1 || options->n_ports > 15)
                return -ERANGE;

        h = calloc(1, sizeof(Hub));
        if (!h)
                return -ENOMEM;
        h->options = *options;
        /* The tables live in the hub: the endpoint's packet size follows the port count. */
        h->endpoint = (UsbEndpointDesc) {
                .bEndpointAddress = HUB_STATUS_EP,
                .bmAttributes = USB_ENDPOINT_XFER_INT,
                .wMaxPacketSize = (uint16_t) DIV_ROUND_UP(options->n_ports + 1, 8),
                .bInterval = 12, /* 2^11 microframes = 256 ms, as real high-speed hubs */
        };
        h->interface = (UsbInterfaceDesc) {
                .bInterfaceClass = USB_CLASS_HUB,
                .bNumEndpoints = 1,
                .endpoints = &h->endpoint,
        };
        /* Without remote wakeup the kernel never autosuspends the hub, so its status URB always waits
         * and children's wakeups and hot-plugs are always heard (kernel-deep-dive §2.4). */
        h->config = (UsbConfigDesc) {
                .bConfigurationValue = 1,
                .bmAttributes = USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_SELFPOWER |
                                (options->remote_wakeup ? USB_CONFIG_ATT_WAKEUP : 0),
                .bNumInterfaces = 1,
                .interfaces = &h->interface,
        };
        desc.configs = &h->config;

        r = usb_device_new(name, &desc, USB_SPEED_HIGH, &d);
        if (r < 0) {
                free(h);
                return r;
        }
        h->device = d;
        usb_device_set_function(d, &hub_ops, h);
        if (usb_device_set_string(d, HUB_STRING_MANUFACTURER, "drowse") < 0 ||
            usb_device_set_string(d, HUB_STRING_PRODUCT, "drowse virtual hub") < 0 ||
            usb_device_set_string(d, HUB_STRING_SERIAL, name) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(d);
        return 0;
}
