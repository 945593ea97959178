/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Descriptor parsers on arbitrary bytes. The walker's callback re-parses every interface and
 * endpoint it is handed and checks the bounds the walker promised; the sum of the descriptor
 * lengths must be exactly wTotalLength. The string encoder gets the input as UTF-8 too. */

#include <stdio.h>
#include <stdlib.h>

#include "usb-desc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct WalkState {
        const uint8_t *start, *end;
        size_t bytes;
} WalkState;

static int walk_cb(uint8_t type, const uint8_t *desc, size_t desc_len, void *userdata) {
        WalkState *s = userdata;
        UsbInterfaceDesc i;
        UsbEndpointDesc e;

        if (desc < s->start || desc_len < 2 || desc_len > (size_t) (s->end - desc))
                abort();
        if (desc[0] != desc_len || desc[1] != type)
                abort();
        s->bytes += desc_len;

        if (type == USB_DT_INTERFACE && usb_desc_parse_interface(desc, desc_len, &i) < 0)
                abort();
        if (type == USB_DT_ENDPOINT && usb_desc_parse_endpoint(desc, desc_len, &e) < 0)
                abort();
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        WalkState s = { .start = data, .end = data + size };
        UsbDeviceDesc d;
        UsbConfigDesc c;
        uint16_t total;
        uint8_t out[256];
        int r;

        if (usb_desc_parse_device(data, size, &d) >= 0 && d.configs)
                abort();

        r = usb_desc_walk(data, size, walk_cb, &s);
        if (r >= 0) {
                if (usb_desc_parse_config_header(data, size, &c, &total) < 0)
                        abort();
                if (s.bytes != total || total > size || r < 1)
                        abort();
        } else if (r != -EBADMSG)
                abort();

        /* The input as a string: bounded output whatever the length, never past the cap. */
        if (size < 1024) {
                char *str = malloc(size + 1);
                if (!str)
                        return 0;
                memcpy(str, data, size);
                str[size] = '\0';
                r = usb_desc_encode_string(str, out, sizeof(out));
                if (r >= 0 && (r > 2 + 2 * USB_STRING_MAX_UNITS || r % 2 != 0 || out[0] != r))
                        abort();
                free(str);
        }
        return 0;
}
