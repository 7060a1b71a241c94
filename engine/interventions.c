/*
 * interventions.c — strata_interventions: edits of activations at hook points
 * (zero, scale, add, set, patch, project_out, ablate_experts), checked and copied
 * when added, applied by the forward step to one sequence's rows at a time.
 *
 * Invariant: everything is validated in strata_interventions_add (hook exists and
 * can be edited, positions in range, value sizes, finite numbers), so applying
 * cannot fail and a step never stops halfway.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "hooks.h"

typedef struct item {
    hook_point point;
    int layer;
    strata_intervention_op op;
    int all;                    /* every position */
    int *pos;                   /* (n_pos) positions from the request start, in the given order */
    int n_pos;
    float factor;
    float *value;               /* (width) or (rows, width) */
    size_t width;
    int value_rows;             /* 0: one row broadcast; else rows of value */
    unsigned char *banned;      /* ABLATE_EXPERTS: (n_experts) */
} item;

struct strata_interventions {
    const strata_model *model;
    int origin, n_tokens;
    item *items;
    int n, cap;
};

static const char *op_name(strata_intervention_op op)
{
    static const char *names[] = {"zero", "scale", "add", "set", "patch", "project_out", "ablate_experts"};
    return (unsigned)op <= STRATA_OP_ABLATE_EXPERTS ? names[op] : "?";
}

strata_status strata_interventions_new(const strata_model *model, int origin, int n_tokens,
                                       strata_interventions **out, strata_error *err)
{
    *out = NULL;
    if (!model || origin < 0 || n_tokens < 0)
        return strata_fail(err, STRATA_E_INVALID, "interventions: bad model, origin or length");
    strata_interventions *iv = calloc(1, sizeof *iv);
    if (!iv)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    *iv = (strata_interventions){.model = model, .origin = origin, .n_tokens = n_tokens};
    *out = iv;
    return STRATA_OK;
}

static void item_free(item *it)
{
    free(it->pos);
    free(it->value);
    free(it->banned);
}

void strata_interventions_free(strata_interventions *iv)
{
    if (!iv)
        return;
    for (int i = 0; i < iv->n; i++)
        item_free(&iv->items[i]);
    free(iv->items);
    free(iv);
}

const strata_model *interventions_model(const strata_interventions *iv)
{
    return iv->model;
}

int strata_interventions_count(const strata_interventions *iv)
{
    return iv ? iv->n : 0;
}

/* The positions of spec, resolved against the request length. */
static strata_status resolve_positions(const strata_interventions *iv, const strata_intervention *spec, item *it,
                                       strata_error *err)
{
    if (!spec->positions) {
        it->all = 1;
        return STRATA_OK;
    }
    if (spec->n_positions <= 0 || spec->n_positions > (1 << 24))
        return strata_fail(err, STRATA_E_INVALID, "intervention on '%s': positions is empty", spec->hook);
    it->pos = malloc(sizeof(int) * (size_t)spec->n_positions);
    if (!it->pos)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    for (int k = 0; k < spec->n_positions; k++) {
        int p = spec->positions[k], n = iv->n_tokens;
        if (p < -n || p >= n)
            return strata_fail(err, STRATA_E_RANGE, "intervention on '%s': position %d is outside the %d "
                               "tokens of the request (valid: %d..%d)", spec->hook, p, n, -n, n - 1);
        it->pos[k] = p < 0 ? n + p : p;
    }
    it->n_pos = spec->n_positions;
    return STRATA_OK;
}

static strata_status check_finite(const strata_intervention *spec, strata_error *err)
{
    if ((spec->op == STRATA_OP_SCALE) && !isfinite(spec->factor))
        return strata_fail(err, STRATA_E_INVALID, "intervention on '%s': factor must be a finite number", spec->hook);
    for (size_t i = 0; i < spec->n_value; i++)
        if (!isfinite(spec->value[i]))
            return strata_fail(err, STRATA_E_INVALID, "intervention on '%s': value[%zu] is not a finite number "
                               "(NaN and infinity are refused)", spec->hook, i);
    return STRATA_OK;
}

/* Value of ADD / SET / PATCH / PROJECT_OUT: one row, or one row per selected position. */
static strata_status take_value(const strata_interventions *iv, const strata_intervention *spec, item *it,
                                strata_error *err)
{
    size_t w = it->width, rows = it->all ? (size_t)iv->n_tokens : (size_t)it->n_pos;
    int needs = spec->op == STRATA_OP_ADD || spec->op == STRATA_OP_SET || spec->op == STRATA_OP_PATCH ||
                spec->op == STRATA_OP_PROJECT_OUT;
    if (!needs)
        return STRATA_OK;
    if (!spec->value || !spec->n_value)
        return strata_fail(err, STRATA_E_INVALID, "intervention %s on '%s' needs a %s", op_name(spec->op), spec->hook,
                           spec->op == STRATA_OP_PROJECT_OUT ? "direction" : "value");
    int full_ok = spec->op != STRATA_OP_PROJECT_OUT;
    if (spec->n_value == w) {
        it->value_rows = 0;
    } else if (full_ok && spec->n_value == rows * w) {
        it->value_rows = (int)rows;
    } else {
        if (full_ok)
            return strata_fail(err, STRATA_E_INVALID, "intervention %s on '%s': shape mismatch: expected %zu values "
                               "([%zu]) or %zu ([%zu, %zu]), got %zu", op_name(spec->op), spec->hook, w, w, rows * w,
                               rows, w, spec->n_value);
        return strata_fail(err, STRATA_E_INVALID, "intervention project_out on '%s': shape mismatch: expected a "
                           "direction of %zu values, got %zu", spec->hook, w, spec->n_value);
    }
    if (spec->op == STRATA_OP_PROJECT_OUT) {
        double nn = 0;
        for (size_t i = 0; i < w; i++)
            nn += (double)spec->value[i] * spec->value[i];
        if (nn == 0)
            return strata_fail(err, STRATA_E_INVALID, "intervention project_out on '%s': the direction is zero",
                               spec->hook);
    }
    it->value = malloc(sizeof(float) * spec->n_value);
    if (!it->value)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    memcpy(it->value, spec->value, sizeof(float) * spec->n_value);
    return STRATA_OK;
}

static strata_status take_experts(const strata_interventions *iv, const strata_intervention *spec, item *it,
                                  strata_error *err)
{
    const strata_model_info *m = &iv->model->cfg.info;
    char kind = it->layer >= 0 ? iv->model->cfg.pattern[it->layer] : 0;
    if (kind != 'E')
        return strata_fail(err, STRATA_E_INVALID, "ablate_experts on '%s': not a hook of a MoE layer", spec->hook);
    if (!spec->experts || spec->n_experts <= 0)
        return strata_fail(err, STRATA_E_INVALID, "ablate_experts on '%s' needs a list of experts", spec->hook);
    it->banned = calloc((size_t)m->n_experts, 1);
    if (!it->banned)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    int n = 0;
    for (int i = 0; i < spec->n_experts; i++) {
        int e = spec->experts[i];
        if (e < 0 || e >= m->n_experts)
            return strata_fail(err, STRATA_E_RANGE, "ablate_experts on '%s': expert %d is outside [0, %d)", spec->hook,
                               e, m->n_experts);
        n += !it->banned[e];
        it->banned[e] = 1;
    }
    if (n > m->n_experts - m->experts_per_tok)
        return strata_fail(err, STRATA_E_INVALID, "ablate_experts on '%s': removing %d of %d experts leaves fewer "
                           "than the %d each token needs", spec->hook, n, m->n_experts, m->experts_per_tok);
    return STRATA_OK;
}

static strata_status add_one(strata_interventions *iv, const strata_intervention *spec, hook_point p, int layer,
                             strata_error *err)
{
    if (spec->op != STRATA_OP_ABLATE_EXPERTS && !hook_interveneable(p))
        return strata_fail(err, STRATA_E_INVALID, "hook '%s' cannot be intervened on (%s); %s", spec->hook,
                           p == HOOK_EXPERT_INDICES ? "integer expert choices" : "a state or pattern hook",
                           p == HOOK_EXPERT_INDICES ? "use ablate_experts to change routing"
                                                    : "edit the per-position hooks that produce it");
    if (iv->n == iv->cap) {
        int cap = iv->cap ? iv->cap * 2 : 8;
        item *grown = realloc(iv->items, sizeof *grown * (size_t)cap);
        if (!grown)
            return strata_fail(err, STRATA_E_NOMEM, "out of memory");
        iv->items = grown;
        iv->cap = cap;
    }
    item *it = &iv->items[iv->n];
    *it = (item){.point = p, .layer = layer, .op = spec->op, .factor = spec->factor,
                 .width = hook_width(iv->model, p)};
    strata_status st = resolve_positions(iv, spec, it, err);
    if (st == STRATA_OK)
        st = spec->op == STRATA_OP_ABLATE_EXPERTS ? take_experts(iv, spec, it, err) : take_value(iv, spec, it, err);
    if (st != STRATA_OK) {
        item_free(it);
        return st;
    }
    iv->n++;
    return STRATA_OK;
}

strata_status strata_interventions_add(strata_interventions *iv, const strata_intervention *spec, strata_error *err)
{
    if (!iv || !spec || !spec->hook)
        return strata_fail(err, STRATA_E_INVALID, "intervention: missing hook");
    if ((unsigned)spec->op > STRATA_OP_ABLATE_EXPERTS)
        return strata_fail(err, STRATA_E_INVALID, "intervention on '%s': unknown op %d", spec->hook, (int)spec->op);
    if (spec->n_value && !spec->value)
        return strata_fail(err, STRATA_E_INVALID, "intervention on '%s': value missing", spec->hook);
    STRATA_TRY(check_finite(spec, err));
    int max = HOOK_COUNT * (iv->model->cfg.info.n_layers + 1), n;
    hook_point *points = malloc(sizeof *points * (size_t)max);
    int *layers = malloc(sizeof *layers * (size_t)max);
    strata_status st = points && layers ? hook_expand(iv->model, spec->hook, points, layers, max, &n, err)
                                        : strata_fail(err, STRATA_E_NOMEM, "out of memory");
    int first = iv->n;
    for (int i = 0; st == STRATA_OK && i < n; i++)
        st = add_one(iv, spec, points[i], layers[i], err);
    if (st != STRATA_OK) /* all of a glob or nothing */
        while (iv->n > first)
            item_free(&iv->items[--iv->n]);
    free(points);
    free(layers);
    return st;
}

/* ---------------------------------------------------------------- applying */

static void edit_row(const item *it, float *x, const float *v)
{
    size_t w = it->width;
    switch (it->op) {
    case STRATA_OP_ZERO: memset(x, 0, sizeof(float) * w); break;
    case STRATA_OP_SCALE:
        for (size_t i = 0; i < w; i++)
            x[i] *= it->factor;
        break;
    case STRATA_OP_ADD:
        for (size_t i = 0; i < w; i++)
            x[i] += v[i];
        break;
    case STRATA_OP_SET:
    case STRATA_OP_PATCH: memcpy(x, v, sizeof(float) * w); break;
    case STRATA_OP_PROJECT_OUT: {
        double xd = 0, dd = 0;
        for (size_t i = 0; i < w; i++) {
            xd += (double)x[i] * v[i];
            dd += (double)v[i] * v[i];
        }
        float c = (float)(xd / dd);
        for (size_t i = 0; i < w; i++)
            x[i] -= c * v[i];
        break;
    }
    case STRATA_OP_ABLATE_EXPERTS: break;
    }
}

/* Apply `it` to the row at request position pos; k = index of pos in the list. */
static void edit_at(const item *it, float *x, int k)
{
    const float *v = it->value_rows ? it->value + (size_t)k * it->width : it->value;
    edit_row(it, x, v);
}

void interventions_apply(const strata_interventions *iv, hook_point p, int layer, float *rows, int pos0, int n)
{
    for (int i = 0; i < iv->n; i++) {
        const item *it = &iv->items[i];
        if (it->point != p || it->layer != layer || it->op == STRATA_OP_ABLATE_EXPERTS)
            continue;
        int first = pos0 - iv->origin;
        for (int t = 0; t < n; t++) {
            int pos = first + t;
            float *x = rows + (size_t)t * it->width;
            if (it->all) {
                if (!it->value_rows || pos < it->value_rows)
                    edit_at(it, x, pos);
                continue;
            }
            for (int k = 0; k < it->n_pos; k++)
                if (it->pos[k] == pos)
                    edit_at(it, x, k);
        }
    }
}

int interventions_ablated(const strata_interventions *iv, int layer, int pos, unsigned char *mask, int n_experts)
{
    int any = 0;
    pos -= iv->origin;
    for (int i = 0; i < iv->n; i++) {
        const item *it = &iv->items[i];
        if (it->op != STRATA_OP_ABLATE_EXPERTS || it->layer != layer)
            continue;
        int hit = it->all;
        for (int k = 0; !hit && k < it->n_pos; k++)
            hit = it->pos[k] == pos;
        if (!hit)
            continue;
        if (!any)
            memset(mask, 0, (size_t)n_experts);
        any = 1;
        for (int e = 0; e < n_experts; e++)
            mask[e] |= it->banned[e];
    }
    return any;
}
