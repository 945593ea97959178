/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Passthrough without a real device: the descriptor tables it builds from what a device answers, the
 * --passthrough / [passthrough NAME] syntax, the forwarding hooks of usb-device.c it rides on, and the
 * power management bookkeeping that needs no kernel (what a request says of remote wakeup, power/control,
 * link notifications, faults on forwarded requests). */

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "emu-config.h"
#include "fault.h"
#include "passthrough.h"
#include "tests.h"
#include "usb-device.h"

/* What f_mass_storage answers at high speed: one interface, bulk IN 0x81 and OUT 0x02. */
static const uint8_t msc_config[] = {
        9, USB_DT_CONFIG, 32, 0, 1, 1, 0, 0xc0, 1,
        9, USB_DT_INTERFACE, 0, 0, 2, 0x08, 0x06, 0x50, 5,
        7, USB_DT_ENDPOINT, 0x81, 0x02, 0x00, 0x02, 0,
        7, USB_DT_ENDPOINT, 0x02, 0x02, 0x00, 0x02, 1,
};

/* An audio-like function: an IAD, class descriptors, interface 1 with alternate setting 0 (no
 * endpoints) and 1 (an isochronous OUT endpoint with a class endpoint descriptor), and an interrupt
 * interface 2. */
static const uint8_t iso_config[84] = {
        9, USB_DT_CONFIG, 84, 0, 3, 1, 0, 0x80, 50,
        8, USB_DT_INTERFACE_ASSOCIATION, 0, 2, 0x01, 0x00, 0x20, 0,
        9, USB_DT_INTERFACE, 0, 0, 0, 0x01, 0x01, 0x20, 0,
        9, 0x24, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        9, USB_DT_INTERFACE, 1, 0, 0, 0x01, 0x02, 0x20, 0,
        9, USB_DT_INTERFACE, 1, 1, 1, 0x01, 0x02, 0x20, 0,
        7, USB_DT_ENDPOINT, 0x01, 0x05, 0xc0, 0x00, 4,
        8, 0x25, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        9, USB_DT_INTERFACE, 2, 0, 1, 0x03, 0x00, 0x00, 0,
        7, USB_DT_ENDPOINT, 0x83, 0x03, 0x08, 0x00, 7,
};

static void test_parse_msc(void) {
        UsbConfigDesc c;

        ASSERT_OK(passthrough_parse_config(msc_config, sizeof(msc_config), &c));
        ASSERT_EQ(c.bConfigurationValue, 1);
        ASSERT_EQ(c.bmAttributes, 0xc0);
        ASSERT_EQ(c.bNumInterfaces, 1);
        ASSERT_EQ(c.interfaces[0].bInterfaceClass, USB_CLASS_MASS_STORAGE);
        ASSERT_EQ(c.interfaces[0].bInterfaceProtocol, 0x50);
        ASSERT_EQ(c.interfaces[0].bNumEndpoints, 2);
        ASSERT_EQ(c.interfaces[0].endpoints[0].bEndpointAddress, 0x81);
        ASSERT_EQ(c.interfaces[0].endpoints[0].bmAttributes, USB_ENDPOINT_XFER_BULK);
        ASSERT_EQ(c.interfaces[0].endpoints[0].wMaxPacketSize, 512);
        ASSERT_EQ(c.interfaces[0].endpoints[1].bEndpointAddress, 0x02);
        ASSERT_TRUE(passthrough_find_isochronous(&c, NULL) == NULL);
        passthrough_config_desc_done(&c);
        ASSERT_TRUE(c.interfaces == NULL);
}

static void test_parse_alternate_settings(void) {
        const UsbInterfaceDesc *intf = NULL;
        const UsbEndpointDesc *iso;
        UsbConfigDesc c;

        ASSERT_OK(passthrough_parse_config(iso_config, sizeof(iso_config), &c));
        /* Entries, alternate settings included (usb-desc.h's convention). */
        ASSERT_EQ(c.bNumInterfaces, 4);
        ASSERT_EQ(c.interfaces[0].bNumEndpoints, 0);
        ASSERT_EQ(c.interfaces[1].bInterfaceNumber, 1);
        ASSERT_EQ(c.interfaces[1].bNumEndpoints, 0);
        ASSERT_EQ(c.interfaces[2].bAlternateSetting, 1);
        ASSERT_EQ(c.interfaces[2].bNumEndpoints, 1);
        ASSERT_EQ(c.interfaces[3].bNumEndpoints, 1);
        ASSERT_EQ(c.interfaces[3].endpoints[0].bEndpointAddress, 0x83);
        ASSERT_EQ(c.interfaces[3].endpoints[0].bInterval, 7);

        iso = passthrough_find_isochronous(&c, &intf);
        ASSERT_TRUE(iso != NULL);
        ASSERT_EQ(iso->bEndpointAddress, 0x01);
        ASSERT_EQ(intf->bInterfaceNumber, 1);
        ASSERT_EQ(intf->bAlternateSetting, 1);
        passthrough_config_desc_done(&c);
}

static void test_parse_malformed(void) {
        uint8_t buf[sizeof(msc_config)];
        UsbConfigDesc c;

        /* Cut short: wTotalLength says more than there is. */
        ASSERT_ERR(passthrough_parse_config(msc_config, sizeof(msc_config) - 1, &c), EBADMSG);
        ASSERT_ERR(passthrough_parse_config(msc_config, 4, &c), EBADMSG);
        ASSERT_ERR(passthrough_parse_config(NULL, 0, &c), EBADMSG);

        /* An endpoint before any interface. */
        memcpy(buf, msc_config, sizeof(buf));
        buf[9 + 1] = USB_DT_ENDPOINT;
        buf[9] = 7;
        buf[16] = 2, buf[17] = 0x24; /* the two bytes left over become a class descriptor */
        ASSERT_ERR(passthrough_parse_config(buf, sizeof(buf), &c), EBADMSG);

        /* An endpoint descriptor that claims to be ep0. */
        memcpy(buf, msc_config, sizeof(buf));
        buf[18 + 2] = 0x80;
        ASSERT_ERR(passthrough_parse_config(buf, sizeof(buf), &c), EBADMSG);

        /* A descriptor whose bLength runs past the end. */
        memcpy(buf, msc_config, sizeof(buf));
        buf[25] = 9;
        ASSERT_ERR(passthrough_parse_config(buf, sizeof(buf), &c), EBADMSG);

        /* An other-speed configuration is not what a device answers to GET_DESCRIPTOR(CONFIG). */
        memcpy(buf, msc_config, sizeof(buf));
        buf[1] = USB_DT_OTHER_SPEED_CONFIG;
        ASSERT_ERR(passthrough_parse_config(buf, sizeof(buf), &c), EBADMSG);
}

static void test_spec(void) {
        EmuConfig c;
        const char *error = NULL;

        emu_config_init(&c);
        ASSERT_OK(emu_config_add_passthrough_spec(&c, "0525:A4a5", &error));
        ASSERT_EQ(c.n_passthroughs, 1);
        ASSERT_STREQ(c.passthroughs[0].name, "pt0");
        ASSERT_EQ(c.passthroughs[0].vendor_id, 0x0525);
        ASSERT_EQ(c.passthroughs[0].product_id, 0xa4a5);
        ASSERT_TRUE(c.passthroughs[0].serial == NULL);
        ASSERT_TRUE(c.passthroughs[0].path == NULL);

        ASSERT_OK(emu_config_add_passthrough_spec(&c, "1d6b:0104:ab:cd 12,name=stick", &error));
        ASSERT_STREQ(c.passthroughs[1].name, "stick");
        ASSERT_STREQ(c.passthroughs[1].serial, "ab:cd 12");

        ASSERT_OK(emu_config_add_passthrough_spec(&c, "3-1.4.2", &error));
        ASSERT_STREQ(c.passthroughs[2].path, "3-1.4.2");
        ASSERT_EQ(c.passthroughs[2].vendor_id, 0);
        ASSERT_OK(emu_config_check(&c, &error));

        ASSERT_ERR(emu_config_add_passthrough_spec(&c, "0525", &error), EINVAL);
        ASSERT_ERR(emu_config_add_passthrough_spec(&c, "zz:0001", &error), EINVAL);
        ASSERT_ERR(emu_config_add_passthrough_spec(&c, "12345:0001", &error), EINVAL);
        ASSERT_ERR(emu_config_add_passthrough_spec(&c, "0525:a4a5:", &error), EINVAL);
        ASSERT_ERR(emu_config_add_passthrough_spec(&c, "1-", &error), EINVAL);
        ASSERT_ERR(emu_config_add_passthrough_spec(&c, "1-1.", &error), EINVAL);
        ASSERT_ERR(emu_config_add_passthrough_spec(&c, "a-1", &error), EINVAL);
        ASSERT_ERR(emu_config_add_passthrough_spec(&c, "1-1.1.1.1.1.1.1.1", &error), EINVAL);
        ASSERT_ERR(emu_config_add_passthrough_spec(&c, "name=x", &error), EINVAL);
        ASSERT_ERR(emu_config_add_passthrough_spec(&c, "1-2,name=stick", &error), EINVAL); /* taken */
        ASSERT_ERR(emu_config_add_passthrough_spec(&c, "1-2,bogus=1", &error), EINVAL);
        ASSERT_EQ(c.n_passthroughs, 3);

        /* hub= must name a hub, port= needs hub=. */
        ASSERT_OK(emu_config_add_passthrough_spec(&c, "1-2,hub=nohub", &error));
        ASSERT_ERR(emu_config_check(&c, &error), EINVAL);
        emu_config_done(&c);

        emu_config_init(&c);
        ASSERT_OK(emu_config_add_passthrough_spec(&c, "1-2,port=2", &error));
        ASSERT_ERR(emu_config_check(&c, &error), EINVAL);
        emu_config_done(&c);
}

static void test_ini(void) {
        EmuConfig c;
        const char *error = NULL;
        unsigned line = 0;

        emu_config_init(&c);
        ASSERT_OK(emu_config_load_string(&c,
                                         "[hub h]\n"
                                         "ports = 2\n"
                                         "[passthrough gadget]\n"
                                         "device = 0525:a4a5:drowse-pt\n"
                                         "hub = h\n"
                                         "port = 2\n"
                                         "[disk d]\n"
                                         "image = /tmp/x.img\n"
                                         "[passthrough other]\n"
                                         "device = 2-1\n",
                                         &line, &error));
        ASSERT_EQ(c.n_passthroughs, 2);
        ASSERT_STREQ(c.passthroughs[0].name, "gadget");
        ASSERT_STREQ(c.passthroughs[0].serial, "drowse-pt");
        ASSERT_STREQ(c.passthroughs[0].hub, "h");
        ASSERT_EQ(c.passthroughs[0].port, 2);
        ASSERT_STREQ(c.passthroughs[1].path, "2-1");
        ASSERT_EQ(c.n_disks, 1);
        ASSERT_OK(emu_config_check(&c, &error));
        emu_config_done(&c);

        emu_config_init(&c);
        /* No device: found when the section ends, as a disk without an image is. */
        ASSERT_ERR(emu_config_load_string(&c, "[passthrough x]\nhub = h\n", &line, &error), EINVAL);
        ASSERT_TRUE(strstr(error, "no device") != NULL);
        emu_config_done(&c);

        emu_config_init(&c);
        ASSERT_ERR(emu_config_load_string(&c, "[passthrough x]\ndevice = 1-1\nspeed = high\n", &line, &error), EINVAL);
        ASSERT_EQ(line, 3);
        emu_config_done(&c);
}

/* A forwarding function that keeps what it is given, to check usb-device.c's side of the contract. */
typedef struct Fake {
        Urb *taken[4];
        size_t n_taken;
        Urb *cancelled;
        bool refuse;
} Fake;

static int fake_submit(void *function, Urb *u) {
        Fake *f = function;

        if (f->refuse || f->n_taken >= ELEMENTSOF(f->taken))
                return -ENOBUFS;
        f->taken[f->n_taken++] = u;
        return 0;
}

static void fake_cancel(void *function, Urb *u) {
        ((Fake *) function)->cancelled = u;
}

static UsbLinkState fake_link_old = _USB_LINK_STATE_INVALID, fake_link_new = _USB_LINK_STATE_INVALID;
static unsigned fake_link_calls;

static void fake_link_changed(void *function, UsbLinkState old, UsbLinkState link) {
        fake_link_old = old;
        fake_link_new = link;
        fake_link_calls++;
}

static const UsbFunctionOps fake_ops = {
        .submit = fake_submit,
        .cancel = fake_cancel,
        .link_changed = fake_link_changed,
};

static int n_completed;
static int32_t last_status;

static void on_complete(Urb *u, void *userdata) {
        n_completed++;
        last_status = u->status;
        urb_free(u);
}

static Urb *make_urb(uint32_t seqnum, uint8_t ep, bool in) {
        Urb *u;

        ASSERT_OK(urb_new(seqnum, ep, in, 64, &u));
        u->complete = on_complete;
        return u;
}

static void test_forwarding(void) {
        static const UsbEndpointDesc eps[] = { { .bEndpointAddress = 0x81, .bmAttributes = USB_ENDPOINT_XFER_BULK } };
        static const UsbInterfaceDesc intfs[] = { { .bNumEndpoints = 1, .endpoints = eps } };
        static const UsbConfigDesc configs[] = { { .bConfigurationValue = 1, .bNumInterfaces = 1, .interfaces = intfs } };
        static const UsbDeviceDesc desc = { .bcdUSB = 0x0200, .bMaxPacketSize0 = 64, .bNumConfigurations = 1,
                                            .configs = configs };
        UsbDevice *d;
        Fake f = {};
        Urb *u, *ctrl;

        ASSERT_OK(usb_device_new("fake", &desc, USB_SPEED_HIGH, &d));
        usb_device_set_function(d, &fake_ops, &f);

        /* Everything goes to the function, ep0 and unconfigured endpoints alike, and stays pending. */
        ctrl = make_urb(1, 0, true);
        usb_setup_encode(ctrl->setup, &(UsbSetup) { .bmRequestType = USB_DIR_IN, .bRequest = USB_REQ_GET_DESCRIPTOR,
                                                    .wValue = USB_DT_DEVICE << 8, .wLength = 18 });
        ASSERT_OK(usb_device_submit(d, ctrl, 1));
        ASSERT_EQ(d->state, USB_DEVICE_STATE_ADDRESSED); /* the reset inference still sees ep0 */
        u = make_urb(2, 1, true);
        ASSERT_OK(usb_device_submit(d, u, 2));
        ASSERT_EQ(f.n_taken, 2);
        ASSERT_EQ(d->n_pending, 2);
        ASSERT_TRUE(usb_device_find_pending(d, 2) == u);
        ASSERT_EQ(n_completed, 0);

        /* Kicking does not retry in-flight URBs. */
        usb_device_kick(d);
        ASSERT_EQ(n_completed, 0);

        usb_device_complete(d, ctrl, 0, 18);
        ASSERT_EQ(n_completed, 1);
        ASSERT_EQ(d->n_pending, 1);

        /* An unlink hands it back and tells the function. */
        ASSERT_TRUE(usb_device_unlink(d, 2) == u);
        ASSERT_TRUE(f.cancelled == u);
        ASSERT_EQ(d->n_pending, 0);
        urb_free(u);

        /* A refusal leaves the URB with the caller and nothing pending. */
        f.refuse = true;
        u = make_urb(3, 1, true);
        ASSERT_ERR(usb_device_submit(d, u, 3), ENOBUFS);
        ASSERT_EQ(d->n_pending, 0);
        ASSERT_TRUE(usb_device_find_pending(d, 3) == NULL);
        f.refuse = false;
        ASSERT_OK(usb_device_submit(d, u, 4));

        /* A suspended link still answers for the function: no handshake. */
        usb_device_set_link(d, USB_LINK_SUSPENDED, 5);
        ASSERT_OK(usb_device_submit(d, make_urb(4, 1, true), 5));
        ASSERT_EQ(last_status, -EPROTO);
        usb_device_set_link(d, USB_LINK_CONNECTED, 6);

        usb_device_set_configured(d, 1);
        ASSERT_EQ(d->state, USB_DEVICE_STATE_CONFIGURED);
        ASSERT_TRUE(usb_device_active_config(d) == &configs[0]);

        /* Dropping (connection gone) cancels what is still pending. */
        f.cancelled = NULL;
        usb_device_drop_pending(d);
        ASSERT_TRUE(f.cancelled == u);
        ASSERT_EQ(d->n_pending, 0);

        d->ops = NULL; /* f is on the stack */
        usb_device_free(d);
}

static void setup_bytes(uint8_t out[8], uint8_t type, uint8_t request, uint16_t value, uint16_t index,
                        uint16_t length) {
        usb_setup_encode(out, &(UsbSetup) { .bmRequestType = type, .bRequest = request, .wValue = value,
                                            .wIndex = index, .wLength = length });
}

static void test_wakeup_note(void) {
        static const uint8_t armed[2] = { 0x02, 0x00 }, self_powered[2] = { 0x01, 0x00 };
        uint8_t s[8];

        setup_bytes(s, USB_DIR_OUT | USB_TYPE_STANDARD | USB_RECIP_DEVICE, USB_REQ_SET_FEATURE,
                    USB_DEVICE_REMOTE_WAKEUP, 0, 0);
        ASSERT_EQ(passthrough_wakeup_note(s, 0, NULL, 0), PASSTHROUGH_WAKEUP_ARMED_BY_HOST);
        /* A device without remote wakeup stalls it: nothing is armed. */
        ASSERT_EQ(passthrough_wakeup_note(s, -EPIPE, NULL, 0), PASSTHROUGH_WAKEUP_NOTHING);

        setup_bytes(s, USB_DIR_OUT | USB_TYPE_STANDARD | USB_RECIP_DEVICE, USB_REQ_CLEAR_FEATURE,
                    USB_DEVICE_REMOTE_WAKEUP, 0, 0);
        ASSERT_EQ(passthrough_wakeup_note(s, 0, NULL, 0), PASSTHROUGH_WAKEUP_DISARMED_BY_HOST);

        /* Other features, other recipients, other request types say nothing of it. */
        setup_bytes(s, USB_DIR_OUT | USB_TYPE_STANDARD | USB_RECIP_DEVICE, USB_REQ_SET_FEATURE, 2 /* TEST_MODE */,
                    0x0400, 0);
        ASSERT_EQ(passthrough_wakeup_note(s, 0, NULL, 0), PASSTHROUGH_WAKEUP_NOTHING);
        setup_bytes(s, USB_DIR_OUT | USB_TYPE_STANDARD | USB_RECIP_ENDPOINT, USB_REQ_CLEAR_FEATURE,
                    USB_ENDPOINT_HALT, 0x81, 0);
        ASSERT_EQ(passthrough_wakeup_note(s, 0, NULL, 0), PASSTHROUGH_WAKEUP_NOTHING);
        setup_bytes(s, USB_DIR_OUT | USB_TYPE_CLASS | USB_RECIP_DEVICE, USB_REQ_SET_FEATURE,
                    USB_DEVICE_REMOTE_WAKEUP, 0, 0);
        ASSERT_EQ(passthrough_wakeup_note(s, 0, NULL, 0), PASSTHROUGH_WAKEUP_NOTHING);

        /* GET_STATUS(device) tells what the device holds, whoever set or cleared it. */
        setup_bytes(s, USB_DIR_IN | USB_TYPE_STANDARD | USB_RECIP_DEVICE, USB_REQ_GET_STATUS, 0, 0, 2);
        ASSERT_EQ(passthrough_wakeup_note(s, 0, armed, 2), PASSTHROUGH_WAKEUP_ARMED);
        ASSERT_EQ(passthrough_wakeup_note(s, 0, self_powered, 2), PASSTHROUGH_WAKEUP_DISARMED);
        ASSERT_EQ(passthrough_wakeup_note(s, 0, armed, 1), PASSTHROUGH_WAKEUP_NOTHING);   /* short */
        ASSERT_EQ(passthrough_wakeup_note(s, -EPROTO, armed, 2), PASSTHROUGH_WAKEUP_NOTHING);
        setup_bytes(s, USB_DIR_IN | USB_TYPE_STANDARD | USB_RECIP_INTERFACE, USB_REQ_GET_STATUS, 0, 0, 2);
        ASSERT_EQ(passthrough_wakeup_note(s, 0, armed, 2), PASSTHROUGH_WAKEUP_NOTHING);
}

static void write_file(const char *dir, const char *name, const char *text) {
        char fn[256];
        int fd;

        snprintf(fn, sizeof(fn), "%s/%s", dir, name);
        fd = open(fn, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ASSERT_TRUE(fd >= 0);
        ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        close(fd);
}

static void test_power_control(void) {
        char dir[] = "/tmp/test-passthrough-XXXXXX", power[64];

        ASSERT_TRUE(mkdtemp(dir) != NULL);
        ASSERT_ERR(passthrough_power_control(dir), ENOENT);
        snprintf(power, sizeof(power), "%s/power", dir);
        ASSERT_OK(mkdir(power, 0755));
        write_file(dir, "power/control", "auto\n");
        ASSERT_EQ(passthrough_power_control(dir), 1);
        write_file(dir, "power/control", "on\n");
        ASSERT_EQ(passthrough_power_control(dir), 0);
        write_file(dir, "power/control", "sometimes\n");
        ASSERT_ERR(passthrough_power_control(dir), EBADMSG);
        write_file(dir, "power/control", "");
        ASSERT_ERR(passthrough_power_control(dir), EBADMSG);

        snprintf(power, sizeof(power), "%s/power/control", dir);
        ASSERT_OK(unlink(power));
        snprintf(power, sizeof(power), "%s/power", dir);
        ASSERT_OK(rmdir(power));
        ASSERT_OK(rmdir(dir));
}

static unsigned hook_calls;
static unsigned hook_saw_function_calls;

static void on_link_hook(UsbDevice *d, UsbLinkState old, void *userdata) {
        hook_calls++;
        hook_saw_function_calls = fake_link_calls;
}

static const UsbConfigDesc wakeup_configs[] = { { .bConfigurationValue = 1, .bmAttributes = 0xa0 } };
static const UsbDeviceDesc wakeup_desc = { .bcdUSB = 0x0200, .bMaxPacketSize0 = 64, .bNumConfigurations = 1,
                                           .configs = wakeup_configs };

/* The function hears of every link change, before the fault injector's hook and only on a change. */
static void test_link_changed(void) {
        UsbDevice *d;
        Fake f = {};

        ASSERT_OK(usb_device_new("fake", &wakeup_desc, USB_SPEED_HIGH, &d));
        usb_device_set_function(d, &fake_ops, &f);
        d->link_hook = on_link_hook;
        fake_link_calls = hook_calls = 0;

        usb_device_set_link(d, USB_LINK_SUSPENDED, 1);
        ASSERT_EQ(fake_link_calls, 1);
        ASSERT_EQ(fake_link_old, USB_LINK_CONNECTED);
        ASSERT_EQ(fake_link_new, USB_LINK_SUSPENDED);
        ASSERT_EQ(hook_calls, 1);
        ASSERT_EQ(hook_saw_function_calls, 1);

        usb_device_set_link(d, USB_LINK_SUSPENDED, 2);
        ASSERT_EQ(fake_link_calls, 1);

        usb_device_set_link(d, USB_LINK_CONNECTED, 3);
        ASSERT_EQ(fake_link_calls, 2);
        ASSERT_EQ(fake_link_old, USB_LINK_SUSPENDED);
        ASSERT_EQ(fake_link_new, USB_LINK_CONNECTED);

        usb_device_set_link(d, USB_LINK_UNPLUGGED, 4);
        ASSERT_EQ(fake_link_new, USB_LINK_UNPLUGGED);
        ASSERT_EQ(hook_calls, 3);

        /* What the real device took or reports is the exported device's remote wakeup setting. */
        usb_device_note_remote_wakeup(d, true, true);
        ASSERT_TRUE(d->remote_wakeup);
        ASSERT_EQ(d->stats.remote_wakeup_sets, 1);
        usb_device_note_remote_wakeup(d, false, false);
        ASSERT_FALSE(d->remote_wakeup);
        ASSERT_EQ(d->stats.remote_wakeup_clears, 0);
        usb_device_note_remote_wakeup(d, false, true);
        ASSERT_EQ(d->stats.remote_wakeup_clears, 1);

        d->ops = NULL;
        usb_device_free(d);
}

static Urb *make_control(uint32_t seqnum, uint8_t type, uint8_t request, uint16_t value, uint16_t length) {
        Urb *u = make_urb(seqnum, 0, type & USB_DIR_IN);

        setup_bytes(u->setup, type, request, value, 0, length);
        return u;
}

static void add_fault(UsbDevice *d, const char *spec) {
        _cleanup_free_ char *error = NULL;
        Fault *f, **tail;

        ASSERT_OK(fault_parse(spec, 1, &f, &error));
        for (tail = &d->faults; *tail; tail = &(*tail)->next)
                ;
        *tail = f;
}

static uint64_t held_usec;

static void on_complete_held(Urb *u, void *userdata) {
        held_usec = u->hold_usec;
        on_complete(u, userdata);
}

/* The faults that strike standard requests of our own devices strike forwarded ones before they reach
 * the real device. */
static void test_forward_faults(void) {
        const uint8_t std_out = USB_DIR_OUT | USB_TYPE_STANDARD | USB_RECIP_DEVICE;
        const uint8_t std_in = USB_DIR_IN | USB_TYPE_STANDARD | USB_RECIP_DEVICE;
        UsbDevice *d;
        Fake f = {};
        Urb *u;

        ASSERT_OK(usb_device_new("fake", &wakeup_desc, USB_SPEED_HIGH, &d));
        usb_device_set_function(d, &fake_ops, &f);
        add_fault(d, "remote-wakeup-stall count=1");
        add_fault(d, "resume-status-stall count=1");
        add_fault(d, "resume-status-timeout count=1");
        n_completed = 0;

        u = make_control(1, std_out, USB_REQ_SET_FEATURE, USB_DEVICE_REMOTE_WAKEUP, 0);
        ASSERT_OK(usb_device_submit(d, u, 1));
        ASSERT_EQ(n_completed, 1);
        ASSERT_EQ(last_status, -EPIPE);
        ASSERT_EQ(f.n_taken, 0);
        ASSERT_EQ(d->n_pending, 0);
        /* Once: the next one reaches the device. */
        u = make_control(2, std_out, USB_REQ_SET_FEATURE, USB_DEVICE_REMOTE_WAKEUP, 0);
        ASSERT_OK(usb_device_submit(d, u, 2));
        ASSERT_EQ(f.n_taken, 1);
        usb_device_complete(d, u, 0, 0);

        /* GET_STATUS(device) without a resume before it: forwarded. */
        ASSERT_OK(usb_device_submit(d, u = make_control(3, std_in, USB_REQ_GET_STATUS, 0, 2), 3));
        ASSERT_EQ(f.n_taken, 2);
        usb_device_complete(d, u, 0, 2);

        usb_device_set_link(d, USB_LINK_SUSPENDED, 4);
        usb_device_set_link(d, USB_LINK_CONNECTED, 5);
        ASSERT_OK(usb_device_submit(d, make_control(4, std_in, USB_REQ_GET_STATUS, 0, 2), 6));
        ASSERT_EQ(last_status, -EPIPE);
        ASSERT_EQ(f.n_taken, 2);

        usb_device_set_link(d, USB_LINK_SUSPENDED, 7);
        usb_device_set_link(d, USB_LINK_CONNECTED, 8);
        u = make_control(5, std_in, USB_REQ_GET_STATUS, 0, 2);
        u->complete = on_complete_held;
        ASSERT_OK(usb_device_submit(d, u, 9));
        ASSERT_EQ(held_usec, URB_HOLD_FOREVER);
        ASSERT_EQ(f.n_taken, 2);

        /* Every fault spent: the status after the next resume goes to the device. */
        usb_device_set_link(d, USB_LINK_SUSPENDED, 10);
        usb_device_set_link(d, USB_LINK_CONNECTED, 11);
        ASSERT_OK(usb_device_submit(d, u = make_control(6, std_in, USB_REQ_GET_STATUS, 0, 2), 12));
        ASSERT_EQ(f.n_taken, 3);
        usb_device_complete(d, u, 0, 2);

        d->ops = NULL;
        usb_device_free(d);
}

TEST_MAIN(TEST(test_parse_msc), TEST(test_parse_alternate_settings), TEST(test_parse_malformed), TEST(test_spec),
          TEST(test_ini), TEST(test_forwarding), TEST(test_wakeup_note), TEST(test_power_control),
          TEST(test_link_changed), TEST(test_forward_faults))
