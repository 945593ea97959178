/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>

#include "bot.h"
#include "log.h"
#include "msc.h"

/* The host's side, as usb-storage drives it (drivers/usb/storage/transport.c, usb_stor_Bulk_transport):
 * the CBW is one 31-byte OUT URB; the data phase is one URB (vhci supports scatter-gather, so usb_sg_init()
 * makes a single URB of dCBWDataTransferLength); the CSW is one 13-byte IN URB. A stalled data or CSW URB
 * makes it clear the halt and read the CSW (again); CSW status 2, a bad tag or a failed second CSW read
 * make it reset the port and then send a Bulk-Only Mass Storage Reset plus two CLEAR_FEATURE(HALT)s. */

struct Msc {
        ScsiLun *luns[MSC_MAX_LUNS];
        size_t n_luns;
        MscConfig config;

        MscState state;
        bool in_halted, out_halted;
        bool wedged; /* after an invalid CBW: halts survive CLEAR_FEATURE until a reset (BOT 6.6.1) */
        bool zlp_pending;

        /* The command in flight. Lengths are BOT's 32-bit dCBWDataTransferLength scale. */
        uint32_t tag;
        uint32_t host_length;   /* H: dCBWDataTransferLength */
        uint32_t device_length; /* D: what the device will move, <= H, 0 on phase error */
        uint32_t transferred;   /* bytes moved on the bus so far (data-out: including discarded ones) */
        uint32_t processed;     /* bytes the command produced or consumed: H - processed is the residue */
        ScsiLun *lun;           /* NULL: a LUN that does not exist */
        ScsiCommand cmd;
        bool cmd_active;
        bool phase_error;
        bool inject_phase_error; /* fault injection: the command being decoded ends in a phase error */
        uint8_t csw[BOT_CSW_SIZE];

        MscStats stats;
};

int msc_new_full(ScsiLun **luns, size_t n_luns, const MscConfig *config, Msc **ret) {
        if (!luns || !ret || n_luns == 0 || n_luns > MSC_MAX_LUNS)
                return -EINVAL;
        for (size_t i = 0; i < n_luns; i++)
                if (!luns[i])
                        return -EINVAL;

        Msc *m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->config = config ? *config : MSC_CONFIG_DEFAULT;
        m->n_luns = n_luns;
        for (size_t i = 0; i < n_luns; i++) {
                m->luns[i] = TAKE_PTR(luns[i]);
                scsi_lun_set_address(m->luns[i], (uint8_t) i, (uint8_t) n_luns);
        }
        *ret = m;
        return 0;
}

int msc_new(ScsiLun **luns, size_t n_luns, Msc **ret) {
        return msc_new_full(luns, n_luns, NULL, ret);
}

Msc *msc_free(Msc *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_luns; i++)
                scsi_lun_free(m->luns[i]);
        return mfree(m);
}

static void msc_abort_command(Msc *m) {
        if (m->cmd_active)
                scsi_lun_command_abort(m->lun, &m->cmd);
        m->cmd_active = false;
        m->state = MSC_STATE_IDLE;
        m->zlp_pending = false;
        m->lun = NULL;
}

/* Ends the data phase: the CSW becomes ready. */
static void msc_finish_command(Msc *m) {
        BotCswStatus status;
        uint32_t residue;

        if (m->phase_error) {
                status = BOT_CSW_PHASE_ERROR;
                residue = m->host_length;
                m->stats.phase_errors++;
        } else {
                int r = scsi_lun_command_end(m->lun, &m->cmd);
                status = r == SCSI_STATUS_GOOD ? BOT_CSW_GOOD : BOT_CSW_FAILED;
                residue = m->host_length - m->processed;
        }
        m->cmd_active = false;

        bot_csw_encode(m->csw, m->tag, residue, status);
        m->state = MSC_STATE_STATUS;
        log_debug("BOT tag %08" PRIx32 ": CSW %s, residue %" PRIu32 ".", m->tag,
                  bot_csw_status_to_string(status), residue);
}

static int msc_stall_in(Msc *m) {
        m->in_halted = true;
        m->stats.stalls++;
        return -EPIPE;
}

static int msc_stall_out(Msc *m) {
        m->out_halted = true;
        m->stats.stalls++;
        return -EPIPE;
}

static int msc_receive_cbw(Msc *m, const uint8_t *data, size_t len) {
        const char *error = NULL;
        BotCbw cbw;
        int r;

        r = bot_cbw_decode(data, len, &cbw, &error);
        if (r < 0) {
                /* BOT 6.6.1: not valid (or not meaningful, which we answer alike): stall both pipes until
                 * reset recovery. usb-storage then resets; this URB itself already stalls. */
                log_debug_errno(r, "BOT: %s; stalling until reset.", error ?: "invalid CBW");
                m->stats.invalid_cbws++;
                m->wedged = true;
                m->in_halted = true;
                return msc_stall_out(m);
        }

        m->stats.commands++;
        m->tag = cbw.tag;
        m->host_length = cbw.data_transfer_length;
        m->transferred = m->processed = 0;
        m->phase_error = false;
        m->zlp_pending = false;
        m->lun = cbw.lun < m->n_luns ? m->luns[cbw.lun] : NULL;

        r = scsi_lun_command_begin(m->lun, cbw.cb, cbw.cb_length, &m->cmd);
        if (r < 0)
                return r;
        m->cmd_active = true;

        ScsiDirection host_direction = m->host_length == 0 ? SCSI_DIRECTION_NONE :
                                       bot_cbw_is_in(&cbw) ? SCSI_DIRECTION_IN :
                                                             SCSI_DIRECTION_OUT;

        log_debug("BOT tag %08" PRIx32 ": LUN %u %s, host %s %" PRIu32 ", device %s %" PRIu64 ".", cbw.tag,
                  cbw.lun, scsi_opcode_to_string(cbw.cb[0]) ?: "(unknown)",
                  scsi_direction_to_string(host_direction), m->host_length,
                  scsi_direction_to_string(m->cmd.direction), m->cmd.length);

        /* BOT 6.7: the thirteen cases. The device moves data only when both sides agree on the direction
         * and the host offers at least as much as the device intends (cases 1, 4/5/6, 9/11/12); any other
         * combination (2, 3, 7, 8, 10, 13) is a phase error, and the command is not carried out, so a
         * WRITE the host mis-sized never half-lands on the medium. */
        if (m->inject_phase_error ||
            (m->cmd.direction != SCSI_DIRECTION_NONE &&
             (m->cmd.direction != host_direction || m->cmd.length > m->host_length))) {
                m->inject_phase_error = false;
                scsi_lun_command_abort(m->lun, &m->cmd);
                m->cmd_active = false;
                m->phase_error = true;
                m->device_length = 0;
        } else
                m->device_length = (uint32_t) m->cmd.length;

        switch (host_direction) {
        case SCSI_DIRECTION_NONE:
                msc_finish_command(m);
                break;
        case SCSI_DIRECTION_IN:
                m->state = MSC_STATE_DATA_IN;
                break;
        case SCSI_DIRECTION_OUT:
                m->state = MSC_STATE_DATA_OUT;
                break;
        case _SCSI_DIRECTION_MAX:
                break;
        }
        return 0;
}

static void msc_receive_data(Msc *m, const uint8_t *data, size_t len) {
        size_t n = MIN(len, (size_t) (m->host_length - m->transferred));

        if (len > n)
                log_debug("BOT tag %08" PRIx32 ": host sent %zu bytes beyond dCBWDataTransferLength, "
                          "ignored.", m->tag, len - n);

        /* Cases 9 and 11: what the command does not want is accepted and dropped, and shows up as residue.
         * usb-storage sends all of it anyway, so stalling would only add a CLEAR_FEATURE round trip. */
        if (m->cmd_active && !m->phase_error && m->processed < m->device_length) {
                size_t k = MIN(n, (size_t) (m->device_length - m->processed));
                if (scsi_lun_command_write(m->lun, &m->cmd, data, k) >= 0)
                        m->processed += (uint32_t) k;
                else /* failed with sense set: drop the rest, report it in the CSW */
                        m->device_length = m->processed;
        }
        m->transferred += (uint32_t) n;

        if (m->transferred == m->host_length)
                msc_finish_command(m);
}

int msc_bulk_out(Msc *m, const uint8_t *data, size_t len) {
        if (!m || (!data && len > 0))
                return -EINVAL;

        if (m->out_halted) {
                m->stats.stalls++;
                return -EPIPE;
        }

        switch (m->state) {
        case MSC_STATE_IDLE:
                return msc_receive_cbw(m, data, len);
        case MSC_STATE_DATA_OUT:
                if (len > 0)
                        msc_receive_data(m, data, len);
                return 0;
        case MSC_STATE_DATA_IN:
        case MSC_STATE_STATUS:
                /* The host sent something (a new CBW?) before taking our data or CSW: out of sync. */
                log_debug("BOT: %zu bytes on bulk OUT in state %s; stalling.", len,
                          msc_state_to_string(m->state));
                return msc_stall_out(m);
        case _MSC_STATE_MAX:
                break;
        }
        return -EINVAL;
}

static ssize_t msc_send_data(Msc *m, uint8_t *buf, size_t len) {
        size_t produced = 0;

        if (len == 0)
                return 0;

        if (m->cmd_active && m->transferred < m->device_length) {
                size_t want = MIN(len, (size_t) (m->device_length - m->transferred));
                ssize_t k = scsi_lun_command_read(m->lun, &m->cmd, buf, want);
                if (k < 0)
                        m->device_length = m->transferred; /* media error: sense set, no more data */
                else {
                        produced = (size_t) k;
                        m->transferred += (uint32_t) produced;
                        m->processed += (uint32_t) produced;
                }
                if (produced > 0 && m->transferred < m->device_length)
                        return (ssize_t) produced;
        }

        msc_finish_command(m);
        if (m->transferred == m->host_length)
                return (ssize_t) produced; /* case 6: exactly what the host wanted; CSW next */

        /* Cases 4, 5 and the failed commands: the device ends the data phase early. A phase error
         * always stalls (BOT 6.7.2 cases 7, 8). */
        bool stall = m->config.stall_short_in || m->phase_error;
        if (produced == 0)
                return stall ? msc_stall_in(m) : 0;
        if (stall)
                m->in_halted = true; /* the short data now, the stall on the next IN URB (the CSW read) */
        else if (produced == len)
                m->zlp_pending = true; /* a full URB does not end the transfer: a zero-length packet does */
        return (ssize_t) produced;
}

ssize_t msc_bulk_in(Msc *m, uint8_t *buf, size_t len) {
        if (!m || (!buf && len > 0))
                return -EINVAL;

        if (m->in_halted) {
                m->stats.stalls++;
                return -EPIPE;
        }

        switch (m->state) {
        case MSC_STATE_IDLE:
        case MSC_STATE_DATA_OUT:
                return -EAGAIN;
        case MSC_STATE_DATA_IN:
                return msc_send_data(m, buf, len);
        case MSC_STATE_STATUS:
                if (m->zlp_pending) {
                        m->zlp_pending = false;
                        return 0;
                }
                if (len < BOT_CSW_SIZE)
                        return -EOVERFLOW;
                memcpy(buf, m->csw, BOT_CSW_SIZE);
                m->state = MSC_STATE_IDLE;
                m->lun = NULL;
                return BOT_CSW_SIZE;
        case _MSC_STATE_MAX:
                break;
        }
        return -EINVAL;
}

bool msc_bulk_in_ready(const Msc *m) {
        return m->in_halted || m->state == MSC_STATE_DATA_IN || m->state == MSC_STATE_STATUS;
}

static void msc_reset_transport(Msc *m) {
        msc_abort_command(m);
        m->wedged = m->in_halted = m->out_halted = false;
        for (size_t i = 0; i < m->n_luns; i++)
                scsi_lun_reset(m->luns[i]);
}

int msc_class_request(Msc *m, const UsbSetup *s, uint8_t *data, size_t *len) {
        if (!m || !s || !len)
                return -EINVAL;

        if (usb_setup_type(s) != USB_TYPE_CLASS || usb_setup_recipient(s) != USB_RECIP_INTERFACE ||
            s->wIndex != m->config.interface_number || s->wValue != 0)
                return -EPIPE;

        switch (s->bRequest) {
        case BOT_REQ_GET_MAX_LUN:
                /* BOT 3.2. A STALL here would also be understood (as "one LUN"), but we have an answer. */
                if (!usb_setup_is_in(s) || s->wLength != 1 || *len < 1 || !data)
                        return -EPIPE;
                data[0] = (uint8_t) (m->n_luns - 1);
                *len = 1;
                return 0;
        case BOT_REQ_RESET:
                /* BOT 3.1: ready for the next CBW. The halts are cleared here too; usb-storage follows with
                 * CLEAR_FEATURE(HALT) on both pipes anyway (usb_stor_reset_common()), which is harmless. The
                 * UNIT ATTENTION is what the kernel expects: usb_stor_report_device_reset() sets
                 * expecting_cc_ua before the reset. */
                if (usb_setup_is_in(s) || s->wLength != 0)
                        return -EPIPE;
                log_debug("BOT: Bulk-Only Mass Storage Reset.");
                msc_reset_transport(m);
                m->stats.resets++;
                *len = 0;
                return 0;
        }
        return -EPIPE;
}

void msc_clear_halt(Msc *m, uint8_t ep) {
        if (m->wedged)
                return;
        if (ep == m->config.bulk_in_ep)
                m->in_halted = false;
        else if (ep == m->config.bulk_out_ep)
                m->out_halted = false;
}

void msc_set_halt(Msc *m, uint8_t ep) {
        if (ep == m->config.bulk_in_ep)
                m->in_halted = true;
        else if (ep == m->config.bulk_out_ep)
                m->out_halted = true;
}

bool msc_endpoint_halted(const Msc *m, uint8_t ep) {
        if (ep == m->config.bulk_in_ep)
                return m->in_halted;
        if (ep == m->config.bulk_out_ep)
                return m->out_halted;
        return false;
}

void msc_inject_phase_error(Msc *m) {
        m->inject_phase_error = true;
}

void msc_bus_reset(Msc *m) {
        msc_reset_transport(m);
        m->stats.bus_resets++;
}

size_t msc_get_n_luns(const Msc *m) {
        return m->n_luns;
}

ScsiLun *msc_get_lun(const Msc *m, size_t index) {
        return index < m->n_luns ? m->luns[index] : NULL;
}

MscState msc_get_state(const Msc *m) {
        return m->state;
}

const MscStats *msc_get_stats(const Msc *m) {
        return &m->stats;
}

const MscConfig *msc_get_config(const Msc *m) {
        return &m->config;
}

static const char *const msc_state_table[_MSC_STATE_MAX] = {
        [MSC_STATE_IDLE] = "idle",
        [MSC_STATE_DATA_IN] = "data-in",
        [MSC_STATE_DATA_OUT] = "data-out",
        [MSC_STATE_STATUS] = "status",
};
DEFINE_STRING_TABLE_LOOKUP(msc_state, MscState);
