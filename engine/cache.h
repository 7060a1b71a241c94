/*
 * cache.h — the unified per-sequence state, as the layers see it.
 *
 * Layout (fp32, but for the SSM state and the KV of a cache made in a faster
 * compute mode, bf16 or int8, which keeps them in BF16):
 *   conv[i]  (K-1, conv_dim)       Mamba layer i's last K-1 pre-conv xBC rows, oldest first
 *   ssm[i]   (H, P, N)             Mamba layer i's SSM state: fp32, or BF16 (ssm_bf16), as
 *                                  NVIDIA's code keeps it in the model's dtype; a step
 *                                  computes in fp32
 *   blocks   KV in blocks of KV_BLOCK positions, each (n_attn, 2, n_kv, KV_BLOCK, hd):
 *            one head's keys are sequential within a block; fp32, or BF16 (kv_bf16:
 *            half the memory and the reads of a long history), widened exactly where
 *            attention reads them
 *
 * Blocks are reference-counted and shared between a cache and its copies (forks,
 * checkpoints): a fork copies only the fixed-size recurrent state. Invariants: a
 * block is written only while its count is 1 — cache_reserve copies a shared block
 * before the step that would append into it (copy-on-write); caches sharing a block
 * keep KV alike (a copy takes its source's kv_bf16, whatever the mode is by then).
 */
#ifndef STRATA_CACHE_H
#define STRATA_CACHE_H

#include "model/model.h"

#define KV_BLOCK 64

typedef struct kv_block {
    int refs;               /* atomic */
    _Alignas(64) unsigned char data[];  /* float, or uint16_t where kv_bf16; 64-byte aligned */
} kv_block;

struct strata_cache {
    const strata_model *model;
    int n_tokens;
    float **conv;           /* (n_mamba) */
    void **ssm;             /* (n_mamba) float, or uint16_t where ssm_bf16 */
    int ssm_bf16;
    int kv_bf16;            /* the KV blocks hold BF16 */
    void *ssm_all;          /* (n_mamba, H, P, N): ssm[i] point into it (core/huge.h) */
    size_t ssm_all_bytes;   /* its huge_zalloc length */
    kv_block **blocks;      /* (n_blocks) */
    int n_blocks, cap_blocks;
};

/* Make positions [n_tokens, n_total) writable (done before a step changes anything). */
strata_status cache_reserve(strata_cache *c, int n_total, strata_error *err);

/* Bytes of one state element: fp32, or BF16 where the cache keeps that part so. */
static inline size_t cache_elem_size(int bf16)
{
    return bf16 ? sizeof(uint16_t) : sizeof(float);
}

/* Row t of head h of attention layer j's keys (kv 0) or values (kv 1): hd floats,
 * or hd BF16 values where kv_bf16. */
static inline void *cache_kv_row(const strata_cache *c, int j, int kv, int h, int t)
{
    const strata_model_info *m = &c->model->cfg.info;
    size_t hd = (size_t)m->head_dim, nkv = (size_t)m->kv_heads;
    size_t row = (((size_t)j * 2 + (size_t)kv) * nkv + (size_t)h) * KV_BLOCK + (size_t)(t % KV_BLOCK);
    return c->blocks[t / KV_BLOCK]->data + row * hd * cache_elem_size(c->kv_bf16);
}

/* That row as fp32 (exact), and set from fp32 (rounded where kv_bf16; in: any alignment). */
void cache_kv_get(const strata_cache *c, int j, int kv, int h, int t, float *out);
void cache_kv_put(strata_cache *c, int j, int kv, int h, int t, const void *in);

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
/* model's state_bytes_fixed / _per_token (strata_model_info): a cache made in its
 * current compute mode. */
void cache_set_sizes(strata_model *model);
/* Bytes of one copy of the recurrent state (conv + SSM of every Mamba layer). */
uint64_t cache_recurrent_bytes(const strata_model *model);
/* Whether two caches share the KV block holding position t (tests, accounting). */
int cache_shares_block(const strata_cache *a, const strata_cache *b, int t);

#endif
