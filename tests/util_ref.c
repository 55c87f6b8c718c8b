/*
 * Naive reference operators for the tests (see util_ref.h). No BLAS, no im2col, no tricks.
 */
#include "util_ref.h"

#include <float.h>
#include <math.h>

void ref_conv(const float *in, int n, int cin, int h, int w, const float *wt, const float *b,
              int cout, int k, int stride, int pad, int relu, float *out) {
    int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    for (int i = 0; i < n; i++)
        for (int co = 0; co < cout; co++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    double s = b ? b[co] : 0.0;
                    for (int ci = 0; ci < cin; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                    continue;
                                s += (double)wt[((co * cin + ci) * k + ky) * k + kx] *
                                     in[(((size_t)i * cin + ci) * h + iy) * w + ix];
                            }
                    if (relu && s < 0)
                        s = 0;
                    out[(((size_t)i * cout + co) * ho + oy) * wo + ox] = (float)s;
                }
}

void ref_bn(float *x, int n, int c, int hw, const float *g, const float *beta, const float *mean,
            const float *var, double eps) {
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int p = 0; p < hw; p++) {
                float *v = &x[((size_t)i * c + ch) * hw + p];
                *v = (float)(((double)*v - mean[ch]) / sqrt((double)var[ch] + eps) * g[ch] +
                             beta[ch]);
            }
}

void ref_maxpool3s2(const float *in, int nc, int h, int w, float *out) {
    int ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1;
    for (int c = 0; c < nc; c++)
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                float m = -FLT_MAX;
                for (int iy = 2 * oy - 1; iy <= 2 * oy + 1; iy++)
                    for (int ix = 2 * ox - 1; ix <= 2 * ox + 1; ix++)
                        if (iy >= 0 && iy < h && ix >= 0 && ix < w &&
                            in[((size_t)c * h + iy) * w + ix] > m)
                            m = in[((size_t)c * h + iy) * w + ix];
                out[((size_t)c * ho + oy) * wo + ox] = m;
            }
}

void ref_gap(const float *in, int nc, int hw, float *out) {
    for (int c = 0; c < nc; c++) {
        double s = 0;
        for (int p = 0; p < hw; p++)
            s += in[(size_t)c * hw + p];
        out[c] = (float)(s / hw);
    }
}

void ref_linear(const float *x, int n, int cin, const float *w, const float *b, int cout,
                float *y) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < cout; o++) {
            double s = b ? b[o] : 0.0;
            for (int k = 0; k < cin; k++)
                s += (double)w[(size_t)o * cin + k] * x[(size_t)i * cin + k];
            y[(size_t)i * cout + o] = (float)s;
        }
}

double ref_max_abs_diff(const float *a, const float *b, size_t count) {
    double m = 0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) /* NaN propagates as a failure */
            m = d;
    }
    return m;
}

double ref_max_abs(const float *a, size_t count) {
    double m = 0;
    for (size_t i = 0; i < count; i++)
        if (fabs(a[i]) > m)
            m = fabs(a[i]);
    return m;
}

void ref_fill(float *x, size_t count, unsigned seed) {
    unsigned r = seed * 2654435761u + 1;
    for (size_t i = 0; i < count; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = (float)(r >> 8) / (float)(1 << 24) * 2.0f - 1.0f;
    }
}
