/*
 * attend.c — the inner loops of attention, one set per kernel path (isa.h:
 * attn_scores, attn_mix): a query's scores over a run of keys, and the
 * probability-weighted sum of a run of values. The portable loops read like the
 * math; the vector ones compute the same operations in the same order — each score
 * is dot_f32's 8 lanes (multiply, then add) folded by its tree, each output element
 * sums its values in increasing key order — so every path gives the same bits.
 * They win by doing several keys (scores) or output vectors (sums) at once:
 * independent chains instead of one add waiting on the last.
 */
#include "kernels/kernels.h"

void attn_scores_portable(float *p, const float *q, const float *k, int n, int hd, float scale)
{
    for (int t = 0; t < n; t++)
        p[t] = dot_f32(q, k + (size_t)t * (size_t)hd, hd) * scale;
}

/* Elements [i0, hd) of z: each adds its values in increasing key order. */
static void mix_from(float *z, const float *p, const float *v, int n, int hd, int i0)
{
    for (int t = 0; t < n; t++)
        for (int i = i0; i < hd; i++)
            z[i] += p[t] * v[(size_t)t * (size_t)hd + (size_t)i];
}

void attn_mix_portable(float *z, const float *p, const float *v, int n, int hd)
{
    mix_from(z, p, v, n, hd, 0);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2")))
#define SCORE_KEYS 4

/* dot_f32's fold of its 8 lanes: ((s0+s4) + (s1+s5)) + ((s2+s6) + (s3+s7)). */
static inline __attribute__((always_inline)) AVX2 float fold8(__m256 s)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    __m128 b = _mm_add_ps(a, _mm_shuffle_ps(a, a, _MM_SHUFFLE(2, 3, 0, 1)));   /* a0+a1, ., a2+a3, . */
    return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehl_ps(b, b)));
}

/* SCORE_KEYS keys at once, each in dot_f32's order (its scalar tail included); the
 * key loops unrolled so the sums stay in registers (see MIX_BLOCK). */
AVX2 void attn_scores_avx2(float *p, const float *q, const float *k, int n, int hd, float scale)
{
    int t = 0, h8 = hd & ~7;
    for (; t + SCORE_KEYS <= n; t += SCORE_KEYS) {
        const float *kt = k + (size_t)t * (size_t)hd;
        __m256 s[SCORE_KEYS];
#pragma GCC unroll 4
        for (int j = 0; j < SCORE_KEYS; j++)
            s[j] = _mm256_setzero_ps();
        for (int i = 0; i < h8; i += 8) {
            __m256 qv = _mm256_loadu_ps(q + i);
#pragma GCC unroll 4
            for (int j = 0; j < SCORE_KEYS; j++)
                s[j] = _mm256_add_ps(s[j], _mm256_mul_ps(qv, _mm256_loadu_ps(kt + (size_t)j * (size_t)hd + i)));
        }
        for (int j = 0; j < SCORE_KEYS; j++) {
            float d = fold8(s[j]);
            for (int i = h8; i < hd; i++)
                d += q[i] * kt[(size_t)j * (size_t)hd + (size_t)i];
            p[t + j] = d * scale;
        }
    }
    attn_scores_portable(p + t, q, k + (size_t)t * (size_t)hd, n - t, hd, scale);
}

/* z[i0 ..] over the n values, NV vectors of W lanes at once (unrolled, so the NV
 * sums stay in registers: rolled, GCC kept them on the stack, and every add waited
 * on a store-to-load forward, 4 × slower). */
#define MIX_BLOCK(VEC, W, NV, LOAD, STORE, SET1, ADD, MUL)                                               \
    for (; i0 + (NV) * (W) <= hd; i0 += (NV) * (W)) {                                                    \
        VEC zv[NV];                                                                                      \
        _Pragma("GCC unroll 4") for (int j = 0; j < (NV); j++)                                           \
            zv[j] = LOAD(z + i0 + j * (W));                                                              \
        for (int t = 0; t < n; t++) {                                                                    \
            VEC pv = SET1(p[t]);                                                                         \
            const float *vt = v + (size_t)t * (size_t)hd + (size_t)i0;                                   \
            _Pragma("GCC unroll 4") for (int j = 0; j < (NV); j++)                                       \
                zv[j] = ADD(zv[j], MUL(pv, LOAD(vt + j * (W))));                                         \
        }                                                                                                \
        _Pragma("GCC unroll 4") for (int j = 0; j < (NV); j++)                                           \
            STORE(z + i0 + j * (W), zv[j]);                                                              \
    }

AVX2 void attn_mix_avx2(float *z, const float *p, const float *v, int n, int hd)
{
    int i0 = 0;
    MIX_BLOCK(__m256, 8, 4, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_add_ps, _mm256_mul_ps)
    MIX_BLOCK(__m256, 8, 1, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_add_ps, _mm256_mul_ps)
    mix_from(z, p, v, n, hd, i0);
}

__attribute__((target("avx512f"))) void attn_mix_avx512(float *z, const float *p, const float *v, int n, int hd)
{
    int i0 = 0;
    MIX_BLOCK(__m512, 16, 4, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_add_ps, _mm512_mul_ps)
    MIX_BLOCK(__m512, 16, 1, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_add_ps, _mm512_mul_ps)
    mix_from(z, p, v, n, hd, i0);
}
#endif
