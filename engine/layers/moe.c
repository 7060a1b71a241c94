/*
 * moe.c — the `E` layer: sigmoid-routed mixture of relu² experts plus one shared
 * expert (docs/model.md §4.7), routing in fp32:
 *
 *   s = sigmoid(h·W_gateᵀ) ; c = s + e_score_correction_bias   (bias steers choice only)
 *   n_group > 1: keep the topk_group groups with the best sum of their top-2 c;
 *                other experts' c = 0.0 (as NVIDIA's code masks)
 *   idx = top-k(c) ; w = s[idx] (/ Σ if norm_topk_prob) · routed_scaling_factor
 *   out = [fc2](Σ_j w_j · expert_idx_j([fc1](h))) + shared_expert(h)
 *
 * Rows are grouped by expert so that each expert's weights are read once per step.
 */
#include <string.h>

#include "forward.h"

typedef struct moe_dims {
    int d, E, k, d_moe, F, Fs;
} moe_dims;

static moe_dims moe_dims_of(const strata_model *model)
{
    const strata_model_info *m = &model->cfg.info;
    int latent = model->cfg.moe_latent_size;
    return (moe_dims){.d = m->hidden_size, .E = m->n_experts, .k = m->experts_per_tok,
                      .d_moe = latent ? latent : m->hidden_size, .F = m->moe_intermediate_size,
                      .Fs = m->shared_intermediate_size};
}

size_t moe_scratch(const strata_model *model, int R)
{
    moe_dims D = moe_dims_of(model);
    size_t r = (size_t)R;
    return r * (size_t)(D.E + 2 * D.k + 4 * D.d_moe + D.F + D.Fs + 2 * D.d + 1) + 256;
}

/* Sum of the two largest of n values. */
static float top2_sum(const float *v, int n)
{
    float a = -INFINITY, b = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (v[i] > a) {
            b = a;
            a = v[i];
        } else if (v[i] > b) {
            b = v[i];
        }
    }
    return a + b;
}

/* Index of the largest of n values not yet taken (lowest index on ties). */
static int argmax_free(const float *v, const unsigned char *taken, int n)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || v[i] > v[best]))
            best = i;
    return best;
}

/* Route one token: logits (E) → idx (k, ascending) and weights (k). */
/* banned (E) or NULL: experts an intervention removed; the rest are chosen from. */
static void route(const strata_model_info *m, const float *bias, const float *logits, const unsigned char *banned,
                  float *choice, int32_t *idx, float *weight)
{
    int E = m->n_experts, k = m->experts_per_tok, per_group = E / m->n_group;
    unsigned char taken[E > 0 ? E : 1];
    for (int e = 0; e < E; e++)
        choice[e] = banned && banned[e] ? -INFINITY : sigmoidf(logits[e]) + bias[e];
    if (m->n_group > 1) {
        float gscore[m->n_group];
        unsigned char keep[m->n_group];
        memset(keep, 0, sizeof keep);
        for (int g = 0; g < m->n_group; g++)
            gscore[g] = top2_sum(choice + g * per_group, per_group);
        for (int i = 0; i < m->topk_group; i++)
            keep[argmax_free(gscore, keep, m->n_group)] = 1;
        for (int e = 0; e < E; e++)
            if (!keep[e / per_group] && !(banned && banned[e]))
                choice[e] = 0.0f;
    }
    memset(taken, 0, sizeof taken);
    for (int j = 0; j < k; j++)
        taken[argmax_free(choice, taken, E)] = 1;
    float sum = 0.0f;
    for (int e = 0, j = 0; e < E; e++)
        if (taken[e]) {
            idx[j] = e;
            sum += (weight[j++] = sigmoidf(logits[e]));
        }
    for (int j = 0; j < k; j++) {
        if (m->norm_topk_prob)
            weight[j] /= sum + 1e-20f;
        weight[j] *= m->routed_scaling_factor;
    }
}

/* acc (R, d_moe) += Σ over experts of their weighted outputs, one expert at a time. */
static void run_experts(step *s, const moe_weights *w, const moe_dims *D, const float *u, const int32_t *idx,
                        const float *weight, float *acc)
{
    size_t R = (size_t)s->R, dm = (size_t)D->d_moe;
    int *rows = (int *)step_alloc(s, R);                // rows routed to expert e
    float *slot_w = step_alloc(s, R);                   // their weights
    float *xe = step_alloc(s, R * dm);                  // (n_e, d_moe) gathered inputs
    float *hid = step_alloc(s, R * (size_t)D->F);       // (n_e, F)
    float *ye = step_alloc(s, R * dm);                  // (n_e, d_moe)
    for (int e = 0; e < D->E; e++) {
        int n = 0;
        for (size_t r = 0; r < R; r++)
            for (int j = 0; j < D->k; j++)
                if (idx[r * (size_t)D->k + (size_t)j] == e) {
                    rows[n] = (int)r;
                    slot_w[n] = weight[r * (size_t)D->k + (size_t)j];
                    memcpy(xe + (size_t)n++ * dm, u + r * dm, sizeof(float) * dm);
                }
        if (!n)
            continue;
        mlp_apply(s, &w->experts[e], xe, n, hid, ye, -1, 0);
        for (int i = 0; i < n; i++)
            for (size_t c = 0; c < dm; c++)
                acc[(size_t)rows[i] * dm + c] += slot_w[i] * ye[(size_t)i * dm + c];
    }
}

void moe_forward(step *s, int li, const float *h, float *out)
{
    const strata_model *model = s->model;
    const strata_model_info *m = &model->cfg.info;
    const moe_weights *w = &model->layers[li].moe;
    moe_dims D = moe_dims_of(model);
    size_t R = (size_t)s->R, k = (size_t)D.k;
    float *logits = step_alloc(s, R * (size_t)D.E);         // (R, E) router logits, fp32
    int32_t *idx = (int32_t *)step_alloc(s, R * k);         // (R, k) chosen experts, ascending
    float *weight = step_alloc(s, R * k);                   // (R, k) their final weights
    float *choice = step_alloc(s, (size_t)D.E);             // (E) selection scores of one token
    float *u = step_alloc(s, R * (size_t)D.d_moe);          // (R, d_moe) expert input
    float *acc = step_alloc(s, R * (size_t)D.d_moe);        // (R, d_moe) routed sum
    float *shared_hid = step_alloc(s, R * (size_t)D.Fs);    // (R, Fs)
    float *shared = step_alloc(s, R * (size_t)D.d);         // (R, d)

    strata_mat router = {.data = w->router, .dtype = ST_F32, .rows = D.E, .cols = D.d};
    matmul(logits, h, s->R, &router, s->ex);
    hook_rows(s, HOOK_ROUTER_LOGITS, li, logits);
    unsigned char banned[D.E > 0 ? D.E : 1];
    for (size_t r = 0; r < R; r++) {
        int pos;
        const strata_interventions *iv = s->hooked ? step_row_interventions(s, (int)r, &pos) : NULL;
        int ablate = iv && interventions_ablated(iv, li, pos, banned, D.E);
        route(m, w->score_bias, logits + r * (size_t)D.E, ablate ? banned : NULL, choice, idx + r * k, weight + r * k);
    }
    hook_rows(s, HOOK_EXPERT_INDICES, li, idx);
    hook_rows(s, HOOK_EXPERT_WEIGHTS, li, weight);

    if (model->cfg.moe_latent_size)
        matmul(u, h, s->R, &w->fc1_latent, s->ex);
    else
        memcpy(u, h, sizeof(float) * R * (size_t)D.d);
    memset(acc, 0, sizeof(float) * R * (size_t)D.d_moe);
    run_experts(s, w, &D, u, idx, weight, acc);
    if (model->cfg.moe_latent_size)
        matmul(out, acc, s->R, &w->fc2_latent, s->ex);
    else
        memcpy(out, acc, sizeof(float) * R * (size_t)D.d);

    mlp_apply(s, &w->shared, h, s->R, shared_hid, shared, li, 0);
    hook_rows(s, HOOK_SHARED_OUT, li, shared);
    for (size_t i = 0; i < R * (size_t)D.d; i++)
        out[i] += shared[i];
}
