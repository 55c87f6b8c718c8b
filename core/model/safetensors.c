/*
 * Safetensors parsing and validation (see safetensors.h for the layout). Every size is
 * overflow-checked; all tensor ranges are checked to lie inside the data section and not
 * to overlap before any data is read. F16 and BF16 are widened to float32 on read.
 */
#include "model/safetensors.h"
#include "model/error.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    resattn_dtype dtype;
    size_t size;
} dtypes[] = {
    {"F32", RESATTN_DT_F32, 4}, {"F16", RESATTN_DT_F16, 2},    {"BF16", RESATTN_DT_BF16, 2},
    {"F64", RESATTN_DT_F64, 8}, {"F8_E4M3", RESATTN_DT_F8, 1}, {"F8_E5M2", RESATTN_DT_F8, 1},
    {"I64", RESATTN_DT_INT, 8}, {"I32", RESATTN_DT_INT, 4},    {"I16", RESATTN_DT_INT, 2},
    {"I8", RESATTN_DT_INT, 1},  {"U64", RESATTN_DT_INT, 8},    {"U32", RESATTN_DT_INT, 4},
    {"U16", RESATTN_DT_INT, 2}, {"U8", RESATTN_DT_INT, 1},     {"BOOL", RESATTN_DT_INT, 1},
};

static int cmp_begin(const void *a, const void *b) {
    const resattn_st_tensor *x = a, *y = b;
    return x->begin < y->begin   ? -1
           : x->begin > y->begin ? 1
                                 : (x->end > y->end) - (x->end < y->end);
}

/* Fill t from one header entry; name already set. */
static resattn_status parse_entry(resattn_st_tensor *t, json_t *v, size_t data_len, char *err,
                                  size_t err_len) {
    const char *n = t->name;
    if (!json_is_object(v))
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            "tensor %s: header entry is not an object", n);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT, "tensor %s: missing string \"dtype\"",
                            n);
    size_t esize = 0;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(json_string_value(jd), dtypes[i].name)) {
            t->dtype = dtypes[i].dtype;
            esize = dtypes[i].size;
            snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dtypes[i].name);
        }
    if (!esize)
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT, "tensor %s: unknown dtype \"%.32s\"",
                            n, json_string_value(jd));
    if (!json_is_array(js) || json_array_size(js) > RESATTN_ST_MAX_DIMS)
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            "tensor %s: \"shape\" must be an array of at most %d integers", n,
                            RESATTN_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    size_t count = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(js, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                                "tensor %s: shape[%d] is not a non-negative integer", n, i);
        uint64_t dim = (uint64_t)json_integer_value(d);
        if (dim && count > SIZE_MAX / dim)
            return resattn_fail(err, err_len, RESATTN_ERR_FORMAT, "tensor %s: shape overflows", n);
        count *= dim;
        t->shape[i] = (int64_t)dim;
    }
    t->count = count;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            "tensor %s: \"data_offsets\" must be [begin, end]", n);
    json_int_t b = json_integer_value(json_array_get(jo, 0)),
               e = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || e < b)
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            "tensor %s: data_offsets [%lld, %lld] are not 0 <= begin <= end", n,
                            (long long)b, (long long)e);
    if ((uint64_t)e > data_len)
        return resattn_fail(
            err, err_len, RESATTN_ERR_FORMAT,
            "tensor %s: data_offsets end %lld is beyond the data section (%zu bytes)", n,
            (long long)e, data_len);
    t->begin = (size_t)b;
    t->end = (size_t)e;
    if (count > SIZE_MAX / esize || count * esize != t->end - t->begin)
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            "tensor %s: %zu bytes in data_offsets but shape x %s needs %zu", n,
                            t->end - t->begin, t->dtype_name, count * esize);
    return RESATTN_OK;
}

static resattn_status parse_metadata(resattn_st *st, json_t *meta, char *err, size_t err_len) {
    if (!json_is_object(meta))
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT, "__metadata__ is not an object");
    json_t *c = json_object_get(meta, "resattn.config");
    if (!c)
        return RESATTN_OK;
    if (!json_is_string(c))
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            "__metadata__[\"resattn.config\"] is not a string");
    st->config_json = strdup(json_string_value(c));
    return st->config_json ? RESATTN_OK
                           : resattn_fail(err, err_len, RESATTN_ERR_NOMEM, "out of memory");
}

static resattn_status parse_header(resattn_st *st, json_t *root, char *err, size_t err_len) {
    if (!json_is_object(root))
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            "safetensors header is not a JSON object");
    size_t n = json_object_size(root);
    st->tensors = calloc(n ? n : 1, sizeof *st->tensors);
    if (!st->tensors)
        return resattn_fail(err, err_len, RESATTN_ERR_NOMEM, "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            resattn_status s = parse_metadata(st, v, err, err_len);
            if (s)
                return s;
            continue;
        }
        resattn_st_tensor *t = &st->tensors[st->num_tensors++];
        if (!(t->name = strdup(key)))
            return resattn_fail(err, err_len, RESATTN_ERR_NOMEM, "out of memory");
        resattn_status s = parse_entry(t, v, st->data_len, err, err_len);
        if (s)
            return s;
    }
    qsort(st->tensors, (size_t)st->num_tensors, sizeof *st->tensors, cmp_begin);
    for (int i = 1; i < st->num_tensors; i++)
        if (st->tensors[i].begin < st->tensors[i - 1].end)
            return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                                "tensors %s and %s have overlapping data_offsets",
                                st->tensors[i - 1].name, st->tensors[i].name);
    return RESATTN_OK;
}

int resattn_st_looks_like(const void *buf, size_t len) {
    return buf && len >= 9 && ((const unsigned char *)buf)[8] == '{';
}

resattn_status resattn_st_parse(const void *buf, size_t len, resattn_st *st, char *err,
                                size_t err_len) {
    memset(st, 0, sizeof *st);
    const unsigned char *p = buf;
    if (!p || len < 8)
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            "truncated file: %zu bytes, a safetensors file needs at least 8", len);
    if (len > 8 && !resattn_st_looks_like(buf, len))
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            "not a safetensors file (" RESATTN_ST_NOT_ST_REASON ")");
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | p[i];
    if (hlen > len - 8)
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT,
                            "header length %llu is beyond the end of the file (%zu bytes)",
                            (unsigned long long)hlen, len);
    st->data = p + 8 + hlen;
    st->data_len = len - 8 - (size_t)hlen;
    json_error_t je;
    json_t *root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return resattn_fail(err, err_len, RESATTN_ERR_FORMAT, "invalid JSON header at byte %d: %s",
                            je.position, je.text);
    resattn_status s = parse_header(st, root, err, err_len);
    json_decref(root);
    if (s)
        resattn_st_release(st);
    return s;
}

void resattn_st_release(resattn_st *st) {
    if (!st)
        return;
    for (int i = 0; i < st->num_tensors; i++)
        free(st->tensors[i].name);
    free(st->tensors);
    free(st->config_json);
    memset(st, 0, sizeof *st);
}

resattn_st_tensor *resattn_st_find(resattn_st *st, const char *name) {
    for (int i = 0; i < st->num_tensors; i++)
        if (!strcmp(st->tensors[i].name, name))
            return &st->tensors[i];
    return NULL;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13;
    } else if (exp) {
        bits = sign | (exp + 112) << 23 | man << 13;
    } else if (man) { /* subnormal: man x 2^-24 */
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    } else {
        bits = sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void resattn_st_read_f32(const resattn_st *st, const resattn_st_tensor *t, float *dst) {
    const unsigned char *src = st->data + t->begin;
    for (size_t i = 0; i < t->count; i++) {
        if (t->dtype == RESATTN_DT_F32) {
            uint32_t b = (uint32_t)src[4 * i] | (uint32_t)src[4 * i + 1] << 8 |
                         (uint32_t)src[4 * i + 2] << 16 | (uint32_t)src[4 * i + 3] << 24;
            memcpy(&dst[i], &b, 4);
        } else {
            uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
            if (t->dtype == RESATTN_DT_F16) {
                dst[i] = half_to_float(h);
            } else {
                uint32_t b = (uint32_t)h << 16;
                memcpy(&dst[i], &b, 4);
            }
        }
    }
}
