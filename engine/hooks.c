/*
 * hooks.c — the hook point catalogue (names of api.md, which layer kinds have each,
 * shapes) and strata_capture: name/glob resolution, storage of captured tensors.
 *
 * Invariant: capture storage for a step is reserved before the step starts, so a
 * step never fails halfway with caches already advanced.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "core/error.h"
#include "hooks.h"

typedef enum tail_kind { T_D, T_INPROJ, T_CONV, T_H, T_DINNER, T_SSM, T_CONVSTATE, T_Q, T_KV,
                         T_PATTERN, T_KVCACHE, T_F, T_E, T_TOPK, T_V } tail_kind;

static const struct {
    const char *name;   /* after "blocks.{i}." for per-layer hooks */
    const char *kinds;  /* layer kinds that have it; NULL = global */
    tail_kind tail;
    int state;          /* 1: holds the state after the last step */
    strata_dtype dtype;
} catalog[HOOK_COUNT] = {
    [HOOK_EMBED_OUT] = {"embed.hook_out", NULL, T_D, 0, STRATA_F32},
    [HOOK_BLOCK_IN] = {"hook_in", "M*-E", T_D, 0, STRATA_F32},
    [HOOK_MIXER_IN] = {"mixer.hook_in", "M*-E", T_D, 0, STRATA_F32},
    [HOOK_MIXER_OUT] = {"mixer.hook_out", "M*-E", T_D, 0, STRATA_F32},
    [HOOK_BLOCK_OUT] = {"hook_out", "M*-E", T_D, 0, STRATA_F32},
    [HOOK_IN_PROJ_OUT] = {"mixer.in_proj.hook_out", "M", T_INPROJ, 0, STRATA_F32},
    [HOOK_CONV_ACT] = {"mixer.hook_conv_act", "M", T_CONV, 0, STRATA_F32},
    [HOOK_SSM_DT] = {"mixer.hook_ssm_dt", "M", T_H, 0, STRATA_F32},
    [HOOK_SSM_Y] = {"mixer.hook_ssm_y", "M", T_DINNER, 0, STRATA_F32},
    [HOOK_INNER_NORM_OUT] = {"mixer.inner_norm.hook_out", "M", T_DINNER, 0, STRATA_F32},
    [HOOK_SSM_STATE] = {"mixer.ssm_state", "M", T_SSM, 1, STRATA_F32},
    [HOOK_CONV_STATE] = {"mixer.conv_state", "M", T_CONVSTATE, 1, STRATA_F32},
    [HOOK_Q] = {"mixer.hook_q", "*", T_Q, 0, STRATA_F32},
    [HOOK_K] = {"mixer.hook_k", "*", T_KV, 0, STRATA_F32},
    [HOOK_V] = {"mixer.hook_v", "*", T_KV, 0, STRATA_F32},
    [HOOK_PATTERN] = {"mixer.hook_pattern", "*", T_PATTERN, 1, STRATA_F32},
    [HOOK_Z] = {"mixer.hook_z", "*", T_Q, 0, STRATA_F32},
    [HOOK_K_CACHE] = {"mixer.k_cache", "*", T_KVCACHE, 1, STRATA_F32},
    [HOOK_V_CACHE] = {"mixer.v_cache", "*", T_KVCACHE, 1, STRATA_F32},
    [HOOK_MLP_PRE] = {"mixer.hook_pre", "-", T_F, 0, STRATA_F32},
    [HOOK_MLP_POST] = {"mixer.hook_post", "-", T_F, 0, STRATA_F32},
    [HOOK_ROUTER_LOGITS] = {"mixer.hook_router_logits", "E", T_E, 0, STRATA_F32},
    [HOOK_EXPERT_INDICES] = {"mixer.hook_expert_indices", "E", T_TOPK, 0, STRATA_I32},
    [HOOK_EXPERT_WEIGHTS] = {"mixer.hook_expert_weights", "E", T_TOPK, 0, STRATA_F32},
    [HOOK_SHARED_OUT] = {"mixer.shared_experts.hook_out", "E", T_D, 0, STRATA_F32},
    [HOOK_LN_FINAL_OUT] = {"ln_final.hook_out", NULL, T_D, 0, STRATA_F32},
    [HOOK_LOGITS] = {"logits", NULL, T_V, 0, STRATA_F32},
};

typedef struct cap_entry {
    hook_point point;
    int layer;
    char name[96];
    strata_dtype dtype;
    int ndim;
    int64_t shape[4];   /* per-position hooks: shape[0] = rows captured so far */
    size_t row_elems;   /* elements per row (per-position hooks) */
    void *data;
    size_t cap_elems;
} cap_entry;

struct strata_capture {
    const strata_model *model;
    cap_entry *e;
    int n, cap;
    int *index;         /* (HOOK_COUNT, n_layers + 1) entry + 1, 0 = not captured */
};

/* The shape after the positions axis; for state hooks the whole shape. */
static int tail_shape(const strata_model *model, tail_kind t, int64_t *out)
{
    const strata_model_info *m = &model->cfg.info;
    switch (t) {
    case T_D: out[0] = m->hidden_size; return 1;
    case T_INPROJ: out[0] = m->in_proj_dim; return 1;
    case T_CONV: out[0] = m->conv_dim; return 1;
    case T_H: out[0] = m->mamba_heads; return 1;
    case T_DINNER: out[0] = m->d_inner; return 1;
    case T_SSM: out[0] = m->mamba_heads; out[1] = m->mamba_head_dim; out[2] = m->ssm_state_size; return 3;
    case T_CONVSTATE: out[0] = m->conv_dim; out[1] = m->conv_kernel - 1; return 2;
    case T_Q: out[0] = m->attn_heads; out[1] = m->head_dim; return 2;
    case T_KV: out[0] = m->kv_heads; out[1] = m->head_dim; return 2;
    case T_PATTERN: out[0] = m->attn_heads; out[1] = 0; out[2] = 0; return 3;
    case T_KVCACHE: out[0] = 0; out[1] = m->kv_heads; out[2] = m->head_dim; return 3;
    case T_F: out[0] = m->intermediate_size; return 1;
    case T_E: out[0] = m->n_experts; return 1;
    case T_TOPK: out[0] = m->experts_per_tok; return 1;
    case T_V: out[0] = m->vocab_size; return 1;
    }
    return 0;
}

static int layer_has(const strata_model *m, hook_point p, int layer)
{
    return catalog[p].kinds && strchr(catalog[p].kinds, m->cfg.pattern[layer]) != NULL;
}

static void hook_name(hook_point p, int layer, char *buf, size_t len)
{
    if (catalog[p].kinds)
        snprintf(buf, len, "blocks.%d.%s", layer, catalog[p].name);
    else
        snprintf(buf, len, "%s", catalog[p].name);
}

/* Glob where '*' matches within one dot-separated segment (so "blocks.*.hook_out"
 * does not match "blocks.3.mixer.hook_out"). Patterns come from requests: the match
 * is iterative (constant stack) and takes O(|pat| x |s|) time whatever the stars —
 * the first star of a run is the only backtracking point, and a matched '.' fixes
 * the alignment for good since no star reaches past it. */
static int glob_match(const char *pat, const char *s)
{
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*pat == '*') {
            while (*pat == '*')
                pat++;
            star = pat;
            resume = s;
        } else if (*pat == *s) {
            if (*s == '.')
                star = NULL;
            pat++;
            s++;
        } else if (star && *resume != '.') {
            pat = star;
            s = ++resume;
        } else {
            return 0;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

static strata_status add_entry(strata_capture *c, hook_point p, int layer, strata_error *err)
{
    int slot = (int)p * (c->model->cfg.info.n_layers + 1) + layer + 1;
    if (c->index[slot])
        return STRATA_OK;
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 16;
        cap_entry *grown = realloc(c->e, sizeof *grown * (size_t)cap);
        if (!grown)
            return strata_fail(err, STRATA_E_NOMEM, "out of memory");
        c->e = grown;
        c->cap = cap;
    }
    cap_entry *e = &c->e[c->n];
    memset(e, 0, sizeof *e);
    e->point = p;
    e->layer = layer;
    e->dtype = catalog[p].dtype;
    hook_name(p, layer, e->name, sizeof e->name);
    int64_t tail[4];
    int nt = tail_shape(c->model, catalog[p].tail, tail);
    if (catalog[p].state) {
        e->ndim = nt;
        memcpy(e->shape, tail, sizeof(int64_t) * (size_t)nt);
    } else {
        e->ndim = nt + 1;
        e->row_elems = 1;
        for (int i = 0; i < nt; i++) {
            e->shape[i + 1] = tail[i];
            e->row_elems *= (size_t)tail[i];
        }
    }
    c->index[slot] = ++c->n;
    return STRATA_OK;
}

/* Edit distance, for "did you mean" suggestions. */
static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 95 || lb > 95)
        return 99;
    int row[96];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cur = row[j], sub = prev + (a[i - 1] != b[j - 1]);
            int best = row[j] + 1 < row[j - 1] + 1 ? row[j] + 1 : row[j - 1] + 1;
            row[j] = best < sub ? best : sub;
            prev = cur;
        }
    }
    return row[lb];
}

/* The error for a pattern that matched nothing: wrong layer kind, or unknown. */
static strata_status explain_no_match(const strata_model *m, const char *pattern, strata_error *err)
{
    int L = m->cfg.info.n_layers;
    int layer;
    char suffix[128];
    if (sscanf(pattern, "blocks.%d.%127s", &layer, suffix) == 2 && (layer < 0 || layer >= L))
        return strata_fail(err, STRATA_E_INVALID, "unknown hook '%s': layer %d does not exist (layers 0..%d)", pattern,
                           layer, L - 1);
    if (sscanf(pattern, "blocks.%d.%127s", &layer, suffix) == 2 || sscanf(pattern, "blocks.*.%127s", suffix) == 1) {
        for (int p = 0; p < HOOK_COUNT; p++) {
            if (!catalog[p].kinds || strcmp(catalog[p].name, suffix))
                continue;
            char where[512] = "";
            size_t o = 0;
            for (int i = 0; i < L && o < sizeof where - 8; i++)
                if (layer_has(m, (hook_point)p, i))
                    o += (size_t)snprintf(where + o, sizeof where - o, "%s%d", o ? ", " : "", i);
            return strata_fail(err, STRATA_E_INVALID, "hook '%s' does not exist on that layer: '%s' exists "
                               "on layers [%s] (kinds %s)", pattern, suffix, o ? where : "none",
                               catalog[p].kinds);
        }
    }
    /* suggest the nearest names of layer 0's kind and the globals */
    char best[3][96] = {"", "", ""};
    int bestd[3] = {1 << 30, 1 << 30, 1 << 30};
    for (int p = 0; p < HOOK_COUNT; p++)
        for (int i = catalog[p].kinds ? 0 : -1; i < (catalog[p].kinds ? L : 0); i++) {
            if (i >= 0 && !layer_has(m, (hook_point)p, i))
                continue;
            char name[96];
            hook_name((hook_point)p, i, name, sizeof name);
            int d = edit_distance(pattern, name);
            for (int k = 0; k < 3; k++)
                if (d < bestd[k]) {
                    for (int j = 2; j > k; j--) {
                        bestd[j] = bestd[j - 1];
                        memcpy(best[j], best[j - 1], sizeof best[j]);
                    }
                    bestd[k] = d;
                    snprintf(best[k], sizeof best[k], "%s", name);
                    break;
                }
        }
    return strata_fail(err, STRATA_E_INVALID, "unknown hook '%s'; nearest: %s, %s, %s", pattern, best[0],
                       best[1], best[2]);
}

strata_status hook_expand(const strata_model *m, const char *pattern, hook_point *points, int *layers, int max,
                          int *n, strata_error *err)
{
    *n = 0;
    if (!pattern || !*pattern)
        return strata_fail(err, STRATA_E_INVALID, "empty hook name");
    if (strlen(pattern) > 200)
        return strata_fail(err, STRATA_E_INVALID, "hook name too long");
    int L = m->cfg.info.n_layers;
    for (int p = 0; p < HOOK_COUNT; p++)
        for (int i = catalog[p].kinds ? 0 : -1; i < (catalog[p].kinds ? L : 0); i++) {
            if (i >= 0 && !layer_has(m, (hook_point)p, i))
                continue;
            char name[96];
            hook_name((hook_point)p, i, name, sizeof name);
            if (!glob_match(pattern, name))
                continue;
            if (*n == max)
                return strata_fail(err, STRATA_E_LIMIT, "hook pattern '%s' matches more than %d hooks", pattern, max);
            points[*n] = (hook_point)p;
            layers[(*n)++] = i;
        }
    return *n ? STRATA_OK : explain_no_match(m, pattern, err);
}

size_t hook_width(const strata_model *m, hook_point p)
{
    int64_t tail[4];
    int nt = tail_shape(m, catalog[p].tail, tail);
    size_t w = 1;
    for (int i = 0; i < nt; i++)
        w *= (size_t)tail[i];
    return w;
}

int hook_interveneable(hook_point p)
{
    return !catalog[p].state && catalog[p].dtype == STRATA_F32;
}

void hook_name_of(hook_point p, int layer, char *buf, size_t len)
{
    hook_name(p, layer, buf, len);
}

strata_status strata_capture_add(strata_capture *c, const char *pattern, strata_error *err)
{
    if (!c)
        return strata_fail(err, STRATA_E_INVALID, "no capture");
    int max = HOOK_COUNT * (c->model->cfg.info.n_layers + 1), n;
    hook_point *points = malloc(sizeof *points * (size_t)max);
    int *layers = malloc(sizeof *layers * (size_t)max);
    strata_status st = points && layers ? hook_expand(c->model, pattern, points, layers, max, &n, err)
                                        : strata_fail(err, STRATA_E_NOMEM, "out of memory");
    for (int i = 0; st == STRATA_OK && i < n; i++)
        st = add_entry(c, points[i], layers[i], err);
    free(points);
    free(layers);
    return st;
}

/* Public catalogue: every hook of the model, in catalogue order then layer order. */
static int hook_nth(const strata_model *m, int index, hook_point *p_out, int *layer_out)
{
    int L = m->cfg.info.n_layers, k = 0;
    for (int p = 0; p < HOOK_COUNT; p++)
        for (int i = catalog[p].kinds ? 0 : -1; i < (catalog[p].kinds ? L : 0); i++) {
            if (i >= 0 && !layer_has(m, (hook_point)p, i))
                continue;
            if (k++ == index) {
                *p_out = (hook_point)p;
                *layer_out = i;
                return 1;
            }
        }
    return index < 0 ? 0 : -k;
}

int strata_hook_count(const strata_model *m)
{
    hook_point p;
    int l;
    return -hook_nth(m, 1 << 30, &p, &l);
}

strata_status strata_hook_get(const strata_model *m, int index, strata_hook_info *out, strata_error *err)
{
    hook_point p;
    int layer;
    if (!m || !out || hook_nth(m, index, &p, &layer) != 1)
        return strata_fail(err, STRATA_E_RANGE, "hook index %d out of range", index);
    memset(out, 0, sizeof *out);
    hook_name(p, layer, out->name, sizeof out->name);
    out->layer = layer;
    out->kind = layer >= 0 ? m->cfg.pattern[layer] : 0;
    out->dtype = catalog[p].dtype;
    out->per_position = !catalog[p].state || p == HOOK_PATTERN;
    out->interveneable = hook_interveneable(p);
    int64_t tail[4];
    int nt = tail_shape(m, catalog[p].tail, tail);
    if (p == HOOK_PATTERN) {       /* (H, P, T) */
        out->ndim = 3;
        out->shape[0] = tail[0];
        out->shape[1] = out->shape[2] = -1;
    } else if (p == HOOK_K_CACHE || p == HOOK_V_CACHE) {
        out->ndim = nt;
        memcpy(out->shape, tail, sizeof(int64_t) * (size_t)nt);
        out->shape[0] = -1;
    } else if (catalog[p].state) {
        out->ndim = nt;
        memcpy(out->shape, tail, sizeof(int64_t) * (size_t)nt);
    } else {
        out->ndim = nt + 1;
        out->shape[0] = -1;
        memcpy(out->shape + 1, tail, sizeof(int64_t) * (size_t)nt);
    }
    return STRATA_OK;
}

strata_status strata_capture_new(const strata_model *model, strata_capture **out, strata_error *err)
{
    *out = NULL;
    strata_capture *c = calloc(1, sizeof *c);
    if (c)
        c->index = calloc((size_t)HOOK_COUNT * (size_t)(model->cfg.info.n_layers + 1), sizeof *c->index);
    if (!c || !c->index) {
        free(c);
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    }
    c->model = model;
    *out = c;
    return STRATA_OK;
}

void strata_capture_free(strata_capture *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        free(c->e[i].data);
    free(c->e);
    free(c->index);
    free(c);
}

void strata_capture_clear(strata_capture *c)
{
    for (int i = 0; i < c->n; i++)
        if (!catalog[c->e[i].point].state)
            c->e[i].shape[0] = 0;
        else if (c->e[i].point == HOOK_PATTERN)
            c->e[i].shape[1] = c->e[i].shape[2] = 0;
}

int strata_capture_count(const strata_capture *c)
{
    return c ? c->n : 0;
}

strata_status strata_capture_get(const strata_capture *c, int index, strata_tensor_view *out,
                                 strata_error *err)
{
    if (!c || index < 0 || index >= c->n)
        return strata_fail(err, STRATA_E_RANGE, "capture index %d out of range", index);
    const cap_entry *e = &c->e[index];
    out->name = e->name;
    out->dtype = e->dtype;
    out->ndim = e->ndim;
    memcpy(out->shape, e->shape, sizeof out->shape);
    out->data = e->data;
    return STRATA_OK;
}

int capture_entry(const strata_capture *c, hook_point p, int layer)
{
    return c->index[(int)p * (c->model->cfg.info.n_layers + 1) + layer + 1] - 1;
}

const strata_model *capture_model(const strata_capture *c)
{
    return c->model;
}

size_t capture_row_elems(const strata_capture *c, int e)
{
    return c->e[e].row_elems;
}

int capture_wants_logits(const strata_capture *c)
{
    return capture_entry(c, HOOK_LOGITS, -1) >= 0;
}

static strata_status ensure(cap_entry *e, size_t elems, strata_error *err)
{
    if (elems <= e->cap_elems)
        return STRATA_OK;
    size_t cap = e->cap_elems ? e->cap_elems : 256;
    while (cap < elems)
        cap *= 2;
    void *grown = realloc(e->data, cap * 4);
    if (!grown)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory capturing %s", e->name);
    e->data = grown;
    e->cap_elems = cap;
    return STRATA_OK;
}

strata_status capture_reserve(strata_capture *c, int rows, int keys, strata_error *err)
{
    const strata_model_info *m = &c->model->cfg.info;
    for (int i = 0; i < c->n; i++) {
        cap_entry *e = &c->e[i];
        size_t need;
        switch (e->point) {
        case HOOK_PATTERN: need = (size_t)m->attn_heads * ((size_t)e->shape[1] + (size_t)rows) * (size_t)keys; break;
        case HOOK_K_CACHE:
        case HOOK_V_CACHE: need = (size_t)keys * (size_t)m->kv_heads * (size_t)m->head_dim; break;
        case HOOK_SSM_STATE: need = (size_t)m->d_inner * (size_t)m->ssm_state_size; break;
        case HOOK_CONV_STATE: need = (size_t)m->conv_dim * (size_t)(m->conv_kernel - 1); break;
        default: need = ((size_t)e->shape[0] + (size_t)rows) * e->row_elems;
        }
        STRATA_TRY(ensure(e, need, err));
    }
    return STRATA_OK;
}

void capture_append(strata_capture *c, int idx, const void *rows, int n_rows)
{
    cap_entry *e = &c->e[idx];
    memcpy((char *)e->data + (size_t)e->shape[0] * e->row_elems * 4, rows, (size_t)n_rows * e->row_elems * 4);
    e->shape[0] += n_rows;
}

float *capture_pattern_slot(strata_capture *c, int idx, int n_rows, int keys, size_t *head_stride)
{
    cap_entry *e = &c->e[idx];
    size_t H = (size_t)e->shape[0], r0 = (size_t)e->shape[1], k0 = (size_t)e->shape[2], K = (size_t)keys;
    size_t rows = r0 + (size_t)n_rows;
    float *d = e->data;
    /* widen the earlier rows in place, last first: every destination is at or after its source */
    for (size_t h = H; h-- > 0;)
        for (size_t t = r0; t-- > 0;) {
            memmove(d + (h * rows + t) * K, d + (h * r0 + t) * k0, sizeof(float) * k0);
            memset(d + (h * rows + t) * K + k0, 0, sizeof(float) * (K - k0));
        }
    e->shape[1] = (int64_t)rows;
    e->shape[2] = keys;
    *head_stride = rows * K;
    return d + r0 * K;
}

void capture_states(strata_capture *c, const strata_cache *cache)
{
    for (int i = 0; i < c->n; i++) {
        cap_entry *e = &c->e[i];
        const layer *l = &c->model->layers[e->layer < 0 ? 0 : e->layer];
        switch (e->point) {
        case HOOK_SSM_STATE: cache_copy_ssm(cache, l->state_index, e->data); break;
        case HOOK_CONV_STATE: cache_copy_conv(cache, l->state_index, e->data); break;
        case HOOK_K_CACHE:
        case HOOK_V_CACHE:
            e->shape[0] = cache_copy_kv(cache, l->state_index, e->point == HOOK_K_CACHE, e->data);
            break;
        default: break;
        }
    }
}
