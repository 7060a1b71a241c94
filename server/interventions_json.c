/*
 * interventions_json.c — the JSON form of positions and interventions (api.md,
 * Activations), turned into strata_interventions. Shared by /v1/activations and the
 * steering field of /v1/completions and /v1/chat/completions.
 *
 *   {"hook": "blocks.4.hook_out", "op": "add", "value": [...], "positions": "all"}
 *   ops: zero | scale (factor) | add (value) | set (value) | patch (source) |
 *        project_out (direction) | ablate_experts (experts)
 *
 * Malformed JSON (wrong types) is 400; well-formed but impossible (unknown hook,
 * wrong layer kind, shape mismatch, position out of range) is 422.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activations.h"

#define MAX_INTERVENTIONS 256

int positions_parse(json_t *v, int n, int check_range, int32_t **ids, int *count, api_error *e)
{
    *ids = NULL;
    *count = 0;
    if (!v || json_is_null(v) || (json_is_string(v) && !strcmp(json_string_value(v), "all")))
        return 1;
    json_t *one = json_is_integer(v) ? v : NULL;
    if (json_is_string(v) && !strcmp(json_string_value(v), "last"))
        one = NULL;
    else if (!one && (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > (1u << 20)))
        return api_fail(e, 400, "positions", "invalid_value",
                        "positions must be \"all\", \"last\", an integer or a non-empty list of integers");
    size_t k = one || json_is_string(v) ? 1 : json_array_size(v);
    *ids = malloc(sizeof(int32_t) * k);
    if (!*ids)
        return api_fail(e, 500, NULL, "internal_error", "out of memory");
    for (size_t i = 0; i < k; i++) {
        json_t *x = json_is_string(v) ? NULL : one ? one : json_array_get(v, i);
        if (x && !json_is_integer(x)) {
            free(*ids);
            *ids = NULL;
            return api_fail(e, 400, "positions", "invalid_value", "positions[%zu] must be an integer", i);
        }
        json_int_t p = x ? json_integer_value(x) : -1;
        if (check_range && (p < -n || p >= n)) {
            free(*ids);
            *ids = NULL;
            return api_fail(e, 422, "positions", "position_out_of_range", "position %lld is outside the %d tokens "
                            "of the prompt (valid: %d..%d)", (long long)p, n, -n, n - 1);
        }
        (*ids)[i] = (int32_t)(p < INT32_MIN ? INT32_MIN : p > INT32_MAX ? INT32_MAX : p);
    }
    *count = (int)k;
    return 1;
}

/* Count the numbers of a (nested) array; -1 if anything else is inside. */
static long count_numbers(json_t *v, int depth)
{
    if (json_is_number(v))
        return 1;
    if (!json_is_array(v) || depth > 4)
        return -1;
    long n = 0;
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        long c = count_numbers(x, depth + 1);
        if (c < 0)
            return -1;
        n += c;
    }
    return n;
}

static void flatten(json_t *v, float *out, size_t *k)
{
    if (json_is_number(v)) {
        out[(*k)++] = (float)json_number_value(v);
        return;
    }
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
        flatten(x, out, k);
}

/* Field `key` of intervention i, a number array, flattened (row-major). */
static int get_floats(json_t *obj, const char *key, int i, float **out, size_t *n, api_error *e)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    *n = 0;
    if (!v)
        return 1;
    long c = count_numbers(v, 0);
    if (c <= 0)
        return api_fail(e, 400, "interventions", "invalid_value",
                        "interventions[%d].%s must be a number array (nested lists allowed)", i, key);
    *out = malloc(sizeof(float) * (size_t)c);
    if (!*out)
        return api_fail(e, 500, NULL, "internal_error", "out of memory");
    flatten(v, *out, n);
    for (size_t k = 0; k < *n; k++)
        if (!isfinite((*out)[k]))
            return api_fail(e, 400, "interventions", "invalid_value",
                            "interventions[%d].%s[%zu] is not a finite float32 number", i, key, k);
    return 1;
}

static int op_of(const char *s, strata_intervention_op *op)
{
    static const char *names[] = {"zero", "scale", "add", "set", "patch", "project_out", "ablate_experts"};
    for (int i = 0; i < 7; i++)
        if (!strcmp(s, names[i])) {
            *op = (strata_intervention_op)i;
            return 1;
        }
    return 0;
}

/* status for an engine refusal */
static int engine_fail(api_error *e, const strata_error *err, int i)
{
    int unprocessable = strstr(err->message, "unknown hook") || strstr(err->message, "does not exist") ||
                        strstr(err->message, "shape mismatch") || strstr(err->message, "outside") ||
                        strstr(err->message, "cannot be intervened") || strstr(err->message, "MoE") ||
                        strstr(err->message, "leaves fewer");
    return api_fail(e, unprocessable ? 422 : 400, "interventions",
                    strstr(err->message, "shape mismatch") ? "shape_mismatch"
                    : strstr(err->message, "unknown hook") ? "unknown_hook"
                    : strstr(err->message, "does not exist") ? "hook_not_on_layer"
                    : unprocessable ? "invalid_intervention" : "invalid_value",
                    "interventions[%d]: %s", i, err->message);
}

/* The source rows of a patch: run `run`'s capture of `hook`, at the same positions
 * (resolved against the source's own length). */
static int patch_value(const patch_source *src, const char *hook, const int32_t *pos, int n_pos, float **out,
                       size_t *n, api_error *e, int i)
{
    strata_tensor_view v = {0};
    int found = 0;
    for (int k = 0; k < strata_capture_count(src->capture) && !found; k++)
        found = strata_capture_get(src->capture, k, &v, NULL) == STRATA_OK && !strcmp(v.name, hook);
    if (!found || v.dtype != STRATA_F32 || v.ndim < 2)
        return api_fail(e, 422, "interventions", "invalid_intervention",
                        "interventions[%d]: the source run has no per-position capture of '%s'", i, hook);
    size_t w = 1;
    for (int d = 1; d < v.ndim; d++)
        w *= (size_t)v.shape[d];
    int rows = pos ? n_pos : (int)v.shape[0];
    *out = malloc(sizeof(float) * w * (size_t)(rows ? rows : 1));
    if (!*out)
        return api_fail(e, 500, NULL, "internal_error", "out of memory");
    for (int k = 0; k < rows; k++) {
        int p = pos ? pos[k] : k;
        if (p < 0)
            p += (int)v.shape[0];
        if (p < 0 || p >= v.shape[0])
            return api_fail(e, 422, "interventions", "position_out_of_range", "interventions[%d]: position %d is "
                            "outside the %d tokens of the source run", i, pos[k], (int)v.shape[0]);
        memcpy(*out + (size_t)k * w, (const float *)v.data + (size_t)p * w, sizeof(float) * w);
    }
    *n = w * (size_t)rows;
    return 1;
}

static int source_of(json_t *it, int *run, const char **hook)
{
    json_t *s = json_object_get(it, "source");
    *hook = NULL;
    if (json_is_integer(s)) {
        *run = (int)json_integer_value(s);
        return 1;
    }
    if (!json_is_object(s) || !json_is_integer(json_object_get(s, "run")))
        return 0;
    *run = (int)json_integer_value(json_object_get(s, "run"));
    json_t *h = json_object_get(s, "hook");
    if (h && !json_is_string(h))
        return 0;
    *hook = h ? json_string_value(h) : NULL;
    return 1;
}

/* Expand a (possibly glob) hook name into exact names, through a scratch capture. */
static int expand_names(const server *srv, const char *pattern, strata_capture **out, int i, api_error *e)
{
    strata_error err;
    if (strata_capture_new(srv->model, out, &err) != STRATA_OK)
        return api_fail(e, 500, NULL, "internal_error", "%s", err.message);
    if (strata_capture_add(*out, pattern, &err) != STRATA_OK)
        return engine_fail(e, &err, i);
    return 1;
}

/* One patch item: every hook the name matches gets the rows of its own source. */
static int add_patch(const server *srv, strata_interventions *iv, json_t *it, const strata_intervention *spec,
                     const patch_source *sources, int n_sources, int i, api_error *e)
{
    int run;
    const char *src_hook;
    if (!source_of(it, &run, &src_hook))
        return api_fail(e, 400, "interventions", "invalid_value", "interventions[%d]: patch needs \"source\": a run "
                        "index or {\"run\": index, \"hook\": name}", i);
    if (run < 0 || run >= n_sources)
        return api_fail(e, 422, "interventions", "invalid_intervention", "interventions[%d]: patch source run %d "
                        "is not an earlier run of this request (%d before this one; use \"runs\")", i, run, n_sources);
    strata_capture *names = NULL;
    int ok = expand_names(srv, spec->hook, &names, i, e);
    for (int k = 0; ok && k < strata_capture_count(names); k++) {
        strata_tensor_view v;
        strata_capture_get(names, k, &v, NULL);
        strata_intervention one = *spec;
        one.hook = v.name;
        float *val = NULL;
        size_t n = 0;
        ok = patch_value(&sources[run], src_hook ? src_hook : v.name, spec->positions, spec->n_positions, &val, &n, e, i);
        one.value = val;
        one.n_value = n;
        strata_error err;
        if (ok && strata_interventions_add(iv, &one, &err) != STRATA_OK)
            ok = engine_fail(e, &err, i);
        free(val);
    }
    strata_capture_free(names);
    return ok;
}

static int add_item(const server *srv, strata_interventions *iv, json_t *it, int n_tokens, const patch_source *sources,
                    int n_sources, int i, api_error *e)
{
    json_t *hook = json_object_get(it, "hook"), *op = json_object_get(it, "op");
    strata_intervention spec = {0};
    if (!json_is_object(it) || !json_is_string(hook) || !json_is_string(op) || !op_of(json_string_value(op), &spec.op))
        return api_fail(e, 400, "interventions", "invalid_value", "interventions[%d] must be an object with \"hook\" "
                        "and \"op\" (zero, scale, add, set, patch, project_out, ablate_experts)", i);
    spec.hook = json_string_value(hook);
    json_t *factor = json_object_get(it, "factor");
    if (spec.op == STRATA_OP_SCALE && !json_is_number(factor))
        return api_fail(e, 400, "interventions", "invalid_value", "interventions[%d]: scale needs a numeric factor", i);
    spec.factor = factor ? (float)json_number_value(factor) : 1.0f;
    if (spec.op == STRATA_OP_SCALE && !isfinite(spec.factor))
        return api_fail(e, 400, "interventions", "invalid_value", "interventions[%d]: factor must be finite", i);
    int32_t *pos = NULL, *experts = NULL;
    float *value = NULL;
    size_t n_value = 0;
    int n_pos = 0, ok = positions_parse(json_object_get(it, "positions"), n_tokens, 0, &pos, &n_pos, e);
    spec.positions = pos;
    spec.n_positions = n_pos;
    const char *vkey = spec.op == STRATA_OP_PROJECT_OUT ? "direction" : "value";
    if (ok && (spec.op == STRATA_OP_ADD || spec.op == STRATA_OP_SET || spec.op == STRATA_OP_PROJECT_OUT)) {
        ok = get_floats(it, vkey, i, &value, &n_value, e);
        if (ok && !value)
            ok = api_fail(e, 400, "interventions", "invalid_value", "interventions[%d]: %s needs \"%s\"", i,
                          json_string_value(op), vkey);
    }
    if (ok && spec.op == STRATA_OP_ABLATE_EXPERTS) {
        json_t *ex = json_object_get(it, "experts");
        size_t n = json_array_size(ex);
        experts = malloc(sizeof(int32_t) * (n + 1));
        ok = json_is_array(ex) && n > 0 && n <= 4096 && experts;
        for (size_t k = 0; ok && k < n; k++) {
            json_t *x = json_array_get(ex, k);
            ok = json_is_integer(x) && json_integer_value(x) >= -1000000 && json_integer_value(x) <= 1000000;
            if (ok)
                experts[k] = (int32_t)json_integer_value(x);
        }
        if (!ok)
            api_fail(e, 400, "interventions", "invalid_value", "interventions[%d]: ablate_experts needs \"experts\": "
                     "a non-empty list of expert indices", i);
        spec.experts = experts;
        spec.n_experts = (int)n;
    }
    spec.value = value;
    spec.n_value = n_value;
    if (ok && spec.op == STRATA_OP_PATCH) {
        ok = add_patch(srv, iv, it, &spec, sources, n_sources, i, e);
    } else if (ok) {
        strata_error err;
        if (strata_interventions_add(iv, &spec, &err) != STRATA_OK)
            ok = engine_fail(e, &err, i);
    }
    free(pos);
    free(value);
    free(experts);
    return ok;
}

int interventions_from_json(const server *srv, json_t *list, int origin, int n_tokens, const patch_source *sources,
                            int n_sources, strata_interventions **out, api_error *e)
{
    *out = NULL;
    if (!list || json_is_null(list))
        return 1;
    if (!json_is_array(list) || json_array_size(list) > MAX_INTERVENTIONS)
        return api_fail(e, 400, "interventions", "invalid_value", "interventions must be a list of at most %d edits",
                        MAX_INTERVENTIONS);
    strata_error err;
    if (strata_interventions_new(srv->model, origin, n_tokens, out, &err) != STRATA_OK)
        return api_fail(e, 500, NULL, "internal_error", "%s", err.message);
    size_t i;
    json_t *it;
    json_array_foreach(list, i, it)
        if (!add_item(srv, *out, it, n_tokens, sources, n_sources, (int)i, e)) {
            strata_interventions_free(*out);
            *out = NULL;
            return 0;
        }
    return 1;
}

int interventions_patch_hooks(json_t *list, int (*add)(void *user, int run, const char *hook, api_error *e),
                              void *user, api_error *e)
{
    size_t i;
    json_t *it;
    if (!json_is_array(list))
        return 1;
    json_array_foreach(list, i, it) {
        json_t *op = json_object_get(it, "op"), *hook = json_object_get(it, "hook");
        int run;
        const char *src_hook;
        if (!json_is_string(op) || strcmp(json_string_value(op), "patch") || !json_is_string(hook) ||
            !source_of(it, &run, &src_hook))
            continue;
        if (!add(user, run, src_hook ? src_hook : json_string_value(hook), e))
            return 0;
    }
    return 1;
}
