/* A tiny multi-tool guest for the host-side tests:
 *   tool args             print argv and the environment
 *   tool exit N           exit with status N
 *   tool trap             execute `unreachable`
 *   tool write PATH TEXT  create/replace PATH with TEXT
 *   tool cat PATH         print PATH (exit 1 with the errno name if it fails)
 *   tool ls PATH          print PATH's entries, one per line
 *   tool rm PATH          unlink PATH
 *   tool noop             nothing (the per-request benchmark's guest) */
#include "guest.h"

#include <dirent.h>

extern char **environ;

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "noop";
    if (strcmp(cmd, "args") == 0) {
        for (int i = 0; i < argc; i++) {
            printf("argv[%d]=%s\n", i, argv[i]);
        }
        for (char **e = environ; *e; e++) {
            printf("env %s\n", *e);
        }
        return 0;
    }
    if (strcmp(cmd, "exit") == 0 && argc > 2) {
        return atoi(argv[2]);
    }
    if (strcmp(cmd, "trap") == 0) {
        __builtin_trap();
    }
    if (strcmp(cmd, "write") == 0 && argc > 3) {
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, argv[3], strlen(argv[3])) < 0) {
            printf("write %s: %s\n", argv[2], ename(errno));
            return 1;
        }
        close(fd);
        return 0;
    }
    if (strcmp(cmd, "cat") == 0 && argc > 2) {
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) {
            printf("%s\n", ename(errno));
            return 1;
        }
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0) {
            fwrite(buf, 1, (size_t)n, stdout);
        }
        close(fd);
        return 0;
    }
    if (strcmp(cmd, "ls") == 0 && argc > 2) {
        DIR *d = opendir(argv[2]);
        if (!d) {
            printf("%s\n", ename(errno));
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                printf("%s\n", e->d_name);
            }
        }
        closedir(d);
        return 0;
    }
    if (strcmp(cmd, "rm") == 0 && argc > 2) {
        if (unlink(argv[2]) != 0) {
            printf("%s\n", ename(errno));
            return 1;
        }
        return 0;
    }
    return 0;
}
