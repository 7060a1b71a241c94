/*
 * matmul_avx2.c — the AVX2 + FMA (+ F16C) kernels: 8 fp32 lanes, register tiles of
 * 4 x-rows × 3 W-rows (12 accumulators; 1 × 8 when the block has a single x row, the
 * decode case, to keep more W streams in flight), W widened from BF16/F16 in
 * registers.
 * Summation order as in isa.h; only x86-64 builds have it.
 */
#include <string.h>

#include "kernels/isa.h"
#include "kernels/vocab.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "kernels/x86.h"

#define TARGET __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET
#define MR 4
#define NR 3
#define NR1 8       /* W rows per tile when there is a single x row (decode) */
#ifndef MATMUL_PREFETCH
#define MATMUL_PREFETCH 1
#endif

INLINE __m256 load_w(const void *w, st_dtype dt, size_t i)
{
    if (dt == ST_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i))), 16));
    if (dt == ST_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    return _mm256_loadu_ps((const float *)w + i);
}

/* The last len < 8 elements, zero-padded. */
INLINE __m256 load_w_tail(const void *w, st_dtype dt, size_t i, int len)
{
    if (dt == ST_F32) {
        float t[8] = {0};
        memcpy(t, (const float *)w + i, sizeof(float) * (size_t)len);
        return _mm256_loadu_ps(t);
    }
    uint16_t t[8] = {0};
    memcpy(t, (const uint16_t *)w + i, 2 * (size_t)len);
    return load_w(t, dt == ST_BF16 ? ST_BF16 : ST_F16, 0);
}

INLINE size_t elem_size(st_dtype dt)
{
    return dt == ST_F32 ? 4 : 2;
}

/* pf: W bytes to fetch while this tile runs, pf_step of them a k step (0: none). */
INLINE void tile(const mm_block *b, int r0, int j0, const int mr, const int nr, const st_dtype dt, const char *pf,
                 size_t pf_step)
{
    __m256 acc[MR][NR1];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 8
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm256_setzero_ps();
    const float *x = b->x + (size_t)r0 * b->ldx;
    size_t w0 = (size_t)j0 * b->ldw;
    int k8 = b->k & ~7;
    for (int kk = 0; kk < k8; kk += 8) {
        if (pf_step)
            prefetch_span(pf + (size_t)(kk / 8) * pf_step, pf_step);
        __m256 wv[NR1];
#pragma GCC unroll 8
        for (int j = 0; j < nr; j++)
            wv[j] = load_w(b->w, dt, w0 + (size_t)j * b->ldw + (size_t)kk);
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            __m256 xv = _mm256_loadu_ps(x + (size_t)i * b->ldx + kk);
#pragma GCC unroll 8
            for (int j = 0; j < nr; j++)
                acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    if (k8 < b->k) {
        int len = b->k - k8;
        __m256 wv[NR1];
        for (int j = 0; j < nr; j++)
            wv[j] = load_w_tail(b->w, dt, w0 + (size_t)j * b->ldw + (size_t)k8, len);
        for (int i = 0; i < mr; i++) {
            __m256 xv = load_w_tail(x + (size_t)i * b->ldx, ST_F32, (size_t)k8, len);
            for (int j = 0; j < nr; j++)
                acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 8
        for (int j = 0; j < nr; j++) {
            float v = reduce8(acc[i][j]);
            if (b->bias)
                v += b->bias[j0 + j];
            b->y[(size_t)(r0 + i) * b->ldy + (size_t)(j0 + j)] = v;
        }
}

/* What each tile prefetches when W rows are read in place (never for a widened
 * panel: it is already in cache). One x row (decode): the next tile's rows,
 * contiguous after this tile's, as fast as this tile consumes its own. A few x rows
 * (batched decode): the W rows after this block (the next panel), an equal share per
 * tile, so the next block finds them in cache instead of waiting on DRAM. Either way
 * the fetches are paced over the tile's k steps, never issued in a burst. */
typedef struct ahead {
    const char *next;       /* the next tile's (m == 1) or the next panel's first byte */
    size_t share;           /* bytes a tile fetches (m > 1) */
    size_t steps;           /* k steps of a tile */
} ahead;

static inline ahead ahead_new(const mm_block *b, size_t esz)
{
    if (!MATMUL_PREFETCH || b->ldw != (size_t)b->k || b->k < 8)
        return (ahead){0};
    size_t bytes = (size_t)b->nw * b->ldw * esz;
    size_t tiles = (size_t)((b->m + MR - 1) / MR) * (size_t)((b->nw + NR - 1) / NR);
    return (ahead){(const char *)b->w + bytes, (bytes + tiles - 1) / tiles, (size_t)b->k / 8};
}

#define TILE_CASE(M, N) case (M) * 16 + (N): tile(b, r0, j0, M, N, DT, pf, pf_step); break;
#define DEFINE_BLOCK(NAME, DTYPE)                                                              \
    static TARGET void NAME(const mm_block *b)                                                 \
    {                                                                                          \
        const st_dtype DT = DTYPE;                                                             \
        ahead ah = ahead_new(b, elem_size(DT));                                                \
        const char *pf = NULL;                                                                 \
        size_t pf_step = 0;                                                                    \
        if (b->m == 1) {                                                                       \
            int r0 = 0;                                                                        \
            for (int j0 = 0; j0 < b->nw; j0 += NR1) {                                          \
                int nr = b->nw - j0 < NR1 ? b->nw - j0 : NR1;                                  \
                pf = (const char *)b->w + (size_t)(j0 + nr) * b->ldw * elem_size(DT);          \
                pf_step = ah.steps ? (size_t)nr * 8 * elem_size(DT) : 0;                       \
                switch (16 + (b->nw - j0 < NR1 ? b->nw - j0 : NR1)) {                           \
                TILE_CASE(1, 8) TILE_CASE(1, 7) TILE_CASE(1, 6) TILE_CASE(1, 5)                \
                TILE_CASE(1, 4) TILE_CASE(1, 3) TILE_CASE(1, 2) TILE_CASE(1, 1)                \
                }                                                                              \
            }                                                                                  \
            return;                                                                            \
        }                                                                                      \
        pf = ah.next;                                                                          \
        pf_step = ah.steps ? (ah.share + ah.steps - 1) / ah.steps : 0;                         \
        for (int r0 = 0; r0 < b->m; r0 += MR) {                                                \
            int mr = b->m - r0 < MR ? b->m - r0 : MR;                                          \
            for (int j0 = 0; j0 < b->nw; j0 += NR) {                                           \
                int nr = b->nw - j0 < NR ? b->nw - j0 : NR;                                    \
                switch (mr * 16 + nr) {                                                         \
                TILE_CASE(4, 3) TILE_CASE(4, 2) TILE_CASE(4, 1)                                \
                TILE_CASE(3, 3) TILE_CASE(3, 2) TILE_CASE(3, 1)                                \
                TILE_CASE(2, 3) TILE_CASE(2, 2) TILE_CASE(2, 1)                                \
                TILE_CASE(1, 3) TILE_CASE(1, 2) TILE_CASE(1, 1)                                \
                }                                                                              \
                pf += ah.share;                                                                \
            }                                                                                  \
        }                                                                                      \
    }

DEFINE_BLOCK(block_f32, ST_F32)
DEFINE_BLOCK(block_bf16, ST_BF16)
DEFINE_BLOCK(block_f16, ST_F16)

static void block(const mm_block *b)
{
    if (b->dtype == ST_BF16)
        block_bf16(b);
    else if (b->dtype == ST_F16)
        block_f16(b);
    else
        block_f32(b);
}

static TARGET void widen(float *dst, const void *src, st_dtype dt, size_t n)
{
    size_t i = 0;
    if (dt == ST_F32) {
        memcpy(dst, src, sizeof(float) * n);
        return;
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, dt == ST_BF16 ? load_w(src, ST_BF16, i) : load_w(src, ST_F16, i));
    if (i < n) {
        float t[8];
        _mm256_storeu_ps(t, load_w_tail(src, dt, i, (int)(n - i)));
        memcpy(dst + i, t, sizeof(float) * (n - i));
    }
}

static TARGET void ssm_head(float *S, int P, int N, int n, const float *x, size_t ldx, const float *B,
                            const float *C, size_t ldbc, const float *dt, const float *a, float Dh, float *y,
                            size_t ldy)
{
    int N8 = N & ~7;
    for (int t = 0; t < n; t++) {
        const float *Bt = B + (size_t)t * ldbc, *Ct = C + (size_t)t * ldbc;
        __m256 av = _mm256_set1_ps(a[t]);
        for (int p = 0; p < P; p++) {
            float xv = x[(size_t)t * ldx + (size_t)p], dx = dt[t] * xv, *s = S + (size_t)p * (size_t)N;
            __m256 dxv = _mm256_set1_ps(dx), acc = _mm256_setzero_ps();
            for (int k = 0; k < N8; k += 8) {
                __m256 sv = _mm256_fmadd_ps(dxv, _mm256_loadu_ps(Bt + k), _mm256_mul_ps(av, _mm256_loadu_ps(s + k)));
                _mm256_storeu_ps(s + k, sv);
                acc = _mm256_fmadd_ps(sv, _mm256_loadu_ps(Ct + k), acc);
            }
            float r = reduce8(acc);
            for (int k = N8; k < N; k++) {
                s[k] = a[t] * s[k] + dx * Bt[k];
                r += s[k] * Ct[k];
            }
            y[(size_t)t * ldy + (size_t)p] = r + Dh * xv;
        }
    }
}

const kernel_isa kernel_avx2 = {
    .name = "avx2", .lanes = 8, .mr = MR, .nr = NR, .block = block, .widen = widen, .ssm_head = ssm_head,
    .silu = silu_avx2, .silu_mul = silu_mul_avx2, .conv_taps = conv_taps_avx2,
    .attn_scores = attn_scores_avx2, .attn_mix = attn_mix_avx2, .softmax = softmax_avx2,
    .vocab = &vocab_avx2,
};
#else
const kernel_isa kernel_avx2 = {.name = "avx2"};
#endif
