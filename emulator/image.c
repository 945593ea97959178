/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "image.h"
#include "log.h"

/* Resolved with realpath(), no trailing slash except for "/" itself. */
static char **create_dirs;
static size_t n_create_dirs;

static void free_create_dirs(void) {
        for (size_t i = 0; i < n_create_dirs; i++)
                free(create_dirs[i]);
        create_dirs = mfree(create_dirs);
        n_create_dirs = 0;
}

int image_set_create_directories(const char *const *dirs, size_t n) {
        char **resolved;
        int r;

        if (n == 0) {
                free_create_dirs();
                return 0;
        }
        resolved = calloc(n, sizeof(char *));
        if (!resolved)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                struct stat st;

                if (dirs[i][0] != '/')
                        r = -EINVAL;
                else if (!(resolved[i] = realpath(dirs[i], NULL)))
                        r = negative_errno();
                else if (stat(resolved[i], &st) < 0)
                        r = negative_errno();
                else
                        r = S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
                if (r < 0) {
                        for (size_t j = 0; j <= i; j++)
                                free(resolved[j]);
                        free(resolved);
                        return log_debug_errno(r, "%s: cannot use as an image directory: %m", dirs[i]);
                }
        }
        free_create_dirs();
        create_dirs = resolved;
        n_create_dirs = n;
        return 0;
}

static bool path_is_below(const char *path, const char *dir) {
        size_t len = strlen(dir);

        if (streq(dir, "/"))
                return true;
        return strneq(path, dir, len) && (path[len] == '/' || path[len] == 0);
}

int image_check_create_path(const char *path) {
        _cleanup_free_ char *copy = NULL, *parent = NULL;
        char *slash;

        if (n_create_dirs == 0)
                return 0;
        /* The file does not exist yet: resolve the directory it would be created in. */
        copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        slash = strrchr(copy, '/');
        if (!slash)
                parent = realpath(".", NULL);
        else if (slash == copy)
                parent = strdup("/");
        else {
                *slash = 0;
                parent = realpath(copy, NULL);
        }
        if (!parent)
                return -EPERM; /* a directory that does not resolve is not inside any allowed one */
        for (size_t i = 0; i < n_create_dirs; i++)
                if (path_is_below(parent, create_dirs[i]))
                        return 0;
        return log_debug_errno(EPERM, "%s: new images may only be created inside the image directories.",
                               path);
}

struct Image {
        int fd;
        uint64_t size;
        bool read_only;
        char *path;
};

static int image_open_fd(const char *path, uint64_t create_size, const ImageOptions *options,
                         bool *ret_created) {
        int flags = O_CLOEXEC | O_NOCTTY | (options->read_only ? O_RDONLY : O_RDWR) |
                    (options->follow_symlinks ? 0 : O_NOFOLLOW);

        /* Two rounds: the file may appear between our O_EXCL attempt and the plain open, or vanish
         * between them. Anything more contended than that is someone else's bug; report it. */
        for (unsigned attempt = 0; attempt < 2; attempt++) {
                int fd = open(path, flags);
                if (fd >= 0) {
                        *ret_created = false;
                        return fd;
                }
                if (errno != ENOENT || create_size == 0 || options->read_only)
                        return negative_errno();
                int r = image_check_create_path(path);
                if (r < 0)
                        return r;

                fd = open(path, flags | O_CREAT | O_EXCL, 0600);
                if (fd >= 0) {
                        *ret_created = true;
                        return fd;
                }
                if (errno != EEXIST)
                        return negative_errno();
        }
        return -EAGAIN;
}

int image_open_full(const char *path, uint64_t create_size, const ImageOptions *options, Image **ret) {
        static const ImageOptions defaults = {};
        _cleanup_close_ int fd = -EBADF;
        bool created = false;
        struct stat st;
        int r;

        if (!path || !ret)
                return -EINVAL;
        if (!options)
                options = &defaults;
        if (create_size % IMAGE_BLOCK_SIZE != 0 || create_size > (uint64_t) INT64_MAX)
                return log_debug_errno(EINVAL, "%s: size %" PRIu64 " is not a multiple of %u bytes.", path,
                                       create_size, IMAGE_BLOCK_SIZE);

        fd = image_open_fd(path, create_size, options, &created);
        if (fd < 0)
                return log_debug_errno(fd, "%s: cannot open image: %m", path);

        /* Lock before sizing a new file, so a racing second emulator sees "in use", not a 0-byte image.
         * flock() locks conflict between open file descriptions, even inside one process. Read-only users
         * share; a writer excludes everyone. */
        if (flock(fd, (options->read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
                r = negative_errno();
                if (r == -EWOULDBLOCK)
                        r = -EBUSY;
                return log_debug_errno(r, "%s: image in use: %m", path);
        }

        if (created && ftruncate(fd, (off_t) create_size) < 0) {
                r = negative_errno();
                (void) unlink(path);
                return log_debug_errno(r, "%s: cannot size new image: %m", path);
        }

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return log_debug_errno(EBADFD, "%s: not a regular file.", path);
        if (st.st_size <= 0 || (uint64_t) st.st_size % IMAGE_BLOCK_SIZE != 0)
                return log_debug_errno(EINVAL, "%s: size %jd is not a non-zero multiple of %u bytes.", path,
                                       (intmax_t) st.st_size, IMAGE_BLOCK_SIZE);
        if (!created && create_size != 0 && (uint64_t) st.st_size != create_size)
                log_debug("%s: existing image is %jd bytes, not the requested %" PRIu64 "; keeping it.",
                          path, (intmax_t) st.st_size, create_size);

        _cleanup_free_ char *p = strdup(path);
        if (!p)
                return -ENOMEM;
        Image *img = malloc(sizeof(*img));
        if (!img)
                return -ENOMEM;
        *img = (Image) {
                .fd = TAKE_FD(fd),
                .size = (uint64_t) st.st_size,
                .read_only = options->read_only,
                .path = TAKE_PTR(p),
        };
        *ret = img;
        return 0;
}

int image_open(const char *path, uint64_t create_size, bool read_only, Image **ret) {
        return image_open_full(path, create_size, &(const ImageOptions) { .read_only = read_only }, ret);
}

Image *image_free(Image *img) {
        if (!img)
                return NULL;
        safe_close(img->fd); /* drops the lock too */
        free(img->path);
        return mfree(img);
}

uint64_t image_get_size(const Image *img) {
        return img->size;
}

uint64_t image_get_n_blocks(const Image *img) {
        return img->size / IMAGE_BLOCK_SIZE;
}

bool image_is_read_only(const Image *img) {
        return img->read_only;
}

const char *image_get_path(const Image *img) {
        return img->path;
}

static bool image_range_ok(const Image *img, uint64_t offset, size_t len) {
        return offset <= img->size && len <= img->size - offset;
}

int image_read(Image *img, uint64_t offset, void *buf, size_t len) {
        uint8_t *p = buf;

        if (!image_range_ok(img, offset, len))
                return -ERANGE;

        while (len > 0) {
                ssize_t n = pread(img->fd, p, MIN(len, (size_t) SSIZE_MAX), (off_t) offset);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_debug_errno(errno, "%s: read at %" PRIu64 " failed: %m", img->path,
                                               offset);
                }
                if (n == 0) /* someone shrank the file under us */
                        return log_debug_errno(EIO, "%s: unexpected end of file at %" PRIu64 ".", img->path,
                                               offset);
                p += n;
                offset += (uint64_t) n;
                len -= (size_t) n;
        }
        return 0;
}

int image_write(Image *img, uint64_t offset, const void *buf, size_t len) {
        const uint8_t *p = buf;

        if (img->read_only)
                return -EROFS;
        if (!image_range_ok(img, offset, len))
                return -ERANGE;

        while (len > 0) {
                ssize_t n = pwrite(img->fd, p, MIN(len, (size_t) SSIZE_MAX), (off_t) offset);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_debug_errno(errno, "%s: write at %" PRIu64 " failed: %m", img->path,
                                               offset);
                }
                if (n == 0)
                        return log_debug_errno(EIO, "%s: write at %" PRIu64 " made no progress.", img->path,
                                               offset);
                p += n;
                offset += (uint64_t) n;
                len -= (size_t) n;
        }
        return 0;
}

int image_flush(Image *img) {
        if (img->read_only)
                return 0;
        if (fdatasync(img->fd) < 0)
                return log_debug_errno(errno, "%s: fdatasync failed: %m", img->path);
        return 0;
}
