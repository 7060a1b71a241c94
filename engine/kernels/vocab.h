/*
 * vocab.h — the passes the sampler makes over a vocabulary's logits or weights
 * (sampler.c, rank.c), one set per kernel path (kernel_isa.vocab), so that they run
 * as wide as the CPU allows and follow $STRATA_KERNEL like the matmuls. One source
 * (vocab_impl.h) is compiled three times in vocab.c with GCC vector extensions of
 * the path's width: 64 bytes (AVX-512), 32 (AVX2), 16 (portable). A 64-byte vector
 * in an AVX2 function had its comparisons lowered lane by lane by GCC 12: 4× slower.
 * Results do not depend on the path except where a comment says so.
 */
#ifndef STRATA_KERNELS_VOCAB_H
#define STRATA_KERNELS_VOCAB_H

#include <stdint.h>

#define VOCAB_BLOCK 1024    /* ids per partial sum of sum_exp (the draw's walk skips blocks) */
#define VOCAB_FLOORS 6      /* thresholds floor_stats sums above at once */
#define VOCAB_GROUPS 2048   /* count_groups' groups, and a spare one after them */
#define VOCAB_COPIES 4      /* counters per group, used in turn (rank.c says why) */

typedef struct vocab_kernels {
    /* The largest of n values (NaNs never win; -FLT_MAX when all are NaN). */
    float (*max)(const float *v, int n);
    /* The first i with v[i] == x, or -1. */
    int (*first_equal)(const float *v, int n, float x);
    /* The first i >= from with v[i] > t, or n. */
    int (*next_above)(const float *v, int from, int n, float t);
    /* Σ e^((v[i] - mx)·scale), each term clamped to [~2^-126, 1]: the sum of each
     * block of VOCAB_BLOCK ids into block_mass (when given), the terms into out
     * (when given; may be v). fp32 partial sums in lanes, so the sums (not the
     * terms) depend on the path's width. */
    double (*sum_exp)(const float *v, int n, float mx, float scale, float *out, double *block_mass);
    /* For each of the VOCAB_FLOORS thresholds t[f]: how many e[i] >= t[f], and their
     * sum (fp32 lanes per block, blocks in double). */
    void (*floor_stats)(const float *e, int n, const float *t, int *count, double *mass);
    /* Over the e[i] >= floor: counts and sums into count / mass, slot
     * group·VOCAB_COPIES + copy, group = min((key - base) >> shift, VOCAB_GROUPS - 1)
     * of the weight's bits. Some of the others land in the spare group VOCAB_GROUPS,
     * which means nothing (it keeps branches off the weights). */
    void (*count_groups)(const float *e, int n, float floor, uint32_t base, int shift, uint32_t *count,
                         double *mass);
    /* The i whose weight's bits k have k - lo < span (unsigned), ascending, into
     * out; how many. */
    int (*take_range)(const float *e, int n, uint32_t lo, uint32_t span, int32_t *out);
} vocab_kernels;

extern const vocab_kernels vocab_avx512, vocab_avx2, vocab_portable;

#endif
