/*
 * matmul_avx512.c — the AVX-512 kernels: on W as stored, 16 fp32 lanes in
 * register tiles of 4 x-rows × 4 W-rows, W widened from BF16/F16 in registers; on
 * BF16 weights in panels (isa.h), one lane per output, by FMA on W widened in
 * registers (x in fp32) or by VDPBF16PS (the bf16 compute mode, x in BF16).
 * Summation order as in isa.h (16 lanes folded to 8 first; four tiles' sums folded
 * together, same additions).
 *
 * A single x row (decode) takes W one row at a time: each thread then reads its
 * share of W as one sequential stream, which the hardware prefetcher follows at
 * full memory bandwidth (several short rows in lockstep are several short streams,
 * and measured 40 % slower on a Zen 4 with two threads); rows of 4096 elements or
 * more, long streams already, go four at a time. A few x rows (batched decode)
 * walk W tile by tile, prefetching the next tile (see WALK).
 */
#include <string.h>

#include "kernels/isa.h"
#include "kernels/vocab.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "kernels/x86.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET
#define MR 4
#define NR 4

INLINE __m512 load_w(const void *w, st_dtype dt, size_t i)
{
    if (dt == ST_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i))), 16));
    if (dt == ST_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
    return _mm512_loadu_ps((const float *)w + i);
}

INLINE __m512 load_w_tail(const void *w, st_dtype dt, size_t i, int len)
{
    if (dt == ST_F32) {
        float t[16] = {0};
        memcpy(t, (const float *)w + i, sizeof(float) * (size_t)len);
        return _mm512_loadu_ps(t);
    }
    uint16_t t[16] = {0};
    memcpy(t, (const uint16_t *)w + i, 2 * (size_t)len);
    return load_w(t, dt == ST_BF16 ? ST_BF16 : ST_F16, 0);
}

/* reduce16 of a, b, c, d at once: the same additions on the same values (so the
 * same bits), four sums to a vector instead of one at a time. */
INLINE void reduce16x4(__m512 a, __m512 b, __m512 c, __m512 d, float out[4])
{
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee)); /* i + i+8 */
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xee));
    __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xdd)); /* i + i+4 */
    q = _mm512_add_ps(q, _mm512_permute_ps(q, 0x4e));                                                /* i + i+2 */
    q = _mm512_add_ps(q, _mm512_permute_ps(q, 0xb1));                                                /* 0 + 1 */
    float t[16];
    _mm512_storeu_ps(t, q);
    out[0] = t[0], out[1] = t[4], out[2] = t[8], out[3] = t[12];
}

_Static_assert(NR == 4, "store_tile folds a tile's four W rows with reduce16x4");

/* y[r0 + i][j0 + j] = the reduced acc[i][j] (+ bias), four W rows at a time. */
INLINE void store_tile(const mm_block *b, int r0, int j0, const int mr, const int nr, __m512 acc[MR][NR])
{
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        float v[NR];
        if (nr == NR)
            reduce16x4(acc[i][0], acc[i][1], acc[i][2], acc[i][3], v);
        else
            for (int j = 0; j < nr; j++)
                v[j] = reduce16(acc[i][j]);
        for (int j = 0; j < nr; j++)
            b->y[(size_t)(r0 + i) * b->ldy + (size_t)(j0 + j)] = b->bias ? v[j] + b->bias[j0 + j] : v[j];
    }
}

/* A register tile of mr x rows × nr W rows; each k step fetches its pf_lines cache
 * lines of the next W tile from pf (prefetch_step; 0: none) while this one computes. */
INLINE void tile(const mm_block *b, int r0, int j0, const int mr, const int nr, const st_dtype dt, const char *pf,
                 int pf_lines)
{
    __m512 acc[MR][NR];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm512_setzero_ps();
    const float *x = b->x + (size_t)r0 * b->ldx;
    size_t w0 = (size_t)j0 * b->ldw;
    int k16 = b->k & ~15;
    for (int kk = 0; kk < k16; kk += 16) {
        prefetch_step(pf, kk / 16, pf_lines);
        __m512 wv[NR];
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            wv[j] = load_w(b->w, dt, w0 + (size_t)j * b->ldw + (size_t)kk);
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            __m512 xv = _mm512_loadu_ps(x + (size_t)i * b->ldx + kk);
#pragma GCC unroll 4
            for (int j = 0; j < nr; j++)
                acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    if (k16 < b->k) {
        int len = b->k - k16;
        __m512 wv[NR];
        for (int j = 0; j < nr; j++)
            wv[j] = load_w_tail(b->w, dt, w0 + (size_t)j * b->ldw + (size_t)k16, len);
        for (int i = 0; i < mr; i++) {
            __m512 xv = load_w_tail(x + (size_t)i * b->ldx, ST_F32, (size_t)k16, len);
            for (int j = 0; j < nr; j++)
                acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    store_tile(b, r0, j0, mr, nr, acc);
}

/* The walk over a block's tiles, shared by the fp32 and bf16 kernels (TILE, W
 * elements of ESZ bytes). One x row: W one row at a time (one stream), except for
 * rows of LOCKSTEP_MIN_K elements or more, which go NR at a time: such rows are
 * long streams on their own, and NR of them give NR independent FMA chains and
 * read x (then larger than L1) once per NR rows instead of once per row — on a
 * Zen 4, 4096 × 21504 BF16 went from 21 to 30 GB/s and the 8B shape's decode from
 * 1.33–1.40 to 1.49–1.52 tok/s, while rows of 1024–2048 lose a third. Up to
 * SMALL_M x rows (batched decode): each W tile meets every x row before the next,
 * whose rows are prefetched meanwhile in equal shares, so W leaves DRAM once and is
 * never waited on. More rows (prefill): x tiles outer, the W panel in L2. */
#define SMALL_M 16
#define LOCKSTEP_MIN_K 4096
#define TILE_CASE(TILE, M, N) case (M) * 8 + (N): TILE(b, r0, j0, M, N, pf, pf_lines); break;
#define TILE_ROW(TILE, M) TILE_CASE(TILE, M, 4) TILE_CASE(TILE, M, 3) TILE_CASE(TILE, M, 2) TILE_CASE(TILE, M, 1)
#define TILE_SWITCH(TILE) switch (mr * 8 + nr) { TILE_ROW(TILE, 4) TILE_ROW(TILE, 3) TILE_ROW(TILE, 2) TILE_ROW(TILE, 1) }
#define WALK(TILE, ESZ)                                                                        \
    do {                                                                                       \
        const char *pf = NULL;                                                                 \
        int pf_lines = 0, mr = 1, nr = 1, k_steps = (b->k + 15) / 16;                          \
        if (b->m == 1) {                                                                       \
            int rows = b->k >= LOCKSTEP_MIN_K ? NR : 1;                                        \
            for (int j0 = 0, r0 = 0; j0 < b->nw; j0 += nr) {                                   \
                nr = b->nw - j0 < rows ? b->nw - j0 : rows;                                    \
                TILE_SWITCH(TILE)                                                              \
            }                                                                                  \
        } else if (b->m <= SMALL_M) {                                                          \
            int r_tiles = (b->m + MR - 1) / MR;                                                \
            size_t tile_lines = (size_t)NR * b->ldw * (ESZ) / 64 + 1;                          \
            size_t share = (tile_lines + (size_t)r_tiles - 1) / (size_t)r_tiles;               \
            pf_lines = (int)((share + (size_t)k_steps - 1) / (size_t)k_steps);                 \
            for (int j0 = 0; j0 < b->nw; j0 += NR) {                                           \
                nr = b->nw - j0 < NR ? b->nw - j0 : NR;                                        \
                pf = (const char *)b->w + (size_t)(j0 + nr) * b->ldw * (ESZ);                  \
                for (int r0 = 0; r0 < b->m; r0 += MR, pf += share * 64) {                      \
                    mr = b->m - r0 < MR ? b->m - r0 : MR;                                      \
                    TILE_SWITCH(TILE)                                                          \
                }                                                                              \
            }                                                                                  \
        } else {                                                                               \
            for (int r0 = 0; r0 < b->m; r0 += MR) {                                            \
                mr = b->m - r0 < MR ? b->m - r0 : MR;                                          \
                for (int j0 = 0; j0 < b->nw; j0 += NR) {                                       \
                    nr = b->nw - j0 < NR ? b->nw - j0 : NR;                                    \
                    TILE_SWITCH(TILE)                                                          \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    } while (0)

#define TILE_F32(b, r0, j0, M, N, pf, pf_lines) tile(b, r0, j0, M, N, DT, pf, pf_lines)
#define DEFINE_BLOCK(NAME, DTYPE)                                                              \
    static TARGET void NAME(const mm_block *b)                                                 \
    {                                                                                          \
        const st_dtype DT = DTYPE;                                                             \
        WALK(TILE_F32, DT == ST_F32 ? 4 : 2);                                                  \
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

/* ---- BF16 weights in panels (isa.h). The bf16 compute mode's kernel: x and W
 * both BF16, per pair step four loads of 16 rows' pairs and one broadcast x pair
 * per x row feed 4 × PANEL_MB accumulators by VDPBF16PS (two products summed per
 * lane: twice the multiply-adds of an FMA per instruction), one fp32 lane per
 * output. PANEL_KC pairs of a panel (128 KiB) stay in L2 while every
 * block of x rows passes over them; each pass prefetches its share of the next
 * chunk, so the panels leave DRAM once, as one stream per thread. */
#define TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16,avx2,fma,f16c")))
#define INLINE_BF16 static inline __attribute__((always_inline)) TARGET_BF16

INLINE_BF16 __m512bh load_pairs(const uint16_t *p)
{
    return (__m512bh)_mm512_loadu_si512((const void *)p);
}

#define PANEL_MB 6
#define PANEL_KC 512
/* The BF16 dot kernel with 2–3 blocks of x rows (7–18 rows: batched decode) takes
 * chunks of 128 pairs (32 KiB, an L1's worth) instead: weights from DRAM, best of
 * 3–4 alternating runs on a Zen 5, 12 and 16 rows ran 3–17 % faster on every shape
 * of the 470m; 20 or more rows (4+ blocks) ran faster with 512, one block the
 * same. The fp32 kernel, twice the instructions per weight, gained nothing. */
#define PANEL_KC_FEW 128
#define PANEL_PAIR 128      /* BF16 elements of one pair step of a panel: 64 rows × 2 */

/* Two BF16 values of x read as one 32-bit lane (x is written as uint16_t). */
typedef uint32_t pair_bits __attribute__((may_alias));

/* The accumulators of rows r0 .. r0+mb-1, outputs j .. j+63: zero before the
 * first chunk (p0 = 0), else the partial sums waiting in y. */
INLINE void load_panel_rows(const mm_block *b, int j, int r0, const int mb, int p0, const __mmask16 mask[4],
                            __m512 acc[PANEL_MB][4])
{
#pragma GCC unroll 6
    for (int i = 0; i < mb; i++) {
        const float *y = b->y + (size_t)(r0 + i) * b->ldy + (size_t)j;
#pragma GCC unroll 4
        for (int t = 0; t < 4; t++)
            acc[i][t] = p0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[t], y + 16 * t);
    }
}

/* Rows r0 .. r0+mb-1 of the panel's outputs j .. j+63 back to y: partial sums,
 * or after the last chunk (p1 = all pairs) the sums + bias. */
INLINE void store_panel_rows(const mm_block *b, int j, int r0, const int mb, int p1, const __mmask16 mask[4],
                             __m512 acc[PANEL_MB][4])
{
    int last = p1 == (b->k + 1) / 2;
#pragma GCC unroll 6
    for (int i = 0; i < mb; i++) {
        float *y = b->y + (size_t)(r0 + i) * b->ldy + (size_t)j;
#pragma GCC unroll 4
        for (int t = 0; t < 4; t++) {
            __m512 v = acc[i][t];
            if (last && b->bias)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask[t], b->bias + j + 16 * t));
            _mm512_mask_storeu_ps(y + 16 * t, mask[t], v);
        }
    }
}

/* Output columns j .. j+63 of x rows r0 .. r0+mb-1 over pairs [p0, p1) of panel w:
 * from 0 (p0 = 0) or the partial sums in y, stored back (+ bias after the last). */
INLINE_BF16 void panel_rows(const mm_block *b, const uint16_t *w, int j, int r0, const int mb, int p0, int p1,
                            const __mmask16 mask[4], const char *pf, int pf_lines)
{
    __m512 acc[PANEL_MB][4];
    const pair_bits *x[PANEL_MB];
    load_panel_rows(b, j, r0, mb, p0, mask, acc);
#pragma GCC unroll 6
    for (int i = 0; i < mb; i++)
        x[i] = (const pair_bits *)(const void *)(b->xb + (size_t)(r0 + i) * b->ldx);
    for (int p = p0; p < p1; p++) {
        prefetch_step(pf, p - p0, pf_lines);
        const uint16_t *wp = w + (size_t)p * PANEL_PAIR;
        __m512bh wv[4];
#pragma GCC unroll 4
        for (int t = 0; t < 4; t++)
            wv[t] = load_pairs(wp + 32 * t);
#pragma GCC unroll 6
        for (int i = 0; i < mb; i++) {
            __m512bh xv = (__m512bh)_mm512_set1_epi32((int)x[i][p]);
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++)
                acc[i][t] = _mm512_dpbf16_ps(acc[i][t], xv, wv[t]);
        }
    }
    store_panel_rows(b, j, r0, mb, p1, mask, acc);
}

/* round_bf16 (matmul.c) 16 values at a time: u + 0x7fff + (bit 16 of u), the top
 * half kept, NaN made quiet instead — the same integer steps, so the same bits. */
static TARGET size_t to_bf16(uint16_t *dst, const float *src, size_t n)
{
    const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff);
    const __m512i abs = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i quiet = _mm512_set1_epi32(0x00400000);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512((const void *)(src + i));
        __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, half), _mm512_and_si512(_mm512_srli_epi32(u, 16), one));
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs), inf);
        r = _mm512_mask_or_epi32(r, nan, u, quiet);
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
    }
    return i;
}

/* acc[i][t] += x[i][k] · wv[t] for the mb x rows: one k of 64 outputs. */
INLINE void fma_rows(__m512 acc[PANEL_MB][4], const __m512 wv[4], const float *const x[PANEL_MB], size_t k,
                     const int mb)
{
#pragma GCC unroll 6
    for (int i = 0; i < mb; i++) {
        __m512 xv = _mm512_set1_ps(x[i][k]);
#pragma GCC unroll 4
        for (int t = 0; t < 4; t++)
            acc[i][t] = _mm512_fmadd_ps(xv, wv[t], acc[i][t]);
    }
}

/* The same over panels with x in fp32 (the default mode): each pair step widens
 * the four loads exactly — the low element of a pair by a shift, the high one by a
 * mask — into 16 rows' W[k] then W[k+1], each times one broadcast x[k] per x row
 * by FMA into 4 × PANEL_MB accumulators; a W element costs one integer op per
 * PANEL_MB multiply-adds, and no lane is ever reduced. Order per output: FMAs in
 * increasing k (a K that is odd ends with a lone low element), then + bias. */
INLINE void panel_rows_f32(const mm_block *b, const uint16_t *w, int j, int r0, const int mb, int p0, int p1,
                           const __mmask16 mask[4], const char *pf, int pf_lines)
{
    __m512 acc[PANEL_MB][4];
    const float *x[PANEL_MB];
    load_panel_rows(b, j, r0, mb, p0, mask, acc);
#pragma GCC unroll 6
    for (int i = 0; i < mb; i++)
        x[i] = b->x + (size_t)(r0 + i) * b->ldx;
    const __m512i high = _mm512_set1_epi32((int)0xffff0000u);
    int whole = b->k / 2 < p1 ? b->k / 2 : p1;      /* pairs with both elements in K */
    for (int p = p0; p < p1; p++) {
        prefetch_step(pf, p - p0, pf_lines);
        const uint16_t *wp = w + (size_t)p * PANEL_PAIR;
        __m512 wv[4];
#pragma GCC unroll 4
        for (int t = 0; t < 4; t++)
            wv[t] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512((const void *)(wp + 32 * t)), 16));
        fma_rows(acc, wv, x, 2 * (size_t)p, mb);
        if (p >= whole)
            break;
#pragma GCC unroll 4
        for (int t = 0; t < 4; t++)
            wv[t] = _mm512_castsi512_ps(_mm512_and_si512(_mm512_loadu_si512((const void *)(wp + 32 * t)), high));
        fma_rows(acc, wv, x, 2 * (size_t)p + 1, mb);
    }
    store_panel_rows(b, j, r0, mb, p1, mask, acc);
}

/* The walk over panels, shared by both row kernels (ROWS): for each panel, its K
 * in chunks of kc pairs (PANEL_KC, or KC_FEW for 2–3 blocks of x rows), every
 * block of PANEL_MB x rows over a chunk while prefetching its equal share of the
 * next chunk (this panel's, the next one's, or pf_after). */
#define PANEL_CASE(ROWS, M) case M: ROWS(b, w, j, r0, M, p0, p1, mask, pf, pf_lines); break;
#define PANEL_WALK(ROWS, KC_FEW)                                                                          \
    do {                                                                                                  \
        int P = (b->k + 1) / 2, n_panels = (b->nw + BF16_PANEL_ROWS - 1) / BF16_PANEL_ROWS;              \
        size_t x_blocks = (size_t)((b->m + PANEL_MB - 1) / PANEL_MB);                                     \
        int kc = x_blocks >= 2 && x_blocks <= 3 ? (KC_FEW) : PANEL_KC;                                    \
        for (int g = 0; g < n_panels; g++) {                                                              \
            const uint16_t *w = (const uint16_t *)b->w + (size_t)g * (size_t)P * PANEL_PAIR;              \
            int j = g * BF16_PANEL_ROWS;                                                                  \
            __mmask16 mask[4];                                                                            \
            for (int t = 0; t < 4; t++) {                                                                 \
                int n = b->nw - j - 16 * t;                                                               \
                mask[t] = n >= 16 ? (__mmask16)0xffff : n > 0 ? (__mmask16)((1u << n) - 1) : 0;           \
            }                                                                                             \
            for (int p0 = 0; p0 < P; p0 += kc) {                                                          \
                int p1 = P - p0 < kc ? P : p0 + kc;                                                       \
                int last = p1 == P && g + 1 == n_panels;                                                  \
                int next_pairs = p1 < P ? (P - p1 < kc ? P - p1 : kc)                                     \
                                 : !last || b->pf_after ? (P < kc ? P : kc) : 0;                          \
                const char *pf = last && b->pf_after ? (const char *)b->pf_after                          \
                                                     : (const char *)(w + (size_t)p1 * PANEL_PAIR);       \
                size_t share = ((size_t)next_pairs * PANEL_PAIR * 2 / 64 + x_blocks - 1) / x_blocks;     \
                int pf_lines = (int)((share + (size_t)(p1 - p0) - 1) / (size_t)(p1 - p0));                \
                for (int r0 = 0; r0 < b->m; r0 += PANEL_MB, pf += share * 64) {                           \
                    switch (b->m - r0 < PANEL_MB ? b->m - r0 : PANEL_MB) {                                \
                        PANEL_CASE(ROWS, 6) PANEL_CASE(ROWS, 5) PANEL_CASE(ROWS, 4)                       \
                        PANEL_CASE(ROWS, 3) PANEL_CASE(ROWS, 2) PANEL_CASE(ROWS, 1)                       \
                    }                                                                                     \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
    } while (0)

static TARGET_BF16 void block_panels(const mm_block *b)
{
    PANEL_WALK(panel_rows, PANEL_KC_FEW);
}

static TARGET void block_panels_f32(const mm_block *b)
{
    PANEL_WALK(panel_rows_f32, PANEL_KC);
}

static TARGET void widen(float *dst, const void *src, st_dtype dt, size_t n)
{
    size_t i = 0;
    if (dt == ST_F32) {
        memcpy(dst, src, sizeof(float) * n);
        return;
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, dt == ST_BF16 ? load_w(src, ST_BF16, i) : load_w(src, ST_F16, i));
    if (i < n) {
        float t[16];
        _mm512_storeu_ps(t, load_w_tail(src, dt, i, (int)(n - i)));
        memcpy(dst + i, t, sizeof(float) * (n - i));
    }
}

/* ssm_head for N = 16·nv ≤ 128 over a few tokens: row p of S stays in nv
 * registers across them instead of a load and a store per token. The same
 * operations on the same values in the same order as the general loop below (any
 * N), so the same bits. The loop reads 16 state values at element i by LOAD(i),
 * writes them by STORE(i, v), and passes them from one token to the next through
 * KEEP(v): for the fp32 state, as they are; for a BF16 one, rounded. Each row
 * first prefetches the row SSM_PF_ROWS ahead (past the head's last row: the next
 * head's, which a decode step scans next): at one token a row takes a few ns, and a
 * state row waiting on DRAM was a third of the decode scan. */
#define SSM_PF_ROWS 16
#define SSM_ROWS_LOOP(LOAD, STORE, KEEP)                                                           \
    for (int p = 0; p < P; p++) {                                                                  \
        size_t s = (size_t)p * (size_t)(16 * nv);                                                  \
        prefetch_span((const char *)(S + s + (size_t)SSM_PF_ROWS * (size_t)(16 * nv)),              \
                      sizeof *S * 16 * (size_t)nv);                                                \
        __m512 sv[8];                                                                              \
        _Pragma("GCC unroll 8") for (int k = 0; k < nv; k++) sv[k] = LOAD(s + 16 * (size_t)k);     \
        for (int t = 0; t < n; t++) {                                                              \
            const float *Bt = B + (size_t)t * ldbc, *Ct = C + (size_t)t * ldbc;                    \
            float xv = x[(size_t)t * ldx + (size_t)p], dx = dt[t] * xv;                            \
            __m512 av = _mm512_set1_ps(a[t]), dxv = _mm512_set1_ps(dx), acc = _mm512_setzero_ps(); \
            _Pragma("GCC unroll 8") for (int k = 0; k < nv; k++) {                                 \
                sv[k] = _mm512_fmadd_ps(dxv, _mm512_loadu_ps(Bt + 16 * k), _mm512_mul_ps(av, sv[k])); \
                acc = _mm512_fmadd_ps(sv[k], _mm512_loadu_ps(Ct + 16 * k), acc);                   \
                sv[k] = t + 1 < n ? KEEP(sv[k]) : sv[k];                                           \
            }                                                                                      \
            y[(size_t)t * ldy + (size_t)p] = reduce16(acc) + Dh * xv;                              \
        }                                                                                          \
        _Pragma("GCC unroll 8") for (int k = 0; k < nv; k++) STORE(s + 16 * (size_t)k, sv[k]);     \
    }

#define F32_LOAD(i) _mm512_loadu_ps(S + (i))
#define F32_STORE(i, v) _mm512_storeu_ps(S + (i), v)
#define F32_KEEP(v) (v)

INLINE void ssm_head_rows(float *S, int P, const int nv, int n, const float *x, size_t ldx, const float *B,
                          const float *C, size_t ldbc, const float *dt, const float *a, float Dh, float *y, size_t ldy)
{
    SSM_ROWS_LOOP(F32_LOAD, F32_STORE, F32_KEEP)
}

/* The state kept in BF16 (kernels.h: ssm_head_bf16): widened exactly, rounded after
 * every token by VCVTNEPS2BF16 — bf16_round_state's steps. */
INLINE_BF16 __m512 bf16_state_widen(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE_BF16 __m512 bf16_state_load(const uint16_t *p)
{
    return bf16_state_widen(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

INLINE_BF16 __m256i bf16_state_round(__m512 v)
{
    return (__m256i)_mm512_cvtneps_pbh(v);
}

INLINE_BF16 __m512 bf16_state_keep(__m512 v)
{
    return bf16_state_widen(bf16_state_round(v));
}

#define BF16_LOAD(i) bf16_state_load(S + (i))
#define BF16_STORE(i, v) _mm256_storeu_si256((__m256i *)(void *)(S + (i)), bf16_state_round(v))

INLINE_BF16 void ssm_head_rows_bf16(uint16_t *S, int P, const int nv, int n, const float *x, size_t ldx,
                                    const float *B, const float *C, size_t ldbc, const float *dt, const float *a,
                                    float Dh, float *y, size_t ldy)
{
    SSM_ROWS_LOOP(BF16_LOAD, BF16_STORE, bf16_state_keep)
}

#define SSM_ROWS_CASE(NV) case NV: ssm_head_rows(S, P, NV, n, x, ldx, B, C, ldbc, dt, a, Dh, y, ldy); return;
static TARGET void ssm_head_block(float *S, int P, int nv, int n, const float *x, size_t ldx, const float *B,
                                  const float *C, size_t ldbc, const float *dt, const float *a, float Dh, float *y,
                                  size_t ldy)
{
    switch (nv) {
        SSM_ROWS_CASE(8) SSM_ROWS_CASE(7) SSM_ROWS_CASE(6) SSM_ROWS_CASE(5)
        SSM_ROWS_CASE(4) SSM_ROWS_CASE(3) SSM_ROWS_CASE(2) SSM_ROWS_CASE(1)
    }
}

/* Tokens per pass with the state rows in registers: past 4, the tokens' B and C
 * rows and the state no longer share L1 (one layer of the 470m shape, 32 heads ×
 * 512 tokens on one thread: 14.6–19.3 ms one token at a time, 12.5–14.7 by 4, 14.6–15.8
 * by 8 or 16). */
#define SSM_TBLOCK 4

#define SSM_BF16_CASE(NV)                                                                          \
    case NV:                                                                                       \
        ssm_head_rows_bf16(S, P, NV, m, x + (size_t)t0 * ldx, ldx, B + (size_t)t0 * ldbc,         \
                           C + (size_t)t0 * ldbc, ldbc, dt + t0, a + t0, Dh, y + (size_t)t0 * ldy, ldy); \
        break;
/* isa.h ssm_head_bf16 for N = 16·nv ≤ 128, SSM_TBLOCK tokens at a time (the state
 * is rounded after every token, so keeping it in BF16 between blocks loses nothing). */
static TARGET_BF16 int ssm_head_bf16_fused(uint16_t *S, int P, int N, int n, const float *x, size_t ldx,
                                           const float *B, const float *C, size_t ldbc, const float *dt,
                                           const float *a, float Dh, float *y, size_t ldy)
{
    if (N % 16 || N > 128)
        return 0;
    for (int t0 = 0; t0 < n; t0 += SSM_TBLOCK) {
        int m = n - t0 < SSM_TBLOCK ? n - t0 : SSM_TBLOCK;
        switch (N / 16) {
            SSM_BF16_CASE(8) SSM_BF16_CASE(7) SSM_BF16_CASE(6) SSM_BF16_CASE(5)
            SSM_BF16_CASE(4) SSM_BF16_CASE(3) SSM_BF16_CASE(2) SSM_BF16_CASE(1)
        }
    }
    return 1;
}

static TARGET void ssm_head(float *S, int P, int N, int n, const float *x, size_t ldx, const float *B,
                            const float *C, size_t ldbc, const float *dt, const float *a, float Dh, float *y,
                            size_t ldy)
{
    if (N % 16 == 0 && N <= 128) {
        for (int t0 = 0; t0 < n; t0 += SSM_TBLOCK) {
            int m = n - t0 < SSM_TBLOCK ? n - t0 : SSM_TBLOCK;
            ssm_head_block(S, P, N / 16, m, x + (size_t)t0 * ldx, ldx, B + (size_t)t0 * ldbc, C + (size_t)t0 * ldbc,
                           ldbc, dt + t0, a + t0, Dh, y + (size_t)t0 * ldy, ldy);
        }
        return;
    }
    int N16 = N & ~15;
    for (int t = 0; t < n; t++) {
        const float *Bt = B + (size_t)t * ldbc, *Ct = C + (size_t)t * ldbc;
        __m512 av = _mm512_set1_ps(a[t]);
        for (int p = 0; p < P; p++) {
            float xv = x[(size_t)t * ldx + (size_t)p], dx = dt[t] * xv, *s = S + (size_t)p * (size_t)N;
            __m512 dxv = _mm512_set1_ps(dx), acc = _mm512_setzero_ps();
            for (int k = 0; k < N16; k += 16) {
                __m512 sv = _mm512_fmadd_ps(dxv, _mm512_loadu_ps(Bt + k), _mm512_mul_ps(av, _mm512_loadu_ps(s + k)));
                _mm512_storeu_ps(s + k, sv);
                acc = _mm512_fmadd_ps(sv, _mm512_loadu_ps(Ct + k), acc);
            }
            float r = reduce16(acc);
            for (int k = N16; k < N; k++) {
                s[k] = a[t] * s[k] + dx * Bt[k];
                r += s[k] * Ct[k];
            }
            y[(size_t)t * ldy + (size_t)p] = r + Dh * xv;
        }
    }
}

const kernel_isa kernel_avx512 = {
    .name = "avx512", .lanes = 16, .mr = MR, .nr = NR, .block = block, .widen = widen, .ssm_head = ssm_head,
    .ssm_head_bf16 = ssm_head_bf16_fused, .to_bf16 = to_bf16,
    .silu = silu_avx512, .silu_mul = silu_mul_avx512, .conv_taps = conv_taps_avx512,
    .attn_scores = attn_scores_avx2, .attn_mix = attn_mix_avx512, .softmax = softmax_avx512,
    .block_panels = block_panels, .block_panels_f32 = block_panels_f32,
    .vocab = &vocab_avx512,
};
#else
const kernel_isa kernel_avx512 = {.name = "avx512"};
#endif
