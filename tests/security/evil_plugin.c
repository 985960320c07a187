/*
 * The attacker's library for imhost's security tests: its constructor runs the moment a host
 * dlopen()s it and leaves a marker file (the path is compiled in with -DMARKER="..."). If the
 * marker ever appears, the attacker's code ran in the host with the host's privileges.
 */
#include <stdio.h>

__attribute__((constructor)) static void pwn(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) {
        fputs("the attacker's constructor ran\n", f);
        fclose(f);
    }
}

/* Looks like a plugin, in case the host gets further than the constructor. */
__attribute__((visibility("default"))) const void *imhost_plugin_entry(const void *host) {
    (void)host;
    return 0;
}
