/* Helpers for cowvfs's own test guests: each line of output is
 * "what -> result", so a test can compare a whole transcript. */
#ifndef COWVFS_GUEST_H
#define COWVFS_GUEST_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *ename(int e) {
    switch (e) {
    case 0: return "ok";
    case EACCES: return "EACCES";
    case EBADF: return "EBADF";
    case EBUSY: return "EBUSY";
    case EDQUOT: return "EDQUOT";
    case EEXIST: return "EEXIST";
    case EFBIG: return "EFBIG";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case EISDIR: return "EISDIR";
    case ELOOP: return "ELOOP";
    case EMFILE: return "EMFILE";
    case EMLINK: return "EMLINK";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENFILE: return "ENFILE";
    case ENOENT: return "ENOENT";
    case ENOMEM: return "ENOMEM";
    case ENOSPC: return "ENOSPC";
    case ENOTDIR: return "ENOTDIR";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ENOTSUP: return "ENOTSUP";
    case EPERM: return "EPERM";
    case EROFS: return "EROFS";
    case EXDEV: return "EXDEV";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "errno%d", e);
        return buf;
    }
    }
}

/* Prints the outcome of a call that returns -1 on error. */
#define TRY(what, call)                                                    \
    do {                                                                   \
        errno = 0;                                                         \
        long r_ = (long)(call);                                            \
        printf("%-52s -> %s\n", what, r_ < 0 ? ename(errno) : "ok");      \
    } while (0)

/* Prints a value. */
#define SHOW(what, fmt, ...) printf("%-52s -> " fmt "\n", what, __VA_ARGS__)

__attribute__((unused)) static void put(const char *path, const char *data) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        printf("setup: open %s -> %s\n", path, ename(errno));
        return;
    }
    if (write(fd, data, strlen(data)) < 0) {
        printf("setup: write %s -> %s\n", path, ename(errno));
    }
    close(fd);
}

#endif
