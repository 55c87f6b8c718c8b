/*
 * Shared pieces of the protocol codecs (see protocol_common.h), plus the two release
 * functions of protocol.h. Datatype conversion reads raw little-endian bytes with memcpy
 * (the body gives no alignment) on this little-endian target.
 */
#include "protocol/protocol_common.h"

#include "protocol/attention_api.h"

#include "data/npy.h"

#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void resattn_infer_request_release(resattn_infer_request *r) {
    if (!r)
        return;
    if (!r->input_in_body)
        free(r->input);
    free(r->id);
    free(r->input_name);
    resattn_attention_request_release(r);
    memset(r, 0, sizeof *r);
}

void resattn_response_body_release(resattn_response_body *b) {
    if (!b)
        return;
    free(b->data);
    memset(b, 0, sizeof *b);
}

int resattn_json_response(json_t *o, size_t flags, resattn_response_body *out) {
    memset(out, 0, sizeof *out);
    char *text = o ? json_dumps(o, flags) : NULL;
    json_decref(o);
    if (!text)
        return 500;
    out->data = (unsigned char *)text;
    out->len = strlen(text);
    out->content_type = "application/json";
    return 0;
}

static const resattn_dtype dtypes[] = {
    {"FP32", 4, RESATTN_ELEM_FLOAT, 0, 0, 1},
    {"FP64", 8, RESATTN_ELEM_FLOAT, 0, 0, 1},
    {"FP16", 2, RESATTN_ELEM_FLOAT, 0, 0, 0},
    {"BF16", 2, RESATTN_ELEM_FLOAT, 0, 0, 0},
    {"INT8", 1, RESATTN_ELEM_INT, -128.0, 127.0, 1},
    {"INT16", 2, RESATTN_ELEM_INT, -32768.0, 32767.0, 1},
    {"INT32", 4, RESATTN_ELEM_INT, -2147483648.0, 2147483647.0, 1},
    {"INT64", 8, RESATTN_ELEM_INT, -9223372036854775808.0, 9223372036854775807.0, 1},
    {"UINT8", 1, RESATTN_ELEM_INT, 0, 255.0, 1},
    {"UINT16", 2, RESATTN_ELEM_INT, 0, 65535.0, 1},
    {"UINT32", 4, RESATTN_ELEM_INT, 0, 4294967295.0, 1},
    {"UINT64", 8, RESATTN_ELEM_INT, 0, 18446744073709551615.0, 1},
    {"BOOL", 1, RESATTN_ELEM_BOOL, 0, 1, 1},
};

int resattn_proto_fail(char *err, size_t err_len, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return status;
}

const resattn_dtype *resattn_dtype_find(const char *name) {
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(dtypes[i].name, name))
            return &dtypes[i];
    return NULL;
}

const char *resattn_dtype_names(void) {
    return "FP32, FP64, FP16, BF16, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, "
           "BOOL";
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else {
        float f = ldexpf((float)man, -24); /* subnormal or zero */
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* One element of a non-FP32 type at s (little-endian) as float32. */
static float decode_one(const resattn_dtype *dt, const unsigned char *s) {
    const char *name = dt->name;
    if (dt->kind == RESATTN_ELEM_INT || dt->kind == RESATTN_ELEM_BOOL) {
        int64_t v = 0;
        uint64_t u = 0;
        switch (dt->size * (dt->lo < 0 ? 1 : -1)) {
        case 1:
            v = (int8_t)s[0];
            break;
        case -1:
            u = s[0];
            break;
        case 2: {
            int16_t t;
            memcpy(&t, s, 2);
            v = t;
        } break;
        case -2: {
            uint16_t t;
            memcpy(&t, s, 2);
            u = t;
        } break;
        case 4: {
            int32_t t;
            memcpy(&t, s, 4);
            v = t;
        } break;
        case -4: {
            uint32_t t;
            memcpy(&t, s, 4);
            u = t;
        } break;
        case 8:
            memcpy(&v, s, 8);
            break;
        default:
            memcpy(&u, s, 8);
            break;
        }
        return dt->lo < 0 ? (float)v : (float)u;
    }
    if (name[2] == '6' && name[3] == '4') { /* FP64 */
        double d;
        memcpy(&d, s, 8);
        return (float)d;
    }
    if (name[0] == 'B') { /* BF16: the high half of a float32 */
        uint32_t bits = (uint32_t)s[0] << 16 | (uint32_t)s[1] << 24;
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    uint16_t h; /* FP16 */
    memcpy(&h, s, 2);
    return half_to_float(h);
}

int resattn_dtype_decode(const resattn_dtype *dt, const unsigned char *src, size_t count,
                         int allow_nonfinite, float *dst, const char *what, char *err,
                         size_t err_len) {
    if (dt->kind == RESATTN_ELEM_BOOL) {
        for (size_t i = 0; i < count; i++)
            if (src[i] > 1) {
                snprintf(err, err_len, "%s: BOOL element %zu is byte %u, expected 0 or 1", what, i,
                         src[i]);
                return 400;
            }
    }
    if (!strcmp(dt->name, "FP32")) {
        if ((const void *)dst != (const void *)src) /* in place: nothing to convert */
            memcpy(dst, src, count * sizeof(float));
    } else
        for (size_t i = 0; i < count; i++)
            dst[i] = decode_one(dt, src + i * (size_t)dt->size);
    return dt->kind == RESATTN_ELEM_FLOAT
               ? resattn_check_finite(dst, count, allow_nonfinite, what, err, err_len)
               : 0;
}

int resattn_check_finite(const float *x, size_t count, int allow_nonfinite, const char *what,
                         char *err, size_t err_len) {
    if (allow_nonfinite)
        return 0;
    /* whole blocks without an early exit, which the compiler vectorises (a 224x224 tensor
     * about 2x faster); the element is looked for only from a block that has one */
    size_t i = 0;
    for (; i + 256 <= count; i += 256) {
        uint32_t b[256], any = 0;
        memcpy(b, x + i, sizeof b);
        for (int j = 0; j < 256; j++)
            any |= (b[j] & 0x7f800000u) == 0x7f800000u; /* exponent all ones: Inf or NaN */
        if (any)
            break;
    }
    for (; i < count; i++)
        if (!isfinite(x[i])) {
            snprintf(err, err_len, "%s: element %zu is %s: non-finite values are refused", what, i,
                     isnan(x[i]) ? "NaN" : "infinite");
            return 400;
        }
    return 0;
}

static void buf_reserve(resattn_buf *b, size_t extra) {
    if (b->failed || b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = 1;
        return;
    }
    b->data = d;
    b->cap = cap;
}

void resattn_buf_put(resattn_buf *b, const void *s, size_t n) {
    buf_reserve(b, n);
    if (b->failed)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

void resattn_buf_str(resattn_buf *b, const char *s) {
    resattn_buf_put(b, s, strlen(s));
}

void resattn_buf_json_string(resattn_buf *b, const char *s) {
    resattn_buf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            resattn_buf_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            resattn_buf_put(b, esc, 6);
        } else {
            resattn_buf_put(b, s, 1);
        }
    }
    resattn_buf_put(b, "\"", 1);
}

#ifdef __SIZEOF_INT128__ /* 64-bit GCC/Clang targets; elsewhere printf does it */
/* q = the exact value m * 2^e scaled by 10^p, rounded to an integer (ties to even), for the
 * magnitudes resattn_format_f32 takes on its fast path (no overflow of 128 bits there). */
static uint64_t scaled_round(uint64_t m, int e, int p) {
    /* clang-format off */
    static const uint64_t pow10[20] = {
        1u, 10u, 100u, 1000u, 10000u, 100000u, 1000000u, 10000000u, 100000000u, 1000000000u,
        10000000000u, 100000000000u, 1000000000000u, 10000000000000u, 100000000000000u,
        1000000000000000u, 10000000000000000u, 100000000000000000u, 1000000000000000000u,
        10000000000000000000u};
    /* clang-format on */
    unsigned __int128 n = (unsigned __int128)m * (p > 0 ? pow10[p] : 1), q, r, half2;
    if (p < 0) { /* v >= 1e9: an integer (e >= 7) divided by 10^-p */
        n <<= e;
        q = n / pow10[-p];
        r = n % pow10[-p];
        half2 = pow10[-p];
    } else if (e >= 0) {
        return (uint64_t)(n << e);
    } else { /* divided by 2^-e: a shift */
        q = n >> -e;
        r = n - (q << -e);
        half2 = (unsigned __int128)1 << -e;
    }
    if (2 * r > half2 || (2 * r == half2 && (q & 1)))
        q++;
    return (uint64_t)q;
}

int resattn_format_f32(float x, char *out) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    int neg = (int)(bits >> 31), ex = (int)(bits >> 23 & 0xff);
    double v = fabs((double)x);
    /* zero, subnormals, non-finite and the extremes keep printf */
    if (!(v >= 1e-9 && v < 1e12) || ex == 0)
        return snprintf(out, 32, "%.9g", (double)x);
    uint64_t m = (bits & 0x7fffff) | 0x800000;
    int e = ex - 150; /* v = m * 2^e exactly */
    /* floor(log10(2^(ex-127))) (78913 / 2^18 ~ log10 2): k or one below it */
    int k = ((ex - 127) * 78913) >> 18;
    /* nine digits: q in [1e8, 1e9); the estimate may be one low, and rounding 9.999999999...
     * up moves to the next decade: at most two corrections */
    uint64_t q = scaled_round(m, e, 8 - k);
    for (int tries = 0; q < 100000000u || q >= 1000000000u; tries++) {
        if (tries == 2)
            return snprintf(out, 32, "%.9g", (double)x);
        k += q >= 1000000000u ? 1 : -1;
        q = scaled_round(m, e, 8 - k);
    }
    char d[9];
    for (int i = 8; i >= 0; i--, q /= 10)
        d[i] = (char)('0' + q % 10);
    int nd = 9; /* %g drops trailing zeros */
    while (nd > 1 && d[nd - 1] == '0')
        nd--;
    char *o = out;
    if (neg)
        *o++ = '-';
    if (k < -4 || k >= 9) { /* d.ddde+XX */
        *o++ = d[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, d + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        int ae = k < 0 ? -k : k;
        *o++ = 'e';
        *o++ = k < 0 ? '-' : '+';
        *o++ = (char)('0' + ae / 10);
        *o++ = (char)('0' + ae % 10);
    } else if (k >= 0) { /* ddd.ddd */
        int ni = k + 1;
        memcpy(o, d, (size_t)ni);
        o += ni;
        if (nd > ni) {
            *o++ = '.';
            memcpy(o, d + ni, (size_t)(nd - ni));
            o += nd - ni;
        }
    } else { /* 0.000ddd */
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -k - 1; i++)
            *o++ = '0';
        memcpy(o, d, (size_t)nd);
        o += nd;
    }
    *o = 0;
    return (int)(o - out);
}
#else
int resattn_format_f32(float x, char *out) {
    return snprintf(out, 32, "%.9g", (double)x);
}
#endif

void resattn_buf_floats(resattn_buf *b, const float *x, size_t n) {
    buf_reserve(b, n * 17 + 2);
    resattn_buf_put(b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        char t[32];
        int len = isfinite(x[i]) ? resattn_format_f32(x[i], t) : snprintf(t, sizeof t, "null");
        if (i)
            resattn_buf_put(b, ",", 1);
        resattn_buf_put(b, t, (size_t)len);
    }
    resattn_buf_put(b, "]", 1);
}

void resattn_softmax_rows(const float *logits, int n, int k, float *probs) {
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        float *p = probs + (size_t)i * k;
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < k; j++)
            mx = z[j] > mx ? z[j] : mx;
        for (int j = 0; j < k; j++)
            sum += exp((double)z[j] - mx);
        for (int j = 0; j < k; j++)
            p[j] = (float)(exp((double)z[j] - mx) / sum);
    }
}

/* 1 when class a ranks before class b: larger value first, NaN last, ties by index. */
static int ranks_before(const float *v, int a, int b) {
    int an = isnan(v[a]), bn = isnan(v[b]);
    if (an != bn)
        return bn;
    if (!an && v[a] != v[b])
        return v[a] > v[b];
    return a < b;
}

/* Restore the heap order below node i of h[n], a heap whose root ranks last. */
static void sift_down(const float *v, int *h, int n, int i) {
    for (;;) {
        int worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && ranks_before(v, h[worst], h[l]))
            worst = l;
        if (r < n && ranks_before(v, h[worst], h[r]))
            worst = r;
        if (worst == i)
            return;
        int t = h[i];
        h[i] = h[worst];
        h[worst] = t;
        i = worst;
    }
}

void resattn_top_indices(const float *v, int k, int top, int *idx) {
    /* idx is a heap of the best `top` seen so far with the worst of them at the root;
     * heapsort of that heap then leaves it best first */
    for (int c = 0; c < top; c++)
        idx[c] = c;
    for (int i = top / 2 - 1; i >= 0; i--)
        sift_down(v, idx, top, i);
    for (int c = top; c < k; c++)
        if (ranks_before(v, c, idx[0])) {
            idx[0] = c;
            sift_down(v, idx, top, 0);
        }
    for (int n = top - 1; n > 0; n--) {
        int t = idx[0];
        idx[0] = idx[n];
        idx[n] = t;
        sift_down(v, idx, n, 0);
    }
}

void resattn_format_shape(const int64_t *dims, int ndim, char *s, size_t len) {
    size_t o = 0;
    o += (size_t)snprintf(s, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(s + o, len - o, "%s%lld", i ? "," : "", (long long)dims[i]);
    if (o < len)
        snprintf(s + o, len - o, "]");
}

int resattn_check_image_shape(const int64_t *dims, int ndim, const resattn_model_info *model,
                              const resattn_parse_limits *limits, int *n, const char *what,
                              char *err, size_t err_len) {
    char got[160];
    resattn_format_shape(dims, ndim, got, sizeof got);
    for (int i = 0; i < ndim; i++)
        if (dims[i] <= 0) {
            snprintf(err, err_len, "%s %s: dimension %d is %lld, must be positive", what, got, i,
                     (long long)dims[i]);
            return 400;
        }
    int64_t c = model->in_channels, h = model->in_height, w = model->in_width;
    const int64_t *img = dims + (ndim == 4);
    if ((ndim != 3 && ndim != 4) || img[0] != c || img[1] != h || img[2] != w) {
        snprintf(err, err_len, "%s %s does not match the model's input [N,%lld,%lld,%lld]", what,
                 got, (long long)c, (long long)h, (long long)w);
        return 422;
    }
    int64_t batch = ndim == 4 ? dims[0] : 1;
    int max = limits && limits->max_batch > 0 ? limits->max_batch : 1;
    if (batch > max) {
        snprintf(err, err_len, "%s %s: batch of %lld images is more than max batch %d", what, got,
                 (long long)batch, max);
        return 413;
    }
    *n = (int)batch;
    return 0;
}

int resattn_npy_response(const float *logits, int n, int num_classes, resattn_response_body *out) {
    memset(out, 0, sizeof *out);
    int64_t shape[2] = {n, num_classes};
    if (resattn_npy_encode(logits, 2, shape, &out->data, &out->len))
        return 500;
    out->content_type = "application/x-npy";
    return 0;
}
