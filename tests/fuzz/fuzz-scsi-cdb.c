/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Input: byte 0 picks the CDB length (1..16) and flags, then the CDB, then data-out bytes (or, for data-in,
 * nothing). One LUN on a small temporary image (unlinked once open) is reused across runs, so its state
 * (sense, power, WCE, medium, UNIT ATTENTION) carries over as it would on a real unit. */

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "scsi.h"

#define FUZZ_BLOCKS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ScsiLun *lun;

static void fuzz_cleanup(void) {
        lun = scsi_lun_free(lun);
}

static ScsiLun *get_lun(void) {
        if (lun)
                return lun;

        char dir[] = "/tmp/drowse-fuzz-scsi-XXXXXX", path[sizeof(dir) + 16];
        if (!mkdtemp(dir))
                abort();
        snprintf(path, sizeof(path), "%s/lun.img", dir);

        Image *img = NULL;
        if (image_open(path, FUZZ_BLOCKS * 512, false, &img) < 0)
                abort();
        /* The open fd keeps the image alive; nothing is left behind in /tmp. */
        (void) unlink(path);
        (void) rmdir(dir);
        if (scsi_lun_new(&(const ScsiLunConfig) { .removable = true, .serial = "FUZZ" }, img, &lun) < 0)
                abort();
        scsi_lun_set_address(lun, 0, 2);
        atexit(fuzz_cleanup);
        return lun;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static uint8_t buf[FUZZ_BLOCKS * 512 + 512];
        ScsiCommand cmd;

        if (size < 2)
                return 0;

        uint8_t selector = data[0];
        size_t cdb_len = MIN((size_t) (selector & 0x0f) + 1, size - 1);
        bool no_lun = selector & 0x10;       /* exercise the LUN-not-supported path */
        bool abort_early = selector & 0x20;  /* the transport gives up half-way (BOT phase error) */
        static const size_t chunks[4] = { 1, 511, 4096, 100000 };
        size_t chunk = chunks[selector >> 6];
        const uint8_t *cdb = data + 1, *payload = data + 1 + cdb_len;
        size_t payload_len = size - 1 - cdb_len;
        ScsiLun *l = no_lun ? NULL : get_lun();

        if (scsi_lun_command_begin(l, cdb, cdb_len, &cmd) < 0)
                abort();

        switch (cmd.direction) {
        case SCSI_DIRECTION_NONE:
                if (cmd.length != 0)
                        abort();
                break;
        case SCSI_DIRECTION_IN: {
                for (;;) {
                        uint64_t remaining = cmd.length - cmd.done;
                        ssize_t n = scsi_lun_command_read(l, &cmd, buf, MIN(chunk, sizeof(buf)));
                        if (n <= 0)
                                break;
                        if ((uint64_t) n > remaining || (size_t) n > MIN(chunk, sizeof(buf)))
                                abort(); /* babble: more than the command said it would send */
                        if (abort_early)
                                break;
                }
                break;
        }
        case SCSI_DIRECTION_OUT: {
                /* The payload, repeated as needed: WRITEs can ask for more than the input holds. */
                uint64_t remaining = cmd.length;
                while (remaining > 0) {
                        size_t n = (size_t) MIN((uint64_t) chunk, remaining);
                        n = MIN(n, sizeof(buf));
                        for (size_t i = 0; i < n; i++)
                                buf[i] = payload_len ? payload[i % payload_len] : 0;
                        if (scsi_lun_command_write(l, &cmd, buf, n) < 0)
                                break;
                        remaining -= n;
                        if (abort_early)
                                break;
                }
                break;
        }
        case _SCSI_DIRECTION_MAX:
                abort();
        }

        if (abort_early)
                scsi_lun_command_abort(l, &cmd);
        else {
                int status = scsi_lun_command_end(l, &cmd);
                if (status != SCSI_STATUS_GOOD && status != SCSI_STATUS_CHECK_CONDITION)
                        abort();
        }
        return 0;
}
