/*
 * conv.c — the inner loop of the Mamba mixer's causal depthwise conv, one set per
 * kernel path (isa.h: conv_taps): o[c] = b[c] + Σ_k wT[k][c]·win[k][c] over a
 * channel range, taps in increasing k. Baseline x86-64 C leaves this loop scalar
 * (GCC 12's -O2 vectorizes only trip counts it can prove whole), and it was 5 % of a
 * 16-session decode step. Every path multiplies then adds (never fused) in the same
 * order, and tails take the scalar loop, so all give the same bits as before.
 */
#include "kernels/isa.h"

void conv_taps_portable(float *restrict o, const float *restrict b, const float *restrict wT,
                        const float *const *win, size_t cd, int K, int c0, int c1)
{
    for (int c = c0; c < c1; c++) {
        float acc = b[c];
        for (int k = 0; k < K; k++)
            acc += wT[(size_t)k * cd + (size_t)c] * win[k][c];
        o[c] = acc;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* One vector of channels from c: acc = b, then acc + w·x per tap. */
#define CONV_VECTOR(VEC, LOAD, STORE, ADD, MUL)                                                            \
    do {                                                                                                   \
        VEC acc = LOAD(b + c);                                                                             \
        for (int k = 0; k < K; k++)                                                                        \
            acc = ADD(acc, MUL(LOAD(wT + (size_t)k * cd + (size_t)c), LOAD(win[k] + c)));                 \
        STORE(o + c, acc);                                                                                 \
    } while (0)

__attribute__((target("avx2"))) void conv_taps_avx2(float *restrict o, const float *restrict b,
                                                    const float *restrict wT, const float *const *win, size_t cd,
                                                    int K, int c0, int c1)
{
    int c = c0;
    for (; c + 8 <= c1; c += 8)
        CONV_VECTOR(__m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps, _mm256_mul_ps);
    conv_taps_portable(o, b, wT, win, cd, K, c, c1);
}

__attribute__((target("avx512f"))) void conv_taps_avx512(float *restrict o, const float *restrict b,
                                                         const float *restrict wT, const float *const *win,
                                                         size_t cd, int K, int c0, int c1)
{
    int c = c0;
    for (; c + 16 <= c1; c += 16)
        CONV_VECTOR(__m512, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_add_ps, _mm512_mul_ps);
    conv_taps_portable(o, b, wT, win, cd, K, c, c1);
}
#endif
