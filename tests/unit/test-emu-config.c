/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "emu-config.h"
#include "tests.h"

static void test_parse_size(void) {
        uint64_t v;

        ASSERT_OK(parse_size("64M", &v));
        ASSERT_EQ(v, 64ull << 20);
        ASSERT_OK(parse_size("1G", &v));
        ASSERT_EQ(v, 1ull << 30);
        ASSERT_OK(parse_size("2GiB", &v));
        ASSERT_EQ(v, 2ull << 30);
        ASSERT_OK(parse_size("4096", &v));
        ASSERT_EQ(v, 4096);
        ASSERT_ERR(parse_size("0", &v), EINVAL);
        ASSERT_ERR(parse_size("1000", &v), EINVAL);  /* not a multiple of 512 */
        ASSERT_ERR(parse_size("-512", &v), EINVAL);
        ASSERT_ERR(parse_size("12Q", &v), EINVAL);
        ASSERT_ERR(parse_size("", &v), EINVAL);
        ASSERT_ERR(parse_size("99999999999T", &v), ERANGE);
}

static void test_disk_spec(void) {
        EmuConfig c;
        const char *error = NULL;

        emu_config_init(&c);
        ASSERT_OK(emu_config_add_disk_spec(&c, "/tmp/a.img,size=64M,ro,serial=S1,vendor=V,product=P,speed=super",
                                           &error));
        ASSERT_EQ(c.n_disks, 1);
        ASSERT_STREQ(c.disks[0].image, "/tmp/a.img");
        ASSERT_STREQ(c.disks[0].name, "disk0");
        ASSERT_EQ(c.disks[0].size, 64ull << 20);
        ASSERT_TRUE(c.disks[0].read_only);
        ASSERT_EQ(c.disks[0].speed, USB_SPEED_SUPER);
        ASSERT_STREQ(c.disks[0].serial, "S1");

        ASSERT_OK(emu_config_add_disk_spec(&c, "/tmp/b.img,lun=/tmp/b1.img,lun=/tmp/b2.img", &error));
        ASSERT_STREQ(c.disks[1].name, "disk1");
        ASSERT_EQ(c.disks[1].speed, USB_SPEED_HIGH);
        ASSERT_EQ(c.disks[1].n_extra_luns, 2);
        ASSERT_STREQ(c.disks[1].lun_images[1], "/tmp/b2.img");

        /* LUN 0 plus 15 more is the Bulk-Only maximum. */
        char spec[2048] = "/tmp/many.img";
        for (int i = 1; i <= 16; i++)
                snprintf(spec + strlen(spec), sizeof(spec) - strlen(spec), ",lun=/tmp/l%d.img", i);
        ASSERT_ERR(emu_config_add_disk_spec(&c, spec, &error), EINVAL);
        ASSERT_STREQ(error, "a disk has at most 16 LUNs");
        ASSERT_ERR(emu_config_add_disk_spec(&c, "/x,lun", &error), EINVAL);

        /* Each bad spec says what was wrong and adds nothing. */
        ASSERT_ERR(emu_config_add_disk_spec(&c, "size=64M", &error), EINVAL);
        ASSERT_STREQ(error, "a disk starts with its image path");
        ASSERT_ERR(emu_config_add_disk_spec(&c, "/x,size=1000", &error), EINVAL);
        ASSERT_TRUE(strstr(error, "multiple of 512"));
        ASSERT_ERR(emu_config_add_disk_spec(&c, "/x,vendor=WAYTOOLONGVENDOR", &error), EINVAL);
        ASSERT_TRUE(strstr(error, "8 characters"));
        ASSERT_ERR(emu_config_add_disk_spec(&c, "/x,speed=warp", &error), EINVAL);
        ASSERT_ERR(emu_config_add_disk_spec(&c, "/x,colour=blue", &error), EINVAL);
        ASSERT_STREQ(error, "unknown disk option");
        ASSERT_ERR(emu_config_add_disk_spec(&c, "/x,ro=maybe", &error), EINVAL);
        ASSERT_ERR(emu_config_add_disk_spec(&c, "/x,name=disk0", &error), EINVAL);
        ASSERT_STREQ(error, "two devices have the same name");
        ASSERT_ERR(emu_config_add_disk_spec(&c, "/x,serial=a\tb", &error), EINVAL);
        ASSERT_EQ(c.n_disks, 2);

        /* Enough to fill every root port of 8 vhci_hcd controllers (240 on Debian), and no more. */
        while (c.n_disks < EMU_CONFIG_MAX_DISKS) {
                char img[64];
                snprintf(img, sizeof(img), "/tmp/fleet%zu.img", c.n_disks);
                ASSERT_OK(emu_config_add_disk_spec(&c, img, &error));
        }
        ASSERT_ERR(emu_config_add_disk_spec(&c, "/tmp/one-too-many.img", &error), EINVAL);
        ASSERT_STREQ(error, "too many disks: at most 256");
        ASSERT_EQ(c.n_disks, 256);

        emu_config_done(&c);
}

static void test_ini(void) {
        EmuConfig c;
        const char *error = NULL;
        unsigned line = 0;

        emu_config_init(&c);
        ASSERT_OK(emu_config_load_string(&c,
                                         "# topology\n"
                                         "[emulator]\n"
                                         "listen = 127.0.0.1:4000\n"
                                         "attach = yes\n"
                                         "vhci-controller = 2\n"
                                         "\n"
                                         "[disk data]\n"
                                         "image = /tmp/data.img\n"
                                         "size = 1G\n"
                                         "serial = DATA1\n"
                                         "[disk boot]\n"
                                         "image = /tmp/boot.img\n"
                                         "lun = /tmp/boot1.img\n"
                                         "read-only = yes\n",
                                         &line, &error));
        ASSERT_STREQ(c.listen, "127.0.0.1:4000");
        ASSERT_TRUE(c.attach);
        ASSERT_EQ(c.vhci_controller, 2);
        ASSERT_EQ(c.n_disks, 2);
        ASSERT_STREQ(c.disks[0].name, "data");
        ASSERT_EQ(c.disks[0].size, 1ull << 30);
        ASSERT_STREQ(c.disks[1].name, "boot");
        ASSERT_TRUE(c.disks[1].read_only);
        ASSERT_EQ(c.disks[1].n_extra_luns, 1);
        emu_config_done(&c);

        /* The error names the line of the first problem. */
        emu_config_init(&c);
        ASSERT_ERR(emu_config_load_string(&c, "[emulator]\nattach = yes\n\n[disk x]\nimage = /a\nsize = lots\n",
                                          &line, &error),
                   EINVAL);
        ASSERT_EQ(line, 6);
        ASSERT_TRUE(strstr(error, "size"));
        emu_config_done(&c);

        emu_config_init(&c);
        ASSERT_ERR(emu_config_load_string(&c, "[emulator]\nbogus = 1\n", &line, &error), EINVAL);
        ASSERT_EQ(line, 2);
        ASSERT_STREQ(error, "unknown key in [emulator]");
        emu_config_done(&c);

        emu_config_init(&c);
        ASSERT_ERR(emu_config_load_string(&c, "[emulator]\nattach = yes\nthis is not ini\n", &line, &error), EINVAL);
        ASSERT_EQ(line, 3);
        emu_config_done(&c);

        emu_config_init(&c);
        ASSERT_ERR(emu_config_load_string(&c, "[printer]\nimage = /a\n", &line, &error), EINVAL);
        ASSERT_EQ(line, 2);
        emu_config_done(&c);

        /* A line longer than inih's buffer is refused, at its own line number. */
        {
                char text[2048] = "[emulator]\nattach = yes\n[disk a]\nimage = /";
                memset(text + strlen(text), 'x', 1500);
                strcat(text, "\nsize = 1M\n");
                emu_config_init(&c);
                ASSERT_ERR(emu_config_load_string(&c, text, &line, &error), EINVAL);
                ASSERT_EQ(line, 4);
                ASSERT_STREQ(error, "line too long");
                emu_config_done(&c);
        }

        /* A disk section without an image is incomplete, reported at the end. */
        emu_config_init(&c);
        ASSERT_ERR(emu_config_load_string(&c, "[disk a]\nsize = 1M\n", &line, &error), EINVAL);
        ASSERT_STREQ(error, "disk has no image path");
        emu_config_done(&c);

        emu_config_init(&c);
        ASSERT_ERR(emu_config_load_file(&c, "/nonexistent/emu.conf", &line, &error), ENOENT);
        ASSERT_EQ(line, 0);
        emu_config_done(&c);
}

static void test_tree(void) {
        EmuConfig c;
        const char *error = NULL;
        unsigned line = 0;

        emu_config_init(&c);
        ASSERT_OK(emu_config_load_string(&c,
                                         "[emulator]\nattach = yes\n"
                                         "[hub hub0]\nports = 4\n"
                                         "[disk data]\nimage = /tmp/d.img\nhub = hub0\nport = 2\n"
                                         "[keyboard kbd]\nhub = hub0\nport = 3\n",
                                         &line, &error));
        ASSERT_EQ(c.n_hubs, 1);
        ASSERT_EQ(c.hubs[0].ports, 4);
        ASSERT_EQ(c.hubs[0].controller, -1);
        ASSERT_STREQ(c.disks[0].hub, "hub0");
        ASSERT_EQ(c.disks[0].port, 2);
        ASSERT_STREQ(c.keyboards[0].hub, "hub0");
        ASSERT_EQ(c.keyboards[0].port, 3);
        ASSERT_OK(emu_config_check(&c, &error));
        emu_config_done(&c);

        emu_config_init(&c);
        ASSERT_OK(emu_config_add_hub_spec(&c, "h1,ports=7,wakeup,controller=3", &error));
        ASSERT_EQ(c.hubs[0].ports, 7);
        ASSERT_TRUE(c.hubs[0].wakeup);
        ASSERT_EQ(c.hubs[0].controller, 3);
        ASSERT_OK(emu_config_add_keyboard_spec(&c, "k1,hub=h1", &error));
        ASSERT_ERR(emu_config_add_hub_spec(&c, "h2,ports=16", &error), EINVAL);
        ASSERT_TRUE(strstr(error, "1 to 15"));
        ASSERT_ERR(emu_config_add_keyboard_spec(&c, "h1", &error), EINVAL); /* name taken by the hub */
        ASSERT_ERR(emu_config_add_keyboard_spec(&c, "k2,port=0", &error), EINVAL);
        ASSERT_ERR(emu_config_add_keyboard_spec(&c, "bad name!", &error), EINVAL);
        ASSERT_OK(emu_config_add_disk_spec(&c, "/tmp/x.img,hub=nohub", &error));
        ASSERT_ERR(emu_config_check(&c, &error), EINVAL);
        ASSERT_STREQ(error, "a disk names a hub that does not exist");
        emu_config_done(&c);

        emu_config_init(&c);
        ASSERT_ERR(emu_config_load_string(&c, "[hub h]\nports = 2\nspeed = fast\n", &line, &error), EINVAL);
        ASSERT_EQ(line, 3);
        emu_config_done(&c);
}

TEST_MAIN(TEST(test_parse_size), TEST(test_disk_spec), TEST(test_ini), TEST(test_tree))
