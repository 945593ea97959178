/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* drowsed's manager against a umockdev testbed (run under umockdev-wrapper): a fake sysfs tree of a
 * USB disk (usb_device, interface, SCSI host, target, device, disk) that the real libudev code reads,
 * with the exact attribute writes checked afterwards, plus EIO, vanished files, uas, exclusions, the
 * vhci rules, and hotplug through uevents on the monitor. */

#include <stdio.h>
#include <sys/stat.h>
#include <umockdev.h>
/* glib has its own; ours (macro.h) win. */
#undef MIN
#undef MAX

#include "log.h"
#include "manager.h"
#include "tests.h"

static UMockdevTestbed *tb;
static char conf_path[256];

static void setup(const char *config) {
        FILE *f;

        tb = umockdev_testbed_new();
        ASSERT_TRUE(tb);
        snprintf(conf_path, sizeof(conf_path), "%s/drowse.conf", umockdev_testbed_get_root_dir(tb));
        ASSERT_TRUE((f = fopen(conf_path, "w")));
        fputs(config, f);
        fclose(f);
}

static void teardown(void) {
        g_object_unref(tb);
        tb = NULL;
}

static char *add(const char *subsystem, const char *name, const char *parent, const char *devtype,
                 const char *driver, ...) {
        char *p = devtype ? umockdev_testbed_add_device(tb, subsystem, name, parent, NULL, "DEVTYPE",
                                                        devtype, NULL) :
                            umockdev_testbed_add_device(tb, subsystem, name, parent, NULL, NULL);
        va_list ap;

        ASSERT_TRUE(p);
        va_start(ap, driver);
        for (const char *k; (k = va_arg(ap, const char *));)
                umockdev_testbed_set_attribute(tb, p, k, va_arg(ap, const char *));
        va_end(ap);
        if (driver) {
                char link[128];
                snprintf(link, sizeof(link), "/sys/bus/%s/drivers/%s", subsystem, driver);
                umockdev_testbed_set_attribute_link(tb, p, "driver", link);
        }
        return p;
}

typedef struct Disk {
        char *usb, *intf, *host, *target, *sdev, *block;
} Disk;

static char *add_root_hub(const char *parent, const char *name) {
        return add("usb", name, parent, "usb_device", "usb", "bDeviceClass", "09", "bNumInterfaces", " 1",
                   "power/control", "auto", NULL);
}

/* A usb-storage disk as the kernel shows it after probe: usb_device control=on delay 2000, the
 * scsi_device control=on delay -1, a removable disk with media events and default polling. */
static Disk add_disk(const char *hub, const char *port, int host, const char *intf_driver) {
        Disk d = {};
        char name[64], target[64], lun[64], blk[16];

        d.usb = add("usb", port, hub, "usb_device", "usb", "idVendor", "0525", "idProduct", "a4a5", "serial",
                    "SER-1", "bDeviceClass", "00", "bNumInterfaces", " 1", "removable", "removable",
                    "power/control", "on", "power/autosuspend_delay_ms", "2000", "power/runtime_status",
                    "active", "power/wakeup", "disabled", "power/persist", "1", NULL);
        snprintf(name, sizeof(name), "%s:1.0", port);
        d.intf = add("usb", name, d.usb, "usb_interface", intf_driver, "bInterfaceClass", "08",
                     "supports_autosuspend", "1", "power/runtime_status", "active", NULL);
        if (!intf_driver || !streq(intf_driver, "usb-storage"))
                return d;
        snprintf(name, sizeof(name), "host%d", host);
        d.host = add("scsi", name, d.intf, "scsi_host", NULL, "power/runtime_status", "active", NULL);
        snprintf(target, sizeof(target), "target%d:0:0", host);
        d.target = add("scsi", target, d.host, "scsi_target", NULL, "power/runtime_status", "active", NULL);
        snprintf(lun, sizeof(lun), "%d:0:0:0", host);
        d.sdev = add("scsi", lun, d.target, "scsi_device", "sd", "power/control", "on",
                     "power/autosuspend_delay_ms", "-1", "power/runtime_status", "active", NULL);
        snprintf(blk, sizeof(blk), "sd%c", 'a' + host);
        d.block = add("block", blk, d.sdev, "disk", NULL, "events", "media_change", "events_poll_msecs",
                      "-1", "removable", "1", NULL);
        return d;
}

static void assert_attr(const char *dir, const char *attr, const char *expected) {
        char path[4096], buf[128] = "";
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, attr);
        f = fopen(path, "re");
        if (!f)
                TEST_FAIL("cannot open %s", path);
        if (!fgets(buf, sizeof(buf), f))
                buf[0] = 0;
        fclose(f);
        buf[strcspn(buf, "\n")] = 0;
        if (!streq(buf, expected))
                TEST_FAIL("%s is \"%s\", expected \"%s\"", path, buf, expected);
}

static Manager *run_once(void) {
        ManagerOptions o = { .config_path = conf_path, .monitor = MONITOR_UDEV };
        Manager *m = NULL;

        ASSERT_OK(manager_new(&o, &m));
        ASSERT_OK(manager_load_config(m));
        ASSERT_OK(manager_coldplug(m));
        return m;
}

static void assert_state(Manager *m, const char *name, DeviceState state, const char *reason_part) {
        Device *d = manager_find(m, name);
        if (!d)
                TEST_FAIL("device %s not tracked", name);
        if (d->state != state)
                TEST_FAIL("%s is %s (%s), expected %s", name, device_state_to_string(d->state), d->reason,
                          device_state_to_string(state));
        if (reason_part && !strstr(d->reason, reason_part))
                TEST_FAIL("%s: reason \"%s\" lacks \"%s\"", name, d->reason, reason_part);
}

static void test_storage_chain(void) {
        setup("[defaults]\ndelay-ms = 1500\ndisk-delay-ms = 1000\n");
        char *hub = add_root_hub(NULL, "usb1");
        Disk d = add_disk(hub, "1-1", 0, "usb-storage");
        Manager *m = run_once();

        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, "allowed by default");
        assert_attr(d.sdev, "power/autosuspend_delay_ms", "1000");
        assert_attr(d.sdev, "power/control", "auto");
        assert_attr(d.block, "events_poll_msecs", "0");
        assert_attr(d.usb, "power/autosuspend_delay_ms", "1500");
        assert_attr(d.usb, "power/control", "auto");
        assert_attr(hub, "power/control", "auto"); /* root hubs are not ours */
        ASSERT_EQ(manager_find(m, "1-1")->n_luns, 1);
        ASSERT_TRUE(manager_find(m, "usb1") == NULL);
        /* A block device name finds its USB device. */
        ASSERT_TRUE(manager_find(m, "sda") == manager_find(m, "1-1"));

        /* JSON state and "why" over the same tree. */
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        manager_dump_list(m, true, f);
        fclose(f);
        ASSERT_TRUE(strstr(buf, "\"sysname\":\"1-1\"") && strstr(buf, "\"state\":\"autosuspend\"") &&
                    strstr(buf, "\"luns\":1") && strstr(buf, "\"id\":\"0525:a4a5\""));
        free(buf);
        f = open_memstream(&buf, &size);
        ASSERT_OK(device_why(manager_find(m, "1-1"), udev_new(), true, f));
        fclose(f);
        /* Everything is still "active" in a fake tree: the leaf is the one to blame. */
        ASSERT_TRUE(strstr(buf, "\"name\":\"0:0:0:0\",\"kind\":\"scsi_device\",\"control\":\"auto\""));
        ASSERT_TRUE(strstr(buf, "usb1") == NULL);
        ASSERT_TRUE(strstr(buf, "1-1: child 1-1:1.0 is active"));
        ASSERT_TRUE(strstr(buf, "0:0:0:0: active: in use, or its 1000 ms delay has not expired yet"));
        free(buf);
        manager_free(m);

        /* Idempotent: a second run writes nothing new and decides the same. */
        m = run_once();
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        manager_free(m);
        teardown();
}

static void test_pending_until_luns(void) {
        setup("");
        char *hub = add_root_hub(NULL, "usb1");
        Disk d = add_disk(hub, "1-1", 0, "usb-storage");
        /* Take the LUN away: usb-storage is still scanning (delay_use). */
        umockdev_testbed_remove_device(tb, d.block);
        umockdev_testbed_remove_device(tb, d.sdev);
        umockdev_testbed_remove_device(tb, d.target);
        Manager *m = run_once();
        assert_state(m, "1-1", DEVICE_PENDING, "waiting for the SCSI devices of 1-1:1.0");
        assert_attr(d.usb, "power/control", "on"); /* not before the LUNs */
        manager_free(m);
        teardown();
}

static void test_eio(void) {
        char path[4096];

        setup("");
        char *hub = add_root_hub(NULL, "usb1");
        Disk d = add_disk(hub, "1-1", 0, "usb-storage");
        /* A real EIO from the kernel: /proc/self/mem at offset 0 is unmapped. */
        snprintf(path, sizeof(path), "%s%s/power/autosuspend_delay_ms", umockdev_testbed_get_root_dir(tb),
                 d.sdev);
        ASSERT_OK(unlink(path));
        ASSERT_OK(symlink("/proc/self/mem", path));
        Manager *m = run_once();
        assert_state(m, "1-1", DEVICE_REFUSED, "gives EIO: its driver does not use runtime autosuspend");
        assert_attr(d.sdev, "power/control", "on");
        assert_attr(d.usb, "power/control", "on");
        manager_free(m);
        teardown();
}

static void test_vanished(void) {
        char path[4096];

        setup("");
        char *hub = add_root_hub(NULL, "usb1");
        Disk d = add_disk(hub, "1-1", 0, "usb-storage");
        snprintf(path, sizeof(path), "%s%s/power/control", umockdev_testbed_get_root_dir(tb), d.sdev);
        ASSERT_OK(unlink(path));
        Manager *m = run_once();
        assert_state(m, "1-1", DEVICE_REFUSED, "0:0:0:0/power/control vanished");
        assert_attr(d.usb, "power/control", "on");
        manager_free(m);

        /* The usb_device's attributes gone (unplugged mid-way): no crash, nothing written. */
        snprintf(path, sizeof(path), "rm -rf '%s%s/power' '%s%s/bNumInterfaces'",
                 umockdev_testbed_get_root_dir(tb), d.usb, umockdev_testbed_get_root_dir(tb), d.usb);
        ASSERT_EQ(system(path), 0);
        m = run_once();
        assert_state(m, "1-1", DEVICE_REFUSED, "vanished while being set up");
        manager_free(m);
        teardown();
}

static void test_uas_and_runtime_error(void) {
        setup("");
        char *hub = add_root_hub(NULL, "usb1");
        Disk a = add_disk(hub, "1-1", 0, "uas");
        Disk b = add_disk(hub, "1-2", 1, "usb-storage");
        umockdev_testbed_set_attribute(tb, b.usb, "power/runtime_status", "error");
        Disk c = add_disk(hub, "1-3", 2, "usb-storage");
        umockdev_testbed_set_attribute(tb, c.intf, "supports_autosuspend", "0");
        Manager *m = run_once();
        assert_state(m, "1-1", DEVICE_REFUSED, "driven by uas");
        assert_attr(a.usb, "power/control", "on");
        assert_state(m, "1-2", DEVICE_REFUSED, "runtime_status=error");
        assert_attr(b.sdev, "power/control", "on");
        assert_state(m, "1-3", DEVICE_REFUSED, "driver usb-storage does not support autosuspend");
        manager_free(m);
        teardown();
}

static void test_exclusions_and_rules(void) {
        setup("[rule keyboards-ok]\nmatch-id = 046d:c31c\nautosuspend = yes\ndelay-ms = 5000\n"
              "[rule sticks-off]\nmatch-serial = SER-*\nautosuspend = no\n");
        char *hub = add_root_hub(NULL, "usb1");
        char *kbd = add("usb", "1-4", hub, "usb_device", "usb", "idVendor", "046d", "idProduct", "c31c",
                        "bDeviceClass", "00", "bNumInterfaces", " 1", "power/control", "on",
                        "power/autosuspend_delay_ms", "2000", NULL);
        add("usb", "1-4:1.0", kbd, "usb_interface", "usbhid", "bInterfaceClass", "03",
            "supports_autosuspend", "1", NULL);
        char *mouse = add("usb", "1-5", hub, "usb_device", "usb", "idVendor", "046d", "idProduct", "c077",
                          "bDeviceClass", "00", "bNumInterfaces", " 1", "power/control", "on", NULL);
        add("usb", "1-5:1.0", mouse, "usb_interface", "usbhid", "bInterfaceClass", "03",
            "supports_autosuspend", "1", NULL);
        Disk d = add_disk(hub, "1-1", 0, "usb-storage");
        Manager *m = run_once();
        assert_state(m, "1-4", DEVICE_AUTOSUSPEND, "allowed by rule keyboards-ok");
        assert_attr(kbd, "power/autosuspend_delay_ms", "5000");
        assert_attr(kbd, "power/control", "auto");
        assert_state(m, "1-5", DEVICE_EXCLUDED, "excluded by default: HID class 03");
        assert_attr(mouse, "power/control", "on");
        assert_state(m, "1-1", DEVICE_EXCLUDED, "excluded by rule sticks-off");
        assert_attr(d.sdev, "power/control", "on");
        assert_attr(d.sdev, "power/autosuspend_delay_ms", "-1");
        manager_free(m);
        teardown();
}

static void test_vhci(void) {
        setup("");
        char *vhci = add("platform", "vhci_hcd.0", NULL, NULL, NULL, NULL);
        char *hub = add_root_hub(vhci, "usb3");
        char *carrier = add("usb", "3-1", hub, "usb_device", "usb", "idVendor", "1209", "idProduct", "0002",
                            "bDeviceClass", "00", "bNumInterfaces", " 0", "power/control", "on", NULL);
        Disk a = add_disk(hub, "3-2", 0, "usb-storage");
        Disk b = add_disk(hub, "3-3", 1, "usb-storage");
        Manager *m = run_once();
        assert_state(m, "3-1", DEVICE_IGNORED, "never touched");
        assert_attr(carrier, "power/control", "on");
        assert_state(m, "3-2", DEVICE_AUTOSUSPEND, NULL);
        assert_attr(a.usb, "power/control", "auto");
        assert_state(m, "3-3", DEVICE_REFUSED, "vhci_hcd.0 root port: 3-2 already autosuspends there");
        assert_attr(b.usb, "power/control", "on");
        ASSERT_TRUE(manager_find(m, "3-2")->vhci_root_port);
        manager_free(m);
        teardown();

        /* vhci-root-ports = 0 lifts the limit. */
        setup("[defaults]\nvhci-root-ports = 0\n");
        vhci = add("platform", "vhci_hcd.0", NULL, NULL, NULL, NULL);
        hub = add_root_hub(vhci, "usb3");
        add_disk(hub, "3-2", 0, "usb-storage");
        b = add_disk(hub, "3-3", 1, "usb-storage");
        m = run_once();
        assert_state(m, "3-3", DEVICE_AUTOSUSPEND, NULL);
        assert_attr(b.usb, "power/control", "auto");
        manager_free(m);
        teardown();
}

/* The vhci slot moves: the holder gets excluded by a reload, and the refused peer takes its place in
 * the same pass. A bad reload changes nothing. */
static void test_vhci_handover_on_reload(void) {
        char error[POLICY_ERROR_MAX];
        sd_event *e = NULL;
        FILE *f;

        setup("");
        char *vhci = add("platform", "vhci_hcd.0", NULL, NULL, NULL, NULL);
        char *hub = add_root_hub(vhci, "usb3");
        Disk a = add_disk(hub, "3-2", 0, "usb-storage");
        Disk b = add_disk(hub, "3-3", 1, "usb-storage");
        Manager *m = run_once();
        assert_state(m, "3-2", DEVICE_AUTOSUSPEND, NULL);
        assert_state(m, "3-3", DEVICE_REFUSED, "3-2 already autosuspends there");

        ASSERT_TRUE((f = fopen(conf_path, "w")));
        fputs("[rule no-a]\nmatch-devpath = 3-2\nautosuspend = maybe\n", f);
        fclose(f);
        ASSERT_TRUE(manager_reload(m, error, sizeof(error)) < 0);
        ASSERT_TRUE(strstr(error, "drowse.conf:3: autosuspend expects yes or no") != NULL);

        ASSERT_TRUE((f = fopen(conf_path, "w")));
        fputs("[rule no-a]\nmatch-devpath = 3-2\nautosuspend = no\n", f);
        fclose(f);
        ASSERT_OK(manager_reload(m, error, sizeof(error)));
        ASSERT_OK(sd_event_default(&e));
        for (int i = 0; i < 10; i++)
                ASSERT_OK(sd_event_run(e, 0));
        assert_state(m, "3-2", DEVICE_EXCLUDED, "excluded by rule no-a");
        assert_attr(a.usb, "power/control", "on"); /* drowsed had set auto: it hands it back */
        assert_state(m, "3-3", DEVICE_AUTOSUSPEND, NULL);
        assert_attr(b.usb, "power/control", "auto");
        sd_event_unref(e);
        manager_free(m);
        teardown();
}

static void test_runtime_start_stop(void) {
        setup("[defaults]\ndisk-runtime-start-stop = yes\n");
        char *hub = add_root_hub(NULL, "usb1");
        Disk d = add_disk(hub, "1-1", 0, "usb-storage");
        char *sd = add("scsi_disk", "0:0:0:0", d.sdev, NULL, NULL, "manage_runtime_start_stop", "0", NULL);
        Disk e = add_disk(hub, "1-2", 1, "usb-storage"); /* an old 6.1: no such file */
        Manager *m = run_once();
        assert_attr(sd, "manage_runtime_start_stop", "1");
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        assert_state(m, "1-2", DEVICE_AUTOSUSPEND, NULL);
        assert_attr(e.usb, "power/control", "auto");
        manager_free(m);
        teardown();
}

/* AC/battery: [profile battery] applies while no mains supply is online (a USB-C supply does not count
 * unless configured), rules can match the power source, and a power_supply uevent switches live. */
static void test_power_profiles(void) {
        sd_event *e = NULL;
        Manager *m = NULL;

        setup("[defaults]\ndelay-ms = 2000\ndisk-delay-ms = 2000\n"
              "[profile battery]\ndelay-ms = 500\ndisk-delay-ms = 300\n"
              "[rule off-on-battery]\nmatch-power = battery\nmatch-serial = OFF*\nautosuspend = no\n");
        char *ac = add("power_supply", "AC", NULL, NULL, NULL, "type", "Mains", "online", "0", NULL);
        add("power_supply", "BAT0", NULL, NULL, NULL, "type", "Battery", "scope", "System", "status",
            "Discharging", NULL);
        add("power_supply", "hidpp_battery_0", NULL, NULL, NULL, "type", "Battery", "scope", "Device", NULL);
        add("power_supply", "ucsi-source-psy-USBC000:001", NULL, NULL, NULL, "type", "USB", "online", "1",
            NULL);
        char *hub = add_root_hub(NULL, "usb1");
        Disk a = add_disk(hub, "1-1", 0, "usb-storage");
        Disk b = add_disk(hub, "1-2", 1, "usb-storage");
        umockdev_testbed_set_attribute(tb, b.usb, "serial", "OFF-1");

        ManagerOptions o = { .config_path = conf_path, .monitor = MONITOR_UDEV };
        ASSERT_OK(manager_new(&o, &m));
        ASSERT_OK(manager_load_config(m));
        ASSERT_OK(manager_start(m));
        ASSERT_OK(manager_coldplug(m));
        ASSERT_EQ(manager_power(m), POWER_BATTERY);
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        assert_attr(a.sdev, "power/autosuspend_delay_ms", "300");
        assert_attr(a.usb, "power/autosuspend_delay_ms", "500");
        assert_state(m, "1-2", DEVICE_EXCLUDED, "excluded by rule off-on-battery");
        assert_attr(b.usb, "power/control", "on");

        /* The charger: AC online, a change uevent, and the AC profile (the defaults) everywhere. */
        umockdev_testbed_set_attribute(tb, ac, "online", "1");
        umockdev_testbed_uevent(tb, ac, "change");
        ASSERT_OK(sd_event_default(&e));
        for (int i = 0; i < 50 && manager_power(m) != POWER_AC; i++)
                ASSERT_OK(sd_event_run(e, 100 * 1000));
        for (int i = 0; i < 5; i++)
                ASSERT_OK(sd_event_run(e, 10 * 1000));
        ASSERT_EQ(manager_power(m), POWER_AC);
        assert_attr(a.sdev, "power/autosuspend_delay_ms", "2000");
        assert_attr(a.usb, "power/autosuspend_delay_ms", "2000");
        assert_state(m, "1-2", DEVICE_AUTOSUSPEND, "allowed by default");
        assert_attr(b.usb, "power/control", "auto");
        sd_event_unref(e);
        manager_free(m);
        teardown();

        /* usb-power-supplies = yes: the USB-C supply counts as AC. */
        setup("[defaults]\nusb-power-supplies = yes\n");
        add("power_supply", "BAT0", NULL, NULL, NULL, "type", "Battery", NULL);
        add("power_supply", "ucsi-source-psy-USBC000:001", NULL, NULL, NULL, "type", "USB", "online", "1",
            NULL);
        m = run_once();
        ASSERT_EQ(manager_power(m), POWER_AC);
        manager_free(m);
        teardown();
}

/* Hotplug: the monitor sees add/bind uevents and applies without any timer. */
static void test_hotplug(void) {
        setup("");
        char *hub = add_root_hub(NULL, "usb1");
        ManagerOptions o = { .config_path = conf_path, .monitor = MONITOR_UDEV };
        Manager *m = NULL;
        sd_event *e = NULL;

        ASSERT_OK(manager_new(&o, &m));
        ASSERT_OK(manager_load_config(m));
        ASSERT_OK(manager_start(m));
        ASSERT_OK(manager_coldplug(m));
        ASSERT_EQ(manager_n_devices(m), 0);

        Disk d = add_disk(hub, "1-1", 0, "usb-storage");
        umockdev_testbed_uevent(tb, d.usb, "add");
        umockdev_testbed_uevent(tb, d.sdev, "bind");
        ASSERT_OK(sd_event_default(&e));
        for (int i = 0;
             i < 50 && (!manager_find(m, "1-1") || manager_find(m, "1-1")->state != DEVICE_AUTOSUSPEND); i++)
                ASSERT_OK(sd_event_run(e, 100 * 1000));
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        assert_attr(d.sdev, "power/control", "auto");
        assert_attr(d.usb, "power/control", "auto");

        umockdev_testbed_uevent(tb, d.usb, "remove");
        for (int i = 0; i < 50 && manager_n_devices(m) > 0; i++)
                ASSERT_OK(sd_event_run(e, 100 * 1000));
        ASSERT_EQ(manager_n_devices(m), 0);
        sd_event_unref(e);
        manager_free(m);
        teardown();
}

TEST_MAIN(TEST(test_storage_chain), TEST(test_pending_until_luns), TEST(test_eio), TEST(test_vanished),
          TEST(test_uas_and_runtime_error), TEST(test_exclusions_and_rules), TEST(test_vhci),
          TEST(test_vhci_handover_on_reload),
          TEST(test_runtime_start_stop), TEST(test_power_profiles), TEST(test_hotplug))
