/* The generated header compiles as strict C99 (-std=c99 -Wpedantic -Werror), and the layout of
 * the structs that cross the boundary is the one the Rust side expects. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "imhost.h"

/* C99 has no _Static_assert: a negative array size fails the build instead. */
#define STATIC_CHECK(name, cond) typedef char static_check_##name[(cond) ? 1 : -1]

STATIC_CHECK(geometry_size, sizeof(imh_geometry) == 15 * sizeof(double));
STATIC_CHECK(view_data_first, offsetof(imh_view, data) == 0);
STATIC_CHECK(view_shape, offsetof(imh_view, shape) == sizeof(void *) + 8);
STATIC_CHECK(view_geometry, offsetof(imh_view, geometry) == sizeof(void *) + 8 + 64);
STATIC_CHECK(view_size, sizeof(imh_view) == 2 * sizeof(void *) + 8 + 64 + sizeof(imh_geometry));
STATIC_CHECK(options_size_first, offsetof(imh_run_options, struct_size) == 0);
STATIC_CHECK(status_width, sizeof(imh_status) == 4);
STATIC_CHECK(dtype_width, sizeof(imh_dtype) == 4);
STATIC_CHECK(ok_is_zero, IMH_STATUS_OK == 0);

int main(void) {
    char expected[64];
    snprintf(expected, sizeof expected, "%d.%d.%d", IMH_VERSION_MAJOR, IMH_VERSION_MINOR, IMH_VERSION_PATCH);
    if (strcmp(expected, imh_version()) != 0) {
        fprintf(stderr, "header says %s, library says %s\n", expected, imh_version());
        return 1;
    }
    return 0;
}
