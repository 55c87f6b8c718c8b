/*
 * `resattn inspect`: a model's architecture (block, stem, attention, stages with their
 * widths and output sizes), parameter count, GFLOPs per image, and the precision and kernel
 * path each layer computes in (--precision); --json for machines.
 * Also holds resattn_cli_load_model, the --model / built-in model loader of every command.
 */
#include "cli/commands.h"
#include "cli/default_model.h"
#include "model/model.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int resattn_cli_precision(const char *cmd, const char *value, resattn_precision *out) {
    const char *env = getenv("RESATTN_PRECISION");
    *out = RESATTN_PRECISION_FP32;
    if (env && *env && resattn_precision_parse(env, out)) {
        fprintf(stderr, "resattn %s: RESATTN_PRECISION '%s' is not fp32 or bf16\n", cmd, env);
        return 2;
    }
    if (value && resattn_precision_parse(value, out)) {
        fprintf(stderr, "resattn %s: --precision '%s' is not fp32 or bf16\n", cmd, value);
        return 2;
    }
    return 0;
}

int resattn_cli_load_model(const char *path, resattn_precision precision, resattn_model **out) {
    char err[RESATTN_ERR_LEN];
    resattn_status s;
    resattn_model_options opts = {.precision = precision};
    if (path) {
        s = resattn_model_load_file_opts(path, &opts, out, err, sizeof err);
    } else {
        if (resattn_default_model_size == 0) {
            fprintf(stderr, "resattn: no built-in model in this build; pass --model\n");
            return 2;
        }
        s = resattn_model_load_buffer_opts(resattn_default_model_data,
                                           (size_t)resattn_default_model_size, &opts, out, err,
                                           sizeof err);
        path = "(built-in model)";
    }
    if (s) {
        fprintf(stderr, "resattn: %s: %s\n", path, err);
        return 1;
    }
    const resattn_model_info *in = resattn_model_get_info(*out);
    if (in->precision != in->precision_requested)
        fprintf(stderr, "resattn: %s\n", RESATTN_BF16_FALLBACK_WARNING);
    return 0;
}

static const char *block_name(resattn_block_kind b) {
    return b == RESATTN_BLOCK_BASIC ? "basic" : "bottleneck";
}

static const char *stem_name(resattn_stem_kind s) {
    return s == RESATTN_STEM_IMAGENET ? "imagenet" : "cifar";
}

/* Every convolution the forward pass runs, in order: the stem, then each block's. */
static int network_convs(const resattn_model *m, const resattn_conv **convs, const char **names,
                         char (*buf)[48]) {
    int k = 0;
    convs[k] = &m->stem, names[k++] = "conv1";
    for (int i = 0; i < m->info.num_blocks; i++) {
        const resattn_block *b = &m->blocks[i];
        const resattn_conv *cs[4] = {&b->conv1, &b->conv2, &b->conv3,
                                     b->has_down ? &b->down : NULL};
        static const char *const part[4] = {"conv1", "conv2", "conv3", "downsample.0"};
        for (int j = 0; j < 4; j++)
            if (cs[j] && cs[j]->w) {
                snprintf(buf[k], sizeof buf[k], "%s.%s", b->name, part[j]);
                convs[k] = cs[j], names[k] = buf[k], k++;
            }
    }
    return k;
}

/* How each convolution computes: "bf16" (direct, BF16 products), "fp32" (direct), and with a
 * Winograd plan "+winograd-fp32" (taken for batches with enough tiles). */
static const char *conv_kind(const resattn_conv *c) {
    if (c->wb)
        return c->wino_m ? "bf16+winograd-fp32" : "bf16";
    return c->wino_m ? "fp32+winograd-fp32" : "fp32";
}

static json_t *layers_json(const resattn_model *m) {
    int max = 1 + 4 * m->info.num_blocks;
    const resattn_conv **convs = malloc(sizeof *convs * (size_t)max);
    const char **names = malloc(sizeof *names * (size_t)max);
    char(*buf)[48] = malloc(sizeof *buf * (size_t)max);
    json_t *a = json_array();
    if (convs && names && buf) {
        int n = network_convs(m, convs, names, buf);
        for (int i = 0; i < n; i++)
            json_array_append_new(a, json_pack("{s:s, s:s, s:i}", "name", names[i], "compute",
                                               conv_kind(convs[i]), "winograd_tile",
                                               convs[i]->wino_m));
        json_array_append_new(a, json_pack("{s:s, s:s, s:i}", "name", "fc", "compute",
                                           m->fc_wb ? "bf16" : "fp32", "winograd_tile", 0));
    }
    free(convs), free(names), free(buf);
    return a;
}

static json_t *summary_json(const resattn_model *m) {
    const resattn_model_info *in = resattn_model_get_info(m);
    json_t *stages = json_array();
    int bi = 0;
    for (int s = 0; s < in->num_stages; s++) {
        const resattn_block *last = &m->blocks[bi + in->layers[s] - 1];
        json_array_append_new(stages, json_pack("{s:i,s:i,s:i,s:i,s:i}", "blocks", in->layers[s],
                                                "planes", m->blocks[bi].cmid, "out_channels",
                                                last->cout, "height", last->ho, "width", last->wo));
        bi += in->layers[s];
    }
    json_t *o = json_pack(
        "{s:s?,s:s,s:s,s:s,s:i,s:{s:i,s:i,s:i},s:i,s:o,s:I,s:f,s:i,s:b}", "name", in->name, "block",
        block_name(in->block), "stem", stem_name(in->stem), "attention",
        resattn_attention_name(in->attention), "num_classes", in->num_classes, "input", "channels",
        in->in_channels, "height", in->in_height, "width", in->in_width, "stem_width", m->stem.cout,
        "stages", stages, "num_params", (json_int_t)in->num_params, "gflops_per_image",
        in->flops_per_image / 1e9, "num_blocks", in->num_blocks, "has_labels", in->labels != NULL);
    json_object_set_new(o, "precision", json_string(resattn_precision_name(in->precision)));
    json_object_set_new(o, "precision_requested",
                        json_string(resattn_precision_name(in->precision_requested)));
    json_object_set_new(o, "kernel_path", json_string(in->kernel_path));
    json_object_set_new(o, "layers", layers_json(m));
    if (in->labels) {
        json_t *labels = json_array();
        for (int i = 0; i < in->num_classes; i++)
            json_array_append_new(labels, json_string(in->labels[i]));
        json_object_set_new(o, "labels", labels);
    }
    if (in->preprocess_json)
        json_object_set_new(o, "preprocess", json_loads(in->preprocess_json, 0, NULL));
    return o;
}

/* e.g. "precision:  bf16 on avx512bf16 (asked bf16): 20 of 20 convolutions and the classifier
 * in BF16 products, 13 with FP32 Winograd at batches with enough tiles" */
static void print_precision(const resattn_model *m) {
    const resattn_model_info *in = resattn_model_get_info(m);
    int bf16 = in->precision == RESATTN_PRECISION_BF16;
    printf("precision:  %s%s%s (asked %s)", resattn_precision_name(in->precision),
           bf16 ? " on " : "", bf16 ? in->kernel_path : "",
           resattn_precision_name(in->precision_requested));
    int max = 1 + 4 * in->num_blocks, nb = 0, nw = 0;
    const resattn_conv **convs = malloc(sizeof *convs * (size_t)max);
    const char **names = malloc(sizeof *names * (size_t)max);
    char(*buf)[48] = malloc(sizeof *buf * (size_t)max);
    int n = convs && names && buf ? network_convs(m, convs, names, buf) : 0;
    for (int i = 0; i < n; i++)
        nb += convs[i]->wb != NULL, nw += convs[i]->wino_m != 0;
    if (m->fc_wb)
        printf(": %d of %d convolutions and the classifier in BF16 products", nb, n);
    if (nw)
        printf("%s %d with FP32 Winograd at batches with enough tiles", m->fc_wb ? "," : ":", nw);
    printf("\n");
    free(convs), free(names), free(buf);
}

static void print_text(const resattn_model *m) {
    const resattn_model_info *in = resattn_model_get_info(m);
    printf("model:      %s\n", in->name ? in->name : "(unnamed)");
    printf("network:    %s blocks, %s stem, attention %s\n", block_name(in->block),
           stem_name(in->stem), resattn_attention_name(in->attention));
    printf("input:      %d x %d x %d (C x H x W)\n", in->in_channels, in->in_height, in->in_width);
    printf("stem:       conv %dx%d/%d -> %d channels, %d x %d%s\n", m->stem.k, m->stem.k,
           m->stem.stride, m->stem.cout, m->stem_h, m->stem_w,
           in->stem == RESATTN_STEM_IMAGENET ? ", maxpool 3x3/2" : "");
    int bi = 0;
    for (int s = 0; s < in->num_stages; s++) {
        const resattn_block *first = &m->blocks[bi], *last = &m->blocks[bi + in->layers[s] - 1];
        printf("layer%d:     %d block%s, width %d -> %d channels, %d x %d\n", s + 1, in->layers[s],
               in->layers[s] > 1 ? "s" : "", first->cmid, last->cout, last->ho, last->wo);
        bi += in->layers[s];
    }
    printf("head:       global average pool, fc %d -> %d classes%s\n", m->feat_c, in->num_classes,
           in->labels ? " (labelled)" : "");
    printf("parameters: %zu\n", in->num_params);
    printf("GFLOPs:     %.4f per image\n", in->flops_per_image / 1e9);
    print_precision(m);
}

static void usage(FILE *f) {
    fprintf(f, "usage: resattn inspect [--model M.safetensors] [--precision fp32|bf16] [--json]\n\n"
               "Print a model's architecture, parameter count and GFLOPs per image, and how it\n"
               "computes in the given precision on this CPU (default fp32, or\n"
               "RESATTN_PRECISION). Without --model, the built-in model is used.\n");
}

int resattn_cmd_inspect(int argc, char **argv) {
    const char *path = NULL, *precision = NULL;
    int as_json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            path = argv[++i];
        } else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
            precision = argv[++i];
        } else if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else {
            fprintf(stderr, "resattn inspect: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    resattn_precision prec;
    int rc = resattn_cli_precision("inspect", precision, &prec);
    if (rc)
        return rc;
    resattn_model *m = NULL;
    if ((rc = resattn_cli_load_model(path, prec, &m)))
        return rc;
    if (as_json) {
        json_t *o = summary_json(m);
        char *s = json_dumps(o, JSON_INDENT(2));
        printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        print_text(m);
    }
    resattn_model_free(m);
    return 0;
}
