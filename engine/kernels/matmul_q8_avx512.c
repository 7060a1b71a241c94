/*
 * matmul_q8_avx512.c — the AVX-512 int8 kernels: 16 fp32 lanes, int8 → int32 →
 * fp32 in registers times the block's bf16 scale, FMA with fp32 x; summation order
 * that of matmul_avx512.c (q8.h). Register tiles of 4 x-rows × 4 W-rows. A single
 * x row (decode) walks the thread's share of W in order, Q8_NR1 adjacent rows at a
 * time: unlike bf16 (where one row at a time streams fastest) int8 needs more
 * arithmetic per byte, and one row leaves the kernel waiting on its one FMA chain.
 */
#include "kernels/q8.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "kernels/x86.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET
#define MR 4
#define NR 4
#define NRMAX (NR > Q8_NR1 ? NR : Q8_NR1)

/* 16 weights from q (in bounds: rows are padded to whole blocks) times scale sv. */
INLINE __m512 deq16(const int8_t *q, __m512 sv)
{
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)q))), sv);
}

INLINE __m512 scale(const uint16_t *s, size_t i)
{
    return _mm512_castsi512_ps(_mm512_set1_epi32((int)((uint32_t)s[i] << 16)));
}

/* pf: bytes of W to fetch while this tile runs, pf_step of them each block step
 * (0: none). */
INLINE void tile(const q8_block *b, int r0, int j0, const int mr, const int nr, const char *pf, size_t pf_step)
{
    __m512 acc[MR][NRMAX];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 8
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm512_setzero_ps();
    const float *x = b->x + (size_t)r0 * b->ldx;
    const int8_t *q = b->q + (size_t)j0 * b->ldq;
    const uint16_t *s = b->s + (size_t)j0 * b->lds;
    int k32 = b->k & ~31;
    for (int kk = 0; kk < k32; kk += 32) {
        if (pf_step)
            prefetch_span(pf + (size_t)(kk / 32) * pf_step, pf_step);
        __m512 w0[NRMAX], w1[NRMAX];
#pragma GCC unroll 8
        for (int j = 0; j < nr; j++) {
            __m512 sv = scale(s + (size_t)j * b->lds, (size_t)kk / 32);
            w0[j] = deq16(q + (size_t)j * b->ldq + kk, sv);
            w1[j] = deq16(q + (size_t)j * b->ldq + kk + 16, sv);
        }
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            __m512 x0 = _mm512_loadu_ps(x + (size_t)i * b->ldx + kk);
            __m512 x1 = _mm512_loadu_ps(x + (size_t)i * b->ldx + kk + 16);
#pragma GCC unroll 8
            for (int j = 0; j < nr; j++) {
                acc[i][j] = _mm512_fmadd_ps(x0, w0[j], acc[i][j]);
                acc[i][j] = _mm512_fmadd_ps(x1, w1[j], acc[i][j]);
            }
        }
    }
    /* the last, partial block: 16 lanes at a time, x zero past k (q is zero-padded) */
    for (int kk = k32; kk < b->k; kk += 16) {
        int len = b->k - kk < 16 ? b->k - kk : 16;
        __mmask16 mask = (__mmask16)((1u << len) - 1u);
        __m512 wv[NRMAX];
        for (int j = 0; j < nr; j++)
            wv[j] = deq16(q + (size_t)j * b->ldq + kk, scale(s + (size_t)j * b->lds, (size_t)kk / 32));
        for (int i = 0; i < mr; i++) {
            __m512 xv = _mm512_maskz_loadu_ps(mask, x + (size_t)i * b->ldx + kk);
            for (int j = 0; j < nr; j++)
                acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 8
        for (int j = 0; j < nr; j++) {
            float v = reduce16(acc[i][j]);
            if (b->bias)
                v += b->bias[j0 + j];
            b->y[(size_t)(r0 + i) * b->ldy + (size_t)(j0 + j)] = v;
        }
}

#define TILE_CASE(M, N) case (M) * 8 + (N): tile(b, r0, j0, M, N, pf, pf_step); break;
#define TILE_ROW(M) TILE_CASE(M, 4) TILE_CASE(M, 3) TILE_CASE(M, 2) TILE_CASE(M, 1)

static TARGET void block(const q8_block *b)
{
    if (b->m == 1)
        Q8_DECODE_WALK();
    else
        Q8_BATCH_WALK();  /* more rows are widened to fp32 panels by matmul_q8.c */
}

static TARGET void dequant(float *dst, const int8_t *q, const uint16_t *s, size_t ldq, size_t lds, int rows, int k)
{
    for (int r = 0; r < rows; r++) {
        const int8_t *qr = q + (size_t)r * ldq;
        const uint16_t *sr = s + (size_t)r * lds;
        float *d = dst + (size_t)r * (size_t)k;
        int c = 0;
        for (; c + 16 <= k; c += 16)
            _mm512_storeu_ps(d + c, deq16(qr + c, scale(sr, (size_t)c / 32)));
        if (c < k)
            _mm512_mask_storeu_ps(d + c, (__mmask16)((1u << (k - c)) - 1u), deq16(qr + c, scale(sr, (size_t)c / 32)));
    }
}

const q8_isa q8_avx512 = {.fp32 = &kernel_avx512, .block = block, .dequant = dequant};
#else
const q8_isa q8_avx512 = {0};
#endif
