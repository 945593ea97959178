/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "server.h"

/* The control socket: a local AF_UNIX SOCK_SEQPACKET socket (mode 0600) on which each packet is one
 * request line and gets one reply packet: "ok\n" followed by the answer, or "error: ...\n". It is how
 * drowsectl(1) lists devices and adds, removes, attaches and detaches them while the emulator runs.
 *
 *   list                 a table of the devices
 *   list-json            the same as a JSON array
 *   show NAME            one device as JSON
 *   add-disk SPEC        as --disk SPEC; the device is exported (and attached with "attach")
 *   remove NAME          detach if attached, drop the importer, unexport
 *   attach NAME [N]      local attach to vhci_hcd (controller N, default any)
 *   detach NAME          local detach
 *   plug|unplug NAME     a hub child in or out of its port
 *   wakeup NAME [force]  the device signals remote wakeup
 *   type NAME TEXT       keys on an emulated keyboard
 *   fault kinds|add|list|list-json|clear|seed   fault injection (fault.h, injector.h)
 *   scenario run PATH|status|stop                 scenario files (scenario.h)
 *   version
 */

#define CONTROL_MAX_REQUEST 4096
#define CONTROL_MAX_CLIENTS 16

typedef struct Control Control;

int control_new(Server *server, const char *path, Control **ret);
Control *control_free(Control *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Control *, control_free);

/* Handles one request; the reply is written to f. Exposed for the unit tests. */
int control_handle(Server *server, const char *request, FILE *f);
