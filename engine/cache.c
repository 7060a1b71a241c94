/*
 * cache.c — the unified per-sequence state (see cache.h): creation, growth of the
 * K/V history, reset, and copies in the public layouts.
 */
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "core/error.h"
#include "core/huge.h"
#include "kernels/kernels.h"

/* Whether a cache made now keeps its SSM state and KV in BF16: in the faster
 * compute modes. */
static int state_bf16(const strata_model *model)
{
    return model->compute_bf16 || model->compute_int8;
}

static size_t conv_elems(const strata_model_info *m)
{
    return (size_t)(m->conv_kernel - 1) * (size_t)m->conv_dim;
}

static size_t ssm_elems(const strata_model_info *m)
{
    return (size_t)m->d_inner * (size_t)m->ssm_state_size;
}

static size_t ssm_bytes(const strata_cache *c)
{
    return ssm_elems(&c->model->cfg.info) * cache_elem_size(c->ssm_bf16);
}

/* Bytes of the recurrent state (conv + SSM of every Mamba layer), and of one
 * position's K and V, with the SSM state and the KV in BF16 or not. */
static uint64_t fixed_bytes(const strata_model *model, int ssm_bf16)
{
    const strata_model_info *m = &model->cfg.info;
    return (uint64_t)model->n_mamba * (sizeof(float) * conv_elems(m) + cache_elem_size(ssm_bf16) * ssm_elems(m));
}

static uint64_t token_bytes(const strata_model *model, int kv_bf16)
{
    const strata_model_info *m = &model->cfg.info;
    return (uint64_t)model->n_attn * 2 * (uint64_t)m->kv_heads * (uint64_t)m->head_dim * cache_elem_size(kv_bf16);
}

/* Element k of layer i's SSM state as fp32, and set from fp32. */
static float ssm_get(const strata_cache *c, int i, size_t k)
{
    return c->ssm_bf16 ? bf16_widen(((const uint16_t *)c->ssm[i])[k]) : ((const float *)c->ssm[i])[k];
}

static void ssm_put(strata_cache *c, int i, size_t k, float v)
{
    if (c->ssm_bf16)
        ((uint16_t *)c->ssm[i])[k] = bf16_round_state(v);
    else
        ((float *)c->ssm[i])[k] = v;
}

/* Bytes of a KV block's data: KV_BLOCK positions. */
static size_t block_bytes(const strata_cache *c)
{
    return KV_BLOCK * (size_t)token_bytes(c->model, c->kv_bf16);
}

void cache_kv_get(const strata_cache *c, int j, int kv, int h, int t, float *out)
{
    const void *row = cache_kv_row(c, j, kv, h, t);
    int hd = c->model->cfg.info.head_dim;
    if (!c->kv_bf16)
        memcpy(out, row, sizeof(float) * (size_t)hd);
    else
        for (int i = 0; i < hd; i++)
            out[i] = bf16_widen(((const uint16_t *)row)[i]);
}

void cache_kv_put(strata_cache *c, int j, int kv, int h, int t, const void *in)
{
    void *row = cache_kv_row(c, j, kv, h, t);
    int hd = c->model->cfg.info.head_dim;
    if (!c->kv_bf16) {
        memcpy(row, in, sizeof(float) * (size_t)hd);
        return;
    }
    for (int i = 0; i < hd; i++) {
        float v;
        memcpy(&v, (const char *)in + sizeof v * (size_t)i, sizeof v);
        ((uint16_t *)row)[i] = bf16_round(v);
    }
}

static void block_release(kv_block *b)
{
    if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(b);
}

static void release_blocks(strata_cache *c, int from)
{
    for (int i = from; i < c->n_blocks; i++)
        block_release(c->blocks[i]);
    c->n_blocks = from < c->n_blocks ? from : c->n_blocks;
}

void strata_cache_free(strata_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->model->n_mamba; i++)
        free(c->conv[i]);
    huge_free(c->ssm_all, c->ssm_all_bytes);
    release_blocks(c, 0);
    free(c->blocks);
    free(c->conv);
    free(c->ssm);
    free(c);
}

strata_status strata_cache_new(const strata_model *model, strata_cache **out, strata_error *err)
{
    *out = NULL;
    if (!model)
        return strata_fail(err, STRATA_E_INVALID, "no model");
    const strata_model_info *m = &model->cfg.info;
    strata_cache *c = calloc(1, sizeof *c);
    if (!c)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    c->model = model;
    c->ssm_bf16 = c->kv_bf16 = state_bf16(model);
    int ok = (c->conv = calloc((size_t)model->n_mamba + 1, sizeof *c->conv)) &&
             (c->ssm = calloc((size_t)model->n_mamba + 1, sizeof *c->ssm));
    /* on huge pages (core/huge.h): a 16-session decode step of the 470m shape
     * streams 192 MiB of it in and out, and its scan took 7–8 ms instead of 9.5 */
    if (ok && model->n_mamba > 0)
        ok = (c->ssm_all = huge_zalloc(ssm_bytes(c) * (size_t)model->n_mamba, &c->ssm_all_bytes)) != NULL;
    for (int i = 0; ok && i < model->n_mamba; i++) {
        c->ssm[i] = (char *)c->ssm_all + ssm_bytes(c) * (size_t)i;
        ok = (c->conv[i] = calloc(conv_elems(m) + 1, sizeof(float))) != NULL;
    }
    if (!ok) {
        if (c->conv && c->ssm) {
            strata_cache_free(c);
        } else {
            free(c->conv);
            free(c->ssm);
            free(c);
        }
        return strata_fail(err, STRATA_E_NOMEM, "out of memory allocating a cache");
    }
    *out = c;
    return STRATA_OK;
}

/* A writable block: fresh, or a private copy of a shared one. */
static kv_block *block_for_writing(const strata_cache *c, kv_block *shared)
{
    size_t bytes = block_bytes(c);
    kv_block *b = aligned_alloc(_Alignof(kv_block), (sizeof *b + bytes + 63) & ~(size_t)63);
    if (!b)
        return NULL;
    b->refs = 1;
    if (shared)
        memcpy(b->data, shared->data, bytes);
    return b;
}

strata_status cache_reserve(strata_cache *c, int n_total, strata_error *err)
{
    if (c->model->n_attn == 0 || n_total <= c->n_tokens)
        return STRATA_OK;
    int need = (n_total + KV_BLOCK - 1) / KV_BLOCK;
    if (need > c->cap_blocks) {
        int cap = c->cap_blocks ? c->cap_blocks : 4;
        while (cap < need)
            cap *= 2;
        kv_block **grown = realloc(c->blocks, sizeof *grown * (size_t)cap);
        if (!grown)
            return strata_fail(err, STRATA_E_NOMEM, "out of memory growing the KV cache to %d tokens", n_total);
        c->blocks = grown;
        c->cap_blocks = cap;
    }
    /* the block the next token lands in may be shared: copy it first */
    int first = c->n_tokens / KV_BLOCK;
    if (first < c->n_blocks && __atomic_load_n(&c->blocks[first]->refs, __ATOMIC_ACQUIRE) > 1) {
        kv_block *own = block_for_writing(c, c->blocks[first]);
        if (!own)
            return strata_fail(err, STRATA_E_NOMEM, "out of memory copying a shared KV block");
        block_release(c->blocks[first]);
        c->blocks[first] = own;
    }
    while (c->n_blocks < need) {
        kv_block *b = block_for_writing(c, NULL);
        if (!b)
            return strata_fail(err, STRATA_E_NOMEM, "out of memory growing the KV cache to %d tokens", n_total);
        c->blocks[c->n_blocks++] = b;
    }
    return STRATA_OK;
}

int cache_shares_block(const strata_cache *a, const strata_cache *b, int t)
{
    int i = t / KV_BLOCK;
    return i < a->n_blocks && i < b->n_blocks && a->blocks[i] == b->blocks[i];
}

void strata_cache_reset(strata_cache *c)
{
    const strata_model_info *m = &c->model->cfg.info;
    release_blocks(c, 0);
    for (int i = 0; i < c->model->n_mamba; i++) {
        memset(c->conv[i], 0, sizeof(float) * conv_elems(m));
        memset(c->ssm[i], 0, ssm_bytes(c));
    }
    c->n_tokens = 0;
}

int strata_cache_n_tokens(const strata_cache *c)
{
    return c->n_tokens;
}

void cache_set_sizes(strata_model *model)
{
    model->cfg.info.state_bytes_fixed = fixed_bytes(model, state_bf16(model));
    model->cfg.info.state_bytes_per_token = token_bytes(model, state_bf16(model));
}

uint64_t strata_cache_state_bytes(const strata_cache *c)
{
    return fixed_bytes(c->model, c->ssm_bf16) + token_bytes(c->model, c->kv_bf16) * (uint64_t)c->n_tokens;
}

void cache_copy_ssm(const strata_cache *c, int i, float *out)
{
    if (!c->ssm_bf16) {
        memcpy(out, c->ssm[i], ssm_bytes(c));
        return;
    }
    for (size_t k = 0, n = ssm_elems(&c->model->cfg.info); k < n; k++)
        out[k] = ssm_get(c, i, k);
}

void cache_set_ssm(strata_cache *c, int i, const void *in)
{
    if (!c->ssm_bf16) {
        memcpy(c->ssm[i], in, ssm_bytes(c));
        return;
    }
    for (size_t k = 0, n = ssm_elems(&c->model->cfg.info); k < n; k++) {
        float v;
        memcpy(&v, (const char *)in + 4 * k, 4);
        ssm_put(c, i, k, v);
    }
}

void cache_copy_conv(const strata_cache *c, int i, float *out)
{
    const strata_model_info *m = &c->model->cfg.info;
    int K1 = m->conv_kernel - 1;
    for (int t = 0; t < K1; t++)
        for (int ch = 0; ch < m->conv_dim; ch++)
            out[(size_t)ch * (size_t)K1 + (size_t)t] = c->conv[i][(size_t)t * (size_t)m->conv_dim + (size_t)ch];
}

int cache_copy_kv(const strata_cache *c, int j, int keys, float *out)
{
    const strata_model_info *m = &c->model->cfg.info;
    size_t hd = (size_t)m->head_dim;
    for (int t = 0; t < c->n_tokens; t++)
        for (int h = 0; h < m->kv_heads; h++)
            cache_kv_get(c, j, !keys, h, t, out + ((size_t)t * (size_t)m->kv_heads + (size_t)h) * hd);
    return c->n_tokens;
}

/* A new cache holding src's first `position` tokens of KV (shared blocks) and
 * a zero recurrent state for the caller to fill. */
strata_status cache_share_prefix(const strata_cache *src, int position, strata_cache **out, strata_error *err)
{
    *out = NULL;
    strata_cache *c;
    STRATA_TRY(strata_cache_new(src->model, &c, err));
    c->kv_bf16 = src->kv_bf16;  /* the blocks' own, whatever the mode is now */
    int used = (position + KV_BLOCK - 1) / KV_BLOCK;
    used = used < src->n_blocks ? used : src->n_blocks;
    if (used) {
        c->blocks = malloc(sizeof *c->blocks * (size_t)used);
        if (!c->blocks) {
            strata_cache_free(c);
            return strata_fail(err, STRATA_E_NOMEM, "out of memory");
        }
        c->cap_blocks = used;
    }
    for (int b = 0; b < used; b++) {
        __atomic_add_fetch(&src->blocks[b]->refs, 1, __ATOMIC_ACQ_REL);
        c->blocks[c->n_blocks++] = src->blocks[b];
    }
    c->n_tokens = position;
    *out = c;
    return STRATA_OK;
}

void cache_copy_recurrent(strata_cache *dst, const strata_cache *src)
{
    const strata_model_info *m = &src->model->cfg.info;
    for (int i = 0; i < src->model->n_mamba; i++) {
        memcpy(dst->conv[i], src->conv[i], sizeof(float) * conv_elems(m));
        if (dst->ssm_bf16 == src->ssm_bf16)
            memcpy(dst->ssm[i], src->ssm[i], ssm_bytes(src));
        else
            for (size_t k = 0; k < ssm_elems(m); k++)
                ssm_put(dst, i, k, ssm_get(src, i, k));
    }
}

uint64_t cache_recurrent_bytes(const strata_model *model)
{
    return model->cfg.info.state_bytes_fixed;
}

/* A fork: the recurrent state is copied, the KV blocks are shared. */
strata_status strata_cache_copy(const strata_cache *src, strata_cache **out, strata_error *err)
{
    STRATA_TRY(cache_share_prefix(src, src->n_tokens, out, err));
    cache_copy_recurrent(*out, src);
    return STRATA_OK;
}
