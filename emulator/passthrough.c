/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libusb.h>
#include <linux/usbdevice_fs.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "log.h"
#include "passthrough.h"

/* libusb hands its pollfd event masks to us; on Linux poll() and epoll share the bit values. */
assert_cc(POLLIN == EPOLLIN);
assert_cc(POLLOUT == EPOLLOUT);

/* libusb transfers alive at once: the device's pending URBs, plus the cancelled ones whose URB already
 * left (unlinked) and that libusb has not given back yet. A host that unlinks faster than the real
 * device lets go is refused beyond this. */
#define PASSTHROUGH_MAX_TRANSFERS (USB_DEVICE_MAX_PENDING + 64)
/* libusb on Linux watches its event fd, its timerfd and one usbfs fd per open device. */
#define PASSTHROUGH_MAX_POLLFDS 8
#define PASSTHROUGH_MAX_INTERFACES 32  /* the kernel's USB_MAXINTERFACES */
#define PASSTHROUGH_MAX_CONFIGS 8      /* the kernel's USB_MAXCONFIG */
#define PASSTHROUGH_MAX_PORTS 7
/* Opening: how long the real device has to answer a descriptor read. */
#define PASSTHROUGH_DESCRIPTOR_TIMEOUT_MS 1000
/* Freeing: how long cancelled transfers may take to come back before we give up waiting for them. */
#define PASSTHROUGH_DRAIN_USEC (2 * 1000000ULL)
/* Stopping the resume waiter: how often, 1 ms apart, to interrupt its ioctl before just joining it. */
#define PASSTHROUGH_WAITER_KICKS 1000

typedef struct PassthroughTransfer PassthroughTransfer;

struct PassthroughTransfer {
        Passthrough *passthrough;
        struct libusb_transfer *transfer;
        Urb *urb;              /* NULL once the URB left before the transfer came back */
        uint8_t *orphan;       /* that URB's data buffer, which the transfer still points into */
        uint8_t *control;      /* ep0: the setup packet and the data stage, contiguous as libusb wants */
        PassthroughTransfer *next, *prev;
};

typedef struct PassthroughPoll {
        int fd;
        sd_event_source *source;
} PassthroughPoll;

struct Passthrough {
        UsbDevice *device;            /* the exported device; it owns us */
        char *name;                   /* the device's name, for logs before and after it exists */
        sd_event *event;
        libusb_context *ctx;
        libusb_device_handle *handle;
        char path[32];                /* "1-2.3", as /sys/bus/usb/devices names it */
        uint16_t vendor_id, product_id;

        PassthroughPoll polls[PASSTHROUGH_MAX_POLLFDS];
        sd_event_source *timer;       /* libusb's next timeout, only when it has no timerfd of its own */
        sd_event_source *gone_source; /* reports a vanished device from a clean stack */

        UsbConfigDesc configs[PASSTHROUGH_MAX_CONFIGS]; /* the exported device's desc.configs */
        uint8_t n_configs;
        int original_config;          /* bConfigurationValue when we took the device, to give it back so */
        uint8_t claimed[PASSTHROUGH_MAX_INTERFACES];
        size_t n_claimed;
        uint8_t detached[PASSTHROUGH_MAX_INTERFACES]; /* interfaces whose kernel driver we unbound */
        size_t n_detached;

        PassthroughTransfer *transfers;
        unsigned n_transfers;
        bool gone;
        PassthroughGoneFunc gone_func;
        void *gone_userdata;

        uint64_t forwarded, local_requests, stalls, errors, cancelled;

        /* Runtime PM of the real device (see "power management" below). usbfs keeps a device awake
         * while any of its files is open unless that file allows suspend, so the file is ours and
         * libusb works on it (libusb_wrap_sys_device()). */
        int usbfs_fd;
        bool pm;                      /* usbfs has the runtime PM ioctls (USBDEVFS_CAP_SUSPEND) */
        bool suspend_allowed;         /* USBDEVFS_ALLOW_SUSPEND said and not taken back */
        int waiter_fd;                /* eventfd: the resume waiter thread is done */
        sd_event_source *waiter_source;
        pthread_t waiter;
        bool waiter_running;          /* a waiter thread exists and is not joined yet */
        atomic_bool waiter_stop, waiter_done;
        atomic_int waiter_result;
        char *sysfs;                  /* /sys/bus/usb/devices/PATH */
        uint64_t idles, resumes, real_resumes, wakeups_forwarded, wakeups_refused;
};

/* ---- descriptor tables ---- */

typedef struct ParseState {
        UsbInterfaceDesc *interfaces;  /* NULL while counting */
        UsbEndpointDesc *endpoints;
        size_t n_interfaces, n_endpoints;
} ParseState;

static int parse_one(uint8_t type, const uint8_t *desc, size_t len, void *userdata) {
        ParseState *s = userdata;
        UsbInterfaceDesc *intf;
        int r;

        switch (type) {
        case USB_DT_INTERFACE:
                if (s->n_interfaces >= UINT8_MAX)
                        return -E2BIG;
                if (s->interfaces) {
                        intf = &s->interfaces[s->n_interfaces];
                        r = usb_desc_parse_interface(desc, len, intf);
                        if (r < 0)
                                return r;
                        /* The endpoints that follow, however many bNumEndpoints claims. */
                        intf->bNumEndpoints = 0;
                        intf->endpoints = s->endpoints + s->n_endpoints;
                }
                s->n_interfaces++;
                return 0;

        case USB_DT_ENDPOINT:
                if (s->n_interfaces == 0 || (desc[2] & USB_ENDPOINT_NUMBER_MASK) == 0)
                        return -EBADMSG; /* outside any interface, or claiming to be ep0 */
                if (s->interfaces) {
                        intf = &s->interfaces[s->n_interfaces - 1];
                        if (intf->bNumEndpoints >= 30)
                                return -EBADMSG; /* 15 IN + 15 OUT is all an interface can have */
                        r = usb_desc_parse_endpoint(desc, len, &s->endpoints[s->n_endpoints]);
                        if (r < 0)
                                return r;
                        intf->bNumEndpoints++;
                }
                s->n_endpoints++;
                return 0;

        default:
                /* The header, class descriptors, IADs, companions: the real device answers for them. */
                return 0;
        }
}

int passthrough_parse_config(const uint8_t *raw, size_t len, UsbConfigDesc *ret) {
        ParseState s = {};
        UsbConfigDesc c;
        size_t intf_bytes;
        void *block;
        int r;

        r = usb_desc_parse_config_header(raw, len, &c, NULL);
        if (r < 0)
                return r;
        if (raw[1] != USB_DT_CONFIG)
                return -EBADMSG;
        /* Count first, then fill one allocation: interface entries, then the endpoints they point into. */
        r = usb_desc_walk(raw, len, parse_one, &s);
        if (r < 0)
                return r;
        intf_bytes = s.n_interfaces * sizeof(UsbInterfaceDesc);
        block = calloc(1, intf_bytes + s.n_endpoints * sizeof(UsbEndpointDesc) + 1);
        if (!block)
                return -ENOMEM;
        s = (ParseState) { .interfaces = block, .endpoints = (UsbEndpointDesc *) ((uint8_t *) block + intf_bytes) };
        r = usb_desc_walk(raw, len, parse_one, &s);
        if (r < 0) {
                free(block);
                return r;
        }
        c.interfaces = s.interfaces;
        c.bNumInterfaces = (uint8_t) s.n_interfaces;
        *ret = c;
        return 0;
}

void passthrough_config_desc_done(UsbConfigDesc *c) {
        free((void *) c->interfaces);
        *c = (UsbConfigDesc) {};
}

const UsbEndpointDesc *passthrough_find_isochronous(const UsbConfigDesc *c, const UsbInterfaceDesc **ret_intf) {
        for (unsigned i = 0; i < c->bNumInterfaces; i++)
                for (unsigned e = 0; e < c->interfaces[i].bNumEndpoints; e++)
                        if ((c->interfaces[i].endpoints[e].bmAttributes & USB_ENDPOINT_XFERTYPE_MASK) ==
                            USB_ENDPOINT_XFER_ISOC) {
                                if (ret_intf)
                                        *ret_intf = &c->interfaces[i];
                                return &c->interfaces[i].endpoints[e];
                        }
        return NULL;
}

static const UsbConfigDesc *find_config(const Passthrough *p, uint8_t value) {
        for (unsigned i = 0; i < p->n_configs; i++)
                if (p->configs[i].bConfigurationValue == value)
                        return &p->configs[i];
        return NULL;
}

/* The endpoint in the configuration the host selected, in whichever alternate setting has it. */
static const UsbEndpointDesc *find_endpoint(const Passthrough *p, uint8_t address) {
        const UsbConfigDesc *c = usb_device_active_config(p->device);

        if (!c)
                return NULL;
        for (unsigned i = 0; i < c->bNumInterfaces; i++)
                for (unsigned e = 0; e < c->interfaces[i].bNumEndpoints; e++)
                        if (c->interfaces[i].endpoints[e].bEndpointAddress == address)
                                return &c->interfaces[i].endpoints[e];
        return NULL;
}

/* ---- libusb on sd-event ---- */

static void mark_gone(Passthrough *p, const char *why);

static void arm_timer(Passthrough *p) {
        struct timeval tv;
        int r;

        if (!p->timer)
                return;
        r = libusb_get_next_timeout(p->ctx, &tv);
        if (r <= 0) {
                (void) sd_event_source_set_enabled(p->timer, SD_EVENT_OFF);
                return;
        }
        r = sd_event_source_set_time_relative(p->timer, (uint64_t) tv.tv_sec * 1000000 + (uint64_t) tv.tv_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(p->timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "%s: cannot arm libusb's timeout: %m", p->name);
}

static void handle_events(Passthrough *p) {
        struct timeval zero = {};
        int r;

        r = libusb_handle_events_timeout_completed(p->ctx, &zero, NULL);
        if (r < 0)
                log_debug("%s: libusb event handling: %s", p->name, libusb_strerror(r));
        arm_timer(p);
}

static int on_libusb_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Passthrough *p = userdata;

        handle_events(p);
        /* libusb's own event and timer fds never hang up: this is the device's usbfs file, whose
         * device is gone. libusb failed its transfers with NO_DEVICE; an idle device has none. */
        if (revents & (EPOLLHUP | EPOLLERR)) {
                /* libusb drops the fd itself when it sees the error; if it did not, a hung-up fd
                 * would wake us forever. */
                for (size_t i = 0; i < ELEMENTSOF(p->polls); i++)
                        if (p->polls[i].source && p->polls[i].fd == fd)
                                (void) sd_event_source_set_enabled(p->polls[i].source, SD_EVENT_OFF);
                mark_gone(p, "its usbfs file hung up");
        }
        return 0;
}

static int on_libusb_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        handle_events(userdata);
        return 0;
}

static void on_pollfd_added(int fd, short events, void *userdata) {
        Passthrough *p = userdata;
        PassthroughPoll *slot = NULL;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(p->polls); i++) {
                if (p->polls[i].source && p->polls[i].fd == fd) {
                        r = sd_event_source_set_io_events(p->polls[i].source, (uint32_t) events);
                        if (r < 0)
                                log_error_errno(r, "%s: cannot watch libusb's fd %d: %m", p->name, fd);
                        return;
                }
                if (!p->polls[i].source && !slot)
                        slot = &p->polls[i];
        }
        if (!slot) {
                log_error("%s: libusb wants more than %d file descriptors watched; transfers may stall",
                          p->name, PASSTHROUGH_MAX_POLLFDS);
                return;
        }
        r = sd_event_add_io(p->event, &slot->source, fd, (uint32_t) events, on_libusb_io, p);
        if (r < 0) {
                log_error_errno(r, "%s: cannot watch libusb's fd %d: %m", p->name, fd);
                return;
        }
        (void) sd_event_source_set_description(slot->source, "libusb");
        slot->fd = fd;
}

static void on_pollfd_removed(int fd, void *userdata) {
        Passthrough *p = userdata;

        for (size_t i = 0; i < ELEMENTSOF(p->polls); i++)
                if (p->polls[i].source && p->polls[i].fd == fd) {
                        p->polls[i].source = sd_event_source_disable_unref(p->polls[i].source);
                        p->polls[i].fd = -EBADF;
                }
}

static int watch_libusb(Passthrough *p) {
        const struct libusb_pollfd **fds;
        int r;

        libusb_set_pollfd_notifiers(p->ctx, on_pollfd_added, on_pollfd_removed, p);
        fds = libusb_get_pollfds(p->ctx);
        if (!fds)
                return log_error_errno(ENOMEM, "%s: cannot get libusb's file descriptors", p->name);
        for (size_t i = 0; fds[i]; i++)
                on_pollfd_added(fds[i]->fd, fds[i]->events, p);
        libusb_free_pollfds(fds);

        if (!libusb_pollfds_handle_timeouts(p->ctx)) {
                r = sd_event_add_time(p->event, &p->timer, CLOCK_MONOTONIC, UINT64_MAX, 0, on_libusb_timer, p);
                if (r < 0)
                        return log_error_errno(r, "%s: cannot set up libusb's timer: %m", p->name);
                (void) sd_event_source_set_enabled(p->timer, SD_EVENT_OFF);
        }
        return 0;
}

static int on_gone(sd_event_source *source, void *userdata) {
        Passthrough *p = userdata;

        (void) sd_event_source_set_enabled(source, SD_EVENT_OFF);
        if (p->gone_func)
                p->gone_func(p->device, p->gone_userdata); /* may free p */
        return 0;
}

static void mark_gone(Passthrough *p, const char *why) {
        int r;

        if (p->gone)
                return;
        p->gone = true;
        log_warning("%s: the real device %s (%04x:%04x) is gone: %s", p->name, p->path, p->vendor_id,
                    p->product_id, why);
        /* Not from here: we are inside libusb's event handling, and the owner frees us. */
        r = sd_event_add_defer(p->event, &p->gone_source, on_gone, p);
        if (r < 0)
                log_error_errno(r, "%s: cannot report the unplug; the exported device stays, failing every "
                                "URB: %m", p->name);
}

void passthrough_set_gone_handler(Passthrough *p, PassthroughGoneFunc func, void *userdata) {
        p->gone_func = func;
        p->gone_userdata = userdata;
}

/* ---- interfaces and kernel drivers ---- */

static void release_interfaces(Passthrough *p) {
        for (size_t i = 0; i < p->n_claimed; i++) {
                int r = libusb_release_interface(p->handle, p->claimed[i]);
                if (r < 0 && r != LIBUSB_ERROR_NO_DEVICE)
                        log_warning("%s: cannot release interface %u: %s", p->name, p->claimed[i],
                                    libusb_strerror(r));
        }
        p->n_claimed = 0;
}

static bool in_list(const uint8_t *list, size_t n, uint8_t v) {
        for (size_t i = 0; i < n; i++)
                if (list[i] == v)
                        return true;
        return false;
}

/* Unbinds whatever kernel driver has an interface of configuration `c` and claims it for usbfs:
 * transfers through usbfs need the claim, and the host importing the device is its driver now. */
static int claim_interfaces(Passthrough *p, const UsbConfigDesc *c) {
        for (unsigned i = 0; c && i < c->bNumInterfaces; i++) {
                uint8_t n = c->interfaces[i].bInterfaceNumber;
                int r;

                if (in_list(p->claimed, p->n_claimed, n))
                        continue; /* another alternate setting of one we have */
                if (p->n_claimed >= PASSTHROUGH_MAX_INTERFACES)
                        return log_error_errno(E2BIG, "%s: more than %d interfaces", p->name,
                                               PASSTHROUGH_MAX_INTERFACES);
                r = libusb_kernel_driver_active(p->handle, n);
                if (r == 1) {
                        r = libusb_detach_kernel_driver(p->handle, n);
                        if (r < 0)
                                return log_error_errno(EBUSY, "%s: cannot detach the kernel driver of interface %u: %s",
                                                       p->name, n, libusb_strerror(r));
                        if (!in_list(p->detached, p->n_detached, n) && p->n_detached < PASSTHROUGH_MAX_INTERFACES)
                                p->detached[p->n_detached++] = n;
                        log_info("%s: detached the kernel driver of %s interface %u", p->name, p->path, n);
                }
                r = libusb_claim_interface(p->handle, n);
                if (r < 0)
                        return log_error_errno(EBUSY, "%s: cannot claim interface %u: %s", p->name, n,
                                               libusb_strerror(r));
                p->claimed[p->n_claimed++] = n;
        }
        return 0;
}

/* Leaves the device as we found it: in its original configuration (the kernel then binds drivers to
 * the interfaces itself) or, when the host kept that one, with the drivers we unbound bound again. */
static void give_back(Passthrough *p) {
        int current = -1, r;
        size_t n = 0;

        release_interfaces(p);
        if (p->gone)
                return;
        (void) libusb_get_configuration(p->handle, &current);
        if (p->n_detached == 0 && current == p->original_config)
                return; /* we changed nothing */
        if (p->original_config > 0 && current != p->original_config) {
                r = libusb_set_configuration(p->handle, p->original_config);
                if (r < 0)
                        log_warning("%s: cannot restore configuration %d of %s: %s", p->name,
                                    p->original_config, p->path, libusb_strerror(r));
                else
                        log_info("%s: gave %s back in configuration %d", p->name, p->path, p->original_config);
                return;
        }
        for (size_t i = 0; i < p->n_detached; i++) {
                r = libusb_attach_kernel_driver(p->handle, p->detached[i]);
                if (r < 0)
                        log_warning("%s: cannot re-attach the kernel driver of interface %u: %s", p->name,
                                    p->detached[i], libusb_strerror(r));
                else
                        n++;
        }
        log_info("%s: gave %s back: kernel drivers re-attached to %zu interface(s)", p->name, p->path, n);
}

/* ---- power management ----
 *
 * The importing kernel suspends the exported device by suspending its port on our hub; the real
 * device's own kernel then decides when to suspend it, as for any device, once usbfs lets it:
 * USBDEVFS_ALLOW_SUSPEND drops the usage count our open file holds, USBDEVFS_FORBID_SUSPEND takes it
 * back and resumes the device before it returns. A resume we did not ask for (the device's remote
 * wakeup) only shows as USBDEVFS_WAIT_FOR_RESUME returning, and that ioctl blocks: a thread waits in it
 * while the port is suspended and hands the result to the event loop through an eventfd. */

/* One word from a power/ attribute of a sysfs device directory. */
static int read_power_attr(const char *sysfs_dir, const char *name, char *buf, size_t size) {
        _cleanup_free_ char *fn = NULL;
        ssize_t n;
        int fd;

        assert(size > 1);
        if (asprintf(&fn, "%s/power/%s", sysfs_dir, name) < 0)
                return -ENOMEM;
        fd = open(fn, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, size - 1);
        n = n < 0 ? -errno : n;
        close(fd);
        if (n < 0)
                return (int) n;
        buf[n] = 0;
        buf[strcspn(buf, "\n")] = 0;
        return 0;
}

int passthrough_power_control(const char *sysfs_dir) {
        char buf[16];
        int r;

        r = read_power_attr(sysfs_dir, "control", buf, sizeof(buf));
        if (r < 0)
                return r;
        if (streq(buf, "auto"))
                return 1;
        if (streq(buf, "on"))
                return 0;
        return -EBADMSG;
}

PassthroughWakeupNote passthrough_wakeup_note(const uint8_t setup[static 8], int32_t status,
                                              const uint8_t *data, uint32_t actual) {
        UsbSetup s;

        usb_setup_decode(setup, &s);
        if (status < 0 || usb_setup_type(&s) != USB_TYPE_STANDARD ||
            usb_setup_recipient(&s) != USB_RECIP_DEVICE)
                return PASSTHROUGH_WAKEUP_NOTHING;
        switch (s.bRequest) {
        case USB_REQ_SET_FEATURE:
        case USB_REQ_CLEAR_FEATURE:
                if (s.wValue != USB_DEVICE_REMOTE_WAKEUP || usb_setup_is_in(&s))
                        return PASSTHROUGH_WAKEUP_NOTHING;
                return s.bRequest == USB_REQ_SET_FEATURE ? PASSTHROUGH_WAKEUP_ARMED_BY_HOST
                                                         : PASSTHROUGH_WAKEUP_DISARMED_BY_HOST;
        case USB_REQ_GET_STATUS:
                if (!usb_setup_is_in(&s) || s.wIndex != 0 || actual < 2 || !data)
                        return PASSTHROUGH_WAKEUP_NOTHING;
                /* Linux clears the feature itself after every resume of the real device
                 * (finish_port_resume()), behind the importing kernel's back: the answer tells. */
                return get_le16(data) & (1u << USB_DEVICE_REMOTE_WAKEUP) ? PASSTHROUGH_WAKEUP_ARMED
                                                                          : PASSTHROUGH_WAKEUP_DISARMED;
        default:
                return PASSTHROUGH_WAKEUP_NOTHING;
        }
}

static void note_wakeup_setting(Passthrough *p, const uint8_t *setup, int32_t status, const uint8_t *data,
                                uint32_t actual) {
        PassthroughWakeupNote n = passthrough_wakeup_note(setup, status, data, actual);

        switch (n) {
        case PASSTHROUGH_WAKEUP_NOTHING:
                return;
        case PASSTHROUGH_WAKEUP_ARMED_BY_HOST:
        case PASSTHROUGH_WAKEUP_DISARMED_BY_HOST:
                usb_device_note_remote_wakeup(p->device, n == PASSTHROUGH_WAKEUP_ARMED_BY_HOST, true);
                return;
        case PASSTHROUGH_WAKEUP_ARMED:
        case PASSTHROUGH_WAKEUP_DISARMED:
                usb_device_note_remote_wakeup(p->device, n == PASSTHROUGH_WAKEUP_ARMED, false);
                return;
        }
}

static int waiter_signal(void) {
        return SIGRTMIN;
}

static void on_waiter_signal(int sig) {
        /* Nothing to do: being delivered is the point, it makes the waiter's ioctl return EINTR. */
}

static int waiter_signal_install_result;

static void waiter_signal_install(void) {
        /* No SA_RESTART, though usbfs returns EINTR from WAIT_FOR_RESUME either way. */
        struct sigaction sa = { .sa_handler = on_waiter_signal };

        sigemptyset(&sa.sa_mask);
        waiter_signal_install_result = sigaction(waiter_signal(), &sa, NULL) < 0 ? -errno : 0;
}

static void *waiter_main(void *userdata) {
        Passthrough *p = userdata;
        sigset_t mask;
        int r;

        sigfillset(&mask);
        sigdelset(&mask, waiter_signal());
        (void) pthread_sigmask(SIG_SETMASK, &mask, NULL);

        for (;;) {
                if (atomic_load(&p->waiter_stop)) {
                        r = -EINTR;
                        break;
                }
                /* Returns once the device resumed, for whatever reason, with suspend forbidden again. */
                r = ioctl(p->usbfs_fd, USBDEVFS_WAIT_FOR_RESUME) < 0 ? -errno : 0;
                if (r != -EINTR)
                        break;
        }

        atomic_store(&p->waiter_result, r);
        atomic_store(&p->waiter_done, true);
        (void) eventfd_write(p->waiter_fd, 1);
        return NULL;
}

static int waiter_start(Passthrough *p) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        int r;

        assert(!p->waiter_running);
        (void) pthread_once(&once, waiter_signal_install);
        if (waiter_signal_install_result < 0)
                return waiter_signal_install_result;
        atomic_store(&p->waiter_stop, false);
        atomic_store(&p->waiter_done, false);
        r = pthread_create(&p->waiter, NULL, waiter_main, p);
        if (r != 0)
                return -r;
        p->waiter_running = true;
        return 0;
}

/* Joins a waiter that is done or about to be (it wrote to the eventfd, or was interrupted). */
static int waiter_join(Passthrough *p) {
        eventfd_t v;

        if (!p->waiter_running)
                return -ESRCH;
        (void) pthread_join(p->waiter, NULL);
        p->waiter_running = false;
        (void) eventfd_read(p->waiter_fd, &v); /* nonblocking: a late write must not look like news */
        return atomic_load(&p->waiter_result);
}

static int waiter_stop(Passthrough *p) {
        if (!p->waiter_running)
                return -ESRCH;
        atomic_store(&p->waiter_stop, true);
        /* A signal that lands just before the thread enters the ioctl is lost: repeat until it is out. */
        for (unsigned i = 0; i < PASSTHROUGH_WAITER_KICKS && !atomic_load(&p->waiter_done); i++) {
                (void) pthread_kill(p->waiter, waiter_signal());
                (void) nanosleep(&(struct timespec) { .tv_nsec = 1000 * 1000 }, NULL);
        }
        if (!atomic_load(&p->waiter_done))
                log_warning("%s: the resume waiter for %s does not stop; waiting for the kernel", p->name,
                            p->path);
        return waiter_join(p);
}

/* The port is suspended: the real device may autosuspend, as its own kernel's policy says. */
static void pm_let_idle(Passthrough *p) {
        int r;

        if (!p->pm || p->gone || p->suspend_allowed)
                return;
        if (ioctl(p->usbfs_fd, USBDEVFS_ALLOW_SUSPEND) < 0) {
                log_warning_errno(errno, "%s: usbfs does not let %s suspend, it stays awake: %m", p->name,
                                  p->path);
                return;
        }
        p->suspend_allowed = true;
        p->idles++;
        r = waiter_start(p);
        if (r < 0)
                log_warning_errno(r, "%s: cannot wait for %s to resume; its remote wakeup will not reach "
                                  "the host: %m", p->name, p->path);
        log_debug("%s: port suspended, %s may autosuspend", p->name, p->path);
}

/* The port resumed (or is gone): the real device must be awake before the first URB reaches it.
 * FORBID_SUSPEND resumes it synchronously; a healthy device takes tens of milliseconds. */
static void pm_keep_awake(Passthrough *p) {
        uint64_t start = usb_device_now_usec();
        char status[16] = "?";
        int r = 0;

        if (!p->suspend_allowed)
                return;
        /* Only for the record: whether this resume is a real one. */
        (void) read_power_attr(p->sysfs, "runtime_status", status, sizeof(status));
        if (!p->gone && ioctl(p->usbfs_fd, USBDEVFS_FORBID_SUSPEND) < 0)
                r = -errno;
        (void) waiter_stop(p);
        p->suspend_allowed = false;
        if (r == -ENODEV)
                return; /* libusb sees the hang-up */
        if (r < 0) {
                log_warning_errno(r, "%s: %s did not resume; the host's transfers will fail: %m", p->name,
                                  p->path);
                return;
        }
        p->resumes++;
        if (streq(status, "suspended"))
                p->real_resumes++;
        log_debug("%s: %s awake again after %.1f ms (it was %s)", p->name, p->path,
                  (double) (usb_device_now_usec() - start) / 1000.0, status);
}

static int on_waiter_done(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Passthrough *p = userdata;
        int r;

        r = waiter_join(p);
        if (r == -ESRCH)
                return 0; /* stopped meanwhile: old news */
        if (r == -ENODEV) {
                p->suspend_allowed = false;
                return 0; /* gone; libusb sees the hang-up */
        }
        if (r < 0) {
                /* The device failed to resume: suspend is still allowed, the port's resume retries. */
                log_warning_errno(r, "%s: waiting for %s to resume failed: %m", p->name, p->path);
                return 0;
        }
        /* usbfs forbade suspend again as it returned. */
        p->suspend_allowed = false;
        if (p->device->link != USB_LINK_SUSPENDED)
                return 0;

        /* It resumed and we did not ask: its remote wakeup (or a process on this machine opened it). */
        r = usb_device_signal_wakeup(p->device, false);
        if (r >= 0) {
                p->wakeups_forwarded++;
                log_info("%s: %s woke up on its own: remote wakeup signalled through the hub", p->name,
                         p->path);
                /* An injected wakeup-lost: nobody heard, the port stays suspended, so may the device. */
                if (p->device->link == USB_LINK_SUSPENDED)
                        pm_let_idle(p);
                return 0;
        }
        p->wakeups_refused++;
        log_debug_errno(r, "%s: %s resumed on its own, but the wakeup cannot go to the host (%s); "
                        "letting it idle again: %m", p->name, p->path,
                        r == -EPERM ? "it did not arm remote wakeup" : "no hub to carry it");
        pm_let_idle(p);
        return 0;
}

static void passthrough_link_changed(void *function, UsbLinkState old, UsbLinkState link) {
        Passthrough *p = function;

        switch (link) {
        case USB_LINK_SUSPENDED:
                pm_let_idle(p);
                return;
        case USB_LINK_CONNECTED:
        case USB_LINK_UNPLUGGED:
                pm_keep_awake(p);
                return;
        case _USB_LINK_STATE_MAX:
        case _USB_LINK_STATE_INVALID:
                return;
        }
}

static int pm_setup(Passthrough *p) {
        uint32_t caps = 0;
        int r;

        if (asprintf(&p->sysfs, "/sys/bus/usb/devices/%s", p->path) < 0) {
                p->sysfs = NULL;
                return log_oom();
        }

        if (ioctl(p->usbfs_fd, USBDEVFS_GET_CAPABILITIES, &caps) < 0 || !(caps & USBDEVFS_CAP_SUSPEND)) {
                log_notice("%s: this kernel's usbfs cannot let %s suspend (no USBDEVFS_CAP_SUSPEND, "
                           "Linux < 5.4): it stays awake while exported", p->name, p->path);
                return 0;
        }
        p->waiter_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (p->waiter_fd < 0)
                return log_error_errno(errno, "%s: cannot create an eventfd: %m", p->name);
        r = sd_event_add_io(p->event, &p->waiter_source, p->waiter_fd, EPOLLIN, on_waiter_done, p);
        if (r < 0)
                return log_error_errno(r, "%s: cannot watch the resume waiter: %m", p->name);
        (void) sd_event_source_set_description(p->waiter_source, "passthrough-resume");
        p->pm = true;

        /* Whether the real device may autosuspend is this machine's policy, not ours to change. */
        r = passthrough_power_control(p->sysfs);
        if (r == 0)
                log_notice("%s: %s has power/control=on: it stays awake while the host suspends its port "
                           "(write \"auto\" to %s/power/control to let it autosuspend)", p->name, p->path,
                           p->sysfs);
        else if (r < 0)
                log_debug_errno(r, "%s: cannot read %s/power/control: %m", p->name, p->sysfs);
        return 0;
}

/* ---- transfers ---- */

static int32_t status_from_libusb(enum libusb_transfer_status s) {
        switch (s) {
        case LIBUSB_TRANSFER_COMPLETED:
                return 0;
        case LIBUSB_TRANSFER_STALL:
                return -EPIPE;
        case LIBUSB_TRANSFER_NO_DEVICE:
                return -ESHUTDOWN;   /* what an HCD says of a device that left */
        case LIBUSB_TRANSFER_TIMED_OUT:
                return -ETIMEDOUT;
        case LIBUSB_TRANSFER_CANCELLED:
                return -ECONNRESET;  /* as an unlinked URB completes */
        case LIBUSB_TRANSFER_OVERFLOW:
                return -EOVERFLOW;
        case LIBUSB_TRANSFER_ERROR:
                return -EPROTO;      /* libusb folds CRC, bit-stuff and bus timeout errors into this one */
        }
        return -EPROTO;
}

/* For the synchronous libusb calls (the requests the kernel must make itself). */
static int32_t status_from_libusb_error(int r) {
        switch (r) {
        case LIBUSB_SUCCESS:
                return 0;
        case LIBUSB_ERROR_PIPE:
                return -EPIPE;
        case LIBUSB_ERROR_NO_DEVICE:
                return -ESHUTDOWN;
        case LIBUSB_ERROR_TIMEOUT:
                return -ETIMEDOUT;
        case LIBUSB_ERROR_OVERFLOW:
                return -EOVERFLOW;
        case LIBUSB_ERROR_NO_MEM:
                return -ENOMEM;
        case LIBUSB_ERROR_NOT_FOUND:
        case LIBUSB_ERROR_INVALID_PARAM:
                return -EPIPE;       /* a request the device cannot honour is a Request Error */
        default:
                return -EPROTO;
        }
}

static void transfer_free(Passthrough *p, PassthroughTransfer *t) {
        if (t->prev)
                t->prev->next = t->next;
        else
                p->transfers = t->next;
        if (t->next)
                t->next->prev = t->prev;
        p->n_transfers--;
        libusb_free_transfer(t->transfer);
        free(t->control);
        free(t->orphan);
        free(t);
}

static void complete(Passthrough *p, Urb *u, int32_t status, uint32_t actual_length) {
        if (status == -EPIPE)
                p->stalls++;
        else if (status < 0)
                p->errors++;
        if (status == -ESHUTDOWN)
                mark_gone(p, "a transfer failed with NO_DEVICE");
        usb_device_complete(p->device, u, status, actual_length);
}

static void LIBUSB_CALL on_transfer_done(struct libusb_transfer *xfer) {
        PassthroughTransfer *t = xfer->user_data;
        Passthrough *p = t->passthrough;
        Urb *u = t->urb;
        int32_t status = status_from_libusb(xfer->status);
        uint32_t actual = xfer->actual_length > 0 ? (uint32_t) xfer->actual_length : 0;

        if (!u) {
                /* The host unlinked it, or its connection is gone: nobody to tell. */
                transfer_free(p, t);
                return;
        }
        if (t->control && u->in && actual > 0) {
                actual = MIN(actual, u->length);
                if (urb_ensure_buffer(u) < 0) {
                        status = -ENOMEM;
                        actual = 0;
                } else
                        memcpy(urb_data(u), t->control + LIBUSB_CONTROL_SETUP_SIZE, actual);
        }
        if (t->control)
                note_wakeup_setting(p, t->control, status, t->control + LIBUSB_CONTROL_SETUP_SIZE, actual);
        /* As try_transfer() does for our own functions: vhci does not enforce URB_SHORT_NOT_OK, and
         * usb-storage relies on it for bulk IN. */
        if (status == 0 && !t->control && u->in && actual < u->length && (u->transfer_flags & USBIP_URB_SHORT_NOT_OK))
                status = -EREMOTEIO;
        if (status == -EPIPE)
                log_debug("%s: URB %u on ep %u %s stalled", p->name, u->seqnum, u->ep, u->in ? "IN" : "OUT");
        else if (status < 0 && status != -EREMOTEIO) /* a short IN transfer is routine for usb-storage */
                log_debug("%s: URB %u on ep %u %s: %s", p->name, u->seqnum, u->ep, u->in ? "IN" : "OUT",
                          strerror(-status));
        transfer_free(p, t);
        complete(p, u, status, actual);
}

/* A transfer libusb never took. */
static void transfer_discard(PassthroughTransfer *t) {
        libusb_free_transfer(t->transfer);
        free(t->control);
        free(t);
}

static int submit_transfer(Passthrough *p, PassthroughTransfer *t) {
        Urb *u = t->urb;
        int r;

        r = libusb_submit_transfer(t->transfer);
        if (r < 0) {
                log_debug("%s: cannot submit URB %u: %s", p->name, u->seqnum, libusb_strerror(r));
                transfer_discard(t);
                complete(p, u, status_from_libusb_error(r), 0);
                return 0;
        }
        t->prev = NULL;
        t->next = p->transfers;
        if (p->transfers)
                p->transfers->prev = t;
        p->transfers = t;
        p->n_transfers++;
        p->forwarded++;
        return 0;
}

static PassthroughTransfer *transfer_new(Passthrough *p, Urb *u) {
        PassthroughTransfer *t = calloc(1, sizeof(PassthroughTransfer));

        if (!t)
                return NULL;
        t->transfer = libusb_alloc_transfer(0);
        if (!t->transfer)
                return mfree(t);
        t->passthrough = p;
        t->urb = u;
        return t;
}

static int set_configuration(Passthrough *p, uint8_t value) {
        const UsbConfigDesc *c = value ? find_config(p, value) : NULL;
        int r;

        if (value && !c)
                return -EPIPE;
        /* usbfs refuses to change the configuration while an interface is claimed, ours included. The
         * same value resets the configuration in place (endpoint toggles, alternate settings) without
         * the kernel binding drivers anew, which is what the host means by it. */
        release_interfaces(p);
        r = libusb_set_configuration(p->handle, value ? value : -1);
        if (r < 0) {
                log_warning("%s: SET_CONFIGURATION(%u) on %s failed: %s", p->name, value, p->path,
                            libusb_strerror(r));
                (void) claim_interfaces(p, find_config(p, p->device->configuration));
                return status_from_libusb_error(r);
        }
        r = claim_interfaces(p, c);
        if (r < 0)
                return -EPROTO;
        usb_device_set_configured(p->device, value);
        return 0;
}

/* The standard requests the kernel must make on the real device itself: it keeps the state they
 * change (claimed interfaces, endpoint toggles). Returns 1 when `s` was one of them and *ret_status
 * is set, 0 to forward it. */
static int standard_request(Passthrough *p, const UsbSetup *s, int32_t *ret_status) {
        uint8_t recipient = usb_setup_recipient(s);
        int r;

        if (usb_setup_type(s) != USB_TYPE_STANDARD)
                return 0;
        switch (s->bRequest) {
        case USB_REQ_SET_ADDRESS:
                /* vhci completes it itself; the real device keeps the address its own bus gave it. */
                *ret_status = 0;
                return 1;
        case USB_REQ_SET_CONFIGURATION:
                if (recipient != USB_RECIP_DEVICE)
                        return 0;
                *ret_status = set_configuration(p, s->wValue & 0xff);
                return 1;
        case USB_REQ_SET_INTERFACE:
                if (recipient != USB_RECIP_INTERFACE)
                        return 0;
                r = libusb_set_interface_alt_setting(p->handle, s->wIndex & 0xff, s->wValue & 0xff);
                *ret_status = status_from_libusb_error(r);
                return 1;
        case USB_REQ_CLEAR_FEATURE:
                if (recipient != USB_RECIP_ENDPOINT || s->wValue != USB_ENDPOINT_HALT ||
                    (s->wIndex & USB_ENDPOINT_NUMBER_MASK) == 0)
                        return 0;
                /* usbfs also resets the host controller's data toggle, as the request means. */
                log_debug("%s: clearing the halt of endpoint 0x%02x", p->name, s->wIndex & 0xff);
                r = libusb_clear_halt(p->handle, s->wIndex & 0xff);
                *ret_status = status_from_libusb_error(r);
                return 1;
        default:
                return 0;
        }
}

static int submit_control(Passthrough *p, Urb *u) {
        PassthroughTransfer *t;
        UsbSetup s;
        int32_t status;

        usb_setup_decode(u->setup, &s);
        if (standard_request(p, &s, &status)) {
                p->local_requests++;
                complete(p, u, status, 0);
                return 0;
        }
        /* OUT data comes with the URB: a data stage longer than what the host sent has nothing to send. */
        if (!usb_setup_is_in(&s) && s.wLength > u->length) {
                log_debug("%s: control OUT URB %u has %u bytes for wLength %u", p->name, u->seqnum,
                          u->length, s.wLength);
                complete(p, u, -EINVAL, 0);
                return 0;
        }

        t = transfer_new(p, u);
        if (!t) {
                complete(p, u, -ENOMEM, 0);
                return 0;
        }
        t->control = malloc(LIBUSB_CONTROL_SETUP_SIZE + (size_t) s.wLength);
        if (!t->control) {
                transfer_discard(t);
                complete(p, u, -ENOMEM, 0);
                return 0;
        }
        memcpy(t->control, u->setup, LIBUSB_CONTROL_SETUP_SIZE);
        if (!usb_setup_is_in(&s) && s.wLength > 0)
                memcpy(t->control + LIBUSB_CONTROL_SETUP_SIZE, urb_data(u), s.wLength);
        /* No timeout of our own: the importing kernel has its own and unlinks the URB, which cancels. */
        libusb_fill_control_transfer(t->transfer, p->handle, t->control, on_transfer_done, t, 0);
        return submit_transfer(p, t);
}

static int submit_data(Passthrough *p, Urb *u) {
        uint8_t address = u->ep | (u->in ? USB_DIR_IN : 0);
        const UsbEndpointDesc *ep = find_endpoint(p, address);
        PassthroughTransfer *t;

        if (!ep || !IN_SET(ep->bmAttributes & USB_ENDPOINT_XFERTYPE_MASK, USB_ENDPOINT_XFER_BULK,
                           USB_ENDPOINT_XFER_INT)) {
                /* As for our own devices: no handshake from an endpoint that does not exist. */
                log_debug("%s: URB %u for endpoint 0x%02x, which the configuration does not have",
                          p->name, u->seqnum, address);
                complete(p, u, -EPROTO, 0);
                return 0;
        }
        if (urb_ensure_buffer(u) < 0) {
                complete(p, u, -ENOMEM, 0);
                return 0;
        }
        t = transfer_new(p, u);
        if (!t) {
                complete(p, u, -ENOMEM, 0);
                return 0;
        }
        /* The URB's own buffer: IN data lands where the connection sends it from. */
        if ((ep->bmAttributes & USB_ENDPOINT_XFERTYPE_MASK) == USB_ENDPOINT_XFER_INT)
                libusb_fill_interrupt_transfer(t->transfer, p->handle, address, urb_data(u), (int) u->length,
                                               on_transfer_done, t, 0);
        else
                libusb_fill_bulk_transfer(t->transfer, p->handle, address, urb_data(u), (int) u->length,
                                          on_transfer_done, t, 0);
        if (!u->in && (u->transfer_flags & USBIP_URB_ZERO_PACKET))
                t->transfer->flags |= LIBUSB_TRANSFER_ADD_ZERO_PACKET;
        return submit_transfer(p, t);
}

static int passthrough_submit(void *function, Urb *u) {
        Passthrough *p = function;

        if (p->n_transfers >= PASSTHROUGH_MAX_TRANSFERS)
                return -ENOBUFS;
        if (p->gone) {
                complete(p, u, -ESHUTDOWN, 0);
                return 0;
        }
        if (u->ep == 0)
                return submit_control(p, u);
        return submit_data(p, u);
}

static void passthrough_cancel(void *function, Urb *u) {
        Passthrough *p = function;

        for (PassthroughTransfer *t = p->transfers; t; t = t->next) {
                int r;

                if (t->urb != u)
                        continue;
                t->urb = NULL;
                /* The URB is freed now; usbfs writes IN data into this buffer when libusb reaps the
                 * cancelled transfer, so the transfer keeps it. */
                if (!t->control && u->buf) {
                        t->orphan = u->buf;
                        u->buf = NULL;
                }
                r = libusb_cancel_transfer(t->transfer);
                if (r < 0 && r != LIBUSB_ERROR_NOT_FOUND)
                        log_debug("%s: cannot cancel URB %u: %s", p->name, u->seqnum, libusb_strerror(r));
                else
                        log_debug("%s: URB %u left before it completed: its transfer is cancelled", p->name,
                                  u->seqnum);
                p->cancelled++;
                return;
        }
}

static void passthrough_describe(void *function, FILE *f) {
        Passthrough *p = function;

        fprintf(f, "\"function\": \"passthrough\", \"path\": ");
        json_write_string(f, p->path);
        fprintf(f, ", \"vendor_id\": \"%04x\", \"product_id\": \"%04x\", \"gone\": %s, \"in_flight\": %u"
                ", \"forwarded\": %" PRIu64 ", \"local_requests\": %" PRIu64 ", \"stalls\": %" PRIu64
                ", \"errors\": %" PRIu64 ", \"cancelled\": %" PRIu64 ", \"detached_interfaces\": %zu"
                ", \"pm\": %s, \"suspend_allowed\": %s, \"idles\": %" PRIu64 ", \"resumes\": %" PRIu64
                ", \"real_resumes\": %" PRIu64 ", \"wakeups_forwarded\": %" PRIu64
                ", \"wakeups_refused\": %" PRIu64,
                p->vendor_id, p->product_id, p->gone ? "true" : "false", p->n_transfers, p->forwarded,
                p->local_requests, p->stalls, p->errors, p->cancelled, p->n_detached, p->pm ? "true" : "false",
                p->suspend_allowed ? "true" : "false", p->idles, p->resumes, p->real_resumes,
                p->wakeups_forwarded, p->wakeups_refused);
}

/* Cancelled transfers must come back before the handle closes: usbfs still owns their URBs. */
static void drain(Passthrough *p) {
        uint64_t deadline = usb_device_now_usec() + PASSTHROUGH_DRAIN_USEC;

        for (PassthroughTransfer *t = p->transfers; t; t = t->next)
                if (t->urb) {
                        /* Every URB left through cancel before the function is freed; belt and braces. */
                        t->urb = NULL;
                        (void) libusb_cancel_transfer(t->transfer);
                }
        while (p->n_transfers > 0 && usb_device_now_usec() < deadline) {
                struct timeval tv = { .tv_usec = 100 * 1000 };
                (void) libusb_handle_events_timeout_completed(p->ctx, &tv, NULL);
        }
        if (p->n_transfers > 0)
                log_warning("%s: %u cancelled transfers did not come back from %s; leaving them", p->name,
                            p->n_transfers, p->path);
}

static void passthrough_free(void *function) {
        Passthrough *p = function;

        if (!p)
                return;
        /* Awake for the give-back, and no thread left behind. */
        pm_keep_awake(p);
        (void) waiter_stop(p);
        if (p->handle) {
                drain(p);
                give_back(p);
        }
        if (p->ctx)
                libusb_set_pollfd_notifiers(p->ctx, NULL, NULL, NULL);
        for (size_t i = 0; i < ELEMENTSOF(p->polls); i++)
                sd_event_source_disable_unref(p->polls[i].source);
        sd_event_source_disable_unref(p->timer);
        sd_event_source_disable_unref(p->gone_source);
        sd_event_source_disable_unref(p->waiter_source);
        if (p->waiter_fd >= 0)
                close(p->waiter_fd);
        /* Transfers that never came back stay allocated: libusb may still touch them, and usbfs their
         * buffers, so the file stays open too. */
        if (p->n_transfers == 0) {
                if (p->handle)
                        libusb_close(p->handle);
                if (p->ctx)
                        libusb_exit(p->ctx);
                if (p->usbfs_fd >= 0)
                        close(p->usbfs_fd); /* libusb_close() leaves a wrapped file open */
        }
        for (size_t i = 0; i < p->n_configs; i++)
                passthrough_config_desc_done(&p->configs[i]);
        sd_event_unref(p->event);
        free(p->sysfs);
        free(p->name);
        free(p);
}

static const UsbFunctionOps passthrough_ops = {
        .submit = passthrough_submit,
        .cancel = passthrough_cancel,
        .link_changed = passthrough_link_changed,
        .describe = passthrough_describe,
        .free = passthrough_free,
};

Passthrough *passthrough_from_device(UsbDevice *d) {
        return d && d->ops == &passthrough_ops ? d->function : NULL;
}

/* ---- finding and opening the device ---- */

static int device_path(libusb_device *dev, char *buf, size_t size) {
        uint8_t ports[PASSTHROUGH_MAX_PORTS];
        int n, k;

        n = libusb_get_port_numbers(dev, ports, (int) ELEMENTSOF(ports));
        if (n <= 0)
                return -ENOENT; /* a root hub */
        k = snprintf(buf, size, "%u-%u", libusb_get_bus_number(dev), ports[0]);
        for (int i = 1; i < n && k > 0 && (size_t) k < size; i++)
                k += snprintf(buf + k, size - (size_t) k, ".%u", ports[i]);
        return k > 0 && (size_t) k < size ? 0 : -ENAMETOOLONG;
}

static bool serial_matches(libusb_device *dev, uint8_t index, const char *serial) {
        libusb_device_handle *h;
        unsigned char buf[256];
        int r;

        if (index == 0 || libusb_open(dev, &h) < 0)
                return false;
        r = libusb_get_string_descriptor_ascii(h, index, buf, sizeof(buf));
        libusb_close(h);
        return r >= 0 && (size_t) r < sizeof(buf) && strlen(serial) == (size_t) r && memcmp(buf, serial, (size_t) r) == 0;
}

static int find_device(libusb_context *ctx, const PassthroughConfig *cfg, libusb_device **ret) {
        libusb_device **list = NULL, *found = NULL;
        unsigned n_found = 0;
        ssize_t n;

        n = libusb_get_device_list(ctx, &list);
        if (n < 0)
                return log_error_errno(EIO, "%s: cannot list USB devices: %s", cfg->name, libusb_strerror((int) n));
        for (ssize_t i = 0; i < n; i++) {
                struct libusb_device_descriptor dd;
                char path[32];

                if (device_path(list[i], path, sizeof(path)) < 0 ||
                    libusb_get_device_descriptor(list[i], &dd) < 0)
                        continue;
                if (cfg->path ? !streq(path, cfg->path)
                              : dd.idVendor != cfg->vendor_id || dd.idProduct != cfg->product_id ||
                                        (cfg->serial && !serial_matches(list[i], dd.iSerialNumber, cfg->serial)))
                        continue;
                if (n_found++ == 0)
                        found = libusb_ref_device(list[i]);
        }
        libusb_free_device_list(list, true);

        if (n_found == 0) {
                if (cfg->path)
                        return log_error_errno(ENODEV, "%s: no USB device at %s", cfg->name, cfg->path);
                return log_error_errno(ENODEV, "%s: no USB device %04x:%04x%s%s", cfg->name, cfg->vendor_id,
                                       cfg->product_id, cfg->serial ? " with serial " : "", cfg->serial ?: "");
        }
        if (n_found > 1) {
                libusb_unref_device(found);
                return log_error_errno(ENOTUNIQ, "%s: %u USB devices are %04x:%04x%s; name one by serial "
                                       "(VID:PID:SERIAL) or by path (BUS-PORT[.PORT...])", cfg->name, n_found,
                                       cfg->vendor_id, cfg->product_id, cfg->serial ? " with that serial" : "");
        }
        *ret = found;
        return 0;
}

static UsbSpeed speed_from_libusb(int s) {
        switch (s) {
        case LIBUSB_SPEED_LOW:
                return USB_SPEED_LOW;
        case LIBUSB_SPEED_FULL:
                return USB_SPEED_FULL;
        case LIBUSB_SPEED_HIGH:
                return USB_SPEED_HIGH;
        case LIBUSB_SPEED_SUPER:
                return USB_SPEED_SUPER;
        case LIBUSB_SPEED_SUPER_PLUS:
                return USB_SPEED_SUPER_PLUS;
        default:
                return USB_SPEED_UNKNOWN;
        }
}

/* Raw descriptors as the device answers them, through a control read. */
static int read_descriptor(Passthrough *p, const char *name, uint8_t type, uint8_t index, uint8_t *buf,
                           size_t size) {
        int r = libusb_control_transfer(p->handle, USB_DIR_IN | USB_TYPE_STANDARD | USB_RECIP_DEVICE,
                                        USB_REQ_GET_DESCRIPTOR, (uint16_t) (type << 8 | index), 0, buf,
                                        (uint16_t) size, PASSTHROUGH_DESCRIPTOR_TIMEOUT_MS);
        if (r < 0)
                return log_error_errno(EIO, "%s: cannot read descriptor %u/%u of %s: %s", name, type, index, p->path,
                                       libusb_strerror(r));
        return r;
}

static int read_configs(Passthrough *p, const char *name, uint8_t n) {
        for (uint8_t i = 0; i < n; i++) {
                _cleanup_free_ uint8_t *raw = NULL;
                uint8_t header[USB_DT_CONFIG_SIZE];
                const UsbInterfaceDesc *intf = NULL;
                const UsbEndpointDesc *iso;
                uint16_t total;
                int r;

                r = read_descriptor(p, name, USB_DT_CONFIG, i, header, sizeof(header));
                if (r < 0)
                        return r;
                if (usb_desc_parse_config_header(header, (size_t) r, NULL, &total) < 0)
                        return log_error_errno(EBADMSG, "%s: configuration %u of %s is malformed", name, i, p->path);
                raw = malloc(total);
                if (!raw)
                        return log_oom();
                r = read_descriptor(p, name, USB_DT_CONFIG, i, raw, total);
                if (r < 0)
                        return r;
                r = passthrough_parse_config(raw, (size_t) r, &p->configs[i]);
                if (r == -ENOMEM)
                        return log_oom();
                if (r < 0)
                        return log_error_errno(r, "%s: configuration %u of %s is malformed", name, i, p->path);
                p->n_configs++;

                iso = passthrough_find_isochronous(&p->configs[i], &intf);
                if (iso)
                        return log_error_errno(EOPNOTSUPP, "%s: %s has an isochronous endpoint (0x%02x, interface "
                                               "%u alternate setting %u): passthrough does not forward "
                                               "isochronous transfers yet", name, p->path,
                                               iso->bEndpointAddress, intf->bInterfaceNumber,
                                               intf->bAlternateSetting);
        }
        return 0;
}

/* Opens the device's usbfs file ourselves and hands it to libusb: the power management ioctls must act
 * on the file libusb submits on, or the usage count of another open file keeps the device awake. */
static int open_usbfs(Passthrough *p, libusb_device *dev) {
        char node[64];
        int r;

        snprintf(node, sizeof(node), "/dev/bus/usb/%03u/%03u", libusb_get_bus_number(dev),
                 libusb_get_device_address(dev));
        p->usbfs_fd = open(node, O_RDWR | O_CLOEXEC);
        if (p->usbfs_fd < 0)
                return log_error_errno(errno, "%s: cannot open %s (%s): %m", p->name, node, p->path);
        r = libusb_wrap_sys_device(p->ctx, (intptr_t) p->usbfs_fd, &p->handle);
        if (r < 0) {
                p->handle = NULL;
                return log_error_errno(r == LIBUSB_ERROR_ACCESS ? EACCES : EIO,
                                       "%s: libusb cannot use %s (%s): %s", p->name, node, p->path,
                                       libusb_strerror(r));
        }
        return 0;
}

int passthrough_new(sd_event *event, const PassthroughConfig *cfg, UsbDevice **ret) {
        _cleanup_(usb_device_freep) UsbDevice *d = NULL;
        libusb_device *dev = NULL;
        Passthrough *p;
        uint8_t raw_device[USB_DT_DEVICE_SIZE];
        UsbDeviceDesc desc;
        UsbSpeed speed;
        int r;

        p = calloc(1, sizeof(Passthrough));
        if (!p)
                return log_oom();
        p->event = sd_event_ref(event);
        p->original_config = -1;
        p->usbfs_fd = -EBADF;
        p->waiter_fd = -EBADF;
        p->name = strdup(cfg->name);
        if (!p->name) {
                passthrough_free(p);
                return log_oom();
        }
        for (size_t i = 0; i < ELEMENTSOF(p->polls); i++)
                p->polls[i].fd = -EBADF;

        r = libusb_init(&p->ctx);
        if (r < 0) {
                p->ctx = NULL;
                passthrough_free(p);
                /* libusb says only "Other error" when its uevent monitor cannot open a netlink socket,
                 * which is what a sandbox without AF_NETLINK does: say what it needs. */
                return log_error_errno(EIO,
                                       "%s: cannot initialize libusb: %s (it needs /dev/bus/usb and a netlink "
                                       "socket; under drowse-emu.service install the passthrough drop-in, see "
                                       "drowse-emu(8), PASSTHROUGH)",
                                       cfg->name, libusb_strerror(r));
        }
        r = find_device(p->ctx, cfg, &dev);
        if (r < 0) {
                passthrough_free(p);
                return r;
        }
        if (device_path(dev, p->path, sizeof(p->path)) < 0)
                snprintf(p->path, sizeof(p->path), "?");
        speed = speed_from_libusb(libusb_get_device_speed(dev));
        r = open_usbfs(p, dev);
        libusb_unref_device(dev);
        if (r < 0) {
                passthrough_free(p);
                return r;
        }

        r = read_descriptor(p, cfg->name, USB_DT_DEVICE, 0, raw_device, sizeof(raw_device));
        if (r >= 0 && usb_desc_parse_device(raw_device, (size_t) r, &desc) < 0)
                r = log_error_errno(EBADMSG, "%s: the device descriptor of %s is malformed", cfg->name, p->path);
        if (r >= 0 && desc.bDeviceClass == USB_CLASS_HUB)
                r = log_error_errno(EOPNOTSUPP, "%s: %s is a hub: pass the devices behind it through one by one",
                                    cfg->name, p->path);
        if (r >= 0 && speed == USB_SPEED_UNKNOWN)
                r = log_error_errno(EOPNOTSUPP, "%s: libusb does not know the speed of %s", cfg->name, p->path);
        if (r >= 0 && (desc.bNumConfigurations == 0 || desc.bNumConfigurations > PASSTHROUGH_MAX_CONFIGS))
                r = log_error_errno(EBADMSG, "%s: %s claims %u configurations", cfg->name, p->path,
                                    desc.bNumConfigurations);
        if (r >= 0)
                r = read_configs(p, cfg->name, desc.bNumConfigurations);
        if (r < 0) {
                passthrough_free(p);
                return r;
        }
        p->vendor_id = desc.idVendor;
        p->product_id = desc.idProduct;
        desc.configs = p->configs;

        r = usb_device_new(cfg->name, &desc, speed, &d);
        if (r < 0) {
                passthrough_free(p);
                return log_oom();
        }
        usb_device_set_function(d, &passthrough_ops, p);
        p->device = d;

        r = libusb_get_configuration(p->handle, &p->original_config);
        if (r < 0)
                return log_error_errno(EIO, "%s: cannot read the configuration of %s: %s", cfg->name, p->path,
                                       libusb_strerror(r));
        if (p->original_config > 0) {
                r = claim_interfaces(p, find_config(p, (uint8_t) p->original_config));
                if (r < 0)
                        return r; /* freeing d gives back what was claimed so far */
        }
        r = watch_libusb(p);
        if (r < 0)
                return r;
        r = pm_setup(p);
        if (r < 0)
                return r;

        log_info("%s: passing through %s (%04x:%04x, %s speed, %u configuration(s))", cfg->name, p->path,
                 desc.idVendor, desc.idProduct, usb_speed_to_string(speed), p->n_configs);
        *ret = TAKE_PTR(d);
        return 0;
}
