/* Holds as many host resources as the sandbox lets it, through libc:
 * descriptors of files (each read once, so the adapter also holds an input
 * stream), and directories (each listed once, so the adapter also holds a
 * directory stream). Each round ends at the first failure; everything is
 * then closed and the round repeated, to show nothing stayed held.
 * usage: hostile_limits DIR... (each DIR holds a file `f`) */
#include <dirent.h>

#include "guest.h"

#define CAP 2000

static int fds[CAP];
static DIR *dirs[CAP];

static void files(const char *dir, const char *round) {
    char path[512];
    snprintf(path, sizeof path, "%s/f", dir);
    int n = 0, err = 0;
    while (n < CAP) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            err = errno;
            break;
        }
        char c;
        if (read(fd, &c, 1) != 1) {
            err = errno;
            close(fd);
            break;
        }
        fds[n++] = fd;
    }
    printf("%s files %s: %d then %s\n", dir, round, n, n == CAP ? "cap" : ename(err));
    for (int i = 0; i < n; i++) {
        close(fds[i]);
    }
}

static void listings(const char *dir, const char *round) {
    int n = 0, err = 0;
    while (n < CAP) {
        errno = 0;
        DIR *d = opendir(dir);
        if (!d) {
            err = errno;
            break;
        }
        if (!readdir(d) && errno) {
            err = errno;
            closedir(d);
            break;
        }
        dirs[n++] = d;
    }
    printf("%s dirs %s: %d then %s\n", dir, round, n, n == CAP ? "cap" : ename(err));
    for (int i = 0; i < n; i++) {
        closedir(dirs[i]);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        files(argv[i], "first");
        files(argv[i], "again");
        listings(argv[i], "first");
        listings(argv[i], "again");
    }
    return 0;
}
