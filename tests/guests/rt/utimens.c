/* utimensat and futimens for this wasi-libc, whose own versions leave the
 * timestamp arguments of the WASI call uninitialized when a time is
 * UTIME_NOW, UTIME_OMIT or the whole array is NULL. These fill every
 * argument and check the rest. They replace the archive members that
 * define __wasilibc_nocwd_utimensat (utimensat once the AT_FDCWD wrapper
 * has found the preopen) and futimens. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <wasi/api.h>

/* 0, or an errno. */
static int to_wasi(const struct timespec *times, __wasi_timestamp_t *atim,
                   __wasi_timestamp_t *mtim, __wasi_fstflags_t *flags) {
    *atim = 0;
    *mtim = 0;
    *flags = 0;
    if (times == NULL) {
        *flags = __WASI_FSTFLAGS_ATIM_NOW | __WASI_FSTFLAGS_MTIM_NOW;
        return 0;
    }
    const __wasi_fstflags_t now[2] = {__WASI_FSTFLAGS_ATIM_NOW, __WASI_FSTFLAGS_MTIM_NOW};
    const __wasi_fstflags_t set[2] = {__WASI_FSTFLAGS_ATIM, __WASI_FSTFLAGS_MTIM};
    __wasi_timestamp_t *out[2] = {atim, mtim};
    for (int i = 0; i < 2; i++) {
        long nsec = times[i].tv_nsec;
        if (nsec == UTIME_NOW) {
            *flags |= now[i];
        } else if (nsec == UTIME_OMIT) {
            /* Left as it is. */
        } else {
            if (nsec < 0 || nsec >= 1000000000L || times[i].tv_sec < 0 ||
                (uint64_t)times[i].tv_sec > (UINT64_MAX - (uint64_t)nsec) / 1000000000u) {
                return EINVAL;
            }
            *out[i] = (uint64_t)times[i].tv_sec * 1000000000u + (uint64_t)nsec;
            *flags |= set[i];
        }
    }
    return 0;
}

int __wasilibc_nocwd_utimensat(int fd, const char *path, const struct timespec times[2],
                               int flag) {
    __wasi_timestamp_t atim, mtim;
    __wasi_fstflags_t flags;
    int err = to_wasi(times, &atim, &mtim, &flags);
    if (err == 0 && (flag & ~AT_SYMLINK_NOFOLLOW) != 0) {
        err = EINVAL;
    }
    if (err == 0) {
        __wasi_lookupflags_t lookup =
            (flag & AT_SYMLINK_NOFOLLOW) ? 0 : __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW;
        err = __wasi_path_filestat_set_times(fd, lookup, path, atim, mtim, flags);
    }
    if (err != 0) {
        errno = err;
        return -1;
    }
    return 0;
}

int futimens(int fd, const struct timespec times[2]) {
    __wasi_timestamp_t atim, mtim;
    __wasi_fstflags_t flags;
    int err = to_wasi(times, &atim, &mtim, &flags);
    if (err == 0) {
        err = __wasi_fd_filestat_set_times(fd, atim, mtim, flags);
    }
    if (err != 0) {
        errno = err;
        return -1;
    }
    return 0;
}
