/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdlib.h>
#include <unistd.h>

#include "disk.h"
#include "fault.h"
#include "hub.h"
#include "injector.h"
#include "keyboard.h"
#include "scenario.h"
#include "tests.h"

static Fault *parse_ok(const char *spec) {
        Fault *f = NULL;
        char *error = NULL;
        int r = fault_parse(spec, 7, &f, &error);

        if (r < 0)
                TEST_FAIL("'%s' refused: %s", spec, error ?: "(no message)");
        ASSERT_TRUE(f);
        free(error);
        return f;
}

/* The message names what was wrong. */
static void parse_bad(const char *spec, const char *expect_in_message) {
        Fault *f = NULL;
        char *error = NULL;

        ASSERT_TRUE(fault_parse(spec, 7, &f, &error) < 0);
        ASSERT_TRUE(!f);
        if (!error || !strstr(error, expect_in_message))
                TEST_FAIL("'%s': message \"%s\" does not mention \"%s\"", spec, error ?: "(none)", expect_in_message);
        free(error);
}

static void test_parse(void) {
        Fault *f;

        f = parse_ok("wakeup-storm");
        ASSERT_EQ(f->kind, FAULT_WAKEUP_STORM);
        ASSERT_EQ(f->count, 10);
        ASSERT_EQ(f->params.interval_usec, 200000);
        fault_free(f);

        f = parse_ok("wakeup-storm n=3 interval=1s");
        ASSERT_EQ(f->count, 3);
        ASSERT_EQ(f->params.interval_usec, 1000000);
        fault_free(f);

        /* Conditions last; events happen once unless told. */
        f = parse_ok("media-error lba=100-107");
        ASSERT_EQ(f->count, FAULT_COUNT_ALWAYS);
        ASSERT_EQ(f->params.lba_first, 100);
        ASSERT_EQ(f->params.lba_last, 107);
        fault_free(f);
        f = parse_ok("resume-stuck");
        ASSERT_EQ(f->count, 1);
        fault_free(f);
        f = parse_ok("io-latency ms=250 count=4");
        ASSERT_EQ(f->params.delay_usec, 250000);
        ASSERT_EQ(f->count, 4);
        fault_free(f);
        f = parse_ok("not-ready sense=2/3a/00 after-resume=no probability=0.25 seed=99");
        ASSERT_EQ(f->params.sense_key, 2);
        ASSERT_EQ(f->params.asc, 0x3a);
        ASSERT_FALSE(f->params.after_resume);
        ASSERT_EQ(f->probability_ppm, 250000);
        ASSERT_EQ(f->seed, 99);
        fault_free(f);
        f = parse_ok("delay-completion ms=2s ep=0x81 always");
        ASSERT_EQ(f->params.delay_usec, 2000000);
        ASSERT_EQ(f->params.endpoint, 0x81);
        ASSERT_EQ(f->seed, 7);
        fault_free(f);

        parse_bad("", "no fault kind");
        parse_bad("brownout", "unknown fault kind 'brownout'");
        parse_bad("resume-stuck ms=5", "resume-stuck does not take 'ms=5'");
        parse_bad("media-error", "needs lba=");
        parse_bad("media-error lba=9-3", "lba=9-3");
        parse_bad("resume-slow ms=-1", "ms=-1");
        parse_bad("resume-slow ms=2h", "ms=2h");
        parse_bad("resume-slow ms=3601s", "ms=3601s");
        parse_bad("spurious count=0", "unknown fault kind");
        parse_bad("phase-error count=0", "count=0");
        parse_bad("phase-error probability=1.5", "probability=1.5");
        parse_bad("phase-error probability=0", "probability=0");
        parse_bad("phase-error probability=0.0000001", "probability=0.0000001");
        parse_bad("not-ready sense=2/04", "sense=2/04");
        parse_bad("drop-completion ep=0x7f", "ep=0x7f");
        parse_bad("wakeup-storm n=0", "n=0");
        parse_bad("wakeup-storm interval=0", "interval=0");
}

static void test_triggers(void) {
        UsbDevice *d;
        Fault *a, *b;
        unsigned same = 0, hits_a = 0;

        ASSERT_OK(keyboard_new("kbd", &d));

        /* once, then spent */
        d->faults = parse_ok("phase-error");
        ASSERT_TRUE(fault_fire(d, FAULT_PHASE_ERROR, 1, "x"));
        ASSERT_FALSE(fault_fire(d, FAULT_PHASE_ERROR, 2, "x"));
        ASSERT_FALSE(fault_armed(d->faults));
        ASSERT_EQ(d->faults->opportunities, 1);
        fault_list_free(d->faults);

        /* count=3 */
        d->faults = parse_ok("phase-error count=3");
        for (int i = 0; i < 10; i++)
                (void) fault_fire(d, FAULT_PHASE_ERROR, 1, "x");
        ASSERT_EQ(d->faults->hits, 3);
        /* other kinds are untouched */
        ASSERT_FALSE(fault_fire(d, FAULT_MEDIA_ERROR, 1, "x"));
        fault_list_free(d->faults);

        /* probability: the same seed strikes at the same opportunities; about p of them. */
        a = parse_ok("phase-error always probability=0.3 seed=42");
        b = parse_ok("phase-error always probability=0.3 seed=42");
        for (int i = 0; i < 10000; i++) {
                bool x = fault_fire_one(d, a, 1, "x"), y = fault_fire_one(d, b, 1, "x");
                same += x == y;
                hits_a += x;
        }
        ASSERT_EQ(same, 10000);
        ASSERT_TRUE(hits_a > 2700 && hits_a < 3300);
        fault_free(b);
        b = parse_ok("phase-error always probability=0.3 seed=43");
        same = 0;
        a->rng = a->seed;
        for (int i = 0; i < 1000; i++)
                same += fault_fire_one(d, a, 1, "x") == fault_fire_one(d, b, 1, "x");
        ASSERT_TRUE(same < 1000);
        fault_free(a);
        fault_free(b);
        d->faults = NULL;
        usb_device_free(d);
}

/* --- the hub's resume and wakeup faults, on the device models alone --- */

static Urb *last;

static void on_complete(Urb *u, void *userdata) {
        urb_free(last);
        last = u;
}

static Urb *control(UsbDevice *d, uint8_t type, uint8_t req, uint16_t value, uint16_t index, uint16_t length) {
        static uint32_t seqnum = 1;
        Urb *u;

        ASSERT_OK(urb_new(seqnum++, 0, type & USB_DIR_IN, length, &u));
        u->complete = on_complete;
        usb_setup_encode(u->setup, &(UsbSetup) { type, req, value, index, length });
        ASSERT_OK(usb_device_submit(d, u, 1));
        ASSERT_TRUE(last == u);
        return u;
}

static uint16_t port_status(UsbDevice *hub, unsigned port, uint16_t *change) {
        Urb *u = control(hub, 0xa3, USB_REQ_GET_STATUS, 0, (uint16_t) port, 4);
        ASSERT_EQ(u->status, 0);
        *change = get_le16(urb_data(u) + 2);
        return get_le16(urb_data(u));
}

static void port_feature(UsbDevice *hub, bool set, uint16_t feature, unsigned port) {
        ASSERT_EQ(control(hub, 0x23, set ? USB_REQ_SET_FEATURE : USB_REQ_CLEAR_FEATURE, feature, (uint16_t) port, 0)
                          ->status,
                  0);
}

static void configure(UsbDevice *d) {
        ASSERT_EQ(control(d, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_DEVICE << 8, 0, 18)->status, 0);
        ASSERT_EQ(control(d, 0x00, USB_REQ_SET_CONFIGURATION, 1, 0, 0)->status, 0);
}

static void add(UsbDevice *d, const char *spec) {
        Fault **tail = &d->faults;
        while (*tail)
                tail = &(*tail)->next;
        *tail = parse_ok(spec);
}

/* A hub with a keyboard on port 2, enumerated and configured. */
static void setup_tree(UsbDevice **ret_hub, UsbDevice **ret_kbd) {
        UsbDevice *hub, *kbd;
        uint16_t change;

        ASSERT_OK(hub_new("hub0", &(HubOptions) { .n_ports = 4 }, &hub));
        ASSERT_OK(keyboard_new("kbd", &kbd));
        configure(hub);
        ASSERT_OK(hub_plug(hub_from_device(hub), 2, kbd, 1));
        port_feature(hub, true, USB_PORT_FEAT_POWER, 2);
        port_feature(hub, true, USB_PORT_FEAT_RESET, 2);
        (void) port_status(hub, 2, &change);
        port_feature(hub, false, USB_PORT_FEAT_C_CONNECTION, 2);
        port_feature(hub, false, USB_PORT_FEAT_C_RESET, 2);
        configure(kbd);
        *ret_hub = hub;
        *ret_kbd = kbd;
}

static void test_resume_faults(void) {
        UsbDevice *hub, *kbd;
        uint16_t st, ch;

        setup_tree(&hub, &kbd);

        /* resume-stuck: the port still says SUSPEND when the kernel looks, once. */
        add(kbd, "resume-stuck");
        port_feature(hub, true, USB_PORT_FEAT_SUSPEND, 2);
        port_feature(hub, false, USB_PORT_FEAT_SUSPEND, 2);
        st = port_status(hub, 2, &ch);
        ASSERT_TRUE(st & USB_PORT_STAT_SUSPEND);
        ASSERT_EQ(kbd->link, USB_LINK_SUSPENDED);
        ASSERT_EQ(kbd->faults->hits, 1);
        port_feature(hub, false, USB_PORT_FEAT_SUSPEND, 2);
        st = port_status(hub, 2, &ch);
        ASSERT_FALSE(st & USB_PORT_STAT_SUSPEND);
        ASSERT_EQ(ch, USB_PORT_STAT_C_SUSPEND);
        port_feature(hub, false, USB_PORT_FEAT_C_SUSPEND, 2);

        /* GET_STATUS after that resume: resume-status-stall strikes on it, not on a later one. */
        add(kbd, "resume-status-stall");
        ASSERT_EQ(control(kbd, 0x80, USB_REQ_GET_STATUS, 0, 0, 2)->status, -EPIPE);
        ASSERT_EQ(control(kbd, 0x80, USB_REQ_GET_STATUS, 0, 0, 2)->status, 0);

        /* resume-status-timeout: the completion is held for the transport, forever. */
        add(kbd, "resume-status-timeout");
        port_feature(hub, true, USB_PORT_FEAT_SUSPEND, 2);
        port_feature(hub, false, USB_PORT_FEAT_SUSPEND, 2);
        (void) port_status(hub, 2, &ch);
        port_feature(hub, false, USB_PORT_FEAT_C_SUSPEND, 2);
        ASSERT_TRUE(control(kbd, 0x80, USB_REQ_GET_STATUS, 0, 0, 2)->hold_usec == URB_HOLD_FOREVER);

        /* resume-slow: SUSPEND until the time has passed. */
        add(kbd, "resume-slow ms=150");
        port_feature(hub, true, USB_PORT_FEAT_SUSPEND, 2);
        port_feature(hub, false, USB_PORT_FEAT_SUSPEND, 2);
        st = port_status(hub, 2, &ch);
        ASSERT_TRUE(st & USB_PORT_STAT_SUSPEND);
        usleep(200 * 1000);
        st = port_status(hub, 2, &ch);
        ASSERT_FALSE(st & USB_PORT_STAT_SUSPEND);
        ASSERT_EQ(ch, USB_PORT_STAT_C_SUSPEND);
        port_feature(hub, false, USB_PORT_FEAT_C_SUSPEND, 2);

        /* resume-reset: resumed, but disabled and unconfigured: the kernel must reset-resume. */
        add(kbd, "resume-reset");
        port_feature(hub, true, USB_PORT_FEAT_SUSPEND, 2);
        port_feature(hub, false, USB_PORT_FEAT_SUSPEND, 2);
        st = port_status(hub, 2, &ch);
        ASSERT_FALSE(st & (USB_PORT_STAT_SUSPEND | USB_PORT_STAT_ENABLE));
        ASSERT_TRUE(st & USB_PORT_STAT_CONNECTION);
        ASSERT_EQ(kbd->state, USB_DEVICE_STATE_DEFAULT);
        port_feature(hub, false, USB_PORT_FEAT_C_SUSPEND, 2);
        port_feature(hub, true, USB_PORT_FEAT_RESET, 2);
        port_feature(hub, false, USB_PORT_FEAT_C_RESET, 2);
        configure(kbd);

        /* remote-wakeup-stall: the host cannot arm wakeup. */
        add(kbd, "remote-wakeup-stall count=1");
        ASSERT_EQ(control(kbd, 0x00, USB_REQ_SET_FEATURE, USB_DEVICE_REMOTE_WAKEUP, 0, 0)->status, -EPIPE);
        ASSERT_FALSE(kbd->remote_wakeup);
        ASSERT_EQ(control(kbd, 0x00, USB_REQ_SET_FEATURE, USB_DEVICE_REMOTE_WAKEUP, 0, 0)->status, 0);

        /* wakeup-lost: the key press signals, the port stays suspended and nothing is reported. */
        add(kbd, "wakeup-lost");
        port_feature(hub, true, USB_PORT_FEAT_SUSPEND, 2);
        ASSERT_OK(usb_device_signal_wakeup(kbd, false));
        st = port_status(hub, 2, &ch);
        ASSERT_TRUE(st & USB_PORT_STAT_SUSPEND);
        ASSERT_EQ(ch, 0);
        ASSERT_EQ(hub_get_stats(hub_from_device(hub))->remote_wakeups, 0);
        /* the next one goes through */
        ASSERT_OK(usb_device_signal_wakeup(kbd, false));
        st = port_status(hub, 2, &ch);
        ASSERT_FALSE(st & USB_PORT_STAT_SUSPEND);
        ASSERT_EQ(ch, USB_PORT_STAT_C_SUSPEND);
        port_feature(hub, false, USB_PORT_FEAT_C_SUSPEND, 2);

        /* over-current: status and change, power off, the device gone until power returns. */
        ASSERT_OK(hub_port_over_current(hub_from_device(hub), 2, 5));
        st = port_status(hub, 2, &ch);
        ASSERT_EQ(st, USB_PORT_STAT_OVERCURRENT);
        ASSERT_EQ(ch, USB_PORT_STAT_C_OVERCURRENT | USB_PORT_STAT_C_CONNECTION);
        ASSERT_ERR(hub_port_over_current(hub_from_device(hub), 2, 5), ENOLINK);
        port_feature(hub, false, USB_PORT_FEAT_C_OVER_CURRENT, 2);
        port_feature(hub, false, USB_PORT_FEAT_C_CONNECTION, 2);
        port_feature(hub, true, USB_PORT_FEAT_POWER, 2);
        st = port_status(hub, 2, &ch);
        ASSERT_EQ(st, USB_PORT_STAT_POWER | USB_PORT_STAT_CONNECTION);
        ASSERT_EQ(ch, USB_PORT_STAT_C_CONNECTION);
        port_feature(hub, false, USB_PORT_FEAT_C_CONNECTION, 2);
        port_feature(hub, true, USB_PORT_FEAT_RESET, 2);
        port_feature(hub, false, USB_PORT_FEAT_C_RESET, 2);
        configure(kbd);

        /* unplug-resume: gone as the host resumes it. */
        add(kbd, "unplug-resume");
        port_feature(hub, true, USB_PORT_FEAT_SUSPEND, 2);
        port_feature(hub, false, USB_PORT_FEAT_SUSPEND, 2);
        st = port_status(hub, 2, &ch);
        ASSERT_EQ(st, USB_PORT_STAT_POWER);
        ASSERT_EQ(ch, USB_PORT_STAT_C_CONNECTION);
        ASSERT_EQ(kbd->link, USB_LINK_UNPLUGGED);
        ASSERT_TRUE(hub_get_child(hub_from_device(hub), 2) == NULL);

        urb_free(last);
        last = NULL;
        usb_device_free(kbd);
        usb_device_free(hub);
}

/* --- storage faults through Bulk-Only Transport --- */

static void bulk(UsbDevice *d, uint8_t ep, bool in, const void *data, uint32_t len) {
        static uint32_t seqnum = 10000;
        Urb *u;

        ASSERT_OK(urb_new(seqnum++, ep, in, len, &u));
        u->complete = on_complete;
        if (!in) {
                ASSERT_OK(urb_ensure_buffer(u));
                memcpy(urb_data(u), data, len);
        }
        ASSERT_OK(usb_device_submit(d, u, 1));
}

/* Sends READ(10) of one block at lba and returns the CSW status, clearing a halted bulk IN. */
static int read_block(UsbDevice *d, uint32_t lba) {
        uint8_t cbw[31] = { 'U', 'S', 'B', 'C', 1, 2, 3, 4 };

        put_le32(cbw + 8, 512);
        cbw[12] = 0x80; /* data in */
        cbw[14] = 10;
        cbw[15] = 0x28;
        put_be32(cbw + 17, lba);
        put_be16(cbw + 22, 1);
        bulk(d, 2, false, cbw, sizeof(cbw));
        ASSERT_EQ(last->status, 0);
        bulk(d, 1, true, NULL, 512);
        if (last->status == -EPIPE)
                ASSERT_EQ(control(d, 0x02, USB_REQ_CLEAR_FEATURE, USB_ENDPOINT_HALT, 0x81, 0)->status, 0);
        else
                ASSERT_EQ(last->actual_length, 512);
        bulk(d, 1, true, NULL, 13);
        ASSERT_EQ(last->status, 0);
        ASSERT_EQ(last->actual_length, 13);
        ASSERT_MEMEQ(urb_data(last), "USBS", 4);
        return urb_data(last)[12];
}

static void test_storage_faults(void) {
        char dir[] = "/var/tmp/test-fault-XXXXXX", image[64];
        UsbDevice *d;

        ASSERT_TRUE(mkdtemp(dir));
        snprintf(image, sizeof(image), "%s/disk.img", dir);
        ASSERT_OK(disk_new(&(DiskConfig) { .name = (char *) "disk0", .image = image, .size = 1 << 20,
                                           .speed = USB_SPEED_HIGH },
                           &d));
        ASSERT_TRUE(disk_is_disk(d));
        configure(d);
        (void) read_block(d, 0); /* the power-on UNIT ATTENTION */

        ASSERT_EQ(read_block(d, 5), 0);
        add(d, "media-error lba=4-6");
        ASSERT_EQ(read_block(d, 5), 1);
        ASSERT_EQ(read_block(d, 7), 0);
        ASSERT_EQ(read_block(d, 4), 1);
        ASSERT_EQ(d->faults->hits, 2);

        add(d, "phase-error");
        ASSERT_EQ(read_block(d, 100), 2);
        ASSERT_EQ(read_block(d, 100), 0);

        /* not-ready strikes after a resume only, once per resume. */
        add(d, "not-ready count=5");
        ASSERT_EQ(read_block(d, 100), 0);
        d->stats.resumes_inferred++;
        ASSERT_EQ(read_block(d, 100), 1);
        ASSERT_EQ(read_block(d, 100), 0);

        urb_free(last);
        last = NULL;
        usb_device_free(d);
        ASSERT_OK(unlink(image));
        ASSERT_OK(rmdir(dir));
}

/* --- the injector: scope checks, listing, clearing --- */

static void test_injector(void) {
        sd_event *event = NULL;
        Server *server = NULL;
        Injector *inj = NULL;
        UsbDevice *kbd;
        Export *e;
        char *error = NULL, *out = NULL;
        size_t size = 0;
        FILE *f;

        ASSERT_OK(sd_event_new(&event));
        ASSERT_OK(server_new(event, &server));
        ASSERT_OK(injector_new(event, server, &inj));
        server->injector = inj;
        ASSERT_OK(keyboard_new("kbd0", &kbd));
        ASSERT_OK(server_add_device(server, kbd, &e));

        /* A root-port device cannot have hub-port faults, nor storage faults: the refusal says why. */
        ASSERT_ERR(injector_add(inj, e, "wakeup-storm", &error), EINVAL);
        ASSERT_TRUE(error && strstr(error, "root port"));
        free(error), error = NULL;
        ASSERT_ERR(injector_add(inj, e, "media-error lba=1", &error), EINVAL);
        ASSERT_TRUE(error && strstr(error, "not one"));
        free(error), error = NULL;
        ASSERT_ERR(injector_add(inj, e, "resume-stuck bogus", &error), EINVAL);
        free(error), error = NULL;

        ASSERT_EQ(injector_add(inj, e, "remote-wakeup-stall", &error), 1);
        ASSERT_EQ(injector_add(inj, e, "drop-completion ep=0x81", &error), 2);
        injector_set_seed(inj, 1000);
        ASSERT_EQ(injector_add(inj, e, "phase-error probability=0.5", &error), -EINVAL); /* not a disk */
        free(error), error = NULL;
        ASSERT_EQ(injector_add(inj, e, "delay-completion probability=0.5", &error), 3);
        ASSERT_EQ(kbd->faults->next->next->seed, 1000);

        f = open_memstream(&out, &size);
        injector_list(inj, true, f);
        fclose(f);
        ASSERT_TRUE(strstr(out, "\"kind\": \"drop-completion\""));
        ASSERT_TRUE(strstr(out, "\"id\": 3"));
        free(out);

        ASSERT_EQ(injector_clear(inj, "2"), 1);
        ASSERT_EQ(injector_clear(inj, "kbd0"), 2);
        ASSERT_EQ(injector_clear(inj, "kbd0"), 0);
        ASSERT_EQ(injector_clear(inj, "all"), 0);
        ASSERT_ERR(injector_clear(inj, "77"), ENOENT);
        ASSERT_ERR(injector_clear(inj, "nothing"), ENOENT);
        ASSERT_TRUE(kbd->faults == NULL);

        injector_free(inj);
        server_free(server);
        sd_event_unref(event);
}

static void test_scenario_load(void) {
        char path[] = "/var/tmp/test-scenario-XXXXXX";
        Scenario *sc = NULL;
        char *error = NULL;
        int fd;

        static const struct { const char *text, *error; } cases[] = {
                { "seed 42\nfault add kbd0 wakeup-storm n=3\nafter 2s unplug disk1\nat 1.5s wakeup kbd0\n"
                  "wait kbd0 suspended 10s # comment\n\n", NULL },
                { "after soon plug x\n", ":1: 'after soon'" },
                { "ok\nwait kbd0 asleep\n", ":2: unknown state 'asleep'" },
                { "scenario run /x\n", ":1: a scenario cannot start a scenario" },
                { "seed -1\n", ":1: seed needs" },
                { "# nothing\n", "no steps" },
                { "at 3s\n", ":1: nothing to do at" },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                strcpy(path, "/var/tmp/test-scenario-XXXXXX");
                fd = mkstemp(path);
                ASSERT_TRUE(fd >= 0);
                ASSERT_EQ(write(fd, cases[i].text, strlen(cases[i].text)), (long long) strlen(cases[i].text));
                close(fd);
                int r = scenario_load(path, &sc, &error);
                if (!cases[i].error) {
                        ASSERT_OK(r);
                        scenario_free(sc);
                        sc = NULL;
                } else {
                        ASSERT_TRUE(r < 0);
                        if (!error || !strstr(error, cases[i].error))
                                TEST_FAIL("case %zu: \"%s\" does not contain \"%s\"", i, error ?: "(none)",
                                          cases[i].error);
                }
                free(error);
                error = NULL;
                unlink(path);
        }
        ASSERT_TRUE(scenario_load("/nonexistent/scenario", &sc, &error) == -ENOENT);
        ASSERT_TRUE(error && strstr(error, "/nonexistent/scenario"));
        free(error);
}

TEST_MAIN(TEST(test_parse), TEST(test_triggers), TEST(test_resume_faults), TEST(test_storage_faults),
          TEST(test_injector), TEST(test_scenario_load))
