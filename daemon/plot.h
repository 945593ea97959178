/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* An SVG timeline of devices' recorded power states and drowsed's decisions: one row per device,
 * colored bands for suspended, active, error and quarantined, markers for decisions, a time axis
 * (UTC) and a legend. Pure output: the caller gathers the rows. */

#include <stdint.h>
#include <stdio.h>

#include "stats.h"

#define PLOT_MAX_ROWS 64

typedef struct PlotRow {
        const char *name;  /* "1-1.2" */
        const char *id;    /* "vvvv:pppp" */
        const char *state; /* drowsed's state now */
        const Stats *stats;
} PlotRow;

void plot_svg(FILE *f, const PlotRow *rows, size_t n_rows, uint64_t now_ms);
