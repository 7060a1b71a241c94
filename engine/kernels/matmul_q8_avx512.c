/*
 * matmul_q8_avx512.c — the AVX-512 int8 kernels: 16 fp32 lanes, int8 → int32 →
 * fp32 in registers times the block's bf16 scale, FMA with fp32 x; summation order
 * that of matmul_avx512.c (q8.h). Register tiles of 4 x-rows × 4 W-rows. A single
 * x row (decode) walks the thread's share of W in order, Q8_NR1 adjacent rows at a
 * time: unlike bf16 (where one row at a time streams fastest) int8 needs more
 * arithmetic per byte, and one row leaves the kernel waiting on its one FMA chain.
 * Also the int8 compute mode's kernel (VPDPBUSD over int8 panels) and its quantizer
 * of x (q8.h).
 */
#include <math.h>

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

/* ---------------------------------------------------------------- int8 compute
 *
 * W in panels of 32 rows (q8.h) times quantized x by VPDPBUSD: per block, each x
 * row's two vectors of 16 row sums start at xc_b and take 4 columns per
 * instruction over the 8 quads, then fold into the fp32 accumulators as in q8.h.
 * Register tile: Q8P_MB x rows × 32 W rows (12 fp32 and 12 int32 accumulators). */
#define TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma")))
#define INLINE_VNNI static inline __attribute__((always_inline)) TARGET_VNNI
#define Q8P_MB 6
/* Blocks per chunk when several blocks of x rows pass over it: 17 KiB, in L1. */
#define Q8P_CB 16

/* Four int8 of x read as one 32-bit lane. */
typedef int32_t quad_bits __attribute__((may_alias));

/* Outputs j .. j+31 of x rows r0 .. r0+mb-1 over blocks [b0, b1) of panel p: from
 * 0 (b0 = 0) or the partial sums in y, stored back (+ bias after the last block). */
INLINE_VNNI void q8p_rows(const q8p_block *b, const uint8_t *p, int j, int r0, const int mb, int b0, int b1, int nb,
                          const __mmask16 mask[2], const char *pf, int pf_lines)
{
    __m512 acc[Q8P_MB][2];
    const quad_bits *xq[Q8P_MB];
    const float *xs[Q8P_MB];
    const int32_t *xc[Q8P_MB];
#pragma GCC unroll 6
    for (int i = 0; i < mb; i++) {
        const float *y = b->y + (size_t)(r0 + i) * b->ldy + (size_t)j;
        acc[i][0] = b0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[0], y);
        acc[i][1] = b0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[1], y + 16);
        xq[i] = (const quad_bits *)(const void *)(b->xq + (size_t)(r0 + i) * b->ldx);
        xs[i] = b->xs + (size_t)(r0 + i) * b->lds;
        xc[i] = b->xc + (size_t)(r0 + i) * b->lds;
    }
    for (int blk = b0; blk < b1; blk++) {
        prefetch_step(pf, blk - b0, pf_lines);
        const uint8_t *w = p + (size_t)blk * Q8P_BLOCK_BYTES;
        __m512 sw[2];
        for (int t = 0; t < 2; t++)
            sw[t] = _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(w + 32 * t))), 16));
        __m512i isum[Q8P_MB][2];
#pragma GCC unroll 6
        for (int i = 0; i < mb; i++)
            isum[i][0] = isum[i][1] = _mm512_set1_epi32(xc[i][blk]);
        w += Q8P_ROWS * 2;
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) {
            __m512i w0 = _mm512_loadu_si512((const void *)(w + u * Q8P_QUAD_BYTES));
            __m512i w1 = _mm512_loadu_si512((const void *)(w + u * Q8P_QUAD_BYTES + 64));
#pragma GCC unroll 6
            for (int i = 0; i < mb; i++) {
                __m512i xv = _mm512_set1_epi32(xq[i][blk * 8 + u]);
                isum[i][0] = _mm512_dpbusd_epi32(isum[i][0], w0, xv);
                isum[i][1] = _mm512_dpbusd_epi32(isum[i][1], w1, xv);
            }
        }
#pragma GCC unroll 6
        for (int i = 0; i < mb; i++) {
            __m512 sx = _mm512_set1_ps(xs[i][blk]);
            for (int t = 0; t < 2; t++)
                acc[i][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i][t]), _mm512_mul_ps(sw[t], sx), acc[i][t]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < mb; i++) {
        float *y = b->y + (size_t)(r0 + i) * b->ldy + (size_t)j;
        for (int t = 0; t < 2; t++) {
            __m512 v = acc[i][t];
            if (b1 == nb && b->bias)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask[t], b->bias + j + 16 * t));
            _mm512_mask_storeu_ps(y + 16 * t, mask[t], v);
        }
    }
}

#define Q8P_CASE(M) case M: q8p_rows(b, p, j, r0, M, b0, b1, nb, mask, pf, pf_lines); break;

/* For each panel, its blocks in chunks (the whole panel for one block of x rows,
 * else Q8P_CB blocks), every block of Q8P_MB x rows over a chunk while prefetching
 * its equal share of the next chunk (this panel's, the next one's, or pf_after). */
static TARGET_VNNI void q8p_block_vnni(const q8p_block *b)
{
    int nb = (int)(q8_padded(b->k) / Q8_BLOCK), n_panels = (b->nw + Q8P_ROWS - 1) / Q8P_ROWS;
    int x_blocks = (b->m + Q8P_MB - 1) / Q8P_MB, cb = x_blocks > 1 && nb > Q8P_CB ? Q8P_CB : nb;
    for (int g = 0; g < n_panels; g++) {
        const uint8_t *p = b->w + (size_t)g * (size_t)nb * Q8P_BLOCK_BYTES;
        int j = g * Q8P_ROWS;
        __mmask16 mask[2];
        for (int t = 0; t < 2; t++) {
            int n = b->nw - j - 16 * t;
            mask[t] = n >= 16 ? (__mmask16)0xffff : n > 0 ? (__mmask16)((1u << n) - 1) : 0;
        }
        for (int b0 = 0; b0 < nb; b0 += cb) {
            int b1 = nb - b0 < cb ? nb : b0 + cb;
            int last = b1 == nb && g + 1 == n_panels;
            int next = b1 < nb ? (nb - b1 < cb ? nb - b1 : cb) : !last || b->pf_after ? cb : 0;
            const char *pf = last && b->pf_after ? (const char *)b->pf_after
                                                 : (const char *)(p + (size_t)b1 * Q8P_BLOCK_BYTES);
            int share = (next * (Q8P_BLOCK_BYTES / 64) + x_blocks - 1) / x_blocks;
            int pf_lines = (share + (b1 - b0) - 1) / (b1 - b0);
            for (int r0 = 0; r0 < b->m; r0 += Q8P_MB, pf += (size_t)share * 64) {
                switch (b->m - r0 < Q8P_MB ? b->m - r0 : Q8P_MB) {
                    Q8P_CASE(6) Q8P_CASE(5) Q8P_CASE(4) Q8P_CASE(3) Q8P_CASE(2) Q8P_CASE(1)
                }
            }
        }
    }
}

/* q8_quantize_x_portable's steps on a block at a time: max |x| (exact in any
 * order), one division, a multiply and round-to-nearest-even per value (VCVTPS2DQ
 * under the default MXCSR, rintf's rounding): the same bits. */
static TARGET void quantize_x(const float *x, int k, int8_t *xq, float *xs, int32_t *xc)
{
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    int nb = (int)(q8_padded(k) / Q8_BLOCK);
    for (int b = 0; b < nb; b++) {
        int c0 = b * Q8_BLOCK, len = k - c0 < Q8_BLOCK ? k - c0 : Q8_BLOCK;
        __mmask16 m0 = (__mmask16)(len >= 16 ? 0xffff : (1u << len) - 1);
        __mmask16 m1 = (__mmask16)(len >= 32 ? 0xffff : len > 16 ? (1u << (len - 16)) - 1 : 0);
        __m512 v0 = _mm512_maskz_loadu_ps(m0, x + c0), v1 = _mm512_maskz_loadu_ps(m1, x + c0 + 16);
        /* x - x is 0 for finite x, NaN for inf and NaN */
        __mmask16 bad = _mm512_cmp_ps_mask(_mm512_sub_ps(v0, v0), _mm512_setzero_ps(), _CMP_NEQ_UQ) |
                        _mm512_cmp_ps_mask(_mm512_sub_ps(v1, v1), _mm512_setzero_ps(), _CMP_NEQ_UQ);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float inv = !bad && amax > 0.0f ? 127.0f / amax : 0.0f;
        inv = isinf(inv) ? 0.0f : inv;
        __m512 iv = _mm512_set1_ps(inv);
        __m512i q0 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v0, iv)), lo), hi);
        __m512i q1 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v1, iv)), lo), hi);
        if (inv == 0.0f)
            q0 = q1 = _mm512_setzero_si512();
        _mm_storeu_si128((__m128i *)(void *)(xq + c0), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(void *)(xq + c0 + 16), _mm512_cvtepi32_epi8(q1));
        xs[b] = bad ? NAN : amax / 127.0f;
        xc[b] = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}

q8_quantize_x_fn q8_quantize_x_kernel(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") ? quantize_x : NULL;
}

void (*q8_panels_kernel(void))(const q8p_block *b)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vnni")
               ? q8p_block_vnni
               : NULL;
}
#else
const q8_isa q8_avx512 = {0};

q8_quantize_x_fn q8_quantize_x_kernel(void)
{
    return NULL;
}

void (*q8_panels_kernel(void))(const q8p_block *b)
{
    return NULL;
}
#endif
