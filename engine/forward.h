/*
 * forward.h — one forward step over the rows of several sequences, as the layer
 * files see it. Rows of all sequences are stacked: sequence s owns rows
 * [off[s], off[s+1]). Matmuls run over all R rows at once; the sequence-dependent
 * parts (conv, scan, attention) loop over sequences.
 */
#ifndef STRATA_FORWARD_H
#define STRATA_FORWARD_H

#include "cache.h"
#include "hooks.h"
#include "kernels/kernels.h"

typedef struct step {
    const strata_model *model;
    strata_seq *seqs;
    int n_seqs;
    const int *off;         /* (n_seqs + 1) first row of each sequence */
    int R;                  /* rows in the step */
    int hooked;             /* some sequence captures or intervenes */
    float *ws;              /* workspace reserved for the whole step */
    size_t ws_used, ws_cap;
    exec *ex;               /* kernel path, threads and matmul panels */
} step;

/* Carve n floats out of the step's workspace. The runner reserved enough for the
 * step before it started (layers declare their needs in *_scratch), so this cannot
 * fail. */
static inline float *step_alloc(step *s, size_t n)
{
    float *p = s->ws + s->ws_used;
    s->ws_used += (n + 15) & ~(size_t)15;
    return p;
}

/* x (R, width) += v (R, width), rows split over the threads (on the caller when small). */
void step_add_rows(step *s, float *x, const float *v, int width);

/* Rows (R, width) at hook point p of layer li (-1: global): each sequence's
 * interventions edit its rows in place, then its capture copies them. */
void hook_rows(step *s, hook_point p, int li, void *rows);
/* The interventions of the sequence owning step row r (NULL if none), and the cache
 * position of that row. */
const strata_interventions *step_row_interventions(const step *s, int r, int *pos);

/* Layers: out (R, d) = mixer(h (R, d)); *_scratch = floats of workspace each needs. */
void mamba2_forward(step *s, int li, const float *h, float *out);
void attention_forward(step *s, int li, const float *h, float *out);
void mlp_forward(step *s, int li, const float *h, float *out);
void moe_forward(step *s, int li, const float *h, float *out);
size_t mamba2_scratch(const strata_model *m, int R, int n_threads);
size_t attention_scratch(const strata_model *m, int R, int max_keys, int n_threads);
size_t mlp_scratch(const strata_model *m, int R);
size_t moe_scratch(const strata_model *m, int R, int n_threads);

/* y (n, W.rows) = x·Wᵀ, then relu² in place; shared by the MLP and MoE experts. */
void mlp_apply(step *s, const mlp_weights *w, const float *x, int n, float *hidden, float *y,
               int li, int hooked);

#endif
