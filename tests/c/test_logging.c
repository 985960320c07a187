/* Log routing, threads and memory limits of a context, from C, under valgrind by ctest.
 *
 * Every log record of a call must reach that call's context callback, on the calling thread,
 * from every thread the call uses: the MIP, the perfusion pipeline (its rayon workers log each
 * deconvolved chunk at TRACE), registry runs of a plugin that logs through host->log (in process
 * and isolated in a worker process), a CNN run. imh_context_set_threads sets the threads the
 * pipeline and LibTorch use (read back from the report); imh_context_set_memory_limit refuses a
 * study that needs more, and an oversized view is refused instead of aborting the process.
 *
 * argv[1]: the plugin folder (libexample_c_threshold.so). */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imhost.h"

#include "check.h"

enum { NI = 24, NJ = 24, NK = 2, NT = 40 };
static float study[NT][NK][NJ][NI];
static double times[NT];

static double gamma_variate(double t, double t0) {
    double x = (t - t0) / 4.5;
    return t <= t0 ? 0.0 : x * x * x * exp(3.0 * (1.0 - x));
}

static imh_view study_view(void) {
    for (int t = 0; t < NT; ++t) {
        times[t] = t;
        for (int k = 0; k < NK; ++k)
            for (int j = 0; j < NJ; ++j)
                for (int i = 0; i < NI; ++i) {
                    int artery = i >= 4 && i < 8 && j >= 4 && j < 8;
                    study[t][k][j][i] = artery ? (float)(40.0 + 400.0 * gamma_variate(t, 8.0))
                                               : (float)(30.0 + 20.0 * gamma_variate(t, 10.0));
                }
    }
    imh_view v;
    memset(&v, 0, sizeof v);
    v.data = study;
    v.dtype = IMH_DTYPE_F32;
    v.ndim = 4;
    v.shape[0] = NI, v.shape[1] = NJ, v.shape[2] = NK, v.shape[3] = NT;
    v.strides[0] = 1, v.strides[1] = NI, v.strides[2] = NI * NJ, v.strides[3] = NI * NJ * NK;
    v.geometry.spacing[0] = v.geometry.spacing[1] = 1.0;
    v.geometry.spacing[2] = 5.0;
    v.geometry.direction[0] = v.geometry.direction[4] = v.geometry.direction[8] = 1.0;
    v.frame_times = times;
    return v;
}

/* What the callback saw. */
struct sink {
    pthread_t caller;
    int records, off_thread, stages, chunks, plugin_lines, cnn_lines, mip_lines;
    char cnn[256];
};

static void on_log(void *user, imh_log_level level, const char *target, const char *message) {
    struct sink *s = (struct sink *)user;
    (void)level;
    (void)target;
    s->records++;
    if (!pthread_equal(pthread_self(), s->caller)) s->off_thread++;
    if (strstr(message, "perfusion stage done")) s->stages++;
    if (strstr(message, "deconvolved a chunk")) s->chunks++;
    if (strstr(message, "threshold [")) s->plugin_lines++;
    if (strstr(message, "temporal MIP done")) s->mip_lines++;
    if (strstr(message, "CNN inference")) {
        s->cnn_lines++;
        snprintf(s->cnn, sizeof s->cnn, "%s", message);
    }
}

static void reset(struct sink *s) {
    memset(s, 0, sizeof *s);
    s->caller = pthread_self();
}

static const char *join(const char *dir, const char *name) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static int report_threads(const char *json) {
    const char *at = json ? strstr(json, "\"threads\": ") : NULL;
    return at ? atoi(at + strlen("\"threads\": ")) : -1;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    imh_context *ctx = NULL;
    if (imh_context_new(&ctx) != IMH_STATUS_OK) return 1;
    struct sink sink;
    reset(&sink);
    CHECK_STATUS(imh_context_set_log_callback(ctx, on_log, &sink, IMH_LOG_TRACE), IMH_STATUS_OK);
    CHECK_STATUS(imh_context_set_threads(ctx, 2), IMH_STATUS_OK);
    imh_view view = study_view();

    /* ---- the MIP ------------------------------------------------------------------------- */
    imh_volume *mip = NULL;
    CHECK_STATUS(imh_mip(ctx, &view, NULL, &mip), IMH_STATUS_OK);
    imh_volume_free(mip);
    CHECK(sink.mip_lines == 1 && sink.off_thread == 0, "MIP: %d records, %d off the calling thread", sink.mip_lines,
          sink.off_thread);

    /* ---- the perfusion pipeline on two worker threads -------------------------------------- */
    reset(&sink);
    imh_perfusion_options po;
    memset(&po, 0, sizeof po);
    po.struct_size = sizeof po;
    po.method = IMH_PERFUSION_METHOD_BSVD;
    imh_perfusion_result *result = NULL;
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &po, NULL, &result), IMH_STATUS_OK);
    CHECK(sink.stages >= 6, "perfusion: %d stage records", sink.stages);
    CHECK(sink.chunks >= 1, "perfusion: %d records from the worker threads' deconvolution", sink.chunks);
    CHECK(sink.off_thread == 0, "%d of %d records came on another thread", sink.off_thread, sink.records);
    CHECK(report_threads(imh_perfusion_result_report_json(result)) == 2, "the pipeline ran on 2 threads: %d",
          report_threads(imh_perfusion_result_report_json(result)));
    imh_perfusion_result_free(result);
    result = NULL;
    CHECK_STATUS(imh_context_set_threads(ctx, 1), IMH_STATUS_OK);
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &po, NULL, &result), IMH_STATUS_OK);
    CHECK(report_threads(imh_perfusion_result_report_json(result)) == 1, "then on 1");
    imh_perfusion_result_free(result);
    result = NULL;
    CHECK_STATUS(imh_context_set_threads(ctx, 5000), IMH_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(imh_context_set_threads(ctx, 2), IMH_STATUS_OK);

    /* ---- a plugin's host->log, in process and isolated ---------------------------------------- */
    static float image[8 * 8 * 4];
    for (int n = 0; n < 8 * 8 * 4; ++n) image[n] = n % 7 == 0 ? 300.0f : 20.0f;
    imh_view iv;
    memset(&iv, 0, sizeof iv);
    iv.data = image;
    iv.dtype = IMH_DTYPE_F32;
    iv.ndim = 3;
    iv.shape[0] = 8, iv.shape[1] = 8, iv.shape[2] = 4, iv.shape[3] = 1;
    iv.strides[0] = 1, iv.strides[1] = 8, iv.strides[2] = 64, iv.strides[3] = 256;
    iv.geometry.spacing[0] = iv.geometry.spacing[1] = iv.geometry.spacing[2] = 1.0;
    iv.geometry.direction[0] = iv.geometry.direction[4] = iv.geometry.direction[8] = 1.0;
    const char *paths[] = {join(argv[1], "libexample_c_threshold.so")};
    for (int isolate = 0; isolate < 2; ++isolate) {
        imh_registry_options ro;
        memset(&ro, 0, sizeof ro);
        ro.struct_size = sizeof ro;
        ro.paths = paths;
        ro.n_paths = 1;
        ro.isolate_all = isolate;
        imh_registry *r = NULL;
        CHECK_STATUS(imh_registry_open(ctx, &ro, &r), IMH_STATUS_OK);
        reset(&sink);
        imh_model_result *res = NULL;
        CHECK_STATUS(imh_registry_run(ctx, r, "example.c-threshold", &iv, 1, "{\"lower\": 200}", NULL, &res), IMH_STATUS_OK);
        CHECK(sink.plugin_lines == 1, "%s: the plugin's log line reached the callback %d times",
              isolate ? "isolated" : "in process", sink.plugin_lines);
        CHECK(sink.off_thread == 0, "%s: %d records on another thread", isolate ? "isolated" : "in process", sink.off_thread);
        imh_model_result_free(res);
        imh_registry_free(r);
    }

    /* ---- a CNN run: LibTorch uses the context's threads --------------------------------------- */
    imh_model *model = NULL;
    imh_model_options mo;
    memset(&mo, 0, sizeof mo);
    mo.struct_size = sizeof mo;
    mo.device = "cpu";
    CHECK_STATUS(imh_model_load(ctx, IMHOST_FIXTURES "/unet-tiny", &mo, &model), IMH_STATUS_OK);
    imh_perfusion_options cnn;
    memset(&cnn, 0, sizeof cnn);
    cnn.struct_size = sizeof cnn;
    cnn.method = IMH_PERFUSION_METHOD_CNN;
    cnn.model = model;
    reset(&sink);
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &cnn, NULL, &result), IMH_STATUS_OK);
    CHECK(sink.cnn_lines == 1 && strstr(sink.cnn, "cpu_threads=2"), "CNN record: %s", sink.cnn);
    CHECK(sink.off_thread == 0, "CNN: %d records on another thread", sink.off_thread);
    imh_perfusion_result_free(result);
    result = NULL;
    imh_model_free(model);

    /* ---- memory limits --------------------------------------------------------------------- */
    CHECK_STATUS(imh_context_set_memory_limit(ctx, 64 * 1024), IMH_STATUS_OK);
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &po, NULL, &result), IMH_STATUS_TOO_LARGE);
    CHECK(result == NULL && strstr(imh_last_error_message(), "MiB may be allocated"), "%s", imh_last_error_message());
    CHECK_STATUS(imh_mip(ctx, &view, NULL, &mip), IMH_STATUS_OK); /* 4.6 KB fit */
    imh_volume_free(mip);
    CHECK_STATUS(imh_context_set_memory_limit(ctx, 0), IMH_STATUS_OK);
    CHECK_STATUS(imh_perfusion_run(ctx, &view, &po, NULL, &result), IMH_STATUS_OK);
    imh_perfusion_result_free(result);
    /* A view of 40000x40000x100 voxels over 2 frames made of zero strides: 320 GB of output. */
    imh_view huge = view;
    huge.dtype = IMH_DTYPE_I16;
    huge.shape[0] = 40000, huge.shape[1] = 40000, huge.shape[2] = 100, huge.shape[3] = 2;
    huge.strides[0] = huge.strides[1] = huge.strides[2] = huge.strides[3] = 0;
    huge.frame_times = times;
    mip = NULL;
    CHECK_STATUS(imh_mip(ctx, &huge, NULL, &mip), IMH_STATUS_TOO_LARGE);
    CHECK(mip == NULL, "no output");

    imh_context_free(ctx);
    printf("test_logging: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
