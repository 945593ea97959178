/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* drowse.conf's parser on arbitrary text. A refusal must name "test.conf:LINE: reason" with a line inside
 * the text; an accepted policy must hold only values the keys allow, and deciding with it must work. */

#include <string.h>

#include "fuzz.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char error[POLICY_ERROR_MAX] = "";
        Policy p;
        char *text;
        int r;

        if (size > 64 * 1024)
                return 0;
        text = strndup((const char *) data, size);
        if (!text)
                return 0;

        policy_init(&p);
        r = policy_load_string(&p, "test.conf", text, error, sizeof(error));
        if (r < 0) {
                unsigned line = 0, lines = 1;
                for (const char *c = text; *c; c++)
                        lines += *c == '\n';
                CHECK(r == -ENOMEM || sscanf(error, "test.conf:%u: ", &line) == 1);
                CHECK(r == -ENOMEM || (line >= 1 && line <= lines));
        } else {
                CHECK(p.delay_ms >= 0 && p.disk_delay_ms >= 0 && p.vhci_root_ports <= 64);
                CHECK(p.n_rules <= POLICY_MAX_RULES);
                for (size_t i = 0; i < p.n_rules; i++) {
                        const Rule *rule = &p.rules[i];
                        CHECK(rule->name && *rule->name);
                        CHECK(rule->match_class >= -1 && rule->match_class <= 0xff);
                        CHECK(rule->delay_ms >= -1 && rule->disk_delay_ms >= -1);
                        for (size_t k = 0; k < i; k++)
                                CHECK(strcmp(p.rules[k].name, rule->name) != 0);
                }
                DeviceFacts f = {
                        .vendor = 0x0525, .product = 0xa4a5, .serial = "S", .sysname = "1-1",
                        .devpath = "/devices/usb1/1-1", .device_class = 0, .interface_class = { 8 },
                        .interface_driver = { "usb-storage" }, .n_interfaces = 1,
                };
                Decision d;
                policy_decide(&p, &f, &d);
                CHECK(d.delay_ms >= 0 && d.disk_delay_ms >= 0);
                CHECK(!d.rule || (d.rule >= p.rules && d.rule < p.rules + p.n_rules));
        }
        policy_done(&p);
        free(text);
        return 0;
}
