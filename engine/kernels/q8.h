/*
 * q8.h — int8 weights (`--weights int8`): the block format, the quantizer and the
 * per-instruction-set kernels that multiply by a quantized W; and the int8 compute
 * mode (`--compute int8`), whose activations are quantized too (below).
 *
 * Format (ST_I8 in a strata_mat, with `scales` set): W [rows, cols] becomes
 *   q      (rows, kp) int8, kp = cols rounded up to Q8_BLOCK, zero-padded;
 *   scales (rows, kp / Q8_BLOCK) bf16, one per block of Q8_BLOCK consecutive
 *          weights of a row;
 * and w = q·s with s = max|w over the block| / 127 rounded UP to bf16 (so
 * |w / s| ≤ 127 still holds) and q = round-to-nearest(w / s). Scales are bf16
 * (2 bytes per 32 weights: 1.0625 bytes a weight, 53 % of bf16) rather than fp32
 * (1.125 bytes) because decode streams them with every step; rounding the scale up
 * costs at most 1/128 of it, and |w − q·s| ≤ s/2 holds for the stored s.
 *
 * Summation order: the Q8 kernels compute each weight as the fp32 product
 * (float)q · s and accumulate exactly as the fp32 kernel of the same path does
 * (isa.h: the same lanes, FMA or not, the same tail padding and reduction). The
 * product is correctly rounded on every path, so dequantizing a panel of W to
 * fp32 and running the fp32 kernel over it gives the same bits as the Q8 kernel:
 * the driver may take either route for any number of x rows (batch invariance).
 */
#ifndef STRATA_KERNELS_Q8_H
#define STRATA_KERNELS_Q8_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

#define Q8_BLOCK 32

/* y (m, ·) [:, 0..nw) = x (m, k) · W (nw, k)ᵀ (+ bias) for W quantized: q rows ldq
 * bytes apart, scale rows lds apart (both from the block's first W row). */
typedef struct q8_block {
    float *y;
    size_t ldy;
    const float *x;
    size_t ldx;
    const int8_t *q;
    const uint16_t *s;
    size_t ldq, lds;
    const float *bias;      /* (nw) or NULL */
    int m, nw, k;
} q8_block;

typedef struct q8_isa {
    const kernel_isa *fp32; /* the fp32 path whose summation order this one follows */
    void (*block)(const q8_block *b);
    /* dst (rows, k) fp32 = q·s of rows W rows (q rows ldq apart, scales lds apart) */
    void (*dequant)(float *dst, const int8_t *q, const uint16_t *s, size_t ldq, size_t lds, int rows, int k);
} q8_isa;

extern const q8_isa q8_portable;
extern const q8_isa q8_avx2;
extern const q8_isa q8_avx512;

/* The Q8 path that sums like `isa` (NULL: none; never for the three built-in ones). */
const q8_isa *q8_isa_for(const kernel_isa *isa);

static inline size_t q8_padded(int cols) { return ((size_t)cols + Q8_BLOCK - 1) / Q8_BLOCK * Q8_BLOCK; }
static inline float q8_scale_f32(uint16_t s)
{
    union { uint32_t u; float f; } v = {.u = (uint32_t)s << 16};
    return v.f;
}

/* W rows a single x row (decode) takes at a time in the x86 kernels: 4 independent
 * FMA chains (one row alone is bound by the FMA latency: 9 GB/s of int8 on one Zen 4
 * thread at 2.6 GHz against 14.8 GB/s with 4 rows; 2 threads 16 vs 22-25 GB/s). */
#define Q8_NR1 4
/* The longest rows for which that walk prefetches the next tile. */
#define Q8_PF_MAX_K 2048

/* The x86 kernels' walk for a single x row (decode): the thread's share of W in
 * order, Q8_NR1 adjacent rows at a time (rows are contiguous: ldq == padded k).
 * Short rows: Q8_NR1 rows of <= 2 KiB read in lockstep are streams too short for
 * the hardware prefetcher, so the next tile (and its scales) is fetched at the rate
 * this one consumes its own rows: on one Zen 4 thread, K = 1024: 8 → 21 GB/s,
 * K = 2048: 9.7 → 18.6; K = 4096 gains nothing (12.4 vs 10.3), so longer rows are
 * left alone. Expects b and tile(b, r0, j0, M, N, pf, pf_step) in scope. */
#define Q8_DECODE_WALK()                                                                        \
    do {                                                                                        \
        int r0 = 0, j0 = 0, pf_on = b->k >= 32 && b->k <= Q8_PF_MAX_K;                          \
        for (; j0 + Q8_NR1 <= b->nw; j0 += Q8_NR1) {                                            \
            int ahead = pf_on && j0 + 2 * Q8_NR1 <= b->nw; /* the next tile, within the block */ \
            if (ahead)                                                                          \
                prefetch_span((const char *)(b->s + ((size_t)j0 + Q8_NR1) * b->lds),            \
                              (size_t)Q8_NR1 * b->lds * 2);                                     \
            tile(b, r0, j0, 1, Q8_NR1, ahead ? (const char *)(b->q + ((size_t)j0 + Q8_NR1) * b->ldq) : NULL, \
                 ahead ? (size_t)Q8_NR1 * 32 : 0);                                              \
        }                                                                                       \
        for (; j0 < b->nw; j0++)                                                                \
            tile(b, r0, j0, 1, 1, NULL, 0);                                                     \
    } while (0)

/* The x86 kernels' walk over a block of a few x rows (batched decode): W tiles of NR
 * rows outer, so W leaves DRAM once per step, every x tile of MR rows over a W
 * tile before the next, whose bytes are prefetched meanwhile in equal shares (x
 * tiles outer streamed W once per x tile: 16 sessions reached 2.6–2.9× one
 * session's tokens/s that way). Expects b, MR, NR and a TILE_ROW(M) case list for
 * tile(b, r0, j0, M, N, pf, pf_step) in scope. */
#define Q8_BATCH_WALK()                                                                         \
    do {                                                                                        \
        int r_tiles = (b->m + MR - 1) / MR, k_blocks = (b->k + 31) / 32;                        \
        size_t share = ((size_t)NR * b->ldq + (size_t)r_tiles - 1) / (size_t)r_tiles;           \
        size_t pf_step = (share + (size_t)k_blocks - 1) / (size_t)k_blocks;                     \
        for (int j0 = 0; j0 < b->nw; j0 += NR) {                                                \
            int nr = b->nw - j0 < NR ? b->nw - j0 : NR;                                         \
            const char *pf = (const char *)(b->q + (size_t)(j0 + nr) * b->ldq);                 \
            for (int r0 = 0; r0 < b->m; r0 += MR, pf += share) {                                \
                int mr = b->m - r0 < MR ? b->m - r0 : MR;                                       \
                switch (mr * 8 + nr) { TILE_ROW(4) TILE_ROW(3) TILE_ROW(2) TILE_ROW(1) }        \
            }                                                                                   \
        }                                                                                       \
    } while (0)

/* ---------------------------------------------------------------- int8 compute
 *
 * The int8 compute mode (strata_load_opts.compute = "int8", with int8 weights; opt-in):
 * x is quantized too, and the dot products run on integers (AVX512_VNNI VPDPBUSD).
 *
 * x, per row and block b of Q8_BLOCK columns (the row zero-padded to whole blocks):
 *   amax = max |x_i|;  xs_b = amax / 127;  xq_i = rint(x_i · (127 / amax)) in
 *   [-127, 127] (0 where amax = 0 or 127 / amax overflows; where a value is not
 *   finite, xs_b = NaN and the outputs it feeds become NaN, as in fp32);
 *   xc_b = -128 · Σ xq_i.
 * Output (r, j): acc = 0, then for b = 0, 1, …:
 *   acc = fma((float)isum_b, sw_b · xs_b, acc),  isum_b = Σ_i q_ji · xq_i  (exact)
 * then + bias. The integer sums are exact whatever their order, and the fp32 steps
 * happen in block order, so every path and every split gives the same bits (the
 * portable kernel below is the reference the VNNI one equals bit for bit).
 *
 * W in panels (ST_I8_PANELS): panel g holds rows 32g .. 32g+31 and is nb blocks of
 * Q8P_BLOCK_BYTES: the block's 32 bf16 scales (row order), then 8 quads — quad u
 * holds columns 32b+4u .. 32b+4u+3 of the 32 rows, 4 bytes a row, each q + 128
 * (VPDPBUSD's unsigned operand; xc_b takes the 128 back off). Rows past the end
 * have q = 0 and scale 0. */
#define Q8P_ROWS 32
#define Q8P_QUAD_BYTES (Q8P_ROWS * 4)
#define Q8P_BLOCK_BYTES (Q8P_ROWS * 2 + 8 * Q8P_QUAD_BYTES)

/* Where the byte of row r (of its panel) and column c (of its block) sits in a block. */
static inline size_t q8p_byte(int r, int c)
{
    return (size_t)(Q8P_ROWS * 2 + (c / 4) * Q8P_QUAD_BYTES + r * 4 + c % 4);
}

/* Bytes of W [rows, cols] in panels. */
size_t q8_panels_bytes(int rows, int cols);
/* Rows [r0, r1) of a W quantized by q8_quantize (q and scales at row r0, rows of
 * q8_padded(cols) bytes) into the panels at dst (rows absolute; dst starts zeroed). */
void q8_panels_pack(uint8_t *dst, const int8_t *q, const uint16_t *scales, int rows, int cols, int r0, int r1);
/* Rows [r0, r1) of W [rows, cols] stored as `dtype` (src at row 0) quantized
 * (q8_quantize) and packed into the panels at dst, both split over the CPUs. */
strata_status q8_quantize_panels(const void *src, st_dtype dtype, int rows, int cols, int r0, int r1, uint8_t *dst,
                                 const char *what, strata_error *err);

/* One row of x (k values) quantized: xq (q8_padded(k)) int8, xs and xc (blocks). */
typedef void (*q8_quantize_x_fn)(const float *x, int k, int8_t *xq, float *xs, int32_t *xc);
void q8_quantize_x_portable(const float *x, int k, int8_t *xq, float *xs, int32_t *xc);
/* The AVX-512 quantizer where this CPU runs it (the portable code's bits), else NULL. */
q8_quantize_x_fn q8_quantize_x_kernel(void);

/* y (m, ·) [:, 0..nw) = x · Wᵀ (+ bias) in the int8 compute mode, W in panels from
 * the block's first panel; x quantized rows ldx bytes apart (ldx = q8_padded(k)),
 * its xs and xc rows lds apart. pf_after: the panel to prefetch once done, or NULL. */
typedef struct q8p_block {
    float *y;
    size_t ldy;
    const int8_t *xq;
    const float *xs;
    const int32_t *xc;
    size_t ldx, lds;
    const uint8_t *w;
    const float *bias;
    int m, nw, k;
    const void *pf_after;
} q8p_block;

void q8_panels_block_portable(const q8p_block *b);
/* The VNNI kernel where this CPU runs it (AVX512_VNNI), else NULL. */
void (*q8_panels_kernel(void))(const q8p_block *b);
/* Whether the int8 compute mode runs here: the VNNI kernel on the AVX-512 path. */
int q8_compute_supported(void);

/* Quantize W [rows, cols] stored as `dtype` (F32, BF16, F16) into q (rows, q8_padded(cols))
 * and scales (rows, q8_padded(cols) / Q8_BLOCK). Fails (STRATA_E_WEIGHTS, naming `what`)
 * on a non-finite weight. */
strata_status q8_quantize(const void *src, st_dtype dtype, int rows, int cols, int8_t *q, uint16_t *scales,
                          const char *what, strata_error *err);
/* The same for rows [r0, r1) only (src, q and scales still point at row 0). */
strata_status q8_quantize_rows(const void *src, st_dtype dtype, int r0, int r1, int cols, int8_t *q,
                               uint16_t *scales, const char *what, strata_error *err);

/* Columns [ja, jb) of y (n, W.rows) = x (n, W.cols) · Wᵀ (+ bias) for W quantized
 * (dtype ST_I8), on the Q8 path that sums like isa: matmul's thread split calls
 * this for each thread's W rows; panel (panel_floats) is the thread's scratch. */
void q8_matmul_rows(float *y, const float *x, int n, const strata_mat *w, const kernel_isa *isa, int ja, int jb,
                    float *panel, size_t panel_floats);

#endif
