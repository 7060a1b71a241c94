/*
 * cache.h — the unified per-sequence state, as the layers see it.
 *
 * Layout (fp32):
 *   conv[i]  (K-1, conv_dim)       Mamba layer i's last K-1 pre-conv xBC rows, oldest first
 *   ssm[i]   (H, P, N)             Mamba layer i's SSM state
 *   k[j],v[j] (n_kv, kv_cap, hd)   attention layer j's keys/values, head-major so one
 *                                  head's history is one sequential read
 */
#ifndef STRATA_CACHE_H
#define STRATA_CACHE_H

#include "model/model.h"

struct strata_cache {
    const strata_model *model;
    int n_tokens;
    int kv_cap;
    float **conv, **ssm;    /* (n_mamba) */
    float **k, **v;         /* (n_attn) */
};

/* Grow K/V capacity to hold `n_total` tokens (done before a step changes anything). */
strata_status cache_reserve(strata_cache *c, int n_total, strata_error *err);

/* Row t of head h of attention layer j's keys / values. */
static inline float *cache_k(const strata_cache *c, int j, int h, int t)
{
    const strata_model_info *m = &c->model->cfg.info;
    return c->k[j] + ((size_t)h * (size_t)c->kv_cap + (size_t)t) * (size_t)m->head_dim;
}
static inline float *cache_v(const strata_cache *c, int j, int h, int t)
{
    const strata_model_info *m = &c->model->cfg.info;
    return c->v[j] + ((size_t)h * (size_t)c->kv_cap + (size_t)t) * (size_t)m->head_dim;
}

/* Copies in the public layouts of api.md. */
void cache_copy_ssm(const strata_cache *c, int i, float *out);   /* (H, P, N) */
void cache_copy_conv(const strata_cache *c, int i, float *out);  /* (conv_dim, K-1) */
int cache_copy_kv(const strata_cache *c, int j, int keys, float *out); /* (T, n_kv, hd); returns T */

#endif
