/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "hub.h"
#include "keyboard.h"
#include "tests.h"

static Urb *done[32];
static unsigned n_done;

static void on_complete(Urb *u, void *userdata) {
        done[n_done++] = u;
}

static bool was_done(const Urb *u) {
        for (unsigned i = 0; i < n_done; i++)
                if (done[i] == u)
                        return true;
        return false;
}

static void reset_done(void) {
        for (unsigned i = 0; i < n_done; i++)
                urb_free(done[i]);
        n_done = 0;
}

static Urb *control(UsbDevice *d, uint8_t type, uint8_t req, uint16_t value, uint16_t index, uint16_t length) {
        static uint32_t seqnum = 1;
        Urb *u;

        ASSERT_OK(urb_new(seqnum++, 0, type & USB_DIR_IN, length, &u));
        u->complete = on_complete;
        usb_setup_encode(u->setup, &(UsbSetup) { type, req, value, index, length });
        ASSERT_OK(usb_device_submit(d, u, 1));
        ASSERT_TRUE(done[n_done - 1] == u);
        return u;
}

static uint16_t port_status(UsbDevice *hub, unsigned port, uint16_t *change) {
        Urb *u = control(hub, 0xa3, USB_REQ_GET_STATUS, 0, (uint16_t) port, 4);
        ASSERT_EQ(u->status, 0);
        *change = get_le16(urb_data(u) + 2);
        return get_le16(urb_data(u));
}

static void configure(UsbDevice *d) {
        ASSERT_EQ(control(d, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_DEVICE << 8, 0, 18)->status, 0);
        ASSERT_EQ(control(d, 0x00, USB_REQ_SET_CONFIGURATION, 1, 0, 0)->status, 0);
}

static unsigned resets_seen;
static void on_reset(Hub *h, unsigned port, UsbDevice *child, void *userdata) {
        resets_seen++;
}

static void test_ports(void) {
        UsbDevice *hubdev, *kbd;
        Hub *h;
        uint16_t st, ch;
        Urb *status_urb, *u;

        ASSERT_OK(hub_new("hub0", &(HubOptions) { .n_ports = 4 }, &hubdev));
        h = hub_from_device(hubdev);
        ASSERT_TRUE(h);
        hub_set_port_reset_callback(h, on_reset, NULL);
        ASSERT_OK(keyboard_new("kbd", &kbd));
        configure(hubdev);

        /* Hub descriptor: 4 ports, per-port power switching. */
        u = control(hubdev, 0xa0, USB_REQ_GET_DESCRIPTOR, USB_DT_HUB << 8, 0, 15);
        ASSERT_EQ(u->status, 0);
        ASSERT_EQ(urb_data(u)[1], USB_DT_HUB);
        ASSERT_EQ(urb_data(u)[2], 4);

        /* The status-change URB waits while nothing changes. */
        ASSERT_OK(urb_new(1000, 1, true, 1, &status_urb));
        status_urb->complete = on_complete;
        reset_done();
        ASSERT_OK(usb_device_submit(hubdev, status_urb, 2));
        ASSERT_FALSE(was_done(status_urb));

        /* Plugged into an unpowered port: nothing to report until the host powers it. */
        ASSERT_OK(hub_plug(h, 3, kbd, 3));
        ASSERT_EQ(n_done, 0);
        ASSERT_ERR(hub_plug(h, 3, kbd, 3), EBUSY);
        ASSERT_ERR(hub_plug(h, 9, kbd, 3), ERANGE);
        for (unsigned p = 1; p <= 4; p++)
                control(hubdev, 0x23, USB_REQ_SET_FEATURE, USB_PORT_FEAT_POWER, (uint16_t) p, 0);
        /* Powering port 3 reported the connection: bit 3 of the bitmap. */
        ASSERT_TRUE(was_done(status_urb));
        ASSERT_EQ(status_urb->actual_length, 1);
        ASSERT_EQ(urb_data(status_urb)[0], 1u << 3);
        reset_done();

        st = port_status(hubdev, 3, &ch);
        ASSERT_EQ(st, USB_PORT_STAT_POWER | USB_PORT_STAT_CONNECTION);
        ASSERT_EQ(ch, USB_PORT_STAT_C_CONNECTION);
        control(hubdev, 0x23, USB_REQ_CLEAR_FEATURE, USB_PORT_FEAT_C_CONNECTION, 3, 0);

        /* Reset enables the port at high speed and tells the carrier. */
        control(hubdev, 0x23, USB_REQ_SET_FEATURE, USB_PORT_FEAT_RESET, 3, 0);
        st = port_status(hubdev, 3, &ch);
        ASSERT_EQ(st, USB_PORT_STAT_POWER | USB_PORT_STAT_CONNECTION | USB_PORT_STAT_ENABLE |
                              USB_PORT_STAT_HIGH_SPEED);
        ASSERT_EQ(ch, USB_PORT_STAT_C_RESET);
        ASSERT_EQ(resets_seen, 1);
        control(hubdev, 0x23, USB_REQ_CLEAR_FEATURE, USB_PORT_FEAT_C_RESET, 3, 0);
        configure(kbd);

        /* Suspend: the child answers nothing. */
        control(hubdev, 0x23, USB_REQ_SET_FEATURE, USB_PORT_FEAT_SUSPEND, 3, 0);
        ASSERT_EQ(kbd->link, USB_LINK_SUSPENDED);
        u = control(kbd, 0x80, USB_REQ_GET_STATUS, 0, 0, 2);
        ASSERT_EQ(u->status, -EPROTO);
        /* Wakeup needs the host to have armed it... */
        ASSERT_ERR(usb_device_signal_wakeup(kbd, false), EPERM);
        /* Host resume: SUSPEND clear and C_SUSPEND set by the next GET_PORT_STATUS. */
        control(hubdev, 0x23, USB_REQ_CLEAR_FEATURE, USB_PORT_FEAT_SUSPEND, 3, 0);
        st = port_status(hubdev, 3, &ch);
        ASSERT_FALSE(st & USB_PORT_STAT_SUSPEND);
        ASSERT_EQ(ch, USB_PORT_STAT_C_SUSPEND);
        ASSERT_EQ(kbd->link, USB_LINK_CONNECTED);
        control(hubdev, 0x23, USB_REQ_CLEAR_FEATURE, USB_PORT_FEAT_C_SUSPEND, 3, 0);

        /* Remote wakeup: armed, suspended, a key press; the hub reports C_SUSPEND on its own. */
        ASSERT_EQ(control(kbd, 0x00, USB_REQ_SET_FEATURE, USB_DEVICE_REMOTE_WAKEUP, 0, 0)->status, 0);
        control(hubdev, 0x23, USB_REQ_SET_FEATURE, USB_PORT_FEAT_SUSPEND, 3, 0);
        reset_done();
        ASSERT_OK(urb_new(1001, 1, true, 1, &status_urb));
        status_urb->complete = on_complete;
        ASSERT_OK(usb_device_submit(hubdev, status_urb, 4));
        ASSERT_FALSE(was_done(status_urb));
        ASSERT_EQ(keyboard_type(keyboard_from_device(kbd), "a"), 1);
        ASSERT_TRUE(was_done(status_urb));
        ASSERT_EQ(urb_data(status_urb)[0], 1u << 3);
        st = port_status(hubdev, 3, &ch);
        ASSERT_FALSE(st & USB_PORT_STAT_SUSPEND);
        ASSERT_EQ(ch, USB_PORT_STAT_C_SUSPEND);
        ASSERT_EQ(hub_get_stats(h)->remote_wakeups, 1);
        ASSERT_EQ(kbd->wakeups_signalled, 1);
        control(hubdev, 0x23, USB_REQ_CLEAR_FEATURE, USB_PORT_FEAT_C_SUSPEND, 3, 0);

        /* Unplug: connection and enable drop, C_CONNECTION set, the child is off the bus. */
        ASSERT_TRUE(hub_unplug(h, 3, 5) == kbd);
        st = port_status(hubdev, 3, &ch);
        ASSERT_EQ(st, USB_PORT_STAT_POWER);
        ASSERT_EQ(ch, USB_PORT_STAT_C_CONNECTION);
        ASSERT_EQ(kbd->link, USB_LINK_UNPLUGGED);
        ASSERT_TRUE(hub_unplug(h, 3, 5) == NULL);

        /* Bad requests stall. */
        ASSERT_EQ(control(hubdev, 0xa3, USB_REQ_GET_STATUS, 0, 9, 4)->status, -EPIPE);
        ASSERT_EQ(control(hubdev, 0x23, USB_REQ_SET_FEATURE, 77, 1, 0)->status, -EPIPE);

        reset_done();
        usb_device_free(kbd);
        usb_device_free(hubdev);
}

static void test_keyboard_typing(void) {
        UsbDevice *kbd;
        Keyboard *k;

        ASSERT_OK(keyboard_new("kbd", &kbd));
        k = keyboard_from_device(kbd);
        ASSERT_EQ(keyboard_type(k, "Hi 1!\n"), 6);
        ASSERT_ERR(keyboard_type(k, "\x01"), EINVAL);
        char lots[200];
        memset(lots, 'x', sizeof(lots) - 1);
        lots[sizeof(lots) - 1] = 0;
        ASSERT_ERR(keyboard_type(k, lots), ENOBUFS);
        /* A keyboard on a root port cannot wake anything: vhci carries no wakeup. */
        kbd->link = USB_LINK_SUSPENDED;
        kbd->remote_wakeup = true;
        ASSERT_ERR(usb_device_signal_wakeup(kbd, false), EOPNOTSUPP);
        usb_device_free(kbd);
}

TEST_MAIN(TEST(test_ports), TEST(test_keyboard_typing))
