/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "in-addr-prefix.h"
#include "macro.h"
#include "usb.h"

/* What drowse-emu is asked to emulate, from --disk options and a topology file. Parsing only: no
 * file is opened here except the configuration file itself. */

#define EMU_CONFIG_MAX_DISKS 256 /* all 240 root ports of 8 vhci_hcd controllers, and more behind hubs */
#define EMU_CONFIG_MAX_LUNS 16   /* Bulk-Only Transport allows 16 LUNs per device */

typedef struct DiskConfig {
        char *name;        /* for logs and the control interface: "disk0" or the section name */
        char *image;       /* LUN 0 */
        char *lun_images[EMU_CONFIG_MAX_LUNS - 1]; /* LUN 1..n, same size and options as LUN 0 */
        size_t n_extra_luns;
        uint64_t size;     /* create the image at this size if missing; 0: it must exist */
        bool read_only;
        bool removable;
        bool follow_symlinks;
        UsbSpeed speed;
        char *vendor;      /* SCSI INQUIRY vendor, 8 characters at most */
        char *product;     /* SCSI INQUIRY product and USB product string, 16 characters at most */
        char *serial;      /* USB iSerialNumber and SCSI unit serial number */
        char *hub;         /* plugged into this hub, or NULL for a root port */
        unsigned port;     /* hub port, 0 = the lowest free */
} DiskConfig;

#define EMU_CONFIG_MAX_HUBS 8
#define EMU_CONFIG_MAX_KEYBOARDS 16

typedef struct HubConfig {
        char *name;
        unsigned ports;    /* 1..15, default 4 */
        bool wakeup;       /* advertise remote wakeup (the kernel then autosuspends the hub) */
        int controller;    /* vhci controller, -1 = the first free */
} HubConfig;

typedef struct KeyboardConfig {
        char *name;
        char *hub;
        unsigned port;
} KeyboardConfig;

#define EMU_CONFIG_MAX_PASSTHROUGHS 16

/* A real USB device on this machine, exported as it is (passthrough.h). Chosen by ids (and serial) or
 * by where it is plugged in. */
typedef struct PassthroughConfig {
        char *name;        /* "pt0" or the section name */
        uint16_t vendor_id, product_id;  /* both 0 when chosen by path */
        char *serial;      /* with the ids: only the device with this iSerialNumber string */
        char *path;        /* "BUS-PORT[.PORT...]" as in /sys/bus/usb/devices, or NULL */
        char *hub;
        unsigned port;
} PassthroughConfig;

#define EMU_CONFIG_MAX_ALLOW 64
#define EMU_CONFIG_MAX_IMAGE_DIRS 16

typedef struct EmuConfig {
        char *listen;      /* NULL: default, "" after --no-listen */
        char *control;     /* control socket path, NULL: none */
        bool attach;
        int vhci_controller; /* -1: any */
        DiskConfig disks[EMU_CONFIG_MAX_DISKS];
        size_t n_disks;
        HubConfig hubs[EMU_CONFIG_MAX_HUBS];
        size_t n_hubs;
        KeyboardConfig keyboards[EMU_CONFIG_MAX_KEYBOARDS];
        size_t n_keyboards;
        PassthroughConfig passthroughs[EMU_CONFIG_MAX_PASSTHROUGHS];
        size_t n_passthroughs;
        InAddrPrefix allow[EMU_CONFIG_MAX_ALLOW]; /* TCP clients' networks; none: any */
        size_t n_allow;
        char *image_dirs[EMU_CONFIG_MAX_IMAGE_DIRS]; /* where images may be created; none: anywhere */
        size_t n_image_dirs;
        unsigned max_connections; /* 0: the server's default */
} EmuConfig;

void emu_config_init(EmuConfig *c);
void emu_config_done(EmuConfig *c);

/* "PATH[,lun=PATH...][,size=SIZE][,ro][,removable][,speed=high|super][,vendor=V][,product=P][,serial=S][,name=N]".
 * On error, *ret_error names what was wrong (static text) and the return is -EINVAL. */
int emu_config_add_disk_spec(EmuConfig *c, const char *spec, const char **ret_error);

/* "NAME[,ports=N][,wakeup][,controller=C]" and "NAME[,hub=HUB][,port=P]". */
int emu_config_add_hub_spec(EmuConfig *c, const char *spec, const char **ret_error);
int emu_config_add_keyboard_spec(EmuConfig *c, const char *spec, const char **ret_error);

/* "VID:PID[:SERIAL]|BUS-PORT[.PORT...][,name=N][,hub=HUB][,port=P]" (VID and PID in hex). */
int emu_config_add_passthrough_spec(EmuConfig *c, const char *spec, const char **ret_error);

/* --allow CIDR / allow= (a whitespace-separated list), --image-dir DIR / image-dir=,
 * --max-connections N / max-connections=. On error *ret_error names what was wrong and the return is -EINVAL (or -ENOMEM). */
int emu_config_add_allow(EmuConfig *c, const char *list, const char **ret_error);
int emu_config_add_image_dir(EmuConfig *c, const char *dir, const char **ret_error);
int emu_config_set_max_connections(EmuConfig *c, const char *value, const char **ret_error);

/* After everything is parsed: every hub= names a hub. */
int emu_config_check(const EmuConfig *c, const char **ret_error);

/* INI topology file. On error *ret_line is the line number (0 when the file could not be read) and
 * *ret_error says what was wrong. */
int emu_config_load_file(EmuConfig *c, const char *path, unsigned *ret_line, const char **ret_error);
int emu_config_load_string(EmuConfig *c, const char *text, unsigned *ret_line, const char **ret_error);

/* "64M", "1G", "4096", "512K": binary units; must be a positive multiple of 512. */
int parse_size(const char *s, uint64_t *ret);
int parse_bool(const char *s);
