/* imh_perfusion_run from C, under valgrind by ctest.
 *
 * A small CT-perfusion study is built here: 24x24x2 voxels, 40 frames at 1 s, tissue at 30 HU
 * whose enhancement is a delayed, scaled gamma variate, and a 4x4 artery carrying a gamma-variate
 * AIF. CBV has a closed form the pipeline must reproduce: (k_H/rho)*100*AUC(tissue)/AUC(AIF).
 * Then: outputs and geometry, the report JSON, progress on the calling thread, cancellation
 * from the callback, and every bad argument. Then the CNN method with a model loaded once and
 * reused (the PyTorch-made fixture tests/fixtures/models/unet-tiny): deterministic maps in
 * range, no Tmax, and the model's own errors (missing folder, changed weights). LibTorch is never
 * mapped into this process: the network runs in imhost-model-worker. With the argument
 * `no-worker` (and IMHOST_MODEL_WORKER naming a missing file) the classical pipeline still works
 * and loading a model fails with IMH_STATUS_UNSUPPORTED. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imhost.h"

#include "check.h"

enum { NI = 24, NJ = 24, NK = 2, NT = 40 };
static float data[NT][NK][NJ][NI];
static double times[NT];

static double gamma_variate(double t, double t0) {
    double x = (t - t0) / 4.5;
    return t <= t0 ? 0.0 : x * x * x * exp(3.0 * (1.0 - x));
}

static int is_artery(int i, int j) { return i >= 4 && i < 8 && j >= 4 && j < 8; }

static void build(void) {
    for (int t = 0; t < NT; ++t) {
        times[t] = t;
        for (int k = 0; k < NK; ++k)
            for (int j = 0; j < NJ; ++j)
                for (int i = 0; i < NI; ++i)
                    data[t][k][j][i] = is_artery(i, j) ? (float)(40.0 + 400.0 * gamma_variate(t, 8.0))
                                                       : (float)(30.0 + 20.0 * gamma_variate(t, 10.0));
    }
}

static imh_view study_view(void) {
    imh_view v;
    memset(&v, 0, sizeof v);
    v.data = data;
    v.dtype = IMH_DTYPE_F32;
    v.ndim = 4;
    v.shape[0] = NI, v.shape[1] = NJ, v.shape[2] = NK, v.shape[3] = NT;
    v.strides[0] = 1, v.strides[1] = NI, v.strides[2] = NI * NJ, v.strides[3] = NI * NJ * NK;
    for (int a = 0; a < 3; ++a) v.geometry.spacing[a] = a == 2 ? 5.0 : 1.0;
    v.geometry.direction[0] = v.geometry.direction[4] = v.geometry.direction[8] = 1.0;
    v.frame_times = times;
    return v;
}

struct progress {
    pthread_t caller;
    int calls, monotone, on_caller, cancel_at;
    double last;
};

static bool on_progress(void *user, double fraction, const char *stage) {
    struct progress *p = (struct progress *)user;
    p->calls++;
    if (fraction < p->last || stage == NULL) p->monotone = 0;
    if (!pthread_equal(pthread_self(), p->caller)) p->on_caller = 0;
    p->last = fraction;
    return !(p->cancel_at && p->calls >= p->cancel_at);
}

/* Whether a library whose name contains `name` is mapped into this process. */
static int mapped(const char *name) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    if (!maps) return -1;
    while (fgets(line, sizeof line, maps))
        if (strstr(line, name)) found = 1;
    fclose(maps);
    return found;
}

int main(int argc, char **argv) {
    int no_worker = argc > 1 && strcmp(argv[1], "no-worker") == 0;
    imh_context *ctx = NULL;
    imh_perfusion_result *result = NULL;
    build();
    if (imh_context_new(&ctx) != IMH_STATUS_OK) return 1;
    imh_view view = study_view();
    imh_perfusion_options options;
    memset(&options, 0, sizeof options);
    options.struct_size = sizeof options;
    options.method = IMH_PERFUSION_METHOD_BSVD;
    options.flags = IMH_PERFUSION_NO_FILTER | IMH_PERFUSION_HAS_AGE | IMH_PERFUSION_HAS_NIHSS;
    options.age = 70;
    options.nihss = 15;
    struct progress progress = {pthread_self(), 0, 1, 1, 0, 0.0};
    imh_run_options run;
    memset(&run, 0, sizeof run);
    run.struct_size = sizeof run;
    run.progress = on_progress;
    run.progress_user_data = &progress;

    CHECK_STATUS(imh_perfusion_run(ctx, &view, &options, &run, &result), IMH_STATUS_OK);
    CHECK(progress.calls >= 1 && progress.monotone && progress.last == 1.0, "progress %d calls, last %g", progress.calls,
          progress.last);
    CHECK(progress.on_caller, "progress was reported on another thread");
    if (result) {
        const imh_volume *cbv = NULL, *core = NULL;
        imh_view cv, mv;
        CHECK_STATUS(imh_perfusion_result_volume(result, IMH_PERFUSION_CBV, &cbv), IMH_STATUS_OK);
        CHECK_STATUS(imh_perfusion_result_volume(result, IMH_PERFUSION_CORE, &core), IMH_STATUS_OK);
        CHECK_STATUS(imh_volume_get_view(cbv, &cv), IMH_STATUS_OK);
        CHECK_STATUS(imh_volume_get_view(core, &mv), IMH_STATUS_OK);
        CHECK(cv.dtype == IMH_DTYPE_F32 && cv.ndim == 3 && mv.dtype == IMH_DTYPE_U8, "dtypes %u %u", cv.dtype, mv.dtype);
        CHECK(memcmp(&cv.geometry, &view.geometry, sizeof view.geometry) == 0, "maps keep the input geometry");
        /* Closed form: CBV = (k_H/rho)*100*AUC(tissue)/AUC(AIF), baseline-subtracted, 1 s steps. */
        double at = 0, aa = 0;
        for (int t = 0; t < NT; ++t) {
            at += 20.0 * gamma_variate(t, 10.0);
            aa += 400.0 * gamma_variate(t, 8.0);
        }
        double expected = (0.55 / 0.75) / 1.05 * 100.0 * at / aa;
        const float *c = (const float *)cv.data;
        double got = c[20 + NI * 20]; /* a tissue voxel far from the artery */
        CHECK(fabs(got - expected) < 0.03 * expected, "CBV %g, expected %g", got, expected);
        const char *json = imh_perfusion_result_report_json(result);
        CHECK(json && strstr(json, "\"research_use_only\": true") && strstr(json, "\"method\": \"bsvd\""), "report JSON");
        CHECK(json && strstr(json, "\"dawn\""), "criteria present");
        CHECK_STATUS(imh_perfusion_result_volume(result, 0, &cbv), IMH_STATUS_INVALID_ARGUMENT);
        CHECK_STATUS(imh_perfusion_result_volume(result, 10, &cbv), IMH_STATUS_INVALID_ARGUMENT);
        CHECK_STATUS(imh_perfusion_result_volume(result, IMH_PERFUSION_CBF, NULL), IMH_STATUS_NULL_ARGUMENT);
    }
    imh_perfusion_result_free(result);
    result = NULL;

    /* Defaults (NULL options) work too. */
    CHECK_STATUS(imh_perfusion_run(ctx, &view, NULL, NULL, &result), IMH_STATUS_OK);
    imh_perfusion_result_free(result);
    result = NULL;

    /* Cancelled from the callback. */
    progress = (struct progress){pthread_self(), 0, 1, 1, 1, 0.0};
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &options, &run, &result), IMH_STATUS_CANCELLED);
    CHECK(result == NULL, "no result after cancellation");

    /* Bad arguments. */
    imh_perfusion_options bad = options;
    bad.method = 99;
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &bad, NULL, &result), IMH_STATUS_INVALID_ARGUMENT);
    bad = options;
    bad.struct_size = 0;
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &bad, NULL, &result), IMH_STATUS_INVALID_ARGUMENT);
    bad = options;
    bad.flags |= IMH_PERFUSION_MANUAL_AIF;
    bad.aif_voxel[0] = NI;
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &bad, NULL, &result), IMH_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(imh_last_error_message(), "outside the image") != NULL, "%s", imh_last_error_message());
    bad = options;
    bad.age = 300;
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &bad, NULL, &result), IMH_STATUS_INVALID_ARGUMENT);
    imh_view single = view;
    single.shape[3] = 1;
    CHECK_STATUS(imh_perfusion_run(ctx, &single, NULL, NULL, &result), IMH_STATUS_SHAPE);
    double backwards[NT];
    memcpy(backwards, times, sizeof times);
    backwards[5] = 2.0;
    imh_view unordered = view;
    unordered.frame_times = backwards;
    CHECK(imh_perfusion_run(ctx, &unordered, NULL, NULL, &result) != IMH_STATUS_OK, "non-increasing frame times");
    CHECK_STATUS(imh_perfusion_run(ctx, NULL, NULL, NULL, &result), IMH_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(imh_perfusion_run(ctx, &view, NULL, NULL, NULL), IMH_STATUS_NULL_ARGUMENT);
    CHECK(result == NULL, "no result on errors");
    CHECK(imh_perfusion_result_report_json(NULL) == NULL, "NULL result");
    imh_perfusion_result_free(NULL);

    /* The CNN: one model, two runs. */
    imh_model *model = NULL;
    imh_model_options mo;
    memset(&mo, 0, sizeof mo);
    mo.struct_size = sizeof mo;
    mo.device = "cpu";
    if (no_worker) {
        CHECK_STATUS(imh_model_load(ctx, IMHOST_FIXTURES "/unet-tiny", &mo, &model), IMH_STATUS_UNSUPPORTED);
        CHECK(strstr(imh_last_error_message(), "imhost-model-worker") != NULL, "%s", imh_last_error_message());
        CHECK(model == NULL && mapped("libtorch") == 0, "no model, no LibTorch");
        imh_context_free(ctx);
        printf("C perfusion ABI without the model worker: %d checks, %d failed\n", checks, failures);
        return failures != 0;
    }
    CHECK_STATUS(imh_model_load(ctx, IMHOST_FIXTURES "/unet-tiny", &mo, &model), IMH_STATUS_OK);
    const char *manifest = imh_model_manifest_json(model);
    CHECK(manifest && strstr(manifest, "\"id\": \"unet-tiny\""), "manifest JSON");
    imh_perfusion_options cnn;
    memset(&cnn, 0, sizeof cnn);
    cnn.struct_size = sizeof cnn;
    cnn.method = IMH_PERFUSION_METHOD_CNN;
    cnn.model = model;
    imh_perfusion_result *r1 = NULL, *r2 = NULL;
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &cnn, NULL, &r1), IMH_STATUS_OK);
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &cnn, NULL, &r2), IMH_STATUS_OK);
    if (r1 && r2) {
        const imh_volume *a = NULL, *b = NULL, *tmax = NULL;
        imh_view av, bv;
        CHECK_STATUS(imh_perfusion_result_volume(r1, IMH_PERFUSION_CBF, &a), IMH_STATUS_OK);
        CHECK_STATUS(imh_perfusion_result_volume(r2, IMH_PERFUSION_CBF, &b), IMH_STATUS_OK);
        CHECK_STATUS(imh_volume_get_view(a, &av), IMH_STATUS_OK);
        CHECK_STATUS(imh_volume_get_view(b, &bv), IMH_STATUS_OK);
        CHECK(memcmp(av.data, bv.data, sizeof(float) * NI * NJ * NK) == 0, "the same model gives the same maps");
        const float *cbf = (const float *)av.data;
        int in_range = 1;
        for (int n = 0; n < NI * NJ * NK; ++n) in_range &= cbf[n] >= 0.0f && cbf[n] <= 100.0f;
        CHECK(in_range, "CNN CBF within [0, the manifest's scale]");
        CHECK_STATUS(imh_perfusion_result_volume(r1, IMH_PERFUSION_TMAX, &tmax), IMH_STATUS_UNSUPPORTED);
        const char *json = imh_perfusion_result_report_json(r1);
        CHECK(json && strstr(json, "\"method\": \"cnn\"") && strstr(json, "unet-tiny"), "CNN report");
    }
    imh_perfusion_result_free(r1);
    imh_perfusion_result_free(r2);
    CHECK(mapped("libtorch") == 0 && mapped("libc10") == 0, "LibTorch stays out of this process");
    imh_perfusion_options no_model = cnn;
    no_model.model = NULL;
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &no_model, NULL, &result), IMH_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(imh_last_error_message(), "imh_model_load") != NULL, "%s", imh_last_error_message());
    imh_perfusion_options model_for_svd = options;
    model_for_svd.model = model;
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &model_for_svd, NULL, &result), IMH_STATUS_INVALID_ARGUMENT);
    imh_model_free(model);
    imh_model_free(NULL);
    imh_model *missing = NULL;
    CHECK_STATUS(imh_model_load(ctx, IMHOST_FIXTURES "/no-such-model", NULL, &missing), IMH_STATUS_IO);
    CHECK_STATUS(imh_model_load(ctx, NULL, NULL, &missing), IMH_STATUS_NULL_ARGUMENT);
    mo.precision = IMH_MODEL_PRECISION_BF16;
    imh_status half = imh_model_load(ctx, IMHOST_FIXTURES "/unet-tiny", &mo, &missing);
    CHECK(half == IMH_STATUS_UNSUPPORTED, "bf16 on the CPU is refused (%d)", (int)half);
    CHECK(missing == NULL, "no model on errors");
    imh_context_free(ctx);
    printf("C perfusion ABI: %d checks, %d failed\n", checks, failures);
    return failures != 0;
}
