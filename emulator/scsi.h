/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A SCSI direct-access logical unit (SPC-4 / SBC-3, the "transparent" command set usb-storage speaks)
 * on top of an Image. Pure: no USB, no sockets. A command runs in phases because the transport moves
 * its data in pieces:
 *
 *   scsi_lun_command_begin()  parse the CDB; cmd->direction and cmd->length say what data the
 *                             command intends to move (length 0 = none; a failed command moves none)
 *   scsi_lun_command_read()   data-in: produce the next chunk (READ preads straight into the buffer)
 *   scsi_lun_command_write()  data-out: consume the next chunk (WRITE pwrites straight from it)
 *   scsi_lun_command_end()    final status; CHECK CONDITION keeps the sense for REQUEST SENSE
 *   scsi_lun_command_abort()  instead of _end() when the transport gives up (BOT phase error)
 *
 * Every function accepts lun == NULL meaning "the addressed LUN does not exist": INQUIRY answers
 * peripheral qualifier 3, REQUEST SENSE reports LOGICAL UNIT NOT SUPPORTED, anything else fails. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "image.h"
#include "macro.h"

#define SCSI_CDB_MAX 16U
#define SCSI_COMMAND_BUF_SIZE 256U
#define SCSI_SENSE_FIXED_SIZE 18U
#define SCSI_SENSE_DESC_SIZE 8U

typedef enum ScsiStatus {
        SCSI_STATUS_GOOD = 0x00,
        SCSI_STATUS_CHECK_CONDITION = 0x02,
} ScsiStatus;

typedef enum ScsiDirection {
        SCSI_DIRECTION_NONE,
        SCSI_DIRECTION_IN,  /* device to host */
        SCSI_DIRECTION_OUT, /* host to device */
        _SCSI_DIRECTION_MAX,
} ScsiDirection;

typedef enum ScsiSenseKey {
        SCSI_SENSE_NO_SENSE = 0x0,
        SCSI_SENSE_RECOVERED_ERROR = 0x1,
        SCSI_SENSE_NOT_READY = 0x2,
        SCSI_SENSE_MEDIUM_ERROR = 0x3,
        SCSI_SENSE_HARDWARE_ERROR = 0x4,
        SCSI_SENSE_ILLEGAL_REQUEST = 0x5,
        SCSI_SENSE_UNIT_ATTENTION = 0x6,
        SCSI_SENSE_DATA_PROTECT = 0x7,
        SCSI_SENSE_BLANK_CHECK = 0x8,
        SCSI_SENSE_VENDOR_SPECIFIC = 0x9,
        SCSI_SENSE_COPY_ABORTED = 0xa,
        SCSI_SENSE_ABORTED_COMMAND = 0xb,
        SCSI_SENSE_VOLUME_OVERFLOW = 0xd,
        SCSI_SENSE_MISCOMPARE = 0xe,
        _SCSI_SENSE_KEY_MAX,
} ScsiSenseKey;

typedef struct ScsiSense {
        uint8_t key, asc, ascq;
} ScsiSense;

/* Power condition as set by START STOP UNIT. STOPPED is the only one in which media access fails. */
typedef enum ScsiPowerState {
        SCSI_POWER_ACTIVE,
        SCSI_POWER_IDLE,
        SCSI_POWER_STANDBY,
        SCSI_POWER_STOPPED,
        _SCSI_POWER_STATE_MAX,
} ScsiPowerState;

typedef struct ScsiLunConfig {
        const char *vendor;   /* up to 8 ASCII characters, space padded; NULL = "drowse" */
        const char *product;  /* up to 16; NULL = "Emulated Disk" */
        const char *revision; /* up to 4; NULL = "0001" */
        const char *serial;   /* VPD 0x80 and the NAA designator; up to 64; NULL = "0" */
        bool read_only;       /* also forced when the image is read-only */
        /* RMB bit. Off by default: the kernel polls removable disks with TEST UNIT READY every 2 s
         * (systemd's block.events_dfl_poll_msecs), which keeps them from autosuspending. */
        bool removable;
} ScsiLunConfig;

typedef struct ScsiLunStats {
        uint64_t commands;
        uint64_t check_conditions;
        uint64_t reads, writes;               /* READ / WRITE commands completed GOOD */
        uint64_t blocks_read, blocks_written;
        uint64_t flushes;                     /* SYNCHRONIZE CACHE, FUA, WCE=0 and stop flushes */
        uint64_t starts, stops;               /* START STOP UNIT transitions */
        uint64_t power_condition_changes;
        uint64_t unit_attentions;             /* reported */
} ScsiLunStats;

typedef struct ScsiOpcode ScsiOpcode;
typedef struct ScsiLun ScsiLun;

typedef struct ScsiCommand {
        /* Filled by _begin(), read-only for the transport: */
        ScsiDirection direction;
        uint64_t length; /* bytes the command intends to move; 0 with direction NONE */
        uint64_t done;   /* bytes moved so far */

        /* Private: */
        const ScsiOpcode *op;
        uint8_t cdb[SCSI_CDB_MAX];
        uint8_t cdb_len;
        bool failed;
        ScsiSense sense;
        uint64_t lba;
        uint32_t n_blocks;
        bool fua;
        uint8_t buf[SCSI_COMMAND_BUF_SIZE]; /* data of the small commands: no per-command malloc */
} ScsiCommand;

/* Fault-injection seam: consulted after the CDB is decoded and before it runs. Return 0 to run the
 * command, 1 to fail it with CHECK CONDITION and *ret_sense, or a negative errno (treated as 1 with
 * HARDWARE ERROR / INTERNAL TARGET FAILURE). */
typedef int (*ScsiFaultHook)(ScsiLun *lun, const uint8_t *cdb, size_t cdb_len, ScsiSense *ret_sense,
                             void *userdata);

/* Takes ownership of image on success. The LUN starts with a pending UNIT ATTENTION (power on). */
int scsi_lun_new(const ScsiLunConfig *config, Image *image, ScsiLun **ret);
ScsiLun *scsi_lun_free(ScsiLun *lun);
DEFINE_TRIVIAL_CLEANUP_FUNC(ScsiLun *, scsi_lun_free);

/* Where the LUN sits in its target (REPORT LUNS lists 0..n_luns-1). Default 0 of 1. */
void scsi_lun_set_address(ScsiLun *lun, uint8_t index, uint8_t n_luns);
void scsi_lun_set_fault_hook(ScsiLun *lun, ScsiFaultHook hook, void *userdata);

/* A bus or transport reset: UNIT ATTENTION 29/00 on the next command; sense and power state are kept. */
void scsi_lun_reset(ScsiLun *lun);

int scsi_lun_command_begin(ScsiLun *lun, const uint8_t *cdb, size_t cdb_len, ScsiCommand *cmd);
/* Returns bytes produced (at most len and what remains), or -EIO after a media error (sense set). */
ssize_t scsi_lun_command_read(ScsiLun *lun, ScsiCommand *cmd, uint8_t *buf, size_t len);
/* Consumes all len bytes (at most what remains, else -EINVAL); -EIO after a media error (sense set). */
int scsi_lun_command_write(ScsiLun *lun, ScsiCommand *cmd, const uint8_t *buf, size_t len);
/* Returns the ScsiStatus. */
int scsi_lun_command_end(ScsiLun *lun, ScsiCommand *cmd);
void scsi_lun_command_abort(ScsiLun *lun, ScsiCommand *cmd);

const ScsiLunStats *scsi_lun_get_stats(const ScsiLun *lun) _pure_;
ScsiPowerState scsi_lun_get_power_state(const ScsiLun *lun) _pure_;
bool scsi_lun_get_medium_prevented(const ScsiLun *lun) _pure_;
bool scsi_lun_get_medium_present(const ScsiLun *lun) _pure_;
bool scsi_lun_get_write_cache(const ScsiLun *lun) _pure_;
Image *scsi_lun_get_image(const ScsiLun *lun) _pure_;
/* The sense REQUEST SENSE would report now (NO SENSE if none). */
ScsiSense scsi_lun_get_sense(const ScsiLun *lun) _pure_;

/* Name of an opcode this LUN implements ("READ(10)"), NULL otherwise. */
const char *scsi_opcode_to_string(uint8_t opcode) _const_;
const char *scsi_direction_to_string(ScsiDirection d) _const_;
ScsiDirection scsi_direction_from_string(const char *s) _pure_;
const char *scsi_sense_key_to_string(ScsiSenseKey k) _const_;
ScsiSenseKey scsi_sense_key_from_string(const char *s) _pure_;
const char *scsi_power_state_to_string(ScsiPowerState s) _const_;
ScsiPowerState scsi_power_state_from_string(const char *s) _pure_;
