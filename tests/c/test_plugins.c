/* Plugins through the C ABI: the registry lists built-ins, the C, C++ and Rust example plugins
 * and a TorchScript package; runs them with values checked by hand; and walks the bad-plugin
 * matrix (wrong ABI major, older/newer minor, missing entry, NULL entry, invalid manifest,
 * duplicate id, a run error, a Rust panic, wrong output shape, a segfault under isolation, a
 * world-writable file) with the host alive and the good plugins usable afterwards.
 *
 * argv[1]: folder of the C/C++ plugins built by CMake; argv[2]: the Rust example plugin;
 * argv[3]: the misbehaving Rust test plugin; argv[4]: a scratch folder. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"

static char path_buf[8][1024];

static const char *join(int slot, const char *dir, const char *name) {
    snprintf(path_buf[slot], sizeof path_buf[slot], "%s/%s", dir, name);
    return path_buf[slot];
}

static imh_view view3(const float *data, int64_t ni, int64_t nj, int64_t nk) {
    imh_view v;
    memset(&v, 0, sizeof v);
    v.data = data;
    v.dtype = IMH_DTYPE_F32;
    v.ndim = 3;
    v.shape[0] = ni; v.shape[1] = nj; v.shape[2] = nk; v.shape[3] = 1;
    v.strides[0] = 1; v.strides[1] = ni; v.strides[2] = ni * nj; v.strides[3] = ni * nj * nk;
    v.geometry.spacing[0] = 1.0; v.geometry.spacing[1] = 1.0; v.geometry.spacing[2] = 2.0;
    v.geometry.direction[0] = v.geometry.direction[4] = v.geometry.direction[8] = 1.0;
    return v;
}

static imh_registry *open_registry(imh_context *ctx, const char **paths, size_t n, bool isolate) {
    imh_registry_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.paths = paths;
    o.n_paths = n;
    o.isolate_all = isolate;
    o.device = "cpu";
    imh_registry *r = NULL;
    CHECK_STATUS(imh_registry_open(ctx, &o, &r), IMH_STATUS_OK);
    return r;
}

static imh_status run(imh_context *ctx, imh_registry *r, const char *id, const imh_view *in, const char *options,
                      imh_model_result **out) {
    *out = NULL;
    return imh_registry_run(ctx, r, id, in, 1, options, NULL, out);
}

static const imh_view *result_view(imh_model_result *res, size_t index, const char *want, imh_view *v) {
    const imh_volume *vol = NULL;
    const char *name = NULL;
    CHECK_STATUS(imh_model_result_volume(res, index, &name, &vol), IMH_STATUS_OK);
    CHECK(name && strcmp(name, want) == 0, "volume %zu is %s, expected %s", index, name ? name : "(null)", want);
    CHECK_STATUS(imh_volume_get_view(vol, v), IMH_STATUS_OK);
    return v;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: test_plugins PLUGIN_DIR RUST_PLUGIN RUST_BAD_PLUGIN SCRATCH\n");
        return 2;
    }
    const char *dir = argv[1];
    imh_context *ctx = NULL;
    CHECK_STATUS(imh_context_new(&ctx), IMH_STATUS_OK);

    /* ---- happy path: every example listed and run ---------------------------------------- */
    const char *good[] = {join(0, dir, "libexample_c_threshold.so"), join(1, dir, "libexample_cpp_window.so"), argv[2],
                          join(2, dir, "libtest_good.so"), IMHOST_PACKAGES "/ts-lesion"};
    imh_registry *r = open_registry(ctx, good, 5, false);
    const char *list = imh_registry_list_json(r);
    const char *ids[] = {"\"mip\"", "\"perfusion-osvd\"", "\"example.c-threshold\"", "\"example.cpp-window\"",
                         "\"example.rust-smooth\"", "\"test.ts-lesion\"", "\"problems\": []"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) CHECK(list && strstr(list, ids[i]), "%s not listed", ids[i]);
    const char *manifest = NULL;
    CHECK_STATUS(imh_registry_manifest_json(r, "example.cpp-window", &manifest), IMH_STATUS_OK);
    CHECK(manifest && strstr(manifest, "\"width\""), "manifest of the C++ example lists its options");
    CHECK_STATUS(imh_registry_manifest_json(r, "no.such", &manifest), IMH_STATUS_INVALID_ARGUMENT);

    enum { NI = 8, NJ = 6, NK = 4, N = NI * NJ * NK };
    float *img = malloc(N * sizeof *img);
    for (int k = 0; k < NK; k++)
        for (int j = 0; j < NJ; j++)
            for (int i = 0; i < NI; i++) img[i + NI * (j + NJ * k)] = (i >= 2 && i < 5 && j >= 1 && j < 4 && k >= 1 && k < 3) ? 300.0f : (float)(i + j);
    imh_view in = view3(img, NI, NJ, NK);
    imh_model_result *res = NULL;
    double score = 0;
    imh_view out;

    /* C threshold: one 3×3×2 blob of 18 voxels of 1×1×2 mm = 0.036 ml. */
    CHECK_STATUS(run(ctx, r, "example.c-threshold", &in, "{\"lower\": 200}", &res), IMH_STATUS_OK);
    CHECK_STATUS(imh_model_result_score(res, "components", &score), IMH_STATUS_OK);
    CHECK(score == 1.0, "components %g", score);
    CHECK_STATUS(imh_model_result_score(res, "volume_ml", &score), IMH_STATUS_OK);
    CHECK(score > 0.036 - 1e-12 && score < 0.036 + 1e-12, "volume_ml %g", score);
    result_view(res, 0, "mask", &out);
    CHECK(out.dtype == IMH_DTYPE_U8 && ((const uint8_t *)out.data)[3 + NI * (2 + NJ * 1)] == 1, "mask value");
    CHECK_STATUS(imh_model_result_score(res, "nope", &score), IMH_STATUS_INVALID_ARGUMENT);
    imh_model_result_free(res);

    /* C++ window: clamp((x - (level - width/2)) / width, 0, 1). */
    CHECK_STATUS(run(ctx, r, "example.cpp-window", &in, "{\"level\": 5, \"width\": 10}", &res), IMH_STATUS_OK);
    result_view(res, 0, "windowed", &out);
    int wrong = 0, in_window = 0;
    for (int v = 0; v < N; v++) {
        double want = (img[v] - 0.0) / 10.0;
        want = want < 0 ? 0 : want > 1 ? 1 : want;
        if (img[v] >= 0 && img[v] <= 10) in_window++;
        if (((const float *)out.data)[v] - want > 1e-6 || want - ((const float *)out.data)[v] > 1e-6) wrong++;
    }
    CHECK(wrong == 0, "%d windowed voxels wrong", wrong);
    CHECK_STATUS(imh_model_result_score(res, "fraction_in_window", &score), IMH_STATUS_OK);
    CHECK(score == (double)in_window / N, "fraction_in_window %g vs %g", score, (double)in_window / N);
    imh_model_result_free(res);

    /* Rust smoothing with radius 0 is the identity. */
    CHECK_STATUS(run(ctx, r, "example.rust-smooth", &in, "{\"radius\": 0}", &res), IMH_STATUS_OK);
    result_view(res, 0, "smoothed", &out);
    CHECK(memcmp(out.data, img, N * sizeof *img) == 0, "radius 0 keeps the image");
    imh_model_result_free(res);

    /* In process the plugin reads the caller's buffer: no copy. */
    CHECK_STATUS(run(ctx, r, "test.echo", &in, NULL, &res), IMH_STATUS_OK);
    CHECK_STATUS(imh_model_result_score(res, "input_address", &score), IMH_STATUS_OK);
    CHECK((uintptr_t)score == (uintptr_t)img, "plugin saw %p, caller's buffer is %p", (void *)(uintptr_t)score, (void *)img);
    CHECK(imh_model_result_json(res) && strstr(imh_model_result_json(res), "input_address"), "result JSON");
    imh_model_result_free(res);

    /* TorchScript package: intensity = clip(x, 0, 100) / 100 away from block edges. */
    CHECK_STATUS(run(ctx, r, "test.ts-lesion", &in, NULL, &res), IMH_STATUS_OK);
    CHECK(imh_model_result_volume_count(res) == 3, "3 volumes, got %zu", imh_model_result_volume_count(res));
    imh_model_result_free(res);

    /* Errors from runs: bad options, a run error, wrong shape. */
    CHECK_STATUS(run(ctx, r, "example.c-threshold", &in, "{\"min_voxels\": 0}", &res), IMH_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(imh_last_error_message(), "outside"), "%s", imh_last_error_message());
    CHECK_STATUS(run(ctx, r, "example.c-threshold", &in, "[1]", &res), IMH_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(run(ctx, r, "test.fail", &in, NULL, &res), IMH_STATUS_MODEL);
    CHECK(strstr(imh_last_error_message(), "no lesion model for this scanner"), "%s", imh_last_error_message());
    CHECK_STATUS(run(ctx, r, "test.wrong-shape", &in, NULL, &res), IMH_STATUS_MODEL);
    CHECK(strstr(imh_last_error_message(), "did not produce its output"), "%s", imh_last_error_message());
    CHECK_STATUS(run(ctx, r, "mip", &in, NULL, &res), IMH_STATUS_SHAPE);
    imh_registry_free(r);

    /* ---- bad plugins at load: each a problem naming its file; the rest load ----------------- */
    const char *bad[] = {join(0, dir, "libexample_c_threshold.so"), join(1, dir, "libtest_bad_major.so"),
                         join(2, dir, "libtest_old_minor.so"), join(3, dir, "libtest_new_minor.so"),
                         join(4, dir, "libtest_no_entry.so"), join(5, dir, "libtest_null_entry.so"),
                         join(6, dir, "libtest_bad_manifest.so"), join(7, dir, "libtest_duplicate.so"), argv[3]};
    r = open_registry(ctx, bad, 9, false);
    list = imh_registry_list_json(r);
    const char *expect[] = {"built for plugin ABI 2.0", "exports no 'imhost_plugin_entry'", "licence file /opt/test/licence.key",
                            "invalid manifest JSON", "duplicate model id 'example.c-threshold'", "\"test.old-minor\"",
                            "\"test.new-minor-b\"", "\"test.rust-panic\""};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) CHECK(list && strstr(list, expect[i]), "list lacks %s", expect[i]);
    CHECK_STATUS(run(ctx, r, "test.old-minor", &in, NULL, &res), IMH_STATUS_OK);
    imh_model_result_free(res);
    CHECK_STATUS(run(ctx, r, "test.new-minor-a", &in, NULL, &res), IMH_STATUS_OK);
    imh_model_result_free(res);
    CHECK_STATUS(run(ctx, r, "test.rust-panic", &in, NULL, &res), IMH_STATUS_MODEL);
    CHECK(strstr(imh_last_error_message(), "panicked"), "%s", imh_last_error_message());
    CHECK_STATUS(run(ctx, r, "test.rust-error", &in, NULL, &res), IMH_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(run(ctx, r, "example.c-threshold", &in, "{\"lower\": 200}", &res), IMH_STATUS_OK);
    imh_model_result_free(res);
    imh_registry_free(r);

    /* ---- a segfaulting plugin under isolation ------------------------------------------- */
    const char *crash[] = {join(0, dir, "libtest_crash.so")};
    r = open_registry(ctx, crash, 1, true);
    CHECK_STATUS(run(ctx, r, "test.crash", &in, NULL, &res), IMH_STATUS_MODEL);
    CHECK(strstr(imh_last_error_message(), "SIGSEGV"), "%s", imh_last_error_message());
    CHECK_STATUS(run(ctx, r, "test.crash-ok", &in, NULL, &res), IMH_STATUS_OK);
    if (res) {
        result_view(res, 0, "out", &out);
        CHECK(memcmp(out.data, img, N * sizeof *img) == 0, "isolated copy equals the input");
    }
    imh_model_result_free(res);
    imh_registry_free(r);

    /* ---- a plugin that never returns is stopped at the run's time limit ----------------- */
    const char *hang[] = {join(0, dir, "libtest_hang.so")};
    r = open_registry(ctx, hang, 1, true);
    imh_run_options limited;
    memset(&limited, 0, sizeof limited);
    limited.struct_size = sizeof limited;
    limited.timeout_s = 0.5;
    res = NULL;
    CHECK_STATUS(imh_registry_run(ctx, r, "test.hang", &in, 1, NULL, &limited, &res), IMH_STATUS_TIMED_OUT);
    CHECK(res == NULL && strstr(imh_last_error_message(), "time limit of 0.5 s"), "%s", imh_last_error_message());
    /* The worker was stopped and is restarted for the next run. */
    CHECK_STATUS(imh_registry_run(ctx, r, "test.hang-ok", &in, 1, NULL, &limited, &res), IMH_STATUS_OK);
    imh_model_result_free(res);
    limited.timeout_s = -1.0;
    CHECK_STATUS(imh_registry_run(ctx, r, "test.hang-ok", &in, 1, NULL, &limited, &res), IMH_STATUS_INVALID_ARGUMENT);
    imh_registry_free(r);

    /* ---- a world-writable plugin file is refused ---------------------------------------- */
    const char *copy_path = join(0, argv[4], "libtest_world_writable.so");
    FILE *src = fopen(join(1, dir, "libtest_good.so"), "rb"), *dst = fopen(copy_path, "wb");
    CHECK(src && dst, "copy the test plugin");
    if (src && dst) {
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, src)) > 0) fwrite(buf, 1, n, dst);
    }
    if (src) fclose(src);
    if (dst) fclose(dst);
    chmod(copy_path, 0777);
    const char *ww[] = {copy_path};
    r = open_registry(ctx, ww, 1, false);
    list = imh_registry_list_json(r);
    CHECK(list && strstr(list, "writable by every user") && !strstr(list, "\"test.echo\""), "world-writable refused: %s", list);
    res = NULL;
    CHECK_STATUS(run(ctx, r, "test.echo", &in, NULL, &res), IMH_STATUS_INVALID_ARGUMENT);
    imh_registry_free(r);
    remove(copy_path);

    free(img);
    imh_context_free(ctx);
    printf("test_plugins: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
