/* A 3x3 stride-1 convolution with bias and ReLU by Winograd's minimal filtering F(4x4, 3x3)
 * (Lavin and Gray 2016): channels-last fp32 on one CPU thread, inference only.
 *
 * For x (B, H, W, I), zero padding p (0 or 1) and out (B, Ho, Wo, O) with Ho = H + 2p - 2:
 *
 *   out[b, h, w, o] = relu(bias[o] + sum_{i, u, v} wt[o, i, u, v] x[b, h + u - p, w + v - p, i])
 *
 * Each 4x4 block of outputs (a tile) needs a 6x6 block of inputs d. With the 6x6 matrices of
 * F(4x4, 3x3) at the points 0, +-1, +-2 and infinity,
 *
 *   Y = A^T [ sum_i (G g_{o,i} G^T) . (B^T d_i B) ] A          (. elementwise, over the 36 points)
 *
 * so a tile costs 36 products per input and output channel instead of 144: for each of the
 * 36 points, one matrix product (tiles x I) x (I x O) of the transformed inputs V with the
 * transformed filters U = G g G^T (computed once by the caller, laid out (36, I, O)). Tiles
 * go in blocks sized to stay in the core's L2 cache: transform a block's inputs, multiply
 * (6 tiles x 2 vectors of outputs in registers), transform back with bias and ReLU.
 *
 * The same sums as a direct convolution in another basis: the FID network's features move by
 * about 1e-6 relative (dicesearch/metrics/inception_eager.py, which checks them against the
 * network file's own forward when it builds). Built by dicesearch/native/__init__.py; the
 * caller checks shapes, contiguity and I % VW == O % VW == 0.
 */
#include <stdlib.h>
#include <string.h>

#include "vectors.h"

#define MR 6 /* tiles per register block of the products */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* max(v, 0) per lane */
ALWAYS_INLINE vf relu(vf v) { return select(v > splat(0.0f), v, splat(0.0f)); }

int wg_vector_width(void) { return VW; }

/* t = B^T d for six values (one column or row of a tile) */
ALWAYS_INLINE void input_1d(const vf d[6], vf t[6]) {
    t[0] = splat(4.0f) * d[0] - splat(5.0f) * d[2] + d[4];
    t[1] = d[3] + d[4] - splat(4.0f) * (d[1] + d[2]);
    t[2] = d[4] - d[3] + splat(4.0f) * (d[1] - d[2]);
    t[3] = d[4] - d[2] + splat(2.0f) * (d[3] - d[1]);
    t[4] = d[4] - d[2] + splat(2.0f) * (d[1] - d[3]);
    t[5] = splat(4.0f) * d[1] - splat(5.0f) * d[3] + d[5];
}

/* y = A^T m for six values */
ALWAYS_INLINE void output_1d(const vf m[6], vf y[4]) {
    vf sum12 = m[1] + m[2], diff12 = m[1] - m[2], sum34 = m[3] + m[4], diff34 = m[3] - m[4];
    y[0] = m[0] + sum12 + sum34;
    y[1] = diff12 + splat(2.0f) * diff34;
    y[2] = sum12 + splat(4.0f) * sum34;
    y[3] = diff12 + splat(8.0f) * diff34 + m[5];
}

/* the image b and the tile row ty and column tx of tile number tile, th x tw tiles an image */
ALWAYS_INLINE void locate_tile(long tile, int th, int tw, long *b, int *ty, int *tx) {
    long per_image = (long)th * tw, within = tile % per_image;
    *b = tile / per_image;
    *ty = (int)(within / tw);
    *tx = (int)(within % tw);
}

#define MAX_POINTS 10 /* per axis */

/* one convolution: its sizes, its tiles (th x tw an image) and each axis's algorithm */
typedef struct {
    int H, W, I, O, ph, pw, Ho, Wo, th, tw;
    int kh, kw, mh, mw, nh, nw; /* kernel, outputs and inputs of a tile, per axis */
    const float *bth, *ath, *btw, *atw; /* B^T (n x n) and A^T (m x n) of each axis, row-major; unused by F(4x4, 3x3)'s code */
} plan;

/* V[p][t][c0 ..] for tile number tile (image b, tile row ty, column tx), channels c0 .. c0 + VW - 1 */
static void transform_input(const float *restrict x, const plan *s, long tile, float *restrict V, int t, int NT) {
    long b;
    int ty, tx;
    locate_tile(tile, s->th, s->tw, &b, &ty, &tx);
    int y0 = 4 * ty - s->ph, x0 = 4 * tx - s->pw;
    int inside = y0 >= 0 && x0 >= 0 && y0 + 6 <= s->H && x0 + 6 <= s->W;
    const float *image = x + b * s->H * s->W * (long)s->I;
    for (int c0 = 0; c0 < s->I; c0 += VW) {
        vf d[6][6], cols[6][6];
        for (int u = 0; u < 6; u++)
            for (int v = 0; v < 6; v++) {
                int yy = y0 + u, xx = x0 + v;
                d[u][v] = inside || (yy >= 0 && yy < s->H && xx >= 0 && xx < s->W)
                              ? load(image + ((long)yy * s->W + xx) * s->I + c0)
                              : splat(0.0f);
            }
        for (int v = 0; v < 6; v++) { /* B^T d, column by column */
            vf column[6] = {d[0][v], d[1][v], d[2][v], d[3][v], d[4][v], d[5][v]}, out[6];
            input_1d(column, out);
            for (int u = 0; u < 6; u++) cols[u][v] = out[u];
        }
        for (int u = 0; u < 6; u++) { /* (B^T d) B, row by row */
            vf out[6];
            input_1d(cols[u], out);
            for (int v = 0; v < 6; v++) store(V + ((long)(u * 6 + v) * NT + t) * s->I + c0, out[v]);
        }
    }
}

/* out rows of tile number tile from M[p][t][..]: A^T M A + bias, ReLU, the parts inside the output */
static void transform_output(const float *restrict M, const float *restrict bias, const plan *s, long tile, int t, int NT,
                             float *restrict out) {
    long b;
    int ty, tx;
    locate_tile(tile, s->th, s->tw, &b, &ty, &tx);
    float *image = out + b * s->Ho * s->Wo * (long)s->O;
    for (int o0 = 0; o0 < s->O; o0 += VW) {
        vf rows[4][6];
        for (int v = 0; v < 6; v++) { /* A^T M, column by column */
            vf column[6], y[4];
            for (int u = 0; u < 6; u++) column[u] = load(M + ((long)(u * 6 + v) * NT + t) * s->O + o0);
            output_1d(column, y);
            for (int i = 0; i < 4; i++) rows[i][v] = y[i];
        }
        vf b0 = load(bias + o0);
        for (int i = 0; i < 4; i++) {
            int yy = 4 * ty + i;
            if (yy >= s->Ho) break;
            vf y[4];
            output_1d(rows[i], y);
            for (int j = 0; j < 4; j++) {
                int xx = 4 * tx + j;
                if (xx >= s->Wo) break;
                store(image + ((long)yy * s->Wo + xx) * s->O + o0, relu(y[j] + b0));
            }
        }
    }
}

/* C (nr x nv VW) = A (nr x K, row stride lda) x Bm (K x nv VW, row stride ldb), rows of C ldc apart */
ALWAYS_INLINE void product_block(const float *restrict A, int lda, const float *restrict Bm, int ldb, float *restrict C, int ldc, int K,
                                 const int nr, const int nv) {
    vf acc[MR][2];
    for (int r = 0; r < nr; r++) acc[r][0] = acc[r][1] = splat(0.0f);
    for (int k = 0; k < K; k++) {
        vf b0 = load(Bm + (long)k * ldb), b1 = nv > 1 ? load(Bm + (long)k * ldb + VW) : splat(0.0f);
        for (int r = 0; r < nr; r++) {
            vf a = splat(A[(long)r * lda + k]);
            acc[r][0] += a * b0;
            if (nv > 1) acc[r][1] += a * b1;
        }
    }
    for (int r = 0; r < nr; r++) {
        store(C + (long)r * ldc, acc[r][0]);
        if (nv > 1) store(C + (long)r * ldc + VW, acc[r][1]);
    }
}

/* M[p] (n x O) = V[p] (n x I) x U[p] (I x O) for the P points; V[p] and M[p] start NT rows apart */
static void products(const float *restrict V, const float *restrict U, float *restrict M, int P, int n, int NT, int I, int O) {
    for (int p = 0; p < P; p++) {
        const float *A = V + (long)p * NT * I, *Bm = U + (long)p * I * O;
        float *C = M + (long)p * NT * O;
        int o0 = 0;
        for (; o0 + 2 * VW <= O; o0 += 2 * VW) {
            int t0 = 0;
            for (; t0 + MR <= n; t0 += MR) product_block(A + (long)t0 * I, I, Bm + o0, O, C + (long)t0 * O + o0, O, I, MR, 2);
            for (; t0 < n; t0++) product_block(A + (long)t0 * I, I, Bm + o0, O, C + (long)t0 * O + o0, O, I, 1, 2);
        }
        for (; o0 < O; o0 += VW) {
            int t0 = 0;
            for (; t0 + MR <= n; t0 += MR) product_block(A + (long)t0 * I, I, Bm + o0, O, C + (long)t0 * O + o0, O, I, MR, 1);
            for (; t0 < n; t0++) product_block(A + (long)t0 * I, I, Bm + o0, O, C + (long)t0 * O + o0, O, I, 1, 1);
        }
    }
}

/* tiles per block: the block's transformed inputs and products within about 640 KB (the core's L2
 * cache), a multiple of MR; but at least 36, as each block reads all of U (for the widest layers,
 * 448 x 384 channels, 25 MB: fewer tiles a block would read it again and again) */
static int block_tiles(int P, int I, int O, long tiles) {
    long fit = 640L * 1024 / ((long)P * (I + O) * (long)sizeof(float));
    long nt = fit / MR * MR;
    if (nt < 36) nt = 36;
    if (nt > 96) nt = 96;
    if (nt > tiles) nt = tiles;
    return (int)nt;
}

/* the _any transforms, defined below with wg_conv */
static void transform_input_any(const float *restrict x, const plan *s, long tile, float *restrict V, int t, int NT);
static void transform_output_any(const float *restrict M, const float *restrict bias, const plan *s, long tile, int t, int NT,
                                 float *restrict out);

/* out from x by the plan, in blocks of tiles: inputs transformed (``written_out``: F(4x4, 3x3)'s
 * own code, else the plan's matrices), multiplied point by point, transformed back */
static int convolve(const float *x, const float *U, const float *bias, float *out, plan *s, int B, int written_out) {
    s->th = (s->Ho + s->mh - 1) / s->mh;
    s->tw = (s->Wo + s->mw - 1) / s->mw;
    int P = s->nh * s->nw;
    long tiles = (long)B * s->th * s->tw;
    int NT = block_tiles(P, s->I, s->O, tiles);
    float *V = aligned_alloc(64, ((size_t)P * NT * s->I * sizeof(float) + 63) / 64 * 64);
    float *M = aligned_alloc(64, ((size_t)P * NT * s->O * sizeof(float) + 63) / 64 * 64);
    if (V == NULL || M == NULL) {
        free(V);
        free(M);
        return 1;
    }
    for (long first = 0; first < tiles; first += NT) {
        int n = tiles - first < NT ? (int)(tiles - first) : NT;
        for (int t = 0; t < n; t++) {
            if (written_out)
                transform_input(x, s, first + t, V, t, NT);
            else
                transform_input_any(x, s, first + t, V, t, NT);
        }
        products(V, U, M, P, n, NT, s->I, s->O);
        for (int t = 0; t < n; t++) {
            if (written_out)
                transform_output(M, bias, s, first + t, t, NT, out);
            else
                transform_output_any(M, bias, s, first + t, t, NT, out);
        }
    }
    free(V);
    free(M);
    return 0;
}

int wg_conv3x3(const float *x, const float *U, const float *bias, float *out, int B, int H, int W, int I, int O, int pad) {
    plan s = {H, W, I, O, pad, pad, H + 2 * pad - 2, W + 2 * pad - 2, 0, 0, 3, 3, 4, 4, 6, 6, NULL, NULL, NULL, NULL};
    return convolve(x, U, bias, out, &s, B, 1);
}

/* ---- any kernel size, one or both axes: F(mh x mw, kh x kw) with the caller's transforms ---- */


/* V[a nw + b][t][c0 ..] = (B_h^T d B_w)[a][b] for tile number tile */
static void transform_input_any(const float *restrict x, const plan *s, long tile, float *restrict V, int t, int NT) {
    long b;
    int ty, tx;
    locate_tile(tile, s->th, s->tw, &b, &ty, &tx);
    int y0 = s->mh * ty - s->ph, x0 = s->mw * tx - s->pw;
    const float *image = x + b * s->H * s->W * (long)s->I;
    for (int c0 = 0; c0 < s->I; c0 += VW) {
        vf d[MAX_POINTS][MAX_POINTS], rows[MAX_POINTS][MAX_POINTS];
        for (int u = 0; u < s->nh; u++)
            for (int v = 0; v < s->nw; v++) {
                int yy = y0 + u, xx = x0 + v;
                d[u][v] = yy >= 0 && yy < s->H && xx >= 0 && xx < s->W ? load(image + ((long)yy * s->W + xx) * s->I + c0) : splat(0.0f);
            }
        for (int a = 0; a < s->nh; a++) /* B_h^T d */
            for (int v = 0; v < s->nw; v++) {
                vf sum = splat(0.0f);
                for (int u = 0; u < s->nh; u++) sum += splat(s->bth[a * s->nh + u]) * d[u][v];
                rows[a][v] = sum;
            }
        for (int a = 0; a < s->nh; a++) /* (B_h^T d) B_w */
            for (int c = 0; c < s->nw; c++) {
                vf sum = splat(0.0f);
                for (int v = 0; v < s->nw; v++) sum += splat(s->btw[c * s->nw + v]) * rows[a][v];
                store(V + ((long)(a * s->nw + c) * NT + t) * s->I + c0, sum);
            }
    }
}

/* the outputs of tile number tile: A_h^T M A_w + bias, ReLU, the parts inside the output */
static void transform_output_any(const float *restrict M, const float *restrict bias, const plan *s, long tile, int t, int NT,
                                 float *restrict out) {
    long b;
    int ty, tx;
    locate_tile(tile, s->th, s->tw, &b, &ty, &tx);
    float *image = out + b * s->Ho * s->Wo * (long)s->O;
    for (int o0 = 0; o0 < s->O; o0 += VW) {
        vf m[MAX_POINTS][MAX_POINTS], rows[MAX_POINTS][MAX_POINTS];
        for (int a = 0; a < s->nh; a++)
            for (int c = 0; c < s->nw; c++) m[a][c] = load(M + ((long)(a * s->nw + c) * NT + t) * s->O + o0);
        for (int i = 0; i < s->mh; i++) /* A_h^T M */
            for (int c = 0; c < s->nw; c++) {
                vf sum = splat(0.0f);
                for (int a = 0; a < s->nh; a++) sum += splat(s->ath[i * s->nh + a]) * m[a][c];
                rows[i][c] = sum;
            }
        vf b0 = load(bias + o0);
        for (int i = 0; i < s->mh; i++) {
            int yy = s->mh * ty + i;
            if (yy >= s->Ho) break;
            for (int j = 0; j < s->mw; j++) {
                int xx = s->mw * tx + j;
                if (xx >= s->Wo) break;
                vf sum = splat(0.0f);
                for (int c = 0; c < s->nw; c++) sum += splat(s->atw[j * s->nw + c]) * rows[i][c];
                store(image + ((long)yy * s->Wo + xx) * s->O + o0, relu(sum + b0));
            }
        }
    }
}

/* out (B, Ho, Wo, O) = relu(bias + the kh x kw correlation of x (B, H, W, I) padded by (ph, pw)), by
 * F(mh x mw, kh x kw): U (nh nw, I, O) the transformed filters, bth/btw (n x n) and ath/atw (m x n)
 * each axis's input and output transforms (an axis of kernel 1: m = n = 1, transforms [1]) */
int wg_conv(const float *x, const float *U, const float *bias, float *out, int B, int H, int W, int I, int O, int kh, int kw, int ph,
            int pw, int mh, int mw, const float *bth, const float *ath, const float *btw, const float *atw) {
    plan s = {H, W, I, O, ph, pw, H + 2 * ph - kh + 1, W + 2 * pw - kw + 1, 0, 0, kh, kw, mh, mw, mh + kh - 1, mw + kw - 1, bth, ath, btw, atw};
    if (s.nh > MAX_POINTS || s.nw > MAX_POINTS) return 2;
    return convolve(x, U, bias, out, &s, B, 0);
}
