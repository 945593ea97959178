/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <time.h>

#include "plot.h"

#define WIDTH 1000
#define LABEL_WIDTH 190
#define RIGHT_MARGIN 20
#define TOP 44
#define ROW_HEIGHT 30
#define BAND_HEIGHT 16
#define AXIS_TICKS 6

static const struct {
        const char *what;
        const char *color;
        const char *label;
} colors[] = {
        { "suspended", "#4a90d9", "suspended" },
        { "active", "#f5a623", "active" },
        { "quarantined", "#d0021b", "quarantined" },
        { "error", "#222222", "runtime error" },
        { "gone", "#dddddd", "absent" },
};

static const struct {
        const char *what;
        const char *color;
} decision_colors[] = {
        { "backoff", "#9013fe" },
        { "quarantine", "#d0021b" },
        { "release", "#417505" },
        { "drift-reapply", "#8b572a" },
        { "drift-yield", "#8b572a" },
};

static const char *state_color(const char *what) {
        for (size_t i = 0; i < ELEMENTSOF(colors); i++)
                if (streq(colors[i].what, what))
                        return colors[i].color;
        return "#aaaaaa";
}

static const char *decision_color(const char *what) {
        for (size_t i = 0; i < ELEMENTSOF(decision_colors); i++)
                if (streq(decision_colors[i].what, what))
                        return decision_colors[i].color;
        return "#555555";
}

/* XML text and attribute values: markup characters escaped; control characters (not allowed in XML
 * 1.0) and non-ASCII bytes (serial numbers are not guaranteed UTF-8) replaced. */
static void xml_write(FILE *f, const char *s) {
        for (const unsigned char *p = (const unsigned char *) (s ?: ""); *p; p++)
                switch (*p) {
                case '&':
                        fputs("&amp;", f);
                        break;
                case '<':
                        fputs("&lt;", f);
                        break;
                case '>':
                        fputs("&gt;", f);
                        break;
                case '"':
                        fputs("&quot;", f);
                        break;
                case '\'':
                        fputs("&apos;", f);
                        break;
                default:
                        fputc(*p < 0x20 || *p >= 0x7f ? '?' : *p, f);
                }
}

static double x_of(uint64_t t, uint64_t t0, uint64_t t1) {
        double w = WIDTH - LABEL_WIDTH - RIGHT_MARGIN;
        if (t < t0)
                t = t0;
        if (t > t1)
                t = t1;
        return LABEL_WIDTH + w * (double) (t - t0) / (double) (t1 - t0);
}

static void band(FILE *f, double x0, double x1, double y, const char *what) {
        /* Short stretches stay visible. */
        double w = x1 - x0 < 0.5 ? 0.5 : x1 - x0;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n", x0, y, w,
                BAND_HEIGHT, state_color(what));
}

void plot_svg(FILE *f, const PlotRow *rows, size_t n_rows, uint64_t now_ms) {
        uint64_t t0 = UINT64_MAX, t1 = now_ms;
        int height = TOP + (int) (n_rows ? n_rows : 1) * ROW_HEIGHT + 80;

        for (size_t r = 0; r < n_rows; r++) {
                const HistoryEntry *e = stats_history_get(rows[r].stats, 0);
                if (e && e->t_ms < t0)
                        t0 = e->t_ms;
        }
        if (t0 == UINT64_MAX || t0 >= t1)
                t0 = t1 > 60000 ? t1 - 60000 : 0;
        if (t1 - t0 < 1000)
                t1 = t0 + 1000;

        fprintf(f,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                "font-family=\"sans-serif\" font-size=\"12\">\n"
                "<title>drowsed: runtime power states of USB devices</title>\n"
                "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n"
                "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">drowsed: runtime power "
                "states and decisions</text>\n",
                WIDTH, height, WIDTH, height, WIDTH, height);
        if (n_rows == 0)
                fprintf(f, "<text x=\"%d\" y=\"%d\">No device has a recorded history yet.</text>\n", LABEL_WIDTH,
                        TOP + 20);

        for (size_t r = 0; r < n_rows; r++) {
                const Stats *s = rows[r].stats;
                double y = TOP + (double) r * ROW_HEIGHT + (ROW_HEIGHT - BAND_HEIGHT) / 2.0;
                const HistoryEntry *open = NULL;

                fprintf(f, "<text x=\"10\" y=\"%.1f\">", y + BAND_HEIGHT - 3);
                xml_write(f, rows[r].name);
                fputs(" ", f);
                xml_write(f, rows[r].id);
                fputs(" (", f);
                xml_write(f, rows[r].state);
                fputs(")</text>\n", f);
                fprintf(f, "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#cccccc\"/>\n",
                        LABEL_WIDTH, y, WIDTH - LABEL_WIDTH - RIGHT_MARGIN, BAND_HEIGHT);

                /* Bands: each state lasts until the next state entry, the last one until now. */
                for (size_t i = 0; i < s->history_len; i++) {
                        const HistoryEntry *e = stats_history_get(s, i);
                        if (e->kind != HISTORY_STATE)
                                continue;
                        if (open && !streq(open->what, e->what)) {
                                band(f, x_of(open->t_ms, t0, t1), x_of(e->t_ms, t0, t1), y, open->what);
                                open = e;
                        } else if (!open)
                                open = e;
                }
                if (open)
                        band(f, x_of(open->t_ms, t0, t1), x_of(t1, t0, t1), y, open->what);

                /* Decisions on top, as markers with the reason as a tooltip. */
                for (size_t i = 0; i < s->history_len; i++) {
                        const HistoryEntry *e = stats_history_get(s, i);
                        double x;
                        if (e->kind != HISTORY_DECISION)
                                continue;
                        x = x_of(e->t_ms, t0, t1);
                        fprintf(f,
                                "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"%s\" stroke=\"#ffffff\" "
                                "stroke-width=\"0.5\"><title>",
                                x - 5, y - 6, x + 5, y - 6, x, y + 3, decision_color(e->what));
                        xml_write(f, e->what);
                        fputs(": ", f);
                        xml_write(f, e->reason);
                        fputs("</title></polygon>\n", f);
                }
        }

        /* The time axis, in UTC wall-clock time. */
        double ay = TOP + (double) (n_rows ? n_rows : 1) * ROW_HEIGHT + 6;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#000000\"/>\n", LABEL_WIDTH, ay,
                WIDTH - RIGHT_MARGIN, ay);
        for (int i = 0; i <= AXIS_TICKS; i++) {
                uint64_t t = t0 + (t1 - t0) * (uint64_t) i / AXIS_TICKS;
                double x = x_of(t, t0, t1);
                time_t secs = (time_t) (t / 1000);
                struct tm tm;
                char label[32] = "?";
                if (gmtime_r(&secs, &tm))
                        strftime(label, sizeof(label), "%H:%M:%S", &tm);
                fprintf(f,
                        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000000\"/>\n"
                        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10\">%s</text>\n",
                        x, ay, x, ay + 5, x, ay + 17, label);
        }
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"10\">time (UTC), %.0f s shown</text>\n", 10, ay + 17,
                (double) (t1 - t0) / 1000.0);

        /* Legend. */
        double ly = ay + 40, lx = 10;
        for (size_t i = 0; i < ELEMENTSOF(colors); i++) {
                fprintf(f,
                        "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"%s\"/>"
                        "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                        lx, ly - 10, colors[i].color, lx + 16, ly, colors[i].label);
                lx += 110;
        }
        fprintf(f,
                "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\">"
                "decision (backoff, quarantine, release, drift)</text>\n",
                lx, ly - 10, lx + 10, ly - 10, lx + 5, ly, decision_color("backoff"), lx + 16, ly);
        fputs("</svg>\n", f);
}
