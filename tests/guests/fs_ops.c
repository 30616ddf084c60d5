/* Every wasi:filesystem descriptor method as libc reaches it through the
 * preview1 adapter, with its error cases. argv[1] is the working root.
 *   read-via-stream read()        write-via-stream write()
 *   append-via-stream O_APPEND    advise posix_fadvise   sync-data fdatasync
 *   get-flags fcntl(F_GETFL)      get-type/stat fstat    set-size ftruncate
 *   set-times futimens            read pread             write pwrite
 *   read-directory readdir        sync fsync             create-directory-at mkdirat
 *   stat-at fstatat               set-times-at utimensat link-at linkat
 *   open-at openat                readlink-at readlinkat remove-directory-at unlinkat(AT_REMOVEDIR)
 *   rename-at renameat            symlink-at symlinkat   unlink-file-at unlinkat
 *   metadata-hash(-at) st_ino / d_ino */
#include "guest.h"

#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

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

static const char *kind(mode_t m) {
    if (S_ISREG(m)) return "file";
    if (S_ISDIR(m)) return "dir";
    if (S_ISLNK(m)) return "symlink";
    return "other";
}

int main(int argc, char **argv) {
    if (argc > 1) {
        snprintf(root, sizeof root, "%s", argv[1]);
    }
    char buf[512];
    struct stat st, st2;
    ssize_t n;

    printf("-- open-at\n");
    TRY("mkdir ops", mkdir(P("ops"), 0755));
    int d = open(P("ops"), O_RDONLY | O_DIRECTORY);
    TRY("open ops O_DIRECTORY", d);
    int f = openat(d, "f", O_CREAT | O_EXCL | O_RDWR, 0644);
    TRY("openat f O_CREAT|O_EXCL|O_RDWR", f);
    TRY("openat f O_CREAT|O_EXCL again", openat(d, "f", O_CREAT | O_EXCL | O_RDWR, 0644));
    TRY("openat missing (no O_CREAT)", openat(d, "missing", O_RDONLY));
    TRY("openat f O_DIRECTORY", openat(d, "f", O_RDONLY | O_DIRECTORY));
    TRY("openat . O_WRONLY (a directory)", openat(d, ".", O_WRONLY));
    TRY("openat f/x (file as dir)", openat(d, "f/x", O_RDONLY));
    TRY("openat \"\" (empty path)", openat(d, "", O_RDONLY));
    TRY("openat f with a file descriptor as base", openat(f, "x", O_RDONLY));
    int sf = openat(d, "sync", O_CREAT | O_WRONLY | O_SYNC | O_DSYNC, 0644);
    TRY("openat sync O_CREAT|O_SYNC|O_DSYNC", sf);

    printf("-- write-via-stream, read-via-stream, append-via-stream\n");
    SHOW("write 11 bytes", "%zd", write(f, "hello world", 11));
    lseek(f, 0, SEEK_SET);
    n = read(f, buf, sizeof buf);
    SHOW("read back", "%zd \"%.*s\"", n, (int)(n > 0 ? n : 0), buf);
    SHOW("read at EOF", "%zd", read(f, buf, sizeof buf));
    int a = openat(d, "f", O_WRONLY | O_APPEND);
    TRY("openat f O_APPEND", a);
    SHOW("append 1 byte", "%zd", write(a, "!", 1));
    fstat(a, &st);
    SHOW("  size", "%lld", (long long)st.st_size);
    close(a);

    printf("-- read, write (positional)\n");
    SHOW("pwrite \"HE\" at 0", "%zd", pwrite(f, "HE", 2, 0));
    n = pread(f, buf, 5, 0);
    SHOW("pread 5 at 0", "%zd \"%.*s\"", n, (int)(n > 0 ? n : 0), buf);
    SHOW("pread at 1000 (past EOF)", "%zd", pread(f, buf, 5, 1000));
    TRY("pread on a directory", pread(d, buf, 5, 0));
    TRY("pwrite on a directory", pwrite(d, "x", 1, 0));

    printf("-- stat, get-type, metadata-hash\n");
    TRY("fstat f", fstat(f, &st));
    SHOW("  type, size, nlink", "%s %lld %lld", kind(st.st_mode), (long long)st.st_size,
         (long long)st.st_nlink);
    TRY("fstat ops", fstat(d, &st2));
    SHOW("  type", "%s", kind(st2.st_mode));
    SHOW("  f and ops have different st_ino", "%d", st.st_ino != st2.st_ino);

    printf("-- get-flags\n");
    SHOW("fcntl F_GETFL f has O_RDWR", "%d", (fcntl(f, F_GETFL) & O_ACCMODE) == O_RDWR);
    int rf = openat(d, "f", O_RDONLY);
    SHOW("fcntl F_GETFL O_RDONLY fd", "%d", (fcntl(rf, F_GETFL) & O_ACCMODE) == O_RDONLY);
    int flags = fcntl(sf, F_GETFL);
    SHOW("fcntl F_GETFL sync fd has O_SYNC, O_DSYNC", "%d %d", (flags & O_SYNC) == O_SYNC,
         (flags & O_DSYNC) == O_DSYNC);

    printf("-- set-size\n");
    TRY("ftruncate f 4", ftruncate(f, 4));
    fstat(f, &st);
    SHOW("  size", "%lld", (long long)st.st_size);
    TRY("ftruncate f 100000", ftruncate(f, 100000));
    fstat(f, &st);
    SHOW("  size", "%lld", (long long)st.st_size);
    TRY("ftruncate O_RDONLY fd", ftruncate(rf, 0));
    TRY("ftruncate a directory", ftruncate(d, 0));
    TRY("ftruncate f -1", ftruncate(f, -1));
    ftruncate(f, 4);

    printf("-- set-times, set-times-at\n");
    struct timespec t1[2] = {{1000, 5}, {2000, 6}};
    TRY("futimens f", futimens(f, t1));
    fstat(f, &st);
    SHOW("  atime, mtime", "%lld.%ld %lld.%ld", (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
         (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    struct timespec t2[2] = {{3000, 0}, {4000, 0}};
    TRY("utimensat(ops, f)", utimensat(d, "f", t2, 0));
    TRY("fstatat(ops, f)", fstatat(d, "f", &st, 0));
    SHOW("  mtime", "%lld", (long long)st.st_mtim.tv_sec);
    TRY("utimensat(ops, missing)", utimensat(d, "missing", t2, 0));
    struct timespec omit[2] = {{0, UTIME_OMIT}, {5000, 7}};
    TRY("futimens atime UTIME_OMIT, mtime 5000.7", futimens(f, omit));
    fstat(f, &st);
    SHOW("  atime, mtime", "%lld.%ld %lld.%ld", (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
         (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    TRY("utimensat(ops, f) UTIME_NOW, UTIME_OMIT", utimensat(d, "f", now, 0));
    fstatat(d, "f", &st, 0);
    SHOW("  atime is now, mtime kept", "%d %lld.%ld", st.st_atim.tv_sec > 1600000000,
         (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    TRY("utimensat(ops, f, NULL)", utimensat(d, "f", NULL, 0));
    fstatat(d, "f", &st, 0);
    SHOW("  atime, mtime are now", "%d %d", st.st_atim.tv_sec > 1600000000,
         st.st_mtim.tv_sec > 1600000000);
    TRY("futimens(f, NULL)", futimens(f, NULL));
    struct timespec bad[2] = {{1, 1000000000}, {1, 0}};
    TRY("utimensat nsec=1e9", utimensat(d, "f", bad, 0));

    printf("-- advise, sync, sync-data\n");
    SHOW("posix_fadvise f SEQUENTIAL", "%s", ename(posix_fadvise(f, 0, 0, POSIX_FADV_SEQUENTIAL)));
    SHOW("posix_fadvise on a directory", "%s", ename(posix_fadvise(d, 0, 0, POSIX_FADV_NORMAL)));
    TRY("fsync f", fsync(f));
    TRY("fdatasync f", fdatasync(f));
    TRY("fsync ops", fsync(d));

    printf("-- create-directory-at, remove-directory-at\n");
    TRY("mkdirat(ops, sub)", mkdirat(d, "sub", 0755));
    TRY("mkdirat(ops, sub) again", mkdirat(d, "sub", 0755));
    TRY("mkdirat(ops, missing/sub)", mkdirat(d, "missing/sub", 0755));
    TRY("mkdirat(ops, f/sub)", mkdirat(d, "f/sub", 0755));
    TRY("unlinkat(ops, sub, AT_REMOVEDIR)", unlinkat(d, "sub", AT_REMOVEDIR));
    TRY("unlinkat(ops, sub, AT_REMOVEDIR) again", unlinkat(d, "sub", AT_REMOVEDIR));
    TRY("unlinkat(ops, f, AT_REMOVEDIR)", unlinkat(d, "f", AT_REMOVEDIR));

    printf("-- symlink-at, readlink-at, stat-at\n");
    TRY("symlinkat(f, ops, lnk)", symlinkat("f", d, "lnk"));
    TRY("symlinkat(f, ops, lnk) again", symlinkat("f", d, "lnk"));
    n = readlinkat(d, "lnk", buf, sizeof buf);
    SHOW("readlinkat(ops, lnk)", "%zd \"%.*s\"", n, (int)(n > 0 ? n : 0), buf);
    TRY("readlinkat(ops, f) (not a link)", readlinkat(d, "f", buf, sizeof buf));
    TRY("fstatat(ops, lnk, AT_SYMLINK_NOFOLLOW)", fstatat(d, "lnk", &st, AT_SYMLINK_NOFOLLOW));
    SHOW("  type, size", "%s %lld", kind(st.st_mode), (long long)st.st_size);
    TRY("fstatat(ops, lnk) (follows)", fstatat(d, "lnk", &st, 0));
    SHOW("  type, size", "%s %lld", kind(st.st_mode), (long long)st.st_size);
    TRY("openat(ops, lnk, O_NOFOLLOW)", openat(d, "lnk", O_RDONLY | O_NOFOLLOW));
    TRY("fstatat(ops, missing)", fstatat(d, "missing", &st, 0));

    printf("-- link-at, metadata-hash-at\n");
    TRY("linkat(ops, f, ops, hard)", linkat(d, "f", d, "hard", 0));
    TRY("linkat(ops, f, ops, hard) again", linkat(d, "f", d, "hard", 0));
    TRY("linkat(ops, missing, ops, h2)", linkat(d, "missing", d, "h2", 0));
    TRY("mkdirat(ops, dd)", mkdirat(d, "dd", 0755));
    TRY("linkat(ops, dd, ops, dh) (a dir)", linkat(d, "dd", d, "dh", 0));
    fstatat(d, "f", &st, 0);
    fstatat(d, "hard", &st2, 0);
    SHOW("f and hard: same st_ino, nlink", "%d %lld", st.st_ino == st2.st_ino,
         (long long)st.st_nlink);

    printf("-- rename-at\n");
    TRY("renameat(ops, hard, ops, dd/moved)", renameat(d, "hard", d, "dd/moved"));
    TRY("renameat(ops, missing, ops, x)", renameat(d, "missing", d, "x"));
    TRY("renameat(ops, dd, ops, f) (dir over file)", renameat(d, "dd", d, "f"));
    TRY("renameat(ops, f, ops, dd) (file over dir)", renameat(d, "f", d, "dd"));
    TRY("mkdirat(ops, empty)", mkdirat(d, "empty", 0755));
    TRY("renameat(ops, empty, ops, dd) (over non-empty)", renameat(d, "empty", d, "dd"));

    printf("-- read-directory\n");
    int dd = openat(d, ".", O_RDONLY | O_DIRECTORY);
    DIR *dir = fdopendir(dd);
    int entries = 0;
    struct dirent *de;
    char names[512] = "";
    while ((de = readdir(dir)) != NULL) {
        entries++;
        if (strcmp(de->d_name, "f") == 0) {
            SHOW("  d_ino of f matches st_ino", "%d", de->d_ino == st.st_ino);
        }
        strncat(names, de->d_name, sizeof names - strlen(names) - 2);
        strcat(names, " ");
    }
    SHOW("readdir ops (sorted by the engine)", "%d: %s", entries, names);
    closedir(dir);
    TRY("opendir f (a file)", ({ DIR *x = opendir(P("ops/f")); x ? 0 : -1; }));

    printf("-- unlink-file-at\n");
    TRY("unlinkat(ops, lnk)", unlinkat(d, "lnk", 0));
    TRY("unlinkat(ops, lnk) again", unlinkat(d, "lnk", 0));
    TRY("unlinkat(ops, dd) (a dir)", unlinkat(d, "dd", 0));
    TRY("unlinkat(ops, f) while open", unlinkat(d, "f", 0));
    n = pread(f, buf, 4, 0);
    SHOW("  pread the open unlinked file", "%zd \"%.*s\"", n, (int)(n > 0 ? n : 0), buf);

    printf("-- cleanup\n");
    close(f);
    close(rf);
    close(sf);
    TRY("unlinkat(ops, sync)", unlinkat(d, "sync", 0));
    TRY("unlinkat(ops, dd/moved)", unlinkat(d, "dd/moved", 0));
    TRY("rmdir dd, empty", unlinkat(d, "dd", AT_REMOVEDIR) | unlinkat(d, "empty", AT_REMOVEDIR));
    close(d);
    TRY("close closed fd", close(d));
    TRY("rmdir ops", rmdir(P("ops")));
    printf("fs_ops: done\n");
    return 0;
}
