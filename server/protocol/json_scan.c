/*
 * The strict numeric-tensor scanner of json_scan.h. Float32 tensor elements first take
 * number_f32_fast (up to 19 digits read 8 at a time, branch-light for the varying lengths of
 * real data, no per-byte bounds checks); anything it does not decide goes through
 * parse_number: Clinger's fast path (at most 15 significant digits and a power of ten up to
 * 22: one exact double multiply or divide), float_fast for float32 results, and strtod_l /
 * strtof_l in a "C" locale for the rest, so "0.5" means one half whatever setlocale() said
 * and every float equals strtof's (tests/check_protocol.c compares them bit for bit).
 * On CPUs with AVX-512 (F/BW/DQ/VL/VBMI2/VPOPCNTDQ) long runs of plain numbers inside a
 * leaf array take the bulk path further down first (64-byte blocks, 8 numbers converted at
 * a time: 2-3x faster); it stops before anything it does not fully understand, which the
 * per-element path then reads, so both paths accept, reject and convert identically
 * (tests/check_protocol.c and the differential fuzz harness tests/fuzz/fuzz_json_scan.c).
 */
#include "protocol/json_scan.h"

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

/* 10^k for k in [-22, 22] at ten_to[k]: the non-negative ones are exact in a double (what
 * Clinger's fast path needs); 10^-k is the nearest double, half an ulp off. */
static const double pow10_table[45] = {
    1e-22, 1e-21, 1e-20, 1e-19, 1e-18, 1e-17, 1e-16, 1e-15, 1e-14, 1e-13, 1e-12, 1e-11,
    1e-10, 1e-9,  1e-8,  1e-7,  1e-6,  1e-5,  1e-4,  1e-3,  1e-2,  1e-1,  1e0,   1e1,
    1e2,   1e3,   1e4,   1e5,   1e6,   1e7,   1e8,   1e9,   1e10,  1e11,  1e12,  1e13,
    1e14,  1e15,  1e16,  1e17,  1e18,  1e19,  1e20,  1e21,  1e22};
static const double *const ten_to = pow10_table + 22;

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
    double d = m <= INT64_MAX ? (double)(int64_t)m : (double)m;
    d *= ten_to[exp10];
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
        d = exp10 < 0 ? d / ten_to[-exp10] : d * ten_to[exp10];
        *v = neg ? -d : d;
        return 0;
    }
    if (want_float && !float_fast(m, exp10, v)) {
        *v = neg ? -*v : *v;
        return 0;
    }
    return number_slow(p, (size_t)(s - p), want_float, v);
}

/*
 * The AVX-512 bulk path of float32 tensors (x86-64 CPUs with AVX-512 F/BW/DQ/VL/VBMI2/VPOPCNTDQ and
 * BMI2; the portable per-element path above stays for everything else). One call converts a
 * run of `number ws* , ws*` inside one leaf array, 64 bytes at a time:
 *
 * - classify: each 64-byte block becomes bitmasks (digits, zeros, '.', '-', ',', JSON
 *   whitespace, other), bit i for byte i;
 * - validate with mask arithmetic, carrying the previous block's last bits: numbers are runs
 *   of [0-9.-] ("tokens"); '-' only first and followed by a digit, '.' between two digits and
 *   at most once per token, no leading zero before a digit, and between two tokens exactly one
 *   comma (pext of the token starts among starts|commas must alternate);
 * - digits: the significant digits (the run of '-', '0', '.' at a token's start removed)
 *   are compressed (vpcompressb) into one stream, so each token's digits are contiguous;
 * - convert 8 tokens at a time: the first min(16, K) significant digits of each, right
 *   aligned in a 16-byte lane, become an integer M < 10^16 (vpmaddubsw/vpmaddwd, exact in a
 *   double), then M * 10^e with float_fast's halfway guard; guarded lanes go to parse_number.
 *
 * It stops before the first token it cannot finish, anything other than those bytes
 * (exponents, literals, ']', the last 64 bytes of the body) or a block that fails a check,
 * and returns how many elements it wrote: the per-element path then takes the stopping
 * token, so errors, messages and edge cases are the portable path's. Tokens are committed
 * only when the next token's start is seen, i.e. with their separator checked.
 */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define SIMD                                                                                       \
    __attribute__((                                                                                \
        target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi2,avx512vpopcntdq,bmi,bmi2,popcnt")))

enum {
    BULK_BATCH = 64,    /* tokens converted per flush (more may come from the last block) */
    BULK_TOKENS = 128,  /* BULK_BATCH + at most 32 tokens of one block + 4, rounded up */
    BULK_PAD = 16,      /* stream bytes before its start: a lane loads 16 bytes before a end */
    BULK_STREAM = 2048, /* significant digits of one batch (flushed before it overflows) */
    BULK_LONG = 64,     /* a token with more significant digits stops the bulk path */
};

/* The tokens of one batch, structure of arrays: token i's significant digits are
 * stream[sd[i], sd[i + 1]), its fraction digits fd[i + 1] - fd[i] (no digits between tokens);
 * tokens 0..nt-1 are committed, token nt is the one being read. */
typedef struct bulk_batch {
    uint8_t stream[BULK_PAD + BULK_STREAM + 64 + 64]; /* digits 0..9, 64 bytes of store slack */
    int32_t sd[BULK_TOKENS + 9], fd[BULK_TOKENS + 9]; /* running counts at each start */
    uint32_t sign[BULK_TOKENS + 8];                   /* float sign bit */
    const char *at[BULK_TOKENS + 8];                  /* the token's text */
    /* (bulk_starts writes 8 tokens at a time: up to 7 past the last) */
} bulk_batch;

/* What goes from one block to the next (kept out of bulk_batch, whose arrays the byte stores
 * may alias, so that it stays in registers). */
typedef struct bulk_carry {
    int len;                       /* digits in the stream */
    int nt;                        /* tokens committed to the batch */
    uint64_t n, d, minus, dot, fz; /* the previous byte was a token byte, digit, '-', '.', a
                                      token's first digit and zero */
    unsigned char lead, frac;      /* carries of the leading-run and fraction-run additions */
    uint64_t last_start, last_dot; /* the last start/comma event was a start; the last
                                      start/dot event was a dot */
    int fd;                        /* running count of fraction digits */
} bulk_carry;

/* 8 tokens from i (cnt <= 8 of them real) into out[0..cnt); the index of the first
 * token the portable path must take instead (non-finite), or -1. */
static inline SIMD int bulk_convert8(bulk_batch *b, int i, int cnt, const char *end, float *out) {
    /* K significant digits, the first kk <= 16 of them in the lane (right-aligned: bytes
     * b >= 16 - kk kept), value M * 10^(K - kk - F) */
    __m256i sd = _mm256_loadu_si256((const void *)&b->sd[i]);
    __m256i K = _mm256_sub_epi32(_mm256_loadu_si256((const void *)&b->sd[i + 1]), sd);
    __m256i F = _mm256_sub_epi32(_mm256_loadu_si256((const void *)&b->fd[i + 1]),
                                 _mm256_loadu_si256((const void *)&b->fd[i]));
    __m256i kk = _mm256_min_epi32(K, _mm256_set1_epi32(16));
    __m256i e = _mm256_maskz_sub_epi32(_mm256_test_epi32_mask(K, K), _mm256_sub_epi32(K, kk), F);
    int32_t last[8];
    _mm256_storeu_si256((void *)last, _mm256_add_epi32(sd, kk));
    __m512i kb = _mm512_broadcast_i32x4(_mm256_cvtepi32_epi8(kk)); /* kk as bytes, each lane */
    const __m512i iota =
        _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const uint8_t *s = b->stream + BULK_PAD - 16;
    __m512i z[2];
    for (int r = 0; r < 2; r++) { /* register r: tokens r, r + 2, r + 4, r + 6 */
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const void *)(s + last[r])));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const void *)(s + last[r + 2])), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const void *)(s + last[r + 4])), 2);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const void *)(s + last[r + 6])), 3);
        __m512i lane_kk =
            _mm512_shuffle_epi8(/* lane j: kk of token 2 j + r */
                                kb,
                                _mm512_set_epi64(0x0606060606060606 + r * 0x0101010101010101,
                                                 0x0606060606060606 + r * 0x0101010101010101,
                                                 0x0404040404040404 + r * 0x0101010101010101,
                                                 0x0404040404040404 + r * 0x0101010101010101,
                                                 0x0202020202020202 + r * 0x0101010101010101,
                                                 0x0202020202020202 + r * 0x0101010101010101,
                                                 r * 0x0101010101010101, r * 0x0101010101010101));
        __mmask64 keep =
            _mm512_cmpge_epu8_mask(_mm512_add_epi8(iota, lane_kk), _mm512_set1_epi8(16));
        v = _mm512_maskz_mov_epi8(keep, v);
        v = _mm512_maddubs_epi16(v, _mm512_set1_epi16(0x010A));     /* 2 digits: 10 a + b */
        z[r] = _mm512_madd_epi16(v, _mm512_set1_epi32(0x00010064)); /* 4 digits */
    }
    __m512i q = _mm512_packus_epi32(z[0], z[1]);             /* lane j: 4 of z0, 4 of z1 */
    q = _mm512_madd_epi16(q, _mm512_set1_epi32(0x00012710)); /* 8 digits: hi, lo, hi, lo */
    __m512i m = _mm512_add_epi64(_mm512_mul_epu32(q, _mm512_set1_epi64(100000000)),
                                 _mm512_srli_epi64(q, 32)); /* token i + k in element k */
    __mmask8 bad = _mm256_cmpgt_epi32_mask(e, _mm256_set1_epi32(22)) |
                   _mm256_cmpgt_epi32_mask(_mm256_set1_epi32(-22), e);
    e = _mm256_min_epi32(_mm256_max_epi32(e, _mm256_set1_epi32(-22)), _mm256_set1_epi32(22));
    __m512d p = _mm512_i32gather_pd(_mm256_add_epi32(e, _mm256_set1_epi32(22)), pow10_table, 8);
    __m512d d = _mm512_mul_pd(_mm512_cvtepu64_pd(m), p); /* M < 10^16: exact in a double */
    /* float_fast's guard: out of the normal float range, or near a halfway point */
    __m512i low = _mm512_and_si512(_mm512_castpd_si512(d), _mm512_set1_epi64((1 << 29) - 1));
    __mmask8 half = _mm512_cmple_epu64_mask(
        _mm512_sub_epi64(low, _mm512_set1_epi64((1 << 28) - 64)), _mm512_set1_epi64(128));
    __mmask8 range = _mm512_cmp_pd_mask(d, _mm512_set1_pd(1.2e-38), _CMP_GE_OQ) &
                     _mm512_cmp_pd_mask(d, _mm512_set1_pd(3.4e38), _CMP_LE_OQ);
    __mmask8 nz = _mm512_test_epi64_mask(m, m);
    bad = (bad | half | (__mmask8)~range) & nz;
    __m256i f = _mm256_or_si256(_mm256_castps_si256(_mm512_cvtpd_ps(d)),
                                _mm256_loadu_si256((const void *)&b->sign[i]));
    __mmask8 real = (__mmask8)((1u << cnt) - 1);
    _mm256_mask_storeu_epi32(out, real, f);
    for (unsigned h = bad & real; h; h &= h - 1) {
        int k = __builtin_ctz(h);
        double v;
        const char *q_end;
        if (parse_number(b->at[i + k], end, 1, &v, &q_end) || !isfinite((float)v))
            return k;
        out[k] = (float)v;
    }
    return -1;
}

/* Convert the batch's tokens into out; how many are good (fewer when one is not finite). */
static SIMD int bulk_flush(bulk_batch *b, int nt, const char *end, float *out) {
    for (int i = nt + 1; i <= nt + 8; i++) { /* dummy tokens (0) to fill the last group */
        b->sd[i] = b->sd[nt];
        b->fd[i] = b->fd[nt];
    }
    for (int i = 0; i < nt; i += 8) {
        int stop = bulk_convert8(b, i, nt - i < 8 ? nt - i : 8, end, out + i);
        if (stop >= 0)
            return i + stop;
    }
    return nt;
}

/* The classification of one 64-byte block: bit i for byte i. */
typedef struct bulk_masks {
    uint64_t d, z, dot, minus, comma, ws;
    __m512i digits; /* the bytes minus '0' */
} bulk_masks;

static inline SIMD bulk_masks bulk_classify(const char *p) {
    bulk_masks k;
    __m512i x = _mm512_loadu_si512((const void *)p);
    /* JSON whitespace by its low nibble: ' ' 0x20, '\t' 0x09, '\n' 0x0A, '\r' 0x0D; pshufb
     * gives 0 for bytes >= 0x80, which then differ from the byte */
    const __m512i ws = _mm512_broadcast_i32x4(
        _mm_setr_epi8(' ', 0, 0, 0, 0, 0, 0, 0, 0, '\t', '\n', 0, 0, '\r', 0, 0));
    k.digits = _mm512_sub_epi8(x, _mm512_set1_epi8('0'));
    k.d = _mm512_cmplt_epu8_mask(k.digits, _mm512_set1_epi8(10));
    k.z = _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8('0'));
    k.dot = _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8('.'));
    k.minus = _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8('-'));
    k.comma = _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(','));
    k.ws = _mm512_cmpeq_epi8_mask(_mm512_shuffle_epi8(ws, x), x);
    return k;
}

/* Whether the events `a` among a|b alternate, the first being an `a` unless *last_a (the
 * last event of earlier blocks was one); updates *last_a. */
static inline SIMD int bulk_alternate(uint64_t a, uint64_t b, uint64_t *last_a) {
    uint64_t x = a | b, v = _pext_u64(a, x);
    int n = (int)_mm_popcnt_u64(x);
    uint64_t want = _bzhi_u64(*last_a ? 0xAAAAAAAAAAAAAAAAu : 0x5555555555555555u, (unsigned)n);
    if (n)
        *last_a = v >> (n - 1) & 1;
    return v == want;
}

/* Whether no two '.' come without a token start between them (*last_dot: the last start/dot
 * event of earlier blocks was a dot); updates *last_dot. */
static inline SIMD int bulk_one_dot(uint64_t dot, uint64_t starts, uint64_t *last_dot) {
    uint64_t x = starts | dot, v = _pext_u64(dot, x);
    int n = (int)_mm_popcnt_u64(x), ok = !(v & v >> 1) && !(*last_dot && (v & 1));
    if (n)
        *last_dot = v >> (n - 1) & 1;
    return ok;
}

/* Record the tokens starting at the bits of ev (from b's token i on), 8 at a time: their
 * running digit counts are popcounts of the digit masks below their starts. */
static inline SIMD void bulk_starts(bulk_batch *b, int i, uint64_t ev, const char *blk,
                                    uint64_t sig, uint64_t frac, uint64_t minus, int base,
                                    int fbase) {
    uint8_t pos[64];
    const __m512i iota = _mm512_set_epi64(
        0x3f3e3d3c3b3a3938, 0x3736353433323130, 0x2f2e2d2c2b2a2928, 0x2726252423222120,
        0x1f1e1d1c1b1a1918, 0x1716151413121110, 0x0f0e0d0c0b0a0908, 0x0706050403020100);
    _mm512_storeu_si512((void *)pos, _mm512_maskz_compress_epi8(ev, iota));
    const __m512i one = _mm512_set1_epi64(1);
    for (int j = 0, n = (int)_mm_popcnt_u64(ev); j < n; j += 8, i += 8) {
        __m512i at = _mm512_cvtepu8_epi64(_mm_loadl_epi64((const void *)(pos + j)));
        __m512i below = _mm512_sub_epi64(_mm512_sllv_epi64(one, at), one);
        __m512i sd =
            _mm512_popcnt_epi64(_mm512_and_si512(below, _mm512_set1_epi64((long long)sig)));
        __m512i fd =
            _mm512_popcnt_epi64(_mm512_and_si512(below, _mm512_set1_epi64((long long)frac)));
        __m512i sign = _mm512_slli_epi64(
            _mm512_and_si512(_mm512_srlv_epi64(_mm512_set1_epi64((long long)minus), at), one), 31);
        _mm256_storeu_si256((void *)&b->sd[i],
                            _mm256_add_epi32(_mm512_cvtepi64_epi32(sd), _mm256_set1_epi32(base)));
        _mm256_storeu_si256((void *)&b->fd[i],
                            _mm256_add_epi32(_mm512_cvtepi64_epi32(fd), _mm256_set1_epi32(fbase)));
        _mm256_storeu_si256((void *)&b->sign[i], _mm512_cvtepi64_epi32(sign));
        _mm512_storeu_si512((void *)&b->at[i],
                            _mm512_add_epi64(at, _mm512_set1_epi64((long long)(intptr_t)blk)));
    }
}

/*
 * The block at blk (its first `lim` bytes: the rest is not read as part of a token) under
 * the carries c: validates it, compresses its significant digits into the stream and walks
 * its token starts, committing the token before each (its digits are all those before the
 * start: gaps have none). Returns 0 to go on, 1 to stop (t is then the token to stop at);
 * skip: a start to pass over (the first token), room: tokens that may still be committed.
 */
static inline SIMD int bulk_block(const char *blk, bulk_masks k, int lim, bulk_carry *c,
                                  bulk_batch *b, uint64_t skip, int *room) {
    uint64_t in = _bzhi_u64(~0ull, (unsigned)lim);
    uint64_t d = k.d & in, dot = k.dot & in, minus = k.minus & in, z = k.z & in;
    uint64_t n = d | dot | minus, comma = k.comma & in;
    uint64_t starts = n & ~(n << 1 | c->n);
    uint64_t after_minus = minus << 1 | c->minus, fz = z & (starts | after_minus);
    uint64_t bad = (minus & ~starts) | (after_minus & ~d & in) | (dot & ~(d << 1 | c->d)) |
                   ((dot << 1 | c->dot) & ~d & in) | ((fz << 1 | c->fz) & d);
    uint64_t last_start = c->last_start, last_dot = c->last_dot;
    if (bad || !bulk_alternate(starts, comma, &last_start) || !bulk_one_dot(dot, starts, &last_dot))
        return 1;
    /* the leading run ('-', '0', '.') of each token, and the fraction run from its '.' */
    uint64_t a = minus | z | dot, sum, fsum;
    unsigned char cl = _addcarry_u64(c->lead, a, starts & a, (unsigned long long *)&sum);
    unsigned char cf = _addcarry_u64(c->frac, n, dot, (unsigned long long *)&fsum);
    uint64_t sig = d & ~(a & ~sum), frac = d & n & ~fsum;
    int base = c->len, fbase = c->fd;
    _mm512_storeu_si512((void *)(b->stream + BULK_PAD + base),
                        _mm512_maskz_compress_epi8(sig, k.digits));
    uint64_t ev = starts & ~skip;
    int more = (int)_mm_popcnt_u64(ev) > *room; /* stop at the first start past room */
    if (more)
        ev = _pdep_u64(_bzhi_u64(~0ull, (unsigned)*room), ev);
    *room -= (int)_mm_popcnt_u64(ev);
    bulk_starts(b, c->nt + 1, ev, blk, sig, frac, minus, base, fbase);
    c->nt += (int)_mm_popcnt_u64(ev);
    if (more)
        return 1;
    c->len = base + (int)_mm_popcnt_u64(sig);
    c->fd = fbase + (int)_mm_popcnt_u64(frac);
    c->n = n >> 63, c->d = d >> 63, c->minus = minus >> 63, c->dot = dot >> 63;
    c->fz = fz >> 63, c->lead = cl, c->frac = cf;
    c->last_start = last_start, c->last_dot = last_dot;
    return lim < 64;
}

/* Keep the token being read (its digits, at most BULK_LONG) as the batch's token 0. */
static inline SIMD void bulk_restart(bulk_batch *b, bulk_carry *c) {
    int nt = c->nt, sd = b->sd[nt];
    memmove(b->stream + BULK_PAD, b->stream + BULK_PAD + sd, (size_t)(c->len - sd));
    c->len -= sd;
    c->fd -= b->fd[nt];
    b->sd[0] = b->fd[0] = 0;
    b->sign[0] = b->sign[nt];
    b->at[0] = b->at[nt];
    c->nt = 0;
}

/* The bulk path: p is where an element of a float32 leaf array is expected; converts up to
 * room elements into out, sets *stop to the first byte it leaves to the per-element path. */
static SIMD size_t bulk_f32(const char *p, const char *end, float *out, size_t room,
                            const char **stop) {
    *stop = p;
    if (room == 0 || end - p < 64 || (!is_digit(*p) && *p != '-'))
        return 0;
    bulk_batch b;
    bulk_carry c = {0};
    b.sd[0] = b.fd[0] = 0; /* token 0 starts at p */
    b.sign[0] = (uint32_t)(*p == '-') << 31;
    b.at[0] = p;
    uint64_t skip = 1;
    int left = room > (size_t)INT32_MAX ? INT32_MAX : (int)room;
    size_t done = 0;
    for (const char *blk = p; end - blk >= 64; blk += 64) {
        if (c.nt >= BULK_BATCH || c.len > BULK_STREAM - 64) {
            int good = bulk_flush(&b, c.nt, end, out + done);
            if (good < c.nt) {
                *stop = b.at[good];
                return done + (size_t)good;
            }
            done += (size_t)good;
            bulk_restart(&b, &c);
        }
        if (c.len - b.sd[c.nt] > BULK_LONG)
            break;
        bulk_masks k = bulk_classify(blk);
        uint64_t other = ~(k.d | k.dot | k.minus | k.comma | k.ws);
        if (bulk_block(blk, k, other ? __builtin_ctzll(other) : 64, &c, &b, skip, &left))
            break;
        skip = 0;
    }
    int good = bulk_flush(&b, c.nt, end, out + done);
    *stop = b.at[good];
    return done + (size_t)good;
}

static int simd_detect(void) {
    const char *env = getenv("RESATTN_JSON_SCAN");
    if (env && strcmp(env, "portable") == 0)
        return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512vpopcntdq") &&
           __builtin_cpu_supports("bmi2");
}
#else
static size_t bulk_f32(const char *p, const char *end, float *out, size_t room, const char **stop) {
    (void)end, (void)out, (void)room;
    *stop = p;
    return 0;
}

static int simd_detect(void) {
    return 0;
}
#endif

static int simd_state = -1; /* racing first calls compute the same answer */

int resattn_json_scan_simd(void) {
    int s = __atomic_load_n(&simd_state, __ATOMIC_RELAXED);
    if (s < 0) {
        s = simd_detect();
        __atomic_store_n(&simd_state, s, __ATOMIC_RELAXED);
    }
    return s;
}

void resattn_json_scan_force_portable(int on) {
    __atomic_store_n(&simd_state, on ? 0 : simd_detect(), __ATOMIC_RELAXED);
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
    int simd = rule->kind == RESATTN_ELEM_FLOAT && resattn_json_scan_simd(), backoff = 1;
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
        if (simd && !--backoff) {
            /* room for all but one: the element it stops at is still read below */
            size_t k = bulk_f32(p, end, out + n, cap - n - 1, &p);
            n += k;
            cnt[depth] += k;
            backoff = k ? 1 : 16; /* short of data it takes (exponents): try again later */
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
