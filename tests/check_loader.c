/*
 * Bad model files: each must give the right status and a one-line message naming the
 * offending tensor or field, never a crash or an out-of-bounds read (run under ASan too).
 * Files are crafted in memory with tests/util_st.c from a valid basic/SE network; the
 * same files also go through the `resattn` binary (RESATTN_BIN), which must exit non-zero
 * with a one-line error.
 */
#include "data/npy.h"
#include "util_st.h"

#include <check.h>
#include <resattn/resattn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const int layers2[2] = {1, 1}, widths2[2] = {4, 8};

/* A valid SE-ResNet: cifar stem, 2 stages (the second with a downsample), 3 channels in. */
static void valid_model(ut_model *m) {
    ut_model_init(m, NULL, 42);
    ut_build_resnet(m, "basic", "cifar", "se", 2, layers2, widths2, 3, 9, 7, 5);
}

/* Load bytes; check status and that err contains each of the needles. */
static void expect_fail(const unsigned char *buf, size_t len, resattn_status want,
                        const char *needle1, const char *needle2) {
    char err[RESATTN_ERR_LEN] = "";
    resattn_model *m = (resattn_model *)1;
    resattn_status s = resattn_model_load_buffer(buf, len, &m, err, sizeof err);
    ck_assert_msg(s == want, "status %s (want %s): %s", resattn_status_name(s),
                  resattn_status_name(want), err);
    ck_assert_ptr_null(m);
    ck_assert_msg(strchr(err, '\n') == NULL && strlen(err) > 0, "not one line: '%s'", err);
    ck_assert_msg(!needle1 || strstr(err, needle1), "'%s' does not name '%s'", err, needle1);
    ck_assert_msg(!needle2 || strstr(err, needle2), "'%s' does not say '%s'", err, needle2);
}

static void expect_model_fail(const ut_model *m, resattn_status want, const char *n1,
                              const char *n2) {
    size_t len;
    unsigned char *buf = ut_serialize(m, &len);
    expect_fail(buf, len, want, n1, n2);
    free(buf);
}

START_TEST(valid_model_loads) {
    ut_model m;
    valid_model(&m);
    int64_t one[1] = {1};
    ut_tensor *t = ut_add(&m, "layer1.0.bn1.num_batches_tracked", 1, one, 0);
    strcpy(t->dtype, "I64"); /* integer tensors are ignored */
    size_t len;
    unsigned char *buf = ut_serialize(&m, &len);
    char err[RESATTN_ERR_LEN] = "";
    resattn_model *model = NULL;
    ck_assert_msg(resattn_model_load_buffer(buf, len, &model, err, sizeof err) == RESATTN_OK, "%s",
                  err);
    const resattn_model_info *in = resattn_model_get_info(model);
    ck_assert_int_eq(in->num_blocks, 2);
    ck_assert_int_eq(in->num_classes, 5);
    ck_assert_int_eq(in->in_channels, 3);
    ck_assert_str_eq(resattn_model_block_name(model, 1), "layer2.0");
    ck_assert_ptr_null(resattn_model_block_name(model, 2));
    /* PyTorch's parameters() leaves out the BatchNorm running statistics (buffers) */
    size_t params = 0, stats = 0;
    for (int i = 0; i < m.n; i++)
        if (strstr(m.t[i].name, ".running_"))
            stats += m.t[i].count;
        else if (strcmp(m.t[i].dtype, "I64"))
            params += m.t[i].count;
    ck_assert_uint_gt(stats, 0);
    ck_assert_uint_eq(in->num_params, params);
    ck_assert_uint_eq(in->num_bn_stats, stats);
    ck_assert(in->flops_per_image > 0);
    resattn_model_free(model);
    resattn_model_free(NULL);
    free(buf);
    ut_model_free(&m);
}
END_TEST

START_TEST(truncated_file) {
    unsigned char b[5] = {1, 0, 0, 0, 0};
    expect_fail(b, sizeof b, RESATTN_ERR_FORMAT, "truncated", NULL);
    ut_model m;
    valid_model(&m);
    size_t len;
    unsigned char *buf = ut_serialize(&m, &len);
    /* data section cut short: the last tensor's end lies beyond it */
    expect_fail(buf, len - 3, RESATTN_ERR_FORMAT, "beyond the data section", NULL);
    free(buf);
    ut_model_free(&m);
}
END_TEST

START_TEST(header_length_beyond_file) {
    ut_model m;
    valid_model(&m);
    size_t len;
    unsigned char *buf = ut_serialize(&m, &len);
    uint64_t big = (uint64_t)len; /* > len - 8 */
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(big >> (8 * i));
    expect_fail(buf, len, RESATTN_ERR_FORMAT, "header length", NULL);
    for (int i = 0; i < 8; i++)
        buf[i] = 0xff;
    expect_fail(buf, len, RESATTN_ERR_FORMAT, "header length", NULL);
    free(buf);
    ut_model_free(&m);
}
END_TEST

START_TEST(offsets_outside_buffer) {
    ut_model m;
    valid_model(&m);
    ut_tensor *t = ut_find(&m, "layer1.0.conv2.weight");
    t->override_offsets = 1;
    t->begin = 1 << 30;
    t->end = t->begin + (int64_t)t->count * 4;
    expect_model_fail(&m, RESATTN_ERR_FORMAT, "layer1.0.conv2.weight", "beyond");
    t->begin = 8, t->end = 4; /* end < begin */
    expect_model_fail(&m, RESATTN_ERR_FORMAT, "layer1.0.conv2.weight", "begin <= end");
    t->begin = -4, t->end = 4;
    expect_model_fail(&m, RESATTN_ERR_FORMAT, "layer1.0.conv2.weight", NULL);
    ut_model_free(&m);
}
END_TEST

START_TEST(overlapping_offsets) {
    ut_model m;
    valid_model(&m);
    ut_tensor *a = ut_find(&m, "fc.bias"), *b = ut_find(&m, "bn1.bias");
    ck_assert_int_eq(a->count, 5);
    ck_assert_int_eq(b->count, 4);
    a->override_offsets = 1; /* fc.bias [5] over bytes 0..20, which conv1.weight owns */
    a->begin = 0, a->end = 20;
    expect_model_fail(&m, RESATTN_ERR_FORMAT, "overlapping", "conv1.weight");
    ut_model_free(&m);
}
END_TEST

START_TEST(wrong_dtype) {
    ut_model m;
    valid_model(&m);
    ut_tensor *t = ut_find(&m, "layer2.0.bn1.running_var");
    strcpy(t->dtype, "I64"); /* an integer where a float is required */
    expect_model_fail(&m, RESATTN_ERR_TENSOR, "layer2.0.bn1.running_var", "I64");
    strcpy(t->dtype, "F64");
    expect_model_fail(&m, RESATTN_ERR_TENSOR, "layer2.0.bn1.running_var", "F64");
    strcpy(t->dtype, "Q4");
    expect_model_fail(&m, RESATTN_ERR_FORMAT, "layer2.0.bn1.running_var", "unknown dtype");
    ut_model_free(&m);
}
END_TEST

START_TEST(size_disagrees_with_shape) {
    ut_model m;
    valid_model(&m);
    ut_tensor *t = ut_find(&m, "fc.weight");
    t->override_offsets = 1; /* one float short */
    t->begin = 1 << 20, t->end = t->begin + (int64_t)t->count * 4 - 4;
    unsigned char *buf;
    size_t len;
    buf = ut_serialize(&m, &len);
    free(buf);
    /* put it inside the data: make it the only tensor to keep the check isolated */
    ut_model one;
    ut_model_init(&one, m.config, 1);
    int64_t s[2] = {5, 8};
    ut_tensor *o = ut_add(&one, "fc.weight", 2, s, 1);
    o->override_offsets = 1, o->begin = 0, o->end = 36;
    int64_t extra[1] = {4};
    ut_add(&one, "pad", 1, extra, 1)->override_offsets = 1;
    one.t[1].begin = 160, one.t[1].end = 176;
    expect_model_fail(&one, RESATTN_ERR_FORMAT, "fc.weight", "needs 160");
    ut_model_free(&one);
    ut_model_free(&m);
}
END_TEST

START_TEST(missing_tensor) {
    static const char *const names[] = {"layer1.0.bn2.running_var", "layer2.0.downsample.0.weight",
                                        "layer2.0.se.fc2.bias", "fc.bias", "conv1.weight"};
    for (int i = 0; i < 5; i++) {
        ut_model m;
        valid_model(&m);
        ck_assert(ut_remove(&m, names[i]));
        expect_model_fail(&m, RESATTN_ERR_TENSOR, names[i], "missing");
        ut_model_free(&m);
    }
}
END_TEST

START_TEST(extra_tensor) {
    ut_model m;
    valid_model(&m);
    int64_t s[1] = {4};
    ut_add(&m, "layer1.0.bn3.weight", 1, s, 1);
    expect_model_fail(&m, RESATTN_ERR_TENSOR, "layer1.0.bn3.weight", "unexpected");
    ut_model_free(&m);
    /* a downsample where the block keeps its shape is extra too */
    valid_model(&m);
    int64_t d[4] = {4, 4, 1, 1};
    ut_add(&m, "layer1.0.downsample.0.weight", 4, d, 1);
    expect_model_fail(&m, RESATTN_ERR_TENSOR, "layer1.0.downsample.0.weight", "unexpected");
    ut_model_free(&m);
}
END_TEST

START_TEST(shape_contradicts_config) {
    ut_model m;
    valid_model(&m);
    /* the config says 3 input channels, conv1 takes 1 */
    ut_remove(&m, "conv1.weight");
    int64_t s[4] = {4, 1, 3, 3};
    ut_add(&m, "conv1.weight", 4, s, 1);
    expect_model_fail(&m, RESATTN_ERR_TENSOR, "conv1.weight", "expected [*, 3, 3, 3]");
    ut_model_free(&m);
    /* num_classes 7 in the config, fc has 5 rows */
    valid_model(&m);
    char *cfg = strdup(m.config), *p = strstr(cfg, "\"num_classes\": 5");
    p[15] = '7';
    ut_set_config(&m, cfg);
    free(cfg);
    expect_model_fail(&m, RESATTN_ERR_TENSOR, "fc.weight", "expected [7, 8]");
    ut_model_free(&m);
    /* a stem kernel that contradicts the stem kind (imagenet wants 7x7) */
    valid_model(&m);
    cfg = strdup(m.config);
    p = strstr(cfg, "cifar");
    memcpy(p, "xxxxx", 5);
    char *fixed = malloc(strlen(cfg) + 8);
    sprintf(fixed, "%.*simagenet%s", (int)(p - cfg), cfg, p + 5);
    ut_set_config(&m, fixed);
    free(cfg), free(fixed);
    expect_model_fail(&m, RESATTN_ERR_TENSOR, "conv1.weight", "expected [*, 3, 7, 7]");
    ut_model_free(&m);
}
END_TEST

START_TEST(shape_contradicts_neighbour) {
    ut_model m;
    valid_model(&m);
    /* conv2 of layer1.0 reads 6 channels but conv1 makes 4 */
    ut_remove(&m, "layer1.0.conv2.weight");
    int64_t s[4] = {4, 6, 3, 3};
    ut_add(&m, "layer1.0.conv2.weight", 4, s, 1);
    expect_model_fail(&m, RESATTN_ERR_TENSOR, "layer1.0.conv2.weight", "expected [*, 4, 3, 3]");
    ut_model_free(&m);
    /* a BN of the wrong width */
    valid_model(&m);
    ut_remove(&m, "layer2.0.bn2.running_mean");
    int64_t b[1] = {7};
    ut_add(&m, "layer2.0.bn2.running_mean", 1, b, 1);
    expect_model_fail(&m, RESATTN_ERR_TENSOR, "layer2.0.bn2.running_mean", "expected [8]");
    ut_model_free(&m);
    /* SE reduction widths disagree between fc1 and fc2 */
    valid_model(&m);
    ut_remove(&m, "layer2.0.se.fc2.weight");
    int64_t f[4] = {8, 3, 1, 1};
    ut_add(&m, "layer2.0.se.fc2.weight", 4, f, 1);
    expect_model_fail(&m, RESATTN_ERR_TENSOR, "layer2.0.se.fc2.weight", "expected [8, 2, 1, 1]");
    ut_model_free(&m);
}
END_TEST

START_TEST(bad_config_fields) {
    static const struct {
        const char *from, *to, *needle;
    } cases[] = {
        {"\"attention\": \"se\"", "\"attention\": \"fancy\"", "attention \"fancy\""},
        {"\"block\": \"basic\"", "\"block\": 3", "\"block\""},
        {"\"layers\": [1, 1]", "\"layers\": [1, 0]", "layers[1]"},
        {"\"layers\": [1, 1]", "\"layers\": [1, 1, 1, 1, 1, 1, 1]", "\"layers\""},
        {"\"num_classes\": 5", "\"num_classes\": 0", "num_classes"},
        {"\"height\": 9", "\"height\": -9", "input.height"},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"labels\": [\"a\"]", "labels"},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"bn_eps\": \"x\"", "bn_eps"},
        {"\"stem\": \"cifar\", ", "", "\"stem\""},
        {"{", "{{", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ut_model m;
        valid_model(&m);
        char *p = strstr(m.config, cases[i].from);
        ck_assert_msg(p != NULL, "case %zu", i);
        char *cfg = malloc(strlen(m.config) + strlen(cases[i].to) + 1);
        sprintf(cfg, "%.*s%s%s", (int)(p - m.config), m.config, cases[i].to,
                p + strlen(cases[i].from));
        ut_set_config(&m, cfg);
        free(cfg);
        expect_model_fail(&m, RESATTN_ERR_CONFIG, cases[i].needle, NULL);
        ut_model_free(&m);
    }
    ut_model m;
    valid_model(&m);
    ut_set_config(&m, NULL);
    expect_model_fail(&m, RESATTN_ERR_CONFIG, "resattn.config", "missing");
    ut_model_free(&m);
}
END_TEST

/* The valid model's config with `from` replaced by `to` (which must occur). */
static void edit_config(ut_model *m, const char *from, const char *to) {
    char *p = strstr(m->config, from);
    ck_assert_msg(p != NULL, "'%s' not in the config", from);
    char *cfg = malloc(strlen(m->config) + strlen(to) + 1);
    sprintf(cfg, "%.*s%s%s", (int)(p - m->config), m->config, to, p + strlen(from));
    ut_set_config(m, cfg);
    free(cfg);
}

/* The ImageNet-style preprocess of a 3-channel model, with `extra` appended inside it. */
static char *imagenet_preprocess(const char *extra) {
    static char buf[512];
    snprintf(buf, sizeof buf,
             "\"num_classes\": 5, \"preprocess\": {\"color\": \"rgb\", \"resize\": "
             "\"shorter\", \"resize_size\": 10, \"mean\": [0.485, 0.456, 0.406], \"std\": "
             "[0.229, 0.224, 0.225]%s}",
             extra);
    return buf;
}

/* Everything that would make every image request fail later is refused at load, naming the
 * key; so is any key the contract does not define. */
START_TEST(config_refused_at_load) {
    const struct {
        const char *from, *to, *needle;
    } cases[] = {
        {"\"num_classes\": 5", "\"num_classes\": 5, \"preprocess\": {\"stdev\": [1, 1, 1]}",
         "\"stdev\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"preprocess\": {\"interpolation\": 2}",
         "\"interpolation\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"preprocess\": {\"color\": \"gray\"}",
         "input.channels"},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"preprocess\": {\"color\": \"bgr\"}",
         "\"color\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"preprocess\": {\"mean\": [0.5, 0.5]}",
         "\"mean\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"preprocess\": {\"std\": [1, 1, 1, 1]}",
         "\"std\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"preprocess\": {\"std\": 0}", "\"std\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"preprocess\": {\"resize_size\": 256}",
         "\"resize_size\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"preprocess\": {\"scale\": \"255\"}",
         "\"scale\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"preprocess\": {\"invert\": 1}", "\"invert\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"preprocess\": []", "\"preprocess\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"labels\": [\"a\", \"b\"]", "labels"},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"labels\": [\"a\", \"b\", \"c\", \"d\", 5]",
         "labels[4]"},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"lables\": []", "\"lables\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"widths\": [4, 8]", "\"widths\""},
        {"\"width\": 7", "\"width\": 7, \"depth\": 1", "\"input.depth\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"name\": \"a/b\"", "\"name\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"name\": \"\"", "\"name\""},
        {"\"num_classes\": 5", "\"num_classes\": 5, \"name\": \"my model\"", "\"name\""},
        {"\"num_classes\": 5", imagenet_preprocess(", \"antialias\": true"), "\"antialias\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ut_model m;
        valid_model(&m);
        edit_config(&m, cases[i].from, cases[i].to);
        expect_model_fail(&m, RESATTN_ERR_CONFIG, cases[i].needle, NULL);
        ut_model_free(&m);
    }
    /* a preprocess on a model whose input no image fits (4 channels) */
    ut_model m;
    ut_model_init(&m, NULL, 7);
    ut_build_resnet(&m, "basic", "cifar", "none", 2, layers2, widths2, 4, 9, 7, 5);
    edit_config(&m, "\"num_classes\": 5", "\"num_classes\": 5, \"preprocess\": {}");
    expect_model_fail(&m, RESATTN_ERR_CONFIG, "preprocess", "1 or 3 channels");
    ut_model_free(&m);
}
END_TEST

/* The full ImageNet-style config loads, keeps its preprocess and name. */
START_TEST(imagenet_preprocess_loads) {
    ut_model m;
    valid_model(&m);
    edit_config(&m, "\"num_classes\": 5",
                imagenet_preprocess(", \"scale\": 255, \"invert\": false"));
    edit_config(&m, "\"num_classes\": 5", "\"num_classes\": 5, \"name\": \"resnet-ish_v1.2\"");
    size_t len;
    unsigned char *buf = ut_serialize(&m, &len);
    char err[RESATTN_ERR_LEN] = "";
    resattn_model *model = NULL;
    ck_assert_msg(resattn_model_load_buffer(buf, len, &model, err, sizeof err) == RESATTN_OK, "%s",
                  err);
    const resattn_model_info *in = resattn_model_get_info(model);
    ck_assert_str_eq(in->name, "resnet-ish_v1.2");
    ck_assert_ptr_nonnull(strstr(in->preprocess_json, "\"resize_size\":10"));
    resattn_model_free(model);
    free(buf);
    ut_model_free(&m);
}
END_TEST

/* A file that is not safetensors at all says so, naming the file, instead of reporting the
 * first 8 bytes as an absurd header length. */
START_TEST(not_safetensors) {
    char dir[] = "/tmp/resattn-notst-XXXXXX", path[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    static const char *const heads[] = {
        "\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "\xff\xd8\xff\xe0\0\x10JFIF\0",
        "PK\x03\x04 a zip, e.g. torch.save", "{\"block\": \"basic\", \"layers\": [1]}"};
    for (int i = 0; i < 4; i++) {
        size_t n = strlen(heads[i]) > 12 ? strlen(heads[i]) : 16;
        unsigned char b[64] = {0};
        memcpy(b, heads[i], strlen(heads[i]));
        expect_fail(b, n, RESATTN_ERR_FORMAT, "not a safetensors file", NULL);
        snprintf(path, sizeof path, "%s/file%d.safetensors", dir, i);
        ck_assert_int_eq(ut_write_file(path, b, n), 0);
        char err[RESATTN_ERR_LEN] = "", want[300];
        resattn_model *m = NULL;
        ck_assert_int_eq(resattn_model_load_file(path, &m, err, sizeof err), RESATTN_ERR_FORMAT);
        snprintf(want, sizeof want, "not a safetensors file: %s", path);
        ck_assert_msg(!strncmp(err, want, strlen(want)), "'%s'", err);
        ck_assert_ptr_null(m);
        unlink(path);
    }
    /* other errors of a file name it too */
    char err[RESATTN_ERR_LEN] = "";
    resattn_model *m = NULL;
    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    ck_assert_int_eq(resattn_model_load_file(path, &m, err, sizeof err), RESATTN_ERR_IO);
    ck_assert_msg(strstr(err, path) && strstr(err, "No such file"), "'%s'", err);
    rmdir(dir);
}
END_TEST

START_TEST(invalid_header_json) {
    static const char *const headers[] = {"{\"a\": ", "[1, 2]", "{\"x\": {\"dtype\": \"F32\"}}",
                                          "{\"x\": 1, \"x\": 2}", "not json at all"};
    for (int i = 0; i < 5; i++) {
        size_t hl = strlen(headers[i]);
        unsigned char buf[128] = {0};
        buf[0] = (unsigned char)hl;
        memcpy(buf + 8, headers[i], hl);
        expect_fail(buf, 8 + hl, RESATTN_ERR_FORMAT, NULL, NULL);
    }
}
END_TEST

/* Also through the binary: non-zero exit, exactly one line on stderr, nothing crashes. */
START_TEST(cli_reports_one_line) {
    const char *bin = getenv("RESATTN_BIN");
    ck_assert_msg(bin != NULL, "RESATTN_BIN not set (run through make unit)");
    char dir[] = "/tmp/resattn-loader-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ut_model m;
    valid_model(&m);
    ut_remove(&m, "layer2.0.se.fc1.bias");
    size_t len;
    unsigned char *buf = ut_serialize(&m, &len);
    char path[256], errp[256], cmd[1024];
    const struct {
        const unsigned char *data;
        size_t len;
        const char *needle;
    } files[] = {{buf, len, "layer2.0.se.fc1.bias"}, {buf, 5, "truncated"}, {buf, len / 2, NULL}};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/bad%d.safetensors", dir, i);
        snprintf(errp, sizeof errp, "%s/err%d.txt", dir, i);
        ck_assert_int_eq(ut_write_file(path, files[i].data, files[i].len), 0);
        const char *sub[2] = {"inspect --model", "bench --iters 1 --model"};
        for (int k = 0; k < 2; k++) {
            snprintf(cmd, sizeof cmd, "%s %s %s >/dev/null 2>%s", bin, sub[k], path, errp);
            int st = system(cmd);
            ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) < 128,
                          "%s: status %d", cmd, st);
            size_t el;
            unsigned char *e = ut_read_file(errp, &el);
            ck_assert_ptr_nonnull(e);
            int lines = 0;
            for (size_t j = 0; j < el; j++)
                lines += e[j] == '\n';
            ck_assert_msg(lines == 1, "%s: %d lines on stderr", cmd, lines);
            if (files[i].needle)
                ck_assert_msg(memmem(e, el, files[i].needle, strlen(files[i].needle)),
                              "%s: stderr does not name %s", cmd, files[i].needle);
            free(e);
            unlink(errp);
        }
        unlink(path);
    }
    rmdir(dir);
    free(buf);
    ut_model_free(&m);
}
END_TEST

/* Random byte flips and truncations of a valid file: a clean status every time, no crash
 * (the sanitizer build turns any out-of-bounds read into a failure). */
START_TEST(mutated_files_never_crash) {
    ut_model m;
    valid_model(&m);
    size_t len;
    unsigned char *good = ut_serialize(&m, &len), *buf = malloc(len);
    uint32_t r = 2024;
    int failures = 0;
    for (int it = 0; it < 600; it++) {
        memcpy(buf, good, len);
        size_t hl = (size_t)good[0] | (size_t)good[1] << 8;
        int flips = 1 + it % 4;
        for (int f = 0; f < flips; f++) {
            r = r * 1664525u + 1013904223u;
            size_t at = it % 2 ? 8 + (r >> 8) % hl : (r >> 8) % len; /* mostly the header */
            r = r * 1664525u + 1013904223u;
            buf[at] = (unsigned char)(r >> 24);
        }
        size_t cut = it % 5 == 0 ? (r >> 4) % len : len;
        char err[RESATTN_ERR_LEN] = "";
        resattn_model *model = NULL;
        resattn_status s = resattn_model_load_buffer(buf, cut, &model, err, sizeof err);
        if (s != RESATTN_OK) {
            failures++;
            ck_assert_ptr_null(model);
            ck_assert_msg(strlen(err) > 0 && !strchr(err, '\n'), "bad message '%s'", err);
        }
        resattn_model_free(model);
    }
    ck_assert_int_gt(failures, 100);
    free(buf);
    free(good);
    ut_model_free(&m);
}
END_TEST

/* .npy: our encoder round-trips; hand-made files in other dtypes convert; bad ones fail. */
START_TEST(npy_roundtrip_and_errors) {
    float data[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-3f, -7.0f};
    int64_t shape[3] = {1, 2, 3};
    unsigned char *buf;
    size_t len;
    ck_assert(resattn_npy_encode(data, 3, shape, &buf, &len) == RESATTN_OK);
    ck_assert_int_eq((len - 6 * 4) % 64, 0); /* data 64-byte aligned */
    resattn_npy a;
    char err[RESATTN_ERR_LEN];
    ck_assert(resattn_npy_parse(buf, len, &a, err, sizeof err) == RESATTN_OK);
    ck_assert_int_eq(a.ndim, 3);
    ck_assert_int_eq(a.shape[2], 3);
    ck_assert_uint_eq(a.count, 6);
    ck_assert(memcmp(a.data, data, sizeof data) == 0);
    resattn_npy_release(&a);
    ck_assert(resattn_npy_parse(buf, len - 1, &a, err, sizeof err) == RESATTN_ERR_FORMAT);
    ck_assert(resattn_npy_parse(buf, 9, &a, err, sizeof err) == RESATTN_ERR_FORMAT);
    buf[0] = 'X';
    ck_assert(resattn_npy_parse(buf, len, &a, err, sizeof err) == RESATTN_ERR_FORMAT);
    free(buf);
    /* float64 and int16 by hand */
    static const struct {
        const char *descr;
        unsigned char bytes[16];
        size_t nbytes;
        float want[2];
    } cases[] = {{"<f8", {0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0xc0}, 16, {1.5f, -2}},
                 {"<i2", {0xff, 0xff, 7, 0}, 4, {-1, 7}},
                 {"|u1", {200, 3}, 2, {200, 3}},
                 {"<f2", {0x00, 0x3c, 0x00, 0xc0}, 4, {1, -2}}};
    for (int i = 0; i < 4; i++) {
        unsigned char f[128];
        char hdr[80];
        int hl =
            snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (2,), }\n",
                     cases[i].descr);
        memcpy(f, "\x93NUMPY\x01\x00", 8);
        f[8] = (unsigned char)hl, f[9] = 0;
        memcpy(f + 10, hdr, (size_t)hl);
        memcpy(f + 10 + hl, cases[i].bytes, cases[i].nbytes);
        ck_assert_msg(resattn_npy_parse(f, 10 + (size_t)hl + cases[i].nbytes, &a, err,
                                        sizeof err) == RESATTN_OK,
                      "%s: %s", cases[i].descr, err);
        ck_assert_float_eq(a.data[0], cases[i].want[0]);
        ck_assert_float_eq(a.data[1], cases[i].want[1]);
        resattn_npy_release(&a);
        /* one byte short of the shape */
        ck_assert(resattn_npy_parse(f, 10 + (size_t)hl + cases[i].nbytes - 1, &a, err,
                                    sizeof err) == RESATTN_ERR_FORMAT);
    }
}
END_TEST

Suite *loader_suite(void) {
    Suite *s = suite_create("loader");
    TCase *tc = tcase_create("bad_files");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, valid_model_loads);
    tcase_add_test(tc, truncated_file);
    tcase_add_test(tc, header_length_beyond_file);
    tcase_add_test(tc, offsets_outside_buffer);
    tcase_add_test(tc, overlapping_offsets);
    tcase_add_test(tc, wrong_dtype);
    tcase_add_test(tc, size_disagrees_with_shape);
    tcase_add_test(tc, missing_tensor);
    tcase_add_test(tc, extra_tensor);
    tcase_add_test(tc, shape_contradicts_config);
    tcase_add_test(tc, shape_contradicts_neighbour);
    tcase_add_test(tc, bad_config_fields);
    tcase_add_test(tc, config_refused_at_load);
    tcase_add_test(tc, imagenet_preprocess_loads);
    tcase_add_test(tc, not_safetensors);
    tcase_add_test(tc, invalid_header_json);
    tcase_add_test(tc, cli_reports_one_line);
    tcase_add_test(tc, mutated_files_never_crash);
    tcase_add_test(tc, npy_roundtrip_and_errors);
    suite_add_tcase(s, tc);
    return s;
}
