/* Hostile guest: every way out of the sandbox or past its limits must end
 * in a precise errno. The host runs it with max_bytes 1 MiB, max_inodes
 * 300, max_open_files 32, a host-made symlink /abs_link -> /etc/passwd, a
 * read-only mount at /ro (holding "existing") and a writable one at /rw.
 * argv[1] is an absolute host path outside the sandbox. */
#include "guest.h"

#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

int main(int argc, char **argv) {
    const char *secret = argc > 1 ? argv[1] : "/etc/passwd";
    char buf[256];

    printf("-- escapes\n");
    TRY("mkdir /t", mkdir("/t", 0755));
    TRY("open <host file outside the sandbox>", open(secret, O_RDONLY));
    TRY("open /../etc/passwd", open("/../etc/passwd", O_RDONLY));
    int root = open("/", O_RDONLY | O_DIRECTORY);
    TRY("open / O_DIRECTORY", root);
    TRY("openat(/, ../etc/passwd)", openat(root, "../etc/passwd", O_RDONLY));
    TRY("openat(/, /etc/passwd) (libc resolves it from /)", openat(root, "/etc/passwd", O_RDONLY));
    TRY("openat(/, t/../../etc/passwd)", openat(root, "t/../../etc/passwd", O_RDONLY));
    TRY("mkdirat(/, ../escape)", mkdirat(root, "../escape", 0755));
    TRY("openat(/, .., O_DIRECTORY)", openat(root, "..", O_RDONLY | O_DIRECTORY));
    int t = openat(root, "t", O_RDONLY | O_DIRECTORY);
    TRY("openat(/, t, O_DIRECTORY)", t);
    TRY("openat(t, ../t/x, O_CREAT) climbs above t", openat(t, "../t/x", O_CREAT | O_WRONLY, 0644));
    TRY("symlink /etc/passwd <- /t/pw", symlink("/etc/passwd", "/t/pw"));
    TRY("open /abs_link (host-made, -> /etc/passwd)", open("/abs_link", O_RDONLY));
    TRY("readlink /abs_link", readlink("/abs_link", buf, sizeof buf));
    TRY("stat /abs_link (follows)", ({ struct stat st; stat("/abs_link", &st); }));
    TRY("symlink ../../etc/passwd <- /t/up", symlink("../../etc/passwd", "/t/up"));
    TRY("open /t/up (climbs out)", open("/t/up", O_RDONLY));
    TRY("symlinkat(t, ../../x, esc2)", symlinkat("../../x", t, "esc2"));
    TRY("openat(t, esc2, O_CREAT) through it", openat(t, "esc2", O_CREAT | O_WRONLY, 0644));

    printf("-- symlink loops and chains\n");
    TRY("symlink loop_b <- /t/loop_a", symlink("loop_b", "/t/loop_a"));
    TRY("symlink loop_a <- /t/loop_b", symlink("loop_a", "/t/loop_b"));
    TRY("open /t/loop_a", open("/t/loop_a", O_RDONLY));
    TRY("mkdir /t/loop_a/x", mkdir("/t/loop_a/x", 0755));
    put("/t/target", "chain end\n");
    for (int i = 0; i <= 40; i++) {
        char name[64], to[64];
        snprintf(name, sizeof name, "/t/c%02d", i);
        if (i == 40) {
            snprintf(to, sizeof to, "target");
        } else {
            snprintf(to, sizeof to, "c%02d", i + 1);
        }
        if (symlink(to, name) != 0) {
            printf("symlink %s -> %s\n", name, ename(errno));
        }
    }
    TRY("open /t/c00 (41 links)", open("/t/c00", O_RDONLY));
    int c1 = open("/t/c01", O_RDONLY);
    TRY("open /t/c01 (40 links)", c1);
    ssize_t n = read(c1, buf, sizeof buf);
    SHOW("  read through 40 links", "%zd", n);
    close(c1);

    printf("-- names\n");
    char name[300];
    strcpy(name, "/t/");
    memset(name + 3, 'n', 256);
    name[3 + 256] = 0;
    TRY("open 256-byte name O_CREAT", open(name, O_CREAT | O_WRONLY, 0644));
    TRY("mkdir 256-byte name", mkdir(name, 0755));
    TRY("symlink x <- 256-byte name", symlink("x", name));
    name[3 + 255] = 0;
    int f255 = open(name, O_CREAT | O_WRONLY, 0644);
    TRY("open 255-byte name O_CREAT", f255);
    close(f255);
    TRY("unlink 255-byte name", unlink(name));

    printf("-- directories into themselves\n");
    TRY("mkdir /t/d", mkdir("/t/d", 0755));
    TRY("mkdir /t/d/c", mkdir("/t/d/c", 0755));
    TRY("rename /t/d -> /t/d/c/x (own child)", rename("/t/d", "/t/d/c/x"));
    TRY("rename /t/d -> /t/d/x (itself)", rename("/t/d", "/t/d/x"));
    TRY("rmdir /t/d (not empty)", rmdir("/t/d"));
    TRY("rmdir / (the preopen)", rmdir("/"));

    printf("-- read-only descriptor\n");
    int ro = open("/t/target", O_RDONLY);
    TRY("open /t/target O_RDONLY", ro);
    TRY("write on it", write(ro, "x", 1));
    TRY("pwrite on it", pwrite(ro, "x", 1, 0));
    TRY("ftruncate on it", ftruncate(ro, 0));
    n = read(ro, buf, sizeof buf);
    SHOW("  content unchanged (bytes)", "%zd", n);
    close(ro);
    int wo = open("/t/target", O_WRONLY);
    TRY("read on O_WRONLY", read(wo, buf, 1));
    close(wo);

    printf("-- read-only mount\n");
    int e = open("/ro/existing", O_RDONLY);
    TRY("open /ro/existing O_RDONLY", e);
    n = read(e, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    SHOW("  content", "\"%s\"", buf);
    TRY("  write on it", write(e, "x", 1));
    close(e);
    TRY("open /ro/new O_CREAT", open("/ro/new", O_CREAT | O_WRONLY, 0644));
    TRY("open /ro/existing O_WRONLY", open("/ro/existing", O_WRONLY));
    TRY("open /ro/existing O_RDWR|O_TRUNC", open("/ro/existing", O_RDWR | O_TRUNC));
    TRY("mkdir /ro/d", mkdir("/ro/d", 0755));
    TRY("unlink /ro/existing", unlink("/ro/existing"));
    TRY("rename /ro/existing -> /ro/x", rename("/ro/existing", "/ro/x"));
    TRY("symlink x <- /ro/l", symlink("x", "/ro/l"));
    TRY("link /ro/existing -> /ro/h", link("/ro/existing", "/ro/h"));
    struct timespec ts[2] = {{1, 0}, {2, 0}};
    TRY("utimensat /ro/existing", utimensat(AT_FDCWD, "/ro/existing", ts, 0));
    TRY("open /ro/../t/target (climbs out of mount)", open("/ro/../t/target", O_RDONLY));
    int rodir = open("/ro", O_RDONLY | O_DIRECTORY);
    TRY("openat(/ro, ../t/target)", openat(rodir, "../t/target", O_RDONLY));
    close(rodir);

    printf("-- memory and mounts are different devices\n");
    put("/rw/made_by_guest", "hello host\n");
    /* Where a host allows these (stock wasmtime-wasi over one directory),
     * they are undone silently, so the lines after them still compare. */
    TRY("rename /t/target -> /rw/target", rename("/t/target", "/rw/target"));
    if (access("/rw/target", F_OK) == 0) rename("/rw/target", "/t/target");
    TRY("link /t/target -> /rw/hard", link("/t/target", "/rw/hard"));
    unlink("/rw/hard");
    TRY("rename /rw/made_by_guest -> /t/x", rename("/rw/made_by_guest", "/t/x"));
    if (access("/t/x", F_OK) == 0) rename("/t/x", "/rw/made_by_guest");
    TRY("rename /t/target -> /ro/target", rename("/t/target", "/ro/target"));
    TRY("symlink /etc/passwd <- /rw/pw", symlink("/etc/passwd", "/rw/pw"));
    TRY("open /rw/../t/target (climbs out of mount)", open("/rw/../t/target", O_RDONLY));

    printf("-- descriptor limit\n");
    int fds[64];
    int opened = 0;
    errno = 0;
    while (opened < 64) {
        int fd = open("/t/target", O_RDONLY);
        if (fd < 0) {
            break;
        }
        fds[opened++] = fd;
    }
    SHOW("open until it fails", "%d opened, then %s", opened, ename(errno));
    for (int i = 0; i < opened; i++) {
        close(fds[i]);
    }
    TRY("open after closing them", ({ int fd = open("/t/target", O_RDONLY); close(fd); fd; }));

    printf("-- inode limit\n");
    TRY("mkdir /t/many", mkdir("/t/many", 0755));
    int made = 0;
    errno = 0;
    for (;;) {
        char p[64];
        snprintf(p, sizeof p, "/t/many/%d", made);
        int fd = open(p, O_CREAT | O_WRONLY, 0644);
        if (fd < 0) {
            break;
        }
        close(fd);
        made++;
        if (made > 10000) {
            break;
        }
    }
    SHOW("create files until it fails", "stopped with %s", ename(errno));
    TRY("mkdir /t/many/dir", mkdir("/t/many/dir", 0755));
    TRY("symlink x <- /t/many/lnk", symlink("x", "/t/many/lnk"));
    rmdir("/t/many/dir");
    unlink("/t/many/lnk");
    for (int i = 0; i < made; i++) {
        char p[64];
        snprintf(p, sizeof p, "/t/many/%d", i);
        unlink(p);
    }
    TRY("rmdir /t/many after unlinking them", rmdir("/t/many"));

    printf("-- byte quota\n");
    static char block[65536];
    memset(block, 'q', sizeof block);
    int big = open("/t/big", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    TRY("open /t/big", big);
    errno = 0;
    for (int i = 0; i < 1000; i++) {
        if (write(big, block, sizeof block) < 0) {
            break;
        }
    }
    SHOW("write 64 KiB blocks until it fails", "stopped with %s", ename(errno));
    struct stat st;
    fstat(big, &st);
    SHOW("  size is under 1 MiB", "%d", st.st_size < (1 << 20));
    TRY("pwrite far past the end", pwrite(big, block, sizeof block, 1LL << 40));
    TRY("ftruncate 0", ftruncate(big, 0));
    TRY("write again after freeing", write(big, block, 4096));
    close(big);
    TRY("unlink /t/big", unlink("/t/big"));

    printf("hostile: done\n");
    return 0;
}
