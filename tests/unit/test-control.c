/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdio.h>
#include <stdlib.h>

#include "control.h"
#include "image.h"
#include "tests.h"

static char dir[] = "/tmp/drowse-test-control.XXXXXX";

/* Runs one request and returns the whole reply (caller frees). */
static char *request(Server *s, const char *req, int *ret) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        ASSERT_TRUE(f);
        *ret = control_handle(s, req, f);
        ASSERT_EQ(fclose(f), 0);
        return buf;
}

static void expect_ok(Server *s, const char *req, const char *fragment) {
        int r;
        char *reply = request(s, req, &r);
        if (r < 0 || strncmp(reply, "ok\n", 3) != 0 || (fragment && !strstr(reply, fragment)))
                TEST_FAIL("%s -> %d: %s (wanted \"%s\")", req, r, reply, fragment ?: "");
        free(reply);
}

static void expect_error(Server *s, const char *req, const char *fragment) {
        int r;
        char *reply = request(s, req, &r);
        if (r >= 0 || strncmp(reply, "error: ", 7) != 0 || !strstr(reply, fragment))
                TEST_FAIL("%s -> %d: %s (wanted an error with \"%s\")", req, r, reply, fragment);
        free(reply);
}

static void test_requests(void) {
        sd_event *e;
        Server *s;
        char spec[256];

        ASSERT_TRUE(mkdtemp(dir));
        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(server_new(e, &s));

        expect_ok(s, "version", "drowse-emu");
        expect_ok(s, "list", "NAME");
        expect_ok(s, "list-json", "[]");

        snprintf(spec, sizeof(spec), "add-disk %s/a.img,size=1M,serial=A1", dir);
        expect_ok(s, spec, "\"name\": \"disk0\"");
        snprintf(spec, sizeof(spec), "add-disk %s/b.img,size=2M,lun=%s/b1.img,speed=super,name=big", dir, dir);
        expect_ok(s, spec, "\"busid\": \"1-2\"");
        expect_ok(s, "show big", "\"lun\": 1");
        expect_ok(s, "show 1-2", "\"speed\": \"super\"");
        expect_ok(s, "list", "big");

        /* Names are unique; an image in use by another disk is refused; bad specs say why. */
        expect_error(s, spec, "exists already");
        snprintf(spec, sizeof(spec), "add-disk %s/a.img,name=again", dir);
        expect_error(s, spec, "cannot create the disk: it is in use by another process");
        /* With image directories, a disk added at run time is created inside them only. */
        ASSERT_OK(image_set_create_directories((const char *const[]) { dir }, 1));
        expect_error(s, "add-disk /outside-the-image-dir.img,size=1M,name=out",
                     "cannot create the disk: new images may only be created inside the image directories");
        ASSERT_OK(image_set_create_directories(NULL, 0));
        expect_error(s, "add-disk size=1M", "a disk starts with its image path");
        expect_error(s, "add-disk", "usage");
        expect_error(s, "show nope", "no device 'nope'");
        expect_error(s, "show", "no device");
        expect_error(s, "detach big", "not attached locally");
        expect_error(s, "attach big 999", "bad controller number");
        expect_error(s, "frobnicate", "unknown request");
        expect_error(s, "", "empty request");

        /* Removing the first keeps the second's busid; a new disk takes the free name and number. */
        expect_ok(s, "remove disk0", NULL);
        expect_error(s, "show disk0", "no device");
        expect_ok(s, "show 1-2", "big");
        snprintf(spec, sizeof(spec), "add-disk %s/c.img,size=1M", dir);
        expect_ok(s, spec, "\"busid\": \"1-1\"");
        expect_ok(s, "show disk0", "c.img");

        server_free(s);
        sd_event_unref(e);
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        ASSERT_EQ(system(cmd), 0);
}

TEST_MAIN(TEST(test_requests))
