/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdio.h>
#include <time.h>

#include "log.h"
#include "tree.h"
#include "vhci-attach.h"

#define TREE_HUB_ROOT_PORT 1 /* the hub sits on root port 1, so children use hub ports 2.. */


bool tree_is_hub(const Export *e) {
        return hub_from_device(e->device) != NULL;
}

static Export *carrier_for(Server *s, const Export *hub, unsigned port) {
        for (size_t i = 0; i < s->n_exports; i++)
                if (s->exports[i]->hub_export == hub && s->exports[i]->hub_port == port)
                        return s->exports[i];
        return NULL;
}

static void on_port_reset(Hub *h, unsigned port, UsbDevice *child, void *userdata) {
        Export *hub = userdata, *c = carrier_for(hub->server, hub, port);

        /* From now on this port number's traffic is the child's, starting with its address-0 read. */
        if (c && !c->child_active) {
                log_debug("%s: carrier of port %u now carries %s", hub->device->name, port, child->name);
                c->child_active = true;
        }
}

int tree_add_hub(Server *s, UsbDevice *hub, int controller, Export **ret) {
        Hub *h = hub_from_device(hub);
        Export *e;
        int r;

        if (!h)
                return -EINVAL;
        r = server_add_device(s, hub, &e);
        if (r < 0)
                return r;
        e->local_only = true;
        e->controller = controller;
        hub_set_port_reset_callback(h, on_port_reset, e);
        if (ret)
                *ret = e;
        return 0;
}

/* The carrier's own root device: vendor-specific, one configuration with no interface. The kernel
 * configures it ("config 1 has no interfaces?") and never speaks to it again (§1.5). */
static const UsbConfigDesc zombie_configs[] = {
        {
                .bConfigurationValue = 1,
                .bmAttributes = USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_SELFPOWER,
                .bNumInterfaces = 0,
        },
};

static const UsbDeviceDesc zombie_desc = {
        .bcdUSB = 0x0200,
        .bDeviceClass = USB_CLASS_VENDOR_SPEC,
        .bMaxPacketSize0 = 64,
        .idVendor = 0x1209,
        .idProduct = 0x0004,
        .bcdDevice = 0x0100,
        .bNumConfigurations = 1,
        .configs = zombie_configs,
};

static void zombie_set_configuration(void *function, uint8_t value) {
        Export *c = function;

        if (value == 0 || c->child_active)
                return;
        /* The carrier's own enumeration is over: the child may appear on the hub now. */
        (void) tree_plug(c);
}

static const UsbFunctionOps zombie_ops = {
        .set_configuration = zombie_set_configuration,
};

int tree_add_child(Server *s, Export *hub, unsigned port, UsbDevice *child, Export **ret) {
        Hub *h = hub_from_device(hub->device);
        _cleanup_(usb_device_freep) UsbDevice *zombie = NULL;
        char name[64];
        Export *e;
        int r;

        if (!h)
                return log_error_errno(EINVAL, "%s: not a hub", hub->device->name);
        if (hub_from_device(child))
                return log_error_errno(EOPNOTSUPP, "%s: hubs behind hubs are not supported: a grandchild would "
                                       "need its own carrier on the same controller", child->name);
        if (port == 0) {
                for (port = TREE_HUB_ROOT_PORT + 1; port <= hub_get_n_ports(h); port++)
                        if (!carrier_for(s, hub, port))
                                break;
                if (port > hub_get_n_ports(h))
                        return log_error_errno(ENOSPC, "%s: no free port for %s (%u ports; port %u is the hub's "
                                               "own root port and cannot carry a child)",
                                               hub->device->name, child->name, hub_get_n_ports(h),
                                               TREE_HUB_ROOT_PORT);
        }
        if (port == TREE_HUB_ROOT_PORT)
                return log_error_errno(EINVAL, "%s: port %u cannot be used: vhci would route its child to the "
                                       "hub's own connection (root port %u)", child->name, port, TREE_HUB_ROOT_PORT);
        if (port > hub_get_n_ports(h))
                return log_error_errno(ERANGE, "%s: %s has no port %u", child->name, hub->device->name, port);
        if (carrier_for(s, hub, port))
                return log_error_errno(EBUSY, "%s: port %u of %s is taken", child->name, port, hub->device->name);

        snprintf(name, sizeof(name), "%s-carrier", child->name);
        r = usb_device_new(name, &zombie_desc, USB_SPEED_HIGH, &zombie);
        if (r < 0)
                return log_oom();

        r = server_add_device(s, child, &e);
        if (r == -E2BIG)
                return log_error_errno(r, "Cannot export %s: one emulator exports at most %d devices",
                                       child->name, SERVER_MAX_EXPORTS);
        if (r < 0)
                return log_error_errno(r, "Cannot export %s: %m", child->name);
        e->zombie = TAKE_PTR(zombie);
        usb_device_set_function(e->zombie, &zombie_ops, e);
        e->local_only = true;
        e->hub_export = hub;
        e->hub_port = port;
        /* Unplugged until the carrier is up (zombie_set_configuration). */
        usb_device_set_link(child, USB_LINK_UNPLUGGED, usb_device_now_usec());
        if (ret)
                *ret = e;
        return 0;
}

int tree_plug(Export *c) {
        Hub *h = c->hub_export ? hub_from_device(c->hub_export->device) : NULL;
        int r;

        if (!h)
                return -EINVAL;
        if (hub_get_child(h, c->hub_port) == c->device)
                return -EALREADY;
        if (!c->zombie || c->zombie->state != USB_DEVICE_STATE_CONFIGURED) {
                /* The carrier is not enumerated yet; zombie_set_configuration plugs it later. */
                usb_device_set_link(c->device, USB_LINK_UNPLUGGED, usb_device_now_usec());
                return 0;
        }
        r = hub_plug(h, c->hub_port, c->device, usb_device_now_usec());
        return r;
}

int tree_unplug(Export *c) {
        Hub *h = c->hub_export ? hub_from_device(c->hub_export->device) : NULL;

        if (!h)
                return -EINVAL;
        return hub_unplug(h, c->hub_port, usb_device_now_usec()) ? 0 : -EALREADY;
}

/* Root port 1 and the root port of every carrier must be free on this controller. */
static bool ports_free(const VhciLayout *l, unsigned controller, Server *s, Export *hub) {
        int port;

        if (vhci_port_for(l, controller, false, TREE_HUB_ROOT_PORT - 1, &port) < 0 ||
            vhci_port_is_free(controller, port) <= 0)
                return false;
        for (size_t i = 0; i < s->n_exports; i++) {
                const Export *c = s->exports[i];
                if (c->hub_export != hub)
                        continue;
                if (vhci_port_for(l, controller, false, c->hub_port - 1, &port) < 0 ||
                    vhci_port_is_free(controller, port) <= 0)
                        return false;
        }
        return true;
}

int tree_attach(Server *s, Export *hub) {
        VhciLayout layout;
        int r, port;

        r = vhci_read_layout(&layout);
        if (r < 0)
                return log_error_errno(r, "Hubs need local attach, and vhci_hcd is not usable: %m%s",
                                       r == -ENODEV ? " (modprobe vhci-hcd)" : "");

        if (hub->controller < 0) {
                /* The first controller that no other hub uses; one hub tree per controller keeps the
                 * vhci resume race (one timer per root hub, §2.6) away from the tree. */
                for (unsigned c = 0; c < layout.n_controllers && hub->controller < 0; c++) {
                        bool taken = false;
                        for (size_t i = 0; i < s->n_exports; i++)
                                taken |= s->exports[i] != hub && tree_is_hub(s->exports[i]) &&
                                         s->exports[i]->controller == (int) c;
                        if (!taken && ports_free(&layout, c, s, hub))
                                hub->controller = (int) c;
                }
                if (hub->controller < 0)
                        return log_error_errno(EBUSY, "%s: no vhci controller is free for a hub tree (one per "
                                               "controller; %u controllers)", hub->device->name,
                                               layout.n_controllers);
        } else if ((unsigned) hub->controller >= layout.n_controllers)
                return log_error_errno(ERANGE, "%s: there is no vhci controller %d (%u controllers)",
                                       hub->device->name, hub->controller, layout.n_controllers);

        r = vhci_port_for(&layout, (unsigned) hub->controller, false, TREE_HUB_ROOT_PORT - 1, &port);
        if (r < 0)
                return r;
        r = server_attach_local(s, hub, port);
        if (r < 0)
                return r;

        for (size_t i = 0; i < s->n_exports; i++) {
                Export *c = s->exports[i];
                if (c->hub_export != hub)
                        continue;
                if (c->hub_port > layout.ports_per_hub)
                        return log_error_errno(ERANGE, "%s: hub port %u has no vhci root port to carry it (vhci "
                                               "has %u)", c->device->name, c->hub_port, layout.ports_per_hub);
                r = vhci_port_for(&layout, (unsigned) hub->controller, false, c->hub_port - 1, &port);
                if (r < 0)
                        return r;
                r = server_attach_local(s, c, port);
                if (r < 0)
                        return log_error_errno(r, "%s: its carrier needs root port %u of vhci_hcd.%d, which is "
                                               "not free", c->device->name, c->hub_port, hub->controller);
        }
        return 0;
}
