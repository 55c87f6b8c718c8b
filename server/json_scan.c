/*
 * The strict numeric-tensor scanner of json_scan.h. Float32 tensor elements first take
 * number_f32_fast (up to 19 digits read 8 at a time, branch-light for the varying lengths of
 * real data, no per-byte bounds checks); anything it does not decide goes through
 * parse_number: Clinger's fast path (at most 15 significant digits and a power of ten up to
 * 22: one exact double multiply or divide), float_fast for float32 results, and strtod_l /
 * strtof_l in a "C" locale for the rest, so "0.5" means one half whatever setlocale() said
 * and every float equals strtof's (tests/check_protocol.c compares them bit for bit).
 */
#include "json_scan.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void) {
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

static int is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_digit(char c) {
    return c >= '0' && c <= '9';
}

const char *resattn_json_ws(const char *p, const char *end) {
    /* one compare for the common case: every JSON whitespace byte is <= ' ' */
    while (p < end && (unsigned char)*p <= ' ' && is_ws(*p))
        p++;
    return p;
}

/* Past the string whose opening quote is at p, or NULL when it is not closed. */
static const char *skip_string(const char *p, const char *end) {
    for (p++; p < end; p++) {
        if (*p == '\\') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

const char *resattn_json_skip(const char *p, const char *end, int max_depth) {
    p = resattn_json_ws(p, end);
    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p != '[' && *p != '{') {
        /* a scalar: up to the next delimiter */
        const char *q = p;
        while (q < end && !is_ws(*q) && *q != ',' && *q != ']' && *q != '}' && *q != ':')
            q++;
        return q > p ? q : NULL;
    }
    int depth = 0;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            p = skip_string(p, end);
            if (!p)
                return NULL;
            continue;
        }
        if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return NULL;
        } else if (c == ']' || c == '}') {
            if (--depth == 0)
                return p + 1;
        }
        p++;
    }
    return NULL;
}

const char *resattn_json_member(const char *obj, const char *end, const char *key,
                                const char **vend, int max_depth) {
    size_t klen = strlen(key);
    const char *p = resattn_json_ws(obj, end);
    if (p >= end || *p != '{')
        return NULL;
    p = resattn_json_ws(p + 1, end);
    if (p < end && *p == '}')
        return NULL;
    while (p < end) {
        if (*p != '"')
            return NULL;
        const char *k = p + 1, *kend = skip_string(p, end);
        if (!kend)
            return NULL;
        p = resattn_json_ws(kend, end);
        if (p >= end || *p != ':')
            return NULL;
        const char *v = resattn_json_ws(p + 1, end);
        int match = (size_t)(kend - 1 - k) == klen && !memcmp(k, key, klen);
        if (match && !vend)
            return v < end ? v : NULL;
        const char *ve = resattn_json_skip(v, end, max_depth - 1);
        if (!ve)
            return NULL;
        if (match) {
            *vend = ve;
            return v;
        }
        p = resattn_json_ws(ve, end);
        if (p >= end || *p != ',')
            return NULL;
        p = resattn_json_ws(p + 1, end);
    }
    return NULL;
}

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The slow path: strtod_l / strtof_l on a NUL-terminated copy (the body has no NUL after
 * it). For float32 results strtof_l rounds once, so no double rounding. */
static int number_slow(const char *p, size_t n, int want_float, double *v) {
    char buf[512];
    if (n >= sizeof buf)
        return -1;
    memcpy(buf, p, n);
    buf[n] = 0;
    pthread_once(&c_locale_once, c_locale_init);
    char *e;
    if (want_float)
        *v = c_locale ? strtof_l(buf, &e, c_locale) : strtof(buf, &e);
    else
        *v = c_locale ? strtod_l(buf, &e, c_locale) : strtod(buf, &e);
    return e == buf + n ? 0 : -1;
}

/*
 * Fast float32 conversion of m * 10^e for up to 19 digits (numpy's tolist() sends 17-digit
 * reprs, beyond Clinger's exact 15): d carries at most ~2 double ulps of rounding error, plus
 * up to ~10 more when m is a number's first 16+ significant digits and the rest were cut off
 * (less than 1e-15 of the value), so (float)d is the correctly rounded float unless d lies
 * within 64 double ulps of a point halfway between two floats (low 29 of the 52 fraction
 * bits near 0x10000000, one number in 4 million): then -1 (use strtof).
 */
static inline int float_fast(uint64_t m, long exp10, double *v) {
    if (exp10 < -22 || exp10 > 22)
        return -1;
    /* 10^-k is not exact in binary: one more half ulp of error, well inside the guard */
    static const double pow10_neg[23] = {1e0,   1e-1,  1e-2,  1e-3,  1e-4,  1e-5,  1e-6,  1e-7,
                                         1e-8,  1e-9,  1e-10, 1e-11, 1e-12, 1e-13, 1e-14, 1e-15,
                                         1e-16, 1e-17, 1e-18, 1e-19, 1e-20, 1e-21, 1e-22};
    double d = m <= INT64_MAX ? (double)(int64_t)m : (double)m;
    d = exp10 < 0 ? d * pow10_neg[-exp10] : d * pow10_exact[exp10];
    if (!(d >= 1.2e-38 && d <= 3.4e38)) /* float subnormals and overflow: slow path */
        return -1;
    uint64_t bits;
    memcpy(&bits, &d, 8);
    int64_t low = (int64_t)(bits & ((1u << 29) - 1)) - (1 << 28);
    if (low >= -64 && low <= 64)
        return -1;
    *v = (double)(float)d;
    return 0;
}

/* SWAR digit parsing (as in fast_float / simdjson): 8 ASCII digits in a little-endian word. */
static int eight_digits(uint64_t v) {
    return (((v & 0xF0F0F0F0F0F0F0F0u) |
             (((v + 0x0606060606060606u) & 0xF0F0F0F0F0F0F0F0u) >> 4)) == 0x3333333333333333u);
}

static uint32_t parse_eight(uint64_t v) {
    const uint64_t mask = 0x000000FF000000FFu, mul1 = 0x000F424000000064u,
                   mul2 = 0x0000271000000001u;
    v -= 0x3030303030303030u;
    v = (v * 10) + (v >> 8);
    return (uint32_t)((((v & mask) * mul1) + (((v >> 16) & mask) * mul2)) >> 32);
}

/* Bytes of v (8 ASCII bytes, little-endian) before the first non-digit: 0..8. A carry out
 * of a non-digit byte only reaches later bytes, after the first non-digit. */
static inline int digit_run(uint64_t v) {
    uint64_t x = v ^ 0x3030303030303030u; /* digits become 0..9 */
    uint64_t bad = (x | (x + 0x0606060606060606u)) & 0xF0F0F0F0F0F0F0F0u;
    return bad ? __builtin_ctzll(bad) >> 3 : 8;
}

/* The first n (0..7) bytes of v, all digits, as a number: moved to the top, '0's below. */
static inline uint64_t digits_value(uint64_t v, int n) {
    uint64_t top = v << (8 * (7 - n)) << 8; /* two shifts: no branch for n = 0 */
    return parse_eight(top | 0x3030303030303030u >> (8 * n));
}

static const uint64_t pow10_u64[8] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000};

/*
 * The fast path of a float32 tensor element, the one that matters for big JSON bodies: a
 * plain number whose decimal exponent float_fast can take, with at most 19 digits (leading
 * zeros of the fraction included) or at least 16 significant ones before the rest, which is
 * skipped (numpy's 17-digit reprs). Fractions go 8 digits at a time and their last few
 * digits in one step, the sign without a branch, so the digit counts of random data cost
 * few mispredicted branches; the end of the buffer is checked once (at most FAST_LEN bytes
 * are read). Returns the byte past the number, or NULL when the element is anything else
 * (other grammar, a literal, a hard case, too close to the end): the caller then takes the
 * general path, which decides exactly and names errors. When it answers, it consumes the
 * same bytes as parse_number and gives the same float.
 */
#define FAST_LEN 48

static inline const char *number_f32_fast(const char *p, const char *end, float *f) {
    if (end - p < FAST_LEN)
        return NULL;
    const char *s = p + (*p == '-'), *digits = s;
    uint64_t m = 0;
    unsigned c = (unsigned char)*s - '0';
    if (c > 9)
        return NULL;
    /* Reads: a mantissa kept whole (sign, at most 19 digits counting a lone integer '0',
     * '.') ends before p + 22, one cut short before p + FAST_LEN - 9; a load there reads 8
     * bytes more, an exponent 7: all below FAST_LEN. */
    do { /* integer part */
        m = m * 10 + c;
        c = (unsigned char)*++s - '0';
    } while (c <= 9 && s - digits < 19);
    /* 20 integer digits or more, or a leading zero (the rare case tested first: no branch
     * on the first digit, 0 or not, which random data makes unpredictable) */
    if (c <= 9 || (s - digits > 1 && *digits == '0'))
        return NULL;
    int nd = m ? (int)(s - digits) : 0; /* digits in m, leading zeros not counted */
    long exp10 = 0;
    if (*s == '.') {
        const char *frac = ++s;
        uint64_t v;
        memcpy(&v, s, 8);
        int k = digit_run(v);
        while (k == 8 && nd <= 11) {
            m = m * 100000000u + parse_eight(v);
            nd += 8;
            s += 8;
            memcpy(&v, s, 8);
            k = digit_run(v);
        }
        if (s == frac && k == 0)
            return NULL;             /* "1." */
        if (m < 1000000000000000u) { /* under 16 significant digits: the last ones count */
            if (k == 8 || nd + k > 19)
                return NULL;
            m = m * pow10_u64[k] + digits_value(v, k);
            s += k;
            exp10 = -(long)(s - frac);
        } else { /* the rest moves the value by less than 1e-15 of it: skip it */
            exp10 = -(long)(s - frac);
            for (; k == 8; k = digit_run(v)) {
                s += 8;
                if (s > p + FAST_LEN - 16)
                    return NULL;
                memcpy(&v, s, 8);
            }
            s += k;
        }
    }
    if ((*s | 0x20) == 'e') {
        s++;
        int eneg = *s == '-';
        s += *s == '-' || *s == '+';
        c = (unsigned char)*s - '0';
        if (c > 9)
            return NULL;
        long e = 0;
        for (int i = 0; c <= 9; i++, c = (unsigned char)*++s - '0') {
            if (i == 4)
                return NULL;
            e = e * 10 + c;
        }
        exp10 += eneg ? -e : e;
    }
    double d = 0;
    if (m && float_fast(m, exp10, &d))
        return NULL;
    float r = (float)d;
    uint32_t bits;
    memcpy(&bits, &r, 4);
    bits |= (uint32_t)(*p == '-') << 31;
    memcpy(f, &bits, 4);
    return s;
}

/* A JSON number; want_float: only the float32 rounding of the value matters. */
static int parse_number(const char *p, const char *end, int want_float, double *v,
                        const char **endp) {
    const char *s = p;
    int neg = 0, nd = 0, exact = 1;
    long exp10 = 0;
    uint64_t m = 0;
    if (s < end && *s == '-') {
        neg = 1;
        s++;
    }
    if (s >= end || !is_digit(*s))
        return -1;
    if (*s == '0') {
        s++;
    } else {
        for (; s < end && is_digit(*s); s++) {
            if (nd < 19) {
                m = m * 10 + (uint64_t)(*s - '0');
                nd++;
            } else {
                exp10++;
                exact = 0;
            }
        }
    }
    if (s < end && *s == '.') {
        s++;
        if (s >= end || !is_digit(*s))
            return -1;
        if (m == 0) /* leading zeros of 0.000123 are not significant */
            for (; s < end && *s == '0'; s++)
                exp10--;
        while (nd <= 11 && end - s >= 8) { /* eight digits at a time */
            uint64_t v;
            memcpy(&v, s, 8);
            if (!eight_digits(v))
                break;
            m = m * 100000000u + parse_eight(v);
            nd += 8;
            exp10 -= 8;
            s += 8;
        }
        for (; s < end && is_digit(*s); s++) {
            if (m == 0 && *s == '0') {
                exp10--;
            } else if (nd < 19) {
                m = m * 10 + (uint64_t)(*s - '0');
                nd++;
                exp10--;
            } else {
                exact = 0;
            }
        }
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        s++;
        int eneg = 0;
        long e = 0;
        if (s < end && (*s == '+' || *s == '-'))
            eneg = *s++ == '-';
        if (s >= end || !is_digit(*s))
            return -1;
        for (; s < end && is_digit(*s); s++)
            if (e < 100000)
                e = e * 10 + (*s - '0');
        exp10 += eneg ? -e : e;
    }
    *endp = s;
    if (m == 0) {
        *v = neg ? -0.0 : 0.0;
        return 0;
    }
    if (!want_float && exact && nd <= 15 && exp10 >= -22 && exp10 <= 22) {
        double d = (double)m;
        d = exp10 < 0 ? d / pow10_exact[-exp10] : d * pow10_exact[exp10];
        *v = neg ? -d : d;
        return 0;
    }
    if (want_float && !float_fast(m, exp10, v)) {
        *v = neg ? -*v : *v;
        return 0;
    }
    return number_slow(p, (size_t)(s - p), want_float, v);
}

int resattn_json_number(const char *p, const char *end, double *v, const char **endp) {
    return parse_number(p, end, 0, v, endp);
}

int resattn_json_number_f32(const char *p, const char *end, float *f, const char **endp) {
    double d;
    if (parse_number(p, end, 1, &d, endp))
        return -1;
    *f = (float)d;
    return 0;
}

static int starts(const char *p, const char *end, const char *word) {
    size_t n = strlen(word);
    return (size_t)(end - p) >= n && !memcmp(p, word, n);
}

/* Convert one element at p into *f by the rule; 0, or 400 with err. */
static int scan_element(const char *p, const char *end, const resattn_elem_rule *rule, size_t index,
                        float *f, const char **endp, const char *what, char *err, size_t err_len) {
    double d;
    if (rule->kind == RESATTN_ELEM_BOOL) {
        if (starts(p, end, "true") || starts(p, end, "false")) {
            *f = *p == 't' ? 1.0f : 0.0f;
            *endp = p + (*p == 't' ? 4 : 5);
            return 0;
        }
        snprintf(err, err_len, "%s: element %zu is not true or false (datatype BOOL)", what, index);
        return 400;
    }
    const char *lit = NULL;
    if (p >= end || (*p != 'N' && *p != 'I' && *p != '-'))
        ; /* not a literal: the common case skips the comparisons */
    else if (starts(p, end, "NaN"))
        lit = "NaN", d = NAN;
    else if (starts(p, end, "Infinity"))
        lit = "Infinity", d = INFINITY;
    else if (starts(p, end, "-Infinity"))
        lit = "-Infinity", d = -INFINITY;
    if (lit) {
        if (!rule->allow_nonfinite || rule->kind != RESATTN_ELEM_FLOAT) {
            snprintf(err, err_len, "%s: element %zu is %s: non-finite values are refused", what,
                     index, lit);
            return 400;
        }
        *f = (float)d;
        *endp = p + strlen(lit);
        return 0;
    }
    int bad = rule->kind == RESATTN_ELEM_FLOAT ? resattn_json_number_f32(p, end, f, endp)
                                               : resattn_json_number(p, end, &d, endp);
    if (bad) {
        const char *kind = p < end && *p == '"'                  ? "a string"
                           : p < end && (*p == '[' || *p == '{') ? "an array or object"
                           : starts(p, end, "null")              ? "null"
                           : starts(p, end, "true") || starts(p, end, "false") ? "a boolean"
                                                                               : "not valid JSON";
        snprintf(err, err_len, "%s: element %zu is %s, expected a number (datatype %s)", what,
                 index, kind, rule->type);
        return 400;
    }
    if (rule->kind == RESATTN_ELEM_INT) {
        if (d != floor(d) || d < rule->lo || d > rule->hi) {
            snprintf(err, err_len, "%s: element %zu (%.17g) is not a %s value", what, index, d,
                     rule->type);
            return 400;
        }
        *f = (float)d;
        return 0;
    }
    if (!isfinite(*f) && !rule->allow_nonfinite) {
        snprintf(err, err_len,
                 "%s: element %zu (%.*s) is out of float32 range: non-finite values are refused",
                 what, index, (int)(*endp - p < 40 ? *endp - p : 40), p);
        return 400;
    }
    return 0;
}

int resattn_json_scan_tensor(const char *p, const char *end, const resattn_elem_rule *rule,
                             float *out, size_t cap, resattn_scan_shape *shape, const char *what,
                             char *err, size_t err_len) {
    return resattn_json_scan_tensor_prefix(p, end, rule, out, cap, shape, NULL, what, err, err_len);
}

int resattn_json_scan_tensor_prefix(const char *p, const char *end, const resattn_elem_rule *rule,
                                    float *out, size_t cap, resattn_scan_shape *shape,
                                    const char **endp, const char *what, char *err,
                                    size_t err_len) {
    size_t cnt[RESATTN_SCAN_MAX_DIMS + 1];      /* elements so far in the open array at depth */
    int64_t dims[RESATTN_SCAN_MAX_DIMS + 1];    /* length of arrays at depth, once known */
    int known[RESATTN_SCAN_MAX_DIMS + 1] = {0}; /* dims[d] is known */
    int depth = 0, leaf = -1, maxdepth = 0;     /* leaf: depth at which numbers appear */
    size_t n = 0;
    memset(shape, 0, sizeof *shape);
    p = resattn_json_ws(p, end);
    if (p >= end || *p != '[') {
        snprintf(err, err_len, "%s must be an array of numbers", what);
        return 400;
    }
    for (;;) {
        /* expect a value */
        p = resattn_json_ws(p, end);
        if (p >= end)
            goto cut;
        if (*p == '[') {
            if (depth >= RESATTN_SCAN_MAX_DIMS) {
                snprintf(err, err_len, "%s nests deeper than %d arrays", what,
                         RESATTN_SCAN_MAX_DIMS);
                return 400;
            }
            if (leaf >= 0 && depth + 1 > leaf) {
                snprintf(err, err_len,
                         "%s: ragged nesting: an array at depth %d where element %zu should be "
                         "a number (elements are at depth %d)",
                         what, depth + 1, n, leaf);
                return 400;
            }
            cnt[++depth] = 0;
            if (depth > maxdepth)
                maxdepth = depth;
            p = resattn_json_ws(p + 1, end);
            if (p < end && *p == ']')
                goto close; /* an empty array */
            continue;
        }
        if (depth == 0)
            goto trailing;
        if (leaf < 0)
            leaf = depth;
        if (depth != leaf) {
            snprintf(err, err_len,
                     "%s: ragged nesting: element %zu is at depth %d, earlier elements at %d", what,
                     n, depth, leaf);
            return 400;
        }
        if (n >= cap) {
            snprintf(err, err_len, "%s has more than %zu elements", what, cap);
            return rule->cap_status ? rule->cap_status : 400;
        }
        const char *q = rule->kind == RESATTN_ELEM_FLOAT ? number_f32_fast(p, end, &out[n]) : NULL;
        if (q) {
            p = q;
        } else {
            int st = scan_element(p, end, rule, n, &out[n], &p, what, err, err_len);
            if (st)
                return st;
        }
        n++;
    after:
        cnt[depth]++;
        p = resattn_json_ws(p, end);
        if (p >= end)
            goto cut;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p != ']') {
            snprintf(err, err_len, "%s: expected ',' or ']' after element %zu", what,
                     n ? n - 1 : 0);
            return 400;
        }
    close:
        if (!known[depth]) {
            known[depth] = 1;
            dims[depth] = (int64_t)cnt[depth];
        } else if (dims[depth] != (int64_t)cnt[depth]) {
            snprintf(err, err_len,
                     "%s: ragged nesting: an array at depth %d has %zu elements, an earlier "
                     "one %lld (near element %zu)",
                     what, depth, cnt[depth], (long long)dims[depth], n);
            return 400;
        }
        p++;
        if (--depth == 0)
            break;
        goto after;
    }
    if (endp)
        *endp = p;
    else if (resattn_json_ws(p, end) != end)
        goto trailing;
    shape->ndim = leaf > 0 ? leaf : maxdepth;
    for (int d = 0; d < shape->ndim; d++)
        shape->dims[d] = known[d + 1] ? dims[d + 1] : 0;
    shape->count = n;
    size_t prod = 1;
    int over = 0;
    for (int d = 0; d < shape->ndim; d++)
        over |= __builtin_mul_overflow(prod, (size_t)shape->dims[d], &prod);
    if ((over || prod != n) && n > 0) {
        snprintf(err, err_len, "%s: ragged nesting: %zu elements do not fill the nested shape",
                 what, n);
        return 400;
    }
    return 0;
cut:
    snprintf(err, err_len, "%s is cut off after element %zu", what, n);
    return 400;
trailing:
    snprintf(err, err_len, "%s: unexpected bytes after the array", what);
    return 400;
}
