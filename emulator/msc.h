/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* USB Mass Storage Bulk-Only Transport (BOT 1.0) device side, over 1..16 SCSI LUNs. Transport-agnostic:
 * the caller hands in the payload of each bulk URB and gets back what to complete it with.
 *
 * One command: a 31-byte CBW on bulk OUT; then data (IN URBs filled by msc_bulk_in(), or OUT URBs fed to
 * msc_bulk_out()); then the 13-byte CSW on bulk IN. -EPIPE from either means "complete this URB with a
 * STALL (-EPIPE)"; the endpoint stays halted until msc_clear_halt() (CLEAR_FEATURE(ENDPOINT_HALT)) or, after
 * an invalid CBW, until a Bulk-Only Mass Storage Reset (BOT 6.6.1) followed by the clear-halts. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "macro.h"
#include "scsi.h"
#include "usb.h"

#define MSC_MAX_LUNS 16U
#define MSC_BULK_IN_EP_DEFAULT 0x81
#define MSC_BULK_OUT_EP_DEFAULT 0x02

typedef struct Msc Msc;

typedef struct MscConfig {
        uint8_t bulk_in_ep;       /* endpoint addresses, for msc_clear_halt() */
        uint8_t bulk_out_ep;
        uint8_t interface_number; /* wIndex of the class requests */
        /* When the device sends less than the host asked for (BOT 6.7.2 case 4/5, also after a failed
         * command), halt bulk IN after the short data, as f_mass_storage and most real disks do: the
         * host's CSW read then stalls, usb-storage clears the halt and reads the CSW again. Robust even
         * if the host split the data phase into several URBs. Off: end the data phase with a short (or
         * zero-length) completion and send the CSW on the next IN URB, saving a CLEAR_FEATURE round trip
         * on every short reply (usb-storage accepts both: USB_STOR_XFER_SHORT vs _STALLED). */
        bool stall_short_in;
} MscConfig;

#define MSC_CONFIG_DEFAULT                                                                         \
        ((const MscConfig) {                                                                       \
                .bulk_in_ep = MSC_BULK_IN_EP_DEFAULT,                                              \
                .bulk_out_ep = MSC_BULK_OUT_EP_DEFAULT,                                            \
                .interface_number = 0,                                                             \
                .stall_short_in = true,                                                            \
        })

typedef enum MscState {
        MSC_STATE_IDLE,     /* waiting for a CBW */
        MSC_STATE_DATA_IN,  /* device to host data (possibly none left: then a short end or a stall) */
        MSC_STATE_DATA_OUT, /* host to device data */
        MSC_STATE_STATUS,   /* CSW ready */
        _MSC_STATE_MAX,
} MscState;

typedef struct MscStats {
        uint64_t commands;
        uint64_t phase_errors;
        uint64_t invalid_cbws;   /* invalid or not meaningful: wedged until reset */
        uint64_t stalls;         /* URBs completed with -EPIPE */
        uint64_t resets;         /* Bulk-Only Mass Storage Resets */
        uint64_t bus_resets;
} MscStats;

/* Takes ownership of luns[0..n_luns-1] on success and sets them to NULL; on failure they stay the
 * caller's. 1 <= n_luns <= MSC_MAX_LUNS. config NULL = MSC_CONFIG_DEFAULT. */
int msc_new(ScsiLun **luns, size_t n_luns, Msc **ret);
int msc_new_full(ScsiLun **luns, size_t n_luns, const MscConfig *config, Msc **ret);
Msc *msc_free(Msc *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Msc *, msc_free);

/* One bulk OUT URB's payload. 0: accepted (complete the URB with actual_length = len).
 * -EPIPE: complete it with a STALL. */
int msc_bulk_out(Msc *m, const uint8_t *data, size_t len);

/* Fills one bulk IN URB of len bytes. Returns the bytes produced (fewer than len = a short transfer,
 * 0 = a zero-length packet), -EAGAIN if nothing is to be sent yet (keep the URB queued and retry after
 * the next msc_bulk_out()), -EPIPE for a STALL, -EOVERFLOW if a CSW is due but len < 13 (complete with
 * an error; the CSW stays queued). */
ssize_t msc_bulk_in(Msc *m, uint8_t *buf, size_t len);

/* Whether msc_bulk_in() would now produce something other than -EAGAIN. */
bool msc_bulk_in_ready(const Msc *m) _pure_;

/* A class request addressed to the interface: GET_MAX_LUN (data gets 1 byte) and Bulk-Only Mass Storage
 * Reset. *len: in, the size of data; out, the reply length. -EPIPE: STALL the control transfer
 * (unknown request, wrong bmRequestType, wValue, wIndex or wLength). */
int msc_class_request(Msc *m, const UsbSetup *setup, uint8_t *data, size_t *len);

/* CLEAR_FEATURE(ENDPOINT_HALT) from the host. A wedged endpoint (invalid CBW) stays halted. */
void msc_clear_halt(Msc *m, uint8_t ep_address);
/* SET_FEATURE(ENDPOINT_HALT) from the host. */
void msc_set_halt(Msc *m, uint8_t ep_address);
bool msc_endpoint_halted(const Msc *m, uint8_t ep_address) _pure_;

/* USB bus reset (or SET_CONFIGURATION / SET_INTERFACE): BOT state to idle, halts cleared, and a
 * UNIT ATTENTION (29/00) on every LUN, which the kernel expects after a reset it issued. */
void msc_bus_reset(Msc *m);

/* Fault injection, from the SCSI fault hook while a CBW is decoded: that command is not carried out
 * and ends in a phase error (CSW status 2), which makes the host reset the device. */
void msc_inject_phase_error(Msc *m);

size_t msc_get_n_luns(const Msc *m) _pure_;
ScsiLun *msc_get_lun(const Msc *m, size_t index) _pure_;
MscState msc_get_state(const Msc *m) _pure_;
const MscStats *msc_get_stats(const Msc *m) _pure_;
const MscConfig *msc_get_config(const Msc *m) _pure_;

const char *msc_state_to_string(MscState s) _const_;
MscState msc_state_from_string(const char *s) _pure_;
