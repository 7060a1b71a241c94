/*
 * isa.h — the per-instruction-set kernels behind matmul and the SSM scan, and the
 * run-time choice between them. Each ISA file compiles its functions with a
 * target attribute, so the rest of the build stays baseline x86-64.
 *
 * Summation order (the batch-invariance contract): output element (r, j) of a
 * block is the dot product of x row r and W row j accumulated along k in LANES
 * vector lanes (lane i takes k ≡ i mod LANES, in increasing k; the tail is
 * zero-padded to a whole vector), then reduced by a fixed tree: 16 → 8 lanes
 * (i + i+8, AVX-512 only), 8 → 4 (i + i+4), 4 → 2 (i + i+2), 2 → 1, then + bias.
 * The order depends neither on the block's shape nor on where the element sits
 * in it, so any split of the work over rows, tiles or threads gives the same bits.
 * The paths differ from each other by rounding only: portable multiplies then adds,
 * AVX2/AVX-512 fuse (FMA), and AVX-512 uses 16 lanes. A machine uses one path.
 *
 * The bf16 compute mode (opt-in, strata_model_set_compute) rounds x to BF16 before
 * every matmul with BF16 weights. On W as stored the rounded x goes through
 * `block`; on panels (below), through block_panels (VDPBF16PS) where the CPU has
 * AVX512_BF16, else block_panels_f32. Either way the order is again fixed by the
 * path alone.
 *
 * Where the path has panel kernels (AVX-512), every BF16 matmul weight is
 * repacked once, at load, into panels (dtype ST_BF16_PANELS): panel g holds rows
 * 64g .. 64g+63, and for each pair p of columns (2p, 2p+1), in increasing p, the 64
 * rows' pairs side by side — element [g][p][r][e] = W[64g + r][2p + e]; rows past
 * the end and column K of an odd K are zero. One vector load is then 16 rows' pairs:
 * no lane reductions, one fp32 lane per output. With x in fp32 (the default mode),
 * each pair is widened exactly into W[k] and W[k+1] of 16 rows, each times one
 * broadcast x[k] by FMA: output (i, j) is acc = fma(x[k], w[k], acc) for k = 0, 1, …
 * With x in BF16 (the bf16 mode, AVX512_BF16), VDPBF16PS multiplies them with one
 * broadcast x pair: acc += x[2p]·w[2p] + x[2p+1]·w[2p+1] for p = 0, 1, … Either way
 * K goes in chunks whose partial sums wait in y, exactly, then + bias — again the
 * same whatever the block's shape, the thread split or the batch.
 */
#ifndef STRATA_KERNELS_ISA_H
#define STRATA_KERNELS_ISA_H

#include <stddef.h>

#include "model/safetensors.h"

/* y (m, ·) [:, 0..nw) = x (m, k) · W (nw, k)ᵀ (+ bias), W rows `ldw` elements apart. */
typedef struct mm_block {
    float *y;
    size_t ldy;
    const float *x;         /* (m, ldx), or NULL when xb is given */
    const uint16_t *xb;     /* (m, ldx) x in BF16 for block_panels, else NULL */
    size_t ldx;
    const void *w;
    st_dtype dtype;         /* ST_F32, ST_BF16 or ST_F16 */
    size_t ldw;
    const float *bias;      /* (nw) or NULL */
    int m, nw, k;
    const void *pf_after;   /* panels: the panel to prefetch after the block's last, or NULL */
} mm_block;

typedef struct kernel_isa {
    const char *name;       /* "avx512", "avx2", "portable" */
    int lanes, mr, nr;      /* accumulator lanes; register tile rows of x × rows of W */
    void (*block)(const mm_block *b);
    /* The same over W in panels (ST_BF16_PANELS, w at the block's first panel)
     * with x in BF16 (xb set, rows ldx = K rounded up to even apart): NULL where
     * the ISA has no BF16 dot product; usable only where kernel_bf16_dot says the
     * CPU has it. */
    void (*block_panels)(const mm_block *b);
    /* The same panels times x in fp32 (x set, ldx = K): the default mode's kernel
     * for BF16 weights where the path has it (AVX-512), else NULL. */
    void (*block_panels_f32)(const mm_block *b);
    /* The bf16 mode's rounding of x (matmul.c: round_bf16, the same bits) over the
     * leading whole vectors of n values; returns how many it did. NULL: none. */
    size_t (*to_bf16)(uint16_t *dst, const float *src, size_t n);
    /* dst (n) = fp32 of n stored elements (exact for every dtype) */
    void (*widen)(float *dst, const void *src, st_dtype dtype, size_t n);
    /* v[i] = silu(v[i]) over n values; y[i] *= silu(z[i]) — activation.c, whose
     * paths all give the same bits */
    void (*silu)(float *v, size_t n);
    void (*silu_mul)(float *y, const float *z, size_t n);
    /* o[c] = b[c] + Σ_k wT[k][c]·win[k][c] (taps in increasing k) for c in [c0, c1):
     * the Mamba conv — conv.c, whose paths all give the same bits */
    void (*conv_taps)(float *restrict o, const float *restrict b, const float *restrict wT,
                      const float *const *win, size_t cd, int K, int c0, int c1);
    /* p[t] = (q · k_t) · scale for n keys k_t (rows of hd, hd apart); and
     * z[i] += Σ_t p[t]·v_t[i] over n values in increasing t — fused multiply-adds in
     * attend.c's order, whose paths all give the same bits */
    void (*attn_scores)(float *p, const float *q, const float *k, int n, int hd, float scale);
    void (*attn_mix)(float *z, const float *p, const float *v, int n, int hd);
    /* p[0..n) ← softmax(p) — activation.c, whose paths all give the same bits */
    void (*softmax)(float *p, int n);
    /* One Mamba head over n tokens from state S (P, N):
     *   S = a_t·S + (dt_t·x_t) ⊗ B_t ;  y_t = S·C_t + Dh·x_t
     * x rows are ldx apart, B/C rows ldbc apart, y rows ldy apart; dt and a (n). */
    void (*ssm_head)(float *S, int P, int N, int n, const float *x, size_t ldx, const float *B,
                     const float *C, size_t ldbc, const float *dt, const float *a, float Dh, float *y,
                     size_t ldy);
    /* The same on a state kept in BF16, rounded after every token (kernels.h:
     * ssm_head_bf16), fused — rows widened into registers, rounded there — for the
     * shapes the path takes (returns 1), else 0 and nothing done. NULL: none; usable
     * only where cpu_has_bf16(). */
    int (*ssm_head_bf16)(uint16_t *S, int P, int N, int n, const float *x, size_t ldx, const float *B,
                         const float *C, size_t ldbc, const float *dt, const float *a, float Dh, float *y,
                         size_t ldy);
    /* The sampler's passes over a vocabulary, at the path's vector width (vocab.h). */
    const struct vocab_kernels *vocab;
} kernel_isa;

/* activation.c's SiLU, one pair per path */
void silu_portable(float *v, size_t n);
void silu_mul_portable(float *y, const float *z, size_t n);
void silu_avx2(float *v, size_t n);
void silu_mul_avx2(float *y, const float *z, size_t n);
void silu_avx512(float *v, size_t n);
void silu_mul_avx512(float *y, const float *z, size_t n);
void softmax_portable(float *p, int n);
void softmax_avx2(float *p, int n);
void softmax_avx512(float *p, int n);

/* conv.c's conv_taps, one per path */
void conv_taps_portable(float *restrict o, const float *restrict b, const float *restrict wT,
                        const float *const *win, size_t cd, int K, int c0, int c1);
void conv_taps_avx2(float *restrict o, const float *restrict b, const float *restrict wT, const float *const *win,
                    size_t cd, int K, int c0, int c1);
void conv_taps_avx512(float *restrict o, const float *restrict b, const float *restrict wT,
                      const float *const *win, size_t cd, int K, int c0, int c1);

/* attend.c's attn_scores and attn_mix, per path */
void attn_scores_portable(float *p, const float *q, const float *k, int n, int hd, float scale);
void attn_mix_portable(float *z, const float *p, const float *v, int n, int hd);
void attn_scores_avx2(float *p, const float *q, const float *k, int n, int hd, float scale);
void attn_mix_avx2(float *z, const float *p, const float *v, int n, int hd);
void attn_mix_avx512(float *z, const float *p, const float *v, int n, int hd);

extern const kernel_isa kernel_portable;
extern const kernel_isa kernel_avx2;
extern const kernel_isa kernel_avx512;

/* The fastest path this CPU supports; $STRATA_KERNEL=portable|avx2|avx512 asks for
 * another one (granted only if the CPU supports it). */
const kernel_isa *kernel_select(void);
/* A path by name if this CPU supports it, else NULL. */
const kernel_isa *kernel_by_name(const char *name);
/* k->block_panels if this CPU runs it, else NULL. */
void (*kernel_bf16_dot(const kernel_isa *k))(const mm_block *b);
/* CPUID features, asked once (select.c). */
int cpu_has_bf16(void);
int cpu_has_avx2(void);

/* The panel layout: rows per panel, elements of W packed, and the packing of rows
 * [r0, r1) of W (BF16, (rows, cols)) into dst, which starts zeroed (matmul.c). */
#define BF16_PANEL_ROWS 64
size_t bf16_panels_elems(int rows, int cols);
/* Where W[j][k] sits in the panels of a W with `pairs` = ceil(cols / 2). */
static inline size_t bf16_panel_index(size_t pairs, int j, size_t k)
{
    return ((size_t)(j / BF16_PANEL_ROWS) * pairs + k / 2) * 2 * BF16_PANEL_ROWS + (size_t)(j % BF16_PANEL_ROWS) * 2 +
           (k & 1);
}
void bf16_panels_pack(uint16_t *dst, const uint16_t *w, int rows, int cols, int r0, int r1);

#endif
