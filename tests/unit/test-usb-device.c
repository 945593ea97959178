/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "tests.h"
#include "usb-device.h"

/* A function with one bulk IN and one bulk OUT endpoint: OUT data is echoed back on IN, so an IN URB
 * has to wait until something was written. */
typedef struct Echo {
        uint8_t data[64];
        size_t len;
        unsigned clear_halts, resets;
} Echo;

static ssize_t echo_transfer(void *function, uint8_t ep, uint8_t *buf, size_t size) {
        Echo *e = function;
        if (ep & USB_DIR_IN) {
                if (e->len == 0)
                        return -EAGAIN;
                size_t n = MIN(size, e->len);
                memcpy(buf, e->data, n);
                e->len = 0;
                return (ssize_t) n;
        }
        if (size > sizeof(e->data))
                return -EPIPE;
        memcpy(e->data, buf, size);
        e->len = size;
        return (ssize_t) size;
}

static bool echo_in_ready(void *function, uint8_t ep) {
        return ((Echo *) function)->len > 0;
}

static void echo_clear_halt(void *function, uint8_t ep) {
        ((Echo *) function)->clear_halts++;
}

static void echo_bus_reset(void *function) {
        ((Echo *) function)->resets++;
}

static const UsbFunctionOps echo_ops = {
        .transfer = echo_transfer,
        .in_ready = echo_in_ready,
        .clear_halt = echo_clear_halt,
        .bus_reset = echo_bus_reset,
};

static const UsbEndpointDesc endpoints[] = {
        { .bEndpointAddress = 0x81, .bmAttributes = USB_ENDPOINT_XFER_BULK },
        { .bEndpointAddress = 0x02, .bmAttributes = USB_ENDPOINT_XFER_BULK },
};
static const UsbInterfaceDesc interfaces[] = {
        { .bInterfaceNumber = 0, .bInterfaceClass = 0xff, .bNumEndpoints = 2, .endpoints = endpoints },
};
static const UsbConfigDesc configs[] = {
        { .bConfigurationValue = 1, .bmAttributes = USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_WAKEUP, .bMaxPower = 50,
          .bNumInterfaces = 1, .interfaces = interfaces },
};
static const UsbDeviceDesc device_desc = {
        .bcdUSB = 0x0200, .bMaxPacketSize0 = 64, .idVendor = 0x1209, .idProduct = 0x0001, .bcdDevice = 0x0100,
        .iManufacturer = 1, .iProduct = 2, .bNumConfigurations = 1, .configs = configs,
};

/* Completed URBs land here. */
static Urb *done[16];
static unsigned n_done;

static void on_complete(Urb *u, void *userdata) {
        done[n_done++] = u;
}

static void reset_done(void) {
        for (unsigned i = 0; i < n_done; i++)
                urb_free(done[i]);
        n_done = 0;
}

static Urb *make_urb(uint32_t seqnum, uint8_t ep, bool in, uint32_t length) {
        Urb *u;
        ASSERT_OK(urb_new(seqnum, ep, in, length, &u));
        u->complete = on_complete;
        return u;
}

static Urb *control(UsbDevice *d, uint32_t seqnum, uint8_t type, uint8_t req, uint16_t value, uint16_t index,
                    uint16_t length, uint64_t now) {
        Urb *u = make_urb(seqnum, 0, type & USB_DIR_IN, length);
        usb_setup_encode(u->setup, &(UsbSetup) { type, req, value, index, length });
        ASSERT_OK(usb_device_submit(d, u, now));
        ASSERT_TRUE(n_done > 0);
        ASSERT_TRUE(done[n_done - 1] == u);
        return u;
}

static UsbDevice *new_device(Echo *echo) {
        UsbDevice *d;
        ASSERT_OK(usb_device_new("test", &device_desc, USB_SPEED_HIGH, &d));
        usb_device_set_function(d, &echo_ops, echo);
        ASSERT_OK(usb_device_set_string(d, 1, "drowse"));
        ASSERT_OK(usb_device_set_string(d, 2, "Echo"));
        return d;
}

static void configure(UsbDevice *d) {
        Urb *u;
        u = control(d, 100, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_DEVICE << 8, 0, 18, 1);
        ASSERT_EQ(u->status, 0);
        u = control(d, 101, 0x00, USB_REQ_SET_CONFIGURATION, 1, 0, 0, 2);
        ASSERT_EQ(u->status, 0);
        ASSERT_EQ(d->state, USB_DEVICE_STATE_CONFIGURED);
        reset_done();
}

static void test_descriptors(void) {
        Echo echo = {};
        UsbDevice *d = new_device(&echo);
        Urb *u;

        u = control(d, 1, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_DEVICE << 8, 0, 64, 1);
        ASSERT_EQ(u->status, 0);
        ASSERT_EQ(u->actual_length, 18);
        ASSERT_EQ(urb_data(u)[0], 18);
        ASSERT_EQ(get_le16(urb_data(u) + 8), 0x1209);

        /* Short read of the configuration: exactly what was asked, the kernel's first 9-byte read. */
        u = control(d, 2, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_CONFIG << 8, 0, 9, 1);
        ASSERT_EQ(u->actual_length, 9);
        ASSERT_EQ(get_le16(urb_data(u) + 2), 9 + 9 + 7 + 7);

        u = control(d, 3, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_STRING << 8 | 2, 0x409, 255, 1);
        ASSERT_EQ(u->status, 0);
        ASSERT_EQ(u->actual_length, 2 + 2 * 4);
        ASSERT_EQ(urb_data(u)[2], 'E');

        /* No serial string: a Request Error, as real devices answer. */
        u = control(d, 4, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_STRING << 8 | 3, 0x409, 255, 1);
        ASSERT_EQ(u->status, -EPIPE);

        u = control(d, 5, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_DEVICE_QUALIFIER << 8, 0, 10, 1);
        ASSERT_EQ(u->status, 0);
        ASSERT_EQ(u->actual_length, 10);

        u = control(d, 6, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_BOS << 8, 0, 5, 1);
        ASSERT_EQ(u->status, -EPIPE); /* bcdUSB 2.00 has no BOS */

        u = control(d, 7, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_CONFIG << 8 | 1, 0, 9, 1);
        ASSERT_EQ(u->status, -EPIPE); /* only one configuration */

        reset_done();
        usb_device_free(d);
}

static void test_configuration_and_status(void) {
        Echo echo = {};
        UsbDevice *d = new_device(&echo);
        Urb *u;

        /* SET_CONFIGURATION to a value the device does not have stalls. */
        u = control(d, 1, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_DEVICE << 8, 0, 18, 1);
        u = control(d, 2, 0x00, USB_REQ_SET_CONFIGURATION, 7, 0, 0, 1);
        ASSERT_EQ(u->status, -EPIPE);
        configure(d);

        u = control(d, 3, 0x80, USB_REQ_GET_CONFIGURATION, 0, 0, 1, 3);
        ASSERT_EQ(urb_data(u)[0], 1);

        /* Remote wakeup: armed and disarmed by the host, reported in GET_STATUS. */
        u = control(d, 4, 0x80, USB_REQ_GET_STATUS, 0, 0, 2, 4);
        ASSERT_EQ(get_le16(urb_data(u)), 0);
        u = control(d, 5, 0x00, USB_REQ_SET_FEATURE, USB_DEVICE_REMOTE_WAKEUP, 0, 0, 5);
        ASSERT_EQ(u->status, 0);
        ASSERT_TRUE(d->remote_wakeup);
        u = control(d, 6, 0x80, USB_REQ_GET_STATUS, 0, 0, 2, 6);
        ASSERT_EQ(get_le16(urb_data(u)), 2);
        u = control(d, 7, 0x00, USB_REQ_CLEAR_FEATURE, USB_DEVICE_REMOTE_WAKEUP, 0, 0, 7);
        ASSERT_FALSE(d->remote_wakeup);
        ASSERT_EQ(d->stats.remote_wakeup_sets, 1);
        ASSERT_EQ(d->stats.remote_wakeup_clears, 1);

        /* GET_STATUS after a second of silence is how a vhci resume shows itself. */
        u = control(d, 8, 0x80, USB_REQ_GET_STATUS, 0, 0, 2, 2000000);
        ASSERT_EQ(d->stats.resumes_inferred, 1);

        /* Endpoint halt: set, reported, cleared (and the function told). */
        u = control(d, 9, 0x02, USB_REQ_SET_FEATURE, USB_ENDPOINT_HALT, 0x81, 0, 2000001);
        ASSERT_EQ(u->status, 0);
        u = control(d, 10, 0x82, USB_REQ_GET_STATUS, 0, 0x81, 2, 2000002);
        ASSERT_EQ(get_le16(urb_data(u)), 1);
        u = control(d, 11, 0x02, USB_REQ_CLEAR_FEATURE, USB_ENDPOINT_HALT, 0x81, 0, 2000003);
        ASSERT_EQ(echo.clear_halts, 1);
        u = control(d, 12, 0x82, USB_REQ_GET_STATUS, 0, 0x81, 2, 2000004);
        ASSERT_EQ(get_le16(urb_data(u)), 0);
        /* An endpoint the configuration does not have. */
        u = control(d, 13, 0x82, USB_REQ_GET_STATUS, 0, 0x85, 2, 2000005);
        ASSERT_EQ(u->status, -EPIPE);

        /* The kernel's address-0 device descriptor read after an invisible port reset. */
        u = control(d, 14, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_DEVICE << 8, 0, 64, 2000006);
        ASSERT_EQ(d->state, USB_DEVICE_STATE_DEFAULT);
        ASSERT_EQ(d->configuration, 0);
        ASSERT_EQ(echo.resets, 1);
        ASSERT_EQ(d->stats.bus_resets_inferred, 1);

        reset_done();
        usb_device_free(d);
}

static void test_pending_in_and_unlink(void) {
        Echo echo = {};
        UsbDevice *d = new_device(&echo);
        Urb *in1, *in2, *out;

        configure(d);

        /* An IN URB with nothing to say waits (no buffer), it is not completed empty. */
        in1 = make_urb(20, 1, true, 64);
        ASSERT_OK(usb_device_submit(d, in1, 10));
        ASSERT_EQ(n_done, 0);
        ASSERT_EQ(d->n_pending, 1);
        ASSERT_TRUE(in1->buf == NULL);

        in2 = make_urb(21, 1, true, 64);
        ASSERT_OK(usb_device_submit(d, in2, 11));
        ASSERT_EQ(d->n_pending, 2);

        /* OUT data makes the first waiting IN complete, in order. */
        out = make_urb(22, 2, false, 5);
        ASSERT_OK(urb_ensure_buffer(out));
        memcpy(urb_data(out), "hello", 5);
        ASSERT_OK(usb_device_submit(d, out, 12));
        ASSERT_EQ(n_done, 2);
        ASSERT_TRUE(done[0] == out);
        ASSERT_TRUE(done[1] == in1);
        ASSERT_EQ(in1->actual_length, 5);
        ASSERT_TRUE(memcmp(urb_data(in1), "hello", 5) == 0);
        ASSERT_EQ(d->n_pending, 1);

        /* Unlink of the waiting one hands it back; unlink of a completed one finds nothing. */
        ASSERT_TRUE(usb_device_unlink(d, 21) == in2);
        urb_free(in2);
        ASSERT_TRUE(usb_device_unlink(d, 20) == NULL);
        ASSERT_EQ(d->stats.unlinks_pending, 1);
        ASSERT_EQ(d->stats.unlinks_late, 1);
        ASSERT_EQ(d->n_pending, 0);

        /* Too much OUT data: the function stalls, the endpoint stays halted until cleared. */
        reset_done();
        out = make_urb(23, 2, false, 100);
        ASSERT_OK(urb_ensure_buffer(out));
        memset(urb_data(out), 0, 100);
        ASSERT_OK(usb_device_submit(d, out, 13));
        ASSERT_EQ(out->status, -EPIPE);
        out = make_urb(24, 2, false, 1);
        ASSERT_OK(urb_ensure_buffer(out));
        ASSERT_OK(usb_device_submit(d, out, 14));
        ASSERT_EQ(out->status, -EPIPE);

        /* An endpoint that does not exist. */
        in1 = make_urb(25, 3, true, 8);
        ASSERT_OK(usb_device_submit(d, in1, 15));
        ASSERT_EQ(in1->status, -EPROTO);

        reset_done();
        usb_device_free(d);
}

static void test_pending_limit(void) {
        Echo echo = {};
        UsbDevice *d = new_device(&echo);

        configure(d);
        for (uint32_t i = 0; i < USB_DEVICE_MAX_PENDING; i++)
                ASSERT_OK(usb_device_submit(d, make_urb(1000 + i, 1, true, 64), 1));
        Urb *u = make_urb(5000, 1, true, 64);
        ASSERT_ERR(usb_device_submit(d, u, 1), ENOBUFS);
        urb_free(u);
        usb_device_free(d); /* frees the waiting ones */
}

TEST_MAIN(TEST(test_descriptors), TEST(test_configuration_and_status), TEST(test_pending_in_and_unlink),
          TEST(test_pending_limit))
