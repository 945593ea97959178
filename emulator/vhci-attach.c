/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>

#include "log.h"
#include "vhci-attach.h"

static const char *sysfs_dir(void) {
        /* Tests point this at a fake tree. */
        return getenv("DROWSE_VHCI_SYSFS") ?: VHCI_SYSFS_DIR;
}

static int write_attr(const char *name, const char *value) {
        char path[512];
        _cleanup_close_ int fd = -EBADF;
        size_t len = strlen(value);
        ssize_t k;

        snprintf(path, sizeof(path), "%s/%s", sysfs_dir(), name);
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        k = write(fd, value, len);
        if (k < 0)
                return negative_errno();
        if ((size_t) k != len)
                return -EIO;
        return 0;
}

int vhci_read_layout(VhciLayout *ret) {
        char path[512];
        _cleanup_(closedirp) DIR *d = NULL;
        unsigned nports = 0, n_status = 0;
        FILE *f;
        struct dirent *de;

        snprintf(path, sizeof(path), "%s/nports", sysfs_dir());
        f = fopen(path, "re");
        if (!f)
                return errno == ENOENT ? -ENODEV : negative_errno();
        if (fscanf(f, "%u", &nports) != 1)
                nports = 0;
        fclose(f);

        /* One status file per controller: status, status.1, ... (as the usbip tools count them). */
        d = opendir(sysfs_dir());
        if (!d)
                return negative_errno();
        while ((de = readdir(d)))
                if (strneq(de->d_name, "status", 6) && (de->d_name[6] == 0 || de->d_name[6] == '.'))
                        n_status++;

        if (nports == 0 || n_status == 0 || nports % (2 * n_status) != 0)
                return -EBADMSG;
        *ret = (VhciLayout) {
                .n_controllers = n_status,
                .ports_per_hub = nports / (2 * n_status),
        };
        return 0;
}

int vhci_port_for(const VhciLayout *l, unsigned controller, bool superspeed, unsigned rhport, int *ret_port) {
        if (controller >= l->n_controllers || rhport >= l->ports_per_hub)
                return -ERANGE;
        *ret_port = (int) (controller * 2 * l->ports_per_hub + (superspeed ? l->ports_per_hub : 0) + rhport);
        return 0;
}

int vhci_port_is_free(unsigned controller, int port) {
        char path[512], line[256];
        FILE *f;
        int r = -ENOENT;

        if (controller == 0)
                snprintf(path, sizeof(path), "%s/status", sysfs_dir());
        else
                snprintf(path, sizeof(path), "%s/status.%u", sysfs_dir(), controller);
        f = fopen(path, "re");
        if (!f)
                return negative_errno();
        /* "hs  0003 004 000 00000000 000000 0-0": sta 4 is VDEV_ST_NULL, a free port. */
        while (fgets(line, sizeof(line), f)) {
                char hub[4];
                unsigned p, sta;
                if (sscanf(line, "%3s %u %u", hub, &p, &sta) != 3)
                        continue;
                if ((int) p == port) {
                        r = sta == 4;
                        break;
                }
        }
        fclose(f);
        return r;
}

int vhci_find_free_port(const VhciLayout *l, UsbSpeed speed, int controller, int *ret_port) {
        bool ss = speed >= USB_SPEED_SUPER;

        for (unsigned c = 0; c < l->n_controllers; c++) {
                if (controller >= 0 && c != (unsigned) controller)
                        continue;
                for (unsigned rh = 0; rh < l->ports_per_hub; rh++) {
                        int port, r;
                        (void) vhci_port_for(l, c, ss, rh, &port);
                        r = vhci_port_is_free(c, port);
                        if (r < 0)
                                return r;
                        if (r > 0) {
                                *ret_port = port;
                                return 0;
                        }
                }
        }
        return -EBUSY;
}

int vhci_attach(int port, int fd, uint32_t devid, UsbSpeed speed) {
        char value[64];

        snprintf(value, sizeof(value), "%d %d %u %u", port, fd, devid, (unsigned) speed);
        return write_attr("attach", value);
}

int vhci_detach(int port) {
        char value[16];

        snprintf(value, sizeof(value), "%d", port);
        return write_attr("detach", value);
}
