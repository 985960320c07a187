/* libimhost.a links into a plain C program (with pthread, dl and m) and runs an operation. */
#include <stdio.h>

#include "imhost.h"

int main(void) {
    imh_context *ctx = NULL;
    imh_volume *out = NULL;
    imh_view in;
    int16_t data[2 * 2 * 1 * 3] = {1, 2, 3, 4, /* t=0 */ 9, -1, 0, 5, /* t=1 */ 2, 8, 7, 6 /* t=2 */};
    double times[3] = {0.0, 1.0, 3.0};
    imh_view result;
    const int16_t *values;
    const int16_t expected[4] = {9, 8, 7, 6};
    int i, failures = 0;

    if (imh_context_new(&ctx) != IMH_STATUS_OK) return 1;
    in.data = data;
    in.dtype = IMH_DTYPE_I16;
    in.ndim = 4;
    in.shape[0] = 2; in.shape[1] = 2; in.shape[2] = 1; in.shape[3] = 3;
    in.strides[0] = 1; in.strides[1] = 2; in.strides[2] = 4; in.strides[3] = 4;
    in.geometry.spacing[0] = in.geometry.spacing[1] = in.geometry.spacing[2] = 1.0;
    in.geometry.origin[0] = in.geometry.origin[1] = in.geometry.origin[2] = 0.0;
    for (i = 0; i < 9; ++i) in.geometry.direction[i] = (i % 4 == 0) ? 1.0 : 0.0;
    in.frame_times = times;
    if (imh_mip(ctx, &in, NULL, &out) != IMH_STATUS_OK) {
        fprintf(stderr, "imh_mip: %s\n", imh_last_error_message());
        return 1;
    }
    imh_volume_get_view(out, &result);
    values = (const int16_t *)result.data;
    for (i = 0; i < 4; ++i) {
        if (values[i] != expected[i]) {
            fprintf(stderr, "voxel %d: %d, expected %d\n", i, values[i], expected[i]);
            ++failures;
        }
    }
    imh_volume_free(out);
    imh_context_free(ctx);
    printf("static library %s: %s\n", imh_version(), failures ? "FAILED" : "ok");
    return failures != 0;
}
