/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The USB 2.0 hub (hub.c): hub class requests, port features, the status-change interrupt endpoint, and
 * children that are plugged, unplugged, suspended through their port and signal remote wakeup. Flags:
 * bits 1..4 pick 1..15 ports, bit 5 advertises remote wakeup. With FUZZ_CTRL_ENUMERATE, enumeration is
 * followed by hub_configure()/hub_activate() as the kernel sends them (kernel-deep-dive §1.3). Target
 * events (tag >> 3) % 8: plug keyboard c into port p, unplug port p, pick the URB target (the hub or a
 * keyboard), type a key on a keyboard, signal wakeup (forced or not), SET/CLEAR_PORT_FEATURE from fields,
 * GET_PORT_STATUS, enumerate the current target.
 *
 * Checked after every record, for each port: SUSPEND implies ENABLE implies CONNECTION implies POWER; a
 * connected port has a child; a child's link is suspended exactly when its port is;
 * only children plugged in are on a port. The status-change report is at most (ports + 1 + 7) / 8 bytes. */

#include "fuzz-ctrl.h"
#include "hub.h"
#include "keyboard.h"

#define N_CHILDREN 2

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct HubFuzz {
        UsbDevice *hub;
        UsbDevice *children[N_CHILDREN];
        unsigned child_port[N_CHILDREN]; /* 0: not plugged */
} HubFuzz;

static void hub_complete(FuzzCtrl *f, const Urb *u) {
        HubFuzz *hf = f->userdata;
        Hub *h = hub_from_device(hf->hub);

        if (((FuzzTarget *) u->userdata)->device != hf->hub || u->status != 0)
                return;
        if (u->ep == 1 && u->in)
                CHECK(u->actual_length <= (hub_get_n_ports(h) + 1 + 7) / 8);
}

static void hub_after_step(FuzzCtrl *f) {
        HubFuzz *hf = f->userdata;
        Hub *h = hub_from_device(hf->hub);

        for (unsigned p = 1; p <= hub_get_n_ports(h); p++) {
                UsbDevice *child = hub_get_child(h, p);
                uint16_t status, change;

                hub_get_port_status(h, p, &status, &change);
                if (status & USB_PORT_STAT_SUSPEND)
                        CHECK(status & USB_PORT_STAT_ENABLE);
                if (status & USB_PORT_STAT_ENABLE)
                        CHECK(status & USB_PORT_STAT_CONNECTION);
                if (status & USB_PORT_STAT_CONNECTION)
                        CHECK((status & USB_PORT_STAT_POWER) && child);
                /* On every port, enabled or not: a port that loses power or its enable takes the child
                 * out of suspend with it (the PORT_POWER finding in docs/reliability.md). */
                if (child)
                        CHECK((child->link == USB_LINK_SUSPENDED) == !!(status & USB_PORT_STAT_SUSPEND));
        }
        for (unsigned c = 0; c < N_CHILDREN; c++) {
                if (hf->child_port[c])
                        CHECK(hub_get_child(h, hf->child_port[c]) == hf->children[c]);
                else
                        CHECK(hf->children[c]->link == USB_LINK_UNPLUGGED);
        }
}

static void port_request(FuzzCtrl *f, uint8_t request, uint16_t feature, uint16_t port, uint16_t wLength) {
        FuzzTarget *saved = f->target;

        f->target = &f->targets[0];
        fuzz_ctrl_control(f, request == USB_REQ_GET_STATUS ? USB_DIR_IN | USB_RT_PORT : USB_RT_PORT, request,
                          feature, port, wLength, NULL);
        f->target = saved;
}

static void hub_event(FuzzCtrl *f, uint8_t tag, FuzzInput *in) {
        HubFuzz *hf = f->userdata;
        Hub *h = hub_from_device(hf->hub);

        switch ((tag >> 3) % 8) {
        case 0: {
                unsigned c = fuzz_u8(in) % N_CHILDREN, port = fuzz_u8(in) % 17;
                if (hf->child_port[c])
                        break; /* tree.c never plugs a device twice */
                int r = hub_plug(h, port, hf->children[c], f->now);
                CHECK(r == 0 || r == -EBUSY || r == -ERANGE);
                if (r == 0)
                        hf->child_port[c] = port;
                break;
        }
        case 1: {
                unsigned port = fuzz_u8(in) % 17;
                UsbDevice *child = hub_unplug(h, port, f->now);
                for (unsigned c = 0; c < N_CHILDREN; c++)
                        if (child && hf->children[c] == child) {
                                CHECK(hf->child_port[c] == port);
                                hf->child_port[c] = 0;
                        }
                break;
        }
        case 2:
                f->target = &f->targets[fuzz_u8(in) % f->n_targets];
                break;
        case 3: {
                Keyboard *k = keyboard_from_device(hf->children[fuzz_u8(in) % N_CHILDREN]);
                (void) keyboard_type(k, "a");
                break;
        }
        case 4: {
                uint8_t b = fuzz_u8(in);
                int r = usb_device_signal_wakeup(hf->children[b % N_CHILDREN], b & 0x80);
                CHECK(r == 0 || r == -EAGAIN || r == -EPERM || r == -EOPNOTSUPP);
                break;
        }
        case 5: {
                uint8_t b = fuzz_u8(in);
                port_request(f, b & 0x80 ? USB_REQ_SET_FEATURE : USB_REQ_CLEAR_FEATURE, b % 32, fuzz_u8(in) % 17, 0);
                break;
        }
        case 6:
                port_request(f, USB_REQ_GET_STATUS, 0, fuzz_u8(in) % 17, 4);
                break;
        default:
                fuzz_ctrl_enumerate(f);
                break;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        FuzzInput in = { data, size };
        HubFuzz hf = {};
        FuzzCtrl f;
        uint8_t flags;
        unsigned n_ports;

        if (size < 1)
                return 0;
        fuzz_ctrl_log_setup();
        flags = fuzz_u8(&in);
        n_ports = 1 + ((flags >> 1) & 0x0f) % 15;

        CHECK(hub_new("fuzzhub", &(HubOptions) { .n_ports = n_ports, .remote_wakeup = flags & 0x20 }, &hf.hub) >= 0);
        fuzz_ctrl_init(&f, hf.hub);
        for (unsigned c = 0; c < N_CHILDREN; c++) {
                CHECK(keyboard_new(c == 0 ? "fuzzkbd0" : "fuzzkbd1", &hf.children[c]) >= 0);
                usb_device_set_link(hf.children[c], USB_LINK_UNPLUGGED, f.now);
                fuzz_ctrl_add_target(&f, hf.children[c]);
        }
        f.userdata = &hf;
        f.on_complete = hub_complete;
        f.after_step = hub_after_step;
        f.no_link_events = true;

        if (flags & FUZZ_CTRL_ENUMERATE) {
                fuzz_ctrl_enumerate(&f);
                fuzz_ctrl_control(&f, USB_DIR_IN | USB_RT_HUB, USB_REQ_GET_DESCRIPTOR, USB_DT_HUB << 8, 0, 15, NULL);
                fuzz_ctrl_control(&f, USB_DIR_IN, USB_REQ_GET_STATUS, 0, 0, 2, NULL);
                fuzz_ctrl_control(&f, USB_DIR_IN | USB_RT_HUB, USB_REQ_GET_STATUS, 0, 0, 4, NULL);
                CHECK(hub_plug(hub_from_device(hf.hub), 1, hf.children[0], f.now) == 0);
                hf.child_port[0] = 1;
                for (unsigned p = 1; p <= n_ports; p++)
                        port_request(&f, USB_REQ_SET_FEATURE, USB_PORT_FEAT_POWER, p, 0);
                for (unsigned p = 1; p <= n_ports; p++)
                        port_request(&f, USB_REQ_GET_STATUS, 0, p, 4);
                fuzz_ctrl_submit(&f, USB_DIR_IN | 1, true, (n_ports + 1 + 7) / 8, 0, NULL, &in);
        }
        fuzz_ctrl_run(&f, &in, hub_event);

        /* Children go first off the hub, as tree.c tears down. */
        for (unsigned c = 0; c < N_CHILDREN; c++) {
                if (hf.child_port[c])
                        CHECK(hub_unplug(hub_from_device(hf.hub), hf.child_port[c], f.now) == hf.children[c]);
                usb_device_free(hf.children[c]);
        }
        usb_device_free(hf.hub);
        return 0;
}
