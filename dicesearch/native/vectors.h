/* What the native kernels share: vectors of VW fp32 lanes (GCC's vector extensions) and a few
 * helpers on them. VW is 16 where the CPU has AVX-512 (one register), else 8 (AVX2). Included
 * by each kernel file; dicesearch/native/__init__.py hashes this header with every source it
 * builds, so a change here rebuilds them all. */
#ifndef DICESEARCH_VECTORS_H
#define DICESEARCH_VECTORS_H

#include <string.h>

#ifndef VW
#ifdef __AVX512F__
#define VW 16 /* channels per vector: one AVX-512 register */
#else
#define VW 8  /* channels per vector: one AVX2 register */
#endif
#endif

typedef float vf __attribute__((vector_size(VW * sizeof(float))));
typedef int vi __attribute__((vector_size(VW * sizeof(int))));

static inline vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf splat(float x) { return (vf){} + x; }

/* a where pick is true (all bits set), else b, per lane */
static inline vf select(vi pick, vf a, vf b) {
    vi ai, bi;
    memcpy(&ai, &a, sizeof ai);
    memcpy(&bi, &b, sizeof bi);
    vi out = (ai & pick) | (bi & ~pick);
    vf r;
    memcpy(&r, &out, sizeof r);
    return r;
}

#endif
