/* What a guest sees of its preopens, printed so that a run under cowvfs
 * can be compared line for line with one under stock wasmtime-wasi with
 * the same preopens: the preopen table, what a descriptor number just past
 * it is, `..` out of a preopen, and where a deep relative path becomes too
 * long (which depends on what libc sends, i.e. on the preopen's name). */
#include <sys/socket.h>
#include <sys/stat.h>
#include <wasi/api.h>

#include "guest.h"

static void list_preopens(void) {
    for (__wasi_fd_t fd = 3;; fd++) {
        __wasi_prestat_t st;
        __wasi_errno_t e = __wasi_fd_prestat_get(fd, &st);
        if (e != 0) {
            printf("preopens end at fd %u (errno %u)\n", fd, e);
            return;
        }
        char name[256] = {0};
        size_t len = st.u.dir.pr_name_len;
        if (len >= sizeof name) {
            printf("preopen fd %u: name of %zu bytes\n", fd, len);
            continue;
        }
        e = __wasi_fd_prestat_dir_name(fd, (uint8_t *)name, len);
        printf("preopen fd %u: %s (errno %u)\n", fd, e ? "?" : name, e);
    }
}

/* The shortest relative path `deep/aaa.../aaa...` (of a missing file) that
 * open rejects with ENAMETOOLONG, and the errno one byte shorter. */
static void deep_boundary(void) {
    static char path[8192];
    int last = -1;
    for (size_t len = 3900; len < 4300; len++) {
        strcpy(path, "deep/");
        for (size_t i = 5; i < len; i++) {
            path[i] = (i % 100 == 99) ? '/' : 'a';
        }
        path[len] = 0;
        if (path[len - 1] == '/') {
            path[len - 1] = 'b';
        }
        errno = 0;
        int fd = open(path, O_RDONLY);
        int err = fd < 0 ? errno : 0;
        if (fd >= 0) {
            close(fd);
        }
        if (err == ENAMETOOLONG) {
            printf("%-52s -> %zu (below: %s)\n", "deep relative path too long at",
                   len, ename(last));
            return;
        }
        last = err;
    }
    printf("%-52s -> never (last: %s)\n", "deep relative path too long at", ename(last));
}

int main(int argc, char **argv) {
    list_preopens();
    for (int fd = 3; fd <= 5; fd++) {
        char what[64];
        snprintf(what, sizeof what, "shutdown(%d, SHUT_RD)", fd);
        TRY(what, shutdown(fd, SHUT_RD));
    }
    const char *box = argc > 1 ? argv[1] : "/sandbox";
    char path[512];
    snprintf(path, sizeof path, "%s/../etc/passwd", box);
    TRY("open(BOX/../etc/passwd)", open(path, O_RDONLY));
    snprintf(path, sizeof path, "%s/present", box);
    int fd = open(path, O_RDONLY);
    printf("%-52s -> %s\n", "open(BOX/present)", fd < 0 ? ename(errno) : "ok");
    if (fd >= 0) {
        char buf[64] = {0};
        ssize_t n = read(fd, buf, sizeof buf - 1);
        printf("%-52s -> %zd %s\n", "read(BOX/present)", n, buf);
        close(fd);
    }
    TRY("open(/etc/passwd)", open("/etc/passwd", O_RDONLY));
    TRY("chdir(BOX)", chdir(box));
    TRY("mkdir(deep)", mkdir("deep", 0755));
    deep_boundary();
    TRY("rmdir(deep)", rmdir("deep"));
    return 0;
}
