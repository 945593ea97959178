/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "usb-device.h"

/* A host that says nothing for this long and then asks GET_STATUS(device) has suspended and resumed
 * us: over vhci the suspend itself is local to the kernel, GET_STATUS in finish_port_resume is the
 * only trace on the wire (kernel-deep-dive §2.1). */
#define RESUME_SILENCE_USEC (200 * 1000ULL)

static const char *const usb_device_state_table[_USB_DEVICE_STATE_MAX] = {
        [USB_DEVICE_STATE_DEFAULT] = "default",
        [USB_DEVICE_STATE_ADDRESSED] = "addressed",
        [USB_DEVICE_STATE_CONFIGURED] = "configured",
};

DEFINE_STRING_TABLE_TO_STRING(usb_device_state, UsbDeviceState);

static const char *const usb_link_state_table[_USB_LINK_STATE_MAX] = {
        [USB_LINK_CONNECTED] = "connected",
        [USB_LINK_SUSPENDED] = "suspended",
        [USB_LINK_UNPLUGGED] = "unplugged",
};

DEFINE_STRING_TABLE_TO_STRING(usb_link_state, UsbLinkState);

uint64_t usb_device_now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static unsigned ep_index(uint8_t ep, bool in) {
        return (ep & 0x0f) | (in ? 0x10 : 0);
}

int usb_device_new(const char *name, const UsbDeviceDesc *desc, UsbSpeed speed, UsbDevice **ret) {
        _cleanup_(usb_device_freep) UsbDevice *d = NULL;

        d = calloc(1, sizeof(UsbDevice));
        if (!d)
                return -ENOMEM;
        d->name = strdup(name);
        if (!d->name)
                return -ENOMEM;
        d->desc = *desc;
        d->speed = speed;
        d->state = USB_DEVICE_STATE_DEFAULT;

        *ret = TAKE_PTR(d);
        return 0;
}

UsbDevice *usb_device_free(UsbDevice *d) {
        if (!d)
                return NULL;
        usb_device_drop_pending(d);
        fault_list_free(d->faults);
        if (d->ops && d->ops->free)
                d->ops->free(d->function);
        for (size_t i = 0; i < ELEMENTSOF(d->strings); i++)
                free(d->strings[i]);
        free(d->name);
        return mfree(d);
}

void usb_device_set_function(UsbDevice *d, const UsbFunctionOps *ops, void *function) {
        d->ops = ops;
        d->function = function;
}

int usb_device_set_string(UsbDevice *d, uint8_t index, const char *s) {
        char *copy;

        if (index == 0 || index >= USB_DEVICE_MAX_STRINGS)
                return -EINVAL;
        copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        free(d->strings[index]);
        d->strings[index] = copy;
        return 0;
}

const UsbConfigDesc *usb_device_active_config(const UsbDevice *d) {
        if (d->configuration == 0)
                return NULL;
        for (unsigned i = 0; i < d->desc.bNumConfigurations; i++)
                if (d->desc.configs[i].bConfigurationValue == d->configuration)
                        return &d->desc.configs[i];
        return NULL;
}

/* The endpoint descriptor for an address in the active configuration (alternate setting 0: none of our
 * functions has alternate settings with other endpoints). */
static const UsbEndpointDesc *find_endpoint(const UsbDevice *d, uint8_t address) {
        const UsbConfigDesc *c = usb_device_active_config(d);

        if (!c)
                return NULL;
        for (unsigned i = 0; i < c->bNumInterfaces; i++) {
                const UsbInterfaceDesc *intf = &c->interfaces[i];
                for (unsigned e = 0; e < intf->bNumEndpoints; e++)
                        if (intf->endpoints[e].bEndpointAddress == address)
                                return &intf->endpoints[e];
        }
        return NULL;
}

static bool config_has_interface(const UsbConfigDesc *c, uint16_t number) {
        if (!c)
                return false;
        for (unsigned i = 0; i < c->bNumInterfaces; i++)
                if (c->interfaces[i].bInterfaceNumber == number)
                        return true;
        return false;
}

static void clear_halts(UsbDevice *d) {
        d->halted = 0;
}

void usb_device_bus_reset(UsbDevice *d) {
        /* Waiting URBs stay: the kernel unlinks what it submitted, and answering a seqnum it already
         * forgot would make vhci drop the whole connection. */
        d->state = USB_DEVICE_STATE_DEFAULT;
        d->configuration = 0;
        d->remote_wakeup = false;
        d->resume_status_due = false;
        clear_halts(d);
        if (d->ops && d->ops->bus_reset)
                d->ops->bus_reset(d->function);
}

/* The kernel reads the device descriptor at address 0 (64 or 8 bytes) only right after a port reset.
 * Over vhci a root-port reset never reaches us, so this read is how we learn of it (kernel-deep-dive
 * §2.1, §5.5). */
static void note_device_descriptor_read(UsbDevice *d, const UsbSetup *s) {
        if (d->state == USB_DEVICE_STATE_CONFIGURED && (s->wLength == 64 || s->wLength == 8)) {
                log_info("%s: device descriptor read at address 0: the host reset the device", d->name);
                d->stats.bus_resets_inferred++;
                usb_device_bus_reset(d);
        } else if (d->state == USB_DEVICE_STATE_DEFAULT && s->wLength != 64 && s->wLength != 8)
                d->state = USB_DEVICE_STATE_ADDRESSED;
}

static int get_descriptor(UsbDevice *d, const UsbSetup *s, uint8_t *buf, size_t size) {
        uint8_t type = s->wValue >> 8, index = s->wValue & 0xff;

        switch (type) {
        case USB_DT_DEVICE:
                note_device_descriptor_read(d, s);
                return usb_desc_encode_device(&d->desc, d->speed, buf, size);

        case USB_DT_CONFIG:
                if (index >= d->desc.bNumConfigurations)
                        return -EPIPE;
                if (d->state == USB_DEVICE_STATE_DEFAULT)
                        d->state = USB_DEVICE_STATE_ADDRESSED;
                return usb_desc_encode_config(&d->desc.configs[index], d->speed, USB_DT_CONFIG, buf, size);

        case USB_DT_STRING: {
                static const uint16_t langids[] = { 0x0409 }; /* English (United States) */
                if (index == 0)
                        return usb_desc_encode_langids(langids, ELEMENTSOF(langids), buf, size);
                if (index >= USB_DEVICE_MAX_STRINGS || !d->strings[index])
                        return -EPIPE;
                return usb_desc_encode_string(d->strings[index], buf, size);
        }

        case USB_DT_DEVICE_QUALIFIER:
                /* Only a high-speed capable device running at high or full speed has one. */
                if (d->speed != USB_SPEED_HIGH && d->speed != USB_SPEED_FULL)
                        return -EPIPE;
                return usb_desc_encode_qualifier(&d->desc, buf, size);

        case USB_DT_OTHER_SPEED_CONFIG:
                if (d->speed != USB_SPEED_HIGH || index >= d->desc.bNumConfigurations)
                        return -EPIPE;
                return usb_desc_encode_config(&d->desc.configs[index], USB_SPEED_FULL,
                                              USB_DT_OTHER_SPEED_CONFIG, buf, size);

        case USB_DT_BOS:
                if (d->desc.bcdUSB < 0x0201 && !usb_speed_is_super(d->speed))
                        return -EPIPE;
                return usb_desc_encode_bos(d->speed, buf, size);

        default:
                /* DEBUG and everything else: a Request Error, as a device without them answers. */
                return -EPIPE;
        }
}

/* The faults on the GET_STATUS(device) that finishes a resume, for our own functions and forwarded
 * requests alike: -EPIPE to stall it, -ETIMEDOUT to leave it unanswered, 0 to answer it. */
static int resume_status_fault(UsbDevice *d, uint64_t now_usec) {
        if (!d->resume_status_due)
                return 0;
        d->resume_status_due = false;
        if (fault_fire(d, FAULT_RESUME_STATUS_STALL, now_usec, "GET_STATUS after resume stalled"))
                return -EPIPE;
        if (fault_fire(d, FAULT_RESUME_STATUS_TIMEOUT, now_usec, "GET_STATUS after resume left unanswered"))
                return -ETIMEDOUT;
        return 0;
}

static bool remote_wakeup_stall(UsbDevice *d, uint64_t now_usec) {
        return fault_fire(d, FAULT_REMOTE_WAKEUP_STALL, now_usec, "SET_FEATURE(DEVICE_REMOTE_WAKEUP) stalled");
}

/* Standard requests: returns IN bytes (at most size), 0 for no-data requests, -EPIPE to STALL. */
static int standard_request(UsbDevice *d, const UsbSetup *s, uint8_t *buf, size_t size, uint64_t now_usec) {
        uint8_t recipient = usb_setup_recipient(s);
        const UsbConfigDesc *config = usb_device_active_config(d);
        int r;

        switch (s->bRequest) {
        case USB_REQ_GET_STATUS:
                if (s->wLength != 2 || size < 2)
                        return -EPIPE;
                switch (recipient) {
                case USB_RECIP_DEVICE: {
                        uint16_t status = 0;
                        if (config && (config->bmAttributes & USB_CONFIG_ATT_SELFPOWER))
                                status |= 1u << 0;
                        if (d->remote_wakeup)
                                status |= 1u << 1;
                        if (d->last_urb_usec > 0 && now_usec - d->last_urb_usec >= RESUME_SILENCE_USEC) {
                                d->stats.resumes_inferred++;
                                d->resume_status_due = true;
                                log_info("%s: GET_STATUS after %.1f s of silence: the host resumed the device",
                                         d->name, (double) (now_usec - d->last_urb_usec) / 1e6);
                        }
                        r = resume_status_fault(d, now_usec);
                        if (r < 0)
                                return r;
                        put_le16(buf, status);
                        return 2;
                }
                case USB_RECIP_INTERFACE:
                        if (!config_has_interface(config, s->wIndex))
                                return -EPIPE;
                        put_le16(buf, 0);
                        return 2;
                case USB_RECIP_ENDPOINT: {
                        uint8_t ep = s->wIndex & 0xff;
                        if ((ep & 0x0f) != 0 && !find_endpoint(d, ep))
                                return -EPIPE;
                        put_le16(buf, (d->halted >> ep_index(ep, ep & USB_DIR_IN)) & 1);
                        return 2;
                }
                default:
                        return -EPIPE;
                }

        case USB_REQ_CLEAR_FEATURE:
        case USB_REQ_SET_FEATURE: {
                bool set = s->bRequest == USB_REQ_SET_FEATURE;

                if (recipient == USB_RECIP_DEVICE && s->wValue == USB_DEVICE_REMOTE_WAKEUP) {
                        /* A configuration that does not advertise remote wakeup has nothing to arm. */
                        if (!config || !(config->bmAttributes & USB_CONFIG_ATT_WAKEUP))
                                return -EPIPE;
                        if (set && remote_wakeup_stall(d, now_usec))
                                return -EPIPE;
                        d->remote_wakeup = set;
                        if (set)
                                d->stats.remote_wakeup_sets++;
                        else
                                d->stats.remote_wakeup_clears++;
                        log_debug("%s: remote wakeup %s by the host", d->name, set ? "armed" : "disarmed");
                        return 0;
                }
                if (recipient == USB_RECIP_ENDPOINT && s->wValue == USB_ENDPOINT_HALT) {
                        uint8_t ep = s->wIndex & 0xff;
                        unsigned bit = ep_index(ep, ep & USB_DIR_IN);
                        if ((ep & 0x0f) == 0)
                                return set ? -EPIPE : 0;
                        if (!find_endpoint(d, ep))
                                return -EPIPE;
                        if (set)
                                d->halted |= 1u << bit;
                        else {
                                d->halted &= ~(1u << bit);
                                if (d->ops && d->ops->clear_halt)
                                        d->ops->clear_halt(d->function, ep);
                        }
                        return 0;
                }
                return -EPIPE;
        }

        case USB_REQ_SET_ADDRESS:
                /* vhci completes this one itself; a USB/IP client other than vhci might send it. */
                d->state = s->wValue ? USB_DEVICE_STATE_ADDRESSED : USB_DEVICE_STATE_DEFAULT;
                d->configuration = 0; /* leaving the Configured state unconfigures (fuzz-ctrl-std) */
                return 0;

        case USB_REQ_GET_DESCRIPTOR:
                /* Class descriptors of an interface (a HID report descriptor) are the function's. */
                if (recipient == USB_RECIP_INTERFACE && config_has_interface(config, s->wIndex) && d->ops &&
                    d->ops->control)
                        return d->ops->control(d->function, s, buf, size);
                if (recipient != USB_RECIP_DEVICE)
                        return -EPIPE;
                r = get_descriptor(d, s, buf, size);
                if (r < 0)
                        return r == -EPIPE ? r : -EPIPE;
                return MIN(r, (int) MIN(size, s->wLength));

        case USB_REQ_GET_CONFIGURATION:
                if (s->wLength != 1 || size < 1)
                        return -EPIPE;
                buf[0] = d->configuration;
                return 1;

        case USB_REQ_SET_CONFIGURATION: {
                uint8_t value = s->wValue & 0xff;
                bool found = value == 0;
                for (unsigned i = 0; i < d->desc.bNumConfigurations && !found; i++)
                        found = d->desc.configs[i].bConfigurationValue == value;
                if (!found || d->state == USB_DEVICE_STATE_DEFAULT)
                        return -EPIPE;
                d->configuration = value;
                d->state = value ? USB_DEVICE_STATE_CONFIGURED : USB_DEVICE_STATE_ADDRESSED;
                clear_halts(d);
                if (d->ops && d->ops->set_configuration)
                        d->ops->set_configuration(d->function, value);
                log_debug("%s: configuration %u", d->name, value);
                return 0;
        }

        case USB_REQ_GET_INTERFACE:
                if (s->wLength != 1 || size < 1 || !config_has_interface(config, s->wIndex))
                        return -EPIPE;
                buf[0] = 0;
                return 1;

        case USB_REQ_SET_INTERFACE:
                /* Alternate setting 0 is the only one our functions have; selecting it resets the
                 * interface's endpoints, which for us means their halts. */
                if (!config_has_interface(config, s->wIndex) || s->wValue != 0)
                        return -EPIPE;
                clear_halts(d);
                return 0;

        default:
                return -EPIPE;
        }
}

static void complete_control(UsbDevice *d, Urb *u, uint64_t now_usec) {
        UsbSetup s;
        uint8_t *data = NULL;
        size_t size = 0;
        int r;

        usb_setup_decode(u->setup, &s);
        d->stats.control_requests++;

        if (u->length > 0) {
                r = urb_ensure_buffer(u);
                if (r < 0) {
                        urb_complete(u, -ENOMEM, 0);
                        return;
                }
                data = urb_data(u);
                /* IN: never more than the host asked for in either field; OUT: what it sent. */
                size = usb_setup_is_in(&s) ? MIN(u->length, s.wLength) : u->length;
        }

        if (log_get_max_level() >= LOG_DEBUG) {
                char line[160];
                (void) usb_setup_format(&s, line, sizeof(line));
                log_debug("%s: ep0 %s", d->name, line);
        }

        if (usb_setup_type(&s) == USB_TYPE_STANDARD)
                r = standard_request(d, &s, data, size, now_usec);
        else if (d->ops && d->ops->control)
                r = d->ops->control(d->function, &s, data, size);
        else
                r = -EPIPE;

        if (r == -ETIMEDOUT) {
                /* An injected fault: the device never finishes the status stage. The transport holds
                 * the completion until the kernel gives up and unlinks the URB. */
                u->hold_usec = URB_HOLD_FOREVER;
                urb_complete(u, 0, 0);
                return;
        }
        if (r < 0) {
                d->stats.stalls++;
                urb_complete(u, r == -EPIPE ? -EPIPE : r, 0);
                return;
        }
        urb_complete(u, 0, usb_setup_is_in(&s) ? (uint32_t) r : u->length);
}

/* Tries to move data for one URB on a non-control endpoint. Returns true if the URB was completed,
 * false if it has to wait. */
static bool try_transfer(UsbDevice *d, Urb *u) {
        uint8_t address = u->ep | (u->in ? USB_DIR_IN : 0);
        unsigned bit = ep_index(u->ep, u->in);
        ssize_t n;
        int r;

        if (d->halted & (1u << bit)) {
                urb_complete(u, -EPIPE, 0);
                return true;
        }

        if (u->in && d->ops->in_ready && !d->ops->in_ready(d->function, address))
                return false;

        r = urb_ensure_buffer(u);
        if (r < 0) {
                urb_complete(u, -ENOMEM, 0);
                return true;
        }

        n = d->ops->transfer(d->function, address, urb_data(u), u->length);
        if (n == -EAGAIN)
                return false;
        if (n == -EPIPE) {
                d->halted |= 1u << bit;
                d->stats.stalls++;
                urb_complete(u, -EPIPE, 0);
                return true;
        }
        if (n < 0) {
                urb_complete(u, (int32_t) n, 0);
                return true;
        }

        /* A short IN transfer with URB_SHORT_NOT_OK is an error on a real HCD (-EREMOTEIO), and
         * usb-storage submits bulk-IN that way; vhci does not enforce it, so we do. */
        if (u->in && (size_t) n < u->length && (u->transfer_flags & USBIP_URB_SHORT_NOT_OK))
                urb_complete(u, -EREMOTEIO, (uint32_t) n);
        else
                urb_complete(u, 0, (uint32_t) n);
        return true;
}

static void kick_queue(UsbDevice *d, UrbQueue *q) {
        Urb *u;

        /* Strictly in order per endpoint: the head must complete before anything behind it. */
        while ((u = q->head)) {
                urb_queue_remove(q, u);
                d->n_pending--;
                if (!try_transfer(d, u)) {
                        /* Back at the head: nothing behind it may overtake it. */
                        urb_queue_push_front(q, u);
                        d->n_pending++;
                        return;
                }
        }
}

void usb_device_kick(UsbDevice *d) {
        /* A forwarding function's pending URBs are in flight elsewhere, not waiting for a retry. */
        if (d->link != USB_LINK_CONNECTED || (d->ops && d->ops->submit))
                return;
        for (size_t i = 0; i < ELEMENTSOF(d->pending); i++)
                if (d->pending[i].head)
                        kick_queue(d, &d->pending[i]);
}

void usb_device_set_link(UsbDevice *d, UsbLinkState link, uint64_t now_usec) {
        UsbLinkState old = d->link;

        if (old == link)
                return;
        if (link == USB_LINK_SUSPENDED)
                d->suspends++;
        else if (old == USB_LINK_SUSPENDED && link == USB_LINK_CONNECTED) {
                d->resumes++;
                d->resume_status_due = true;
        }
        log_debug("%s: link %s -> %s", d->name, usb_link_state_to_string(old), usb_link_state_to_string(link));
        d->link = link;
        d->link_since_usec = now_usec;
        if (d->ops && d->ops->link_changed)
                d->ops->link_changed(d->function, old, link);
        if (d->link_hook)
                d->link_hook(d, old, d->link_hook_userdata);
        if (link == USB_LINK_CONNECTED && d->link == USB_LINK_CONNECTED)
                usb_device_kick(d);
}

int usb_device_signal_wakeup(UsbDevice *d, bool force) {
        int r;

        if (!d->wakeup)
                return -EOPNOTSUPP;
        if (d->link != USB_LINK_SUSPENDED)
                return -EAGAIN;
        if (!d->remote_wakeup && !force)
                return -EPERM;
        r = d->wakeup(d, d->wakeup_userdata);
        if (r >= 0)
                d->wakeups_signalled++;
        return r;
}

void usb_device_set_configured(UsbDevice *d, uint8_t value) {
        d->configuration = value;
        d->state = value ? USB_DEVICE_STATE_CONFIGURED : USB_DEVICE_STATE_ADDRESSED;
        clear_halts(d);
        log_debug("%s: configuration %u", d->name, value);
}

void usb_device_note_remote_wakeup(UsbDevice *d, bool armed, bool by_host) {
        if (by_host) {
                if (armed)
                        d->stats.remote_wakeup_sets++;
                else
                        d->stats.remote_wakeup_clears++;
        }
        if (d->remote_wakeup != armed)
                log_debug("%s: remote wakeup %s %s", d->name, armed ? "armed" : "disarmed",
                          by_host ? "by the host" : "as the device reports");
        d->remote_wakeup = armed;
}

void usb_device_complete(UsbDevice *d, Urb *u, int32_t status, uint32_t actual_length) {
        urb_queue_remove(&d->pending[ep_index(u->ep, u->in)], u);
        d->n_pending--;
        if (status == -EPIPE)
                d->stats.stalls++;
        urb_complete(u, status, actual_length);
}

/* The faults that strike standard requests strike the forwarded ones too, before they reach the real
 * device: it is the one answering them. Returns true when the URB was answered here. */
static bool forward_fault(UsbDevice *d, Urb *u, uint64_t now_usec) {
        UsbSetup s;
        int r = 0;

        usb_setup_decode(u->setup, &s);
        if (usb_setup_type(&s) != USB_TYPE_STANDARD || usb_setup_recipient(&s) != USB_RECIP_DEVICE)
                return false;
        if (s.bRequest == USB_REQ_SET_FEATURE && s.wValue == USB_DEVICE_REMOTE_WAKEUP &&
            remote_wakeup_stall(d, now_usec))
                r = -EPIPE;
        else if (s.bRequest == USB_REQ_GET_STATUS)
                r = resume_status_fault(d, now_usec);
        if (r == -EPIPE) {
                d->stats.stalls++;
                urb_complete(u, -EPIPE, 0);
                return true;
        }
        if (r == -ETIMEDOUT) {
                /* As for our own devices: the transport holds the completion until the kernel unlinks. */
                u->hold_usec = URB_HOLD_FOREVER;
                urb_complete(u, 0, 0);
                return true;
        }
        return false;
}

/* A forwarding function gets the URB as it is; the device only keeps it findable and bounded, and
 * keeps the state it infers from the wire (a reset) as it does for its own functions. */
static int submit_forward(UsbDevice *d, Urb *u, uint64_t now_usec) {
        UrbQueue *q = &d->pending[ep_index(u->ep, u->in)];
        int r;

        if (d->n_pending >= USB_DEVICE_MAX_PENDING)
                return -ENOBUFS;
        d->last_urb_usec = now_usec;
        if (u->ep == 0) {
                UsbSetup s;

                usb_setup_decode(u->setup, &s);
                d->stats.control_requests++;
                if (usb_setup_type(&s) == USB_TYPE_STANDARD && usb_setup_recipient(&s) == USB_RECIP_DEVICE &&
                    s.bRequest == USB_REQ_GET_DESCRIPTOR && (s.wValue >> 8) == USB_DT_DEVICE)
                        note_device_descriptor_read(d, &s);
        }

        if (u->ep == 0 && forward_fault(d, u, now_usec))
                return 0;

        urb_queue_push(q, u);
        d->n_pending++;
        r = d->ops->submit(d->function, u);
        if (r < 0) {
                urb_queue_remove(q, u);
                d->n_pending--;
        }
        return r;
}

int usb_device_submit(UsbDevice *d, Urb *u, uint64_t now_usec) {
        UrbQueue *q;

        d->stats.urbs++;

        /* A suspended or unplugged device sends no handshake: the host controller reports a protocol
         * error. The kernel never does this on purpose; a late URB or usbfs might. */
        if (d->link != USB_LINK_CONNECTED) {
                log_debug("%s: URB %u while %s", d->name, u->seqnum, usb_link_state_to_string(d->link));
                urb_complete(u, -EPROTO, 0);
                return 0;
        }

        if (d->ops && d->ops->submit)
                return submit_forward(d, u, now_usec);

        if (u->ep == 0) {
                complete_control(d, u, now_usec);
                d->last_urb_usec = now_usec;
                /* A cleared halt or a class reset can let a waiting IN URB go on. */
                usb_device_kick(d);
                return 0;
        }
        d->last_urb_usec = now_usec;

        if (d->state != USB_DEVICE_STATE_CONFIGURED || !d->ops || !d->ops->transfer ||
            !find_endpoint(d, u->ep | (u->in ? USB_DIR_IN : 0))) {
                /* A real host controller would see no handshake from an endpoint that does not exist. */
                log_debug("%s: URB %u for endpoint %u %s, which is not configured", d->name, u->seqnum, u->ep,
                          u->in ? "IN" : "OUT");
                urb_complete(u, -EPROTO, 0);
                return 0;
        }

        if (d->n_pending >= USB_DEVICE_MAX_PENDING)
                return -ENOBUFS;

        q = &d->pending[ep_index(u->ep, u->in)];
        urb_queue_push(q, u);
        d->n_pending++;
        kick_queue(d, q);

        /* Whatever this URB did (a CBW, OUT data) may have made data ready on another endpoint. */
        usb_device_kick(d);
        return 0;
}

Urb *usb_device_find_pending(UsbDevice *d, uint32_t seqnum) {
        for (size_t i = 0; i < ELEMENTSOF(d->pending); i++) {
                Urb *u = urb_queue_find(&d->pending[i], seqnum);
                if (u)
                        return u;
        }
        return NULL;
}

Urb *usb_device_unlink(UsbDevice *d, uint32_t seqnum) {
        for (size_t i = 0; i < ELEMENTSOF(d->pending); i++) {
                Urb *u = urb_queue_find(&d->pending[i], seqnum);
                if (!u)
                        continue;
                urb_queue_remove(&d->pending[i], u);
                d->n_pending--;
                d->stats.unlinks_pending++;
                if (d->ops && d->ops->cancel)
                        d->ops->cancel(d->function, u);
                return u;
        }
        d->stats.unlinks_late++;
        return NULL;
}

void usb_device_drop_pending(UsbDevice *d) {
        for (size_t i = 0; i < ELEMENTSOF(d->pending); i++) {
                Urb *u;
                while ((u = urb_queue_pop(&d->pending[i]))) {
                        if (d->ops && d->ops->cancel)
                                d->ops->cancel(d->function, u);
                        urb_free(u);
                }
        }
        d->n_pending = 0;
}
