/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>

#include "log.h"
#include "scsi.h"

/* What the command set looks like from the kernel (see the research notes, §3.4): usb-storage probes
 * with INQUIRY(36), TEST UNIT READY, READ CAPACITY(10), READ(10) of LBA 0, MODE SENSE(6) page 0x3F with
 * allocation length 192 twice; steady state is READ/WRITE(10), SYNCHRONIZE CACHE(10) at runtime suspend,
 * TEST UNIT READY polling and PREVENT ALLOW MEDIUM REMOVAL for removable disks. Everything else here is
 * for SG_IO users (sg3_utils, smartctl, udisks) and must fail cleanly when unsupported. */

#define BLOCK_SIZE IMAGE_BLOCK_SIZE
#define VENDOR_LEN 8
#define PRODUCT_LEN 16
#define REVISION_LEN 4
#define SERIAL_MAX 64
#define INQUIRY_STANDARD_LEN 36
#define INQUIRY_VERSION_SPC4 0x06

typedef enum UnitAttention {
        UNIT_ATTENTION_NONE,
        UNIT_ATTENTION_MEDIUM_CHANGED,
        UNIT_ATTENTION_RESET, /* wins over a medium change: it says more */
        _UNIT_ATTENTION_MAX,
} UnitAttention;

struct ScsiLun {
        Image *image;
        uint64_t n_blocks;
        char vendor[VENDOR_LEN], product[PRODUCT_LEN], revision[REVISION_LEN]; /* space padded */
        char serial[SERIAL_MAX + 1];
        bool read_only, removable;
        uint8_t index, n_luns;

        ScsiSense sense; /* kept from the last CHECK CONDITION until the next command */
        UnitAttention unit_attention;
        ScsiPowerState power_state;
        bool medium_present, medium_prevented;
        bool write_cache; /* WCE: with it off, every WRITE is flushed before GOOD */

        ScsiLunStats stats;
        ScsiFaultHook fault_hook;
        void *fault_userdata;
};

#define SENSE(k, a, q) ((ScsiSense) { .key = SCSI_SENSE_##k, .asc = (a), .ascq = (q) })
#define SENSE_INVALID_OPCODE SENSE(ILLEGAL_REQUEST, 0x20, 0x00)
#define SENSE_LBA_OUT_OF_RANGE SENSE(ILLEGAL_REQUEST, 0x21, 0x00)
#define SENSE_INVALID_FIELD_IN_CDB SENSE(ILLEGAL_REQUEST, 0x24, 0x00)
#define SENSE_LUN_NOT_SUPPORTED SENSE(ILLEGAL_REQUEST, 0x25, 0x00)
#define SENSE_INVALID_FIELD_IN_PARAMETER_LIST SENSE(ILLEGAL_REQUEST, 0x26, 0x00)
#define SENSE_PARAMETER_LIST_LENGTH_ERROR SENSE(ILLEGAL_REQUEST, 0x1a, 0x00)
#define SENSE_SAVING_PARAMETERS_NOT_SUPPORTED SENSE(ILLEGAL_REQUEST, 0x39, 0x00)
#define SENSE_MEDIUM_REMOVAL_PREVENTED SENSE(ILLEGAL_REQUEST, 0x53, 0x02)
#define SENSE_WRITE_PROTECTED SENSE(DATA_PROTECT, 0x27, 0x00)
#define SENSE_UNRECOVERED_READ_ERROR SENSE(MEDIUM_ERROR, 0x11, 0x00)
#define SENSE_WRITE_ERROR SENSE(MEDIUM_ERROR, 0x0c, 0x00)
#define SENSE_INITIALIZING_COMMAND_REQUIRED SENSE(NOT_READY, 0x04, 0x02)
#define SENSE_MEDIUM_NOT_PRESENT SENSE(NOT_READY, 0x3a, 0x00)
#define SENSE_POWER_ON_RESET SENSE(UNIT_ATTENTION, 0x29, 0x00)
#define SENSE_MEDIUM_CHANGED SENSE(UNIT_ATTENTION, 0x28, 0x00)
#define SENSE_INTERNAL_TARGET_FAILURE SENSE(HARDWARE_ERROR, 0x44, 0x00)

typedef enum ScsiOpFlags {
        /* SAM-5: INQUIRY, REPORT LUNS and REQUEST SENSE do not report a pending UNIT ATTENTION. */
        SCSI_OP_NO_UNIT_ATTENTION = 1 << 0,
        /* Needs a started unit with a medium: NOT READY otherwise. */
        SCSI_OP_MEDIUM = 1 << 1,
        /* Media access brings an IDLE/STANDBY unit back to ACTIVE (SBC-3 power conditions). */
        SCSI_OP_WAKES = 1 << 2,
        /* Data moves between the transport buffer and the image, not through ScsiCommand.buf. */
        SCSI_OP_MEDIA_DATA = 1 << 3,
} ScsiOpFlags;

struct ScsiOpcode {
        const char *name;
        uint8_t cdb_len;
        ScsiDirection direction;
        unsigned flags;
        /* Where READ/WRITE/VERIFY/SYNCHRONIZE CACHE keep their LBA and block count (unused otherwise). */
        uint8_t lba_offset, lba_size, count_offset, count_size;
        void (*begin)(ScsiLun *l, ScsiCommand *c);
        void (*end)(ScsiLun *l, ScsiCommand *c); /* after a complete, successful data phase */
};

static void command_fail(ScsiCommand *c, ScsiSense sense) {
        c->failed = true;
        c->sense = sense;
        c->direction = SCSI_DIRECTION_NONE;
        c->length = 0;
}

/* Small data-in replies: the device intends to send min(produced, allocation length). */
static void command_data_in(ScsiCommand *c, size_t produced, uint64_t allocation_length) {
        assert_cc(SCSI_COMMAND_BUF_SIZE <= UINT16_MAX);
        c->length = MIN((uint64_t) produced, allocation_length);
        c->direction = c->length > 0 ? SCSI_DIRECTION_IN : SCSI_DIRECTION_NONE;
}

static uint64_t get_be(const uint8_t *p, size_t n) {
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++)
                v = v << 8 | p[i];
        return v;
}

static void copy_padded(uint8_t *dst, const char *src, size_t n) {
        memset(dst, ' ', n);
        memcpy(dst, src, MIN(strlen(src), n));
}

/* ---- sense ---- */

static size_t sense_format(ScsiSense s, bool descriptor, uint8_t *buf) {
        if (descriptor) {
                memset(buf, 0, SCSI_SENSE_DESC_SIZE);
                buf[0] = 0x72; /* current error, descriptor format */
                buf[1] = s.key & 0x0f;
                buf[2] = s.asc;
                buf[3] = s.ascq;
                buf[7] = 0; /* no descriptors */
                return SCSI_SENSE_DESC_SIZE;
        }
        memset(buf, 0, SCSI_SENSE_FIXED_SIZE);
        buf[0] = 0x70; /* current error, fixed format, INFORMATION not valid */
        buf[2] = s.key & 0x0f;
        buf[7] = SCSI_SENSE_FIXED_SIZE - 8; /* additional sense length: 10, what usb-storage expects */
        buf[12] = s.asc;
        buf[13] = s.ascq;
        return SCSI_SENSE_FIXED_SIZE;
}

static ScsiSense unit_attention_sense(UnitAttention ua) {
        switch (ua) {
        case UNIT_ATTENTION_RESET:
                return SENSE_POWER_ON_RESET;
        case UNIT_ATTENTION_MEDIUM_CHANGED:
                return SENSE_MEDIUM_CHANGED;
        case UNIT_ATTENTION_NONE:
        case _UNIT_ATTENTION_MAX:
                break;
        }
        return SENSE(NO_SENSE, 0, 0);
}

static bool sense_is_empty(ScsiSense s) {
        return s.key == 0 && s.asc == 0 && s.ascq == 0;
}

static ScsiSense lun_state_sense(const ScsiLun *l) {
        if (!l->medium_present)
                return SENSE_MEDIUM_NOT_PRESENT;
        if (l->power_state == SCSI_POWER_STOPPED)
                return SENSE_INITIALIZING_COMMAND_REQUIRED;
        return SENSE(NO_SENSE, 0, 0);
}

ScsiSense scsi_lun_get_sense(const ScsiLun *l) {
        if (!sense_is_empty(l->sense))
                return l->sense;
        if (l->unit_attention != UNIT_ATTENTION_NONE)
                return unit_attention_sense(l->unit_attention);
        return lun_state_sense(l);
}

static void op_request_sense(ScsiLun *l, ScsiCommand *c) {
        bool desc = c->cdb[1] & 0x01;

        /* The pending sense (of the command before), else a pending UNIT ATTENTION (reported here
         * counts as reported: SPC-4 5.12), else the state of the unit (SPC-4: NOT READY while stopped). */
        ScsiSense s = scsi_lun_get_sense(l);
        if (sense_is_empty(l->sense) && l->unit_attention != UNIT_ATTENTION_NONE) {
                l->unit_attention = UNIT_ATTENTION_NONE;
                l->stats.unit_attentions++;
        }
        l->sense = SENSE(NO_SENSE, 0, 0);
        command_data_in(c, sense_format(s, desc, c->buf), c->cdb[4]);
}

/* ---- INQUIRY ---- */

static const uint8_t vpd_supported_pages[] = { 0x00, 0x80, 0x83, 0xb0, 0xb1 };

/* NAA 3h (locally assigned): 60 bits of FNV-1a over vendor, product and serial, stable across runs. */
static uint64_t lun_naa_locally_assigned(const ScsiLun *l) {
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        const char *parts[] = { l->vendor, l->product, l->serial };
        const size_t lens[] = { VENDOR_LEN, PRODUCT_LEN, strlen(l->serial) };
        for (size_t i = 0; i < ELEMENTSOF(parts); i++)
                for (size_t j = 0; j < lens[i]; j++) {
                        h ^= (uint8_t) parts[i][j];
                        h *= UINT64_C(0x100000001b3);
                }
        return UINT64_C(0x3) << 60 | (h & UINT64_C(0x0fffffffffffffff));
}

static size_t inquiry_vpd(const ScsiLun *l, uint8_t page, uint8_t *b) {
        size_t n;

        b[0] = 0x00; /* connected, direct access block device */
        b[1] = page;
        switch (page) {
        case 0x00:
                memcpy(b + 4, vpd_supported_pages, sizeof(vpd_supported_pages));
                n = 4 + sizeof(vpd_supported_pages);
                break;
        case 0x80: {
                size_t len = strlen(l->serial);
                memcpy(b + 4, l->serial, len);
                n = 4 + len;
                break;
        }
        case 0x83: {
                uint8_t *d = b + 4;
                /* NAA designator: what udev's scsi_id turns into ID_WWN. */
                d[0] = 0x01; /* binary */
                d[1] = 0x03; /* LU association, NAA */
                d[2] = 0;
                d[3] = 8;
                put_be64(d + 4, lun_naa_locally_assigned(l));
                d += 12;
                /* T10 vendor ID: vendor + product + serial, unique as long as the serial is. */
                size_t serial_len = strlen(l->serial);
                d[0] = 0x02; /* ASCII */
                d[1] = 0x01; /* LU association, T10 vendor ID */
                d[2] = 0;
                d[3] = (uint8_t) (VENDOR_LEN + PRODUCT_LEN + serial_len);
                memcpy(d + 4, l->vendor, VENDOR_LEN);
                memcpy(d + 4 + VENDOR_LEN, l->product, PRODUCT_LEN);
                memcpy(d + 4 + VENDOR_LEN + PRODUCT_LEN, l->serial, serial_len);
                d += 4 + d[3];
                n = (size_t) (d - b);
                break;
        }
        case 0xb0: /* Block Limits: nothing to limit, one block granularity */
                n = 64;
                memset(b + 2, 0, n - 2);
                put_be16(b + 6, 1);
                break;
        case 0xb1: /* Block Device Characteristics */
                n = 64;
                memset(b + 2, 0, n - 2);
                put_be16(b + 4, 0x0001); /* non-rotating medium */
                break;
        default:
                return 0;
        }
        put_be16(b + 2, (uint16_t) (n - 4));
        return n;
}

static void op_inquiry(ScsiLun *l, ScsiCommand *c) {
        uint16_t allocation_length = get_be16(c->cdb + 3);
        uint8_t *b = c->buf;

        assert_cc(4 + 2 * 12 + VENDOR_LEN + PRODUCT_LEN + SERIAL_MAX <= SCSI_COMMAND_BUF_SIZE);

        if (c->cdb[1] & 0x02) /* CmdDt: obsolete */
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);

        if (c->cdb[1] & 0x01) {
                size_t n = inquiry_vpd(l, c->cdb[2], b);
                if (n == 0)
                        return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);
                return command_data_in(c, n, allocation_length);
        }
        if (c->cdb[2] != 0)
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);

        memset(b, 0, INQUIRY_STANDARD_LEN);
        b[0] = 0x00; /* connected, direct access block device */
        b[1] = l->removable ? 0x80 : 0x00;
        /* SPC-4; also what makes usb-storage use 96-byte auto-sense (US_FL_SANE_SENSE, ANSI >= 5). */
        b[2] = INQUIRY_VERSION_SPC4;
        b[3] = 0x02; /* response data format 2 */
        b[4] = INQUIRY_STANDARD_LEN - 5;
        memcpy(b + 8, l->vendor, VENDOR_LEN);
        memcpy(b + 16, l->product, PRODUCT_LEN);
        memcpy(b + 32, l->revision, REVISION_LEN);
        command_data_in(c, INQUIRY_STANDARD_LEN, allocation_length);
}

/* ---- the unit itself ---- */

static void op_test_unit_ready(ScsiLun *l, ScsiCommand *c) {
        /* Readiness was checked by SCSI_OP_MEDIUM; nothing else to do. */
}

static void op_start_stop_unit(ScsiLun *l, ScsiCommand *c) {
        uint8_t power_condition = c->cdb[4] >> 4;
        bool no_flush = c->cdb[4] & 0x04, load_eject = c->cdb[4] & 0x02, start = c->cdb[4] & 0x01;
        ScsiPowerState target;

        /* IMMED (cdb[1] bit 0) is accepted: everything here completes before GOOD anyway. */
        switch (power_condition) {
        case 0x0: /* START_VALID: START and LOEJ decide */
                break;
        case 0x1: /* ACTIVE */
        case 0x7: /* LU_CONTROL: we have no timers, so "under LU control" is active */
                target = SCSI_POWER_ACTIVE;
                goto power_condition;
        case 0x2: /* IDLE */
        case 0xa: /* FORCE_IDLE_0 */
                target = SCSI_POWER_IDLE;
                goto power_condition;
        case 0x3: /* STANDBY */
        case 0xb: /* FORCE_STANDBY_0 */
                target = SCSI_POWER_STANDBY;
                goto power_condition;
        default:
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);
        }

        if (load_eject && !l->removable)
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);

        if (start) {
                if (load_eject && !l->medium_present) {
                        l->medium_present = true;
                        if (l->unit_attention == UNIT_ATTENTION_NONE)
                                l->unit_attention = UNIT_ATTENTION_MEDIUM_CHANGED;
                }
                if (!l->medium_present)
                        return command_fail(c, SENSE_MEDIUM_NOT_PRESENT);
                if (l->power_state == SCSI_POWER_STOPPED)
                        l->stats.starts++;
                l->power_state = SCSI_POWER_ACTIVE;
                return;
        }

        if (load_eject && l->medium_prevented)
                return command_fail(c, SENSE_MEDIUM_REMOVAL_PREVENTED);
        if (!no_flush && l->medium_present) {
                if (image_flush(l->image) < 0)
                        return command_fail(c, SENSE_WRITE_ERROR);
                l->stats.flushes++;
        }
        if (load_eject)
                l->medium_present = false;
        if (l->power_state != SCSI_POWER_STOPPED)
                l->stats.stops++;
        l->power_state = SCSI_POWER_STOPPED;
        return;

power_condition:
        /* SBC-3: with a power condition, START and LOEJ are ignored. A stopped unit is started by it. */
        if (l->power_state == SCSI_POWER_STOPPED)
                l->stats.starts++;
        if (l->power_state != target)
                l->stats.power_condition_changes++;
        l->power_state = target;
}

static void op_prevent_allow_medium_removal(ScsiLun *l, ScsiCommand *c) {
        switch (c->cdb[4] & 0x03) {
        case 0:
                l->medium_prevented = false;
                break;
        case 1:
                l->medium_prevented = true;
                break;
        default: /* medium changer bits */
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);
        }
}

static void op_report_luns(ScsiLun *l, ScsiCommand *c) {
        uint32_t allocation_length = get_be32(c->cdb + 6);
        uint8_t *b = c->buf;

        assert_cc(8 + 8 * 256 > SCSI_COMMAND_BUF_SIZE); /* hence the n_luns cap below */

        if (c->cdb[2] > 0x02 || allocation_length < 16)
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);

        size_t n = MIN((size_t) l->n_luns, (SCSI_COMMAND_BUF_SIZE - 8) / 8);
        memset(b, 0, 8 + 8 * n);
        put_be32(b, (uint32_t) (8 * n));
        for (size_t i = 0; i < n; i++)
                b[8 + 8 * i + 1] = (uint8_t) i; /* peripheral device addressing, bus 0 */
        command_data_in(c, 8 + 8 * n, allocation_length);
}

static void op_read_capacity_10(ScsiLun *l, ScsiCommand *c) {
        /* SBC-3: a LOGICAL BLOCK ADDRESS without PMI is an error; PMI itself is obsolete and ignored. */
        if (!(c->cdb[8] & 0x01) && get_be32(c->cdb + 2) != 0)
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);

        /* 0xFFFFFFFF tells the kernel to ask READ CAPACITY(16). */
        put_be32(c->buf, (uint32_t) MIN(l->n_blocks - 1, (uint64_t) UINT32_MAX));
        put_be32(c->buf + 4, BLOCK_SIZE);
        command_data_in(c, 8, 8);
}

static void op_service_action_in_16(ScsiLun *l, ScsiCommand *c) {
        if ((c->cdb[1] & 0x1f) != 0x10) /* only READ CAPACITY(16) */
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);

        memset(c->buf, 0, 32);
        put_be64(c->buf, l->n_blocks - 1);
        put_be32(c->buf + 8, BLOCK_SIZE);
        command_data_in(c, 32, get_be32(c->cdb + 10));
}

/* ---- block commands ---- */

static bool command_decode_range(const ScsiLun *l, ScsiCommand *c) {
        const ScsiOpcode *op = c->op;
        uint64_t lba = get_be(c->cdb + op->lba_offset, op->lba_size);
        uint64_t count = get_be(c->cdb + op->count_offset, op->count_size);

        if (op->cdb_len == 6) {
                lba &= 0x1fffff;
                if (count == 0) /* READ(6)/WRITE(6): 0 means 256 */
                        count = 256;
        }
        if (lba >= l->n_blocks || count > l->n_blocks - lba) {
                command_fail(c, SENSE_LBA_OUT_OF_RANGE);
                return false;
        }
        c->lba = lba;
        c->n_blocks = (uint32_t) count;
        return true;
}

static bool command_check_protect(ScsiCommand *c) {
        /* RDPROTECT/WRPROTECT/VRPROTECT: we format without protection information. */
        if (c->op->cdb_len > 6 && (c->cdb[1] & 0xe0)) {
                command_fail(c, SENSE_INVALID_FIELD_IN_CDB);
                return false;
        }
        return true;
}

static void op_read(ScsiLun *l, ScsiCommand *c) {
        if (!command_check_protect(c) || !command_decode_range(l, c))
                return;
        c->length = (uint64_t) c->n_blocks * BLOCK_SIZE;
        c->direction = c->length > 0 ? SCSI_DIRECTION_IN : SCSI_DIRECTION_NONE;
}

static void op_read_end(ScsiLun *l, ScsiCommand *c) {
        l->stats.reads++;
        l->stats.blocks_read += c->done / BLOCK_SIZE;
}

static void op_write(ScsiLun *l, ScsiCommand *c) {
        if (!command_check_protect(c) || !command_decode_range(l, c))
                return;
        if (l->read_only)
                return command_fail(c, SENSE_WRITE_PROTECTED);
        c->fua = c->op->cdb_len > 6 && (c->cdb[1] & 0x08);
        c->length = (uint64_t) c->n_blocks * BLOCK_SIZE;
        c->direction = c->length > 0 ? SCSI_DIRECTION_OUT : SCSI_DIRECTION_NONE;
}

static void op_write_end(ScsiLun *l, ScsiCommand *c) {
        l->stats.writes++;
        l->stats.blocks_written += c->done / BLOCK_SIZE;
        if (c->length > 0 && (c->fua || !l->write_cache)) {
                if (image_flush(l->image) < 0)
                        return command_fail(c, SENSE_WRITE_ERROR);
                l->stats.flushes++;
        }
}

static void op_verify(ScsiLun *l, ScsiCommand *c) {
        /* BYTCHK != 0 would need a data-out compare; nobody sends it to a USB disk. */
        if (c->cdb[1] & 0x06)
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);
        if (!command_check_protect(c))
                return;
        (void) command_decode_range(l, c);
}

static void op_synchronize_cache(ScsiLun *l, ScsiCommand *c) {
        /* The kernel sends LBA 0, 0 blocks (= to the end); a range must still be inside the medium.
         * IMMED is accepted: we complete before GOOD. */
        uint64_t lba = get_be(c->cdb + c->op->lba_offset, c->op->lba_size);
        uint64_t count = get_be(c->cdb + c->op->count_offset, c->op->count_size);
        if (lba >= l->n_blocks || count > l->n_blocks - lba)
                return command_fail(c, SENSE_LBA_OUT_OF_RANGE);

        if (image_flush(l->image) < 0)
                return command_fail(c, SENSE_WRITE_ERROR);
        l->stats.flushes++;
}

/* ---- mode pages ---- */

typedef enum PageControl {
        PAGE_CONTROL_CURRENT = 0,
        PAGE_CONTROL_CHANGEABLE = 1,
        PAGE_CONTROL_DEFAULT = 2,
        PAGE_CONTROL_SAVED = 3,
} PageControl;

typedef struct ModePage {
        uint8_t code;
        uint8_t length; /* including the 2-byte header */
        void (*build)(const ScsiLun *l, PageControl pc, uint8_t *p);
        void (*apply)(ScsiLun *l, const uint8_t *p);
} ModePage;

static void mode_page_caching_build(const ScsiLun *l, PageControl pc, uint8_t *p) {
        /* WCE=1 by default: we fdatasync on SYNCHRONIZE CACHE, so the kernel's "write back" is honest and
         * it sends SYNCHRONIZE CACHE before runtime suspend. Only WCE is changeable; RCD stays 0. */
        switch (pc) {
        case PAGE_CONTROL_CURRENT:
                p[2] = l->write_cache ? 0x04 : 0x00;
                break;
        case PAGE_CONTROL_CHANGEABLE:
        case PAGE_CONTROL_DEFAULT:
        case PAGE_CONTROL_SAVED:
                p[2] = 0x04;
                break;
        }
}

static void mode_page_caching_apply(ScsiLun *l, const uint8_t *p) {
        l->write_cache = p[2] & 0x04;
}

static void mode_page_control_build(const ScsiLun *l, PageControl pc, uint8_t *p) {
        /* All zero: no task set options, fixed-format sense by default (D_SENSE=0), nothing changeable. */
}

static const ModePage mode_pages[] = {
        { 0x08, 20, mode_page_caching_build, mode_page_caching_apply },
        { 0x0a, 12, mode_page_control_build, NULL },
};

static size_t mode_page_put(const ScsiLun *l, const ModePage *m, PageControl pc, uint8_t *p) {
        memset(p, 0, m->length);
        p[0] = m->code; /* PS=0: nothing is savable */
        p[1] = m->length - 2;
        m->build(l, pc, p);
        return m->length;
}

static void op_mode_sense(ScsiLun *l, ScsiCommand *c) {
        bool ten = c->op->cdb_len == 10;
        bool dbd = c->cdb[1] & 0x08, llbaa = ten && (c->cdb[1] & 0x10);
        PageControl pc = (PageControl) (c->cdb[2] >> 6);
        uint8_t page = c->cdb[2] & 0x3f, subpage = c->cdb[3];
        uint32_t allocation_length = ten ? get_be16(c->cdb + 7) : c->cdb[4];
        size_t header = ten ? 8 : 4, block_descriptor = dbd ? 0 : llbaa ? 16 : 8;
        uint8_t *b = c->buf;
        size_t n;

        if (pc == PAGE_CONTROL_SAVED)
                return command_fail(c, SENSE_SAVING_PARAMETERS_NOT_SUPPORTED);
        if (subpage != 0 && !(page == 0x3f && subpage == 0xff))
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);

        memset(b, 0, header + block_descriptor);
        n = header;
        if (block_descriptor == 8) {
                /* Short descriptor: block count saturates at 0xFFFFFF (SPC-4 7.5.5.2). */
                uint8_t *d = b + n;
                uint64_t blocks = MIN(l->n_blocks, (uint64_t) 0xffffff);
                d[1] = (uint8_t) (blocks >> 16);
                d[2] = (uint8_t) (blocks >> 8);
                d[3] = (uint8_t) blocks;
                put_be32(d + 4, BLOCK_SIZE);
        } else if (block_descriptor == 16) {
                put_be64(b + n, l->n_blocks);
                put_be32(b + n + 12, BLOCK_SIZE);
        }
        n += block_descriptor;

        bool found = false;
        for (size_t i = 0; i < ELEMENTSOF(mode_pages); i++)
                if (page == 0x3f || page == mode_pages[i].code) {
                        n += mode_page_put(l, &mode_pages[i], pc, b + n);
                        found = true;
                }
        if (!found)
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);

        /* WP for read-only (all the kernel reads here), DPOFUA since FUA is honoured. */
        uint8_t device_specific = (l->read_only ? 0x80 : 0x00) | 0x10;
        if (ten) {
                put_be16(b, (uint16_t) (n - 2));
                b[3] = device_specific;
                b[4] = llbaa && !dbd ? 0x01 : 0x00;
                put_be16(b + 6, (uint16_t) block_descriptor);
        } else {
                b[0] = (uint8_t) (n - 1);
                b[3] = (uint8_t) block_descriptor;
                b[2] = device_specific;
        }
        command_data_in(c, n, allocation_length);
}

static void op_mode_select(ScsiLun *l, ScsiCommand *c) {
        bool ten = c->op->cdb_len == 10;
        uint32_t length = ten ? get_be16(c->cdb + 7) : c->cdb[4];

        /* PF=0 would mean vendor-specific pages; SP=1 asks to save, which we cannot. */
        if (!(c->cdb[1] & 0x10) || (c->cdb[1] & 0x01))
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);
        if (length > SCSI_COMMAND_BUF_SIZE)
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB);
        c->length = length;
        c->direction = length > 0 ? SCSI_DIRECTION_OUT : SCSI_DIRECTION_NONE;
}

static void op_mode_select_end(ScsiLun *l, ScsiCommand *c) {
        bool ten = c->op->cdb_len == 10;
        size_t header = ten ? 8 : 4, n = (size_t) c->done;
        const uint8_t *b = c->buf;
        uint8_t pages[SCSI_COMMAND_BUF_SIZE];
        size_t block_descriptor;

        if (n == 0)
                return;
        if (n < header)
                return command_fail(c, SENSE_PARAMETER_LIST_LENGTH_ERROR);

        block_descriptor = ten ? get_be16(b + 6) : b[3];
        bool long_lba = ten && (b[4] & 0x01);
        if (block_descriptor != 0 && block_descriptor != (long_lba ? 16U : 8U))
                return command_fail(c, SENSE_INVALID_FIELD_IN_PARAMETER_LIST);
        if (n < header + block_descriptor)
                return command_fail(c, SENSE_PARAMETER_LIST_LENGTH_ERROR);
        if (block_descriptor > 0) {
                /* Same block size; the block count may be 0 (no change) or the current one. */
                const uint8_t *d = b + header;
                uint64_t blocks = long_lba ? get_be64(d) : get_be(d + 1, 3);
                uint32_t block_length = long_lba ? get_be32(d + 12) : (uint32_t) get_be(d + 5, 3);
                uint64_t current = long_lba ? l->n_blocks : MIN(l->n_blocks, (uint64_t) 0xffffff);
                if (block_length != BLOCK_SIZE || (blocks != 0 && blocks != current))
                        return command_fail(c, SENSE_INVALID_FIELD_IN_PARAMETER_LIST);
        }

        /* Validate every page before applying any: a rejected list changes nothing. */
        for (unsigned pass = 0; pass < 2; pass++)
                for (size_t off = header + block_descriptor; off < n;) {
                        const ModePage *m = NULL;
                        uint8_t code = b[off] & 0x3f;

                        if (b[off] & 0x40) /* SPF: we have no subpages */
                                return command_fail(c, SENSE_INVALID_FIELD_IN_PARAMETER_LIST);
                        if (n - off < 2)
                                return command_fail(c, SENSE_PARAMETER_LIST_LENGTH_ERROR);
                        for (size_t i = 0; i < ELEMENTSOF(mode_pages); i++)
                                if (mode_pages[i].code == code)
                                        m = &mode_pages[i];
                        if (!m || b[off + 1] != m->length - 2)
                                return command_fail(c, SENSE_INVALID_FIELD_IN_PARAMETER_LIST);
                        if (n - off < m->length)
                                return command_fail(c, SENSE_PARAMETER_LIST_LENGTH_ERROR);

                        if (pass == 0) {
                                uint8_t *current = pages, *changeable = pages + m->length;
                                assert_cc(2 * 20 <= sizeof(pages));
                                mode_page_put(l, m, PAGE_CONTROL_CURRENT, current);
                                mode_page_put(l, m, PAGE_CONTROL_CHANGEABLE, changeable);
                                for (size_t i = 2; i < m->length; i++)
                                        if ((b[off + i] ^ current[i]) & ~changeable[i])
                                                return command_fail(c,
                                                                    SENSE_INVALID_FIELD_IN_PARAMETER_LIST);
                        } else if (m->apply)
                                m->apply(l, b + off);
                        off += m->length;
                }
}

/* ---- the table ---- */

#define RW(lo, ls, co, cs) .lba_offset = (lo), .lba_size = (ls), .count_offset = (co), .count_size = (cs)
#define MEDIA_IN (SCSI_OP_MEDIUM | SCSI_OP_WAKES | SCSI_OP_MEDIA_DATA)

static const ScsiOpcode scsi_opcodes[256] = {
        [0x00] = { "TEST UNIT READY", 6, SCSI_DIRECTION_NONE, SCSI_OP_MEDIUM, .begin = op_test_unit_ready },
        [0x03] = { "REQUEST SENSE", 6, SCSI_DIRECTION_IN, SCSI_OP_NO_UNIT_ATTENTION,
                   .begin = op_request_sense },
        [0x08] = { "READ(6)", 6, SCSI_DIRECTION_IN, MEDIA_IN, RW(1, 3, 4, 1), op_read, op_read_end },
        [0x0a] = { "WRITE(6)", 6, SCSI_DIRECTION_OUT, MEDIA_IN, RW(1, 3, 4, 1), op_write, op_write_end },
        [0x12] = { "INQUIRY", 6, SCSI_DIRECTION_IN, SCSI_OP_NO_UNIT_ATTENTION, .begin = op_inquiry },
        [0x15] = { "MODE SELECT(6)", 6, SCSI_DIRECTION_OUT, 0, .begin = op_mode_select,
                   .end = op_mode_select_end },
        [0x1a] = { "MODE SENSE(6)", 6, SCSI_DIRECTION_IN, 0, .begin = op_mode_sense },
        [0x1b] = { "START STOP UNIT", 6, SCSI_DIRECTION_NONE, 0, .begin = op_start_stop_unit },
        [0x1e] = { "PREVENT ALLOW MEDIUM REMOVAL", 6, SCSI_DIRECTION_NONE, 0,
                   .begin = op_prevent_allow_medium_removal },
        [0x25] = { "READ CAPACITY(10)", 10, SCSI_DIRECTION_IN, SCSI_OP_MEDIUM,
                   .begin = op_read_capacity_10 },
        [0x28] = { "READ(10)", 10, SCSI_DIRECTION_IN, MEDIA_IN, RW(2, 4, 7, 2), op_read, op_read_end },
        [0x2a] = { "WRITE(10)", 10, SCSI_DIRECTION_OUT, MEDIA_IN, RW(2, 4, 7, 2), op_write, op_write_end },
        [0x2f] = { "VERIFY(10)", 10, SCSI_DIRECTION_NONE, SCSI_OP_MEDIUM | SCSI_OP_WAKES, RW(2, 4, 7, 2),
                   op_verify },
        [0x35] = { "SYNCHRONIZE CACHE(10)", 10, SCSI_DIRECTION_NONE, SCSI_OP_MEDIUM, RW(2, 4, 7, 2),
                   op_synchronize_cache },
        [0x55] = { "MODE SELECT(10)", 10, SCSI_DIRECTION_OUT, 0, .begin = op_mode_select,
                   .end = op_mode_select_end },
        [0x5a] = { "MODE SENSE(10)", 10, SCSI_DIRECTION_IN, 0, .begin = op_mode_sense },
        [0x88] = { "READ(16)", 16, SCSI_DIRECTION_IN, MEDIA_IN, RW(2, 8, 10, 4), op_read, op_read_end },
        [0x8a] = { "WRITE(16)", 16, SCSI_DIRECTION_OUT, MEDIA_IN, RW(2, 8, 10, 4), op_write, op_write_end },
        [0x8f] = { "VERIFY(16)", 16, SCSI_DIRECTION_NONE, SCSI_OP_MEDIUM | SCSI_OP_WAKES, RW(2, 8, 10, 4),
                   op_verify },
        [0x91] = { "SYNCHRONIZE CACHE(16)", 16, SCSI_DIRECTION_NONE, SCSI_OP_MEDIUM, RW(2, 8, 10, 4),
                   op_synchronize_cache },
        [0x9e] = { "SERVICE ACTION IN(16)", 16, SCSI_DIRECTION_IN, SCSI_OP_MEDIUM,
                   .begin = op_service_action_in_16 },
        [0xa0] = { "REPORT LUNS", 12, SCSI_DIRECTION_IN, SCSI_OP_NO_UNIT_ATTENTION,
                   .begin = op_report_luns },
        [0xa8] = { "READ(12)", 12, SCSI_DIRECTION_IN, MEDIA_IN, RW(2, 4, 6, 4), op_read, op_read_end },
        [0xaa] = { "WRITE(12)", 12, SCSI_DIRECTION_OUT, MEDIA_IN, RW(2, 4, 6, 4), op_write, op_write_end },
        /* Deliberately absent, so they get INVALID COMMAND OPERATION CODE: ATA PASS-THROUGH(12) 0xa1 and
         * (16) 0x85 (smartctl, udisks probe them and fall back cleanly), REPORT SUPPORTED OPCODES,
         * WRITE SAME, UNMAP, SECURITY PROTOCOL IN, LOG SENSE. */
};

const char *scsi_opcode_to_string(uint8_t opcode) {
        return scsi_opcodes[opcode].name;
}

/* ---- commands ---- */

static void nolun_begin(ScsiCommand *c) {
        /* SPC-4 6.6.2: INQUIRY to a LUN that cannot exist answers peripheral qualifier 011b. */
        switch (c->cdb[0]) {
        case 0x12:
                if (c->cdb[1] & 0x03)
                        return command_fail(c, SENSE_LUN_NOT_SUPPORTED);
                memset(c->buf, 0, INQUIRY_STANDARD_LEN);
                c->buf[0] = 0x7f;
                c->buf[2] = INQUIRY_VERSION_SPC4;
                c->buf[3] = 0x02;
                c->buf[4] = INQUIRY_STANDARD_LEN - 5;
                return command_data_in(c, INQUIRY_STANDARD_LEN, get_be16(c->cdb + 3));
        case 0x03:
                return command_data_in(c, sense_format(SENSE_LUN_NOT_SUPPORTED, c->cdb[1] & 0x01, c->buf),
                                       c->cdb[4]);
        default:
                return command_fail(c, SENSE_LUN_NOT_SUPPORTED);
        }
}

int scsi_lun_command_begin(ScsiLun *l, const uint8_t *cdb, size_t cdb_len, ScsiCommand *c) {
        if (!cdb || !c)
                return -EINVAL;

        *c = (ScsiCommand) {};
        if (cdb_len == 0)
                return command_fail(c, SENSE_INVALID_OPCODE), 0;
        c->cdb_len = (uint8_t) MIN(cdb_len, (size_t) SCSI_CDB_MAX);
        memcpy(c->cdb, cdb, c->cdb_len);

        const ScsiOpcode *op = &scsi_opcodes[c->cdb[0]];
        if (op->name)
                c->op = op;

        if (!l) {
                if (c->op && c->op->cdb_len > c->cdb_len)
                        return command_fail(c, SENSE_INVALID_FIELD_IN_CDB), 0;
                return nolun_begin(c), 0;
        }

        l->stats.commands++;

        /* BOT has no autosense: the sense of a failed command lives until the next command. */
        if (c->cdb[0] != 0x03)
                l->sense = SENSE(NO_SENSE, 0, 0);

        if (l->unit_attention != UNIT_ATTENTION_NONE &&
            !(c->op && (c->op->flags & SCSI_OP_NO_UNIT_ATTENTION))) {
                command_fail(c, unit_attention_sense(l->unit_attention));
                l->unit_attention = UNIT_ATTENTION_NONE;
                l->stats.unit_attentions++;
                return 0;
        }

        if (!c->op)
                return command_fail(c, SENSE_INVALID_OPCODE), 0;
        /* A CDB shorter than its opcode needs cannot be read; NACA (ACA) is not supported. */
        if (c->cdb_len < op->cdb_len || (c->cdb[op->cdb_len - 1] & 0x04))
                return command_fail(c, SENSE_INVALID_FIELD_IN_CDB), 0;

        if (l->fault_hook) {
                ScsiSense s = SENSE_INTERNAL_TARGET_FAILURE;
                int r = l->fault_hook(l, c->cdb, c->cdb_len, &s, l->fault_userdata);
                if (r < 0)
                        return command_fail(c, SENSE_INTERNAL_TARGET_FAILURE), 0;
                if (r > 0)
                        return command_fail(c, s), 0;
        }

        if (op->flags & SCSI_OP_MEDIUM) {
                ScsiSense s = lun_state_sense(l);
                if (!sense_is_empty(s))
                        return command_fail(c, s), 0;
        }

        op->begin(l, c);
        if (!c->failed && (op->flags & SCSI_OP_WAKES) && l->power_state != SCSI_POWER_ACTIVE) {
                l->stats.power_condition_changes++;
                l->power_state = SCSI_POWER_ACTIVE;
        }
        return 0;
}

static uint64_t command_remaining(const ScsiCommand *c) {
        return c->length - c->done;
}

ssize_t scsi_lun_command_read(ScsiLun *l, ScsiCommand *c, uint8_t *buf, size_t len) {
        if (!c || (!buf && len > 0))
                return -EINVAL;
        if (c->failed || c->direction != SCSI_DIRECTION_IN)
                return c->failed ? -EIO : -EINVAL;

        size_t n = (size_t) MIN((uint64_t) len, command_remaining(c));
        if (n == 0)
                return 0;

        if (l && c->op && (c->op->flags & SCSI_OP_MEDIA_DATA)) {
                int r = image_read(l->image, c->lba * BLOCK_SIZE + c->done, buf, n);
                if (r < 0) {
                        log_debug_errno(r, "LUN %u: %s of LBA %" PRIu64 " failed: %m", l->index, c->op->name,
                                        c->lba);
                        command_fail(c, SENSE_UNRECOVERED_READ_ERROR);
                        return -EIO;
                }
        } else
                memcpy(buf, c->buf + c->done, n);

        c->done += n;
        return (ssize_t) n;
}

int scsi_lun_command_write(ScsiLun *l, ScsiCommand *c, const uint8_t *buf, size_t len) {
        if (!c || (!buf && len > 0))
                return -EINVAL;
        if (c->failed)
                return -EIO;
        if (c->direction != SCSI_DIRECTION_OUT || len > command_remaining(c))
                return -EINVAL;
        if (len == 0)
                return 0;

        if (l && c->op && (c->op->flags & SCSI_OP_MEDIA_DATA)) {
                int r = image_write(l->image, c->lba * BLOCK_SIZE + c->done, buf, len);
                if (r < 0) {
                        log_debug_errno(r, "LUN %u: %s of LBA %" PRIu64 " failed: %m", l->index, c->op->name,
                                        c->lba);
                        command_fail(c, SENSE_WRITE_ERROR);
                        return -EIO;
                }
        } else
                memcpy(c->buf + c->done, buf, len); /* length <= SCSI_COMMAND_BUF_SIZE, checked at begin */

        c->done += len;
        return 0;
}

int scsi_lun_command_end(ScsiLun *l, ScsiCommand *c) {
        if (!c)
                return -EINVAL;

        if (l && !c->failed && c->op && c->op->end)
                c->op->end(l, c);

        if (!c->failed)
                return SCSI_STATUS_GOOD;
        if (l) {
                l->sense = c->sense;
                l->stats.check_conditions++;
        }
        return SCSI_STATUS_CHECK_CONDITION;
}

void scsi_lun_command_abort(ScsiLun *l, ScsiCommand *c) {
        /* Data already written stays written (as on a real disk whose transfer was cut); nothing to undo. */
        if (c)
                *c = (ScsiCommand) {};
}

/* ---- the object ---- */

static int check_ascii(const char *s, size_t max) {
        size_t n = strlen(s);
        if (n > max)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (s[i] < 0x20 || s[i] > 0x7e)
                        return -EINVAL;
        return 0;
}

int scsi_lun_new(const ScsiLunConfig *config, Image *image, ScsiLun **ret) {
        static const ScsiLunConfig defaults = {};
        const char *vendor, *product, *revision, *serial;

        if (!image || !ret)
                return -EINVAL;
        if (!config)
                config = &defaults;

        vendor = config->vendor ?: "drowse";
        product = config->product ?: "Emulated Disk";
        revision = config->revision ?: "0001";
        serial = config->serial ?: "0";
        if (check_ascii(vendor, VENDOR_LEN) < 0 || check_ascii(product, PRODUCT_LEN) < 0 ||
            check_ascii(revision, REVISION_LEN) < 0 || check_ascii(serial, SERIAL_MAX) < 0 || !*serial)
                return log_debug_errno(EINVAL, "SCSI identity strings must be printable ASCII of at most "
                                               "8/16/4/64 characters.");
        if (image_get_n_blocks(image) == 0)
                return -EINVAL;

        ScsiLun *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        *l = (ScsiLun) {
                .image = image,
                .n_blocks = image_get_n_blocks(image),
                .read_only = config->read_only || image_is_read_only(image),
                .removable = config->removable,
                .n_luns = 1,
                .unit_attention = UNIT_ATTENTION_RESET,
                .power_state = SCSI_POWER_ACTIVE,
                .medium_present = true,
                .write_cache = true,
        };
        copy_padded((uint8_t *) l->vendor, vendor, VENDOR_LEN);
        copy_padded((uint8_t *) l->product, product, PRODUCT_LEN);
        copy_padded((uint8_t *) l->revision, revision, REVISION_LEN);
        strcpy(l->serial, serial); /* length checked above */
        *ret = l;
        return 0;
}

ScsiLun *scsi_lun_free(ScsiLun *l) {
        if (!l)
                return NULL;
        image_free(l->image);
        return mfree(l);
}

void scsi_lun_set_address(ScsiLun *l, uint8_t index, uint8_t n_luns) {
        l->index = index;
        l->n_luns = MAX(n_luns, (uint8_t) (index + 1));
}

void scsi_lun_set_fault_hook(ScsiLun *l, ScsiFaultHook hook, void *userdata) {
        l->fault_hook = hook;
        l->fault_userdata = userdata;
}

void scsi_lun_reset(ScsiLun *l) {
        l->unit_attention = UNIT_ATTENTION_RESET;
}

const ScsiLunStats *scsi_lun_get_stats(const ScsiLun *l) {
        return &l->stats;
}

ScsiPowerState scsi_lun_get_power_state(const ScsiLun *l) {
        return l->power_state;
}

bool scsi_lun_get_medium_prevented(const ScsiLun *l) {
        return l->medium_prevented;
}

bool scsi_lun_get_medium_present(const ScsiLun *l) {
        return l->medium_present;
}

bool scsi_lun_get_write_cache(const ScsiLun *l) {
        return l->write_cache;
}

Image *scsi_lun_get_image(const ScsiLun *l) {
        return l->image;
}

static const char *const scsi_direction_table[_SCSI_DIRECTION_MAX] = {
        [SCSI_DIRECTION_NONE] = "none",
        [SCSI_DIRECTION_IN] = "in",
        [SCSI_DIRECTION_OUT] = "out",
};
DEFINE_STRING_TABLE_LOOKUP(scsi_direction, ScsiDirection);

static const char *const scsi_sense_key_table[_SCSI_SENSE_KEY_MAX] = {
        [SCSI_SENSE_NO_SENSE] = "no-sense",
        [SCSI_SENSE_RECOVERED_ERROR] = "recovered-error",
        [SCSI_SENSE_NOT_READY] = "not-ready",
        [SCSI_SENSE_MEDIUM_ERROR] = "medium-error",
        [SCSI_SENSE_HARDWARE_ERROR] = "hardware-error",
        [SCSI_SENSE_ILLEGAL_REQUEST] = "illegal-request",
        [SCSI_SENSE_UNIT_ATTENTION] = "unit-attention",
        [SCSI_SENSE_DATA_PROTECT] = "data-protect",
        [SCSI_SENSE_BLANK_CHECK] = "blank-check",
        [SCSI_SENSE_VENDOR_SPECIFIC] = "vendor-specific",
        [SCSI_SENSE_COPY_ABORTED] = "copy-aborted",
        [SCSI_SENSE_ABORTED_COMMAND] = "aborted-command",
        [SCSI_SENSE_VOLUME_OVERFLOW] = "volume-overflow",
        [SCSI_SENSE_MISCOMPARE] = "miscompare",
};
DEFINE_STRING_TABLE_LOOKUP(scsi_sense_key, ScsiSenseKey);

static const char *const scsi_power_state_table[_SCSI_POWER_STATE_MAX] = {
        [SCSI_POWER_ACTIVE] = "active",
        [SCSI_POWER_IDLE] = "idle",
        [SCSI_POWER_STANDBY] = "standby",
        [SCSI_POWER_STOPPED] = "stopped",
};
DEFINE_STRING_TABLE_LOOKUP(scsi_power_state, ScsiPowerState);
