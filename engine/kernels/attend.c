/*
 * attend.c — the inner loops of attention, one set per kernel path (isa.h:
 * attn_scores, attn_mix): a query's scores over a run of keys, and the
 * probability-weighted sum of a run of values. Every product is a fused
 * multiply-add, as in the matmuls. The portable loops read like the math (fmaf);
 * the vector ones compute the same operations in the same order — a score is 8
 * running sums (element i in sum i mod 8) folded ((s0+s4) + (s1+s5)) + ((s2+s6) +
 * (s3+s7)), the elements past the last 8 fused into it after, in order; each output
 * element sums its values in increasing key order — so every path gives the same
 * bits. They win by doing several keys (scores) or output vectors (sums) at once:
 * independent chains instead of one waiting on the last.
 */
#include <math.h>

#include "kernels/kernels.h"

/* Key k's score from d, the fold of its 8 sums: the tail from element i on, fused
 * in order, then the scale. */
static inline __attribute__((always_inline)) float score_tail(float d, const float *q, const float *k, int i, int hd,
                                                              float scale)
{
    for (; i < hd; i++)
        d = fmaf(q[i], k[i], d);
    return d * scale;
}

static float score_finish(const float s[8], const float *q, const float *k, int i, int hd, float scale)
{
    return score_tail(((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])), q, k, i, hd, scale);
}

void attn_scores_portable(float *p, const float *q, const float *k, int n, int hd, float scale)
{
    for (int t = 0; t < n; t++) {
        const float *kt = k + (size_t)t * (size_t)hd;
        float s[8] = {0};
        int i = 0;
        for (; i + 8 <= hd; i += 8)
            for (int j = 0; j < 8; j++)
                s[j] = fmaf(q[i + j], kt[i + j], s[j]);
        p[t] = score_finish(s, q, kt, i, hd, scale);
    }
}

/* Elements [i0, hd) of z: each adds its values in increasing key order. */
static void mix_from(float *z, const float *p, const float *v, int n, int hd, int i0)
{
    for (int t = 0; t < n; t++)
        for (int i = i0; i < hd; i++)
            z[i] = fmaf(p[t], v[(size_t)t * (size_t)hd + (size_t)i], z[i]);
}

void attn_mix_portable(float *z, const float *p, const float *v, int n, int hd)
{
    mix_from(z, p, v, n, hd, 0);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define SCORE_KEYS 8

/* The fold of the 8 running sums: ((s0+s4) + (s1+s5)) + ((s2+s6) + (s3+s7)). */
static inline __attribute__((always_inline)) AVX2 float fold8(__m256 s)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    __m128 b = _mm_add_ps(a, _mm_shuffle_ps(a, a, _MM_SHUFFLE(2, 3, 0, 1)));   /* a0+a1, ., a2+a3, . */
    return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehl_ps(b, b)));
}

/* score_finish from the sums in the lanes of s */
static inline __attribute__((always_inline)) AVX2 float score_lanes(__m256 s, const float *q, const float *k, int i,
                                                                     int hd, float scale)
{
    return score_tail(fold8(s), q, k, i, hd, scale);
}

/* SCORE_KEYS keys at once, each in the order above (the 8 running sums the 8 lanes
 * of a vector; as many chains as a FMA's latency needs to keep both units busy),
 * then the rest one key at a time; the key loops unrolled so the sums stay in
 * registers (see MIX_BLOCK). */
AVX2 void attn_scores_avx2(float *p, const float *q, const float *k, int n, int hd, float scale)
{
    int t = 0, h8 = hd & ~7;
    for (; t + SCORE_KEYS <= n; t += SCORE_KEYS) {
        const float *kt = k + (size_t)t * (size_t)hd;
        __m256 s[SCORE_KEYS];
#pragma GCC unroll 8
        for (int j = 0; j < SCORE_KEYS; j++)
            s[j] = _mm256_setzero_ps();
        for (int i = 0; i < h8; i += 8) {
            __m256 qv = _mm256_loadu_ps(q + i);
#pragma GCC unroll 8
            for (int j = 0; j < SCORE_KEYS; j++)
                s[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kt + (size_t)j * (size_t)hd + i), s[j]);
        }
        for (int j = 0; j < SCORE_KEYS; j++)
            p[t + j] = score_lanes(s[j], q, kt + (size_t)j * (size_t)hd, h8, hd, scale);
    }
    for (; t < n; t++) {
        const float *kt = k + (size_t)t * (size_t)hd;
        __m256 s = _mm256_setzero_ps();
        for (int i = 0; i < h8; i += 8)
            s = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(kt + i), s);
        p[t] = score_lanes(s, q, kt, h8, hd, scale);
    }
}

/* z[i0 ..] over the n values, NV vectors of W lanes at once (unrolled, so the NV
 * sums stay in registers: rolled, GCC kept them on the stack, and every add waited
 * on a store-to-load forward, 4 × slower). */
#define MIX_BLOCK(VEC, W, NV, LOAD, STORE, SET1, FMA)                                                    \
    for (; i0 + (NV) * (W) <= hd; i0 += (NV) * (W)) {                                                    \
        VEC zv[NV];                                                                                      \
        _Pragma("GCC unroll 4") for (int j = 0; j < (NV); j++)                                           \
            zv[j] = LOAD(z + i0 + j * (W));                                                              \
        for (int t = 0; t < n; t++) {                                                                    \
            VEC pv = SET1(p[t]);                                                                         \
            const float *vt = v + (size_t)t * (size_t)hd + (size_t)i0;                                   \
            _Pragma("GCC unroll 4") for (int j = 0; j < (NV); j++)                                       \
                zv[j] = FMA(pv, LOAD(vt + j * (W)), zv[j]);                                              \
        }                                                                                                \
        _Pragma("GCC unroll 4") for (int j = 0; j < (NV); j++)                                           \
            STORE(z + i0 + j * (W), zv[j]);                                                              \
    }

AVX2 void attn_mix_avx2(float *z, const float *p, const float *v, int n, int hd)
{
    int i0 = 0;
    MIX_BLOCK(__m256, 8, 4, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_fmadd_ps)
    MIX_BLOCK(__m256, 8, 1, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_fmadd_ps)
    mix_from(z, p, v, n, hd, i0);
}

__attribute__((target("avx512f"))) void attn_mix_avx512(float *z, const float *p, const float *v, int n, int hd)
{
    int i0 = 0;
    MIX_BLOCK(__m512, 16, 4, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps)
    MIX_BLOCK(__m512, 16, 1, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps)
    mix_from(z, p, v, n, hd, i0);
}
#endif
