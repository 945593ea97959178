/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdio.h>
#include <systemd/sd-event.h>

#include "fault.h"
#include "server.h"

/* The fault injector: adds faults to devices (checking that the kind fits the device), clears and lists
 * them, and carries out on the event loop the faults that are actions: wakeups after a suspend, storms,
 * unplugs, over-current, a carrier that closes. The faults that are answers (a stalled request, a
 * port that stays suspended, a medium error) strike inside the device models through fault_fire(). */

typedef struct Injector Injector;

int injector_new(sd_event *event, Server *server, Injector **ret);
Injector *injector_free(Injector *inj);
DEFINE_TRIVIAL_CLEANUP_FUNC(Injector *, injector_free);

/* Adds "KIND [key=value ...]" to the device of export e. Returns the fault's id, or a negative errno
 * with a message in *error (free()d by the caller). */
int injector_add(Injector *inj, Export *e, const char *spec, char **error);
/* "all", a fault id or a device name. Returns how many faults were removed, or -ENOENT. */
int injector_clear(Injector *inj, const char *what);
void injector_list(Injector *inj, bool json, FILE *f);

/* Faults added without seed= take seed, seed+1, ... in the order they are added (a scenario's
 * "seed N" resets this, so its faults draw the same numbers on every run). */
void injector_set_seed(Injector *inj, uint64_t seed);

/* How long the transport holds an URB's completion because of a fault on the device: 0 for not at
 * all, URB_HOLD_FOREVER until the kernel unlinks it. */
uint64_t injector_completion_hold(UsbDevice *d, const Urb *u, uint64_t now_usec);

/* Scenario files (scenario.h): one runs at a time; its status stays until the next one starts. */
int injector_run_scenario(Injector *inj, const char *path, char **error);
int injector_stop_scenario(Injector *inj);
void injector_scenario_status(Injector *inj, FILE *f);
