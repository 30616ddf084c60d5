/* Plain file work as programs do it: directories, a ~200 kB file written
 * in uneven pieces and read back in others, stat, append, overwrite in the
 * middle and by truncation, a hole, a sorted listing, renames, a directory
 * of 300 entries, and removing it all. argv[1] is the working root.
 * Every line is deterministic on any filesystem (the guest sorts what it
 * lists), so the transcript must match stock wasmtime-wasi's line for
 * line. */
#include "guest.h"

#include <dirent.h>
#include <sys/stat.h>

static char root[512] = "/";
static const char *P(const char *rel) {
    static char bufs[4][1024];
    static int next = 0;
    char *b = bufs[next];
    next = (next + 1) % 4;
    size_t n = strlen(root);
    snprintf(b, sizeof bufs[0], "%s%s%s", root, (n && root[n - 1] == '/') ? "" : "/", rel);
    return b;
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 31 + (i >> 9) + 7); }

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in a directory, sorted, without . and .. */
static void list(const char *what, const char *dir) {
    DIR *d = opendir(P(dir));
    if (d == NULL) {
        SHOW(what, "%s", ename(errno));
        return;
    }
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (n < 64) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp);
    char line[1024] = "";
    for (int i = 0; i < n; i++) {
        strncat(line, names[i], sizeof line - strlen(line) - 2);
        if (i + 1 < n) strcat(line, " ");
        free(names[i]);
    }
    SHOW(what, "%d [%s]", n, line);
}

static long long size_of(const char *rel) {
    struct stat st;
    if (stat(P(rel), &st) != 0) return -1;
    return (long long)st.st_size;
}

static void big_file(void) {
    printf("-- a 200 kB file in uneven pieces\n");
    const size_t total = 200 * 1024 + 17;
    unsigned char *data = malloc(total);
    for (size_t i = 0; i < total; i++) data[i] = pattern(i);
    int fd = open(P("work/big"), O_CREAT | O_EXCL | O_WRONLY, 0644);
    TRY("open work/big O_CREAT|O_EXCL|O_WRONLY", fd);
    static const size_t pieces[] = {1, 7, 4096, 65537, 333, 12289, 2, 40000};
    size_t off = 0, calls = 0;
    int short_writes = 0;
    while (off < total) {
        size_t want = pieces[calls % 8];
        if (want > total - off) want = total - off;
        ssize_t n = write(fd, data + off, want);
        if (n <= 0) {
            SHOW("write", "%s at %zu", ename(errno), off);
            break;
        }
        if ((size_t)n != want) short_writes++;
        off += (size_t)n;
        calls++;
    }
    SHOW("written", "%zu bytes in %zu calls, %d short", off, calls, short_writes);
    TRY("close", close(fd));
    SHOW("stat size", "%lld", size_of("work/big"));

    fd = open(P("work/big"), O_RDONLY);
    unsigned char *back = calloc(1, total + 100);
    static const size_t reads[] = {3, 1000, 70000, 1, 65536};
    size_t got = 0, rcalls = 0;
    for (;;) {
        ssize_t n = read(fd, back + got, reads[rcalls % 5]);
        if (n <= 0) break;
        got += (size_t)n;
        rcalls++;
    }
    SHOW("read back", "%zu bytes, %s", got, memcmp(data, back, total) == 0 ? "same" : "DIFFERENT");
    struct stat st;
    TRY("fstat", fstat(fd, &st));
    SHOW("  type, size, nlink", "%s %lld %lld", S_ISREG(st.st_mode) ? "file" : "other",
         (long long)st.st_size, (long long)st.st_nlink);
    close(fd);

    printf("-- append and overwrite\n");
    fd = open(P("work/big"), O_WRONLY | O_APPEND);
    TRY("open O_APPEND", fd);
    lseek(fd, 0, SEEK_SET);
    SHOW("append 4 bytes after seeking to 0", "%zd", write(fd, "tail", 4));
    close(fd);
    SHOW("  size", "%lld", size_of("work/big"));
    fd = open(P("work/big"), O_RDWR);
    SHOW("pwrite XYZ at 100000", "%zd", pwrite(fd, "XYZ", 3, 100000));
    char b[16] = {0};
    SHOW("pread 7 at 99998", "%zd", pread(fd, b, 7, 99998));
    SHOW("  XYZ in place, neighbours kept", "%d",
         memcmp(b + 2, "XYZ", 3) == 0 && (unsigned char)b[0] == pattern(99998) &&
             (unsigned char)b[6] == pattern(100004));
    SHOW("pread the appended tail", "%zd", pread(fd, b, 10, (off_t)total));
    SHOW("  tail", "%.4s", b);
    SHOW("lseek 1000 past the end", "%lld", (long long)lseek(fd, (off_t)total + 4 + 1000, SEEK_SET));
    SHOW("write 1 byte there", "%zd", write(fd, "!", 1));
    memset(b, 'x', sizeof b);
    pread(fd, b, 8, (off_t)total + 4 + 500);
    SHOW("  the hole reads as zeros", "%d", memcmp(b, "\0\0\0\0\0\0\0\0", 8) == 0);
    SHOW("lseek SEEK_END", "%lld", (long long)lseek(fd, 0, SEEK_END));
    close(fd);
    fd = open(P("work/big"), O_WRONLY | O_TRUNC);
    TRY("open O_TRUNC", fd);
    SHOW("write 5 bytes", "%zd", write(fd, "short", 5));
    close(fd);
    SHOW("  size", "%lld", size_of("work/big"));
    fd = open(P("work/big"), O_RDONLY);
    memset(b, 0, sizeof b);
    SHOW("read it all", "%zd \"%s\"", read(fd, b, sizeof b - 1), b);
    close(fd);
    free(data);
    free(back);
}

static void names_and_renames(void) {
    printf("-- a sorted listing\n");
    put(P("work/b"), "b");
    put(P("work/a"), "a");
    put(P("work/c10"), "c10");
    put(P("work/c2"), "c2");
    put(P("work/Z"), "Z");
    list("list work", "work");

    printf("-- renames\n");
    TRY("rename work/a -> work/a2", rename(P("work/a"), P("work/a2")));
    TRY("rename work/a (gone)", rename(P("work/a"), P("work/a3")));
    TRY("rename work/a2 -> work/sub/a (another dir)", rename(P("work/a2"), P("work/sub/a")));
    TRY("rename work/b -> work/c2 (replaces it)", rename(P("work/b"), P("work/c2")));
    int fd = open(P("work/c2"), O_RDONLY);
    char b[8] = {0};
    read(fd, b, sizeof b - 1);
    close(fd);
    SHOW("  work/c2 now holds", "\"%s\"", b);
    TRY("rename work/sub -> work/moved (a dir)", rename(P("work/sub"), P("work/moved")));
    SHOW("  work/moved/a size", "%lld", size_of("work/moved/a"));
    SHOW("  work/sub/a size", "%lld", size_of("work/sub/a"));
    TRY("rename work/c2 -> work/c2 (itself)", rename(P("work/c2"), P("work/c2")));
    list("list work", "work");
    list("list work/moved", "work/moved");
}

static void many(void) {
    printf("-- a directory of 300 entries\n");
    TRY("mkdir work/many", mkdir(P("work/many"), 0755));
    char rel[64], body[32];
    int made = 0;
    for (int i = 0; i < 300; i++) {
        snprintf(rel, sizeof rel, "work/many/e%03d", (i * 7) % 300);
        snprintf(body, sizeof body, "entry %d", (i * 7) % 300);
        int fd = open(P(rel), O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (fd >= 0 && write(fd, body, strlen(body)) == (ssize_t)strlen(body)) made++;
        close(fd);
    }
    SHOW("created", "%d", made);
    DIR *d = opendir(P("work/many"));
    int seen[300] = {0};
    int entries = 0, dots = 0, strange = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int k;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            dots++;
        } else if (sscanf(e->d_name, "e%d", &k) == 1 && k >= 0 && k < 300) {
            seen[k]++;
            entries++;
        } else {
            strange++;
        }
    }
    closedir(d);
    int once = 1;
    for (int i = 0; i < 300; i++) once &= seen[i] == 1;
    SHOW("readdir", "%d entries, each once: %d, dots %d, others %d", entries, once, dots, strange);
    int right = 0;
    for (int i = 0; i < 300; i++) {
        snprintf(rel, sizeof rel, "work/many/e%03d", i);
        snprintf(body, sizeof body, "entry %d", i);
        char got[32] = {0};
        int fd = open(P(rel), O_RDONLY);
        if (fd >= 0 && read(fd, got, sizeof got - 1) >= 0 && strcmp(got, body) == 0) right++;
        close(fd);
    }
    SHOW("contents read back right", "%d", right);
    TRY("rmdir work/many (not empty)", rmdir(P("work/many")));
    int gone = 0;
    for (int i = 0; i < 300; i++) {
        snprintf(rel, sizeof rel, "work/many/e%03d", i);
        if (unlink(P(rel)) == 0) gone++;
    }
    SHOW("unlinked", "%d", gone);
    list("list work/many", "work/many");
    TRY("rmdir work/many", rmdir(P("work/many")));
}

int main(int argc, char **argv) {
    if (argc > 1) snprintf(root, sizeof root, "%s", argv[1]);
    printf("fs_work: root=%s\n", root);
    printf("-- directories\n");
    TRY("mkdir work", mkdir(P("work"), 0755));
    TRY("mkdir work again", mkdir(P("work"), 0755));
    TRY("mkdir work/sub", mkdir(P("work/sub"), 0755));
    TRY("mkdir work/sub/deep", mkdir(P("work/sub/deep"), 0755));
    TRY("mkdir work/none/x (no parent)", mkdir(P("work/none/x"), 0755));
    struct stat st;
    TRY("stat work/sub", stat(P("work/sub"), &st));
    SHOW("  is a dir", "%d", S_ISDIR(st.st_mode));
    big_file();
    names_and_renames();
    many();

    printf("-- removing it all\n");
    TRY("rmdir work (not empty)", rmdir(P("work")));
    TRY("unlink work/moved (a dir)", unlink(P("work/moved")));
    TRY("rmdir work/big (a file)", rmdir(P("work/big")));
    static const char *files[] = {"work/big", "work/c10", "work/c2", "work/Z", "work/moved/a"};
    for (int i = 0; i < 5; i++) {
        char what[64];
        snprintf(what, sizeof what, "unlink %s", files[i]);
        TRY(what, unlink(P(files[i])));
    }
    TRY("unlink work/c2 again", unlink(P("work/c2")));
    TRY("rmdir work/moved/deep", rmdir(P("work/moved/deep")));
    TRY("rmdir work/moved", rmdir(P("work/moved")));
    TRY("rmdir work", rmdir(P("work")));
    TRY("stat work", stat(P("work"), &st));
    printf("fs_work: done\n");
    return 0;
}
