/* Allocation-heavy guest: tens of thousands of malloc/realloc/free of
 * sizes from a byte to a few hundred KB, every block's contents checked
 * before it is resized or freed, and file round trips between the churn.
 * A heap that another owner (the preview1 adapter) also writes to shows
 * up here as a pattern error or a file that reads back wrong. argv[1] is
 * the working root. */
#include "guest.h"

#include <stdint.h>
#include <sys/stat.h>

#define SLOTS 600
#define OPS 40000

static char root[512] = "/";
static const char *P(const char *rel) {
    static char b[1024];
    size_t n = strlen(root);
    snprintf(b, sizeof b, "%s%s%s", root, (n && root[n - 1] == '/') ? "" : "/", rel);
    return b;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static size_t some_size(void) {
    uint32_t r = next() % 1000;
    if (r < 700) return 1 + next() % 256;
    if (r < 950) return 256 + next() % 16384;
    return 16384 + next() % (400 * 1024);
}

struct slot {
    unsigned char *p;
    size_t len;
    uint32_t seed;
};
static struct slot slots[SLOTS];

static unsigned char byte_of(uint32_t seed, size_t i) {
    return (unsigned char)(seed + i * 131 + (i >> 8));
}
static void fill(struct slot *s, size_t from) {
    for (size_t i = from; i < s->len; i++) s->p[i] = byte_of(s->seed, i);
}
static int intact(const struct slot *s, size_t upto) {
    for (size_t i = 0; i < upto; i++)
        if (s->p[i] != byte_of(s->seed, i)) return 0;
    return 1;
}

static long file_trips, file_errors;

/* Writes a live block to a file and reads it back into a fresh one. */
static void round_trip(struct slot *s, int k) {
    int fd = open(P("heap/block"), O_CREAT | O_TRUNC | O_RDWR, 0644);
    if (fd < 0 || write(fd, s->p, s->len) != (ssize_t)s->len) {
        file_errors++;
        close(fd);
        return;
    }
    unsigned char *back = malloc(s->len + k);
    size_t got = 0;
    ssize_t n;
    lseek(fd, 0, SEEK_SET);
    while (got < s->len && (n = read(fd, back + got, s->len + k - got)) > 0) got += (size_t)n;
    if (got != s->len || memcmp(back, s->p, s->len) != 0) file_errors++;
    free(back);
    close(fd);
    file_trips++;
}

int main(int argc, char **argv) {
    if (argc > 1) snprintf(root, sizeof root, "%s", argv[1]);
    printf("heap_churn: root=%s\n", root);
    TRY("mkdir heap", mkdir(P("heap"), 0755));
    long mallocs = 0, reallocs = 0, frees = 0, bad = 0, failed = 0;
    size_t live = 0, peak = 0, biggest = 0;
    for (int op = 0; op < OPS; op++) {
        struct slot *s = &slots[next() % SLOTS];
        if (s->p == NULL) {
            s->len = some_size();
            s->seed = next();
            s->p = malloc(s->len);
            if (s->p == NULL) {
                failed++;
                continue;
            }
            fill(s, 0);
            mallocs++;
            live += s->len;
        } else if (next() % 3 == 0) {
            if (!intact(s, s->len)) bad++;
            free(s->p);
            s->p = NULL;
            frees++;
            live -= s->len;
        } else {
            if (!intact(s, s->len)) bad++;
            size_t len = some_size();
            unsigned char *p = realloc(s->p, len);
            if (p == NULL) {
                failed++;
                continue;
            }
            s->p = p;
            size_t kept = len < s->len ? len : s->len;
            live = live - s->len + len;
            s->len = len;
            if (!intact(s, kept)) bad++;
            fill(s, kept);
            reallocs++;
        }
        if (s->p != NULL && s->len > biggest) biggest = s->len;
        if (live > peak) peak = live;
        if (op % 400 == 0 && s->p != NULL) round_trip(s, op % 7);
    }
    unsigned char *z = calloc(100000, 1);
    int zero = z != NULL;
    for (size_t i = 0; zero && i < 100000; i++) zero = z[i] == 0;
    free(z);
    for (int i = 0; i < SLOTS; i++) {
        if (slots[i].p != NULL) {
            if (!intact(&slots[i], slots[i].len)) bad++;
            free(slots[i].p);
            frees++;
        }
    }
    SHOW("operations", "%d", OPS);
    SHOW("malloc, realloc, free", "%ld %ld %ld", mallocs, reallocs, frees);
    SHOW("failed allocations", "%ld", failed);
    SHOW("blocks whose contents changed", "%ld", bad);
    SHOW("largest block over 300 KB", "%d", biggest > 300 * 1024);
    SHOW("peak live bytes over 2 MB", "%d", peak > 2 * 1024 * 1024);
    SHOW("calloc 100000 is zeroed", "%d", zero);
    SHOW("file round trips, errors", "%ld %ld", file_trips, file_errors);
    TRY("unlink heap/block", unlink(P("heap/block")));
    TRY("rmdir heap", rmdir(P("heap")));
    printf("heap_churn: done\n");
    return 0;
}
