/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* drowsed's manager against a umockdev testbed (run under umockdev-wrapper): a fake sysfs tree of a
 * USB disk (usb_device, interface, SCSI host, target, device, disk) that the real libudev code reads,
 * with the exact attribute writes checked afterwards, plus EIO, vanished files, uas, exclusions, the
 * vhci rules, and hotplug through uevents on the monitor; then sampling and its arithmetic, storms,
 * backoff, quarantine, persistence (and corrupt state files), release, drift and re-enumeration. */

#include <fcntl.h>
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

        /* No AC adapter exposed: the battery's own status says whether external power is there. */
        setup("");
        char *bat = add("power_supply", "BAT1", NULL, NULL, NULL, "type", "Battery", "status", "Charging", NULL);
        ManagerOptions o2 = { .config_path = conf_path, .monitor = MONITOR_UDEV };
        ASSERT_OK(manager_new(&o2, &m));
        ASSERT_OK(manager_load_config(m));
        ASSERT_OK(manager_start(m));
        ASSERT_OK(manager_coldplug(m));
        ASSERT_EQ(manager_power(m), POWER_AC);
        umockdev_testbed_set_attribute(tb, bat, "status", "Discharging");
        umockdev_testbed_uevent(tb, bat, "change");
        ASSERT_OK(sd_event_default(&e));
        for (int i = 0; i < 50 && manager_power(m) != POWER_BATTERY; i++)
                ASSERT_OK(sd_event_run(e, 100 * 1000));
        ASSERT_EQ(manager_power(m), POWER_BATTERY);
        sd_event_unref(e);
        manager_free(m);
        teardown();

        /* An exposed adapter that is offline wins over a battery resting at a charge threshold. */
        setup("");
        add("power_supply", "ADP1", NULL, NULL, NULL, "type", "Mains", "online", "0", NULL);
        add("power_supply", "BAT1", NULL, NULL, NULL, "type", "Battery", "status", "Not charging", NULL);
        m = run_once();
        ASSERT_EQ(manager_power(m), POWER_BATTERY);
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

/* Issue 6, items 5 and 8: sampling, storms, quarantine, persistence, release and drift. */

static char state_dir[512];

static Manager *start_with_state(bool with_state_dir) {
        ManagerOptions o = { .config_path = conf_path, .monitor = MONITOR_UDEV };
        Manager *m = NULL;

        if (with_state_dir) {
                snprintf(state_dir, sizeof(state_dir), "%s/state", umockdev_testbed_get_root_dir(tb));
                o.state_dir = state_dir;
        }
        ASSERT_OK(manager_new(&o, &m));
        ASSERT_OK(manager_load_config(m));
        ASSERT_OK(manager_coldplug(m));
        return m;
}

static void run_passes(void) {
        sd_event *e = NULL;
        ASSERT_OK(sd_event_default(&e));
        for (int i = 0; i < 10; i++)
                ASSERT_OK(sd_event_run(e, 0));
        sd_event_unref(e);
}

static void set_runtime(const char *dir, const char *status, unsigned long long active,
                        unsigned long long suspended) {
        char a[32], s[32];
        snprintf(a, sizeof(a), "%llu", active);
        snprintf(s, sizeof(s), "%llu", suspended);
        umockdev_testbed_set_attribute(tb, dir, "power/runtime_status", status);
        umockdev_testbed_set_attribute(tb, dir, "power/runtime_active_time", a);
        umockdev_testbed_set_attribute(tb, dir, "power/runtime_suspended_time", s);
}

/* Captures what drowsed logs (stderr) while F runs. */
static char *capture_log(void (*f)(void *), void *userdata) {
        char path[600], *buf = NULL;
        size_t size = 0;
        int saved = dup(STDERR_FILENO), fd;
        FILE *in;

        snprintf(path, sizeof(path), "%s/log.txt", umockdev_testbed_get_root_dir(tb));
        fflush(stderr);
        ASSERT_TRUE((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) >= 0);
        ASSERT_TRUE(dup2(fd, STDERR_FILENO) >= 0);
        close(fd);
        f(userdata);
        fflush(stderr);
        ASSERT_TRUE(dup2(saved, STDERR_FILENO) >= 0);
        close(saved);
        ASSERT_TRUE((in = fopen(path, "re")));
        if (getdelim(&buf, &size, 0, in) < 0) { /* nothing logged */
                free(buf);
                ASSERT_TRUE((buf = strdup("")));
        }
        fclose(in);
        fputs(buf, stderr); /* still shown in the test log */
        return buf;
}

static void test_sampling(void) {
        /* A long minimum interval: the test drives the ticks itself. */
        setup("[defaults]\ndelay-ms = 1000\ndisk-delay-ms = 500\n[protect]\nsample-min-ms = 3600000\n"
              "sample-max-ms = 3600000\nstorm-resumes-per-minute = 0\n");
        char *hub = add_root_hub(NULL, "usb1");
        Disk d = add_disk(hub, "1-1", 0, "usb-storage");
        set_runtime(d.usb, "active", 100, 0);
        umockdev_testbed_set_attribute(tb, d.usb, "power/wakeup_count", "3");
        Manager *m = start_with_state(false);
        Device *dev = manager_find(m, "1-1");
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        ASSERT_TRUE(dev->rec != NULL);
        /* Armed because 1-1 autosuspends, at the shortest interval. */
        ASSERT_EQ(manager_sample_interval(m), 3600000ULL * 1000);

        manager_sample_now(m); /* the baseline */
        ASSERT_EQ(dev->rec->stats.resumes, 0);
        ASSERT_EQ(dev->rec->stats.active_ms, 0);

        /* Suspended 5 s: one suspend, no resume. */
        set_runtime(d.usb, "suspended", 1100, 5000);
        manager_sample_now(m);
        ASSERT_EQ(dev->rec->stats.resumes, 0);
        ASSERT_EQ(dev->rec->stats.suspended_ms, 5000);
        ASSERT_EQ(dev->rec->stats.active_ms, 1000);

        /* Suspended at both ends with 3.5 s active in between: at least one resume, and active/delay =
         * 3 of them (each lasts the 1000 ms delay at least). Two wakeup events. */
        set_runtime(d.usb, "suspended", 4600, 9000);
        umockdev_testbed_set_attribute(tb, d.usb, "power/wakeup_count", "5");
        manager_sample_now(m);
        ASSERT_EQ(dev->rec->stats.resumes, 3);
        ASSERT_EQ(dev->rec->stats.wakeups, 2);
        ASSERT_EQ(dev->rec->stats.suspended_ms, 9000);
        ASSERT_EQ(dev->rec->stats.active_ms, 4500);

        /* Suspended -> active with no suspended time counted yet: the edge is one resume. */
        set_runtime(d.usb, "active", 4600, 9000);
        manager_sample_now(m);
        ASSERT_EQ(dev->rec->stats.resumes, 4);

        /* Counters that go backwards (a new kernel object) count nothing. */
        set_runtime(d.usb, "suspended", 10, 10);
        manager_sample_now(m);
        ASSERT_EQ(dev->rec->stats.resumes, 4);
        ASSERT_EQ(dev->rec->stats.active_ms, 4500);

        /* A vanished attribute: no crash, no change. */
        char path[4096];
        snprintf(path, sizeof(path), "%s%s/power/runtime_active_time", umockdev_testbed_get_root_dir(tb), d.usb);
        ASSERT_OK(unlink(path));
        manager_sample_now(m);
        ASSERT_EQ(dev->rec->stats.resumes, 4);

        /* The history has the transitions, and stats --json the obvious keys. */
        ASSERT_TRUE(dev->rec->stats.history_len >= 3);
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        ASSERT_OK(manager_dump_stats(m, "1-1", true, f));
        fclose(f);
        ASSERT_TRUE(strstr(buf, "\"name\":\"1-1\"") && strstr(buf, "\"resumes\":4") &&
                    strstr(buf, "\"suspended_ms\":9000") && strstr(buf, "\"wakeups\":2") &&
                    strstr(buf, "\"quarantined\":false") && strstr(buf, "\"history\":[{\"t_ms\":") &&
                    strstr(buf, "\"state\":\"suspended\""));
        free(buf);
        ASSERT_ERR(manager_dump_stats(m, "9-9", true, stderr), ENODEV);
        manager_free(m);
        teardown();
}

/* Idle with nothing to watch is zero wakeups: no timer unless something autosuspends. */
static void test_no_timer_when_idle(void) {
        char error[POLICY_ERROR_MAX];
        FILE *f;

        setup("[defaults]\nautosuspend = no\n");
        char *hub = add_root_hub(NULL, "usb1");
        add_disk(hub, "1-1", 0, "usb-storage");
        Manager *m = start_with_state(false);
        assert_state(m, "1-1", DEVICE_EXCLUDED, NULL);
        ASSERT_EQ(manager_sample_interval(m), 0);

        ASSERT_TRUE((f = fopen(conf_path, "w")));
        fputs("[defaults]\nautosuspend = yes\n[protect]\nsample-min-ms = 1500\n", f);
        fclose(f);
        ASSERT_OK(manager_reload(m, error, sizeof(error)));
        run_passes();
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        ASSERT_EQ(manager_sample_interval(m), 1500 * 1000);

        ASSERT_TRUE((f = fopen(conf_path, "w")));
        fputs("[defaults]\nautosuspend = no\n", f);
        fclose(f);
        ASSERT_OK(manager_reload(m, error, sizeof(error)));
        run_passes();
        assert_state(m, "1-1", DEVICE_EXCLUDED, NULL);
        ASSERT_EQ(manager_sample_interval(m), 0);
        manager_free(m);
        teardown();
}

static void do_free(void *m) {
        manager_free(m);
}

static Manager *restarted;
static void do_start(void *unused) {
        restarted = start_with_state(true);
}

/* A storm backs the delay off (x4, on the USB device and the LUN), a second one quarantines; the
 * quarantine is saved, survives a restart, and release lifts it. Then corrupt state files. */
static void test_storm_quarantine_persist_release(void) {
        char path[4096], name[256];
        setup("[defaults]\ndelay-ms = 1000\ndisk-delay-ms = 500\n"
              "[protect]\nstorm-resumes-per-minute = 10\nstorm-backoff = 4\nquarantine-after = 2\n"
              "sample-min-ms = 3600000\n");
        char *hub = add_root_hub(NULL, "usb1");
        Disk d = add_disk(hub, "1-1", 0, "usb-storage");
        set_runtime(d.usb, "suspended", 0, 0);
        Manager *m = start_with_state(true);
        Device *dev = manager_find(m, "1-1");
        manager_sample_now(m);

        /* 12 resumes of 1 s each in one interval: above 10 a minute. */
        set_runtime(d.usb, "suspended", 12000, 500);
        manager_sample_now(m);
        ASSERT_EQ(dev->rec->stats.resumes, 12);
        ASSERT_EQ(dev->rec->strikes, 1);
        ASSERT_EQ(dev->rec->backoff, 4);
        run_passes();
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        assert_attr(d.usb, "power/autosuspend_delay_ms", "4000");
        assert_attr(d.sdev, "power/autosuspend_delay_ms", "2000");
        assert_attr(d.usb, "power/control", "auto");
        ASSERT_EQ(dev->rec->stats.decisions, 1);
        ASSERT_STREQ(stats_history_last(&dev->rec->stats, HISTORY_DECISION)->what, "backoff");

        /* Still storming at the longer delay: 11 x 4 s. */
        set_runtime(d.usb, "suspended", 12000 + 44000, 1000);
        manager_sample_now(m);
        ASSERT_EQ(dev->rec->stats.resumes, 23);
        ASSERT_TRUE(dev->rec->quarantined);
        ASSERT_TRUE(strstr(dev->rec->quarantine_reason, "resume storm: 11 resumes in the last minute"));
        run_passes();
        assert_state(m, "1-1", DEVICE_QUARANTINED, "resume storm");
        assert_attr(d.usb, "power/control", "on");
        assert_attr(d.sdev, "power/control", "on");
        ASSERT_EQ(manager_sample_interval(m), 0); /* nothing autosuspends any more */

        /* Saved at once, under the identity. */
        record_file_name("0525:a4a5:SER-1", name, sizeof(name));
        ASSERT_STREQ(name, "0525_3aa4a5_3aSER-1.state");
        snprintf(path, sizeof(path), "%s/%s", state_dir, name);
        DeviceRecord *rec = malloc(sizeof(DeviceRecord));
        ASSERT_TRUE(rec);
        record_init(rec, "");
        char error[256];
        ASSERT_OK(record_load(path, rec, error, sizeof(error)));
        ASSERT_TRUE(rec->quarantined);
        ASSERT_EQ(rec->stats.resumes, 23);
        ASSERT_EQ(rec->stats.decisions, 2);

        /* A restart with the device still there, set back to auto by someone: quarantined again. */
        manager_free(m);
        umockdev_testbed_set_attribute(tb, d.usb, "power/control", "auto");
        m = start_with_state(true);
        assert_state(m, "1-1", DEVICE_QUARANTINED, "resume storm");
        assert_attr(d.usb, "power/control", "on");
        ASSERT_EQ(manager_find(m, "1-1")->rec->stats.resumes, 23);

        /* stats: the quarantine shows; the plot is valid SVG. */
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        ASSERT_OK(manager_dump_stats(m, NULL, false, f));
        fclose(f);
        ASSERT_TRUE(strstr(buf, "quarantined") && strstr(buf, "resume storm"));
        free(buf);
        snprintf(path, sizeof(path), "%s/plot.svg", umockdev_testbed_get_root_dir(tb));
        ASSERT_TRUE((f = fopen(path, "w")));
        manager_plot(m, f);
        fclose(f);
        if (access("/usr/bin/xmllint", X_OK) == 0) {
                char cmd[4200];
                snprintf(cmd, sizeof(cmd), "xmllint --noout '%s'", path);
                ASSERT_EQ(system(cmd), 0);
        }

        /* Release: policy again (the backoff goes too), saved. */
        ASSERT_OK(manager_release(m, "1-1"));
        ASSERT_ERR(manager_release(m, "1-1"), EALREADY);
        ASSERT_ERR(manager_release(m, "9-9"), ENODEV);
        run_passes();
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        assert_attr(d.usb, "power/control", "auto");
        assert_attr(d.usb, "power/autosuspend_delay_ms", "1000");
        assert_attr(d.sdev, "power/control", "auto");
        snprintf(path, sizeof(path), "%s/%s", state_dir, name);
        record_done(rec);
        ASSERT_OK(record_load(path, rec, error, sizeof(error)));
        ASSERT_FALSE(rec->quarantined);
        ASSERT_EQ(rec->backoff, 1);
        ASSERT_STREQ(stats_history_last(&rec->stats, HISTORY_DECISION)->what, "release");

        /* Quarantine again, then cut the file short: the restart names it, ignores it, and starts the
         * device afresh. A file of garbage and a misplaced one likewise. */
        DeviceRecord *r = manager_find(m, "1-1")->rec;
        r->quarantined = true;
        snprintf(r->quarantine_reason, sizeof(r->quarantine_reason), "test");
        r->unsaved = true;
        manager_save(m);
        free(capture_log(do_free, m));
        struct stat st;
        ASSERT_OK(stat(path, &st));
        ASSERT_OK(truncate(path, st.st_size / 2));
        snprintf(path, sizeof(path), "%s/garbage.state", state_dir);
        ASSERT_TRUE((f = fopen(path, "w")));
        fputs("\x01\x02 not a state file\n", f);
        fclose(f);
        char *log = capture_log(do_start, NULL);
        m = restarted;
        ASSERT_TRUE(strstr(log, "Ignoring state file") && strstr(log, name) && strstr(log, "truncated"));
        ASSERT_TRUE(strstr(log, "garbage.state: line 1: not a drowse state file"));
        free(log);
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        assert_attr(d.usb, "power/control", "auto");
        record_free(rec);
        manager_free(m);
        teardown();
}

/* Someone else writes what drowsed owns: with drift=reapply it is logged and written back, with
 * drift=yield logged and left, the device excluded until release. */
static void test_drift(void) {
        setup("[defaults]\ndelay-ms = 1000\n[protect]\nsample-min-ms = 3600000\n");
        char *hub = add_root_hub(NULL, "usb1");
        Disk d = add_disk(hub, "1-1", 0, "usb-storage");
        Manager *m = start_with_state(false);
        assert_attr(d.usb, "power/control", "auto");

        umockdev_testbed_set_attribute(tb, d.usb, "power/control", "on");
        umockdev_testbed_set_attribute(tb, d.sdev, "power/autosuspend_delay_ms", "-1");
        char *log = capture_log((void (*)(void *)) manager_sample_now, m);
        ASSERT_TRUE(strstr(log, "drift-reapply: 1-1/power/control was auto, now on: changed by another writer"));
        ASSERT_TRUE(strstr(log, "0:0:0:0/power/autosuspend_delay_ms was 2000, now -1"));
        free(log);
        run_passes();
        assert_attr(d.usb, "power/control", "auto");
        assert_attr(d.sdev, "power/autosuspend_delay_ms", "2000");
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        ASSERT_EQ(manager_find(m, "1-1")->rec->stats.decisions, 2);
        /* Written back once: the pass does not see it again. */
        manager_sample_now(m);
        ASSERT_EQ(manager_find(m, "1-1")->rec->stats.decisions, 2);
        manager_free(m);
        teardown();

        setup("[defaults]\ndelay-ms = 1000\n[protect]\ndrift = yield\nsample-min-ms = 3600000\n");
        hub = add_root_hub(NULL, "usb1");
        d = add_disk(hub, "1-1", 0, "usb-storage");
        m = start_with_state(false);
        umockdev_testbed_set_attribute(tb, d.usb, "power/control", "on");
        manager_sample_now(m);
        run_passes();
        assert_state(m, "1-1", DEVICE_EXCLUDED, "yielded to another writer, who set 1-1/power/control=on");
        assert_attr(d.usb, "power/control", "on");
        ASSERT_EQ(manager_sample_interval(m), 0);
        ASSERT_OK(manager_release(m, "1-1"));
        run_passes();
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        assert_attr(d.usb, "power/control", "auto");
        manager_free(m);
        teardown();
}

/* The same device (vid:pid:serial) back within the window after leaving while suspended: a strike. */
static void test_re_enumeration(void) {
        setup("[defaults]\ndelay-ms = 1000\n[protect]\nre-enumerate-window = 30\nsample-min-ms = 3600000\n");
        char *hub = add_root_hub(NULL, "usb1");
        ManagerOptions o = { .config_path = conf_path, .monitor = MONITOR_UDEV };
        Manager *m = NULL;
        sd_event *e = NULL;

        ASSERT_OK(manager_new(&o, &m));
        ASSERT_OK(manager_load_config(m));
        ASSERT_OK(manager_start(m));
        ASSERT_OK(manager_coldplug(m));
        ASSERT_OK(sd_event_default(&e));
        Disk d = add_disk(hub, "1-1", 0, "usb-storage");
        set_runtime(d.usb, "suspended", 10, 10);
        umockdev_testbed_uevent(tb, d.usb, "add");
        for (int i = 0; i < 50 && (!manager_find(m, "1-1") || manager_find(m, "1-1")->state != DEVICE_AUTOSUSPEND);
             i++)
                ASSERT_OK(sd_event_run(e, 100 * 1000));
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        manager_sample_now(m);
        umockdev_testbed_uevent(tb, d.usb, "remove");
        for (int i = 0; i < 50 && manager_n_devices(m) > 0; i++)
                ASSERT_OK(sd_event_run(e, 100 * 1000));
        ASSERT_EQ(manager_n_devices(m), 0);
        ASSERT_EQ(manager_sample_interval(m), 0);

        umockdev_testbed_uevent(tb, d.usb, "add");
        for (int i = 0; i < 50 && (!manager_find(m, "1-1") || manager_find(m, "1-1")->state != DEVICE_AUTOSUSPEND);
             i++)
                ASSERT_OK(sd_event_run(e, 100 * 1000));
        Device *dev = manager_find(m, "1-1");
        ASSERT_TRUE(dev && dev->rec);
        ASSERT_EQ(dev->rec->strikes, 1);
        ASSERT_STREQ(stats_history_last(&dev->rec->stats, HISTORY_DECISION)->what, "backoff");
        ASSERT_TRUE(strstr(stats_history_last(&dev->rec->stats, HISTORY_DECISION)->reason, "re-enumerated"));
        assert_attr(d.usb, "power/autosuspend_delay_ms", "4000");
        sd_event_unref(e);
        manager_free(m);
        teardown();
}

/* runtime_status=error quarantines only once it has lasted 2 s: a device being unplugged or detached
 * reads "error" until its removal, and its record (kept by serial) must not carry a quarantine to the
 * next plug. The sampler comes back for the confirmation, whatever its own interval. */
static void test_runtime_error_confirmed(void) {
        setup("[defaults]\ndelay-ms = 1000\n[protect]\nsample-min-ms = 3600000\nsample-max-ms = 3600000\n");
        char *hub = add_root_hub(NULL, "usb1");
        Disk a = add_disk(hub, "1-1", 0, "usb-storage");
        Disk b = add_disk(hub, "1-2", 1, "usb-storage");
        set_runtime(a.usb, "suspended", 10, 10);
        set_runtime(b.usb, "suspended", 10, 10);
        Manager *m = start_with_state(false);
        Device *da = manager_find(m, "1-1"), *db = manager_find(m, "1-2");
        ASSERT_TRUE(da && da->rec && db && db->rec);
        manager_sample_now(m);

        /* a fails for real; b reads error on its way out. */
        umockdev_testbed_set_attribute(tb, a.usb, "power/runtime_status", "error");
        umockdev_testbed_set_attribute(tb, b.usb, "power/runtime_status", "error");
        manager_sample_now(m);
        ASSERT_FALSE(da->rec->quarantined);
        ASSERT_FALSE(db->rec->quarantined);
        ASSERT_TRUE(da->error_since_usec > 0);
        umockdev_testbed_remove_device(tb, b.block);
        umockdev_testbed_remove_device(tb, b.sdev);
        umockdev_testbed_remove_device(tb, b.target);
        umockdev_testbed_remove_device(tb, b.host);
        umockdev_testbed_remove_device(tb, b.intf);
        umockdev_testbed_remove_device(tb, b.usb);

        /* The sampler is due again within the confirmation, not in an hour. */
        sd_event *e = NULL;
        ASSERT_OK(sd_event_default(&e));
        uint64_t t0 = stats_now_usec();
        for (int i = 0; i < 60 && !da->rec->quarantined; i++)
                ASSERT_OK(sd_event_run(e, 100 * 1000));
        ASSERT_TRUE(da->rec->quarantined);
        ASSERT_TRUE(stats_now_usec() - t0 < 5 * 1000000ULL);
        ASSERT_TRUE(strstr(da->rec->quarantine_reason, "runtime_status=error"));
        ASSERT_FALSE(db->rec->quarantined);
        run_passes();
        assert_state(m, "1-1", DEVICE_QUARANTINED, "runtime_status=error");
        assert_attr(a.usb, "power/control", "on");

        /* An error that clears before the confirmation is forgotten. */
        set_runtime(a.usb, "suspended", 20, 20);
        ASSERT_OK(manager_release(m, "1-1"));
        run_passes();
        assert_state(m, "1-1", DEVICE_AUTOSUSPEND, NULL);
        manager_sample_now(m);
        umockdev_testbed_set_attribute(tb, a.usb, "power/runtime_status", "error");
        manager_sample_now(m);
        ASSERT_TRUE(da->error_since_usec > 0);
        set_runtime(a.usb, "suspended", 20, 20);
        manager_sample_now(m);
        ASSERT_EQ(da->error_since_usec, 0);
        ASSERT_FALSE(da->rec->quarantined);
        sd_event_unref(e);
        manager_free(m);
        teardown();
}

TEST_MAIN(TEST(test_storage_chain), TEST(test_pending_until_luns), TEST(test_eio), TEST(test_vanished),
          TEST(test_uas_and_runtime_error), TEST(test_exclusions_and_rules), TEST(test_vhci),
          TEST(test_vhci_handover_on_reload),
          TEST(test_runtime_start_stop), TEST(test_power_profiles), TEST(test_hotplug), TEST(test_sampling),
          TEST(test_no_timer_when_idle), TEST(test_storm_quarantine_persist_release), TEST(test_drift),
          TEST(test_re_enumeration), TEST(test_runtime_error_confirmed))
