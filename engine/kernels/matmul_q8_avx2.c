/*
 * matmul_q8_avx2.c — the AVX2 + FMA int8 kernels: 8 fp32 lanes, int8 → int32 →
 * fp32 in registers times the block's bf16 scale, FMA with fp32 x; summation order
 * that of matmul_avx2.c (q8.h). Register tiles of 4 x-rows × 3 W-rows; a single x row
 * (decode) takes 4 adjacent W rows at a time (4 FMA chains, W still read in order)
 * and, for rows ≤ 2 KiB, prefetches the next tile as matmul_q8_avx512.c does.
 */
#include "kernels/q8.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "kernels/x86.h"

#define TARGET __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET
#define MR 4
#define NR 3
#define NRMAX (NR > Q8_NR1 ? NR : Q8_NR1)

/* 8 weights from q (in bounds: rows are padded to whole blocks) times scale sv. */
INLINE __m256 deq8(const int8_t *q, __m256 sv)
{
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q))), sv);
}

INLINE __m256 scale(const uint16_t *s, size_t i)
{
    return _mm256_castsi256_ps(_mm256_set1_epi32((int)((uint32_t)s[i] << 16)));
}

/* x[kk .. kk+8) with lanes at or past len zero. */
INLINE __m256 load_x(const float *x, int len)
{
    if (len >= 8)
        return _mm256_loadu_ps(x);
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(x, _mm256_cmpgt_epi32(_mm256_set1_epi32(len), idx));
}

/* pf: bytes of W to fetch while this tile runs, pf_step of them per block of 32
 * (0: none). */
INLINE void tile(const q8_block *b, int r0, int j0, const int mr, const int nr, const char *pf, size_t pf_step)
{
    __m256 acc[MR][NRMAX];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm256_setzero_ps();
    const float *x = b->x + (size_t)r0 * b->ldx;
    const int8_t *q = b->q + (size_t)j0 * b->ldq;
    const uint16_t *s = b->s + (size_t)j0 * b->lds;
    for (int kk = 0; kk < b->k; kk += 8) {
        int len = b->k - kk;
        if (pf_step && (kk & 31) == 0 && kk + 32 <= b->k)
            prefetch_span(pf + (size_t)(kk / 32) * pf_step, pf_step);
        __m256 wv[NRMAX];
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            wv[j] = deq8(q + (size_t)j * b->ldq + kk, scale(s + (size_t)j * b->lds, (size_t)kk / 32));
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            __m256 xv = load_x(x + (size_t)i * b->ldx + kk, len);
#pragma GCC unroll 4
            for (int j = 0; j < nr; j++)
                acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) {
            float v = reduce8(acc[i][j]);
            if (b->bias)
                v += b->bias[j0 + j];
            b->y[(size_t)(r0 + i) * b->ldy + (size_t)(j0 + j)] = v;
        }
}

#define TILE_CASE(M, N) case (M) * 8 + (N): tile(b, r0, j0, M, N, pf, pf_step); break;
#define TILE_ROW(M) TILE_CASE(M, 3) TILE_CASE(M, 2) TILE_CASE(M, 1)

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
        for (; c + 8 <= k; c += 8)
            _mm256_storeu_ps(d + c, deq8(qr + c, scale(sr, (size_t)c / 32)));
        if (c < k) {
            __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_maskstore_ps(d + c, _mm256_cmpgt_epi32(_mm256_set1_epi32(k - c), idx),
                                deq8(qr + c, scale(sr, (size_t)c / 32)));
        }
    }
}

const q8_isa q8_avx2 = {.fp32 = &kernel_avx2, .block = block, .dequant = dequant};
#else
const q8_isa q8_avx2 = {0};
#endif
