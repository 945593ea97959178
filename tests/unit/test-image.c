/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "image.h"
#include "tests.h"

static char dir[] = "/tmp/drowse-test-image-XXXXXX";

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        return remove(path) < 0 ? -1 : 0;
}

static void cleanup(void) {
        (void) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *path_in_dir(const char *name) {
        static char buf[256];
        static bool made;
        if (!made) {
                if (!mkdtemp(dir))
                        TEST_FAIL("mkdtemp: %m");
                atexit(cleanup);
                made = true;
        }
        snprintf(buf, sizeof(buf), "%s/%s", dir, name);
        return buf;
}

static void test_create_sparse(void) {
        _cleanup_(image_freep) Image *img = NULL;
        const char *p = path_in_dir("sparse.img");
        struct stat st;

        ASSERT_ERR(image_open(p, 0, false, &img), ENOENT);
        ASSERT_OK(image_open(p, 64 << 20, false, &img));
        ASSERT_EQ(image_get_size(img), 64 << 20);
        ASSERT_EQ(image_get_n_blocks(img), (64 << 20) / 512);
        ASSERT_OK(stat(p, &st));
        ASSERT_EQ(st.st_size, 64 << 20);
        ASSERT_TRUE(st.st_blocks * 512 < 1 << 20); /* sparse */
}

static void test_reopen_keeps_size_and_data(void) {
        const char *p = path_in_dir("keep.img");
        uint8_t buf[512], back[512];

        for (size_t i = 0; i < sizeof(buf); i++)
                buf[i] = (uint8_t) (i * 7);
        {
                _cleanup_(image_freep) Image *img = NULL;
                ASSERT_OK(image_open(p, 1 << 20, false, &img));
                ASSERT_OK(image_write(img, 4096, buf, sizeof(buf)));
        }
        {
                /* A different create size never truncates or grows an existing image. */
                _cleanup_(image_freep) Image *img = NULL;
                ASSERT_OK(image_open(p, 512, false, &img));
                ASSERT_EQ(image_get_size(img), 1 << 20);
                ASSERT_OK(image_read(img, 4096, back, sizeof(back)));
                ASSERT_MEMEQ(buf, back, sizeof(buf));
        }
        {
                _cleanup_(image_freep) Image *img = NULL;
                ASSERT_OK(image_open(p, 0, true, &img));
                ASSERT_TRUE(image_is_read_only(img));
                ASSERT_ERR(image_write(img, 0, buf, sizeof(buf)), EROFS);
                ASSERT_OK(image_read(img, 4096, back, sizeof(back)));
                ASSERT_MEMEQ(buf, back, sizeof(buf));
                ASSERT_OK(image_flush(img));
        }
}

static void test_write_through(void) {
        /* A completed write is in the file for any other reader, without a flush. */
        _cleanup_(image_freep) Image *img = NULL;
        const char *p = path_in_dir("through.img");
        uint8_t buf[1000], back[1000];

        memset(buf, 0xa5, sizeof(buf));
        ASSERT_OK(image_open(p, 8192, false, &img));
        ASSERT_OK(image_write(img, 100, buf, sizeof(buf)));
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ASSERT_EQ(pread(fd, back, sizeof(back), 100), sizeof(back));
        close(fd);
        ASSERT_MEMEQ(buf, back, sizeof(buf));
        ASSERT_OK(image_flush(img));
}

static void test_symlink_refused(void) {
        _cleanup_(image_freep) Image *img = NULL;
        const char *target = path_in_dir("target.img");
        char link[256];

        ASSERT_OK(image_open(target, 4096, false, &img));
        img = image_free(img);
        snprintf(link, sizeof(link), "%s/link.img", dir);
        ASSERT_OK(symlink(target, link));
        ASSERT_ERR(image_open(link, 0, false, &img), ELOOP);
        ASSERT_ERR(image_open(link, 4096, false, &img), ELOOP);
        ASSERT_OK(image_open_full(link, 0, &(const ImageOptions) { .follow_symlinks = true }, &img));
        ASSERT_EQ(image_get_size(img), 4096);
        /* A dangling symlink is not created through either. */
        snprintf(link, sizeof(link), "%s/dangling.img", dir);
        ASSERT_OK(symlink(path_in_dir("nowhere.img"), link));
        Image *other = NULL;
        ASSERT_ERR(image_open(link, 4096, false, &other), ELOOP);
        ASSERT_TRUE(access(path_in_dir("nowhere.img"), F_OK) < 0);
}

static void test_bad_sizes(void) {
        Image *img = NULL;
        const char *p = path_in_dir("odd.img");

        ASSERT_ERR(image_open(path_in_dir("new-odd.img"), 1000, false, &img), EINVAL);
        int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(ftruncate(fd, 1000));
        close(fd);
        ASSERT_ERR(image_open(p, 0, false, &img), EINVAL);
        fd = open(path_in_dir("empty.img"), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        close(fd);
        ASSERT_ERR(image_open(path_in_dir("empty.img"), 0, false, &img), EINVAL);
        ASSERT_ERR(image_open(path_in_dir("."), 0, true, &img), EBADFD);
}

static void test_lock(void) {
        _cleanup_(image_freep) Image *img = NULL;
        const char *p = path_in_dir("locked.img");
        Image *second = NULL;

        ASSERT_OK(image_open(p, 4096, false, &img));
        /* flock() conflicts between open file descriptions, so a second open here is a second user. */
        ASSERT_ERR(image_open(p, 0, false, &second), EBUSY);
        ASSERT_ERR(image_open(p, 0, true, &second), EBUSY);

        pid_t pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                Image *child = NULL;
                _exit(image_open(p, 0, false, &child) == -EBUSY ? 0 : 1);
        }
        int status;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        img = image_free(img);
        ASSERT_OK(image_open(p, 0, false, &second));
        image_free(second);

        /* Readers share; a writer is kept out while they read. */
        _cleanup_(image_freep) Image *r1 = NULL, *r2 = NULL;
        ASSERT_OK(image_open(p, 0, true, &r1));
        ASSERT_OK(image_open(p, 0, true, &r2));
        ASSERT_ERR(image_open(p, 0, false, &second), EBUSY);
}

static void test_out_of_range(void) {
        _cleanup_(image_freep) Image *img = NULL;
        uint8_t buf[1024] = {};

        ASSERT_OK(image_open(path_in_dir("range.img"), 4096, false, &img));
        ASSERT_OK(image_read(img, 3072, buf, 1024));
        ASSERT_ERR(image_read(img, 3073, buf, 1024), ERANGE);
        ASSERT_ERR(image_write(img, 4096, buf, 1), ERANGE);
        ASSERT_OK(image_write(img, 4096, buf, 0));
        ASSERT_ERR(image_read(img, UINT64_MAX, buf, 2), ERANGE);
        ASSERT_ERR(image_write(img, UINT64_MAX - 1, buf, 1024), ERANGE);
}

static void test_free_null(void) {
        ASSERT_TRUE(image_free(NULL) == NULL);
}

TEST_MAIN(TEST(test_create_sparse), TEST(test_reopen_keeps_size_and_data),
          TEST(test_write_through), TEST(test_symlink_refused), TEST(test_bad_sizes), TEST(test_lock),
          TEST(test_out_of_range), TEST(test_free_null));
