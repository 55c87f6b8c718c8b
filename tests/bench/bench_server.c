/*
 * Non-forward overhead of a 224x224 request, in process (no sockets): the time the protocol
 * codecs take to turn each request form into a float tensor and the logits into an answer,
 * against the forward pass of the same model (median of --reps runs each, one BLAS thread,
 * batch 1). Also times jansson parsing the same JSON body whole, the approach the scanner
 * replaces. Built and run by tests/bench/bench_server.sh:
 *
 *     bench_server_codec MODEL.safetensors [REPS] [cpu]
 *
 * Prints one Markdown table.
 */
#include "data/npy.h"
#include "protocol/protocol.h"
#include "protocol/protocol_common.h"

#include <cblas.h>
#include <jansson.h>
#include <resattn/resattn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Wall time, or (cpu_clock) this thread's CPU time: other jobs on a shared machine stretch
 * the first but hardly the second. OpenBLAS with one thread computes in the calling thread. */
static int cpu_clock;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(cpu_clock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* A JSON body: prefix, the count values of x printed with fmt (nested by img dims when
 * nested), suffix. */
static char *json_body(const char *prefix, const float *x, size_t count, const char *fmt,
                       int nested, int c, int h, int w, const char *suffix, size_t *len) {
    size_t cap = strlen(prefix) + strlen(suffix) + count * 28 + 64, o = 0;
    char *s = malloc(cap);
    o += (size_t)sprintf(s, "%s", prefix);
    if (nested) {
        s[o++] = '[';
        for (int ch = 0; ch < c; ch++) {
            o += (size_t)sprintf(s + o, "%s[", ch ? "," : "");
            for (int y = 0; y < h; y++) {
                o += (size_t)sprintf(s + o, "%s[", y ? "," : "");
                for (int xx = 0; xx < w; xx++) {
                    if (xx)
                        s[o++] = ',';
                    o += (size_t)sprintf(s + o, fmt, (double)x[((size_t)ch * h + y) * w + xx]);
                }
                s[o++] = ']';
            }
            s[o++] = ']';
        }
        s[o++] = ']';
    } else {
        s[o++] = '[';
        for (size_t i = 0; i < count; i++) {
            if (i)
                s[o++] = ',';
            o += (size_t)sprintf(s + o, fmt, (double)x[i]);
        }
        s[o++] = ']';
    }
    o += (size_t)sprintf(s + o, "%s", suffix);
    *len = o;
    return s;
}

typedef struct form {
    const char *name;
    const char *content_type; /* NULL: TF Serving */
    unsigned char *body;
    size_t len;
    long long hlen;
} form;

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.safetensors [REPS] [cpu]\n", argv[0]);
        return 2;
    }
    int reps = argc > 2 ? atoi(argv[2]) : 15;
    cpu_clock = argc > 3 && !strcmp(argv[3], "cpu");
    openblas_set_num_threads(1);
    char err[RESATTN_ERR_LEN];
    resattn_model *m = NULL;
    if (resattn_model_load_file(argv[1], &m, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const resattn_model_info *info = resattn_model_get_info(m);
    int c = info->in_channels, h = info->in_height, w = info->in_width, k = info->num_classes;
    size_t count = (size_t)c * h * w;
    float *x = malloc(count * sizeof(float)), *logits = malloc((size_t)k * sizeof(float));
    srand(1);
    for (size_t i = 0; i < count; i++) /* normalised-image-like values */
        x[i] = (float)((rand() / (double)RAND_MAX) * 4.2 - 2.1);
    resattn_ctx *ctx = NULL;
    if (resattn_ctx_new(m, 1, &ctx, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    double *t = malloc((size_t)reps * sizeof(double));
    resattn_forward(ctx, x, 1, logits, err, sizeof err); /* warm-up */
    for (int r = 0; r < reps; r++) {
        double t0 = now_ms();
        if (resattn_forward(ctx, x, 1, logits, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        t[r] = now_ms() - t0;
    }
    double fwd = median(t, reps);

    char v2pre[256], shape[64];
    snprintf(shape, sizeof shape, "[1,%d,%d,%d]", c, h, w);
    snprintf(v2pre, sizeof v2pre,
             "{\"id\":\"bench\",\"inputs\":[{\"name\":\"input\",\"shape\":%s,\"datatype\":"
             "\"FP32\",\"data\":",
             shape);
    form forms[7];
    int nf = 0;
    size_t len;
    char *b;
    b = json_body(v2pre, x, count, "%.9g", 0, c, h, w, "}]}", &len);
    forms[nf++] = (form){"v2 JSON, flat, %.9g", "application/json", (unsigned char *)b, len, -1};
    b = json_body(v2pre, x, count, "%.17g", 0, c, h, w, "}]}", &len);
    forms[nf++] = (form){"v2 JSON, flat, %.17g (numpy tolist)", "application/json",
                         (unsigned char *)b, len, -1};
    char v2pre_n[300];
    snprintf(v2pre_n, sizeof v2pre_n, "%s[", v2pre); /* the N level of [1,C,H,W] */
    b = json_body(v2pre_n, x, count, "%.9g", 1, c, h, w, "]}]}", &len);
    forms[nf++] = (form){"v2 JSON, nested, %.9g", "application/json", (unsigned char *)b, len, -1};
    b = json_body("{\"instances\":[", x, count, "%.9g", 1, c, h, w, "]}", &len);
    forms[nf++] = (form){"TF Serving instances, nested", NULL, (unsigned char *)b, len, -1};
    {
        char head[512];
        int hl = snprintf(head, sizeof head,
                          "{\"inputs\":[{\"name\":\"input\",\"shape\":%s,\"datatype\":\"FP32\","
                          "\"parameters\":{\"binary_data_size\":%zu}}],\"outputs\":[{\"name\":"
                          "\"logits\",\"parameters\":{\"binary_data\":true}}]}",
                          shape, count * 4);
        unsigned char *bb = malloc((size_t)hl + count * 4);
        memcpy(bb, head, (size_t)hl);
        memcpy(bb + hl, x, count * 4);
        forms[nf++] = (form){"v2 binary FP32 (binary logits)", "application/octet-stream", bb,
                             (size_t)hl + count * 4, hl};
    }
    {
        int64_t sh[4] = {1, c, h, w};
        unsigned char *nb;
        size_t nl;
        resattn_npy_encode(x, 4, sh, &nb, &nl);
        forms[nf++] = (form){"application/x-npy", "application/x-npy", nb, nl, -1};
    }
    resattn_parse_limits lim = {.max_batch = 8, .max_json_depth = 64};
    printf("Times are %s. Forward pass (batch 1, 1 BLAS thread), median of %d: %.2f ms\n\n",
           cpu_clock ? "this thread's CPU time" : "wall clock", reps, fwd);
    printf("| request form | body bytes | parse ms | encode ms | overhead / forward |\n");
    printf("|---|---:|---:|---:|---:|\n");
    for (int f = 0; f < nf; f++) {
        double *tp = malloc((size_t)reps * sizeof(double)),
               *te = malloc((size_t)reps * sizeof(double));
        for (int r = 0; r < reps; r++) {
            resattn_infer_request req;
            char perr[RESATTN_PROTO_ERR_LEN];
            double t0 = now_ms();
            int st = forms[f].content_type
                         ? resattn_v2_parse(forms[f].content_type, forms[f].body, forms[f].len,
                                            forms[f].hlen, info, &lim, &req, perr, sizeof perr)
                         : resattn_tfs_parse(forms[f].body, forms[f].len, info, &lim, &req, perr,
                                             sizeof perr);
            double t1 = now_ms();
            if (st) {
                fprintf(stderr, "%s: %d %s\n", forms[f].name, st, perr);
                return 1;
            }
            if (req.n != 1 || memcmp(req.input, x, count * sizeof(float))) {
                fprintf(stderr, "%s: wrong parse\n", forms[f].name);
                return 1;
            }
            resattn_response_body out;
            double t2 = now_ms();
            st = forms[f].content_type ? resattn_v2_encode(&req, "m", info, logits, 1, &out)
                                       : resattn_tfs_encode(&req, logits, 1, k, &out);
            te[r] = now_ms() - t2;
            tp[r] = t1 - t0;
            resattn_response_body_release(&out);
            resattn_infer_request_release(&req);
        }
        double p = median(tp, reps), e = median(te, reps);
        printf("| %s | %zu | %.2f | %.3f | %.1f%% |\n", forms[f].name, forms[f].len, p, e,
               100 * (p + e) / fwd);
        free(tp);
        free(te);
    }
    /* jansson parsing the first JSON body whole, for comparison */
    for (int r = 0; r < reps; r++) {
        double t0 = now_ms();
        json_t *j = json_loadb((const char *)forms[0].body, forms[0].len, 0, NULL);
        t[r] = now_ms() - t0;
        json_decref(j);
    }
    printf("\njansson json_loadb of the same %%.9g v2 JSON body whole (no conversion): %.2f ms "
           "(%.1f%% of the forward pass)\n",
           median(t, reps), 100 * median(t, reps) / fwd);
    for (int f = 0; f < nf; f++)
        free(forms[f].body);
    free(t);
    free(x);
    free(logits);
    resattn_ctx_free(ctx);
    resattn_model_free(m);
    return 0;
}
