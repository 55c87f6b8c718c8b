/*
 * Attention masks from real models, end to end below the server: the PyTorch fixtures
 * (tests/fixtures/<block>_<stem>_<attention>.*) run with mask capture on; each image's
 * slice copied by resattn_mask_set_copy equals the PyTorch forward-hook masks within 1e-5,
 * and the pictures `resattn predict --attention-dir` and the server produce are written for
 * every attention type (se, eca, cbam, ca), decode with libpng and have the expected size.
 */
#include "maps/heatmap.h"
#include "maps/mask_summary.h"
#include "data/npy.h"
#include "model/safetensors.h"
#include "util_http.h"
#include "util_st.h"

#include <check.h>
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Cases: every attention type with both stems and both block kinds among them. */
static const char *const cases[] = {
    "basic_cifar_se",           "basic_cifar_eca",        "basic_cifar_cbam",
    "basic_cifar_ca",           "bottleneck_imagenet_se", "bottleneck_imagenet_eca",
    "bottleneck_imagenet_cbam", "bottleneck_imagenet_ca",
};
#define NCASES (int)(sizeof cases / sizeof cases[0])

typedef struct run {
    resattn_model *model;
    resattn_ctx *ctx;
    resattn_npy x; /* input [n, c, h, w] */
    int n;
} run;

/* Load fixture `name`, run its input with capture on. */
static void run_fixture(const char *name, run *r) {
    char path[256], err[RESATTN_ERR_LEN];
    snprintf(path, sizeof path, "tests/fixtures/%s.safetensors", name);
    ck_assert_msg(resattn_model_load_file(path, &r->model, err, sizeof err) == RESATTN_OK, "%s",
                  err);
    snprintf(path, sizeof path, "tests/fixtures/%s.in.npy", name);
    size_t len;
    unsigned char *buf = ut_read_file(path, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", path);
    ck_assert_msg(resattn_npy_parse(buf, len, &r->x, err, sizeof err) == RESATTN_OK, "%s", err);
    free(buf);
    r->n = (int)r->x.shape[0];
    ck_assert(resattn_ctx_new(r->model, r->n, &r->ctx, err, sizeof err) == RESATTN_OK);
    resattn_ctx_capture_masks(r->ctx, 1);
    float *logits = malloc((size_t)r->n * 1024 * sizeof *logits);
    ck_assert_int_le(resattn_model_get_info(r->model)->num_classes, 1024);
    ck_assert_msg(resattn_forward(r->ctx, r->x.data, r->n, logits, err, sizeof err) == RESATTN_OK,
                  "%s", err);
    free(logits);
}

static void run_release(run *r) {
    resattn_ctx_free(r->ctx);
    resattn_model_free(r->model);
    resattn_npy_release(&r->x);
}

/* Mask `<block>/<kind>` of set, or NULL. */
static const resattn_mask *find_mask(const resattn_mask_set *s, const char *name) {
    for (int i = 0; i < s->count; i++) {
        char full[128];
        snprintf(full, sizeof full, "%s/%s", s->block_names[i],
                 resattn_mask_kind_name(s->masks[i].kind));
        if (!strcmp(full, name))
            return &s->masks[i];
    }
    return NULL;
}

/* Every image's copied slice equals the PyTorch masks of that image. */
START_TEST(copied_masks_match_pytorch) {
    const char *name = cases[_i];
    run r = {0};
    run_fixture(name, &r);
    char path[256], err[RESATTN_ERR_LEN];
    snprintf(path, sizeof path, "tests/fixtures/%s.masks.safetensors", name);
    size_t len;
    unsigned char *buf = ut_read_file(path, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", path);
    resattn_st st;
    ck_assert_msg(resattn_st_parse(buf, len, &st, err, sizeof err) == RESATTN_OK, "%s", err);
    for (int img = 0; img < r.n; img++) {
        resattn_mask_set *s = NULL;
        ck_assert(resattn_mask_set_copy(r.model, r.ctx, img, 1, &s, err, sizeof err) == RESATTN_OK);
        ck_assert_int_eq(s->count, st.num_tensors);
        for (int t = 0; t < st.num_tensors; t++) {
            const resattn_st_tensor *rt = &st.tensors[t];
            const resattn_mask *m = find_mask(s, rt->name);
            ck_assert_msg(m != NULL, "%s: no copied mask %s", name, rt->name);
            size_t per = resattn_mask_size(m);
            ck_assert_uint_eq(per * (size_t)r.n, rt->count);
            float *ref = malloc(rt->count * sizeof *ref);
            resattn_st_read_f32(&st, rt, ref);
            double e = 0;
            for (size_t k = 0; k < per; k++)
                e = fmax(e, fabs((double)m->data[k] - ref[(size_t)img * per + k]));
            ck_assert_msg(e <= 1e-5, "%s %s image %d: error %g", name, rt->name, img, e);
            free(ref);
        }
        resattn_mask_set_free(s);
    }
    /* A slice past the batch is refused by the caller's contract, not read: n = 0. */
    resattn_mask_set *s = NULL;
    ck_assert_int_eq(resattn_mask_set_copy(r.model, r.ctx, 0, 0, &s, err, sizeof err),
                     RESATTN_ERR_INVALID_ARGUMENT);
    resattn_st_release(&st);
    free(buf);
    run_release(&r);
}
END_TEST

/* Size of a PNG file, 0 when it does not decode. */
static int png_size(const char *path, int *w, int *h) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path))
        return 0;
    img.format = PNG_FORMAT_RGB;
    unsigned char *px = malloc(PNG_IMAGE_SIZE(img));
    int ok = px && png_image_finish_read(&img, NULL, px, 0, NULL);
    free(px);
    *w = (int)img.width;
    *h = (int)img.height;
    png_image_free(&img);
    return ok;
}

/* Whether case `name` has attention `kind` (its last "_" part). */
static int has_attention(const char *name, const char *kind) {
    const char *u = strrchr(name, '_');
    return u && !strcmp(u + 1, kind);
}

/* The pictures of every block are written as files and decode at the expected sizes. */
START_TEST(pictures_for_every_attention_type) {
    const char *name = cases[_i];
    run r = {0};
    run_fixture(name, &r);
    const resattn_model_info *info = resattn_model_get_info(r.model);
    int c = info->in_channels, h = info->in_height, w = info->in_width, oh, ow;
    resattn_heatmap_display_size(h, w, RESATTN_HEATMAP_MIN_SIDE, &oh, &ow);
    char err[RESATTN_ERR_LEN], dir[] = "/tmp/check_attention_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    int img = r.n - 1; /* the last image: slices past the first are where offsets go wrong */
    resattn_mask_set *s = NULL;
    ck_assert(resattn_mask_set_copy(r.model, r.ctx, img, 1, &s, err, sizeof err) == RESATTN_OK);
    resattn_attn_pictures *p = NULL;
    const float *chw = r.x.data + (size_t)img * (size_t)(c * h * w);
    ck_assert_msg(resattn_attn_pictures_for_input(s, 0, chw, c, h, w, &p, err, sizeof err) ==
                      RESATTN_OK,
                  "%s", err);
    int written = 0;
    ck_assert_msg(resattn_attn_pictures_write_dir(p, dir, NULL, &written, err, sizeof err) ==
                      RESATTN_OK,
                  "%s", err);
    /* Expected files per block: se/eca bars; cbam bars + spatial; ca one coord heatmap. */
    int want_per_block = has_attention(name, "cbam") ? 2 : 1;
    ck_assert_int_eq(written, info->num_blocks * want_per_block);
    ck_assert_int_eq(p->count, written);
    for (int b = 0; b < info->num_blocks; b++) {
        const char *kinds[2];
        int nk = 0;
        if (!has_attention(name, "ca"))
            kinds[nk++] = "channel";
        if (has_attention(name, "cbam"))
            kinds[nk++] = "spatial";
        if (has_attention(name, "ca"))
            kinds[nk++] = "coord";
        for (int k = 0; k < nk; k++) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s_%s.png", dir, resattn_model_block_name(r.model, b),
                     kinds[k]);
            int pw = 0, ph = 0;
            ck_assert_msg(access(path, F_OK) == 0, "%s: missing %s", name, path);
            ck_assert_msg(png_size(path, &pw, &ph), "%s: %s does not decode", name, path);
            if (!strcmp(kinds[k], "channel")) {
                const resattn_mask *m = NULL;
                for (int i = 0; i < s->count; i++)
                    if (s->masks[i].block == b && s->masks[i].kind == RESATTN_MASK_CHANNEL)
                        m = &s->masks[i];
                ck_assert_ptr_nonnull(m);
                ck_assert_int_eq(pw, resattn_bars_width(m->c));
                ck_assert_int_eq(ph, RESATTN_BARS_HEIGHT);
            } else {
                ck_assert_int_eq(pw, ow);
                ck_assert_int_eq(ph, oh);
            }
            unlink(path);
        }
    }
    ck_assert_int_eq(rmdir(dir), 0); /* nothing else was written */
    resattn_attn_pictures_free(p);
    resattn_mask_set_free(s);
    run_release(&r);
}
END_TEST

/* Summaries of a real model agree with the copied masks; a model without attention gives
 * an empty set, no pictures and an empty summary. */
START_TEST(summary_and_none) {
    run r = {0};
    run_fixture("basic_cifar_cbam", &r);
    char err[RESATTN_ERR_LEN];
    resattn_mask_set *s = NULL;
    ck_assert(resattn_mask_set_copy(r.model, r.ctx, 0, r.n, &s, err, sizeof err) == RESATTN_OK);
    json_t *j = resattn_mask_summary_json(s, 1);
    ck_assert_int_eq(json_array_size(j), resattn_model_get_info(r.model)->num_blocks);
    json_t *sp = json_object_get(json_array_get(j, 0), "spatial");
    const resattn_mask *m = find_mask(s, "layer1.0/spatial");
    ck_assert_ptr_nonnull(m);
    resattn_mask_stats st;
    resattn_mask_stats_compute(resattn_mask_image(m, 1), resattn_mask_size(m), &st);
    ck_assert_double_eq_tol(json_real_value(json_object_get(sp, "mean")), st.mean, 1e-12);
    ck_assert(st.min >= 0.0f && st.max <= 1.0f && st.min < st.max);
    json_decref(j);
    resattn_mask_set_free(s);
    run_release(&r);

    run_fixture("basic_cifar_none", &r);
    ck_assert(resattn_mask_set_copy(r.model, r.ctx, 0, 1, &s, err, sizeof err) == RESATTN_OK);
    ck_assert_int_eq(s->count, 0);
    j = resattn_attention_json(s, 0, r.x.data, (int)r.x.shape[1], (int)r.x.shape[2],
                               (int)r.x.shape[3], err, sizeof err);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(json_array_size(j), 0);
    json_decref(j);
    resattn_mask_set_free(s);
    run_release(&r);
}
END_TEST

/* `resattn predict --attention-dir` writes, for every image and block, the pictures of the
 * model's attention type, which decode at the expected sizes. */
START_TEST(predict_attention_dir) {
    const char *name = cases[_i];
    run r = {0};
    run_fixture(name, &r); /* for the block names and shapes */
    const resattn_model_info *info = resattn_model_get_info(r.model);
    char dir[] = "/tmp/check_attention_cli_XXXXXX", cmd[1024];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "%s predict --model tests/fixtures/%s.safetensors --input tests/fixtures/%s.in.npy "
             "--attention-dir %s/out >/dev/null 2>&1",
             uh_binary(), name, name, dir);
    ck_assert_msg(system(cmd) == 0, "failed: %s", cmd);
    int oh, ow, files = 0;
    resattn_heatmap_display_size(info->in_height, info->in_width, RESATTN_HEATMAP_MIN_SIDE, &oh,
                                 &ow);
    for (int img = 0; img < r.n; img++)
        for (int b = 0; b < info->num_blocks; b++)
            for (int k = 0; k < 3; k++) {
                static const char *const kinds[3] = {"channel", "spatial", "coord"};
                int want = k == 0   ? !has_attention(name, "ca")
                           : k == 1 ? has_attention(name, "cbam")
                                    : has_attention(name, "ca");
                char path[512];
                snprintf(path, sizeof path, "%s/out/img%d_%s_%s.png", dir, img,
                         resattn_model_block_name(r.model, b), kinds[k]);
                int w = 0, h = 0;
                ck_assert_msg((access(path, F_OK) == 0) == want, "%s: %s %s", name, path,
                              want ? "missing" : "unexpected");
                if (!want)
                    continue;
                ck_assert_msg(png_size(path, &w, &h), "%s does not decode", path);
                if (k == 0) {
                    ck_assert_int_eq(h, RESATTN_BARS_HEIGHT);
                    ck_assert_int_gt(w, 0);
                } else {
                    ck_assert_int_eq(w, ow);
                    ck_assert_int_eq(h, oh);
                }
                unlink(path);
                files++;
            }
    ck_assert_int_gt(files, 0);
    char out[512];
    snprintf(out, sizeof out, "%s/out", dir);
    ck_assert_msg(rmdir(out) == 0, "%s: files beyond the expected ones", name);
    rmdir(dir);
    run_release(&r);
}
END_TEST

/* One image (a PNG through the built-in model's preprocessing): no img<i>_ prefix; a
 * model without attention is refused. */
START_TEST(predict_attention_dir_image_and_none) {
    char dir[] = "/tmp/check_attention_cli_XXXXXX", cmd[1024];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "%s predict --input models/examples/13_dress.png --attention-dir %s >/dev/null 2>&1",
             uh_binary(), dir);
    ck_assert_msg(system(cmd) == 0, "failed: %s", cmd);
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int w, h;
        ck_assert_msg(!strncmp(e->d_name, "layer", 5), "unexpected file %s", e->d_name);
        ck_assert_ptr_nonnull(strstr(e->d_name, "_channel.png")); /* SE: bars only */
        ck_assert_msg(png_size(path, &w, &h), "%s does not decode", path);
        ck_assert_int_eq(h, RESATTN_BARS_HEIGHT);
        unlink(path);
        n++;
    }
    closedir(d);
    ck_assert_int_gt(n, 0);
    snprintf(cmd, sizeof cmd,
             "%s predict --model tests/fixtures/basic_cifar_none.safetensors --input "
             "tests/fixtures/basic_cifar_none.in.npy --attention-dir %s >/dev/null 2>&1",
             uh_binary(), dir);
    int st = system(cmd);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

Suite *attention_suite(void) {
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("fixtures");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, copied_masks_match_pytorch, 0, NCASES);
    tcase_add_loop_test(tc, pictures_for_every_attention_type, 0, NCASES);
    tcase_add_test(tc, summary_and_none);
    tcase_add_loop_test(tc, predict_attention_dir, 0, NCASES);
    tcase_add_test(tc, predict_attention_dir_image_and_none);
    suite_add_tcase(s, tc);
    return s;
}
