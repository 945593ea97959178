/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "hub.h"
#include "server.h"

/* Hub trees over stock vhci_hcd, design (b) of kernel-deep-dive §1.5: the hub on root port 1 of one
 * vhci controller, and for each populated hub port p a carrier connection on root port p of the same
 * controller. Every child therefore has a connection of its own, and nothing on the wire is ambiguous
 * except the carrier's own root device before the child's first reset, which tells itself apart by
 * order. Limits (checked here, with the reason): one hub level, hub ports 2..15 (port 1 is the hub's own
 * root port; vhci has 15), local attach only. */

int tree_add_hub(Server *s, UsbDevice *hub, int controller, Export **ret);
/* Puts a device on a hub port (0: the lowest free one from 2). It is plugged once its carrier's root
 * device is configured, so the two never enumerate at the same time on one connection. */
int tree_add_child(Server *s, Export *hub, unsigned port, UsbDevice *child, Export **ret);

/* Attaches the hub, then the carriers of its populated ports, on the hub's controller (or the first one
 * whose root ports 1 and every carrier port are free). */
int tree_attach(Server *s, Export *hub);

/* Hot-plug and unplug of a child at run time: the hub reports the connection change. */
int tree_plug(Export *child);
int tree_unplug(Export *child);

bool tree_is_hub(const Export *e);
