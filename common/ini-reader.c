/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <string.h>

#include "ini-reader.h"

char *ini_reader_read(char *buf, int size, void *stream) {
        IniReader *r = stream;
        bool more;

        if (size < 2 || r->too_long)
                return NULL;
        if (r->file) {
                if (!fgets(buf, size, r->file))
                        return NULL;
                /* No newline and not at the end: the line goes on past the buffer. */
                more = !strchr(buf, '\n') && !feof(r->file);
                if (more) {
                        int c = fgetc(r->file);
                        more = c != EOF;
                }
        } else {
                size_t n = 0;
                if (!r->text || !*r->text)
                        return NULL;
                while (r->text[n] && r->text[n] != '\n' && n + 2 < (size_t) size)
                        n++;
                more = r->text[n] && r->text[n] != '\n';
                if (r->text[n] == '\n')
                        n++;
                memcpy(buf, r->text, n);
                buf[n] = 0;
                r->text += n;
        }
        r->line = r->newlines + 1;
        if (more) {
                r->too_long = true;
                return NULL;
        }
        if (strchr(buf, '\n'))
                r->newlines++;
        return buf;
}
