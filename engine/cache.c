/*
 * cache.c — the unified per-sequence state (see cache.h): creation, growth of the
 * K/V history, reset, and copies in the public layouts.
 */
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "core/error.h"

static size_t conv_elems(const strata_model_info *m)
{
    return (size_t)(m->conv_kernel - 1) * (size_t)m->conv_dim;
}

static size_t ssm_elems(const strata_model_info *m)
{
    return (size_t)m->d_inner * (size_t)m->ssm_state_size;
}

void strata_cache_free(strata_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->model->n_mamba; i++) {
        free(c->conv[i]);
        free(c->ssm[i]);
    }
    for (int j = 0; j < c->model->n_attn; j++) {
        free(c->k[j]);
        free(c->v[j]);
    }
    free(c->conv);
    free(c->ssm);
    free(c->k);
    free(c->v);
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
    int ok = (c->conv = calloc((size_t)model->n_mamba + 1, sizeof *c->conv)) &&
             (c->ssm = calloc((size_t)model->n_mamba + 1, sizeof *c->ssm)) &&
             (c->k = calloc((size_t)model->n_attn + 1, sizeof *c->k)) &&
             (c->v = calloc((size_t)model->n_attn + 1, sizeof *c->v));
    for (int i = 0; ok && i < model->n_mamba; i++)
        ok = (c->conv[i] = calloc(conv_elems(m) + 1, sizeof(float))) &&
             (c->ssm[i] = calloc(ssm_elems(m), sizeof(float)));
    if (!ok) {
        /* free() below walks n_mamba / n_attn entries: all NULL or allocated */
        if (c->conv && c->ssm && c->k && c->v) {
            strata_cache_free(c);
        } else {
            free(c->conv);
            free(c->ssm);
            free(c->k);
            free(c->v);
            free(c);
        }
        return strata_fail(err, STRATA_E_NOMEM, "out of memory allocating a cache");
    }
    *out = c;
    return STRATA_OK;
}

/* Move one attention layer's history into a buffer of capacity `cap`. */
static float *regrow(const strata_cache *c, const float *old, int cap)
{
    const strata_model_info *m = &c->model->cfg.info;
    size_t hd = (size_t)m->head_dim;
    float *fresh = malloc(sizeof(float) * (size_t)m->kv_heads * (size_t)cap * hd);
    if (!fresh)
        return NULL;
    for (int h = 0; old && h < m->kv_heads; h++)
        memcpy(fresh + (size_t)h * (size_t)cap * hd, old + (size_t)h * (size_t)c->kv_cap * hd,
               sizeof(float) * (size_t)c->n_tokens * hd);
    return fresh;
}

strata_status cache_reserve(strata_cache *c, int n_total, strata_error *err)
{
    if (n_total <= c->kv_cap || c->model->n_attn == 0) {
        if (c->model->n_attn == 0)
            c->kv_cap = n_total > c->kv_cap ? n_total : c->kv_cap;
        return STRATA_OK;
    }
    int cap = c->kv_cap ? c->kv_cap : 64;
    while (cap < n_total)
        cap *= 2;
    int n = c->model->n_attn;
    float **k = calloc((size_t)n, sizeof *k), **v = calloc((size_t)n, sizeof *v);
    int ok = k && v;
    for (int j = 0; ok && j < n; j++)
        ok = (k[j] = regrow(c, c->k[j], cap)) && (v[j] = regrow(c, c->v[j], cap));
    if (!ok) {
        for (int j = 0; k && v && j < n; j++) {
            free(k[j]);
            free(v[j]);
        }
        free(k);
        free(v);
        return strata_fail(err, STRATA_E_NOMEM, "out of memory growing the KV cache to %d tokens", n_total);
    }
    for (int j = 0; j < n; j++) {
        free(c->k[j]);
        free(c->v[j]);
        c->k[j] = k[j];
        c->v[j] = v[j];
    }
    free(k);
    free(v);
    c->kv_cap = cap;
    return STRATA_OK;
}

void strata_cache_reset(strata_cache *c)
{
    const strata_model_info *m = &c->model->cfg.info;
    for (int i = 0; i < c->model->n_mamba; i++) {
        memset(c->conv[i], 0, sizeof(float) * conv_elems(m));
        memset(c->ssm[i], 0, sizeof(float) * ssm_elems(m));
    }
    c->n_tokens = 0;
}

int strata_cache_n_tokens(const strata_cache *c)
{
    return c->n_tokens;
}

uint64_t strata_cache_state_bytes(const strata_cache *c)
{
    const strata_model_info *m = &c->model->cfg.info;
    return m->state_bytes_fixed + m->state_bytes_per_token * (uint64_t)c->n_tokens;
}

void cache_copy_ssm(const strata_cache *c, int i, float *out)
{
    memcpy(out, c->ssm[i], sizeof(float) * ssm_elems(&c->model->cfg.info));
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
            memcpy(out + ((size_t)t * (size_t)m->kv_heads + (size_t)h) * hd,
                   keys ? cache_k(c, j, h, t) : cache_v(c, j, h, t), sizeof(float) * hd);
    return c->n_tokens;
}

strata_status strata_cache_copy(const strata_cache *src, strata_cache **out, strata_error *err)
{
    *out = NULL;
    strata_cache *c;
    STRATA_TRY(strata_cache_new(src->model, &c, err));
    strata_status s = cache_reserve(c, src->n_tokens, err);
    if (s != STRATA_OK) {
        strata_cache_free(c);
        return s;
    }
    const strata_model_info *m = &src->model->cfg.info;
    for (int i = 0; i < src->model->n_mamba; i++) {
        memcpy(c->conv[i], src->conv[i], sizeof(float) * conv_elems(m));
        memcpy(c->ssm[i], src->ssm[i], sizeof(float) * ssm_elems(m));
    }
    size_t hd = (size_t)m->head_dim;
    for (int j = 0; src->n_tokens > 0 && j < src->model->n_attn; j++)
        for (int h = 0; h < m->kv_heads; h++) {
            memcpy(cache_k(c, j, h, 0), cache_k(src, j, h, 0), sizeof(float) * hd * (size_t)src->n_tokens);
            memcpy(cache_v(c, j, h, 0), cache_v(src, j, h, 0), sizeof(float) * hd * (size_t)src->n_tokens);
        }
    c->n_tokens = src->n_tokens;
    *out = c;
    return STRATA_OK;
}
