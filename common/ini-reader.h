/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdio.h>

/* Feeds inih's ini_parse_stream() one line at a time and counts them: Debian's inih passes no line
 * numbers to handlers, and errors must name file and line. A line longer than inih's buffer would
 * reach it in pieces, each counted as a line of its own, so it is refused instead: the reader stops
 * (as at the end of the input) and sets too_long. */
typedef struct IniReader {
        FILE *file;          /* read from this, or else from text */
        const char *text;
        unsigned line;       /* the line last handed out, 1-based */
        unsigned newlines;
        bool too_long;
} IniReader;

/* An ini_reader func for ini_parse_stream(); stream is the IniReader. */
char *ini_reader_read(char *buf, int size, void *stream);
