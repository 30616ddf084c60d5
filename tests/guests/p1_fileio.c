/* The guest file I/O benchmark's guest (benches/preview1.rs): write 64 MiB
 * in 64 KiB blocks, read it back 4 times, then create, stat, list and
 * unlink 5,000 small files. Paths are relative to the working directory
 * (the preopen at `/`). Prints a checksum so every host must agree. */
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>

#include "guest.h"

#define BLOCK (64 * 1024)
#define BLOCKS 1024
#define FILES 5000

int main(void) {
    static char buf[BLOCK];
    for (int i = 0; i < BLOCK; i++) buf[i] = (char)(i * 31 + 7);
    uint64_t sum = 0;

    int fd = open("p1bench.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    for (int i = 0; i < BLOCKS; i++) {
        buf[0] = (char)i;
        if (write(fd, buf, BLOCK) != BLOCK) { perror("write"); return 1; }
    }
    for (int pass = 0; pass < 4; pass++) {
        lseek(fd, 0, SEEK_SET);
        ssize_t n;
        while ((n = read(fd, buf, BLOCK)) > 0) sum += (unsigned char)buf[0] + (unsigned char)buf[n - 1];
    }
    close(fd);
    unlink("p1bench.dat");

    char name[64];
    mkdir("p1small", 0755);
    for (int i = 0; i < FILES; i++) {
        snprintf(name, sizeof name, "p1small/f%05d", i);
        int f = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (f < 0 || write(f, name, 16) != 16) { perror("small"); return 1; }
        close(f);
    }
    struct stat st;
    for (int i = 0; i < FILES; i++) {
        snprintf(name, sizeof name, "p1small/f%05d", i);
        if (stat(name, &st) != 0) { perror("stat"); return 1; }
        sum += (uint64_t)st.st_size;
    }
    DIR *d = opendir("p1small");
    struct dirent *e;
    int listed = 0;
    while ((e = readdir(d))) listed++;
    closedir(d);
    for (int i = 0; i < FILES; i++) {
        snprintf(name, sizeof name, "p1small/f%05d", i);
        unlink(name);
    }
    rmdir("p1small");
    printf("sum=%llu listed=%d\n", (unsigned long long)sum, listed);
    return 0;
}
