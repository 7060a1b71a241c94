/*
 * attention.c — the `*` layer: grouped-query self-attention with NO positional
 * encoding (Nemotron-H is NoPE), scale head_dim^-0.5, causal over the sequence's
 * whole history in the cache:
 *
 *   q = h·W_qᵀ (nh heads), k = h·W_kᵀ, v = h·W_vᵀ (nkv heads) ; K, V = cache ++ k, v
 *   z[t, j] = Σ_τ≤pos(t) softmax_τ(q[t,j]·K[τ, j/(nh/nkv)] / √hd) · V[τ, ...]
 *   out = z · W_oᵀ
 */
#include <float.h>
#include <string.h>

#include "forward.h"

size_t attention_scratch(const strata_model *model, int R, int max_keys)
{
    const strata_model_info *m = &model->cfg.info;
    size_t q = (size_t)m->attn_heads * (size_t)m->head_dim, kv = (size_t)m->kv_heads * (size_t)m->head_dim;
    return (size_t)R * (2 * q + 2 * kv) + (size_t)max_keys + 64;
}

/* Append the sequence's new keys/values (n rows) at positions p0.. of its cache. */
static void append_kv(strata_cache *c, int j, const float *k, const float *v, int n, int p0)
{
    const strata_model_info *m = &c->model->cfg.info;
    size_t hd = (size_t)m->head_dim, kvw = (size_t)m->kv_heads * hd;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < m->kv_heads; h++) {
            memcpy(cache_k(c, j, h, p0 + t), k + (size_t)t * kvw + (size_t)h * hd, sizeof(float) * hd);
            memcpy(cache_v(c, j, h, p0 + t), v + (size_t)t * kvw + (size_t)h * hd, sizeof(float) * hd);
        }
}

/* One query row of one head against keys 0..last; writes probabilities to p. */
static void attend_row(const strata_cache *c, int j, int kvh, const float *q, int last, float scale,
                       float *p, float *z)
{
    int hd = c->model->cfg.info.head_dim;
    float mx = -FLT_MAX, sum = 0.0f;
    for (int tau = 0; tau <= last; tau++) {
        p[tau] = dot_f32(q, cache_k(c, j, kvh, tau), hd) * scale;
        mx = p[tau] > mx ? p[tau] : mx;
    }
    for (int tau = 0; tau <= last; tau++)
        sum += (p[tau] = expf(p[tau] - mx));
    memset(z, 0, sizeof(float) * (size_t)hd);
    for (int tau = 0; tau <= last; tau++) {
        const float *vr = cache_v(c, j, kvh, tau);
        float pt = (p[tau] /= sum);
        for (int i = 0; i < hd; i++)
            z[i] += pt * vr[i];
    }
}

static void attend_sequence(step *s, int li, int q_idx, const float *q, float *z, float *scores)
{
    const strata_model_info *m = &s->model->cfg.info;
    strata_seq *seq = &s->seqs[q_idx];
    strata_cache *c = seq->cache;
    int j = s->model->layers[li].state_index, n = s->off[q_idx + 1] - s->off[q_idx], p0 = c->n_tokens;
    int keys = p0 + n, group = m->attn_heads / m->kv_heads;
    size_t hd = (size_t)m->head_dim, qw = (size_t)m->attn_heads * hd;
    float scale = 1.0f / sqrtf((float)m->head_dim);
    int pe = seq->capture ? capture_entry(seq->capture, HOOK_PATTERN, li) : -1;
    float *pattern = pe >= 0 ? capture_pattern_slot(seq->capture, pe, n, keys) : NULL; // (nh, n, keys)
    for (int t = 0; t < n; t++)
        for (int h = 0; h < m->attn_heads; h++) {
            attend_row(c, j, h / group, q + (size_t)t * qw + (size_t)h * hd, p0 + t, scale, scores,
                       z + (size_t)t * qw + (size_t)h * hd);
            if (pattern) {
                float *row = pattern + ((size_t)h * (size_t)n + (size_t)t) * (size_t)keys;
                memcpy(row, scores, sizeof(float) * (size_t)(p0 + t + 1));
                memset(row + p0 + t + 1, 0, sizeof(float) * (size_t)(n - t - 1));
            }
        }
}

void attention_forward(step *s, int li, const float *h, float *out)
{
    const strata_model_info *m = &s->model->cfg.info;
    const layer *l = &s->model->layers[li];
    const attn_weights *w = &l->attn;
    size_t R = (size_t)s->R, qw = (size_t)m->attn_heads * (size_t)m->head_dim,
           kvw = (size_t)m->kv_heads * (size_t)m->head_dim;
    int max_keys = 0;
    for (int q = 0; q < s->n_seqs; q++) {
        int keys = s->seqs[q].cache->n_tokens + s->off[q + 1] - s->off[q];
        max_keys = keys > max_keys ? keys : max_keys;
    }
    float *q = step_alloc(s, R * qw);           // (R, nh, hd)
    float *k = step_alloc(s, R * kvw);          // (R, nkv, hd)
    float *v = step_alloc(s, R * kvw);          // (R, nkv, hd)
    float *z = step_alloc(s, R * qw);           // (R, nh, hd)
    float *scores = step_alloc(s, (size_t)max_keys); // (keys)

    matmul(q, h, s->R, &w->q, s->ex);
    matmul(k, h, s->R, &w->k, s->ex);
    matmul(v, h, s->R, &w->v, s->ex);
    hook_rows(s, HOOK_Q, li, q);
    hook_rows(s, HOOK_K, li, k);
    hook_rows(s, HOOK_V, li, v);
    for (int i = 0; i < s->n_seqs; i++) {
        int r0 = s->off[i], n = s->off[i + 1] - r0;
        append_kv(s->seqs[i].cache, l->state_index, k + (size_t)r0 * kvw, v + (size_t)r0 * kvw, n,
                  s->seqs[i].cache->n_tokens);
        attend_sequence(s, li, i, q + (size_t)r0 * qw, z + (size_t)r0 * qw, scores);
    }
    hook_rows(s, HOOK_Z, li, z);
    matmul(out, z, s->R, &w->o, s->ex);
}
