/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <stdio.h>

#include "macro.h"
#include "sysfs.h"

static int open_attr(const char *dir, const char *attr, int flags) {
        char path[4096];
        int fd;

        if ((size_t) snprintf(path, sizeof(path), "%s/%s", dir, attr) >= sizeof(path))
                return -ENAMETOOLONG;
        fd = open(path, flags | O_CLOEXEC | O_NOCTTY);
        return fd < 0 ? negative_errno() : fd;
}

int sysfs_read(const char *dir, const char *attr, char *buf, size_t size) {
        _cleanup_close_ int fd = -EBADF;
        ssize_t n;

        if (size < 1)
                return -EINVAL;
        fd = open_attr(dir, attr, O_RDONLY);
        if (fd < 0)
                return fd;
        n = read(fd, buf, size - 1);
        if (n < 0)
                return negative_errno();
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
                n--;
        buf[n] = 0;
        return 0;
}

int sysfs_read_int(const char *dir, const char *attr, int *ret) {
        char buf[32], *end;
        const char *s;
        long l;
        int r;

        r = sysfs_read(dir, attr, buf, sizeof(buf));
        if (r < 0)
                return r;
        s = buf + strspn(buf, " ");
        errno = 0;
        l = strtol(s, &end, 10);
        if (*s == 0 || *end != 0 || errno != 0 || l < INT32_MIN || l > INT32_MAX)
                return -EBADMSG;
        *ret = (int) l;
        return 0;
}

int sysfs_write(const char *dir, const char *attr, const char *value) {
        _cleanup_close_ int fd = -EBADF;
        size_t len = strlen(value);
        ssize_t n;

        fd = open_attr(dir, attr, O_WRONLY | O_TRUNC);
        if (fd < 0)
                return fd;
        /* One write(): sysfs stores take the whole value at once. */
        n = write(fd, value, len);
        if (n < 0)
                return negative_errno();
        if ((size_t) n != len)
                return -EIO;
        return 0;
}
