/* The imhost C ABI from C, run under valgrind by ctest.
 *
 *   test_c_abi MUST_FAIL_DIR TMP_DIR
 *
 * A 4-D int16 volume with known values and non-uniform frame times is written through the ABI
 * (imh_view_write), read back (imh_volume_read), and projected (imh_mip); values are checked
 * against a maximum computed here and geometry against what was written. Then every error path:
 * NULL handles, wrong dtype, mismatched shape/strides, bad geometry, corrupt files,
 * cancellation midway from another thread and from the progress callback. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imhost.h"

#include "check.h"

/* ---- the test volume -------------------------------------------------------------------- */

enum { NI = 7, NJ = 5, NK = 3, NT = 6 };
static const double FRAME_TIMES[NT] = {0.0, 1.0, 2.0, 3.5, 6.0, 10.0};

/* Value of voxel (i, j, k, t): a different frame holds the maximum for different voxels. */
static int16_t value_at(int i, int j, int k, int t) {
    int peak = (i + 2 * j + 3 * k) % NT;
    int base = 10 * i - 20 * j + 100 * k - 300;
    return (int16_t)(base + (t == peak ? 500 + i : -t));
}

static void oblique_geometry(imh_geometry *g) {
    const double a = 0.3; /* rad, about z */
    g->spacing[0] = 0.5; g->spacing[1] = 0.75; g->spacing[2] = 2.5;
    g->origin[0] = -120.0; g->origin[1] = 80.25; g->origin[2] = 33.0;
    g->direction[0] = cos(a); g->direction[1] = -sin(a); g->direction[2] = 0.0;
    g->direction[3] = sin(a); g->direction[4] = cos(a);  g->direction[5] = 0.0;
    g->direction[6] = 0.0;    g->direction[7] = 0.0;     g->direction[8] = 1.0;
}

static imh_view nifti_view(const void *data, imh_dtype dtype, int64_t ni, int64_t nj, int64_t nk, int64_t nt,
                           const double *times) {
    imh_view v;
    memset(&v, 0, sizeof v);
    v.data = data;
    v.dtype = dtype;
    v.ndim = 4;
    v.shape[0] = ni; v.shape[1] = nj; v.shape[2] = nk; v.shape[3] = nt;
    v.strides[0] = 1; v.strides[1] = ni; v.strides[2] = ni * nj; v.strides[3] = ni * nj * nk;
    oblique_geometry(&v.geometry);
    v.frame_times = times;
    return v;
}

/* ---- callbacks ---------------------------------------------------------------------------- */

struct log_sink {
    int records;
    int warnings;
    char last[512];
};

static void on_log(void *user, imh_log_level level, const char *target, const char *message) {
    struct log_sink *sink = (struct log_sink *)user;
    sink->records++;
    if (level == IMH_LOG_WARN) sink->warnings++;
    snprintf(sink->last, sizeof sink->last, "%s: %s", target, message);
}

struct progress_log {
    int calls;
    double last;
    int monotone;
    int cancel_at;                   /* return false at this call (0: never) */
    const imh_cancel_token *token;   /* cancel this token at call `cancel_at` instead */
};

static bool on_progress(void *user, double fraction, const char *stage) {
    struct progress_log *p = (struct progress_log *)user;
    p->calls++;
    if (fraction < p->last || fraction < 0.0 || fraction > 1.0 || stage == NULL || stage[0] == '\0') p->monotone = 0;
    p->last = fraction;
    if (p->cancel_at && p->calls == p->cancel_at) {
        if (p->token) {
            imh_cancel_token_cancel(p->token);
            return true;
        }
        return false;
    }
    return true;
}

/* Cross-thread cancellation: the worker's progress callback waits until the main thread has
 * cancelled the token, so the cancellation lands midway, deterministically. */
struct cross_thread {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int started;
    int cancelled;
    int reports;
    imh_context *ctx;
    const imh_view *input;
    imh_run_options options;
    imh_volume *out;
    imh_status status;
};

static bool wait_for_cancel(void *user, double fraction, const char *stage) {
    struct cross_thread *x = (struct cross_thread *)user;
    (void)fraction;
    (void)stage;
    pthread_mutex_lock(&x->lock);
    x->reports++;
    if (x->reports == 3) {
        x->started = 1;
        pthread_cond_broadcast(&x->changed);
        while (!x->cancelled) pthread_cond_wait(&x->changed, &x->lock);
    }
    pthread_mutex_unlock(&x->lock);
    return true;
}

static void *run_mip(void *arg) {
    struct cross_thread *x = (struct cross_thread *)arg;
    x->status = imh_mip(x->ctx, x->input, &x->options, &x->out);
    return NULL;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_version(void) {
    char expected[64];
    snprintf(expected, sizeof expected, "%d.%d.%d", IMH_VERSION_MAJOR, IMH_VERSION_MINOR, IMH_VERSION_PATCH);
    CHECK(strcmp(expected, imh_version()) == 0, "header %s vs library %s", expected, imh_version());
    CHECK(strcmp(imh_status_name(IMH_STATUS_FORMAT), "IMH_STATUS_FORMAT") == 0, "%s", imh_status_name(IMH_STATUS_FORMAT));
    CHECK(strcmp(imh_status_name(4242), "IMH_STATUS_UNKNOWN") == 0, "unknown status");
}

static void test_roundtrip_and_mip(imh_context *ctx, const char *tmp) {
    int16_t *data = malloc(sizeof(int16_t) * NI * NJ * NK * NT);
    char path[1024];
    imh_view view, read_view, mip_view;
    imh_volume *volume = NULL, *mip = NULL;
    struct progress_log progress = {0, 0.0, 1, 0, NULL};
    imh_run_options options;
    int i, j, k, t, n, wrong = 0;

    for (t = 0; t < NT; ++t)
        for (k = 0; k < NK; ++k)
            for (j = 0; j < NJ; ++j)
                for (i = 0; i < NI; ++i) data[((t * NK + k) * NJ + j) * NI + i] = value_at(i, j, k, t);
    view = nifti_view(data, IMH_DTYPE_I16, NI, NJ, NK, NT, FRAME_TIMES);

    snprintf(path, sizeof path, "%s/c_abi_ctp.nii.gz", tmp);
    CHECK_STATUS(imh_view_write(ctx, &view, path), IMH_STATUS_OK);
    CHECK_STATUS(imh_volume_read(ctx, path, &volume), IMH_STATUS_OK);
    if (volume == NULL) {
        free(data);
        return;
    }
    CHECK_STATUS(imh_volume_get_view(volume, &read_view), IMH_STATUS_OK);
    CHECK(read_view.dtype == IMH_DTYPE_I16 && read_view.ndim == 4, "dtype %u ndim %u", read_view.dtype, read_view.ndim);
    CHECK(read_view.shape[0] == NI && read_view.shape[1] == NJ && read_view.shape[2] == NK && read_view.shape[3] == NT,
          "shape %lld %lld %lld %lld", (long long)read_view.shape[0], (long long)read_view.shape[1],
          (long long)read_view.shape[2], (long long)read_view.shape[3]);
    for (n = 0; n < NT; ++n) CHECK(read_view.frame_times && read_view.frame_times[n] == FRAME_TIMES[n], "frame %d time", n);
    for (n = 0; n < 3; ++n) {
        /* NIfTI-1 stores geometry as float32. */
        CHECK(fabs(read_view.geometry.spacing[n] - view.geometry.spacing[n]) < 1e-6, "spacing %d", n);
        CHECK(fabs(read_view.geometry.origin[n] - view.geometry.origin[n]) < 1e-4, "origin %d", n);
    }
    for (n = 0; n < 9; ++n) CHECK(fabs(read_view.geometry.direction[n] - view.geometry.direction[n]) < 1e-6, "direction %d", n);
    for (n = 0; n < NI * NJ * NK * NT; ++n) {
        const int16_t *values = (const int16_t *)read_view.data;
        if (values[n] != data[n]) ++wrong;
    }
    CHECK(wrong == 0, "%d voxels differ after the NIfTI round trip", wrong);

    memset(&options, 0, sizeof options);
    options.struct_size = sizeof options;
    options.progress = on_progress;
    options.progress_user_data = &progress;
    CHECK_STATUS(imh_mip(ctx, &read_view, &options, &mip), IMH_STATUS_OK);
    if (mip == NULL) {
        imh_volume_free(volume);
        free(data);
        return;
    }
    CHECK(progress.calls >= 2 && progress.monotone && progress.last == 1.0, "progress: %d calls, monotone %d, last %g",
          progress.calls, progress.monotone, progress.last);
    CHECK_STATUS(imh_volume_get_view(mip, &mip_view), IMH_STATUS_OK);
    CHECK(mip_view.ndim == 3 && mip_view.dtype == IMH_DTYPE_I16, "MIP is 3-D int16");
    CHECK(mip_view.frame_times == NULL, "a 3-D result has no frame times");
    CHECK(memcmp(&mip_view.geometry, &read_view.geometry, sizeof(imh_geometry)) == 0, "MIP keeps the input geometry");
    wrong = 0;
    for (k = 0; k < NK; ++k)
        for (j = 0; j < NJ; ++j)
            for (i = 0; i < NI; ++i) {
                int16_t expected = value_at(i, j, k, 0);
                int16_t got;
                for (t = 1; t < NT; ++t)
                    if (value_at(i, j, k, t) > expected) expected = value_at(i, j, k, t);
                got = ((const int16_t *)mip_view.data)[i * mip_view.strides[0] + j * mip_view.strides[1] + k * mip_view.strides[2]];
                if (got != expected) ++wrong;
            }
    CHECK(wrong == 0, "%d MIP voxels differ from the maximum computed in C", wrong);

    /* The result written and read again: same values. */
    snprintf(path, sizeof path, "%s/c_abi_mip.nii", tmp);
    CHECK_STATUS(imh_volume_write(ctx, mip, path), IMH_STATUS_OK);

    imh_volume_free(mip);
    imh_volume_free(volume);
    free(data);
}

static void test_geometry_helpers(void) {
    imh_geometry g, back;
    double m[16];
    int n;
    oblique_geometry(&g);
    CHECK_STATUS(imh_geometry_to_ijk_to_ras(&g, m), IMH_STATUS_OK);
    /* RAS = LPS with x and y negated; first column = -(cos a, sin a, 0) * 0.5 in x, y. */
    CHECK(fabs(m[0] + cos(0.3) * 0.5) < 1e-12 && fabs(m[4] + sin(0.3) * 0.5) < 1e-12 && m[8] == 0.0, "first column");
    CHECK(m[3] == 120.0 && m[7] == -80.25 && m[11] == 33.0, "translation %g %g %g", m[3], m[7], m[11]);
    CHECK(m[12] == 0.0 && m[13] == 0.0 && m[14] == 0.0 && m[15] == 1.0, "last row");
    CHECK_STATUS(imh_geometry_from_ijk_to_ras(m, &back), IMH_STATUS_OK);
    for (n = 0; n < 9; ++n) CHECK(fabs(back.direction[n] - g.direction[n]) < 1e-12, "direction %d", n);
    m[10] = 0.0; /* k axis collapses */
    CHECK_STATUS(imh_geometry_from_ijk_to_ras(m, &back), IMH_STATUS_GEOMETRY);
    CHECK_STATUS(imh_geometry_to_ijk_to_ras(NULL, m), IMH_STATUS_NULL_ARGUMENT);
}

static void test_error_paths(imh_context *ctx, const char *must_fail) {
    float data[2 * 2 * 2 * 2] = {0};
    double times[2] = {0.0, 1.0};
    imh_view good = nifti_view(data, IMH_DTYPE_F32, 2, 2, 2, 2, times), bad;
    imh_volume *out = NULL;
    imh_run_options tiny;
    char path[1024];

    /* NULL handles and out-pointers. */
    CHECK_STATUS(imh_mip(NULL, &good, NULL, &out), IMH_STATUS_NULL_ARGUMENT);
    CHECK(strstr(imh_last_error_message(), "'context' is NULL") != NULL, "%s", imh_last_error_message());
    CHECK_STATUS(imh_mip(ctx, NULL, NULL, &out), IMH_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(imh_mip(ctx, &good, NULL, NULL), IMH_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(imh_volume_read(ctx, NULL, &out), IMH_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(imh_volume_get_view(NULL, &bad), IMH_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(imh_context_new(NULL), IMH_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(imh_cancel_token_cancel(NULL), IMH_STATUS_NULL_ARGUMENT);
    CHECK(!imh_cancel_token_is_cancelled(NULL), "a NULL token is never cancelled");
    imh_volume_free(NULL);
    imh_context_free(NULL);
    imh_cancel_token_free(NULL);

    /* Wrong dtype. */
    bad = good; bad.dtype = 0;
    CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_DATA_TYPE);
    bad = good; bad.dtype = 42;
    CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_DATA_TYPE);
    /* A double buffer declared as f32 is not detectable; a misaligned one is. */
    bad = good; bad.data = (const char *)data + 1;
    CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_INVALID_ARGUMENT);

    /* Mismatched shape and strides. */
    bad = good; bad.ndim = 5;
    CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_SHAPE);
    bad = good; bad.shape[1] = 0;
    CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_SHAPE);
    bad = good; bad.shape[3] = -2;
    CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_SHAPE);
    bad = good; bad.strides[2] = -4;
    CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_SHAPE);
    bad = good; bad.shape[0] = (int64_t)1 << 40; bad.strides[0] = (int64_t)1 << 40;
    CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_SHAPE);
    bad = good; bad.strides[0] = INT64_MAX / 2;
    CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_TOO_LARGE);
    bad = good; bad.ndim = 3;
    CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_SHAPE); /* the MIP needs a time axis */

    /* Bad geometry and frame times. */
    bad = good; bad.geometry.spacing[0] = NAN;
    CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_GEOMETRY);
    bad = good; bad.geometry.direction[4] = 0.0; /* j axis has zero length */
    CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_GEOMETRY);
    {
        double backwards[2] = {1.0, 0.5};
        bad = good; bad.frame_times = backwards;
        CHECK_STATUS(imh_mip(ctx, &bad, NULL, &out), IMH_STATUS_GEOMETRY);
    }
    /* A run-options struct that is too small to be real. */
    memset(&tiny, 0, sizeof tiny);
    tiny.struct_size = 1;
    CHECK_STATUS(imh_mip(ctx, &good, &tiny, &out), IMH_STATUS_INVALID_ARGUMENT);
    CHECK(out == NULL, "no output is written on failure");

    /* Corrupt and lying files. */
    snprintf(path, sizeof path, "%s/truncated.nii", must_fail);
    CHECK_STATUS(imh_volume_read(ctx, path, &out), IMH_STATUS_FORMAT);
    CHECK(strstr(imh_last_error_message(), "truncated") != NULL, "%s", imh_last_error_message());
    snprintf(path, sizeof path, "%s/not-nifti.nii", must_fail);
    CHECK_STATUS(imh_volume_read(ctx, path, &out), IMH_STATUS_FORMAT);
    snprintf(path, sizeof path, "%s/more-than-memory.nii", must_fail);
    CHECK_STATUS(imh_volume_read(ctx, path, &out), IMH_STATUS_TOO_LARGE);
    snprintf(path, sizeof path, "%s/nan-spacing.nii", must_fail);
    CHECK_STATUS(imh_volume_read(ctx, path, &out), IMH_STATUS_GEOMETRY);
    snprintf(path, sizeof path, "%s/zero-dim.nii", must_fail);
    CHECK_STATUS(imh_volume_read(ctx, path, &out), IMH_STATUS_SHAPE);
    snprintf(path, sizeof path, "%s/does-not-exist.nii", must_fail);
    CHECK_STATUS(imh_volume_read(ctx, path, &out), IMH_STATUS_IO);
    CHECK(out == NULL, "no volume from a failed read");
    CHECK_STATUS(imh_view_write(ctx, &good, "/no/such/folder/x.nii"), IMH_STATUS_IO);
    CHECK_STATUS(imh_view_write(ctx, &good, "x.png"), IMH_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(imh_context_set_log_callback(ctx, on_log, NULL, 0), IMH_STATUS_INVALID_ARGUMENT);
}

static void test_cancellation(imh_context *ctx) {
    /* 256 x 256 x 8 voxels x 5 frames: about 33 progress reports. */
    const int64_t ni = 256, nj = 256, nk = 8, nt = 5;
    int16_t *data = calloc((size_t)(ni * nj * nk * nt), sizeof(int16_t));
    double times[5] = {0, 1, 2, 3, 4};
    imh_view view = nifti_view(data, IMH_DTYPE_I16, ni, nj, nk, nt, times);
    imh_cancel_token *token = NULL;
    imh_run_options options;
    imh_volume *out = NULL;
    struct progress_log progress = {0, 0.0, 1, 5, NULL};
    struct cross_thread x;
    pthread_t worker;

    CHECK_STATUS(imh_cancel_token_new(&token), IMH_STATUS_OK);
    memset(&options, 0, sizeof options);
    options.struct_size = sizeof options;
    options.progress = on_progress;
    options.progress_user_data = &progress;

    /* The progress callback returns false on its 5th call. */
    CHECK_STATUS(imh_mip(ctx, &view, &options, &out), IMH_STATUS_CANCELLED);
    CHECK(progress.calls == 5, "stopped at the 5th report, not %d", progress.calls);
    CHECK(out == NULL, "no output after cancellation");

    /* The token, set midway (from the callback, as a UI thread would). */
    progress.calls = 0;
    progress.last = 0.0;
    progress.token = token;
    options.cancel = token;
    CHECK_STATUS(imh_mip(ctx, &view, &options, &out), IMH_STATUS_CANCELLED);
    CHECK(progress.calls == 5, "stopped right after the token was set, not at %d", progress.calls);
    CHECK(imh_cancel_token_is_cancelled(token), "token stays cancelled");
    CHECK_STATUS(imh_cancel_token_reset(token), IMH_STATUS_OK);
    progress.cancel_at = 0;
    CHECK_STATUS(imh_mip(ctx, &view, &options, &out), IMH_STATUS_OK);
    CHECK(progress.calls > 20, "a full run after reset reports %d times", progress.calls);
    imh_volume_free(out);
    out = NULL;

    /* From another thread: the main thread cancels while the worker is inside imh_mip. */
    memset(&x, 0, sizeof x);
    pthread_mutex_init(&x.lock, NULL);
    pthread_cond_init(&x.changed, NULL);
    x.ctx = ctx;
    x.input = &view;
    x.options = options;
    x.options.progress = wait_for_cancel;
    x.options.progress_user_data = &x;
    x.options.cancel = token;
    pthread_create(&worker, NULL, run_mip, &x);
    pthread_mutex_lock(&x.lock);
    while (!x.started) pthread_cond_wait(&x.changed, &x.lock);
    CHECK_STATUS(imh_cancel_token_cancel(token), IMH_STATUS_OK);
    x.cancelled = 1;
    pthread_cond_broadcast(&x.changed);
    pthread_mutex_unlock(&x.lock);
    pthread_join(worker, NULL);
    CHECK(x.status == IMH_STATUS_CANCELLED, "worker got %s", imh_status_name(x.status));
    CHECK(x.reports == 3, "the worker stopped at the check right after the cancel (report %d)", x.reports);
    CHECK(x.out == NULL, "no output after cancellation");
    pthread_cond_destroy(&x.changed);
    pthread_mutex_destroy(&x.lock);

    imh_cancel_token_free(token);
    free(data);
}

static void test_logging(imh_context *ctx) {
    struct log_sink sink;
    float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    imh_view view = nifti_view(data, IMH_DTYPE_F32, 2, 2, 1, 2, NULL); /* no frame times: a warning */
    imh_volume *out = NULL;
    memset(&sink, 0, sizeof sink);
    CHECK_STATUS(imh_context_set_log_callback(ctx, on_log, &sink, IMH_LOG_INFO), IMH_STATUS_OK);
    CHECK_STATUS(imh_mip(ctx, &view, NULL, &out), IMH_STATUS_OK);
    CHECK(sink.warnings == 1, "one warning about missing frame times, got %d", sink.warnings);
    CHECK(sink.records >= 2 && strstr(sink.last, "temporal MIP done") != NULL, "last record: %s", sink.last);
    CHECK_STATUS(imh_context_set_log_callback(ctx, NULL, NULL, IMH_LOG_INFO), IMH_STATUS_OK);
    sink.records = 0;
    imh_volume_free(out);
    CHECK_STATUS(imh_mip(ctx, &view, NULL, &out), IMH_STATUS_OK);
    CHECK(sink.records == 0, "no records after removing the callback");
    imh_volume_free(out);
}

int main(int argc, char **argv) {
    imh_context *ctx = NULL;
    if (argc != 3) {
        fprintf(stderr, "usage: %s MUST_FAIL_DIR TMP_DIR\n", argv[0]);
        return 2;
    }
    test_version();
    if (imh_context_new(&ctx) != IMH_STATUS_OK) {
        fprintf(stderr, "imh_context_new: %s\n", imh_last_error_message());
        return 1;
    }
    test_roundtrip_and_mip(ctx, argv[2]);
    test_geometry_helpers();
    test_error_paths(ctx, argv[1]);
    test_cancellation(ctx);
    test_logging(ctx);
    imh_context_free(ctx);
    printf("C ABI: %d checks, %d failed\n", checks, failures);
    return failures != 0;
}
