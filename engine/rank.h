/*
 * rank.h — positions in the order of a vocabulary's tokens by weight (weights
 * descending, ties by id ascending), found without sorting it. The sampler's cuts
 * (top_k, top_p) and its draw are each "the first token of that order at which a
 * running count or mass reaches x". One pass counts and sums the tokens per group
 * (a range of weights); each question then walks the groups and refines only the
 * group where x falls. A qsort of a flat 131072-token vocabulary had taken 10–20 ms
 * a token.
 */
#ifndef STRATA_RANK_H
#define STRATA_RANK_H

#include <stdint.h>

#include "kernels/vocab.h"

/* A token's place in the order, with what the order holds up to and including it. */
typedef struct rank_pos {
    int32_t id;             /* -1: none (an empty set) */
    uint32_t key;           /* its weight's bits (order-preserving for weights >= 0) */
    int64_t count;          /* tokens from the start of the order through it */
    double mass;            /* their weights' sum */
} rank_pos;

typedef enum rank_by {
    RANK_COUNT,             /* the running count reaches x */
    RANK_MASS_REACH,        /* the running mass reaches x (>=) */
    RANK_MASS_PASS,         /* the running mass passes x (>) */
} rank_by;

/* The tokens whose weight is at least a floor, grouped by weight; and the work
 * space to refine a group. */
typedef struct rank_set {
    const vocab_kernels *vk; /* the passes over the vocabulary */
    const float *e;         /* (n) the weights, by id: in [0, 1], not NaN */
    int n;
    uint32_t base;          /* the floor's key (the set: e >= floor): group g holds keys
                               base + [g, g+1) << shift */
    int shift;
    uint32_t *count;        /* (VOCAB_GROUPS) tokens per group (while counting: VOCAB_COPIES each) */
    double *mass;           /* (VOCAB_GROUPS) their weights' sum (the same) */
    int32_t *members;       /* (n) the tokens of the group being refined */
    uint32_t *sub_count;    /* (RANK_SUB) per bucket of the finer bits */
    double *sub_mass;
} rank_set;

int rank_set_init(rank_set *r, int vocab, const vocab_kernels *vk); /* 0: out of memory */
void rank_set_free(rank_set *r);

/* The set of tokens v < n with e[v] >= floor (weights in [0, 1], not NaN). */
void rank_set_build(rank_set *r, const float *e, int n, float floor);

/* Over the set, restricted to tokens at or before *limit in the order when limit is
 * not NULL: the first token at which the running quantity `by` reaches x, where x
 * is a fraction of the restricted set's mass when of_set. If rounding leaves x
 * unreached, the last token of the restricted set. */
rank_pos rank_find(rank_set *r, const rank_pos *limit, rank_by by, double x, int of_set);

#endif
