/* DICE's merge of a depthwise pair followed by a per-sample modulated LayerNorm, fused, with
 * its backward: channels-last fp32 rows on one CPU thread.
 *
 * A row is one pixel (b, h, w) of a batch of B images of S = H W pixels; rows are in order,
 * so row i belongs to image b = i / S. The pair row holds 2C values, left_c at 2c and
 * right_c at 2c + 1 (the DICE block's grouped convolution). Per row:
 *
 *   s = l + r,  d = l - r,  g = 1 / (1 + exp(lam_c d^2)),  m_c = s g        (DICE Fig. 5)
 *   mu = mean_c m,  rstd = 1 / sqrt(mean_c (m - mu)^2 + eps),  xhat = (m - mu) rstd
 *   y_c = xhat_c a[b, c] + o[b, c]
 *
 * a and o are the conditioning's per-sample multiplier and offset (adaLN-Zero: 1 + scale and
 * shift; TD-LN: gamma and beta). The forward writes y and each row's (mu, rstd); the backward
 * recomputes s, d, g and xhat from the pair instead of keeping them, and writes the pair's
 * gradient and the per-image sums that are the gradients of lam, a and o:
 *
 *   ga[b] += gy xhat,  go[b] += gy,  t = gy a,
 *   gm = rstd (t - mean_c t - xhat mean_c(t xhat))                          (LayerNorm)
 *   q = gm g,  k = q (1 - g) s d,  glam[b] += -k d,
 *   gl = q - 2 lam k,  gr = q + 2 lam k                                      (the merge)
 *
 * PyTorch computes the same with about fifteen passes over the (B, H, W, C) tensors (the merge,
 * the norm, the modulation and their gradients: dicesearch/ops/merge_norm.py's reference);
 * here each row is read and written once each way. Built by dicesearch/native/__init__.py;
 * dicesearch/ops/merge_norm.py checks shapes, contiguity and C % VW == 0 first.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vectors.h"

int mn_vector_width(void) { return VW; }

/* the sum of a vector's lanes, by halves (log2 VW shuffles and adds) */
static inline float sum_lanes(vf v) {
#if VW == 16
    v += __builtin_shuffle(v, (vi){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
    v += __builtin_shuffle(v, (vi){4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11});
    v += __builtin_shuffle(v, (vi){2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13});
    v += __builtin_shuffle(v, (vi){1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14});
#else
    v += __builtin_shuffle(v, (vi){4, 5, 6, 7, 0, 1, 2, 3});
    v += __builtin_shuffle(v, (vi){2, 3, 0, 1, 6, 7, 4, 5});
    v += __builtin_shuffle(v, (vi){1, 0, 3, 2, 5, 4, 7, 6});
#endif
    return v[0];
}

/* exp(x) to about 2 ulp for x in [-87, 88] (clamped outside), Cephes' expf: x = n ln2 + f,
 * |f| <= ln2 / 2, a degree-7 polynomial of f, times 2^n built in the exponent bits. */
static inline vf vexp(vf x) {
    x = select(x < splat(-87.0f), splat(-87.0f), x);
    x = select(x > splat(88.0f), splat(88.0f), x);
    const vf magic = splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    vf shifted = x * splat(1.44269504088896341f) + magic;
    vf n = shifted - magic;
    vf f = x - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
    vf p = splat(1.9875691500e-4f);
    p = p * f + splat(1.3981999507e-3f);
    p = p * f + splat(8.3334519073e-3f);
    p = p * f + splat(4.1665795894e-2f);
    p = p * f + splat(1.6666665459e-1f);
    p = p * f + splat(5.0000001201e-1f);
    p = p * f * f + f + splat(1.0f);
    vi bits, magic_bits;
    memcpy(&bits, &shifted, sizeof bits);
    memcpy(&magic_bits, &magic, sizeof magic_bits);
    vi scale_bits = ((bits - magic_bits) + 127) << 23; /* 2^n, n in [-126, 127] after the clamp */
    vf scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

/* the left and right values of channels c0 .. c0 + VW - 1 from their interleaved pair row */
static inline void split_pair(const float *pair_row, int c0, vf *left, vf *right) {
    vf lo = load(pair_row + 2 * c0), hi = load(pair_row + 2 * c0 + VW);
#if VW == 16
    *left = __builtin_shuffle(lo, hi, (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30});
    *right = __builtin_shuffle(lo, hi, (vi){1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31});
#else
    *left = __builtin_shuffle(lo, hi, (vi){0, 2, 4, 6, 8, 10, 12, 14});
    *right = __builtin_shuffle(lo, hi, (vi){1, 3, 5, 7, 9, 11, 13, 15});
#endif
}

/* the inverse of split_pair: write the interleaved pair row of channels c0 .. c0 + VW - 1 */
static inline void join_pair(float *pair_row, int c0, vf left, vf right) {
#if VW == 16
    vf lo = __builtin_shuffle(left, right, (vi){0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23});
    vf hi = __builtin_shuffle(left, right, (vi){8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31});
#else
    vf lo = __builtin_shuffle(left, right, (vi){0, 8, 1, 9, 2, 10, 3, 11});
    vf hi = __builtin_shuffle(left, right, (vi){4, 12, 5, 13, 6, 14, 7, 15});
#endif
    store(pair_row + 2 * c0, lo);
    store(pair_row + 2 * c0 + VW, hi);
}

/* s, d and g of channels c0 .. c0 + VW - 1 of one pair row */
static inline void merge_terms(const float *pair_row, const float *lam, int c0, vf *s, vf *d, vf *g) {
    vf left, right;
    split_pair(pair_row, c0, &left, &right);
    *s = left + right;
    *d = left - right;
    *g = splat(1.0f) / (splat(1.0f) + vexp(load(lam + c0) * *d * *d));
}

/* Rows go in blocks of RB rows of one image: each row's sums and its mean, deviation and
 * reciprocal are a chain of dependent steps, and RB rows side by side keep the core busy
 * while one chain waits (2x faster than a row at a time with 32 channels). */
#define RB 4
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* rows i0 .. i0 + nr - 1 of image b: y (R, C) and stats (R, 2) = (mu, rstd) from pair (R, 2C);
 * m holds nr C floats of scratch */
ALWAYS_INLINE void forward_block(const float *restrict pair, const float *restrict lam, const float *restrict a_b,
                                 const float *restrict o_b, float *restrict y, float *restrict stats, float *restrict m, long i0,
                                 const int nr, int C, float eps) {
    vf total[RB], spread[RB];
    float mu[RB], rstd[RB];
    for (int r = 0; r < nr; r++) total[r] = spread[r] = splat(0.0f);
    for (int c0 = 0; c0 < C; c0 += VW)
        for (int r = 0; r < nr; r++) {
            vf s, d, g;
            merge_terms(pair + (i0 + r) * 2 * C, lam, c0, &s, &d, &g);
            vf merged = s * g;
            store(m + r * C + c0, merged);
            total[r] += merged;
        }
    for (int r = 0; r < nr; r++) mu[r] = sum_lanes(total[r]) / C;
    for (int c0 = 0; c0 < C; c0 += VW)
        for (int r = 0; r < nr; r++) {
            vf centred = load(m + r * C + c0) - splat(mu[r]);
            spread[r] += centred * centred;
        }
    for (int r = 0; r < nr; r++) rstd[r] = 1.0f / sqrtf(sum_lanes(spread[r]) / C + eps);
    for (int c0 = 0; c0 < C; c0 += VW) {
        vf a = load(a_b + c0), o = load(o_b + c0);
        for (int r = 0; r < nr; r++)
            store(y + (i0 + r) * C + c0, (load(m + r * C + c0) - splat(mu[r])) * splat(rstd[r]) * a + o);
    }
    for (int r = 0; r < nr; r++) {
        stats[2 * (i0 + r)] = mu[r];
        stats[2 * (i0 + r) + 1] = rstd[r];
    }
}

int mn_forward(const float *pair, const float *lam, const float *a, const float *o, float *y, float *stats, long R, long S, int C,
               float eps) {
    float *m = aligned_alloc(64, ((size_t)RB * C * sizeof(float) + 63) / 64 * 64);
    if (m == NULL) return 1;
    for (long b = 0; b < R / S; b++) {
        long i = b * S, end = i + S;
        for (; i + RB <= end; i += RB) forward_block(pair, lam, a + b * C, o + b * C, y, stats, m, i, RB, C, eps);
        for (; i < end; i++) forward_block(pair, lam, a + b * C, o + b * C, y, stats, m, i, 1, C, eps);
    }
    free(m);
    return 0;
}

/* rows i0 .. i0 + nr - 1 of image b: gpair (R, 2C) from gy (R, C), adding into image b's sums
 * glam_b, ga_b and go_b (C each); scratch holds 3 nr C floats */
ALWAYS_INLINE void backward_block(const float *restrict pair, const float *restrict lam, const float *restrict a_b,
                                  const float *restrict stats, const float *restrict gy, float *restrict gpair, float *restrict glam_b,
                                  float *restrict ga_b, float *restrict go_b, float *restrict scratch, long i0, const int nr, int C) {
    float *xhat = scratch, *t = scratch + RB * C, *gate = scratch + 2 * RB * C;
    vf t_sum[RB], t_xhat_sum[RB];
    float t_mean[RB], t_xhat_mean[RB];
    for (int r = 0; r < nr; r++) t_sum[r] = t_xhat_sum[r] = splat(0.0f);
    for (int c0 = 0; c0 < C; c0 += VW) {
        vf a = load(a_b + c0), ga = load(ga_b + c0), go = load(go_b + c0);
        for (int r = 0; r < nr; r++) {
            long i = i0 + r;
            vf s, d, g;
            merge_terms(pair + i * 2 * C, lam, c0, &s, &d, &g);
            vf x = (s * g - splat(stats[2 * i])) * splat(stats[2 * i + 1]);
            vf grad = load(gy + i * C + c0);
            ga += grad * x;
            go += grad;
            vf through = grad * a;
            t_sum[r] += through;
            t_xhat_sum[r] += through * x;
            store(xhat + r * C + c0, x);
            store(t + r * C + c0, through);
            store(gate + r * C + c0, g);
        }
        store(ga_b + c0, ga);
        store(go_b + c0, go);
    }
    for (int r = 0; r < nr; r++) {
        t_mean[r] = sum_lanes(t_sum[r]) / C;
        t_xhat_mean[r] = sum_lanes(t_xhat_sum[r]) / C;
    }
    for (int c0 = 0; c0 < C; c0 += VW) {
        vf twice_lam = splat(2.0f) * load(lam + c0), glam = load(glam_b + c0);
        for (int r = 0; r < nr; r++) {
            long i = i0 + r;
            vf gm = splat(stats[2 * i + 1]) * (load(t + r * C + c0) - splat(t_mean[r]) - load(xhat + r * C + c0) * splat(t_xhat_mean[r]));
            vf left, right;
            split_pair(pair + i * 2 * C, c0, &left, &right);
            vf s = left + right, d = left - right, g = load(gate + r * C + c0);
            vf q = gm * g;
            vf k = q * (splat(1.0f) - g) * s * d;
            glam -= k * d;
            join_pair(gpair + i * 2 * C, c0, q - twice_lam * k, q + twice_lam * k);
        }
        store(glam_b + c0, glam);
    }
}

int mn_backward(const float *pair, const float *lam, const float *a, const float *stats, const float *gy, float *gpair, float *glam,
                float *ga, float *go, long R, long S, int C) {
    float *scratch = aligned_alloc(64, (3 * (size_t)RB * C * sizeof(float) + 63) / 64 * 64);
    if (scratch == NULL) return 1;
    for (long b = 0; b < R / S; b++) {
        long i = b * S, end = i + S;
        const float *a_b = a + b * C;
        float *glam_b = glam + b * C, *ga_b = ga + b * C, *go_b = go + b * C;
        for (; i + RB <= end; i += RB) backward_block(pair, lam, a_b, stats, gy, gpair, glam_b, ga_b, go_b, scratch, i, RB, C);
        for (; i < end; i++) backward_block(pair, lam, a_b, stats, gy, gpair, glam_b, ga_b, go_b, scratch, i, 1, C);
    }
    free(scratch);
    return 0;
}
