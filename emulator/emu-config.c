/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <ctype.h>
#include <ini.h>
#include <stdio.h>

#include "emu-config.h"
#include "ini-reader.h"

void emu_config_init(EmuConfig *c) {
        *c = (EmuConfig) { .vhci_controller = -1 };
}

static void disk_config_done(DiskConfig *d) {
        free(d->name);
        free(d->image);
        for (size_t i = 0; i < d->n_extra_luns; i++)
                free(d->lun_images[i]);
        free(d->vendor);
        free(d->product);
        free(d->serial);
        free(d->hub);
        *d = (DiskConfig) {};
}

static void passthrough_config_done(PassthroughConfig *p) {
        free(p->name);
        free(p->serial);
        free(p->path);
        free(p->hub);
        *p = (PassthroughConfig) {};
}

void emu_config_done(EmuConfig *c) {
        for (size_t i = 0; i < c->n_disks; i++)
                disk_config_done(&c->disks[i]);
        for (size_t i = 0; i < c->n_hubs; i++)
                free(c->hubs[i].name);
        for (size_t i = 0; i < c->n_keyboards; i++) {
                free(c->keyboards[i].name);
                free(c->keyboards[i].hub);
        }
        for (size_t i = 0; i < c->n_passthroughs; i++)
                passthrough_config_done(&c->passthroughs[i]);
        for (size_t i = 0; i < c->n_image_dirs; i++)
                free(c->image_dirs[i]);
        free(c->listen);
        free(c->control);
        *c = (EmuConfig) {};
}

static int set_string(char **field, const char *value, size_t max, const char **ret_error, const char *what);

int emu_config_add_allow(EmuConfig *c, const char *list, const char **ret_error) {
        _cleanup_free_ char *copy = strdup(list);
        char *saveptr = NULL;
        size_t n = 0;
        int r;

        if (!copy)
                return -ENOMEM;
        for (char *w = strtok_r(copy, " \t", &saveptr); w; w = strtok_r(NULL, " \t", &saveptr), n++) {
                if (c->n_allow >= EMU_CONFIG_MAX_ALLOW) {
                        *ret_error = "too many allowed networks (64 at most)";
                        return -EINVAL;
                }
                r = in_addr_prefix_from_string(w, &c->allow[c->n_allow], ret_error);
                if (r < 0)
                        return r;
                c->n_allow++;
        }
        if (n == 0) {
                *ret_error = "empty network";
                return -EINVAL;
        }
        return 0;
}

int emu_config_add_image_dir(EmuConfig *c, const char *dir, const char **ret_error) {
        char *copy = NULL;
        int r;

        if (dir[0] != '/') {
                *ret_error = "an image directory must be an absolute path";
                return -EINVAL;
        }
        if (c->n_image_dirs >= EMU_CONFIG_MAX_IMAGE_DIRS) {
                *ret_error = "too many image directories (16 at most)";
                return -EINVAL;
        }
        r = set_string(&copy, dir, 4095, ret_error, "image directory path too long");
        if (r < 0)
                return r;
        c->image_dirs[c->n_image_dirs++] = copy;
        return 0;
}

int emu_config_set_max_connections(EmuConfig *c, const char *value, const char **ret_error) {
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(value, &end, 10);
        if (!*value || *value == '-' || *end || errno != 0 || v < 1 || v > 4096) {
                *ret_error = "max-connections expects a number from 1 to 4096";
                return -EINVAL;
        }
        c->max_connections = (unsigned) v;
        return 0;
}

int parse_size(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;
        unsigned shift = 0;

        if (!s || !*s || *s == '-')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s)
                return -EINVAL;
        switch (*end) {
        case 0:
                break;
        case 'K': case 'k':
                shift = 10;
                break;
        case 'M': case 'm':
                shift = 20;
                break;
        case 'G': case 'g':
                shift = 30;
                break;
        case 'T': case 't':
                shift = 40;
                break;
        default:
                return -EINVAL;
        }
        if (*end && end[1] != 0 && !(end[1] == 'i' && end[2] == 'B' && end[3] == 0) && !(end[1] == 'B' && end[2] == 0))
                return -EINVAL;
        if (shift && v > (UINT64_MAX >> shift))
                return -ERANGE;
        v <<= shift;
        if (v == 0 || v % 512 != 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

int parse_bool(const char *s) {
        static const char *const yes[] = { "1", "yes", "y", "true", "on" };
        static const char *const no[] = { "0", "no", "n", "false", "off" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(s, yes[i]) == 0)
                        return 1;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(s, no[i]) == 0)
                        return 0;
        return -EINVAL;
}

static int set_string(char **field, const char *value, size_t max, const char **ret_error, const char *what) {
        char *copy;

        if (strlen(value) > max) {
                *ret_error = what;
                return -EINVAL;
        }
        for (const char *p = value; *p; p++)
                if ((unsigned char) *p < 0x20 || (unsigned char) *p == 0x7f) {
                        *ret_error = "control characters are not allowed in strings";
                        return -EINVAL;
                }
        copy = strdup(value);
        if (!copy)
                return -ENOMEM;
        free(*field);
        *field = copy;
        return 0;
}

static int parse_port(const char *value, unsigned *ret, const char **ret_error) {
        char *end;
        unsigned long v;

        if (!value || !*value) {
                *ret_error = "port needs a number";
                return -EINVAL;
        }
        v = strtoul(value, &end, 10);
        if (*end || v < 1 || v > 15) {
                *ret_error = "port must be a hub port number from 1 to 15";
                return -EINVAL;
        }
        *ret = (unsigned) v;
        return 0;
}

/* Every device name is unique: the control interface and the logs address devices by name. */
static bool name_taken(const EmuConfig *c, const char *name) {
        for (size_t i = 0; i < c->n_disks; i++)
                if (c->disks[i].name && streq(c->disks[i].name, name))
                        return true;
        for (size_t i = 0; i < c->n_hubs; i++)
                if (streq(c->hubs[i].name, name))
                        return true;
        for (size_t i = 0; i < c->n_keyboards; i++)
                if (streq(c->keyboards[i].name, name))
                        return true;
        for (size_t i = 0; i < c->n_passthroughs; i++)
                if (c->passthroughs[i].name && streq(c->passthroughs[i].name, name))
                        return true;
        return false;
}

static DiskConfig *new_disk(EmuConfig *c, const char **ret_error) {
        DiskConfig *d;

        assert_cc(EMU_CONFIG_MAX_DISKS == 256); /* the message below names it */
        if (c->n_disks >= EMU_CONFIG_MAX_DISKS) {
                *ret_error = "too many disks: at most 256";
                return NULL;
        }
        d = &c->disks[c->n_disks];
        *d = (DiskConfig) { .speed = USB_SPEED_HIGH };
        return d;
}

/* One key of a disk, shared by --disk and the [disk NAME] sections. */
static int disk_set(DiskConfig *d, const char *key, const char *value, const char **ret_error) {
        int r;

        if (streq(key, "image") || streq(key, "path")) {
                if (!value || !*value) {
                        *ret_error = "image path is empty";
                        return -EINVAL;
                }
                return set_string(&d->image, value, 4095, ret_error, "image path too long");
        }
        if (streq(key, "lun")) {
                if (!value || !*value) {
                        *ret_error = "lun needs an image path (lun=PATH)";
                        return -EINVAL;
                }
                if (d->n_extra_luns >= ELEMENTSOF(d->lun_images)) {
                        *ret_error = "a disk has at most 16 LUNs";
                        return -EINVAL;
                }
                r = set_string(&d->lun_images[d->n_extra_luns], value, 4095, ret_error, "lun image path too long");
                if (r < 0)
                        return r;
                d->n_extra_luns++;
                return 0;
        }
        if (streq(key, "size")) {
                r = parse_size(value, &d->size);
                if (r < 0)
                        *ret_error = "size must be a positive multiple of 512 bytes, e.g. 64M or 1G";
                return r < 0 ? -EINVAL : 0;
        }
        if (streq(key, "ro") || streq(key, "read-only") || streq(key, "removable") ||
            streq(key, "follow-symlinks")) {
                r = value ? parse_bool(value) : 1;
                if (r < 0) {
                        *ret_error = "expected a boolean (yes/no)";
                        return -EINVAL;
                }
                if (streq(key, "ro") || streq(key, "read-only"))
                        d->read_only = r;
                else if (streq(key, "removable"))
                        d->removable = r;
                else
                        d->follow_symlinks = r;
                return 0;
        }
        if (streq(key, "speed")) {
                UsbSpeed s = value ? usb_speed_from_string(value) : (UsbSpeed) -EINVAL;
                if (s != USB_SPEED_HIGH && s != USB_SPEED_SUPER && s != USB_SPEED_FULL) {
                        *ret_error = "speed must be full, high or super";
                        return -EINVAL;
                }
                d->speed = s;
                return 0;
        }
        if (!value) {
                *ret_error = "option needs a value (key=value)";
                return -EINVAL;
        }
        if (streq(key, "vendor"))
                return set_string(&d->vendor, value, 8, ret_error, "vendor is at most 8 characters (SCSI INQUIRY)");
        if (streq(key, "product"))
                return set_string(&d->product, value, 16, ret_error,
                                  "product is at most 16 characters (SCSI INQUIRY)");
        if (streq(key, "serial"))
                return set_string(&d->serial, value, 64, ret_error, "serial is at most 64 characters");
        if (streq(key, "name"))
                return set_string(&d->name, value, 64, ret_error, "name is at most 64 characters");
        if (streq(key, "hub"))
                return set_string(&d->hub, value, 64, ret_error, "hub name is at most 64 characters");
        if (streq(key, "port"))
                return parse_port(value, &d->port, ret_error);
        *ret_error = "unknown disk option";
        return -EINVAL;
}

static int disk_finish(EmuConfig *c, DiskConfig *d, const char **ret_error) {
        char buf[32];

        if (!d->image) {
                *ret_error = "disk has no image path";
                return -EINVAL;
        }
        if (!d->name) {
                snprintf(buf, sizeof(buf), "disk%zu", c->n_disks);
                d->name = strdup(buf);
                if (!d->name)
                        return -ENOMEM;
        }
        if (name_taken(c, d->name)) {
                *ret_error = "two devices have the same name";
                return -EINVAL;
        }
        c->n_disks++;
        return 0;
}

static bool valid_name(const char *s) {
        if (!*s || strlen(s) > 32)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                      *s == '-' || *s == '_'))
                        return false;
        return true;
}

/* Finds the hub or keyboard of that name, or makes a new one. */
static HubConfig *hub_get(EmuConfig *c, const char *name, const char **ret_error) {
        for (size_t i = 0; i < c->n_hubs; i++)
                if (streq(c->hubs[i].name, name))
                        return &c->hubs[i];
        if (!valid_name(name)) {
                *ret_error = "a name is 1-32 letters, digits, '-' or '_'";
                return NULL;
        }
        if (name_taken(c, name)) {
                *ret_error = "two devices have the same name";
                return NULL;
        }
        if (c->n_hubs >= EMU_CONFIG_MAX_HUBS) {
                *ret_error = "too many hubs (8 vhci controllers, one hub tree each)";
                return NULL;
        }
        HubConfig *h = &c->hubs[c->n_hubs];
        *h = (HubConfig) { .name = strdup(name), .ports = 4, .controller = -1 };
        if (!h->name) {
                *ret_error = "out of memory";
                return NULL;
        }
        c->n_hubs++;
        return h;
}

static KeyboardConfig *keyboard_get(EmuConfig *c, const char *name, const char **ret_error) {
        for (size_t i = 0; i < c->n_keyboards; i++)
                if (streq(c->keyboards[i].name, name))
                        return &c->keyboards[i];
        if (!valid_name(name)) {
                *ret_error = "a name is 1-32 letters, digits, '-' or '_'";
                return NULL;
        }
        if (name_taken(c, name)) {
                *ret_error = "two devices have the same name";
                return NULL;
        }
        if (c->n_keyboards >= EMU_CONFIG_MAX_KEYBOARDS) {
                *ret_error = "too many keyboards";
                return NULL;
        }
        KeyboardConfig *k = &c->keyboards[c->n_keyboards];
        *k = (KeyboardConfig) { .name = strdup(name) };
        if (!k->name) {
                *ret_error = "out of memory";
                return NULL;
        }
        c->n_keyboards++;
        return k;
}

static int hub_set(HubConfig *h, const char *key, const char *value, const char **ret_error) {
        if (streq(key, "ports")) {
                char *end;
                unsigned long v = value ? strtoul(value, &end, 10) : 0;
                if (!value || *end || v < 1 || v > 15) {
                        *ret_error = "ports must be from 1 to 15 (vhci has 15 root ports to carry them)";
                        return -EINVAL;
                }
                h->ports = (unsigned) v;
                return 0;
        }
        if (streq(key, "wakeup")) {
                int r = value ? parse_bool(value) : 1;
                if (r < 0) {
                        *ret_error = "expected a boolean (yes/no)";
                        return -EINVAL;
                }
                h->wakeup = r;
                return 0;
        }
        if (streq(key, "controller")) {
                char *end;
                long v = value ? strtol(value, &end, 10) : -1;
                if (!value || !*value || *end || v < 0 || v > 127) {
                        *ret_error = "controller expects a vhci controller number from 0 to 127";
                        return -EINVAL;
                }
                h->controller = (int) v;
                return 0;
        }
        *ret_error = "unknown hub option (ports, wakeup, controller)";
        return -EINVAL;
}

static int keyboard_set(KeyboardConfig *k, const char *key, const char *value, const char **ret_error) {
        if (streq(key, "hub")) {
                if (!value || !*value) {
                        *ret_error = "hub needs a name";
                        return -EINVAL;
                }
                return set_string(&k->hub, value, 64, ret_error, "hub name is at most 64 characters");
        }
        if (streq(key, "port"))
                return parse_port(value, &k->port, ret_error);
        *ret_error = "unknown keyboard option (hub, port)";
        return -EINVAL;
}

/* "BUS-PORT[.PORT...]": what the kernel names a USB device in /sys/bus/usb/devices (and `usbip list
 * -l` shows); at most 7 tiers of ports (USB 2.0 allows 5 hubs between the root and a device). */
static bool valid_usb_path(const char *s) {
        unsigned tiers = 0;
        const char *p = s;

        if (!isdigit((unsigned char) *p))
                return false;
        while (isdigit((unsigned char) *p))
                p++;
        if (*p != '-' || p - s > 3)
                return false;
        do {
                const char *start = ++p;
                if (!isdigit((unsigned char) *p))
                        return false;
                while (isdigit((unsigned char) *p))
                        p++;
                if (p - start > 3 || ++tiers > 7)
                        return false;
        } while (*p == '.');
        return *p == 0;
}

static int parse_hex16(const char *s, size_t len, uint16_t *ret) {
        unsigned v = 0;

        if (len == 0 || len > 4)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (!isxdigit((unsigned char) s[i]))
                        return -EINVAL;
                v = v << 4 | (unsigned) (isdigit((unsigned char) s[i]) ? s[i] - '0' : (tolower(s[i]) - 'a' + 10));
        }
        *ret = (uint16_t) v;
        return 0;
}

/* Which device: "VID:PID[:SERIAL]" or "BUS-PORT[.PORT...]". */
static int passthrough_set_device(PassthroughConfig *p, const char *value, const char **ret_error) {
        const char *colon, *serial;

        if (!value || !*value) {
                *ret_error = "passthrough needs a device: VID:PID[:SERIAL] or BUS-PORT[.PORT...]";
                return -EINVAL;
        }
        if (strchr(value, '-') && !strchr(value, ':')) {
                if (!valid_usb_path(value)) {
                        *ret_error = "a device path is BUS-PORT[.PORT...], e.g. 1-2 or 3-1.4";
                        return -EINVAL;
                }
                p->vendor_id = p->product_id = 0;
                free(p->serial);
                p->serial = NULL;
                return set_string(&p->path, value, 32, ret_error, "device path too long");
        }

        colon = strchr(value, ':');
        serial = colon ? strchr(colon + 1, ':') : NULL;
        if (!colon || parse_hex16(value, (size_t) (colon - value), &p->vendor_id) < 0 ||
            parse_hex16(colon + 1, serial ? (size_t) (serial - colon - 1) : strlen(colon + 1), &p->product_id) < 0) {
                *ret_error = "a device is VID:PID[:SERIAL] with hexadecimal ids (e.g. 0525:a4a5) or BUS-PORT[.PORT...]";
                return -EINVAL;
        }
        free(p->path);
        p->path = NULL;
        free(p->serial);
        p->serial = NULL;
        if (serial) {
                if (!serial[1]) {
                        *ret_error = "empty serial after VID:PID:";
                        return -EINVAL;
                }
                /* A string descriptor holds 126 UTF-16 code units at most. */
                return set_string(&p->serial, serial + 1, 126, ret_error, "serial is at most 126 characters");
        }
        return 0;
}

static int passthrough_set(PassthroughConfig *p, const char *key, const char *value, const char **ret_error) {
        if (streq(key, "device"))
                return passthrough_set_device(p, value, ret_error);
        if (streq(key, "name")) {
                if (!value || !valid_name(value)) {
                        *ret_error = "a name is 1-32 letters, digits, '-' or '_'";
                        return -EINVAL;
                }
                return set_string(&p->name, value, 32, ret_error, "name too long");
        }
        if (streq(key, "hub")) {
                if (!value || !*value) {
                        *ret_error = "hub needs a name";
                        return -EINVAL;
                }
                return set_string(&p->hub, value, 64, ret_error, "hub name is at most 64 characters");
        }
        if (streq(key, "port"))
                return parse_port(value, &p->port, ret_error);
        *ret_error = "unknown passthrough option (device, name, hub, port)";
        return -EINVAL;
}

static PassthroughConfig *new_passthrough(EmuConfig *c, const char **ret_error) {
        if (c->n_passthroughs >= EMU_CONFIG_MAX_PASSTHROUGHS) {
                *ret_error = "too many passthrough devices (16 at most)";
                return NULL;
        }
        c->passthroughs[c->n_passthroughs] = (PassthroughConfig) {};
        return &c->passthroughs[c->n_passthroughs];
}

static int passthrough_finish(EmuConfig *c, PassthroughConfig *p, const char **ret_error) {
        char buf[32];

        if (!p->path && p->vendor_id == 0 && p->product_id == 0) {
                *ret_error = "passthrough has no device (device=VID:PID[:SERIAL] or device=BUS-PORT[.PORT...])";
                return -EINVAL;
        }
        if (!p->name) {
                snprintf(buf, sizeof(buf), "pt%zu", c->n_passthroughs);
                p->name = strdup(buf);
                if (!p->name)
                        return -ENOMEM;
        }
        if (name_taken(c, p->name)) {
                *ret_error = "two devices have the same name";
                return -EINVAL;
        }
        c->n_passthroughs++;
        return 0;
}

typedef void *(*GetFunc)(EmuConfig *c, const char *name, const char **ret_error);
typedef int (*SetFunc)(void *obj, const char *key, const char *value, const char **ret_error);

/* A spec is "FIRST[,KEY=VALUE|,FLAG]...". The first field, cut out of COPY in place; NULL (with
 * FIRST_ERROR) when it is missing or is itself an option. */
static char *spec_first(char *copy, char **save, const char *first_error, const char **ret_error) {
        char *tok = strtok_r(copy, ",", save);

        if (!tok || strchr(tok, '=')) {
                *ret_error = first_error;
                return NULL;
        }
        return tok;
}

/* The rest of the spec after spec_first(), each option to SET; stops at the first error. */
static int spec_options(char **save, SetFunc set, void *obj, const char **ret_error) {
        char *tok;
        int r = 0;

        while (r >= 0 && (tok = strtok_r(NULL, ",", save))) {
                char *eq = strchr(tok, '=');
                if (eq)
                        *eq = 0;
                r = set(obj, tok, eq ? eq + 1 : NULL, ret_error);
        }
        return r;
}

int emu_config_add_passthrough_spec(EmuConfig *c, const char *spec, const char **ret_error) {
        _cleanup_free_ char *copy = NULL;
        PassthroughConfig *p;
        char *save = NULL, *tok;
        int r;

        p = new_passthrough(c, ret_error);
        if (!p)
                return -EINVAL;
        copy = strdup(spec);
        if (!copy)
                return -ENOMEM;
        tok = spec_first(copy, &save, "a passthrough starts with its device: VID:PID[:SERIAL] or BUS-PORT[.PORT...]",
                         ret_error);
        r = tok ? passthrough_set_device(p, tok, ret_error) : -EINVAL;
        if (r >= 0)
                r = spec_options(&save, (SetFunc) passthrough_set, p, ret_error);
        if (r >= 0)
                r = passthrough_finish(c, p, ret_error);
        if (r < 0)
                passthrough_config_done(p);
        return r;
}

/* "NAME,key=value,flag,..." for hubs and keyboards. */
static int add_named_spec(EmuConfig *c, const char *spec, GetFunc get, SetFunc set, const char **ret_error) {
        _cleanup_free_ char *copy = strdup(spec);
        char *save = NULL, *tok;
        void *obj;

        if (!copy)
                return -ENOMEM;
        tok = spec_first(copy, &save, "the spec starts with the device's name", ret_error);
        if (!tok)
                return -EINVAL;
        obj = get(c, tok, ret_error);
        if (!obj)
                return -EINVAL;
        return spec_options(&save, set, obj, ret_error);
}

int emu_config_add_hub_spec(EmuConfig *c, const char *spec, const char **ret_error) {
        return add_named_spec(c, spec, (GetFunc) hub_get, (SetFunc) hub_set, ret_error);
}

int emu_config_add_keyboard_spec(EmuConfig *c, const char *spec, const char **ret_error) {
        return add_named_spec(c, spec, (GetFunc) keyboard_get, (SetFunc) keyboard_set, ret_error);
}

static bool hub_known(const EmuConfig *c, const char *name) {
        for (size_t i = 0; i < c->n_hubs; i++)
                if (streq(c->hubs[i].name, name))
                        return true;
        return false;
}

int emu_config_check(const EmuConfig *c, const char **ret_error) {
        for (size_t i = 0; i < c->n_disks; i++)
                if ((c->disks[i].hub && !hub_known(c, c->disks[i].hub)) || (!c->disks[i].hub && c->disks[i].port)) {
                        *ret_error = c->disks[i].hub ? "a disk names a hub that does not exist"
                                                     : "port= needs hub=";
                        return -EINVAL;
                }
        for (size_t i = 0; i < c->n_keyboards; i++)
                if ((c->keyboards[i].hub && !hub_known(c, c->keyboards[i].hub)) ||
                    (!c->keyboards[i].hub && c->keyboards[i].port)) {
                        *ret_error = c->keyboards[i].hub ? "a keyboard names a hub that does not exist"
                                                         : "port= needs hub=";
                        return -EINVAL;
                }
        for (size_t i = 0; i < c->n_passthroughs; i++)
                if ((c->passthroughs[i].hub && !hub_known(c, c->passthroughs[i].hub)) ||
                    (!c->passthroughs[i].hub && c->passthroughs[i].port)) {
                        *ret_error = c->passthroughs[i].hub ? "a passthrough device names a hub that does not exist"
                                                            : "port= needs hub=";
                        return -EINVAL;
                }
        return 0;
}

int emu_config_add_disk_spec(EmuConfig *c, const char *spec, const char **ret_error) {
        _cleanup_free_ char *copy = NULL;
        DiskConfig *d;
        char *save = NULL, *tok;
        int r;

        d = new_disk(c, ret_error);
        if (!d)
                return -EINVAL;
        copy = strdup(spec);
        if (!copy)
                return -ENOMEM;

        tok = spec_first(copy, &save, "a disk starts with its image path", ret_error);
        r = tok ? disk_set(d, "image", tok, ret_error) : -EINVAL;
        if (r >= 0)
                r = spec_options(&save, (SetFunc) disk_set, d, ret_error);
        if (r >= 0)
                r = disk_finish(c, d, ret_error);
        if (r < 0)
                disk_config_done(d);
        return r;
}

typedef struct ParseState {
        EmuConfig *config;
        DiskConfig *disk;        /* the [disk ...] section being read */
        PassthroughConfig *passthrough; /* the [passthrough NAME] section being read */
        const char *error;
        int r;
        IniReader reader;        /* counts lines: reader.line is the handler's current line */
        unsigned error_line;
} ParseState;


static int finish_section(ParseState *p) {
        int r;

        if (p->passthrough) {
                r = passthrough_finish(p->config, p->passthrough, &p->error);
                if (r < 0)
                        passthrough_config_done(p->passthrough);
                p->passthrough = NULL;
                return r;
        }
        if (!p->disk)
                return 0;
        r = disk_finish(p->config, p->disk, &p->error);
        if (r < 0)
                disk_config_done(p->disk);
        p->disk = NULL;
        return r;
}

static int on_ini(void *userdata, const char *section, const char *key, const char *value) {
        ParseState *p = userdata;
        int r;

        /* Report the first error: inih goes on parsing after a handler failure. */
        if (p->r < 0)
                return 1;

        /* inih reports a new section with key == NULL (INI_CALL_HANDLER_ON_NEW_SECTION is not
         * available in every build), so sections are tracked by name. */
        if (strneq(section, "disk", 4) && (section[4] == ' ' || section[4] == 0)) {
                const char *name = section[4] ? section + 5 : NULL;
                if (!p->disk || (name && (!p->disk->name || !streq(p->disk->name, name)))) {
                        r = finish_section(p);
                        if (r < 0)
                                goto fail;
                        p->disk = new_disk(p->config, &p->error);
                        if (!p->disk) {
                                r = -EINVAL;
                                goto fail;
                        }
                        if (name) {
                                r = set_string(&p->disk->name, name, 64, &p->error, "disk name too long");
                                if (r < 0)
                                        goto fail;
                        }
                }
                r = disk_set(p->disk, key, value, &p->error);
                if (r < 0)
                        goto fail;
                return 1;
        }

        if (strneq(section, "passthrough ", 12)) {
                const char *name = section + 12;
                if (!p->passthrough || !streq(p->passthrough->name, name)) {
                        r = finish_section(p);
                        if (r < 0)
                                goto fail;
                        p->passthrough = new_passthrough(p->config, &p->error);
                        if (!p->passthrough) {
                                r = -EINVAL;
                                goto fail;
                        }
                        r = passthrough_set(p->passthrough, "name", name, &p->error);
                        if (r < 0)
                                goto fail;
                }
                r = passthrough_set(p->passthrough, key, value, &p->error);
                if (r < 0)
                        goto fail;
                return 1;
        }

        r = finish_section(p);
        if (r < 0)
                goto fail;

        if (strneq(section, "hub ", 4) || strneq(section, "keyboard ", 9)) {
                bool hub = section[0] == 'h';
                const char *name = section + (hub ? 4 : 9);
                void *obj = hub ? (void *) hub_get(p->config, name, &p->error)
                                : (void *) keyboard_get(p->config, name, &p->error);
                if (!obj) {
                        r = -EINVAL;
                        goto fail;
                }
                r = hub ? hub_set(obj, key, value, &p->error) : keyboard_set(obj, key, value, &p->error);
                if (r < 0)
                        goto fail;
                return 1;
        }

        if (streq(section, "emulator")) {
                if (streq(key, "listen")) {
                        r = set_string(&p->config->listen, value, 255, &p->error, "listen address too long");
                        if (r < 0)
                                goto fail;
                        return 1;
                }
                if (streq(key, "control")) {
                        r = set_string(&p->config->control, value, 107, &p->error,
                                       "control socket path too long (107 bytes at most)");
                        if (r < 0)
                                goto fail;
                        return 1;
                }
                if (streq(key, "attach")) {
                        r = parse_bool(value);
                        if (r < 0) {
                                p->error = "attach expects a boolean (yes/no)";
                                goto fail;
                        }
                        p->config->attach = r;
                        return 1;
                }
                if (streq(key, "vhci-controller")) {
                        char *end;
                        long v = strtol(value, &end, 10);
                        if (*value == 0 || *end != 0 || v < 0 || v > 127) {
                                p->error = "vhci-controller expects a number from 0 to 127";
                                r = -EINVAL;
                                goto fail;
                        }
                        p->config->vhci_controller = (int) v;
                        return 1;
                }
                if (streq(key, "allow")) {
                        r = emu_config_add_allow(p->config, value, &p->error);
                        if (r < 0)
                                goto fail;
                        return 1;
                }
                if (streq(key, "image-dir")) {
                        r = emu_config_add_image_dir(p->config, value, &p->error);
                        if (r < 0)
                                goto fail;
                        return 1;
                }
                if (streq(key, "max-connections")) {
                        r = emu_config_set_max_connections(p->config, value, &p->error);
                        if (r < 0)
                                goto fail;
                        return 1;
                }
                p->error = "unknown key in [emulator]";
                r = -EINVAL;
                goto fail;
        }
        p->error = "unknown section (expected [emulator], [disk NAME], [hub NAME], [keyboard NAME] or "
                   "[passthrough NAME])";
        r = -EINVAL;
fail:
        p->r = r;
        p->error_line = p->reader.line;
        return 0;
}

static int finish_parse(ParseState *p, int ini_result, unsigned *ret_line, const char **ret_error) {
        if (ini_result == 0 && p->r >= 0 && !p->reader.too_long) {
                p->r = finish_section(p);
                if (p->r >= 0)
                        return 0;
        }
        if (p->disk)
                disk_config_done(p->disk);
        if (p->passthrough)
                passthrough_config_done(p->passthrough);
        if (ini_result == -1) {
                *ret_line = 0;
                *ret_error = "cannot open file";
                return -ENOENT;
        }
        if (ini_result == -2) {
                *ret_line = 0;
                *ret_error = "out of memory";
                return -ENOMEM;
        }
        if (p->reader.too_long && p->r >= 0) {
                *ret_line = p->reader.line;
                *ret_error = "line too long";
                return -EINVAL;
        }
        /* inih returns the first line it had a problem with: a syntax error or our handler's. */
        if (ini_result > 0 && (p->r >= 0 || (unsigned) ini_result < p->error_line)) {
                *ret_line = (unsigned) ini_result;
                *ret_error = "syntax error (expected [section] or key = value)";
                return -EINVAL;
        }
        *ret_line = p->error_line;
        *ret_error = p->error ?: "invalid value";
        return p->r < 0 ? p->r : -EINVAL;
}

int emu_config_load_file(EmuConfig *c, const char *path, unsigned *ret_line, const char **ret_error) {
        ParseState p = { .config = c };
        int r;

        p.reader.file = fopen(path, "re");
        if (!p.reader.file) {
                r = negative_errno();
                *ret_line = 0;
                *ret_error = "cannot open file";
                return r;
        }
        r = finish_parse(&p, ini_parse_stream(ini_reader_read, &p.reader, on_ini, &p), ret_line, ret_error);
        fclose(p.reader.file);
        return r;
}

int emu_config_load_string(EmuConfig *c, const char *text, unsigned *ret_line, const char **ret_error) {
        ParseState p = { .config = c, .reader.text = text };
        return finish_parse(&p, ini_parse_stream(ini_reader_read, &p.reader, on_ini, &p), ret_line, ret_error);
}
