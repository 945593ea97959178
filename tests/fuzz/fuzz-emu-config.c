/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* drowse-emu's option and topology parsers on arbitrary text: the first byte picks the parser (even: a
 * --disk spec, odd: an INI topology file), the rest is the input. Whatever they accept must be a
 * consistent configuration; whatever they refuse must come with a reason. */

#include <string.h>

#include "emu-config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        EmuConfig c;
        const char *error = NULL;
        unsigned line = 0;
        char *text;
        int r;

        if (size < 1 || size > 64 * 1024)
                return 0;
        text = strndup((const char *) data + 1, size - 1);
        if (!text)
                return 0;

        emu_config_init(&c);
        if (data[0] % 2 == 0)
                r = emu_config_add_disk_spec(&c, text, &error);
        else
                r = emu_config_load_string(&c, text, &line, &error);

        if (r < 0)
                CHECK(r == -ENOMEM || error);
        for (size_t i = 0; i < c.n_disks; i++) {
                const DiskConfig *d = &c.disks[i];
                CHECK(d->name && d->image && *d->image);
                CHECK(d->size % 512 == 0);
                CHECK(d->n_extra_luns < EMU_CONFIG_MAX_LUNS);
                for (size_t k = 0; k < i; k++)
                        CHECK(strcmp(c.disks[k].name, d->name) != 0);
        }
        emu_config_done(&c);
        free(text);
        return 0;
}
