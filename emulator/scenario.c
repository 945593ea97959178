/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "control.h"
#include "injector.h"
#include "log.h"
#include "scenario.h"

#define SCENARIO_MAX_STEPS 4096
#define SCENARIO_MAX_LINE 1024
#define SCENARIO_WAIT_POLL_USEC (10 * 1000ULL)
#define SCENARIO_WAIT_DEFAULT_USEC (30 * 1000000ULL)

typedef enum StepTiming {
        STEP_NEXT,  /* when the previous step is done */
        STEP_AFTER, /* this long after the previous step */
        STEP_AT,    /* this long after the start */
} StepTiming;

typedef enum StepKind {
        STEP_REQUEST,
        STEP_WAIT,
        STEP_SEED,
} StepKind;

static const char *const scenario_wait_state_table[_WAIT_STATE_MAX] = {
        [WAIT_SUSPENDED] = "suspended",
        [WAIT_CONNECTED] = "connected",
        [WAIT_UNPLUGGED] = "unplugged",
        [WAIT_DEFAULT] = "default",
        [WAIT_ADDRESSED] = "addressed",
        [WAIT_CONFIGURED] = "configured",
        [WAIT_FAULTS_SPENT] = "faults-spent",
};

DEFINE_STRING_TABLE_LOOKUP(scenario_wait_state, WaitState);

typedef struct Step {
        unsigned line;
        StepTiming timing;
        uint64_t usec;
        StepKind kind;
        char *text;          /* the request, or the device waited for */
        WaitState state;
        uint64_t timeout_usec;
        uint64_t seed;
} Step;

typedef enum ScenarioPhase {
        SCENARIO_LOADED,
        SCENARIO_RUNNING,
        SCENARIO_DONE,
        SCENARIO_FAILED,
} ScenarioPhase;

struct Scenario {
        char *path;
        Step *steps;
        size_t n_steps;

        sd_event *event;
        Server *server;
        sd_event_source *timer;
        ScenarioPhase phase;
        size_t current;
        uint64_t start_usec, previous_done_usec, wait_deadline_usec, end_usec;
        bool waiting;
        char *failure;
};

/* "250", "250ms", "2s", "1.5s", "500us"; a bare number is seconds here, as a script reads. */
static int parse_time(const char *s, uint64_t *ret) {
        char *end;
        double v;

        if (!s || !*s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtod(s, &end);
        if (errno || v < 0 || v > 24 * 3600)
                return -ERANGE;
        if (streq(end, "") || streq(end, "s"))
                *ret = (uint64_t) (v * 1e6);
        else if (streq(end, "ms"))
                *ret = (uint64_t) (v * 1e3);
        else if (streq(end, "us"))
                *ret = (uint64_t) v;
        else if (streq(end, "min"))
                *ret = (uint64_t) (v * 60e6);
        else
                return -EINVAL;
        return 0;
}

static int fail_at(char **error, const char *path, unsigned line, const char *fmt, ...) _printf_(4, 5);
static int fail_at(char **error, const char *path, unsigned line, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (r < 0 || asprintf(error, "%s:%u: %s", path, line, msg) < 0)
                *error = NULL;
        return -EINVAL;
}

static int parse_line(Scenario *sc, char *line, unsigned number, char **error) {
        char *word, *save = NULL;
        Step step = { .line = number, .timing = STEP_NEXT };
        int r;

        line[strcspn(line, "#")] = 0; /* comments; no request has a '#' in it */
        word = strtok_r(line, " \t", &save);
        if (!word)
                return 0;

        if (streq(word, "at") || streq(word, "after")) {
                const char *when = strtok_r(NULL, " \t", &save);
                step.timing = word[1] == 't' ? STEP_AT : STEP_AFTER;
                if (parse_time(when, &step.usec) < 0)
                        return fail_at(error, sc->path, number, "'%s %s': expected a time (2, 2s, 250ms, 1.5s)", word,
                                       when ?: "");
                word = strtok_r(NULL, " \t", &save);
                if (!word)
                        return fail_at(error, sc->path, number, "nothing to do %s this time", step.timing == STEP_AT ?
                                       "at" : "after");
        }

        if (streq(word, "seed")) {
                const char *v = strtok_r(NULL, " \t", &save);
                char *end;
                if (!v || *v < '0' || *v > '9')
                        return fail_at(error, sc->path, number, "seed needs an unsigned number");
                errno = 0;
                step.seed = strtoull(v, &end, 0);
                if (errno || *end || strtok_r(NULL, " \t", &save))
                        return fail_at(error, sc->path, number, "seed needs one unsigned number, got '%s'", v);
                step.kind = STEP_SEED;
        } else if (streq(word, "wait")) {
                const char *device = strtok_r(NULL, " \t", &save), *state = strtok_r(NULL, " \t", &save),
                           *timeout = strtok_r(NULL, " \t", &save);
                if (!device || !state)
                        return fail_at(error, sc->path, number, "usage: wait DEVICE STATE [TIMEOUT]");
                step.kind = STEP_WAIT;
                step.state = scenario_wait_state_from_string(state);
                if (step.state < 0)
                        return fail_at(error, sc->path, number, "unknown state '%s' (suspended, connected, unplugged, "
                                       "default, addressed, configured, faults-spent)", state);
                step.timeout_usec = SCENARIO_WAIT_DEFAULT_USEC;
                if (timeout && parse_time(timeout, &step.timeout_usec) < 0)
                        return fail_at(error, sc->path, number, "bad timeout '%s'", timeout);
                if (strtok_r(NULL, " \t", &save))
                        return fail_at(error, sc->path, number, "wait takes DEVICE STATE [TIMEOUT]");
                step.text = strdup(device);
        } else if (streq(word, "scenario"))
                return fail_at(error, sc->path, number, "a scenario cannot start a scenario");
        else {
                const char *rest = strtok_r(NULL, "", &save);
                step.kind = STEP_REQUEST;
                r = asprintf(&step.text, "%s%s%s", word, rest ? " " : "", rest ?: "");
                if (r < 0)
                        step.text = NULL;
        }
        if (step.kind != STEP_SEED && !step.text)
                return -ENOMEM;

        if (sc->n_steps >= SCENARIO_MAX_STEPS) {
                free(step.text);
                return fail_at(error, sc->path, number, "more than %u steps", SCENARIO_MAX_STEPS);
        }
        Step *steps = reallocarray(sc->steps, sc->n_steps + 1, sizeof(Step));
        if (!steps) {
                free(step.text);
                return -ENOMEM;
        }
        sc->steps = steps;
        sc->steps[sc->n_steps++] = step;
        return 0;
}

int scenario_load(const char *path, Scenario **ret, char **error) {
        _cleanup_(scenario_freep) Scenario *sc = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        char line[SCENARIO_MAX_LINE + 2];
        unsigned number = 0;
        int r;

        *error = NULL;
        sc = calloc(1, sizeof(Scenario));
        if (!sc || !(sc->path = strdup(path)))
                return -ENOMEM;
        f = fopen(path, "re");
        if (!f) {
                r = -errno;
                if (asprintf(error, "%s: %s", path, strerror(-r)) < 0)
                        *error = NULL;
                return r;
        }
        while (fgets(line, sizeof(line), f)) {
                size_t len = strlen(line);
                number++;
                if (len > SCENARIO_MAX_LINE && line[len - 1] != '\n')
                        return fail_at(error, path, number, "line longer than %u characters", SCENARIO_MAX_LINE);
                line[strcspn(line, "\r\n")] = 0;
                r = parse_line(sc, line, number, error);
                if (r < 0)
                        return r;
        }
        if (ferror(f)) {
                if (asprintf(error, "%s: read error", path) < 0)
                        *error = NULL;
                return -EIO;
        }
        if (sc->n_steps == 0) {
                if (asprintf(error, "%s: no steps", path) < 0)
                        *error = NULL;
                return -EINVAL;
        }
        *ret = TAKE_PTR(sc);
        return 0;
}

Scenario *scenario_free(Scenario *sc) {
        if (!sc)
                return NULL;
        for (size_t i = 0; i < sc->n_steps; i++)
                free(sc->steps[i].text);
        free(sc->steps);
        sd_event_source_disable_unref(sc->timer);
        sd_event_unref(sc->event);
        free(sc->failure);
        free(sc->path);
        return mfree(sc);
}

bool scenario_running(const Scenario *sc) {
        return sc && sc->phase == SCENARIO_RUNNING;
}

bool scenario_failed(const Scenario *sc) {
        return sc && sc->phase == SCENARIO_FAILED;
}

static uint64_t now_usec(const Scenario *sc) {
        uint64_t now = 0;
        (void) sd_event_now(sc->event, CLOCK_MONOTONIC, &now);
        return now;
}

static double since_start(const Scenario *sc, uint64_t now) {
        return (double) (now - MIN(now, sc->start_usec)) / 1e6;
}

static void fail(Scenario *sc, const char *fmt, ...) _printf_(2, 3);
static void fail(Scenario *sc, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        const Step *step = &sc->steps[sc->current];
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        free(sc->failure);
        if (asprintf(&sc->failure, "%s:%u: %s", sc->path, step->line, msg ?: "out of memory") < 0)
                sc->failure = NULL;
        sc->phase = SCENARIO_FAILED;
        sc->end_usec = now_usec(sc);
        sc->timer = sd_event_source_disable_unref(sc->timer);
        log_error("+%.3f s scenario failed: %s", since_start(sc, sc->end_usec), sc->failure ?: "out of memory");
}

static bool wait_satisfied(Scenario *sc, const Step *step, char *is, size_t size) {
        Export *e = server_lookup(sc->server, step->text);
        UsbDevice *d = e ? e->device : NULL;

        if (!d) {
                snprintf(is, size, "not there");
                return false;
        }
        switch (step->state) {
        case WAIT_SUSPENDED:
        case WAIT_CONNECTED:
        case WAIT_UNPLUGGED:
                snprintf(is, size, "%s", usb_link_state_to_string(d->link));
                return (step->state == WAIT_SUSPENDED && d->link == USB_LINK_SUSPENDED) ||
                       (step->state == WAIT_CONNECTED && d->link == USB_LINK_CONNECTED) ||
                       (step->state == WAIT_UNPLUGGED && d->link == USB_LINK_UNPLUGGED);
        case WAIT_DEFAULT:
        case WAIT_ADDRESSED:
        case WAIT_CONFIGURED:
                snprintf(is, size, "%s", usb_device_state_to_string(d->state));
                return (step->state == WAIT_DEFAULT && d->state == USB_DEVICE_STATE_DEFAULT) ||
                       (step->state == WAIT_ADDRESSED && d->state == USB_DEVICE_STATE_ADDRESSED) ||
                       (step->state == WAIT_CONFIGURED && d->state == USB_DEVICE_STATE_CONFIGURED);
        case WAIT_FAULTS_SPENT:
                for (const Fault *f = d->faults; f; f = f->next)
                        if (fault_armed(f)) {
                                snprintf(is, size, "fault %u has hits left", f->id);
                                return false;
                        }
                snprintf(is, size, "spent");
                return true;
        case _WAIT_STATE_MAX:
        case _WAIT_STATE_INVALID:
                break;
        }
        return false;
}

static int arm(Scenario *sc, uint64_t when);

/* Runs the current step; returns true when it is done. */
static bool run_step(Scenario *sc, uint64_t now) {
        Step *step = &sc->steps[sc->current];
        double t = since_start(sc, now);

        switch (step->kind) {
        case STEP_SEED:
                if (sc->server->injector)
                        injector_set_seed(sc->server->injector, step->seed);
                log_info("+%.3f s scenario %s:%u: seed %" PRIu64, t, sc->path, step->line, step->seed);
                return true;

        case STEP_WAIT: {
                char is[64];
                if (!sc->waiting) {
                        sc->waiting = true;
                        sc->wait_deadline_usec = now + step->timeout_usec;
                }
                if (wait_satisfied(sc, step, is, sizeof(is))) {
                        sc->waiting = false;
                        log_info("+%.3f s scenario %s:%u: %s is %s", t, sc->path, step->line, step->text,
                                 scenario_wait_state_to_string(step->state));
                        return true;
                }
                if (now >= sc->wait_deadline_usec) {
                        sc->waiting = false;
                        fail(sc, "%s did not become %s within %.1f s (it is %s)", step->text,
                             scenario_wait_state_to_string(step->state), (double) step->timeout_usec / 1e6, is);
                }
                return false;
        }

        case STEP_REQUEST: {
                _cleanup_free_ char *reply = NULL;
                _cleanup_fclose_ FILE *f = NULL;
                size_t size = 0;

                f = open_memstream(&reply, &size);
                if (!f) {
                        fail(sc, "out of memory");
                        return false;
                }
                (void) control_handle(sc->server, step->text, f);
                if (fflush(f) != 0 || !reply) {
                        fail(sc, "out of memory");
                        return false;
                }
                /* The reply's first line says ok or error; the second, if any, what came of it. */
                char *first = reply, *second = strchr(reply, '\n');
                if (second) {
                        *second++ = 0;
                        second[strcspn(second, "\n")] = 0;
                }
                if (!streq(first, "ok")) {
                        fail(sc, "%s: %s", step->text, first);
                        return false;
                }
                log_info("+%.3f s scenario %s:%u: %s: ok%s%s", t, sc->path, step->line, step->text,
                         second && *second ? ", " : "", second ?: "");
                return true;
        }
        }
        return false;
}

static uint64_t step_time(Scenario *sc) {
        const Step *step = &sc->steps[sc->current];

        switch (step->timing) {
        case STEP_AT:
                return sc->start_usec + step->usec;
        case STEP_AFTER:
                return sc->previous_done_usec + step->usec;
        case STEP_NEXT:
                break;
        }
        return sc->previous_done_usec;
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Scenario *sc = userdata;
        uint64_t now = now_usec(sc);

        while (sc->phase == SCENARIO_RUNNING) {
                if (!sc->waiting && now < step_time(sc))
                        return arm(sc, step_time(sc));
                if (!run_step(sc, now)) {
                        if (sc->phase == SCENARIO_RUNNING)
                                return arm(sc, now + SCENARIO_WAIT_POLL_USEC);
                        return 0;
                }
                sc->previous_done_usec = now;
                if (++sc->current == sc->n_steps) {
                        sc->phase = SCENARIO_DONE;
                        sc->end_usec = now;
                        log_info("+%.3f s scenario %s done: %zu steps", since_start(sc, now), sc->path, sc->n_steps);
                        sc->timer = sd_event_source_disable_unref(sc->timer);
                        return 0;
                }
        }
        return 0;
}

static int arm(Scenario *sc, uint64_t when) {
        int r;

        if (sc->timer) {
                r = sd_event_source_set_time(sc->timer, when);
                if (r >= 0)
                        r = sd_event_source_set_enabled(sc->timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time(sc->event, &sc->timer, CLOCK_MONOTONIC, when, 0, on_timer, sc);
        if (r < 0)
                fail(sc, "cannot arm a timer: %s", strerror(-r));
        return 0;
}

int scenario_start(Scenario *sc, sd_event *event, Server *server) {
        if (sc->phase != SCENARIO_LOADED)
                return -EALREADY;
        sc->event = sd_event_ref(event);
        sc->server = server;
        sc->phase = SCENARIO_RUNNING;
        sc->start_usec = sc->previous_done_usec = now_usec(sc);
        log_info("scenario %s: %zu steps", sc->path, sc->n_steps);
        arm(sc, sc->start_usec);
        return sc->phase == SCENARIO_RUNNING ? 0 : -EIO;
}

void scenario_status(const Scenario *sc, FILE *f) {
        switch (sc->phase) {
        case SCENARIO_LOADED:
                fprintf(f, "loaded: %s, %zu steps\n", sc->path, sc->n_steps);
                break;
        case SCENARIO_RUNNING:
                fprintf(f, "running: %s:%u, step %zu of %zu (+%.3f s)\n", sc->path, sc->steps[sc->current].line,
                        sc->current + 1, sc->n_steps, since_start(sc, now_usec(sc)));
                break;
        case SCENARIO_DONE:
                fprintf(f, "done: %s, %zu steps in %.3f s\n", sc->path, sc->n_steps, since_start(sc, sc->end_usec));
                break;
        case SCENARIO_FAILED:
                fprintf(f, "failed: %s (+%.3f s)\n", sc->failure ?: "out of memory", since_start(sc, sc->end_usec));
                break;
        }
}
