/*
 * One core's peak multiply-add rate for each product instruction the engine uses, with
 * every operand in registers (no memory traffic), for "fraction of peak" figures
 * (tests/bench/bench_bf16.py):
 *   FP32 FMA      vfmadd231ps zmm: 16 lanes x 2 flops, 24 independent accumulators
 *   AVX512-BF16   vdpbf16ps zmm:   16 lanes x 2 pairs x 2 flops, 24 accumulators
 *   AMX-BF16      tdpbf16ps:       16 x 16 x 32 x 2 flops, 4 accumulator tiles
 * Each runs for about `seconds` five times; the best is printed, as one JSON line, with
 * null (and the reason) for an instruction this CPU lacks. Run pinned to one core by the
 * caller (taskset) if the machine has more.
 *
 *     peak_probe [seconds]
 */
#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static volatile float sink;

#define NACC 24
#define ROUNDS 4096

__attribute__((target("avx512f"))) static double fma_round(long reps) {
    __m512 acc[NACC], a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < NACC; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (long r = 0; r < reps; r++) {
#pragma GCC unroll 24
        for (int i = 0; i < NACC; i++)
            acc[i] = _mm512_fmadd_ps(a, b, acc[i]);
        __asm__ volatile("" : "+v"(a)); /* keep the loop a loop */
    }
    __m512 s = acc[0];
    for (int i = 1; i < NACC; i++)
        s = _mm512_add_ps(s, acc[i]);
    sink = _mm512_reduce_add_ps(s);
    return (double)reps * NACC * 32;
}

__attribute__((target("avx512f,avx512bf16"))) static double dpbf16_round(long reps) {
    __m512 acc[NACC];
    __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3380);
    for (int i = 0; i < NACC; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (long r = 0; r < reps; r++) {
#pragma GCC unroll 24
        for (int i = 0; i < NACC; i++)
            acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
        __asm__ volatile("" : "+v"(a));
    }
    __m512 s = acc[0];
    for (int i = 1; i < NACC; i++)
        s = _mm512_add_ps(s, acc[i]);
    sink = _mm512_reduce_add_ps(s);
    return (double)reps * NACC * 64;
}

typedef struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

__attribute__((target("amx-tile,amx-bf16"))) static double amx_round(long reps) {
    static _Alignas(64) uint16_t ab[16 * 32];
    static _Alignas(64) float c[4][256];
    static const _Alignas(64) tile_config cfg = {
        .palette = 1,
        .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
        .rows = {16, 16, 16, 16, 16, 16, 16, 16},
    };
    for (int i = 0; i < 16 * 32; i++)
        ab[i] = 0x3380; /* tiny values: the sums stay finite */
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, ab, 64);
    _tile_loadd(5, ab, 64);
    _tile_loadd(6, ab, 64);
    _tile_loadd(7, ab, 64);
    for (long r = 0; r < reps; r++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    _tile_stored(2, c[2], 64);
    _tile_stored(3, c[3], 64);
    _tile_release();
    sink = c[0][0] + c[1][1] + c[2][2] + c[3][3];
    return (double)reps * 4 * 16 * 16 * 32 * 2;
}

/* Best GFLOP/s of five runs of about `seconds` each. */
static double best(double (*round)(long), long reps, double seconds) {
    double t0 = now_s();
    round(reps); /* warm-up, and the calibration of reps */
    double dt = now_s() - t0;
    long n = dt > 0 ? (long)(reps * seconds / dt) + 1 : reps;
    double top = 0;
    for (int i = 0; i < 5; i++) {
        t0 = now_s();
        double flops = round(n);
        double g = flops / (now_s() - t0) / 1e9;
        top = g > top ? g : top;
    }
    return top;
}

static int has_avx512bf16(void) {
    unsigned a, b, c, d;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || __get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 1, a, b, c, d);
    return (a >> 5) & 1;
}

/* CPUID's AMX-BF16 and AMX-TILE bits and Linux's permission for the tile data state. */
static const char *amx_missing(void) {
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7)
        return "no CPUID leaf 7";
    __cpuid_count(7, 0, a, b, c, d);
    if (!(d >> 22 & 1) || !(d >> 24 & 1))
        return "CPUID reports no AMX-BF16/AMX-TILE";
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */))
        return "Linux refused the tile data state";
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0.2;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) {
        printf("{\"error\": \"no AVX-512F\"}\n");
        return 1;
    }
    double f32 = best(fma_round, 1 << 14, seconds);
    double bf = has_avx512bf16() ? best(dpbf16_round, 1 << 12, seconds) : 0;
    const char *no_amx = amx_missing();
    double amx = no_amx ? 0 : best(amx_round, 1 << 10, seconds);
    printf("{\"fp32_fma_gflops\": %.1f, ", f32);
    if (bf)
        printf("\"avx512bf16_gflops\": %.1f, ", bf);
    else
        printf("\"avx512bf16_gflops\": null, ");
    if (no_amx)
        printf("\"amx_bf16_gflops\": null, \"amx_missing\": \"%s\"}\n", no_amx);
    else
        printf("\"amx_bf16_gflops\": %.1f}\n", amx);
    return 0;
}
