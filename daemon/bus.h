/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* drowsed on D-Bus: org.drowse1 at /org/drowse1, interface org.drowse.Manager1. Reading is open to
 * everyone; Reload needs the caller to be root. */

#include <systemd/sd-bus.h>

#include "manager.h"

#define BUS_NAME "org.drowse1"
#define BUS_PATH "/org/drowse1"
#define BUS_INTERFACE "org.drowse.Manager1"

/* Connects to the system bus ($DBUS_SYSTEM_BUS_ADDRESS is honoured), publishes the object, takes the name
 * and attaches to E. */
int bus_open(Manager *m, sd_event *e, sd_bus **ret);
