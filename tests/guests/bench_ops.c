/* The per-operation guest of benches/guest_ops.rs: one phase of the
 * bench_io.c workload, COUNT times, and nothing else, so that a run's time
 * minus a run with COUNT 0 is COUNT operations.
 *
 *   bench_ops.wasm ROOT PHASE COUNT
 *
 * Each phase times only its own calls; whatever it needs to exist is made
 * beforehand by the phase named after it with a `setup-` prefix (which the
 * bench runs on the host through the Vfs API instead, untimed):
 *
 *   write64k N   open ROOT/big (create, truncate), N writes of 64 KiB, close
 *   read64k N    open ROOT/big, N reads of 64 KiB, close
 *                (setup-read64k N: ROOT/big with N blocks of 64 KiB)
 *   create N     N times: open ROOT/many/fNNNNN (create, truncate), write
 *                100 bytes, close      (setup-create: the directory many)
 *   stat N       N stats of ROOT/many/fNNNNN
 *   readdir N    opendir ROOT/many, readdir to the end (N + 2 entries),
 *                closedir
 *   unlink N     N unlinks of ROOT/many/fNNNNN
 *                (setup-stat, setup-readdir, setup-unlink N: many/ with the
 *                N files of `create`)
 *   all N        every phase above in order, each making what the next
 *                needs, then removes big and many: bench_io.c in small
 *
 * A COUNT of 0 does nothing but start and exit. Exits 1 on any error. */
#include "guest.h"

#include <dirent.h>
#include <sys/stat.h>

#define BLOCK (64 * 1024)
#define SMALL 100

static char root[256] = "/";
static char block[BLOCK];

static const char *P(const char *rel) {
    static char buf[512];
    size_t n = strlen(root);
    snprintf(buf, sizeof buf, "%s%s%s", root, (n && root[n - 1] == '/') ? "" : "/", rel);
    return buf;
}

/* The path of small file `i`, in a buffer of its own. */
static const char *F(int i) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/f%05d", P("many"), i);
    return buf;
}

#define DIE(what)                                                      \
    do {                                                               \
        printf("bench_ops: %s: %s\n", what, ename(errno));             \
        return 1;                                                      \
    } while (0)

static int write64k(long n) {
    int fd = open(P("big"), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) DIE("open big");
    for (long i = 0; i < n; i++) {
        if (write(fd, block, BLOCK) != BLOCK) DIE("write");
    }
    if (close(fd) != 0) DIE("close big");
    return 0;
}

static int read64k(long n) {
    int fd = open(P("big"), O_RDONLY);
    if (fd < 0) DIE("open big");
    for (long i = 0; i < n; i++) {
        if (read(fd, block, BLOCK) != BLOCK) DIE("read");
    }
    if (close(fd) != 0) DIE("close big");
    return 0;
}

static int create(long n) {
    for (long i = 0; i < n; i++) {
        int f = open(F(i), O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (f < 0 || write(f, block, SMALL) != SMALL) DIE("create");
        if (close(f) != 0) DIE("close");
    }
    return 0;
}

static int stats(long n) {
    struct stat st;
    for (long i = 0; i < n; i++) {
        if (stat(F(i), &st) != 0 || st.st_size != SMALL) DIE("stat");
    }
    return 0;
}

static int list(long n) {
    DIR *d = opendir(P("many"));
    if (!d) DIE("opendir");
    long listed = 0;
    while (readdir(d) != NULL) {
        listed++;
    }
    closedir(d);
    if (listed != n + 2) DIE("readdir count");
    return 0;
}

static int unlinks(long n) {
    for (long i = 0; i < n; i++) {
        if (unlink(F(i)) != 0) DIE("unlink");
    }
    return 0;
}

static int mkmany(void) {
    if (mkdir(P("many"), 0755) != 0) DIE("mkdir");
    return 0;
}

static int all(long n) {
    if (write64k(n) || read64k(n)) return 1;
    if (unlink(P("big")) != 0) DIE("unlink big");
    if (mkmany() || create(n) || stats(n) || list(n) || unlinks(n)) return 1;
    if (rmdir(P("many")) != 0) DIE("rmdir");
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        printf("usage: bench_ops ROOT PHASE COUNT\n");
        return 1;
    }
    snprintf(root, sizeof root, "%s", argv[1]);
    const char *phase = argv[2];
    long n = atol(argv[3]);
    if (n == 0) return 0;
    for (int i = 0; i < BLOCK; i++) {
        block[i] = (char)(i * 7);
    }
    if (!strcmp(phase, "write64k")) return write64k(n);
    if (!strcmp(phase, "read64k")) return read64k(n);
    if (!strcmp(phase, "create")) return create(n);
    if (!strcmp(phase, "stat")) return stats(n);
    if (!strcmp(phase, "readdir")) return list(n);
    if (!strcmp(phase, "unlink")) return unlinks(n);
    if (!strcmp(phase, "all")) return all(n);
    if (!strcmp(phase, "setup-read64k")) return write64k(n);
    if (!strcmp(phase, "setup-create")) return mkmany();
    if (!strcmp(phase, "setup-stat") || !strcmp(phase, "setup-readdir") ||
        !strcmp(phase, "setup-unlink"))
        return mkmany() || create(n);
    printf("bench_ops: unknown phase %s\n", phase);
    return 1;
}
