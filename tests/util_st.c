/*
 * Implementation of the in-memory model-file builder of the tests (see util_st.h).
 */
#include "util_st.h"
#include <ftw.h>
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float rnd(ut_model *m) {
    m->rng = m->rng * 1664525u + 1013904223u;
    return (float)(m->rng >> 8) / (float)(1 << 24) * 2.0f - 1.0f;
}

void ut_model_init(ut_model *m, const char *config, uint32_t seed) {
    memset(m, 0, sizeof *m);
    m->rng = seed;
    ut_set_config(m, config);
}

void ut_set_config(ut_model *m, const char *config) {
    free(m->config);
    m->config = config ? strdup(config) : NULL;
}

void ut_model_free(ut_model *m) {
    for (int i = 0; i < m->n; i++)
        free(m->t[i].data);
    free(m->t);
    free(m->config);
    memset(m, 0, sizeof *m);
}

ut_tensor *ut_add(ut_model *m, const char *name, int ndim, const int64_t *shape, float scale) {
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 64;
        m->t = realloc(m->t, (size_t)m->cap * sizeof *m->t);
    }
    ut_tensor *t = &m->t[m->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    strcpy(t->dtype, "F32");
    t->ndim = ndim;
    t->count = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->count *= (size_t)shape[i];
    }
    t->data = malloc((t->count ? t->count : 1) * sizeof(float));
    for (size_t i = 0; i < t->count; i++)
        t->data[i] = rnd(m) * scale;
    return t;
}

ut_tensor *ut_find(ut_model *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->t[i].name, name))
            return &m->t[i];
    return NULL;
}

int ut_remove(ut_model *m, const char *name) {
    ut_tensor *t = ut_find(m, name);
    if (!t)
        return 0;
    free(t->data);
    *t = m->t[--m->n];
    return 1;
}

static size_t dtype_size(const char *d) {
    if (!strcmp(d, "F64") || !strcmp(d, "I64"))
        return 8;
    if (!strcmp(d, "F16") || !strcmp(d, "BF16") || !strcmp(d, "I16"))
        return 2;
    if (!strcmp(d, "U8") || !strcmp(d, "I8") || !strcmp(d, "BOOL"))
        return 1;
    return 4;
}

/* JSON-escape s (our names and configs only need quotes and backslashes escaped). */
static void put_escaped(char **p, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            *(*p)++ = '\\';
        *(*p)++ = *s;
    }
}

unsigned char *ut_serialize(const ut_model *m, size_t *len) {
    size_t hcap = 4096 + (m->config ? 2 * strlen(m->config) : 0) + (size_t)m->n * 512, data = 0;
    char *h = malloc(hcap), *p = h;
    p += sprintf(p, "{");
    if (m->config) {
        p += sprintf(p, "\"__metadata__\":{\"resattn.config\":\"");
        put_escaped(&p, m->config);
        p += sprintf(p, "\"}");
    }
    for (int i = 0; i < m->n; i++) {
        const ut_tensor *t = &m->t[i];
        size_t bytes = t->count * dtype_size(t->dtype);
        int64_t b = t->override_offsets ? t->begin : (int64_t)data;
        int64_t e = t->override_offsets ? t->end : (int64_t)(data + bytes);
        p += sprintf(p, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", (m->config || i) ? "," : "",
                     t->name, t->dtype);
        for (int d = 0; d < t->ndim; d++)
            p += sprintf(p, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        p += sprintf(p, "],\"data_offsets\":[%lld,%lld]}", (long long)b, (long long)e);
        data += bytes;
    }
    p += sprintf(p, "}");
    size_t hl = (size_t)(p - h);
    unsigned char *out = calloc(1, 8 + hl + data + 1);
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(out + 8, h, hl);
    free(h);
    unsigned char *d = out + 8 + hl;
    for (int i = 0; i < m->n; i++) {
        const ut_tensor *t = &m->t[i];
        size_t es = dtype_size(t->dtype);
        if (!strcmp(t->dtype, "F32"))
            memcpy(d, t->data, t->count * 4); /* little-endian host */
        d += t->count * es;
    }
    *len = 8 + hl + data;
    return out;
}

static void add_bn(ut_model *m, const char *prefix, int c) {
    char n[320];
    int64_t s[1] = {c};
    ut_tensor *t;
    snprintf(n, sizeof n, "%s.weight", prefix);
    t = ut_add(m, n, 1, s, 0.5f);
    for (size_t i = 0; i < t->count; i++)
        t->data[i] += 1.0f; /* gamma in [0.5, 1.5] */
    snprintf(n, sizeof n, "%s.bias", prefix);
    ut_add(m, n, 1, s, 0.2f);
    snprintf(n, sizeof n, "%s.running_mean", prefix);
    ut_add(m, n, 1, s, 0.2f);
    snprintf(n, sizeof n, "%s.running_var", prefix);
    t = ut_add(m, n, 1, s, 0.5f);
    for (size_t i = 0; i < t->count; i++)
        t->data[i] += 1.0f;
}

static void add_conv(ut_model *m, const char *name, int cout, int cin, int k) {
    char n[320];
    int64_t s[4] = {cout, cin, k, k};
    snprintf(n, sizeof n, "%s.weight", name);
    ut_add(m, n, 4, s, 1.7f / __builtin_sqrtf((float)(cin * k * k)));
}

static void add_attention(ut_model *m, const char *blk, const char *kind, int c) {
    char n[256];
    int r = c / 4 > 0 ? c / 4 : 1;
    if (!strcmp(kind, "se")) {
        int64_t s1[4] = {r, c, 1, 1}, b1[1] = {r}, s2[4] = {c, r, 1, 1}, b2[1] = {c};
        snprintf(n, sizeof n, "%s.se.fc1.weight", blk);
        ut_add(m, n, 4, s1, 1.0f);
        snprintf(n, sizeof n, "%s.se.fc1.bias", blk);
        ut_add(m, n, 1, b1, 0.2f);
        snprintf(n, sizeof n, "%s.se.fc2.weight", blk);
        ut_add(m, n, 4, s2, 1.0f);
        snprintf(n, sizeof n, "%s.se.fc2.bias", blk);
        ut_add(m, n, 1, b2, 0.2f);
    } else if (!strcmp(kind, "eca")) {
        int64_t s[3] = {1, 1, 3};
        snprintf(n, sizeof n, "%s.se.conv.weight", blk);
        ut_add(m, n, 3, s, 1.0f);
    } else if (!strcmp(kind, "cbam")) {
        int64_t s1[4] = {r, c, 1, 1}, s2[4] = {c, r, 1, 1};
        snprintf(n, sizeof n, "%s.se.channel.fc1.weight", blk);
        ut_add(m, n, 4, s1, 1.0f);
        snprintf(n, sizeof n, "%s.se.channel.fc2.weight", blk);
        ut_add(m, n, 4, s2, 1.0f);
        snprintf(n, sizeof n, "%s.se.spatial.conv.conv", blk);
        add_conv(m, n, 1, 2, 5);
        snprintf(n, sizeof n, "%s.se.spatial.conv.bn", blk);
        add_bn(m, n, 1);
    } else if (!strcmp(kind, "ca")) {
        int mid = c / 2 > 0 ? c / 2 : 1;
        snprintf(n, sizeof n, "%s.se.conv1", blk);
        add_conv(m, n, mid, c, 1);
        snprintf(n, sizeof n, "%s.se.bn1", blk);
        add_bn(m, n, mid);
        snprintf(n, sizeof n, "%s.se.conv_h", blk);
        add_conv(m, n, c, mid, 1);
        snprintf(n, sizeof n, "%s.se.conv_w", blk);
        add_conv(m, n, c, mid, 1);
    }
}

void ut_build_resnet(ut_model *m, const char *block, const char *stem, const char *attention,
                     int nstages, const int *layers, const int *widths, int in_c, int h, int w,
                     int classes) {
    char cfg[512], n[256], p[64];
    int o = snprintf(cfg, sizeof cfg, "{\"block\": \"%s\", \"layers\": [", block);
    for (int s = 0; s < nstages; s++)
        o += snprintf(cfg + o, sizeof cfg - (size_t)o, s ? ", %d" : "%d", layers[s]);
    snprintf(cfg + o, sizeof cfg - (size_t)o,
             "], \"stem\": \"%s\", \"attention\": \"%s\", \"num_classes\": %d, \"input\": "
             "{\"channels\": %d, \"height\": %d, \"width\": %d}}",
             stem, attention, classes, in_c, h, w);
    ut_set_config(m, cfg);
    int bott = !strcmp(block, "bottleneck"), img = !strcmp(stem, "imagenet");
    int c = widths[0];
    add_conv(m, "conv1", c, in_c, img ? 7 : 3);
    add_bn(m, "bn1", c);
    for (int s = 0; s < nstages; s++)
        for (int b = 0; b < layers[s]; b++) {
            int planes = widths[s], out = bott ? 4 * planes : planes;
            int stride = s > 0 && b == 0 ? 2 : 1;
            snprintf(p, sizeof p, "layer%d.%d", s + 1, b);
#define NAME(x) (snprintf(n, sizeof n, "%s.%s", p, x), n)
            if (bott) {
                add_conv(m, NAME("conv1"), planes, c, 1);
                add_bn(m, NAME("bn1"), planes);
                add_conv(m, NAME("conv2"), planes, planes, 3);
                add_bn(m, NAME("bn2"), planes);
                add_conv(m, NAME("conv3"), out, planes, 1);
                add_bn(m, NAME("bn3"), out);
            } else {
                add_conv(m, NAME("conv1"), planes, c, 3);
                add_bn(m, NAME("bn1"), planes);
                add_conv(m, NAME("conv2"), out, planes, 3);
                add_bn(m, NAME("bn2"), out);
            }
            if (stride != 1 || c != out) {
                add_conv(m, NAME("downsample.0"), out, c, 1);
                add_bn(m, NAME("downsample.1"), out);
            }
#undef NAME
            add_attention(m, p, attention, out);
            c = out;
        }
    int64_t fw[2] = {classes, c}, fb[1] = {classes};
    ut_add(m, "fc.weight", 2, fw, 1.0f / __builtin_sqrtf((float)c));
    ut_add(m, "fc.bias", 1, fb, 0.2f);
}

unsigned char *ut_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

int ut_write_file(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(buf, 1, len, f);
    return (fclose(f) || w != len) ? -1 : 0;
}

void ut_mkdirs(const char *path) {
    char p[512];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0755);
            *s = '/';
        }
    mkdir(p, 0755);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}

void ut_rm_tree(const char *path) {
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int ut_make_cert(const char *dir, char *cert, char *key, size_t len) {
    char cmd[1024];
    snprintf(cert, len, "%s/cert.pem", dir);
    snprintf(key, len, "%s/key.pem", dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -days 1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout '%s' -out '%s' 2>/dev/null",
             key, cert);
    return system(cmd) == 0 ? 0 : -1;
}
