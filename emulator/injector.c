/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "disk.h"
#include "hub.h"
#include "injector.h"
#include "log.h"
#include "scenario.h"
#include "tree.h"

/* An action a fault will take later. It names its device and fault instead of pointing at them: either
 * may be gone (removed, cleared) by the time it runs, and then it does nothing. */
typedef struct InjectorAction InjectorAction;

struct InjectorAction {
        Injector *injector;
        sd_event_source *timer;
        char *device;
        unsigned fault_id;
        InjectorAction *next, *prev;
};

struct Injector {
        sd_event *event;
        Server *server;
        InjectorAction *actions;
        unsigned next_id;
        uint64_t seed, n_seeded;
        Scenario *scenario;           /* the last one started */
};

static InjectorAction *action_free(InjectorAction *a) {
        if (!a)
                return NULL;
        if (a->prev)
                a->prev->next = a->next;
        else
                a->injector->actions = a->next;
        if (a->next)
                a->next->prev = a->prev;
        sd_event_source_disable_unref(a->timer);
        free(a->device);
        return mfree(a);
}

int injector_new(sd_event *event, Server *server, Injector **ret) {
        Injector *inj = calloc(1, sizeof(Injector));
        uint64_t now = 0;

        if (!inj)
                return -ENOMEM;
        inj->event = sd_event_ref(event);
        inj->server = server;
        inj->seed = 1;
        (void) sd_event_now(event, CLOCK_MONOTONIC, &now);
        fault_set_epoch(now);
        *ret = inj;
        return 0;
}

Injector *injector_free(Injector *inj) {
        if (!inj)
                return NULL;
        while (inj->actions)
                action_free(inj->actions);
        scenario_free(inj->scenario);
        /* The devices may outlive us (the server is torn down after): they must not call back. */
        for (size_t i = 0; i < inj->server->n_exports; i++)
                if (inj->server->exports[i]->device->link_hook_userdata == inj) {
                        inj->server->exports[i]->device->link_hook = NULL;
                        inj->server->exports[i]->device->link_hook_userdata = NULL;
                }
        if (inj->server->injector == inj)
                inj->server->injector = NULL;
        sd_event_unref(inj->event);
        return mfree(inj);
}

void injector_set_seed(Injector *inj, uint64_t seed) {
        inj->seed = seed;
        inj->n_seeded = 0;
}

static uint64_t now_usec(Injector *inj) {
        uint64_t now = 0;
        (void) sd_event_now(inj->event, CLOCK_MONOTONIC, &now);
        return now;
}

static Fault *find_by_id(UsbDevice *d, unsigned id) {
        for (Fault *f = d->faults; f; f = f->next)
                if (f->id == id)
                        return f;
        return NULL;
}

static int on_action(sd_event_source *source, uint64_t usec, void *userdata) {
        InjectorAction *a = userdata;
        Injector *inj = a->injector;
        Export *e = server_lookup(inj->server, a->device);
        UsbDevice *d = e ? e->device : NULL;
        Fault *f = d ? find_by_id(d, a->fault_id) : NULL;
        uint64_t now = now_usec(inj);
        int r;

        /* Done with the action before acting: what the fault does may schedule the next one. */
        action_free(a);
        if (!f || !fault_armed(f))
                return 0;

        switch (f->kind) {
        case FAULT_WAKEUP_SPURIOUS:
        case FAULT_WAKEUP_STORM:
        case FAULT_WAKEUP_UNARMED: {
                bool unarmed = f->kind == FAULT_WAKEUP_UNARMED;

                if (d->link != USB_LINK_SUSPENDED)
                        return 0; /* resumed meanwhile; the next suspend schedules again */
                if (unarmed == d->remote_wakeup) {
                        log_debug("%s: fault %u waits: remote wakeup is %s", d->name, f->id,
                                  d->remote_wakeup ? "armed" : "not armed");
                        return 0;
                }
                if (!fault_fire_one(d, f, now, "signals remote wakeup%s", unarmed ? " the host did not arm" : ""))
                        return 0;
                r = usb_device_signal_wakeup(d, unarmed);
                if (r < 0)
                        log_warning_errno(r, "%s: injected wakeup was not carried: %m", d->name);
                return 0;
        }

        case FAULT_UNPLUG_SUSPENDED:
                if (d->link != USB_LINK_SUSPENDED)
                        return 0;
                if (fault_fire_one(d, f, now, "unplugged while suspended"))
                        (void) tree_unplug(e);
                return 0;

        case FAULT_OVER_CURRENT: {
                Hub *h = e->hub_export ? hub_from_device(e->hub_export->device) : NULL;

                if (!h || !fault_fire_one(d, f, now, "over-current on %s port %u", e->hub_export->device->name,
                                          e->hub_port))
                        return 0;
                r = hub_port_over_current(h, e->hub_port, now);
                if (r < 0)
                        log_warning_errno(r, "%s: port %u is not powered, no over-current to report", d->name,
                                          e->hub_port);
                return 0;
        }

        case FAULT_CARRIER_CLOSE:
                if (!e->connection) {
                        log_notice("%s: fault %u: no connection to close", d->name, f->id);
                        return 0;
                }
                if (fault_fire_one(d, f, now, "closing the connection to %s", e->connection->peer))
                        connection_free(e->connection);
                return 0;

        case FAULT_RESUME_STUCK:
        case FAULT_RESUME_SLOW:
        case FAULT_RESUME_RESET:
        case FAULT_RESUME_STATUS_STALL:
        case FAULT_RESUME_STATUS_TIMEOUT:
        case FAULT_WAKEUP_LOST:
        case FAULT_REMOTE_WAKEUP_STALL:
        case FAULT_UNPLUG_RESUME:
        case FAULT_NOT_READY:
        case FAULT_START_STOP_FAIL:
        case FAULT_MEDIA_ERROR:
        case FAULT_IO_LATENCY:
        case FAULT_PHASE_ERROR:
        case FAULT_DELAY_COMPLETION:
        case FAULT_DROP_COMPLETION:
        case _FAULT_KIND_MAX:
        case _FAULT_KIND_INVALID:
                break;
        }
        return 0;
}

static int schedule(Injector *inj, UsbDevice *d, Fault *f, uint64_t delay_usec) {
        InjectorAction *a;
        int r;

        for (a = inj->actions; a; a = a->next)
                if (a->fault_id == f->id)
                        return 0; /* one at a time per fault */

        a = calloc(1, sizeof(InjectorAction));
        if (!a)
                return -ENOMEM;
        a->injector = inj;
        a->fault_id = f->id;
        a->device = strdup(d->name);
        a->next = inj->actions;
        if (a->next)
                a->next->prev = a;
        inj->actions = a;
        if (!a->device)
                return action_free(a), -ENOMEM;
        r = sd_event_add_time_relative(inj->event, &a->timer, CLOCK_MONOTONIC, delay_usec, 1000, on_action, a);
        if (r < 0) {
                action_free(a);
                return log_error_errno(r, "Cannot arm a timer for fault %u: %m", f->id);
        }
        return 0;
}

/* A device's link changed: the faults that act after a suspend get their timers. */
static void on_link(UsbDevice *d, UsbLinkState old, void *userdata) {
        Injector *inj = userdata;

        if (d->link != USB_LINK_SUSPENDED)
                return;
        for (Fault *f = d->faults; f; f = f->next) {
                if (!fault_armed(f))
                        continue;
                if (f->kind == FAULT_WAKEUP_STORM)
                        (void) schedule(inj, d, f, f->params.interval_usec);
                else if (IN_SET(f->kind, FAULT_WAKEUP_SPURIOUS, FAULT_WAKEUP_UNARMED, FAULT_UNPLUG_SUSPENDED))
                        (void) schedule(inj, d, f, f->params.delay_usec);
        }
}

int injector_add(Injector *inj, Export *e, const char *spec, char **error) {
        _cleanup_(fault_freep) Fault *f = NULL;
        UsbDevice *d = e->device;
        Fault **tail;
        int r;

        r = fault_parse(spec, inj->seed + inj->n_seeded, &f, error);
        if (r < 0)
                return r;

        switch (fault_kind_scope(f->kind)) {
        case FAULT_SCOPE_HUB_PORT:
                if (!e->hub_export) {
                        if (error)
                                r = asprintf(error, "%s needs a device behind one of our hubs, and '%s' is on a "
                                             "root port (vhci keeps root-port suspend and resume to itself)",
                                             fault_kind_to_string(f->kind), d->name);
                        return -EINVAL;
                }
                break;
        case FAULT_SCOPE_DISK:
                if (!disk_is_disk(d)) {
                        if (error)
                                r = asprintf(error, "%s needs a disk, and '%s' is not one",
                                             fault_kind_to_string(f->kind), d->name);
                        return -EINVAL;
                }
                break;
        case FAULT_SCOPE_ANY:
        case _FAULT_SCOPE_MAX:
                break;
        }

        inj->n_seeded++;
        f->id = ++inj->next_id;
        f->added_usec = now_usec(inj);
        for (tail = &d->faults; *tail; tail = &(*tail)->next)
                ;
        *tail = f;
        d->link_hook = on_link;
        d->link_hook_userdata = inj;
        log_info("%s: fault %u added: %s", d->name, f->id, f->spec);

        if (IN_SET(f->kind, FAULT_OVER_CURRENT, FAULT_CARRIER_CLOSE))
                (void) schedule(inj, d, f, f->params.delay_usec);
        else if (d->link == USB_LINK_SUSPENDED)
                /* Already suspended: act as if it had just suspended. */
                on_link(d, USB_LINK_SUSPENDED, inj);
        return (int) TAKE_PTR(f)->id;
}

int injector_clear(Injector *inj, const char *what) {
        Server *s = inj->server;
        unsigned id = 0;
        bool all = streq(what, "all");
        int n = 0;
        char *end;

        if (!all) {
                unsigned long v = strtoul(what, &end, 10);
                if (!*end && *what >= '0' && *what <= '9')
                        id = (unsigned) v;
        }
        for (size_t i = 0; i < s->n_exports; i++) {
                UsbDevice *d = s->exports[i]->device;
                bool whole = all || (!id && streq(d->name, what));
                Fault **p = &d->faults;

                while (*p) {
                        Fault *f = *p;
                        if (whole || f->id == id) {
                                log_info("%s: fault %u cleared (%" PRIu64 " hits): %s", d->name, f->id, f->hits,
                                         f->spec);
                                *p = f->next;
                                fault_free(f);
                                n++;
                        } else
                                p = &f->next;
                }
        }
        return n > 0 || all || (!id && server_lookup(s, what)) ? n : -ENOENT;
}

void injector_list(Injector *inj, bool json, FILE *f) {
        Server *s = inj->server;
        bool first = true;

        if (json)
                fputc('[', f);
        else
                fprintf(f, "%-4s %-12s %-22s %-28s %-6s %6s %6s  %s\n", "ID", "DEVICE", "KIND", "TRIGGER", "STATE",
                        "CHANCES", "HITS", "SPEC");
        for (size_t i = 0; i < s->n_exports; i++) {
                UsbDevice *d = s->exports[i]->device;
                for (Fault *fault = d->faults; fault; fault = fault->next) {
                        if (json) {
                                fputs(first ? "" : ",\n ", f);
                                fault_describe_json(fault, d->name, f);
                        } else
                                fault_describe_text(fault, d->name, f);
                        first = false;
                }
        }
        if (json)
                fputs("]\n", f);
}

/* A Bulk-Only Command Status Wrapper: 13 bytes starting "USBS" (BOT 5.2). */
static bool is_csw(const Urb *u) {
        static const uint8_t signature[4] = { 'U', 'S', 'B', 'S' };
        return u->in && u->actual_length == 13 && u->buf && memcmp(u->buf, signature, sizeof(signature)) == 0;
}

uint64_t injector_completion_hold(UsbDevice *d, const Urb *u, uint64_t now) {
        uint8_t address = u->ep | (u->in ? 0x80 : 0);
        Fault *f;

        if (!d->faults)
                return 0;
        f = fault_find(d, FAULT_DROP_COMPLETION);
        if (f && (f->params.endpoint < 0 || f->params.endpoint == address) &&
            fault_fire_one(d, f, now, "RET_SUBMIT of URB %" PRIu32 " (ep 0x%02x) withheld", u->seqnum, address))
                return URB_HOLD_FOREVER;
        f = fault_find(d, FAULT_DELAY_COMPLETION);
        if (f && (f->params.endpoint < 0 || f->params.endpoint == address) &&
            fault_fire_one(d, f, now, "RET_SUBMIT of URB %" PRIu32 " (ep 0x%02x) held %" PRIu64 " ms", u->seqnum,
                           address, f->params.delay_usec / 1000))
                return MAX(f->params.delay_usec, 1);
        f = fault_find(d, FAULT_IO_LATENCY);
        if (f && is_csw(u) &&
            fault_fire_one(d, f, now, "status of command %08" PRIx32 " held %" PRIu64 " ms", get_le32(u->buf + 4),
                           f->params.delay_usec / 1000))
                return MAX(f->params.delay_usec, 1);
        return 0;
}

int injector_run_scenario(Injector *inj, const char *path, char **error) {
        _cleanup_(scenario_freep) Scenario *sc = NULL;
        int r;

        if (scenario_running(inj->scenario)) {
                if (asprintf(error, "a scenario is running (scenario stop ends it)") < 0)
                        *error = NULL;
                return -EBUSY;
        }
        r = scenario_load(path, &sc, error);
        if (r < 0)
                return r;
        scenario_free(inj->scenario);
        inj->scenario = TAKE_PTR(sc);
        r = scenario_start(inj->scenario, inj->event, inj->server);
        if (r < 0 && asprintf(error, "the scenario failed to start (see the log)") < 0)
                *error = NULL;
        return r;
}

int injector_stop_scenario(Injector *inj) {
        if (!scenario_running(inj->scenario))
                return -ESRCH;
        log_info("scenario stopped on request");
        inj->scenario = scenario_free(inj->scenario);
        return 0;
}

void injector_scenario_status(Injector *inj, FILE *f) {
        if (!inj->scenario)
                fputs("none\n", f);
        else
                scenario_status(inj->scenario, f);
}
