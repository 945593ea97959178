/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <stdio.h>

#include "bot.h"
#include "disk.h"
#include "image.h"
#include "json.h"
#include "log.h"
#include "msc.h"
#include "scsi.h"

/* pid.codes' test VID:PID: ours is no product usb-storage has a quirk entry for, so the kernel treats the
 * disk as a plain SCSI-transparent BOT device and nothing we measure is shaped by someone else's quirk. */
#define DISK_VENDOR_ID 0x1209
#define DISK_PRODUCT_ID 0x0001

enum {
        DISK_STRING_MANUFACTURER = 1,
        DISK_STRING_PRODUCT,
        DISK_STRING_SERIAL,
};

static const UsbEndpointDesc disk_endpoints[] = {
        {
                .bEndpointAddress = USB_DIR_IN | 1,
                .bmAttributes = USB_ENDPOINT_XFER_BULK,
                .bMaxBurst = 15,
        },
        {
                .bEndpointAddress = USB_DIR_OUT | 2,
                .bmAttributes = USB_ENDPOINT_XFER_BULK,
                .bMaxBurst = 15,
        },
};

static const UsbInterfaceDesc disk_interfaces[] = {
        {
                .bInterfaceNumber = 0,
                .bInterfaceClass = USB_CLASS_MASS_STORAGE,
                .bInterfaceSubClass = USB_SUBCLASS_SCSI,
                .bInterfaceProtocol = USB_PR_BULK,
                .bNumEndpoints = ELEMENTSOF(disk_endpoints),
                .endpoints = disk_endpoints,
        },
};

static const UsbConfigDesc disk_configs[] = {
        {
                .bConfigurationValue = 1,
                /* No remote wakeup: usb-storage never asks for it (kernel-deep-dive §2.3). */
                .bmAttributes = USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_SELFPOWER,
                .bMaxPower = 50, /* 100 mA */
                .bNumInterfaces = ELEMENTSOF(disk_interfaces),
                .interfaces = disk_interfaces,
        },
};

static const UsbDeviceDesc disk_device_desc = {
        .bcdUSB = 0x0200,
        .bDeviceClass = USB_CLASS_PER_INTERFACE,
        .bMaxPacketSize0 = 64,
        .idVendor = DISK_VENDOR_ID,
        .idProduct = DISK_PRODUCT_ID,
        .bcdDevice = 0x0100,
        .iManufacturer = DISK_STRING_MANUFACTURER,
        .iProduct = DISK_STRING_PRODUCT,
        .iSerialNumber = DISK_STRING_SERIAL,
        .bNumConfigurations = ELEMENTSOF(disk_configs),
        .configs = disk_configs,
};

static int disk_control(void *function, const UsbSetup *setup, uint8_t *data, size_t size) {
        size_t len = size;
        int r;

        r = msc_class_request(function, setup, data, &len);
        if (r < 0)
                return r;
        return (int) len;
}

static ssize_t disk_transfer(void *function, uint8_t ep_address, uint8_t *data, size_t size) {
        if (ep_address & USB_DIR_IN)
                return msc_bulk_in(function, data, size);
        return msc_bulk_out(function, data, size) < 0 ? -EPIPE : (ssize_t) size;
}

static bool disk_in_ready(void *function, uint8_t ep_address) {
        return msc_bulk_in_ready(function);
}

static void disk_clear_halt(void *function, uint8_t ep_address) {
        msc_clear_halt(function, ep_address);
}

static void disk_bus_reset(void *function) {
        msc_bus_reset(function);
}

/* A new configuration resets the function's state, as a bus reset does (BOT spec 3.1). */
static void disk_set_configuration(void *function, uint8_t value) {
        msc_bus_reset(function);
}

static void disk_describe(void *function, FILE *f) {
        Msc *m = function;

        fprintf(f, "\"function\": \"mass-storage\", \"bot_state\": ");
        json_write_string(f, msc_state_to_string(msc_get_state(m)));
        fprintf(f, ", \"luns\": [");
        for (size_t i = 0; i < msc_get_n_luns(m); i++) {
                ScsiLun *l = msc_get_lun(m, i);
                const ScsiLunStats *st = scsi_lun_get_stats(l);
                Image *img = scsi_lun_get_image(l);

                fprintf(f, "%s{\"lun\": %zu, \"image\": ", i ? ", " : "", i);
                json_write_string(f, image_get_path(img));
                fprintf(f, ", \"size\": %" PRIu64 ", \"read_only\": %s, \"power\": ", image_get_size(img),
                        image_is_read_only(img) ? "true" : "false");
                json_write_string(f, scsi_power_state_to_string(scsi_lun_get_power_state(l)));
                fprintf(f, ", \"commands\": %" PRIu64 ", \"reads\": %" PRIu64 ", \"writes\": %" PRIu64
                        ", \"blocks_read\": %" PRIu64 ", \"blocks_written\": %" PRIu64 ", \"flushes\": %" PRIu64
                        ", \"starts\": %" PRIu64 ", \"stops\": %" PRIu64 "}",
                        st->commands, st->reads, st->writes, st->blocks_read, st->blocks_written, st->flushes,
                        st->starts, st->stops);
        }
        fputc(']', f);
}

/* The blocks a READ or WRITE touches. Returns false for any other command, or one too short to say. */
static bool cdb_extent(const uint8_t *cdb, size_t len, bool *ret_write, uint64_t *ret_lba, uint64_t *ret_blocks) {
        switch (cdb[0]) {
        case 0x08: /* READ(6) */
        case 0x0a: /* WRITE(6) */
                if (len < 6)
                        return false;
                *ret_lba = (uint64_t) (cdb[1] & 0x1f) << 16 | (uint64_t) cdb[2] << 8 | cdb[3];
                *ret_blocks = cdb[4] ? cdb[4] : 256;
                break;
        case 0x28: /* READ(10) */
        case 0x2a: /* WRITE(10) */
        case 0x2e: /* WRITE AND VERIFY(10) */
                if (len < 10)
                        return false;
                *ret_lba = get_be32(cdb + 2);
                *ret_blocks = get_be16(cdb + 7);
                break;
        case 0xa8: /* READ(12) */
        case 0xaa: /* WRITE(12) */
                if (len < 12)
                        return false;
                *ret_lba = get_be32(cdb + 2);
                *ret_blocks = get_be32(cdb + 6);
                break;
        case 0x88: /* READ(16) */
        case 0x8a: /* WRITE(16) */
                if (len < 16)
                        return false;
                *ret_lba = get_be64(cdb + 2);
                *ret_blocks = get_be32(cdb + 10);
                break;
        default:
                return false;
        }
        *ret_write = cdb[0] != 0x08 && cdb[0] != 0x28 && cdb[0] != 0xa8 && cdb[0] != 0x88;
        return true;
}

static bool cdb_is_medium_access(uint8_t opcode) {
        switch (opcode) {
        case 0x00: /* TEST UNIT READY */
        case 0x08: case 0x0a: case 0x28: case 0x2a: case 0x2e: case 0x88: case 0x8a: case 0xa8: case 0xaa:
        case 0x35: /* SYNCHRONIZE CACHE(10) */
        case 0x91: /* SYNCHRONIZE CACHE(16) */
                return true;
        default:
                return false;
        }
}

/* The storage faults of fault.h, consulted for every command the host sends to one of our LUNs. */
static int disk_fault_hook(ScsiLun *lun, const uint8_t *cdb, size_t cdb_len, ScsiSense *ret_sense, void *userdata) {
        UsbDevice *d = userdata;
        uint64_t now, lba, blocks, resumes = d->resumes + d->stats.resumes_inferred;
        const char *op = scsi_opcode_to_string(cdb[0]) ?: "command";
        bool write;
        Fault *f;

        if (!d->faults || cdb_len == 0)
                return 0;
        now = usb_device_now_usec();

        if (fault_fire(d, FAULT_PHASE_ERROR, now, "%s ends in a phase error", op)) {
                msc_inject_phase_error(d->function);
                return 0;
        }

        if (cdb[0] == 0x1b) { /* START STOP UNIT */
                f = fault_fire(d, FAULT_START_STOP_FAIL, now, "START STOP UNIT (%s) failed", cdb_len > 4 && (cdb[4] & 1)
                               ? "start" : "stop");
                if (f) {
                        *ret_sense = (ScsiSense) { f->params.sense_key, f->params.asc, f->params.ascq };
                        return 1;
                }
        }

        f = fault_find(d, FAULT_NOT_READY);
        if (f && cdb_is_medium_access(cdb[0]) && (!f->params.after_resume || resumes != f->resumes_seen) &&
            fault_fire_one(d, f, now, "%s answered NOT READY %x/%02x/%02x%s", op, f->params.sense_key, f->params.asc,
                           f->params.ascq, f->params.after_resume ? " after a resume" : "")) {
                f->resumes_seen = resumes;
                *ret_sense = (ScsiSense) { f->params.sense_key, f->params.asc, f->params.ascq };
                return 1;
        }

        f = fault_find(d, FAULT_MEDIA_ERROR);
        if (f && cdb_extent(cdb, cdb_len, &write, &lba, &blocks) && blocks > 0 &&
            lba <= f->params.lba_last && lba + blocks - 1 >= f->params.lba_first &&
            fault_fire_one(d, f, now, "%s of LBA %" PRIu64 "+%" PRIu64 " failed with a medium error", op, lba, blocks)) {
                if (f->params.sense_key)
                        *ret_sense = (ScsiSense) { f->params.sense_key, f->params.asc, f->params.ascq };
                else if (write)
                        *ret_sense = (ScsiSense) { SCSI_SENSE_MEDIUM_ERROR, 0x0c, 0x00 }; /* WRITE ERROR */
                else
                        *ret_sense = (ScsiSense) { SCSI_SENSE_MEDIUM_ERROR, 0x11, 0x00 }; /* UNRECOVERED READ ERROR */
                return 1;
        }
        return 0;
}

static void disk_free(void *function) {
        msc_free(function);
}

static const UsbFunctionOps disk_ops = {
        .control = disk_control,
        .transfer = disk_transfer,
        .in_ready = disk_in_ready,
        .clear_halt = disk_clear_halt,
        .bus_reset = disk_bus_reset,
        .set_configuration = disk_set_configuration,
        .describe = disk_describe,
        .free = disk_free,
};

const char *disk_image_error(int r) {
        switch (-r) {
        case EBUSY:
                return "it is in use by another process";
        case ELOOP:
                return "it is a symlink (allow with follow-symlinks)";
        case ENOENT:
                return "no such file (give size=SIZE to create it)";
        case EINVAL:
                return "its size is not a non-zero multiple of 512 bytes";
        case EBADFD:
                return "not a regular file";
        case EPERM:
                return "new images may only be created inside the image directories (--image-dir)";
        default:
                return strerror(-r);
        }
}

/* One LUN on its image. The serial of LUN n > 0 gets "-n" appended, so every LUN has its own
 * unit serial number and device identifier (VPD 0x80, 0x83). */
static int disk_new_lun(const DiskConfig *cfg, const char *path, unsigned index, ScsiLun **ret) {
        _cleanup_(image_freep) Image *image = NULL;
        char serial[80];
        int r;

        r = image_open_full(path, cfg->size,
                            &(ImageOptions) { .read_only = cfg->read_only, .follow_symlinks = cfg->follow_symlinks },
                            &image);
        if (r < 0)
                return log_error_errno(r, "%s: cannot use image %s: %s", cfg->name, path, disk_image_error(r));

        if (index == 0)
                snprintf(serial, sizeof(serial), "%s", cfg->serial ?: cfg->name);
        else
                snprintf(serial, sizeof(serial), "%s-%u", cfg->serial ?: cfg->name, index);

        r = scsi_lun_new(&(ScsiLunConfig) {
                                 .vendor = cfg->vendor ?: "drowse",
                                 .product = cfg->product ?: "Virtual Disk",
                                 .serial = serial,
                                 .read_only = cfg->read_only,
                                 .removable = cfg->removable,
                         },
                         image, ret);
        if (r < 0)
                return log_error_errno(r, "%s: cannot set up SCSI unit %u: %m", cfg->name, index);
        TAKE_PTR(image);
        return 0;
}

int disk_new(const DiskConfig *cfg, UsbDevice **ret) {
        _cleanup_(usb_device_freep) UsbDevice *d = NULL;
        ScsiLun *luns[EMU_CONFIG_MAX_LUNS] = {};
        size_t n_luns = 1 + cfg->n_extra_luns;
        Msc *msc = NULL;
        UsbDeviceDesc desc = disk_device_desc;
        int r;

        for (size_t i = 0; i < n_luns; i++) {
                r = disk_new_lun(cfg, i == 0 ? cfg->image : cfg->lun_images[i - 1], (unsigned) i, &luns[i]);
                if (r < 0)
                        goto fail;
        }

        r = msc_new(luns, n_luns, &msc);
        if (r < 0) {
                log_error_errno(r, "%s: cannot set up mass-storage function: %m", cfg->name);
                goto fail;
        }

        if (usb_speed_is_super(cfg->speed))
                desc.bcdUSB = 0x0320;
        r = usb_device_new(cfg->name, &desc, cfg->speed, &d);
        if (r < 0) {
                msc_free(msc);
                return log_oom();
        }
        usb_device_set_function(d, &disk_ops, msc);
        for (size_t i = 0; i < msc_get_n_luns(msc); i++)
                scsi_lun_set_fault_hook(msc_get_lun(msc, i), disk_fault_hook, d);

        /* A stable default serial from the name, so udev's by-id links survive restarts. */
        if (usb_device_set_string(d, DISK_STRING_MANUFACTURER, "drowse") < 0 ||
            usb_device_set_string(d, DISK_STRING_PRODUCT, cfg->product ?: "drowse virtual disk") < 0 ||
            usb_device_set_string(d, DISK_STRING_SERIAL, cfg->serial ?: cfg->name) < 0)
                return log_oom();

        *ret = TAKE_PTR(d);
        return 0;

fail:
        for (size_t i = 0; i < n_luns; i++)
                scsi_lun_free(luns[i]);
        return r;
}

bool disk_is_disk(const UsbDevice *d) {
        return d && d->ops == &disk_ops;
}
