/*
 * Test plugins (not examples): one source, one shared library per variant macro.
 *
 *   (none)          good: test.echo (reports where the input lies: no-copy check), test.copy
 *                   (output = input), test.fail (run returns an error), test.wrong-shape
 *                   (allocates an output of the wrong shape and ignores the refusal)
 *   TEST_CRASH      test.crash (segfaults in run) and test.crash-ok (works) — run isolated
 *   TEST_HANG       test.hang (never returns, ignores cancellation) — run isolated with a time limit
 *   TEST_BAD_MAJOR  descriptor says ABI 2.0
 *   TEST_OLD_MINOR  an ABI 1.0 plugin: older minor, no unload field (loads)
 *   TEST_NEW_MINOR  an ABI 1.9 plugin with a longer descriptor and model struct (loads)
 *   TEST_NO_ENTRY   exports no entry symbol
 *   TEST_NULL_ENTRY entry returns NULL with a reason
 *   TEST_BAD_MANIFEST manifest is not JSON
 *   TEST_DUPLICATE  declares the id of the C example (example.c-threshold)
 *   TEST_HOST_1_2   test.folder (reads its options through the ABI 1.2 accessors and a number
 *                   from test-folder-data.txt in host->plugin_dir) and test.exit (calls exit(0)
 *                   in run, which the host must not report as success)
 */
#define _POSIX_C_SOURCE 200809L
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-const-variable"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imhost_plugin.h"

#define MANIFEST(id, outputs) \
    "{\"format\": \"imhost-manifest/1\", \"id\": \"" id "\", \"name\": \"" id "\", \"version\": \"0.0.1\"," \
    " \"inputs\": [{\"name\": \"image\", \"dims\": 3, \"dtypes\": [\"f32\"]}], \"outputs\": [" outputs "]}"

static imhp_status echo(void *instance, const imhp_run_args *a) {
    (void)instance;
    const imhp_tensor *in = a->inputs[0];
    a->host->set_score(a->host->ctx, "input_address", (double)(uintptr_t)in->data);
    a->host->set_score(a->host->ctx, "first_voxel", ((const float *)in->data)[0]);
    return IMHP_OK;
}

static imhp_status copy(void *instance, const imhp_run_args *a) {
    (void)instance;
    const imhp_tensor *in = a->inputs[0];
    size_t shape[4] = {in->shape[0], in->shape[1], in->shape[2], 1};
    imhp_tensor out;
    imhp_status s = a->host->alloc_output(a->host->ctx, "out", IMHP_DTYPE_F32, shape, &out);
    if (s != IMHP_OK) return s;
    const float *src = (const float *)in->data;
    float *dst = (float *)out.data;
    if (in->strides[0] == 1 && in->strides[1] == (ptrdiff_t)shape[0] && in->strides[2] == (ptrdiff_t)(shape[0] * shape[1])) {
        memcpy(dst, src, shape[0] * shape[1] * shape[2] * sizeof(float));
    } else {
        for (size_t k = 0; k < shape[2]; k++)
            for (size_t j = 0; j < shape[1]; j++)
                for (size_t i = 0; i < shape[0]; i++)
                    dst[i + shape[0] * (j + shape[1] * k)] =
                        src[(ptrdiff_t)i * in->strides[0] + (ptrdiff_t)j * in->strides[1] + (ptrdiff_t)k * in->strides[2]];
    }
    return IMHP_OK;
}

static imhp_status fail(void *instance, const imhp_run_args *a) {
    (void)instance;
    a->host->set_error(a->host->ctx, "test.fail always fails: no lesion model for this scanner");
    return IMHP_ERROR;
}

static imhp_status wrong_shape(void *instance, const imhp_run_args *a) {
    (void)instance;
    const imhp_tensor *in = a->inputs[0];
    size_t shape[4] = {in->shape[0] + 1, in->shape[1], in->shape[2], 1};
    imhp_tensor out;
    (void)a->host->alloc_output(a->host->ctx, "out", IMHP_DTYPE_F32, shape, &out); /* ignores the refusal */
    return IMHP_OK;
}

static imhp_status crash(void *instance, const imhp_run_args *a) {
    (void)instance;
    (void)a;
    fprintf(stderr, "test.crash: about to dereference NULL\n");
    volatile int *p = NULL;
    *p = 42;
    return IMHP_OK;
}

static imhp_status hang(void *instance, const imhp_run_args *a) {
    (void)instance;
    (void)a;
    fprintf(stderr, "test.hang: looping forever\n");
    for (;;) {
        struct timespec t = {0, 50 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    return IMHP_OK;
}

static imhp_status folder(void *instance, const imhp_run_args *a) {
    (void)instance;
    const imhp_host *h = a->host;
    if (!IMHP_HOST_HAS(h, option_number) || !IMHP_HOST_HAS(h, option_string) || !IMHP_HOST_HAS(h, plugin_dir)) {
        h->set_error(h->ctx, "this host is older than ABI 1.2");
        return IMHP_ERROR;
    }
    double level = 0, flag = 0;
    char mode[8];
    size_t length = 0;
    if (h->option_number(h->ctx, "level", &level) != IMHP_OK || h->option_number(h->ctx, "flag", &flag) != IMHP_OK)
        return IMHP_ERROR;
    /* Too small a buffer is an error that still says the length. */
    char tiny[2];
    size_t needed = 0;
    if (h->option_string(h->ctx, "mode", tiny, sizeof tiny, &needed) == IMHP_OK && needed >= sizeof tiny) return IMHP_ERROR;
    if (h->option_string(h->ctx, "mode", mode, sizeof mode, &length) != IMHP_OK) return IMHP_ERROR;
    double unknown = 0;
    if (h->option_number(h->ctx, "no-such-option", &unknown) == IMHP_OK) return IMHP_ERROR;
    char path[4096];
    snprintf(path, sizeof path, "%s/test-folder-data.txt", h->plugin_dir);
    double data = -1;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%lf", &data) != 1) data = -2;
        fclose(f);
    }
    h->set_score(h->ctx, "level", level);
    h->set_score(h->ctx, "flag", flag);
    h->set_score(h->ctx, "mode_length", (double)length);
    h->set_score(h->ctx, "mode_needed", (double)needed);
    h->set_score(h->ctx, "mode_first", (double)(unsigned char)mode[0]);
    h->set_score(h->ctx, "data", data);
    return IMHP_OK;
}

static imhp_status exits(void *instance, const imhp_run_args *a) {
    (void)instance;
    (void)a;
    fprintf(stderr, "test.exit: calling exit(0)\n");
    exit(0);
}

static void unloaded(void) {}

#define OUT_MAP "{\"name\": \"out\", \"kind\": \"map\"}"

#if defined(TEST_CRASH)
#define NAME "test-crash"
static const imhp_model MODELS[] = {
    {sizeof(imhp_model), 0, MANIFEST("test.crash", OUT_MAP), NULL, crash, NULL},
    {sizeof(imhp_model), 0, MANIFEST("test.crash-ok", OUT_MAP), NULL, copy, NULL},
};
#elif defined(TEST_HANG)
#define NAME "test-hang"
static const imhp_model MODELS[] = {
    {sizeof(imhp_model), 0, MANIFEST("test.hang", OUT_MAP), NULL, hang, NULL},
    {sizeof(imhp_model), 0, MANIFEST("test.hang-ok", OUT_MAP), NULL, copy, NULL},
};
#elif defined(TEST_HOST_1_2)
#define NAME "test-host-1-2"
#define SCORE(n) "{\"name\": \"" n "\", \"kind\": \"score\"}"
static const imhp_model MODELS[] = {
    {sizeof(imhp_model), 0,
     "{\"format\": \"imhost-manifest/1\", \"id\": \"test.folder\", \"name\": \"test.folder\", \"version\": \"0.0.1\","
     " \"inputs\": [{\"name\": \"image\", \"dims\": 3, \"dtypes\": [\"f32\"]}],"
     " \"options\": {\"level\": {\"type\": \"number\", \"default\": 2.5},"
     " \"flag\": {\"type\": \"boolean\", \"default\": true},"
     " \"mode\": {\"type\": \"string\", \"default\": \"abc\", \"enum\": [\"abc\", \"xyzzy\"]}},"
     " \"outputs\": [" SCORE("level") ", " SCORE("flag") ", " SCORE("mode_length") ", " SCORE("mode_needed") ", "
     SCORE("mode_first") ", " SCORE("data") "]}",
     NULL, folder, NULL},
    {sizeof(imhp_model), 0, MANIFEST("test.exit", OUT_MAP), NULL, exits, NULL},
};
#elif defined(TEST_BAD_MANIFEST)
#define NAME "test-bad-manifest"
static const imhp_model MODELS[] = {{sizeof(imhp_model), 0, "{\"format\": \"imhost-manifest/1\", \"id\": oops", NULL, copy, NULL}};
#elif defined(TEST_DUPLICATE)
#define NAME "test-duplicate"
static const imhp_model MODELS[] = {{sizeof(imhp_model), 0, MANIFEST("example.c-threshold", OUT_MAP), NULL, copy, NULL}};
#elif defined(TEST_OLD_MINOR)
#define NAME "test-old-minor"
static const imhp_model MODELS[] = {{sizeof(imhp_model), 0, MANIFEST("test.old-minor", OUT_MAP), NULL, copy, NULL}};
#elif defined(TEST_NEW_MINOR)
#define NAME "test-new-minor"
/* What a 1.9 plugin would look like: both structs grew. */
typedef struct { imhp_model base; const char *future_field; } model_1_9;
typedef struct { imhp_plugin base; const char *future_field; uint64_t more; } plugin_1_9;
static const model_1_9 MODELS[] = {
    {{sizeof(model_1_9), 0, MANIFEST("test.new-minor-a", OUT_MAP), NULL, copy, NULL}, "x"},
    {{sizeof(model_1_9), 0, MANIFEST("test.new-minor-b", OUT_MAP), NULL, copy, NULL}, "y"},
};
#else
#define NAME "test-good"
static const imhp_model MODELS[] = {
    {sizeof(imhp_model), 0,
     MANIFEST("test.echo", "{\"name\": \"input_address\", \"kind\": \"score\"}, {\"name\": \"first_voxel\", \"kind\": \"score\"}"),
     NULL, echo, NULL},
    {sizeof(imhp_model), 0, MANIFEST("test.copy", OUT_MAP), NULL, copy, NULL},
    {sizeof(imhp_model), 0, MANIFEST("test.fail", OUT_MAP), NULL, fail, NULL},
    {sizeof(imhp_model), 0, MANIFEST("test.wrong-shape", OUT_MAP), NULL, wrong_shape, NULL},
};
#endif

#if defined(TEST_NEW_MINOR)
static const plugin_1_9 PLUGIN = {
    {sizeof(plugin_1_9), IMHP_ABI_MAJOR, 9, sizeof(model_1_9), NAME, "0.0.1", 2, &MODELS[0].base, unloaded}, "z", 7};
#define DESCRIPTOR (&PLUGIN.base)
#elif defined(TEST_OLD_MINOR)
/* ABI 1.0 had no `unload`: its struct_size ends before it (and the field holds garbage that
 * the host must not read). */
static const imhp_plugin PLUGIN = {offsetof(imhp_plugin, unload), IMHP_ABI_MAJOR, 0, sizeof(imhp_model), NAME, "0.0.1", 1,
                                   MODELS, (void (*)(void))(uintptr_t)0xdeadbeef};
#define DESCRIPTOR (&PLUGIN)
#elif defined(TEST_BAD_MAJOR)
static const imhp_plugin PLUGIN = {sizeof(imhp_plugin), 2, 0, sizeof(imhp_model), "test-bad-major", "0.0.1", 0, NULL, NULL};
#define DESCRIPTOR (&PLUGIN)
#else
static const imhp_plugin PLUGIN = {sizeof(imhp_plugin), IMHP_ABI_MAJOR, IMHP_ABI_MINOR, sizeof(imhp_model), NAME, "0.0.1",
                                   sizeof MODELS / sizeof MODELS[0], MODELS, unloaded};
#define DESCRIPTOR (&PLUGIN)
#endif

#if defined(TEST_NO_ENTRY)
IMHP_EXPORT int imhost_plugin_entry_misspelled(void) { return 0; }
#else
IMHP_EXPORT const imhp_plugin *imhost_plugin_entry(const imhp_host *host) {
#if defined(TEST_NULL_ENTRY)
    host->set_error(host->ctx, "licence file /opt/test/licence.key not found");
    return NULL;
#else
    if (host->log) host->log(host->ctx, IMHP_LOG_DEBUG, "test plugin " NAME " loading");
    return DESCRIPTOR;
#endif
}
#endif
