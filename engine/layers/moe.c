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

/* Rows a thread runs through an expert at a time (its matmul_local room). */
#define EXPERT_ROWS MATMUL_LOCAL_ROWS

size_t moe_scratch(const strata_model *model, int R, int n_threads)
{
    moe_dims D = moe_dims_of(model);
    size_t r = (size_t)R, k = (size_t)D.k, dm = (size_t)D.d_moe;
    return r * ((size_t)D.E + 3 * k + 2 * dm + (size_t)D.Fs + (size_t)D.d + k * dm) + 2 * (size_t)D.E + 1 +
           (size_t)n_threads * EXPERT_ROWS * (2 * dm + (size_t)D.F) + 512;
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
                  int32_t *idx, float *weight)
{
    int E = m->n_experts, k = m->experts_per_tok, per_group = E / m->n_group;
    unsigned char taken[E > 0 ? E : 1];
    float choice[E > 0 ? E : 1];        /* selection scores */
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

typedef struct route_job {
    const step *s;
    int li;
    const float *logits;    /* (R, E) */
    int32_t *idx;           /* (R, k) */
    float *weight;          /* (R, k) */
} route_job;

/* Rows [lo, hi) routed, each with its sequence's expert ablations at its position. */
static void route_rows(void *arg, int lo, int hi)
{
    const route_job *J = arg;
    const strata_model_info *m = &J->s->model->cfg.info;
    const moe_weights *w = &J->s->model->layers[J->li].moe;
    size_t E = (size_t)m->n_experts, k = (size_t)m->experts_per_tok;
    unsigned char banned[E];
    for (int r = lo; r < hi; r++) {
        int pos;
        const strata_interventions *iv = J->s->hooked ? step_row_interventions(J->s, r, &pos) : NULL;
        int ablate = iv && interventions_ablated(iv, J->li, pos, banned, (int)E);
        route(m, w->score_bias, J->logits + (size_t)r * E, ablate ? banned : NULL, J->idx + (size_t)r * k,
              J->weight + (size_t)r * k);
    }
}

/* The step's experts, each on one thread: its rows gathered, the relu² MLP on
 * them by matmul_local, each output row to its slot (row r's j-th choice). One
 * region for the layer instead of two matmul regions per expert; threads take
 * experts by work stealing (an expert's weights are read once, by one thread).
 * With fewer than two experts per thread (one token on many cores) threads would
 * idle: then each expert in turn, its matmuls split over all of them. Either way
 * the same bits. */
typedef struct expert_job {
    step *s;
    const moe_weights *w;
    const moe_dims *D;
    const float *u;         /* (R, d_moe) expert input */
    const int *used;        /* (n_used) experts with rows, ascending */
    const int *first;       /* (E + 1) expert e's slots are slot[first[e] .. first[e + 1]) */
    const int *slot;        /* (R·k) r·k + j, by expert, rows ascending */
    float *ys;              /* (R·k, d_moe) each slot's expert output */
    float *scratch;         /* (threads, EXPERT_ROWS · (2·d_moe + F)) */
} expert_job;

/* Expert e's rows on thread ti, or (ti < 0) split over the threads. */
static void expert_rows(const expert_job *J, int e, int ti)
{
    const moe_dims *D = J->D;
    size_t dm = (size_t)D->d_moe, F = (size_t)D->F;
    float *xe = J->scratch + (size_t)(ti < 0 ? 0 : ti) * EXPERT_ROWS * (2 * dm + F); // (EXPERT_ROWS, d_moe)
    float *hid = xe + EXPERT_ROWS * dm;                                // (EXPERT_ROWS, F)
    float *ye = hid + EXPERT_ROWS * F;                                 // (EXPERT_ROWS, d_moe)
    for (int a = J->first[e]; a < J->first[e + 1]; a += EXPERT_ROWS) {
        int n = J->first[e + 1] - a < EXPERT_ROWS ? J->first[e + 1] - a : EXPERT_ROWS;
        for (int i = 0; i < n; i++)
            memcpy(xe + (size_t)i * dm, J->u + (size_t)(J->slot[a + i] / D->k) * dm, sizeof(float) * dm);
        matmul_local(hid, xe, n, &J->w->experts[e].up, J->s->ex, ti);
        relu2_inplace(hid, (size_t)n * F);
        matmul_local(ye, hid, n, &J->w->experts[e].down, J->s->ex, ti);
        for (int i = 0; i < n; i++)
            memcpy(J->ys + (size_t)J->slot[a + i] * dm, ye + (size_t)i * dm, sizeof(float) * dm);
    }
}

static void experts_thread(void *arg, int ti, int nt)
{
    const expert_job *J = arg;
    int lo, hi, after;
    while (exec_span_next(J->s->ex, ti, nt, 1, &lo, &hi, &after))
        for (int i = lo; i < hi; i++)
            expert_rows(J, J->used[i], ti);
}

typedef struct combine_job {
    const float *ys, *weight;
    float *acc;
    size_t k, dm;
} combine_job;

/* acc rows [lo, hi) = Σ_j weight[r, j] · ys[r·k + j], j ascending: the experts'
 * ascending order, as one expert at a time would add them. */
static void combine_rows(void *arg, int lo, int hi)
{
    const combine_job *J = arg;
    for (size_t r = (size_t)lo; r < (size_t)hi; r++)
        for (size_t j = 0; j < J->k; j++)
            for (size_t c = 0; c < J->dm; c++)
                J->acc[r * J->dm + c] += J->weight[r * J->k + j] * J->ys[(r * J->k + j) * J->dm + c];
}

/* The n slots of idx (each an expert < E) grouped by expert, in order within each
 * (a counting sort): expert e's are slot[first[e] .. first[e + 1]). Returns the
 * number of experts with slots, listed ascending in used. */
static int group_by_expert(const int32_t *idx, size_t n, int E, int *first, int *slot, int *used)
{
    memset(first, 0, sizeof *first * ((size_t)E + 1));
    for (size_t i = 0; i < n; i++)
        first[idx[i] + 1]++;
    int n_used = 0;
    for (int e = 0; e < E; e++) {
        if (first[e + 1])
            used[n_used++] = e;
        first[e + 1] += first[e];
    }
    for (size_t i = 0; i < n; i++)      /* expert e's fill point: first[e] moves up to first[e + 1] */
        slot[first[idx[i]]++] = (int)i;
    for (int e = E; e > 0; e--)         /* back to the starts */
        first[e] = first[e - 1];
    first[0] = 0;
    return n_used;
}

/* acc (R, d_moe) += Σ over the chosen experts of their weighted outputs. */
static void run_experts(step *s, const moe_weights *w, const moe_dims *D, const float *u, const int32_t *idx,
                        const float *weight, float *acc)
{
    size_t R = (size_t)s->R, k = (size_t)D->k, dm = (size_t)D->d_moe;
    int *first = (int *)step_alloc(s, (size_t)D->E + 1);     // (E + 1)
    int *used = (int *)step_alloc(s, (size_t)D->E);          // (n_used)
    int *slot = (int *)step_alloc(s, R * k);                 // (R·k)
    float *ys = step_alloc(s, R * k * dm);                   // (R·k, d_moe)
    float *scratch = step_alloc(s, (size_t)s->ex->n_threads * EXPERT_ROWS * (2 * dm + (size_t)D->F));
    int n_used = group_by_expert(idx, R * k, D->E, first, slot, used);
    expert_job J = {.s = s, .w = w, .D = D, .u = u, .used = used, .first = first, .slot = slot, .ys = ys,
                    .scratch = scratch};
    if (n_used >= 2 * s->ex->n_threads) {
        exec_spans_reset(s->ex, n_used, s->ex->n_threads);
        exec_parallel(s->ex, experts_thread, &J);
    } else {
        for (int i = 0; i < n_used; i++)
            expert_rows(&J, used[i], -1);
    }
    combine_job C = {ys, weight, acc, k, dm};
    exec_for(s->ex, (int)R, (double)R * (double)(k * dm), combine_rows, &C);
}

void moe_forward(step *s, int li, const float *h, float *out)
{
    const strata_model *model = s->model;
    const moe_weights *w = &model->layers[li].moe;
    moe_dims D = moe_dims_of(model);
    size_t R = (size_t)s->R, k = (size_t)D.k;
    float *logits = step_alloc(s, R * (size_t)D.E);         // (R, E) router logits, fp32
    int32_t *idx = (int32_t *)step_alloc(s, R * k);         // (R, k) chosen experts, ascending
    float *weight = step_alloc(s, R * k);                   // (R, k) their final weights
    float *u = step_alloc(s, R * (size_t)D.d_moe);          // (R, d_moe) expert input
    float *acc = step_alloc(s, R * (size_t)D.d_moe);        // (R, d_moe) routed sum
    float *shared_hid = step_alloc(s, R * (size_t)D.Fs);    // (R, Fs)
    float *shared = step_alloc(s, R * (size_t)D.d);         // (R, d)

    strata_mat router = {.data = w->router, .dtype = ST_F32, .rows = D.E, .cols = D.d};
    matmul(logits, h, s->R, &router, s->ex);
    hook_rows(s, HOOK_ROUTER_LOGITS, li, logits);
    route_job rj = {s, li, logits, idx, weight};
    exec_for(s->ex, s->R, (double)R * (double)D.E * 8.0, route_rows, &rj);
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
    step_add_rows(s, out, shared, D.d);
}
