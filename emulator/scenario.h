/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdio.h>
#include <systemd/sd-event.h>

#include "server.h"

/* A scenario: a timed script of control requests (plug, unplug, wakeup, type, fault add, ...) that the
 * emulator runs by itself, so that an experiment can be repeated exactly. One step per line:
 *
 *   # comment
 *   seed 42                          faults added from here on draw from seeds 42, 43, ...
 *   fault add kbd0 wakeup-storm n=5  a control request, run when the previous step is done
 *   after 2s unplug disk1            ... this long after the previous step
 *   at 10s wakeup kbd0 force         ... at this time from the start (or now, if that has passed)
 *   wait kbd0 suspended 15s          until the device is in this state (default timeout 30 s)
 *
 * States for wait: suspended, connected, unplugged (its link), default, addressed, configured (its USB
 * state), and "faults-spent" (every fault on it has used its hits). A request that fails or a wait
 * that times out stops the scenario, and the status names the line. */

typedef struct Scenario Scenario;

/* Reads and checks the whole file: a bad line is refused with "FILE:LINE: reason" in *error. */
int scenario_load(const char *path, Scenario **ret, char **error);
Scenario *scenario_free(Scenario *sc);
DEFINE_TRIVIAL_CLEANUP_FUNC(Scenario *, scenario_free);

int scenario_start(Scenario *sc, sd_event *event, Server *server);
bool scenario_running(const Scenario *sc) _pure_;
bool scenario_failed(const Scenario *sc) _pure_;
/* "running: line 4 of FILE (+1.234 s)", "done: 9 steps in 12.345 s", "failed: FILE:5: ..." */
void scenario_status(const Scenario *sc, FILE *f);

typedef enum WaitState {
        WAIT_SUSPENDED,
        WAIT_CONNECTED,
        WAIT_UNPLUGGED,
        WAIT_DEFAULT,
        WAIT_ADDRESSED,
        WAIT_CONFIGURED,
        WAIT_FAULTS_SPENT,
        _WAIT_STATE_MAX,
        _WAIT_STATE_INVALID = -EINVAL,
} WaitState;

const char *scenario_wait_state_to_string(WaitState s) _const_;
WaitState scenario_wait_state_from_string(const char *s) _pure_;
