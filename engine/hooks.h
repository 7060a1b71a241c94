/*
 * hooks.h — the catalogue of named hook points and the capture of tensors there.
 * The forward pass calls hook_rows() at each point; when no sequence of the step
 * captures anything this is one predictable branch.
 */
#ifndef STRATA_HOOKS_H
#define STRATA_HOOKS_H

#include "model/model.h"

typedef enum hook_point {
    HOOK_EMBED_OUT,
    HOOK_BLOCK_IN, HOOK_MIXER_IN, HOOK_MIXER_OUT, HOOK_BLOCK_OUT,
    /* Mamba */
    HOOK_IN_PROJ_OUT, HOOK_CONV_ACT, HOOK_SSM_DT, HOOK_SSM_Y, HOOK_INNER_NORM_OUT,
    HOOK_SSM_STATE, HOOK_CONV_STATE,
    /* attention */
    HOOK_Q, HOOK_K, HOOK_V, HOOK_PATTERN, HOOK_Z, HOOK_K_CACHE, HOOK_V_CACHE,
    /* MLP */
    HOOK_MLP_PRE, HOOK_MLP_POST,
    /* MoE */
    HOOK_ROUTER_LOGITS, HOOK_EXPERT_INDICES, HOOK_EXPERT_WEIGHTS, HOOK_SHARED_OUT,
    /* head */
    HOOK_LN_FINAL_OUT, HOOK_LOGITS,
    HOOK_COUNT
} hook_point;

/* What the step-end capture of state hooks reads. */
struct strata_cache;

/* Every (point, layer) a name or glob matches, at most max; none is the error of
 * strata_capture_add (wrong layer kind, or unknown with the nearest names). */
strata_status hook_expand(const strata_model *m, const char *pattern, hook_point *points, int *layers, int max,
                          int *n, strata_error *err);
/* Elements per position row of a per-position hook. */
size_t hook_width(const strata_model *m, hook_point p);
/* 1: rows of this hook can be modified during a step (per-position float hooks). */
int hook_interveneable(hook_point p);
/* The public name of (p, layer). */
void hook_name_of(hook_point p, int layer, char *buf, size_t len);

/* Index of the capture entry for (point, layer) or -1; layer -1 for global hooks. */
int capture_entry(const strata_capture *cap, hook_point point, int layer);
/* Make room for `rows` more rows in every per-position entry (called before a step,
 * so that nothing can fail once caches start changing). `keys` = the sequence's
 * tokens after the step (for the attention pattern). */
strata_status capture_reserve(strata_capture *cap, int rows, int keys, strata_error *err);
/* Append rows (each `width` values of dtype) to entry `e`. */
void capture_append(strata_capture *cap, int e, const void *rows, int n_rows);
/* Grow the pattern entry (heads, rows so far, keys) by n_rows query rows over `keys`
 * keys (earlier rows are zero-padded); returns where this step's row 0 of head 0
 * goes, and in *head_stride the floats between heads. */
float *capture_pattern_slot(strata_capture *cap, int e, int n_rows, int keys, size_t *head_stride);
/* Copy every requested state hook out of `cache`. */
void capture_states(strata_capture *cap, const struct strata_cache *cache);
/* The model a capture resolves names against. */
const strata_model *capture_model(const strata_capture *cap);
/* Elements per captured row of entry e (per-position hooks). */
size_t capture_row_elems(const strata_capture *cap, int e);
/* Whether the capture wants full-sequence logits. */
int capture_wants_logits(const strata_capture *cap);

/* interventions.c: edit one sequence's rows (n, width) at (p, layer); pos0 is the
 * cache position of the first row. */
void interventions_apply(const strata_interventions *iv, hook_point p, int layer, float *rows, int pos0, int n);
/* Experts removed from routing at (layer, cache position pos): 1 and mask (n_experts)
 * filled, or 0 when none. */
const strata_model *interventions_model(const strata_interventions *iv);
int interventions_ablated(const strata_interventions *iv, int layer, int pos, unsigned char *mask, int n_experts);

#endif
