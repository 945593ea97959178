/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdio.h>

#include "macro.h"
#include "power.h"
#include "sysfs.h"

int power_source_detect(struct udev *udev, bool usb_supplies, PowerSource *ret, char *why, size_t why_size) {
        struct udev_enumerate *e = udev_enumerate_new(udev);
        struct udev_list_entry *i;
        char battery[64] = "", mains[64] = "", offline[64] = "", charging[64] = "";
        int r;

        if (!e)
                return -ENOMEM;
        r = udev_enumerate_add_match_subsystem(e, "power_supply");
        if (r >= 0)
                r = udev_enumerate_scan_devices(e);
        if (r < 0) {
                udev_enumerate_unref(e);
                return r;
        }
        udev_list_entry_foreach(i, udev_enumerate_get_list_entry(e)) {
                const char *dir = udev_list_entry_get_name(i);
                const char *name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
                char type[32], scope[32];
                int online;

                if (sysfs_read(dir, "type", type, sizeof(type)) < 0)
                        continue;
                if (streq(type, "Battery")) {
                        char status[32];

                        /* A mouse's or headset's battery says scope=Device: not ours. */
                        if (sysfs_read(dir, "scope", scope, sizeof(scope)) >= 0 && streq(scope, "Device"))
                                continue;
                        if (!battery[0])
                                snprintf(battery, sizeof(battery), "%s", name);
                        if (!charging[0] && sysfs_read(dir, "status", status, sizeof(status)) >= 0 &&
                            STR_IN_SET(status, "Charging", "Full", "Not charging"))
                                snprintf(charging, sizeof(charging), "%s is %s", name, status);
                        continue;
                }
                /* USB, USB_C, USB_PD...: a USB-C port may be a sink or a source; TLP ignores them too. */
                if (strneq(type, "USB", 3) && !usb_supplies)
                        continue;
                if (sysfs_read_int(dir, "online", &online) < 0)
                        continue;
                if (online > 0 && !mains[0])
                        snprintf(mains, sizeof(mains), "%s", name);
                else if (online == 0 && !offline[0])
                        snprintf(offline, sizeof(offline), "%s", name);
        }
        udev_enumerate_unref(e);

        if (mains[0]) {
                *ret = POWER_AC;
                snprintf(why, why_size, "%s is online", mains);
        } else if (battery[0] && !offline[0] && charging[0]) {
                /* Machines (and firmware) that expose no AC adapter: a battery that charges, is full or
                 * holds at a charge threshold is on external power. Where an adapter is exposed, its
                 * offline wins: "Not charging" may then be a battery at rest on its own. */
                *ret = POWER_AC;
                snprintf(why, why_size, "no AC adapter exposed, %s", charging);
        } else if (battery[0]) {
                *ret = POWER_BATTERY;
                snprintf(why, why_size, "no supply online, running on %s", battery);
        } else {
                *ret = POWER_AC;
                snprintf(why, why_size, "no system battery");
        }
        return 0;
}
