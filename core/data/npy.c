/*
 * NumPy .npy reading and writing (see npy.h). The header is a Python dict literal
 * {'descr': '<f4', 'fortran_order': False, 'shape': (N, C, H, W), }; it is parsed with a
 * small scanner that never reads past the header length.
 */
#include "data/npy.h"
#include "model/error.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Find the value after 'key': in hdr[0..len); NULL if absent. */
static const char *find_key(const char *hdr, size_t len, const char *key) {
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl + 2 <= len; i++)
        if ((hdr[i] == '\'' || hdr[i] == '"') && !memcmp(hdr + i + 1, key, kl) &&
            hdr[i + 1 + kl] == hdr[i]) {
            size_t j = i + 2 + kl;
            while (j < len && (hdr[j] == ' ' || hdr[j] == ':'))
                j++;
            return j < len ? hdr + j : NULL;
        }
    return NULL;
}

typedef struct {
    char kind; /* 'f', 'i', 'u' */
    int size;
} dtype;

static int parse_descr(const char *p, const char *end, dtype *dt) {
    if (p >= end - 4 || (*p != '\'' && *p != '"'))
        return 0;
    char q = *p++;
    char order = *p++;
    if (order != '<' && order != '|' && order != '=')
        return 0;
    dt->kind = *p++;
    /* Digits by hand, bounded by `end`: the header is not NUL-terminated, so strtol could
     * read past the buffer (found by tests/fuzz/fuzz_npy.c). */
    long sz = 0;
    while (p < end && *p >= '0' && *p <= '9' && sz < 100)
        sz = sz * 10 + (*p++ - '0');
    if (p >= end || *p != q || (dt->kind != 'f' && dt->kind != 'i' && dt->kind != 'u'))
        return 0;
    dt->size = (int)sz;
    if (dt->kind == 'f')
        return sz == 2 || sz == 4 || sz == 8;
    if (sz > 1 && order == '|')
        return 0;
    return sz == 1 || sz == 2 || sz == 4 || sz == 8;
}

static int parse_shape(const char *p, const char *end, resattn_npy *a) {
    if (p >= end || *p != '(')
        return 0;
    p++;
    a->ndim = 0;
    for (;;) {
        while (p < end && (*p == ' ' || *p == ','))
            p++;
        if (p >= end)
            return 0;
        if (*p == ')')
            return 1;
        if (*p < '0' || *p > '9' || a->ndim == RESATTN_NPY_MAX_DIMS)
            return 0;
        int64_t v = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return 0;
            v = v * 10 + (*p++ - '0');
        }
        a->shape[a->ndim++] = v;
    }
}

static float half_to_float(uint16_t h) {
    int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v = exp == 0    ? ldexpf((float)man, -24)
              : exp == 31 ? (man ? NAN : INFINITY)
                          : ldexpf((float)(man | 0x400), exp - 25);
    return (h >> 15) ? -v : v;
}

static float load_elem(const unsigned char *p, dtype dt) {
    uint64_t u = 0;
    for (int i = dt.size - 1; i >= 0; i--)
        u = u << 8 | p[i];
    if (dt.kind == 'f') {
        if (dt.size == 2)
            return half_to_float((uint16_t)u);
        if (dt.size == 4) {
            uint32_t b = (uint32_t)u;
            float f;
            memcpy(&f, &b, 4);
            return f;
        }
        double d;
        memcpy(&d, &u, 8);
        return (float)d;
    }
    if (dt.kind == 'u')
        return (float)u;
    int shift = 64 - 8 * dt.size; /* sign-extend */
    return (float)((int64_t)(u << shift) >> shift);
}

resattn_status resattn_npy_parse(const void *buf, size_t len, resattn_npy *out, char *err,
                                 size_t err_len) {
    memset(out, 0, sizeof *out);
    const unsigned char *b = buf;
    if (!b || len < 10 || memcmp(b, "\x93NUMPY", 6))
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            "not a .npy file (missing \\x93NUMPY magic)");
    int major = b[6];
    size_t hl, start;
    if (major == 1) {
        hl = (size_t)b[8] | (size_t)b[9] << 8;
        start = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return resattn_fail(err, err_len, RESATTN_ERR_FORMAT, ".npy: truncated header");
        hl = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        start = 12;
    } else {
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT, ".npy: unsupported format version %d",
                            major);
    }
    if (hl > len - start)
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            ".npy: header length %zu beyond the file (%zu bytes)", hl, len);
    const char *hdr = (const char *)b + start, *end = hdr + hl;
    const char *d = find_key(hdr, hl, "descr"), *fo = find_key(hdr, hl, "fortran_order"),
               *sh = find_key(hdr, hl, "shape");
    dtype dt;
    if (!d || !parse_descr(d, end, &dt))
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            ".npy: unsupported or missing 'descr' (want little-endian "
                            "float or integer)");
    if (!fo || (size_t)(end - fo) < 5 || memcmp(fo, "False", 5))
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            ".npy: only C order (fortran_order False) is supported");
    if (!sh || !parse_shape(sh, end, out))
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT, ".npy: cannot parse 'shape'");
    size_t count = 1;
    for (int i = 0; i < out->ndim; i++) {
        if (out->shape[i] && count > SIZE_MAX / 8 / (size_t)out->shape[i])
            return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                                ".npy: shape element count overflows");
        count *= (size_t)out->shape[i];
    }
    size_t data_len = len - start - hl;
    if (count * (size_t)dt.size != data_len)
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            ".npy: shape needs %zu bytes of data, file has %zu",
                            count * (size_t)dt.size, data_len);
    out->count = count;
    out->data = malloc((count ? count : 1) * sizeof(float));
    if (!out->data) {
        memset(out, 0, sizeof *out);
        if (err && err_len)
            snprintf(err, err_len, ".npy: out of memory for %zu floats", count);
        return RESATTN_ERR_NOMEM;
    }
    const unsigned char *src = b + start + hl;
    for (size_t i = 0; i < count; i++)
        out->data[i] = load_elem(src + i * (size_t)dt.size, dt);
    return RESATTN_OK;
}

void resattn_npy_release(resattn_npy *a) {
    if (!a)
        return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

resattn_status resattn_npy_encode(const float *data, int ndim, const int64_t *shape,
                                  unsigned char **out, size_t *out_len) {
    if (!out || !out_len || ndim < 0 || ndim > RESATTN_NPY_MAX_DIMS)
        return RESATTN_ERR_INVALID_ARGUMENT;
    char dict[256];
    int o = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        o += snprintf(dict + o, sizeof dict - (size_t)o, "%lld%s", (long long)shape[i],
                      ndim == 1      ? ","
                      : i + 1 < ndim ? ", "
                                     : "");
        count *= (size_t)shape[i];
    }
    o += snprintf(dict + o, sizeof dict - (size_t)o, "), }");
    /* pad with spaces so that data starts on a 64-byte boundary; header ends with '\n' */
    size_t hl = (size_t)o + 1;
    hl = ((10 + hl + 63) / 64) * 64 - 10;
    size_t total = 10 + hl + count * 4;
    unsigned char *buf = malloc(total);
    if (!buf)
        return RESATTN_ERR_NOMEM;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(hl & 0xff);
    buf[9] = (unsigned char)(hl >> 8);
    memset(buf + 10, ' ', hl);
    memcpy(buf + 10, dict, (size_t)o);
    buf[10 + hl - 1] = '\n';
    for (size_t i = 0; i < count; i++) {
        uint32_t u;
        memcpy(&u, &data[i], 4);
        for (int k = 0; k < 4; k++)
            buf[10 + hl + 4 * i + k] = (unsigned char)(u >> (8 * k));
    }
    *out = buf;
    *out_len = total;
    return RESATTN_OK;
}
