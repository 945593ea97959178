/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdio.h>

/* Just enough JSON writing for state dumps: a quoted, escaped string. */
void json_write_string(FILE *f, const char *s);
