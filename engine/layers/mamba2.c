/*
 * mamba2.c — the Mamba-2 (SSD) mixer `M`, exactly as docs/model.md §4.4:
 *
 *   zxbcdt = h·W_inᵀ                      split z | xBC | dt (after 2·d_mlp ignored columns)
 *   xBC'   = silu(causal_conv1d(xBC))      the conv window continues from the cache
 *   x, B, C = split(xBC')                  head h reads B/C group h / (H/G)
 *   dt     = clamp(softplus(dt + dt_bias), limit)
 *   S      = exp(dt·A)·S + dt·(x ⊗ B);  y = S·C + D·x       per token, in fp32 (a bf16-mode
 *                                          cache keeps S in BF16 between steps)
 *   out    = W_out · (groupwise_rmsnorm(y · silu(z)) · norm_w)
 *
 * The scan is the per-token recurrence, exact for prefill chunks and decode alike;
 * its inner loops over N run in the kernel path's ssm_head (vector lanes, FMA on the
 * fast paths), one (sequence, head) pair per thread task. Conv, gated norm and the
 * matmuls split over the runner's threads too; none of the splits changes a number.
 */
#include <string.h>

#include "forward.h"

typedef struct dims {
    int H, P, N, G, K, d_inner, conv_dim, in_dim, z_off, xbc_off, dt_off;
} dims;

static dims dims_of(const strata_model *model)
{
    const strata_model_info *m = &model->cfg.info;
    int d_mlp = model->cfg.d_mlp;
    return (dims){
        .H = m->mamba_heads, .P = m->mamba_head_dim, .N = m->ssm_state_size, .G = m->n_groups,
        .K = m->conv_kernel, .d_inner = m->d_inner, .conv_dim = m->conv_dim, .in_dim = m->in_proj_dim,
        .z_off = 2 * d_mlp, .xbc_off = 2 * d_mlp + m->d_inner, .dt_off = 2 * d_mlp + m->d_inner + m->conv_dim,
    };
}

size_t mamba2_scratch(const strata_model *model, int R, int n_threads)
{
    dims D = dims_of(model);
    size_t r = (size_t)R;
    return r * (size_t)(D.in_dim + D.conv_dim + 3 * D.H + D.d_inner) + (size_t)n_threads * (size_t)(D.P * D.N) + 64;
}

/* Causal depthwise conv over every sequence's rows, each continuing from its conv
 * state, in one pass split over channels (each thread owns a channel range of every
 * sequence, state included); leaves each sequence's last K-1 pre-conv rows in its
 * state. A sequence's window is its K-1 state rows followed by its n new rows.
 * The same region computes dt and exp(dt·A) (they read only in_proj's output),
 * each channel range taking the matching share of the heads. */
typedef struct conv_job {
    const step *s;
    const dims *D;
    const mamba_weights *w;
    int state_index;
    const float *zxbcdt;    /* (R, in_proj_dim) */
    float *out;             /* (R, conv_dim) */
    float *dt, *dtT, *aT;   /* (R, H), (H, R), (H, R) */
} conv_job;

/* Row r of a sequence's window: state row r, or new row r - (K-1) of the input. */
static const float *window_row(const float *state, const float *in, size_t ld_in, int K1, size_t cd, int r)
{
    return r < K1 ? state + (size_t)r * cd : in + (size_t)(r - K1) * ld_in;
}

/* The scan's view of dt for heads [h0, h1): dt head-major, and exp(dt·A). */
static void dt_scan_view(const conv_job *J, int h0, int h1)
{
    size_t R = (size_t)J->s->R, H = (size_t)J->D->H;
    for (size_t r = 0; r < R; r++)
        for (int h = h0; h < h1; h++) {
            float v = J->dt[r * H + (size_t)h];
            J->dtT[(size_t)h * R + r] = v;
            J->aT[(size_t)h * R + r] = expf(v * J->w->A[h]);
        }
}

/* dt = clamp(softplus(dt + dt_bias)) for heads [h0, h1) of every row, then the
 * scan's view of it. */
static void dt_heads(const conv_job *J, int h0, int h1)
{
    const strata_model_info *m = &J->s->model->cfg.info;
    const dims *D = J->D;
    for (size_t r = 0; r < (size_t)J->s->R; r++)
        for (int h = h0; h < h1; h++) {
            float v = softplus(J->zxbcdt[r * (size_t)D->in_dim + (size_t)(D->dt_off + h)] + J->w->dt_bias[h]);
            v = v < m->dt_limit_lo ? m->dt_limit_lo : v;
            J->dt[r * (size_t)D->H + (size_t)h] = v > m->dt_limit_hi ? m->dt_limit_hi : v;
        }
    dt_scan_view(J, h0, h1);
}

static void conv_channels(void *arg, int c0, int c1)
{
    const conv_job *J = arg;
    const dims *D = J->D;
    size_t cd = (size_t)D->conv_dim, ld = (size_t)D->in_dim, span = sizeof(float) * (size_t)(c1 - c0);
    int K1 = D->K - 1;
    const float *win[64];   /* conv_kernel ≤ 64 (config.c) */
    for (int q = 0; q < J->s->n_seqs; q++) {
        int r0 = J->s->off[q], n = J->s->off[q + 1] - r0;
        float *state = J->s->seqs[q].cache->conv[J->state_index];      // (K-1, conv_dim)
        const float *in = J->zxbcdt + (size_t)r0 * ld + D->xbc_off;     // n rows, ld apart
        for (int t = 0; t < n; t++) {
            for (int k = 0; k < D->K; k++)
                win[k] = window_row(state, in, ld, K1, cd, t + k);
            float *o = J->out + (size_t)(r0 + t) * cd;
            J->s->ex->isa->conv_taps(o, J->w->conv_b, J->w->conv_wT, win, cd, D->K, c0, c1);
            J->s->ex->isa->silu(o + c0, (size_t)(c1 - c0));
        }
        /* state row i ← window row n + i, in increasing i: a source still in the
         * state (n + i < K-1) sits above every row written so far */
        for (int i = 0; i < K1; i++)
            memcpy(state + (size_t)i * cd + c0, window_row(state, in, ld, K1, cd, n + i) + c0, span);
    }
    dt_heads(J, (int)((long long)D->H * c0 / D->conv_dim), (int)((long long)D->H * c1 / D->conv_dim));
}

/* The selective scan, one (sequence, head) pair at a time: each head's state
 * (P, N) stays in L1 over the sequence's tokens; threads take pairs SCAN_GROUP at
 * a time by work stealing. */
#define SCAN_GROUP 4

typedef struct scan_job {
    const step *s;
    const dims *D;
    const mamba_weights *w;
    int state_index;
    const float *xbc, *dtT, *aT;    /* (R, conv_dim), (H, R), (H, R) */
    float *y;                       /* (R, d_inner) */
    float *widened;                 /* (threads, P, N) a BF16 head state in fp32 */
} scan_job;

/* Pair i (sequence i / H, head i % H) on thread ti. */
static void scan_pair(const scan_job *J, int ti, int i)
{
    const dims *D = J->D;
    const step *s = J->s;
    size_t R = (size_t)s->R, cd = (size_t)D->conv_dim, PN = (size_t)D->P * (size_t)D->N;
    int q = i / D->H, h = i % D->H, g = h / (D->H / D->G), r0 = s->off[q], n = s->off[q + 1] - r0;
    const strata_cache *c = s->seqs[q].cache;
    const float *row = J->xbc + (size_t)r0 * cd, *x = row + (size_t)h * (size_t)D->P;
    const float *B = row + D->d_inner + (size_t)g * (size_t)D->N, *C = B + (size_t)D->G * (size_t)D->N;
    const float *dt = J->dtT + (size_t)h * R + (size_t)r0, *a = J->aT + (size_t)h * R + (size_t)r0;
    float *y = J->y + (size_t)r0 * (size_t)D->d_inner + (size_t)h * (size_t)D->P;
    if (c->ssm_bf16)
        ssm_head_bf16(s->ex->isa, (uint16_t *)c->ssm[J->state_index] + (size_t)h * PN, J->widened + (size_t)ti * PN,
                      D->P, D->N, n, x, cd, B, C, cd, dt, a, J->w->D[h], y, (size_t)D->d_inner);
    else
        s->ex->isa->ssm_head((float *)c->ssm[J->state_index] + (size_t)h * PN, D->P, D->N, n, x, cd, B, C, cd, dt, a,
                             J->w->D[h], y, (size_t)D->d_inner);
}

static void scan_thread(void *arg, int ti, int nt)
{
    const scan_job *J = arg;
    int lo, hi, after;
    while (exec_span_next(J->s->ex, ti, nt, SCAN_GROUP, &lo, &hi, &after))
        for (int i = lo; i < hi; i++)
            scan_pair(J, ti, i);
}

/* y ← groupwise_rmsnorm(y · silu(z)) · norm_w, per row (gate first, then normalise);
 * rows split over the threads. */
typedef struct norm_job {
    const kernel_isa *isa;
    const dims *D;
    const mamba_weights *w;
    const float *zxbcdt;
    float *y;
    float eps;
} norm_job;

static void gated_norm_rows(void *arg, int r0, int r1)
{
    const norm_job *J = arg;
    const dims *D = J->D;
    int gs = D->d_inner / D->G;
    for (int r = r0; r < r1; r++) {
        float *yr = J->y + (size_t)r * (size_t)D->d_inner;
        const float *z = J->zxbcdt + (size_t)r * (size_t)D->in_dim + D->z_off;
        J->isa->silu_mul(yr, z, (size_t)D->d_inner);
        for (int g = 0; g < D->G; g++)
            rmsnorm(yr + g * gs, yr + g * gs, J->w->norm_w + g * gs, gs, J->eps);
    }
}

void mamba2_forward(step *s, int li, const float *h, float *out)
{
    const strata_model *model = s->model;
    const strata_model_info *m = &model->cfg.info;
    const layer *l = &model->layers[li];
    const mamba_weights *w = &l->mamba;
    dims D = dims_of(model);
    size_t R = (size_t)s->R;
    float *zxbcdt = step_alloc(s, R * (size_t)D.in_dim);     // (R, in_proj_dim) z | xBC | dt
    float *xbc = step_alloc(s, R * (size_t)D.conv_dim);      // (R, conv_dim) after conv + SiLU
    float *dt = step_alloc(s, R * (size_t)D.H);              // (R, H)
    float *y = step_alloc(s, R * (size_t)D.d_inner);         // (R, d_inner)
    float *dtT = step_alloc(s, R * (size_t)D.H);             // (H, R) dt, head-major for the scan
    float *aT = step_alloc(s, R * (size_t)D.H);              // (H, R) exp(dt·A)
    float *widened = step_alloc(s, (size_t)s->ex->n_threads * (size_t)(D.P * D.N)); // (threads, P, N)

    matmul(zxbcdt, h, s->R, &w->in_proj, s->ex);
    hook_rows(s, HOOK_IN_PROJ_OUT, li, zxbcdt);
    conv_job cj = {.s = s, .D = &D, .w = w, .state_index = l->state_index, .zxbcdt = zxbcdt, .out = xbc,
                   .dt = dt, .dtT = dtT, .aT = aT};
    exec_for(s->ex, D.conv_dim, (double)R * (double)D.conv_dim * (double)D.K * 4.0, conv_channels, &cj);
    hook_rows(s, HOOK_CONV_ACT, li, xbc);
    hook_rows(s, HOOK_SSM_DT, li, dt);
    if (s->hooked)      /* an edit of dt must reach the scan */
        dt_scan_view(&cj, 0, D.H);
    scan_job job = {.s = s, .D = &D, .w = w, .state_index = l->state_index, .xbc = xbc, .dtT = dtT, .aT = aT, .y = y,
                    .widened = widened};
    exec_spans_reset(s->ex, s->n_seqs * D.H, s->ex->n_threads);
    exec_parallel(s->ex, scan_thread, &job);
    hook_rows(s, HOOK_SSM_Y, li, y);
    norm_job nj = {s->ex->isa, &D, w, zxbcdt, y, m->norm_eps};
    exec_for(s->ex, s->R, (double)s->R * (double)D.d_inner * 8.0, gated_norm_rows, &nj);
    hook_rows(s, HOOK_INNER_NORM_OUT, li, y);
    matmul(out, y, s->R, &w->out_proj, s->ex);
}
