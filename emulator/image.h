/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A disk image file behind one SCSI logical unit. Every completed write is in the file (write-through:
 * no caching here, so a kill -9 of the emulator loses nothing the host was told is written); image_flush()
 * makes it durable across a power cut (SYNCHRONIZE CACHE, FUA, WCE=0). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define IMAGE_BLOCK_SIZE 512U

typedef struct Image Image;

typedef struct ImageOptions {
        bool read_only;
        /* The final path component may be a symlink. Off by default: an image path in a config file that
         * silently points somewhere else is how a disk ends up written over the wrong file. */
        bool follow_symlinks;
} ImageOptions;

/* Where new images may be created, for the whole process: a disk spec with size= must not become a way
 * to create (or, through a chosen path, overwrite-by-creation) files anywhere the emulator may write.
 * dirs are absolute paths of existing directories; they are resolved now (symlinks, "..") and a new image
 * must then be created inside one of them, its parent directory resolved likewise. n == 0 (the default)
 * allows creation anywhere. Opening existing images is not restricted. Errors: -EINVAL a relative path,
 * -ENOTDIR not a directory, or what realpath() says (-ENOENT). Call before anything opens images. */
int image_set_create_directories(const char *const *dirs, size_t n);
/* -EPERM if a new image at path would be outside the directories above, 0 if allowed. */
int image_check_create_path(const char *path);

/* Opens (or, if create_size > 0 and the file is missing, creates sparse) the image at path.
 * An existing file is never truncated or grown: if create_size differs, its own size wins.
 * Errors: -ENOENT missing and create_size == 0 (or read-only), -ELOOP symlink, -EBADFD not a regular file,
 * -EINVAL size (or create_size) not a non-zero multiple of IMAGE_BLOCK_SIZE,
 * -EPERM the file is missing and would be created outside image_set_create_directories(),
 * -EBUSY the image is in use (locked by another open: flock, exclusive read-write, shared read-only). */
int image_open(const char *path, uint64_t create_size, bool read_only, Image **ret);
int image_open_full(const char *path, uint64_t create_size, const ImageOptions *options, Image **ret);

Image *image_free(Image *img);
DEFINE_TRIVIAL_CLEANUP_FUNC(Image *, image_free);

uint64_t image_get_size(const Image *img) _pure_;
uint64_t image_get_n_blocks(const Image *img) _pure_;
bool image_is_read_only(const Image *img) _pure_;
const char *image_get_path(const Image *img) _pure_;

/* Whole-range I/O: returns 0 once all len bytes moved, -ERANGE if [offset, offset+len) is not inside the
 * image, -EROFS writing a read-only image, -EIO if the file ended early, or the pread/pwrite errno. */
int image_read(Image *img, uint64_t offset, void *buf, size_t len);
int image_write(Image *img, uint64_t offset, const void *buf, size_t len);
/* fdatasync(): the data reached stable storage. */
int image_flush(Image *img);
