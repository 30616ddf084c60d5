/* A guest that misbehaves on purpose, for the run-limit tests:
 *   spin   loop forever in wasm code
 *   sleep  sleep forever (poll_oneoff / subscribe-duration)
 *   bomb   allocate 1 MiB blocks until malloc fails, touching each
 *   quick  print a line and exit 0 (a run well inside its limits) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Every block stays reachable from here, so the compiler cannot drop
 * the allocations. */
void *volatile kept;

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "quick";
    if (strcmp(mode, "spin") == 0) {
        printf("spinning\n");
        fflush(stdout);
        volatile unsigned long n = 0;
        for (;;) n++;
    }
    if (strcmp(mode, "sleep") == 0) {
        printf("sleeping\n");
        fflush(stdout);
        for (;;) {
            struct timespec ts = {.tv_sec = 1000000, .tv_nsec = 0};
            nanosleep(&ts, NULL);
        }
    }
    if (strcmp(mode, "bomb") == 0) {
        unsigned long mib = 0;
        for (;;) {
            char *p = malloc(1 << 20);
            if (!p) {
                printf("malloc failed after %lu MiB\n", mib);
                return 3;
            }
            memset(p, 1, 1 << 20);
            *(void **)p = kept;
            kept = p;
            mib++;
            if (mib > 8192) {
                printf("no limit after %lu MiB\n", mib);
                return 4;
            }
        }
    }
    printf("quick\n");
    return 0;
}
