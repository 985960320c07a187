/* A C host built against the installed imhost: the version, a MIP computed here and by the
 * library, and an isolated plugin (the worker program is found in the installed bin/). */
#include <stdio.h>
#include <string.h>

#include "imhost.h"

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", IMH_VERSION_MAJOR, IMH_VERSION_MINOR, IMH_VERSION_PATCH);
    if (strcmp(imh_version(), expected) != 0) return fprintf(stderr, "version %s != %s\n", imh_version(), expected), 1;
    imh_context *ctx = NULL;
    if (imh_context_new(&ctx) != IMH_STATUS_OK) return 1;
    enum { N = 6, T = 3 };
    static float data[T][N];
    double times[T] = {0, 1, 2};
    for (int t = 0; t < T; ++t)
        for (int n = 0; n < N; ++n) data[t][n] = (float)((n * 7 + t * 5) % 11);
    imh_view v;
    memset(&v, 0, sizeof v);
    v.data = data, v.dtype = IMH_DTYPE_F32, v.ndim = 4;
    v.shape[0] = N, v.shape[1] = 1, v.shape[2] = 1, v.shape[3] = T;
    v.strides[0] = 1, v.strides[1] = N, v.strides[2] = N, v.strides[3] = N;
    v.geometry.spacing[0] = v.geometry.spacing[1] = v.geometry.spacing[2] = 1.0;
    v.geometry.direction[0] = v.geometry.direction[4] = v.geometry.direction[8] = 1.0;
    v.frame_times = times;
    imh_volume *mip = NULL;
    if (imh_mip(ctx, &v, NULL, &mip) != IMH_STATUS_OK) return fprintf(stderr, "%s\n", imh_last_error_message()), 1;
    imh_view out;
    imh_volume_get_view(mip, &out);
    for (int n = 0; n < N; ++n) {
        float m = data[0][n];
        for (int t = 1; t < T; ++t) m = data[t][n] > m ? data[t][n] : m;
        if (((const float *)out.data)[n] != m) return fprintf(stderr, "voxel %d\n", n), 1;
    }
    imh_volume_free(mip);

    const char *paths[] = {argv[1]};
    imh_registry_options ro;
    memset(&ro, 0, sizeof ro);
    ro.struct_size = sizeof ro;
    ro.paths = paths, ro.n_paths = 1, ro.isolate_all = true;
    imh_registry *r = NULL;
    if (imh_registry_open(ctx, &ro, &r) != IMH_STATUS_OK) return 1;
    const char *list = imh_registry_list_json(r);
    if (!strstr(list, "\"example.c-threshold\"") || !(strstr(list, "\"isolated\":true") || strstr(list, "\"isolated\": true"))) {
        return fprintf(stderr, "the isolated plugin did not load: %s\n", list), 1;
    }
    static float image[4 * 4 * 2];
    for (int n = 0; n < 32; ++n) image[n] = n < 8 ? 300.0f : 0.0f;
    imh_view iv = v;
    iv.data = image, iv.ndim = 3, iv.frame_times = NULL;
    iv.shape[0] = 4, iv.shape[1] = 4, iv.shape[2] = 2, iv.shape[3] = 1;
    iv.strides[0] = 1, iv.strides[1] = 4, iv.strides[2] = 16, iv.strides[3] = 32;
    imh_model_result *res = NULL;
    if (imh_registry_run(ctx, r, "example.c-threshold", &iv, 1, "{\"lower\": 200, \"min_voxels\": 1}", NULL, &res) != IMH_STATUS_OK) {
        return fprintf(stderr, "isolated run: %s\n", imh_last_error_message()), 1;
    }
    double volume = 0;
    imh_model_result_score(res, "volume_ml", &volume);
    if (volume != 8 * 0.001) return fprintf(stderr, "volume %g, expected 0.008 ml\n", volume), 1;
    imh_model_result_free(res);
    imh_registry_free(r);
    imh_context_free(ctx);
    printf("consumer_c: imhost %s from the installed package, MIP and an isolated plugin ok\n", imh_version());
    return 0;
}
