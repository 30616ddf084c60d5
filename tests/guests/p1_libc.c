/* Preview1 through wasi-libc: what C programs reach beyond fs_ops.c --
 * readdir while the directory changes, seekdir/telldir, clocks and sleep
 * (poll_oneoff), getentropy (random_get), poll on files, fcntl flags,
 * posix_fallocate/fadvise, fsync, preadv/pwritev, stdio as a non-seekable
 * stream, argv and environ. Run by tests/preview1_guests.rs natively and
 * through the adapter; the lines where the two differ are listed there. */
#include <dirent.h>
#include <poll.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>

#include "guest.h"

static char path_buf[512];
static const char *root = "/";

static const char *p(const char *rel) {
    snprintf(path_buf, sizeof path_buf, "%s%s%s", root,
             root[strlen(root) - 1] == '/' ? "" : "/", rel);
    return path_buf;
}

static void readdir_while_changing(void) {
    char name[64];
    mkdir(p("p1/many"), 0755);
    for (int i = 0; i < 60; i++) {
        snprintf(name, sizeof name, "p1/many/f%02d", i);
        put(p(name), "x");
    }
    DIR *d = opendir(p("p1/many"));
    int seen[60] = {0};
    int extra = 0, read_before = 0;
    struct dirent *e;
    /* Read part of the listing, then change the directory: remove entries
     * already listed and entries not yet listed, add new ones. */
    while (read_before < 20 && (e = readdir(d))) {
        int i;
        if (sscanf(e->d_name, "f%d", &i) == 1) seen[i]++;
        read_before++;
    }
    long pos = telldir(d);
    for (int i = 0; i < 60; i += 7) {
        snprintf(name, sizeof name, "p1/many/f%02d", i);
        unlink(p(name));
    }
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "p1/many/new%d", i);
        put(p(name), "y");
    }
    while ((e = readdir(d))) {
        int i;
        if (sscanf(e->d_name, "f%d", &i) == 1) seen[i]++;
        else if (strncmp(e->d_name, "new", 3) == 0) extra++;
    }
    int once = 1;
    for (int i = 0; i < 60; i++)
        if (i % 7 != 0 && seen[i] != 1) once = 0;
    SHOW("readdir while changing: kept entries seen once", "%s", once ? "yes" : "no");
    SHOW("readdir while changing: new entries seen", "%d", extra);
    /* seekdir back to where we changed the directory. */
    seekdir(d, pos);
    int again = 0;
    while ((e = readdir(d))) again++;
    SHOW("seekdir(telldir) then read to the end: entries", "%d", again);
    closedir(d);
    for (int i = 0; i < 60; i++) {
        snprintf(name, sizeof name, "p1/many/f%02d", i);
        unlink(p(name));
    }
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "p1/many/new%d", i);
        unlink(p(name));
    }
    TRY("rmdir p1/many", rmdir(p("p1/many")));
}

static void clocks_and_random(void) {
    struct timespec a, b, res;
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct timespec nap = {0, 2 * 1000 * 1000};
    TRY("nanosleep 2 ms", nanosleep(&nap, NULL));
    clock_gettime(CLOCK_MONOTONIC, &b);
    int64_t ns = (int64_t)(b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec);
    SHOW("monotonic advanced by >= 2 ms", "%d", ns >= 2000000);
    clock_gettime(CLOCK_REALTIME, &a);
    SHOW("realtime is after 2020", "%d", a.tv_sec > 1577836800);
    TRY("clock_getres CLOCK_MONOTONIC", clock_getres(CLOCK_MONOTONIC, &res));
    unsigned char rnd[64] = {0};
    TRY("getentropy 64 bytes", getentropy(rnd, sizeof rnd));
    int nonzero = 0;
    for (int i = 0; i < 64; i++) nonzero |= rnd[i];
    SHOW("  bytes are not all zero", "%d", nonzero != 0);
}

static void descriptors(void) {
    put(p("p1/f"), "0123456789");
    int fd = open(p("p1/f"), O_RDWR | O_APPEND);
    int fl = fcntl(fd, F_GETFL);
    SHOW("fcntl F_GETFL has O_APPEND", "%d", (fl & O_APPEND) != 0);
    SHOW("fcntl F_GETFL is O_RDWR", "%d", (fl & O_ACCMODE) == O_RDWR);
    TRY("fcntl F_SETFL 0 (clear O_APPEND)", fcntl(fd, F_SETFL, 0));
    fl = fcntl(fd, F_GETFL);
    SHOW("  O_APPEND now", "%d", (fl & O_APPEND) != 0);
    TRY("posix_fadvise SEQUENTIAL", -posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL));
    TRY("fsync", fsync(fd));
    TRY("fdatasync", fdatasync(fd));
    int r = posix_fallocate(fd, 0, 100);
    SHOW("posix_fallocate 0..100", "%s", ename(r));
    struct stat st;
    fstat(fd, &st);
    SHOW("  size", "%lld", (long long)st.st_size);
    TRY("ftruncate 10", ftruncate(fd, 10));

    /* pwritev/preadv with three buffers. */
    struct iovec w[3] = {{"ab", 2}, {"", 0}, {"cdef", 4}};
    SHOW("pwritev 3 iovecs at 2", "%zd", pwritev(fd, w, 3, 2));
    char x[3] = {0}, y[2] = {0}, z[8] = {0};
    struct iovec rv[3] = {{x, 3}, {y, 2}, {z, 8}};
    ssize_t n = preadv(fd, rv, 3, 0);
    SHOW("preadv 3 iovecs at 0", "%zd", n);
    SHOW("  bytes", "%.3s|%.2s|%.5s", x, y, z);

    /* poll: a file is always ready. */
    struct pollfd pfd = {fd, POLLIN | POLLOUT, 0};
    int pr = poll(&pfd, 1, 1000);
    SHOW("poll file for in/out", "%d", pr);
    SHOW("  POLLIN", "%d", (pfd.revents & POLLIN) != 0);
    SHOW("  POLLOUT", "%d", (pfd.revents & POLLOUT) != 0);
    struct pollfd none = {-1, POLLIN, 0};
    SHOW("poll nothing for 3 ms", "%d", poll(&none, 1, 3));
    close(fd);

    /* stdio is a stream. */
    errno = 0;
    off_t off = lseek(1, 0, SEEK_CUR);
    SHOW("lseek on stdout", "%s", off < 0 ? ename(errno) : "ok");
    SHOW("isatty(1) (captured)", "%d", isatty(1));
    errno = 0;
    char c;
    SHOW("read from stdin (empty)", "%zd", read(0, &c, 1));
    TRY("unlink p1/f", unlink(p("p1/f")));
}

static void big_file(void) {
    size_t len = 3 * 1024 * 1024 + 123;
    char *buf = malloc(len);
    for (size_t i = 0; i < len; i++) buf[i] = (char)(i * 7 + i / 4096);
    int fd = open(p("p1/big"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    SHOW("write 3 MiB + 123 in one call", "%zd", write(fd, buf, len));
    char *back = malloc(len);
    lseek(fd, 0, SEEK_SET);
    size_t got = 0;
    ssize_t k;
    while ((k = read(fd, back + got, len - got)) > 0) got += (size_t)k;
    SHOW("read it back", "%zu bytes, %s", got, memcmp(buf, back, len) == 0 ? "matches" : "DIFFERS");
    close(fd);
    free(buf);
    free(back);
    TRY("unlink p1/big", unlink(p("p1/big")));
}

int main(int argc, char **argv) {
    if (argc > 1) root = argv[1];
    printf("p1_libc: root=%s argc=%d\n", root, argc);
    const char *v = getenv("P1_VAR");
    SHOW("getenv P1_VAR", "%s", v ? v : "(unset)");
    TRY("mkdir p1", mkdir(p("p1"), 0755));
    readdir_while_changing();
    clocks_and_random();
    descriptors();
    big_file();
    TRY("rmdir p1", rmdir(p("p1")));
    printf("p1_libc: done\n");
    return 0;
}
