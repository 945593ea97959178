/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* One URB-phase PDU from a hostile peer: the 48-byte header and, for ISO transfers, the packet
 * descriptors after it. Whatever decodes must re-encode to the same bytes (padding aside), and the
 * sizes the server would then read must stay within the documented bounds. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "usbip.h"


static void check_iso(const uint8_t *data, size_t size, int32_t n, uint32_t transfer_length) {
        static UsbipIsoPacket iso[USBIP_MAX_ISO_PACKETS];
        const char *error = NULL;

        CHECK(n > 0 && n <= USBIP_MAX_ISO_PACKETS);
        int r = usbip_iso_packets_decode(data, size, (uint32_t) n, transfer_length, iso, &error);
        if (r < 0) {
                CHECK(r == -EBADMSG && error);
                return;
        }
        CHECK(size >= (size_t) n * USBIP_ISO_PACKET_DESC_SIZE);
        for (int32_t i = 0; i < n; i++) {
                uint8_t buf[USBIP_ISO_PACKET_DESC_SIZE];
                CHECK((uint64_t) iso[i].offset + iso[i].length <= transfer_length);
                CHECK(iso[i].actual_length <= iso[i].length);
                usbip_iso_packet_encode(buf, &iso[i]);
                CHECK(memcmp(buf, data + (size_t) i * USBIP_ISO_PACKET_DESC_SIZE, sizeof(buf)) == 0);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        UsbipHeader h;
        const char *error = NULL;

        int r = usbip_header_decode(data, size, &h, &error);
        if (r < 0) {
                CHECK(r == -EBADMSG && error);
                return 0;
        }
        CHECK(size >= USBIP_HEADER_SIZE);
        CHECK(usbip_command_to_string((UsbipCommand) h.command));
        CHECK(h.direction <= USBIP_DIR_IN && h.ep <= 15);

        /* Round trip: all bytes the decoder reads come back; padding comes back as zeros. */
        uint8_t expected[USBIP_HEADER_SIZE], buf[USBIP_HEADER_SIZE];
        memcpy(expected, data, sizeof(expected));
        switch ((UsbipCommand) h.command) {
        case USBIP_CMD_SUBMIT:
                break;
        case USBIP_RET_SUBMIT:
                memset(expected + USBIP_HDR_RET_SUBMIT_END, 0, USBIP_HEADER_SIZE - USBIP_HDR_RET_SUBMIT_END);
                break;
        case USBIP_CMD_UNLINK:
        case USBIP_RET_UNLINK:
                memset(expected + USBIP_HDR_UNLINK_END, 0, USBIP_HEADER_SIZE - USBIP_HDR_UNLINK_END);
                break;
        }
        usbip_header_encode(buf, &h);
        CHECK(memcmp(buf, expected, sizeof(buf)) == 0);

        const uint8_t *rest = data + USBIP_HEADER_SIZE;
        size_t rest_size = size - USBIP_HEADER_SIZE;

        size_t payload = usbip_cmd_submit_payload_size(&h);
        CHECK(payload <= USBIP_MAX_TRANSFER_LENGTH + USBIP_MAX_ISO_PACKETS * USBIP_ISO_PACKET_DESC_SIZE);

        switch ((UsbipCommand) h.command) {
        case USBIP_CMD_SUBMIT: {
                CHECK(h.u.cmd_submit.transfer_buffer_length <= USBIP_MAX_TRANSFER_LENGTH);
                /* ep 0 is exempt: there the flag follows the setup packet, not the pipe. */
                CHECK(h.ep == 0 ||
                      !!(h.u.cmd_submit.transfer_flags & USBIP_URB_DIR_IN) == (h.direction == USBIP_DIR_IN));
                int32_t n = h.u.cmd_submit.number_of_packets;
                if (n <= 0) {
                        CHECK(n == 0 || n == -1);
                        break;
                }
                CHECK(h.ep != 0);
                /* The descriptors follow the OUT data, as the server reads them. */
                size_t data_size = h.direction == USBIP_DIR_OUT ? h.u.cmd_submit.transfer_buffer_length : 0;
                CHECK(payload == data_size + (size_t) n * USBIP_ISO_PACKET_DESC_SIZE);
                /* Fuzz inputs are small: let the descriptors start right after the header too, so
                 * the ISO decoder sees the mutated bytes whatever the declared OUT size. */
                if (data_size <= rest_size)
                        check_iso(rest + data_size, rest_size - data_size, n,
                                  h.u.cmd_submit.transfer_buffer_length);
                check_iso(rest, rest_size, n, h.u.cmd_submit.transfer_buffer_length);
                break;
        }
        case USBIP_RET_SUBMIT: {
                CHECK(payload == 0);
                CHECK(h.u.ret_submit.actual_length <= USBIP_MAX_TRANSFER_LENGTH);
                int32_t n = h.u.ret_submit.number_of_packets;
                if (n > 0)
                        check_iso(rest, rest_size, n, USBIP_MAX_TRANSFER_LENGTH);
                break;
        }
        case USBIP_CMD_UNLINK:
                CHECK(payload == 0);
                break;
        case USBIP_RET_UNLINK:
                CHECK(payload == 0);
                break;
        }

        return 0;
}
