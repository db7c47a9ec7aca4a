/* Depthwise convolution of channels-last fp32 tensors on one CPU thread, with both gradients.
 *
 * Same padding (p = k / 2), stride 1, channel multiplier m: for x (B, H, W, C) and taps
 * wt (k, k, C m),
 *
 *   y[b, h, w, c m + j] = bias[c m + j] + sum_{u, v} wt[u, v, c m + j] x[b, h + u - p, w + v - p, c]
 *
 * with x zero outside the grid. Each image is copied once into a zero-bordered buffer with
 * its channels repeated m times (channel c m + j = x_c), which lies in the core's L2 cache;
 * the products then run over vectors of VW channels with the k taps of a kernel row and PW
 * output pixels of a grid row held in registers, so that each input vector loaded serves up
 * to k multiply-adds. The weight gradient sums over the batch in registers and the input
 * gradient is the correlation of the gradient with the flipped taps, summed over each
 * input channel's m outputs. Built by dicesearch/native/__init__.py; the Python side is
 * dicesearch/ops/depthwise.py, which checks shapes, contiguity and C m % VW == 0 before it
 * calls in here (nothing here checks them again).
 */
#include <stdlib.h>
#include <string.h>

#include "vectors.h"

#ifndef PW
#define PW 8  /* output pixels of a grid row per register block */
#endif

int dw_vector_width(void) { return VW; }

static float *alloc_floats(size_t n) { return aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64); }

/* the zero-bordered buffer of one image: (H + 2p, W + 2p, CM) floats */
static float *alloc_padded(int H, int W, int CM, int p) { return alloc_floats((size_t)(H + 2 * p) * (W + 2 * p) * CM); }

/* pad[(H + 2p)][(W + 2p)][C m] <- one image src (H, W, C), each channel repeated m times, zero border */
static void fill_padded(float *restrict pad, const float *restrict src, int H, int W, int C, int m, int p) {
    int Wp = W + 2 * p, CM = C * m;
    size_t row = (size_t)Wp * CM;
    memset(pad, 0, sizeof(float) * row * p);                                  /* the top rows */
    memset(pad + (size_t)(H + p) * row, 0, sizeof(float) * row * p);          /* the bottom rows */
    for (int h = 0; h < H; h++) {
        float *line = pad + (size_t)(h + p) * row;
        memset(line, 0, sizeof(float) * (size_t)p * CM);                      /* the left border */
        memset(line + (size_t)(W + p) * CM, 0, sizeof(float) * (size_t)p * CM); /* the right border */
        for (int w = 0; w < W; w++) {
            const float *restrict s = src + ((size_t)h * W + w) * C;
            float *restrict d = line + (size_t)(w + p) * CM;
            if (m == 1)
                memcpy(d, s, sizeof(float) * C);
            else if (m == 2)
                for (int c = 0; c < C; c++) d[2 * c] = d[2 * c + 1] = s[c];
            else
                for (int c = 0; c < C; c++)
                    for (int j = 0; j < m; j++) d[c * m + j] = s[c];
        }
    }
}

/* out (S, C) = the sums of each m consecutive channels of full (S, C m) */
static void sum_groups(float *restrict out, const float *restrict full, size_t S, int C, int m) {
    if (m == 2) {
        for (size_t i = 0; i < S * C; i++) out[i] = full[2 * i] + full[2 * i + 1];
        return;
    }
    for (size_t i = 0; i < S * C; i++) {
        float sum = 0.0f;
        for (int j = 0; j < m; j++) sum += full[i * m + j];
        out[i] = sum;
    }
}

/* The products of one image: out (H, W, CM) = bias + sum_{u,v} wt[u, v] pad[h + u, w + v]. */
#define DEFINE_CONV_IMAGE(K)                                                                    \
    static void conv_image_##K(const float *pad, const float *wt, const float *bias, float *out, \
                               int H, int W, int CM) {                                          \
        int Wp = W + K - 1;                                                                     \
        for (int cb = 0; cb < CM; cb += VW) {                                                   \
            vf bv = bias ? load(bias + cb) : (vf){0};                                           \
            for (int h = 0; h < H; h++)                                                         \
                for (int w0 = 0; w0 < W; w0 += PW) {                                            \
                    int n = W - w0 < PW ? W - w0 : PW;                                          \
                    vf acc[PW];                                                                 \
                    for (int q = 0; q < PW; q++) acc[q] = bv;                                   \
                    for (int u = 0; u < K; u++) {                                               \
                        const float *row = pad + ((size_t)(h + u) * Wp + w0) * CM + cb;         \
                        vf tap[K];                                                              \
                        for (int v = 0; v < K; v++) tap[v] = load(wt + ((size_t)u * K + v) * CM + cb); \
                        if (n == PW) {                                                          \
                            _Pragma("GCC unroll 16") for (int t = 0; t < PW + K - 1; t++) {     \
                                vf xv = load(row + (size_t)t * CM);                             \
                                _Pragma("GCC unroll 8") for (int v = 0; v < K; v++) {           \
                                    int q = t - v;                                              \
                                    if (q >= 0 && q < PW) acc[q] += xv * tap[v];                \
                                }                                                               \
                            }                                                                   \
                        } else {                                                                \
                            for (int q = 0; q < n; q++)                                         \
                                for (int v = 0; v < K; v++) acc[q] += load(row + (size_t)(q + v) * CM) * tap[v]; \
                        }                                                                       \
                    }                                                                           \
                    for (int q = 0; q < n; q++) store(out + ((size_t)h * W + w0 + q) * CM + cb, acc[q]); \
                }                                                                               \
        }                                                                                       \
    }

/* gw[u, v] += sum_{h, w} g[h, w] pad[h + u, w + v] over one image (gw (K, K, CM)) */
#define DEFINE_WEIGHT_GRAD_IMAGE(K)                                                             \
    static void weight_grad_image_##K(const float *pad, const float *g, float *gw, int H, int W, int CM) { \
        int Wp = W + K - 1;                                                                     \
        for (int cb = 0; cb < CM; cb += VW)                                                     \
            for (int u = 0; u < K; u++) {                                                       \
                vf acc[K];                                                                      \
                for (int v = 0; v < K; v++) acc[v] = (vf){0};                                   \
                for (int h = 0; h < H; h++) {                                                   \
                    const float *row = pad + (size_t)(h + u) * Wp * CM + cb;                    \
                    const float *grow = g + (size_t)h * W * CM + cb;                            \
                    for (int w = 0; w < W; w++) {                                               \
                        vf gv = load(grow + (size_t)w * CM);                                    \
                        _Pragma("GCC unroll 8") for (int v = 0; v < K; v++) acc[v] += gv * load(row + (size_t)(w + v) * CM); \
                    }                                                                           \
                }                                                                               \
                float *dst = gw + (size_t)u * K * CM + cb;                                      \
                for (int v = 0; v < K; v++) store(dst + (size_t)v * CM, load(dst + (size_t)v * CM) + acc[v]); \
            }                                                                                   \
    }

DEFINE_CONV_IMAGE(3)
DEFINE_CONV_IMAGE(5)
DEFINE_CONV_IMAGE(7)
DEFINE_WEIGHT_GRAD_IMAGE(3)
DEFINE_WEIGHT_GRAD_IMAGE(5)
DEFINE_WEIGHT_GRAD_IMAGE(7)

typedef void (*conv_image_fn)(const float *, const float *, const float *, float *, int, int, int);
typedef void (*weight_grad_image_fn)(const float *, const float *, float *, int, int, int);

static conv_image_fn conv_image_for(int k) {
    return k == 3 ? conv_image_3 : k == 5 ? conv_image_5 : k == 7 ? conv_image_7 : NULL;
}

static weight_grad_image_fn weight_grad_image_for(int k) {
    return k == 3 ? weight_grad_image_3 : k == 5 ? weight_grad_image_5 : k == 7 ? weight_grad_image_7 : NULL;
}

/* y (B, H, W, C m) from x (B, H, W, C), wt (k, k, C m), bias (C m) or NULL. 0, or -1 (k) / -2 (memory). */
int dw_forward(const float *x, const float *wt, const float *bias, float *y, int B, int H, int W, int C, int m, int k) {
    conv_image_fn conv = conv_image_for(k);
    if (!conv) return -1;
    int CM = C * m, p = k / 2;
    float *pad = alloc_padded(H, W, CM, p);
    if (!pad) return -2;
    for (int b = 0; b < B; b++) {
        fill_padded(pad, x + (size_t)b * H * W * C, H, W, C, m, p);
        conv(pad, wt, bias, y + (size_t)b * H * W * CM, H, W, CM);
    }
    free(pad);
    return 0;
}

/* gx (B, H, W, C) from g (B, H, W, C m) and the flipped taps wt_flipped[u, v] = wt[k-1-u, k-1-v]. */
int dw_input_grad(const float *g, const float *wt_flipped, float *gx, int B, int H, int W, int C, int m, int k) {
    conv_image_fn conv = conv_image_for(k);
    if (!conv) return -1;
    int CM = C * m, p = k / 2;
    float *pad = alloc_padded(H, W, CM, p);
    float *full = m == 1 ? NULL : alloc_floats((size_t)H * W * CM);
    if (!pad || (m > 1 && !full)) { free(pad); free(full); return -2; }
    for (int b = 0; b < B; b++) {
        fill_padded(pad, g + (size_t)b * H * W * CM, H, W, CM, 1, p);
        float *gxb = gx + (size_t)b * H * W * C;
        if (m == 1) { conv(pad, wt_flipped, NULL, gxb, H, W, CM); continue; }
        conv(pad, wt_flipped, NULL, full, H, W, CM);  /* (H, W, C m): each output's share */
        sum_groups(gxb, full, (size_t)H * W, C, m);
    }
    free(pad);
    free(full);
    return 0;
}

/* gw (k, k, C m) = sum over the batch of g (B, H, W, C m) times the shifted x (B, H, W, C). */
int dw_weight_grad(const float *x, const float *g, float *gw, int B, int H, int W, int C, int m, int k) {
    weight_grad_image_fn grad = weight_grad_image_for(k);
    if (!grad) return -1;
    int CM = C * m, p = k / 2;
    float *pad = alloc_padded(H, W, CM, p);
    if (!pad) return -2;
    memset(gw, 0, sizeof(float) * (size_t)k * k * CM);
    for (int b = 0; b < B; b++) {
        fill_padded(pad, x + (size_t)b * H * W * C, H, W, C, m, p);
        grad(pad, g + (size_t)b * H * W * CM, gw, H, W, CM);
    }
    free(pad);
    return 0;
}
