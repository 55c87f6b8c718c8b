/*
 * `resattn inspect`: a model's architecture (block, stem, attention, stages with their
 * widths and output sizes), the name `serve` gives it, its parameter count as PyTorch
 * counts it (BatchNorm running statistics apart), GFLOPs per image, and the precision and
 * kernel path each layer computes in (--precision); --json for machines.
 */
#include "cli/commands.h"
#include "model/model.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static json_t *summary_json(const resattn_model *m, const char *served_name) {
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
    json_object_set_new(o, "served_name", json_string(served_name));
    json_object_set_new(o, "num_bn_stats", json_integer((json_int_t)in->num_bn_stats));
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

static void print_text(const resattn_model *m, const char *served_name) {
    const resattn_model_info *in = resattn_model_get_info(m);
    printf("model:      %s (served as /v2/models/%s)\n", served_name, served_name);
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
    printf("parameters: %zu (+ %zu BatchNorm running statistics)\n", in->num_params,
           in->num_bn_stats);
    printf("GFLOPs:     %.4f per image\n", in->flops_per_image / 1e9);
    print_precision(m);
}

static void usage(FILE *f) {
    fprintf(f, "usage: resattn inspect [--model [NAME=]M.safetensors|builtin]\n"
               "                       [--precision fp32|bf16] [--json]\n\n"
               "Print a model's architecture, the name `resattn serve` gives it, its parameter\n"
               "count (as PyTorch's model.parameters(); BatchNorm running statistics apart),\n"
               "GFLOPs per image, and how it computes in the given precision on this CPU\n"
               "(default fp32, or RESATTN_PRECISION). Without --model, the built-in model is\n"
               "used.\n");
}

int resattn_cmd_inspect(int argc, char **argv) {
    const char *path = NULL, *precision = NULL;
    int as_json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--model")) {
            if (!(path = resattn_cli_value("inspect", argc, argv, &i)))
                return 2;
        } else if (!strcmp(argv[i], "--precision")) {
            if (!(precision = resattn_cli_value("inspect", argc, argv, &i)))
                return 2;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else {
            resattn_cli_unknown_option("inspect", argv[i]);
            return 2;
        }
    }
    resattn_precision prec;
    int rc = resattn_cli_precision("inspect", precision, &prec);
    if (rc)
        return rc;
    resattn_model *m = NULL;
    char name[128];
    rc = resattn_cli_load_model("inspect", path, prec, &m, name, sizeof name);
    if (rc)
        return rc;
    if (as_json) {
        json_t *o = summary_json(m, name);
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
        printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        print_text(m, name);
    }
    resattn_model_free(m);
    return 0;
}
