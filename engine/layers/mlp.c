/*
 * mlp.c — the dense `-` layer: m = W_down · relu(W_up · h)². No gate projection, no
 * bias in released checkpoints. mlp_apply is also each MoE expert's body.
 */
#include "forward.h"

static void relu2_range(void *arg, int lo, int hi)
{
    relu2_inplace((float *)arg + lo, (size_t)(hi - lo));
}

void mlp_apply(step *s, const mlp_weights *w, const float *x, int n, float *hidden, float *y,
               int li, int hooked)
{
    size_t F = (size_t)w->up.rows;
    matmul(hidden, x, n, &w->up, s->ex);          // (n, F)
    if (hooked)
        hook_rows(s, HOOK_MLP_PRE, li, hidden);
    exec_for(s->ex, n * (int)F, (double)n * (double)F, relu2_range, hidden);
    if (hooked)
        hook_rows(s, HOOK_MLP_POST, li, hidden);
    matmul(y, hidden, n, &w->down, s->ex);        // (n, d_in)
}

size_t mlp_scratch(const strata_model *m, int R)
{
    return (size_t)R * (size_t)m->cfg.info.intermediate_size + 16;
}

void mlp_forward(step *s, int li, const float *h, float *out)
{
    const mlp_weights *w = &s->model->layers[li].mlp;
    float *hidden = step_alloc(s, (size_t)s->R * (size_t)w->up.rows); // (R, F)
    mlp_apply(s, w, h, s->R, hidden, out, li, 1);
}
