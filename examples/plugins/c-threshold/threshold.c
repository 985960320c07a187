/*
 * Example imhost plugin in plain C: intensity thresholding with 6-connected components.
 *
 * Build:  cc -std=c99 -O2 -shared -fPIC -fvisibility=hidden -I<imhost>/include \
 *             threshold.c -o libexample_c_threshold.so
 * Use:    IMHOST_PLUGIN_PATH=$PWD imhost models list
 *
 * docs/plugins.md walks through this file. Research use only.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imhost_plugin.h"

static const char MANIFEST[] =
    "{\"format\": \"imhost-manifest/1\","
    " \"id\": \"example.c-threshold\", \"name\": \"Threshold (C example)\", \"version\": \"1.0.0\","
    " \"licence\": \"Apache-2.0\","
    " \"description\": \"Voxels with lower <= value <= upper, keeping 6-connected components of at least min_voxels voxels.\","
    " \"inputs\": [{\"name\": \"image\", \"modality\": \"any\", \"dims\": 3, \"dtypes\": [\"f32\", \"i16\"]}],"
    " \"options\": {"
    "   \"lower\": {\"type\": \"number\", \"default\": 130, \"unit\": \"as input\", \"description\": \"lowest value kept\"},"
    "   \"upper\": {\"type\": \"number\", \"default\": 100000, \"unit\": \"as input\", \"description\": \"highest value kept\"},"
    "   \"min_voxels\": {\"type\": \"integer\", \"default\": 1, \"minimum\": 1, \"description\": \"smaller components are dropped\"}},"
    " \"outputs\": ["
    "   {\"name\": \"mask\", \"kind\": \"labelmap\", \"labels\": [{\"value\": 1, \"name\": \"in range\", \"color\": [230, 80, 60]}]},"
    "   {\"name\": \"volume_ml\", \"kind\": \"score\", \"unit\": \"ml\", \"description\": \"volume of the mask\"},"
    "   {\"name\": \"components\", \"kind\": \"score\", \"unit\": \"1\", \"description\": \"connected components kept\"}],"
    " \"device\": {\"requires\": \"cpu\"}}";

static double value_at(const imhp_tensor *t, size_t i, size_t j, size_t k) {
    ptrdiff_t off = (ptrdiff_t)i * t->strides[0] + (ptrdiff_t)j * t->strides[1] + (ptrdiff_t)k * t->strides[2];
    if (t->dtype == IMHP_DTYPE_I16) return ((const int16_t *)t->data)[off];
    return ((const float *)t->data)[off];
}

static void fail(const imhp_host *host, const char *message) {
    if (host->set_error) host->set_error(host->ctx, message);
}

/* A number option, through the host (plugin ABI 1.2): every declared option is there, its
 * default filled in and its value checked against the manifest before run() is called. */
static imhp_status option(const imhp_host *host, const char *name, double *value) {
    if (!IMHP_HOST_HAS(host, option_number)) {
        fail(host, "example.c-threshold needs an imhost of plugin ABI 1.2 or later");
        return IMHP_ERROR;
    }
    return host->option_number(host->ctx, name, value); /* on failure the host said why */
}

static imhp_status run(void *instance, const imhp_run_args *args) {
    (void)instance;
    const imhp_host *host = args->host;
    const imhp_tensor *in = args->inputs[0];
    if (in->dtype != IMHP_DTYPE_F32 && in->dtype != IMHP_DTYPE_I16) {
        fail(host, "threshold reads f32 or i16 images");
        return IMHP_INVALID_INPUT;
    }
    double lower = 0, upper = 0, min_count = 1;
    if (option(host, "lower", &lower) != IMHP_OK || option(host, "upper", &upper) != IMHP_OK ||
        option(host, "min_voxels", &min_count) != IMHP_OK)
        return IMHP_ERROR;
    const size_t min_voxels = (size_t)min_count;
    const size_t ni = in->shape[0], nj = in->shape[1], nk = in->shape[2], n = ni * nj * nk;

    imhp_tensor out;
    size_t shape[4] = {ni, nj, nk, 1};
    if (host->alloc_output(host->ctx, "mask", IMHP_DTYPE_U8, shape, &out) != IMHP_OK) return IMHP_ERROR;
    uint8_t *mask = (uint8_t *)out.data; /* contiguous, i fastest */

    /* 1. threshold (2 = candidate), 2. flood-fill each candidate component, keep big ones. */
    for (size_t k = 0; k < nk; k++)
        for (size_t j = 0; j < nj; j++)
            for (size_t i = 0; i < ni; i++) {
                double v = value_at(in, i, j, k);
                mask[i + ni * (j + nj * k)] = (v >= lower && v <= upper) ? 2 : 0;
            }
    size_t *queue = malloc(n * sizeof *queue);
    if (!queue) {
        fail(host, "out of memory for the component queue");
        return IMHP_NO_MEMORY;
    }
    size_t kept = 0, components = 0;
    for (size_t seed = 0; seed < n; seed++) {
        if (mask[seed] != 2) continue;
        if (host->progress && !host->progress(host->ctx, (double)seed / (double)n, "components")) {
            free(queue);
            return IMHP_CANCELLED;
        }
        size_t head = 0, tail = 0;
        queue[tail++] = seed;
        mask[seed] = 3; /* visited */
        while (head < tail) {
            size_t v = queue[head++], i = v % ni, j = (v / ni) % nj, k = v / (ni * nj);
            size_t nb[6];
            int m = 0;
            if (i > 0) nb[m++] = v - 1;
            if (i + 1 < ni) nb[m++] = v + 1;
            if (j > 0) nb[m++] = v - ni;
            if (j + 1 < nj) nb[m++] = v + ni;
            if (k > 0) nb[m++] = v - ni * nj;
            if (k + 1 < nk) nb[m++] = v + ni * nj;
            for (int q = 0; q < m; q++)
                if (mask[nb[q]] == 2) {
                    mask[nb[q]] = 3;
                    queue[tail++] = nb[q];
                }
        }
        uint8_t label = tail >= min_voxels ? 1 : 0;
        if (label) {
            kept += tail;
            components++;
        }
        for (size_t q = 0; q < tail; q++) mask[queue[q]] = label ? 4 : 5;
    }
    free(queue);
    for (size_t v = 0; v < n; v++) mask[v] = mask[v] == 4 ? 1 : 0;

    const double voxel_ml = in->spacing[0] * in->spacing[1] * in->spacing[2] / 1000.0;
    host->set_score(host->ctx, "volume_ml", (double)kept * voxel_ml);
    host->set_score(host->ctx, "components", (double)components);
    if (host->log) {
        char line[128];
        snprintf(line, sizeof line, "threshold [%g, %g]: %zu components, %zu voxels", lower, upper, components, kept);
        host->log(host->ctx, IMHP_LOG_INFO, line);
    }
    return IMHP_OK;
}

static const imhp_model MODELS[] = {
    {sizeof(imhp_model), 0, MANIFEST, NULL, run, NULL},
};

static const imhp_plugin PLUGIN = {
    sizeof(imhp_plugin), IMHP_ABI_MAJOR, IMHP_ABI_MINOR, sizeof(imhp_model),
    "example-c-threshold", "1.0.0", 1, MODELS, NULL,
};

IMHP_EXPORT const imhp_plugin *imhost_plugin_entry(const imhp_host *host) {
    (void)host;
    return &PLUGIN;
}
