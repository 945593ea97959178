/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Reading and writing one sysfs attribute, fresh each time (libudev caches attribute values). */

#include <stddef.h>

/* DIR/ATTR into buf, trailing newline and spaces stripped. */
int sysfs_read(const char *dir, const char *attr, char *buf, size_t size);
int sysfs_read_int(const char *dir, const char *attr, int *ret);
int sysfs_write(const char *dir, const char *attr, const char *value);
