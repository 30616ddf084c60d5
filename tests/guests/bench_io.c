/* The WASI benchmark's guest (benches/wasi.rs): writes 64 MiB in 64 KiB
 * blocks, reads it back 4 times, then creates, stats, lists and unlinks
 * 5,000 small files. argv[1] is the working root. Exits 1 on any error. */
#include "guest.h"

#include <dirent.h>
#include <sys/stat.h>

#define BLOCK (64 * 1024)
#define TOTAL (64 * 1024 * 1024)
#define FILES 5000

static char root[256] = "/";
static char block[BLOCK];

static const char *P(const char *rel) {
    static char buf[512];
    size_t n = strlen(root);
    snprintf(buf, sizeof buf, "%s%s%s", root, (n && root[n - 1] == '/') ? "" : "/", rel);
    return buf;
}

#define DIE(what)                                                      \
    do {                                                               \
        printf("bench_io: %s: %s\n", what, ename(errno));              \
        return 1;                                                      \
    } while (0)

int main(int argc, char **argv) {
    if (argc > 1) {
        snprintf(root, sizeof root, "%s", argv[1]);
    }
    for (int i = 0; i < BLOCK; i++) {
        block[i] = (char)(i * 7);
    }
    int fd = open(P("big"), O_CREAT | O_TRUNC | O_RDWR, 0644);
    if (fd < 0) DIE("open big");
    for (long off = 0; off < TOTAL; off += BLOCK) {
        if (write(fd, block, BLOCK) != BLOCK) DIE("write");
    }
    unsigned long sum = 0;
    for (int pass = 0; pass < 4; pass++) {
        if (lseek(fd, 0, SEEK_SET) != 0) DIE("lseek");
        long got = 0;
        ssize_t n;
        while ((n = read(fd, block, BLOCK)) > 0) {
            got += n;
            sum += (unsigned char)block[n - 1];
        }
        if (n < 0 || got != TOTAL) DIE("read");
    }
    close(fd);
    if (unlink(P("big")) != 0) DIE("unlink big");

    if (mkdir(P("many"), 0755) != 0) DIE("mkdir");
    char path[512];
    for (int i = 0; i < FILES; i++) {
        snprintf(path, sizeof path, "%s/f%05d", P("many"), i);
        int f = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (f < 0 || write(f, block, 100) != 100) DIE("create");
        close(f);
    }
    struct stat st;
    for (int i = 0; i < FILES; i++) {
        snprintf(path, sizeof path, "%s/f%05d", P("many"), i);
        if (stat(path, &st) != 0 || st.st_size != 100) DIE("stat");
    }
    DIR *d = opendir(P("many"));
    if (!d) DIE("opendir");
    int listed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        listed++;
    }
    closedir(d);
    if (listed != FILES + 2) DIE("readdir count");
    for (int i = 0; i < FILES; i++) {
        snprintf(path, sizeof path, "%s/f%05d", P("many"), i);
        if (unlink(path) != 0) DIE("unlink");
    }
    if (rmdir(P("many")) != 0) DIE("rmdir");
    printf("bench_io: ok %lu\n", sum);
    return 0;
}
