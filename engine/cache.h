/*
 * cache.h — the unified per-sequence state, as the layers see it.
 *
 * Layout (fp32, but for the SSM state of a bf16-mode cache):
 *   conv[i]  (K-1, conv_dim)       Mamba layer i's last K-1 pre-conv xBC rows, oldest first
 *   ssm[i]   (H, P, N)             Mamba layer i's SSM state: fp32, or BF16 in a cache made
 *                                  in the bf16 compute mode (ssm_bf16), as NVIDIA's code
 *                                  keeps it in the model's dtype; a step computes in fp32
 *   blocks   KV in blocks of KV_BLOCK positions, each (n_attn, 2, n_kv, KV_BLOCK, hd):
 *            one head's keys are sequential within a block
 *
 * Blocks are reference-counted and shared between a cache and its copies (forks,
 * checkpoints): a fork copies only the fixed-size recurrent state. Invariant: a
 * block is written only while its count is 1 — cache_reserve copies a shared block
 * before the step that would append into it (copy-on-write).
 */
#ifndef STRATA_CACHE_H
#define STRATA_CACHE_H

#include "model/model.h"

#define KV_BLOCK 64

typedef struct kv_block {
    int refs;               /* atomic */
    float data[];
} kv_block;

struct strata_cache {
    const strata_model *model;
    int n_tokens;
    float **conv;           /* (n_mamba) */
    void **ssm;             /* (n_mamba) float, or uint16_t where ssm_bf16 */
    int ssm_bf16;
    void *ssm_all;          /* (n_mamba, H, P, N): ssm[i] point into it (core/huge.h) */
    size_t ssm_all_bytes;   /* its huge_zalloc length */
    kv_block **blocks;      /* (n_blocks) */
    int n_blocks, cap_blocks;
};

/* Make positions [n_tokens, n_total) writable (done before a step changes anything). */
strata_status cache_reserve(strata_cache *c, int n_total, strata_error *err);

static inline float *cache_kv_row(const strata_cache *c, int j, int kv, int h, int t)
{
    const strata_model_info *m = &c->model->cfg.info;
    size_t hd = (size_t)m->head_dim, nkv = (size_t)m->kv_heads;
    return c->blocks[t / KV_BLOCK]->data +
           ((((size_t)j * 2 + (size_t)kv) * nkv + (size_t)h) * KV_BLOCK + (size_t)(t % KV_BLOCK)) * hd;
}

/* Row t of head h of attention layer j's keys / values. */
static inline float *cache_k(const strata_cache *c, int j, int h, int t)
{
    return cache_kv_row(c, j, 0, h, t);
}
static inline float *cache_v(const strata_cache *c, int j, int h, int t)
{
    return cache_kv_row(c, j, 1, h, t);
}

/* Copies in the public layouts of api.md. */
void cache_copy_ssm(const strata_cache *c, int i, float *out);   /* (H, P, N) */
/* Set Mamba layer i's SSM state from fp32 (rounded in a BF16 cache). */
void cache_set_ssm(strata_cache *c, int i, const void *in);  /* fp32 values, any alignment */
void cache_copy_conv(const strata_cache *c, int i, float *out);  /* (conv_dim, K-1) */
int cache_copy_kv(const strata_cache *c, int j, int keys, float *out); /* (T, n_kv, hd); returns T */
/* A cache with src's first `position` tokens of KV shared and a zero recurrent state. */
strata_status cache_share_prefix(const strata_cache *src, int position, strata_cache **out, strata_error *err);
/* dst's conv and SSM state ← src's (converted where one keeps BF16 and the other not). */
void cache_copy_recurrent(strata_cache *dst, const strata_cache *src);
/* Bytes of one copy of the recurrent state (conv + SSM of every Mamba layer). */
uint64_t cache_recurrent_bytes(const strata_model *model);
/* Whether two caches share the KV block holding position t (tests, accounting). */
int cache_shares_block(const strata_cache *a, const strata_cache *b, int t);

#endif
