/*
 * test_activations.c — /v1/hooks, /v1/activations and steering, through the real
 * strata-server over HTTP on the moe-small fixture (all four layer kinds): every
 * fixture tensor in json, npy and safetensors against expected.safetensors; derived
 * checks for hooks the fixtures lack; interventions (zero = layer removed, add/-add,
 * self-patching, scale linearity, expert ablation, steering); bad input.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_client.h"
#include "model/safetensors.h"
#include "util.h"

static test_server S;
static st_file *EXP;
static char IDS[1024];          /* the fixture's input_ids as a JSON list */
static int T;

static void start_with(const char *const *extra)
{
    strata_error err;
    char path[4096];
    snprintf(path, sizeof path, "%s/expected.safetensors", shared_path("fixtures/models/moe-small"));
    cr_assert_eq(st_open(path, &EXP, &err), STRATA_OK, "%s", err.message);
    const st_tensor *ids = st_find(EXP, "input_ids");
    T = (int)ids->numel;
    size_t o = 0;
    for (int i = 0; i < T; i++)
        o += (size_t)snprintf(IDS + o, sizeof IDS - o, "%s%d", i ? "," : "[", ((const int32_t *)ids->data)[i]);
    snprintf(IDS + o, sizeof IDS - o, "]");
    cr_assert_eq(server_start(&S, shared_path("fixtures/models/moe-small"), extra), 0, "strata-server did not start");
}

static void start(void)
{
    const char *extra[] = {"--max-activation-bytes", "2000000", NULL};
    start_with(extra);
}

/* Prefill in chunks of 7 rows: captures and patterns span several engine steps. */
static void start_chunked(void)
{
    const char *extra[] = {"--max-step-tokens", "7", NULL};
    start_with(extra);
}

static void stop(void)
{
    st_close(EXP);
    cr_assert_eq(server_stop(&S), 0, "strata-server exits 0 on SIGTERM");
}

TestSuite(activations, .init = start, .fini = stop, .timeout = 120);
TestSuite(activations_chunked, .init = start_chunked, .fini = stop, .timeout = 120);

static http_response post(const char *path, const char *body, const char *headers)
{
    http_response r;
    cr_assert_eq(http_do(S.port, "POST", path, body, strlen(body), headers, &r), 0, "POST %s", path);
    return r;
}

static json_t *post_json(const char *body, int want)
{
    http_response r = post("/v1/activations", body, NULL);
    cr_assert_eq(r.status, want, "%s -> %d: %.600s", body, r.status, r.body);
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    cr_assert(j, "response is JSON");
    http_response_free(&r);
    return j;
}

/* The data of activations[name] (or runs[run].activations[name]) as floats. */
static float *data_of(json_t *resp, int run, const char *name, size_t *n)
{
    json_t *acts = run < 0 ? json_object_get(resp, "activations")
                           : json_object_get(json_array_get(json_object_get(resp, "runs"), (size_t)run), "activations");
    json_t *t = json_object_get(acts, name);
    cr_assert(t, "no activation %s", name);
    json_t *d = json_object_get(t, "data");
    *n = json_array_size(d);
    float *out = malloc(sizeof(float) * (*n + 1));
    for (size_t i = 0; i < *n; i++)
        out[i] = (float)json_number_value(json_array_get(d, i));
    return out;
}

static void compare(const char *name, const float *got, size_t n, int64_t expect_elems)
{
    const st_tensor *e = st_find(EXP, name);
    cr_assert(e, "fixture lacks %s", name);
    cr_assert_eq((int64_t)n, expect_elems >= 0 ? expect_elems : e->numel, "%s: %zu values", name, n);
    if (e->dtype == ST_I32) {
        for (size_t i = 0; i < n; i++)
            cr_assert_eq((int32_t)got[i], ((const int32_t *)e->data)[i], "%s[%zu]", name, i);
        return;
    }
    double diff, tol;
    cr_assert(within_tolerance(got, e->data, n, &diff, &tol), "%s: max diff %g > %g", name, diff, tol);
}

/* Every float / int tensor the fixture carries for a forward of input_ids. */
static int fixture_hook(const char *name)
{
    return strcmp(name, "input_ids") && strncmp(name, "decode.", 7) && strncmp(name, "greedy.", 7);
}

static const char *ALL_HOOKS =
    "[\"embed.hook_out\",\"blocks.*.hook_in\",\"blocks.*.hook_out\",\"blocks.*.mixer.hook_in\","
    "\"blocks.*.mixer.hook_out\",\"ln_final.hook_out\",\"logits\",\"blocks.*.mixer.conv_state\","
    "\"blocks.*.mixer.ssm_state\",\"blocks.*.mixer.k_cache\",\"blocks.*.mixer.v_cache\","
    "\"blocks.*.mixer.hook_router_logits\",\"blocks.*.mixer.hook_expert_indices\","
    "\"blocks.*.mixer.hook_expert_weights\"]";

Test(activations, every_fixture_tensor_in_json)
{
    char body[8192];
    snprintf(body, sizeof body, "{\"prompt\":%s,\"hooks\":%s}", IDS, ALL_HOOKS);
    json_t *j = post_json(body, 200);
    int checked = 0;
    for (int i = 0; i < EXP->n_tensors; i++) {
        const char *name = EXP->tensors[i].name;
        if (!fixture_hook(name))
            continue;
        size_t n;
        float *got = data_of(j, -1, name, &n);
        compare(name, got, n, -1);
        free(got);
        checked++;
    }
    cr_assert_geq(checked, 50, "checked %d tensors", checked);
    json_t *ids = json_object_get(json_object_get(j, "tokens"), "ids");
    cr_assert_eq((int)json_array_size(ids), T);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")), T);
    json_decref(j);
}

Test(activations, every_fixture_tensor_in_safetensors)
{
    char body[8192];
    snprintf(body, sizeof body, "{\"prompt\":%s,\"hooks\":%s}", IDS, ALL_HOOKS);
    http_response r = post("/v1/activations", body, "Accept: application/x-safetensors\r\n");
    cr_assert_eq(r.status, 200, "%.300s", r.body);
    cr_assert(strstr(r.headers, "application/x-safetensors"));
    char path[] = "/tmp/strata-act-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_eq(write(fd, r.body, r.body_len), (ssize_t)r.body_len);
    close(fd);
    http_response_free(&r);
    st_file *got;
    strata_error err;
    cr_assert_eq(st_open(path, &got, &err), STRATA_OK, "the response is a valid safetensors file: %s", err.message);
    unlink(path);
    cr_assert(got->metadata_json && strstr(got->metadata_json, "pieces"), "metadata carries the JSON parts");
    const st_tensor *ids = st_find(got, "input_ids");
    cr_assert(ids && ids->numel == T && !memcmp(ids->data, st_find(EXP, "input_ids")->data, 4 * (size_t)T));
    int checked = 0;
    for (int i = 0; i < EXP->n_tensors; i++) {
        const char *name = EXP->tensors[i].name;
        if (!fixture_hook(name))
            continue;
        const st_tensor *t = st_find(got, name);
        cr_assert(t, "response lacks %s", name);
        cr_assert_eq(t->ndim, EXP->tensors[i].ndim, "%s ndim", name);
        for (int d = 0; d < t->ndim; d++)
            cr_assert_eq(t->shape[d], EXP->tensors[i].shape[d], "%s shape[%d]", name, d);
        if (t->dtype == ST_I32) {
            cr_assert_eq(memcmp(t->data, EXP->tensors[i].data, 4 * (size_t)t->numel), 0, "%s", name);
        } else {
            double diff, tol;
            cr_assert(within_tolerance(t->data, EXP->tensors[i].data, (size_t)t->numel, &diff, &tol), "%s: %g > %g",
                      name, diff, tol);
        }
        checked++;
    }
    cr_assert_geq(checked, 50);
    st_close(got);
}

/* .npy: parse the header's shape and compare the data. */
static void check_npy(const char *name)
{
    char body[4096];
    snprintf(body, sizeof body, "{\"prompt\":%s,\"hooks\":[\"%s\"],\"format\":\"npy\"}", IDS, name);
    http_response r = post("/v1/activations", body, NULL);
    cr_assert_eq(r.status, 200, "%s: %.300s", name, r.body);
    cr_assert(r.body_len > 10 && !memcmp(r.body, "\x93NUMPY\x01\x00", 8), "%s: npy magic", name);
    size_t hl = (size_t)(unsigned char)r.body[8] | (size_t)(unsigned char)r.body[9] << 8;
    cr_assert_eq((10 + hl) % 64, 0, "header aligned to 64");
    const st_tensor *e = st_find(EXP, name);
    cr_assert(strstr(r.body + 10, e->dtype == ST_I32 ? "'<i4'" : "'<f4'"));
    size_t n = (r.body_len - 10 - hl) / 4;
    cr_assert_eq((int64_t)n, e->numel, "%s", name);
    float *f = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) {
        const char *p = r.body + 10 + hl + 4 * i;
        if (e->dtype == ST_I32) {
            int32_t v;
            memcpy(&v, p, 4);
            f[i] = (float)v;
        } else {
            memcpy(&f[i], p, 4);
        }
    }
    compare(name, f, n, -1);
    free(f);
    http_response_free(&r);
}

Test(activations, every_fixture_tensor_in_npy)
{
    int checked = 0;
    for (int i = 0; i < EXP->n_tensors; i++)
        if (fixture_hook(EXP->tensors[i].name)) {
            check_npy(EXP->tensors[i].name);
            checked++;
        }
    cr_assert_geq(checked, 50);
}

Test(activations, hooks_listing)
{
    http_response r;
    cr_assert_eq(http_do(S.port, "GET", "/v1/hooks", NULL, 0, NULL, &r), 0);
    cr_assert_eq(r.status, 200);
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    http_response_free(&r);
    json_t *data = json_object_get(j, "data");
    int seen_pattern = 0, seen_ssm = 0, seen_router = 0, seen_pre = 0;
    size_t i;
    json_t *h;
    json_array_foreach(data, i, h) {
        const char *name = json_string_value(json_object_get(h, "name"));
        const char *kind = json_string_value(json_object_get(h, "layer_kind"));
        cr_assert(json_object_get(h, "shape") && json_object_get(h, "dtype") && json_object_get(h, "interveneable"));
        if (!strcmp(name, "blocks.3.mixer.hook_pattern")) {
            seen_pattern = 1;
            cr_assert_str_eq(kind, "attention");
            cr_assert(json_is_false(json_object_get(h, "interveneable")));
        }
        if (!strcmp(name, "blocks.0.mixer.ssm_state"))
            seen_ssm = !strcmp(kind, "mamba") && json_integer_value(json_array_get(json_object_get(h, "shape"), 0)) == 8;
        if (!strcmp(name, "blocks.1.mixer.hook_router_logits"))
            seen_router = !strcmp(kind, "moe") && json_is_true(json_object_get(h, "interveneable"));
        if (!strcmp(name, "blocks.6.mixer.hook_pre"))
            seen_pre = !strcmp(kind, "mlp");
        cr_assert(!strstr(name, "blocks.6.mixer.hook_ssm"), "MLP layer has no Mamba hooks");
    }
    cr_assert(seen_pattern && seen_ssm && seen_router && seen_pre);
    json_decref(j);
}

/* ---------------------------------------------------------------- derived checks */

Test(activations, derived_mlp_pattern_positions)
{
    char body[4096];
    snprintf(body, sizeof body, "{\"prompt\":%s,\"hooks\":[\"blocks.6.mixer.hook_pre\",\"blocks.6.mixer.hook_post\","
             "\"blocks.3.mixer.hook_pattern\",\"blocks.*.hook_out\"]}", IDS);
    json_t *j = post_json(body, 200);
    size_t n, m;
    float *pre = data_of(j, -1, "blocks.6.mixer.hook_pre", &n), *post_ = data_of(j, -1, "blocks.6.mixer.hook_post", &m);
    cr_assert_eq(n, m);
    for (size_t i = 0; i < n; i++)
        cr_assert_float_eq(post_[i], pre[i] > 0 ? pre[i] * pre[i] : 0.0f, 1e-5 + 1e-6 * fabsf(post_[i]));
    float *pat = data_of(j, -1, "blocks.3.mixer.hook_pattern", &n);
    cr_assert_eq(n, (size_t)4 * T * T);
    for (int h = 0; h < 4; h++)
        for (int t = 0; t < T; t++) {
            double sum = 0;
            for (int k = 0; k < T; k++) {
                float p = pat[((size_t)h * T + t) * T + k];
                sum += p;
                if (k > t)
                    cr_assert_eq(p, 0.0f, "causal");
            }
            cr_assert_float_eq(sum, 1.0, 1e-5);
        }
    float *out3 = data_of(j, -1, "blocks.3.hook_out", &n);
    json_decref(j);
    /* positions: last, an index, a negative list — the same rows as "all" */
    snprintf(body, sizeof body, "{\"prompt\":%s,\"hooks\":[\"blocks.3.hook_out\",\"blocks.3.mixer.hook_pattern\"],"
             "\"positions\":[-1,0,5]}", IDS);
    j = post_json(body, 200);
    float *sel = data_of(j, -1, "blocks.3.hook_out", &m);
    cr_assert_eq(m, 3 * 64);
    cr_assert_eq(memcmp(sel, out3 + (size_t)(T - 1) * 64, 64 * 4), 0);
    cr_assert_eq(memcmp(sel + 64, out3, 64 * 4), 0);
    cr_assert_eq(memcmp(sel + 128, out3 + 5 * 64, 64 * 4), 0);
    float *psel = data_of(j, -1, "blocks.3.mixer.hook_pattern", &m);
    cr_assert_eq(m, (size_t)4 * 3 * T, "pattern keeps all keys for the chosen query rows");
    cr_assert_eq(memcmp(psel, pat + (size_t)(T - 1) * T, (size_t)T * 4), 0);
    json_t *pos = json_object_get(json_object_get(json_object_get(j, "activations"), "blocks.3.hook_out"), "positions");
    cr_assert_eq(json_integer_value(json_array_get(pos, 0)), T - 1);
    json_decref(j);
    free(pre);
    free(post_);
    free(pat);
    free(out3);
    free(sel);
    free(psel);
}

/* x = one layer's hook with an edit; returns the data of `want`. */
static float *run_edit(const char *interventions, const char *want, size_t *n)
{
    char body[8192];
    snprintf(body, sizeof body, "{\"prompt\":%s,\"hooks\":[\"%s\"],\"interventions\":%s}", IDS, want, interventions);
    json_t *j = post_json(body, 200);
    float *d = data_of(j, -1, want, n);
    json_decref(j);
    return d;
}

Test(activations, mamba_out_proj_is_linear_in_inner_norm)
{
    size_t n;
    float *base = run_edit("[]", "blocks.2.mixer.hook_out", &n);
    float *two = run_edit("[{\"hook\":\"blocks.2.mixer.inner_norm.hook_out\",\"op\":\"scale\",\"factor\":2}]",
                          "blocks.2.mixer.hook_out", &n);
    float *zero = run_edit("[{\"hook\":\"blocks.2.mixer.inner_norm.hook_out\",\"op\":\"zero\"}]",
                           "blocks.2.mixer.hook_out", &n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_float_eq(two[i], 2 * base[i], 1e-5 + 1e-5 * fabsf(base[i]));
        cr_assert_eq(zero[i], 0.0f, "out_proj has no bias");
    }
    free(base);
    free(two);
    free(zero);
}

Test(activations, moe_output_is_shared_plus_weighted_experts)
{
    char body[4096];
    snprintf(body, sizeof body, "{\"prompt\":%s,\"hooks\":[\"blocks.4.mixer.hook_out\",\"blocks.4.mixer.shared_experts.hook_out\"],"
             "\"interventions\":[{\"hook\":\"blocks.4.mixer.hook_expert_weights\",\"op\":\"zero\"}]}", IDS);
    json_t *j = post_json(body, 200);
    size_t n, m;
    float *out = data_of(j, -1, "blocks.4.mixer.hook_out", &n), *shared = data_of(j, -1, "blocks.4.mixer.shared_experts.hook_out", &m);
    cr_assert_eq(memcmp(out, shared, 4 * n), 0, "with zero routing weights the output is the shared expert's");
    json_decref(j);
    float *base = run_edit("[]", "blocks.4.mixer.hook_out", &n);
    float *twice = run_edit("[{\"hook\":\"blocks.4.mixer.hook_expert_weights\",\"op\":\"scale\",\"factor\":2}]",
                            "blocks.4.mixer.hook_out", &n);
    for (size_t i = 0; i < n; i++) /* routed part doubles: twice = 2·base − shared */
        cr_assert_float_eq(twice[i], 2 * base[i] - shared[i], 1e-4 + 1e-5 * fabsf(base[i]));
    free(out);
    free(shared);
    free(base);
    free(twice);
}

/* ---------------------------------------------------------------- interventions */

Test(activations, zero_mixer_equals_layer_removed)
{
    /* reference: block 2 removed means block 3 reads block 1's output; force that
     * by setting blocks.2.hook_out to the clean blocks.1.hook_out (patch across hooks) */
    char body[8192];
    snprintf(body, sizeof body, "{\"runs\":[{\"prompt\":%s,\"hooks\":[\"blocks.1.hook_out\"]},"
             "{\"prompt\":%s,\"hooks\":[\"logits\",\"blocks.2.mixer.ssm_state\"],\"interventions\":[{\"hook\":"
             "\"blocks.2.mixer.hook_out\",\"op\":\"zero\"}]},"
             "{\"prompt\":%s,\"hooks\":[\"logits\"],\"interventions\":[{\"hook\":\"blocks.2.hook_out\",\"op\":\"patch\","
             "\"source\":{\"run\":0,\"hook\":\"blocks.1.hook_out\"}}]}]}", IDS, IDS, IDS);
    json_t *j = post_json(body, 200);
    size_t n, m;
    float *zeroed = data_of(j, 1, "logits", &n), *removed = data_of(j, 2, "logits", &m);
    cr_assert_eq(n, m);
    cr_assert_eq(n, (size_t)T * 512);
    double diff, tol;
    cr_assert(within_tolerance(zeroed, removed, n, &diff, &tol), "%g > %g", diff, tol);
    const st_tensor *clean = st_find(EXP, "logits");
    cr_assert_gt(max_abs_diff(zeroed, clean->data, n), 1e-2, "removing the layer changes the logits");
    json_decref(j);
    free(zeroed);
    free(removed);
}

Test(activations, add_then_subtract_is_identity_and_state_follows)
{
    char v[8192], nv[8192];
    size_t o = 0, p = 0;
    for (int i = 0; i < 64; i++) {
        o += (size_t)snprintf(v + o, sizeof v - o, "%s%g", i ? "," : "[", 0.5 + 0.01 * i);
        p += (size_t)snprintf(nv + p, sizeof nv - p, "%s%g", i ? "," : "[", -(0.5 + 0.01 * i));
    }
    strcat(v, "]");
    strcat(nv, "]");
    char iv[20000];
    snprintf(iv, sizeof iv, "[{\"hook\":\"blocks.1.hook_out\",\"op\":\"add\",\"value\":%s},"
             "{\"hook\":\"blocks.1.hook_out\",\"op\":\"add\",\"value\":%s}]", v, nv);
    size_t n;
    float *l = run_edit(iv, "logits", &n);
    double diff, tol;
    cr_assert(within_tolerance(l, st_find(EXP, "logits")->data, n, &diff, &tol), "%g > %g", diff, tol);
    free(l);
    /* one add alone changes the downstream recurrent state (layer 5's SSM state) */
    snprintf(iv, sizeof iv, "[{\"hook\":\"blocks.1.hook_out\",\"op\":\"add\",\"value\":%s,\"positions\":[0]}]", v);
    float *st = run_edit(iv, "blocks.5.mixer.ssm_state", &n);
    cr_assert_gt(max_abs_diff(st, st_find(EXP, "blocks.5.mixer.ssm_state")->data, n), 1e-4);
    free(st);
}

Test(activations, self_patch_is_identity)
{
    char body[8192];
    snprintf(body, sizeof body, "{\"runs\":[{\"prompt\":%s,\"hooks\":[\"logits\"]},{\"prompt\":%s,\"hooks\":[\"logits\"],"
             "\"interventions\":[{\"hook\":\"blocks.*.hook_out\",\"op\":\"patch\",\"source\":0},"
             "{\"hook\":\"blocks.*.mixer.hook_in\",\"op\":\"patch\",\"source\":0,\"positions\":[-1,3]}]}],"
             "\"format\":\"json\"}", IDS, IDS);
    json_t *j = post_json(body, 200);
    size_t n, m;
    float *a = data_of(j, 0, "logits", &n), *b = data_of(j, 1, "logits", &m);
    cr_assert_eq(n, m);
    cr_assert_eq(memcmp(a, b, 4 * n), 0);
    json_decref(j);
    free(a);
    free(b);
}

Test(activations, ablate_experts_reroutes)
{
    char body[4096];
    snprintf(body, sizeof body, "{\"prompt\":%s,\"hooks\":[\"blocks.1.mixer.hook_expert_indices\","
             "\"blocks.1.mixer.hook_expert_weights\"],\"interventions\":[{\"hook\":\"blocks.1.mixer.hook_expert_indices\","
             "\"op\":\"ablate_experts\",\"experts\":[0,1,2]}]}", IDS);
    json_t *j = post_json(body, 200);
    size_t n, m;
    float *idx = data_of(j, -1, "blocks.1.mixer.hook_expert_indices", &n);
    float *w = data_of(j, -1, "blocks.1.mixer.hook_expert_weights", &m);
    cr_assert_eq(n, (size_t)2 * T);
    for (size_t i = 0; i < n; i++)
        cr_assert_geq(idx[i], 3.0f, "expert %g was removed", idx[i]);
    for (int t = 0; t < T; t++)
        cr_assert_float_eq(w[2 * t] + w[2 * t + 1], 2.5f, 1e-5, "renormalised over the re-selected experts");
    json_decref(j);
    free(idx);
    free(w);
}

Test(activations, steering_changes_greedy_output_and_captures_generated_rows)
{
    char v[8192];
    size_t o = 0;
    for (int i = 0; i < 64; i++)
        o += (size_t)snprintf(v + o, sizeof v - o, "%s%d", i ? "," : "[", i % 2 ? 40 : -40);
    strcat(v, "]");
    const char *plain = "{\"prompt\":[1,83,510,389,385,277,453,64],\"max_tokens\":12,\"temperature\":0,"
                        "\"activations\":{\"hooks\":[\"blocks.1.mixer.hook_expert_indices\",\"blocks.3.mixer.hook_pattern\"]}}";
    char steered[10000];
    snprintf(steered, sizeof steered, "{\"prompt\":[1,83,510,389,385,277,453,64],\"max_tokens\":12,\"temperature\":0,"
             "\"ignore_eos\":true,\"interventions\":[{\"hook\":\"blocks.2.hook_out\",\"op\":\"add\",\"value\":%s}]}", v);
    http_response a = post("/v1/completions", plain, NULL), b = post("/v1/completions", steered, NULL);
    cr_assert_eq(a.status, 200, "%s", a.body);
    cr_assert_eq(b.status, 200, "%s", b.body);
    json_t *ja = json_loadb(a.body, a.body_len, 0, NULL), *jb = json_loadb(b.body, b.body_len, 0, NULL);
    const char *ta = json_string_value(json_object_get(json_array_get(json_object_get(ja, "choices"), 0), "text"));
    const char *tb = json_string_value(json_object_get(json_array_get(json_object_get(jb, "choices"), 0), "text"));
    cr_assert_str_neq(ta, tb, "steering changed the greedy text");
    int gen = (int)json_integer_value(json_object_get(json_object_get(ja, "usage"), "completion_tokens"));
    json_t *acts = json_object_get(ja, "activations");
    json_t *idx = json_object_get(acts, "blocks.1.mixer.hook_expert_indices");
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(idx, "shape"), 0)), gen, "a row per generated token");
    json_t *pat = json_object_get(acts, "blocks.3.mixer.hook_pattern");
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(pat, "shape"), 1)), gen);
    json_decref(ja);
    json_decref(jb);
    http_response_free(&a);
    http_response_free(&b);
    /* streaming: the captures ride on the final chunk */
    const char *stream = "{\"prompt\":[1,83,510],\"max_tokens\":4,\"temperature\":0,\"stream\":true,"
                         "\"stream_options\":{\"include_usage\":true},\"activations\":{\"hooks\":[\"logits\"]}}";
    http_response s = post("/v1/completions", stream, NULL);
    cr_assert_eq(s.status, 200);
    const char *last = strstr(s.body, "\"activations\"");
    cr_assert(last && strstr(last, "\"usage\"") == NULL && strstr(s.body, "\"usage\""), "%s", s.body);
    cr_assert(strstr(last, "[DONE]"));
    http_response_free(&s);
}

/* ---------------------------------------------------------------- bad input */

static void expect_error(const char *path, const char *body, int status, const char *needle)
{
    http_response r = post(path, body, NULL);
    cr_assert_eq(r.status, status, "%.200s -> %d: %.400s", body, r.status, r.body);
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    cr_assert(msg && strstr(msg, needle), "%.200s: message '%s' lacks '%s'", body, msg ? msg : "", needle);
    json_decref(j);
    http_response_free(&r);
}

Test(activations, bad_input_is_a_clear_4xx)
{
    const char *A = "/v1/activations";
    expect_error(A, "{\"prompt\":[1,2,3],\"hooks\":[\"blocks.1.mixer.hook_ot\"]}", 422, "nearest: blocks.1.mixer.hook_out");
    expect_error(A, "{\"prompt\":[1,2,3],\"hooks\":[\"blocks.1.mixer.hook_pattern\"]}", 422, "exists on layers [3]");
    expect_error(A, "{\"prompt\":[1,2,3],\"hooks\":[\"blocks.*.mixer.hook_nothing\"]}", 422, "unknown hook");
    expect_error(A, "{\"prompt\":[1,2,3],\"hooks\":[\"blocks.[.hook_out\"]}", 422, "unknown hook");
    expect_error(A, "{\"prompt\":[1,2,3],\"hooks\":[\"blocks.99.hook_out\"]}", 422, "unknown hook");
    expect_error(A, "{\"prompt\":[1,2,3],\"hooks\":[7]}", 400, "hooks[0]");
    expect_error(A, "{\"prompt\":[1,2,3],\"hooks\":[\"logits\"],\"positions\":3}", 422, "position 3 is outside");
    expect_error(A, "{\"prompt\":[1,2,3],\"hooks\":[\"logits\"],\"positions\":[-4]}", 422, "outside");
    expect_error(A, "{\"prompt\":[1,2,3],\"hooks\":[\"logits\"],\"positions\":\"first\"}", 400, "positions");
    expect_error(A, "{\"prompt\":[1,2,3],\"interventions\":[{\"hook\":\"blocks.0.hook_out\",\"op\":\"add\",\"value\":[1,2]}]}",
                 422, "expected 64 values");
    expect_error(A, "{\"prompt\":[1,2,3],\"interventions\":[{\"hook\":\"blocks.0.hook_out\",\"op\":\"add\",\"value\":[1,2],"
                    "\"positions\":[9]}]}", 422, "position 9");
    expect_error(A, "{\"prompt\":[1,2,3],\"interventions\":[{\"hook\":\"blocks.0.hook_out\",\"op\":\"add\",\"value\":[NaN]}]}",
                 400, "JSON");
    expect_error(A, "{\"prompt\":[1,2,3],\"interventions\":[{\"hook\":\"blocks.0.hook_out\",\"op\":\"add\",\"value\":[Infinity]}]}",
                 400, "JSON");
    expect_error(A, "{\"prompt\":[1,2,3],\"interventions\":[{\"hook\":\"blocks.0.hook_out\",\"op\":\"scale\",\"factor\":1e999}]}",
                 400, "");
    expect_error(A, "{\"prompt\":[1,2,3],\"interventions\":[{\"hook\":\"blocks.0.hook_out\",\"op\":\"add\",\"value\":[1e39]}]}",
                 400, "interventions[0].value[0] is not a finite");
    expect_error(A, "{\"prompt\":[1,2,3],\"interventions\":[{\"hook\":\"blocks.0.hook_out\",\"op\":\"explode\"}]}", 400, "op");
    expect_error(A, "{\"prompt\":[1,2,3],\"interventions\":[{\"hook\":\"blocks.3.mixer.hook_pattern\",\"op\":\"zero\"}]}",
                 422, "cannot be intervened");
    expect_error(A, "{\"prompt\":[1,2,3],\"interventions\":[{\"hook\":\"blocks.1.mixer.hook_out\",\"op\":\"ablate_experts\","
                    "\"experts\":[0,1,2,3,4,5,6]}]}", 422, "fewer");
    expect_error(A, "{\"prompt\":[1,2,3],\"interventions\":[{\"hook\":\"blocks.0.hook_out\",\"op\":\"ablate_experts\","
                    "\"experts\":[0]}]}", 422, "MoE");
    expect_error(A, "{\"prompt\":[1,2,3],\"interventions\":[{\"hook\":\"blocks.0.hook_out\",\"op\":\"patch\",\"source\":0}]}",
                 422, "earlier run");
    expect_error(A, "{\"prompt\":[1,2,3],\"hooks\":[\"logits\",\"embed.hook_out\"],\"format\":\"npy\"}", 422, "single tensor");
    expect_error(A, "{\"prompt\":[1,2,3],\"hooks\":[\"logits\"],\"format\":\"xml\"}", 400, "format");
    expect_error(A, "{\"prompt\":[1,2,3],\"session\":\"abc\"}", 404, "session");
    expect_error(A, "{\"prompt\":[],\"hooks\":[\"logits\"]}", 400, "empty");
    expect_error(A, "{\"prompt\":[1,2,99999]}", 400, "prompt[2] is 99999, not a token id");
    expect_error(A, "{\"prompt\":[1,\"a\"]}", 400, "prompt[1] is not an integer token id");
    expect_error(A, "[1,2]", 400, "JSON object");
    expect_error(A, "{\"runs\":[]}", 400, "runs");
    /* a response over --max-activation-bytes: 413 with the size and advice */
    char big[8192], ids5[4096];
    snprintf(ids5, sizeof ids5, "%.*s,%s,%s,%s,%s", (int)strlen(IDS) - 1, IDS, IDS + 1, IDS + 1, IDS + 1, IDS + 1);
    for (char *c = ids5; *c; c++) /* "...]" + ",[..." joins: drop the inner brackets */
        if ((*c == ']' && c[1]) || (*c == '[' && c != ids5))
            *c = ' ';
    snprintf(big, sizeof big, "{\"prompt\":%s,\"hooks\":[\"logits\",\"blocks.*.hook_out\"]}", ids5);
    expect_error(A, big, 413, "MiB");
    expect_error(A, big, 413, "fewer positions");
    expect_error("/v1/completions", "{\"prompt\":[1,2],\"interventions\":[{\"hook\":\"blocks.0.hook_ou\",\"op\":\"zero\"}]}",
                 422, "unknown hook");
    expect_error("/v1/completions", "{\"prompt\":[1,2],\"activations\":{\"hooks\":\"logits\"}}", 400, "activations");
    /* a generation's captures answer within the same limit, checked before it runs */
    expect_error("/v1/completions", "{\"prompt\":[1,2],\"max_tokens\":2000,\"activations\":{\"hooks\":"
                 "[\"logits\",\"blocks.*.hook_out\"]}}", 413, "a smaller max_tokens");
    /* the server is unharmed */
    json_t *ok = post_json("{\"prompt\":[1,2,3],\"hooks\":[\"logits\"],\"positions\":\"last\"}", 200);
    json_decref(ok);
}

Test(activations, concurrent_runs_are_batch_invariant)
{
    /* the same request twice at once, and alone: identical numbers */
    char body[4096];
    snprintf(body, sizeof body, "{\"prompt\":%s,\"hooks\":[\"logits\"],\"format\":\"safetensors\",\"interventions\":"
             "[{\"hook\":\"blocks.0.hook_out\",\"op\":\"scale\",\"factor\":0.5,\"positions\":\"last\"}]}", IDS);
    http_response solo = post("/v1/activations", body, NULL);
    cr_assert_eq(solo.status, 200);
    int fd1 = http_send_only(S.port, "POST", "/v1/activations", body);
    http_response again = post("/v1/activations", body, NULL);
    cr_assert_eq(again.status, 200);
    cr_assert_eq(again.body_len, solo.body_len);
    cr_assert_eq(memcmp(again.body, solo.body, solo.body_len), 0);
    close(fd1);
    http_response_free(&solo);
    http_response_free(&again);
}

Test(activations_chunked, chunked_prefill_gives_the_same_tensors)
{
    char body[8192];
    snprintf(body, sizeof body, "{\"prompt\":%s,\"hooks\":%s}", IDS, ALL_HOOKS);
    json_t *j = post_json(body, 200);
    for (int i = 0; i < EXP->n_tensors; i++) {
        const char *name = EXP->tensors[i].name;
        if (!fixture_hook(name))
            continue;
        size_t n;
        float *got = data_of(j, -1, name, &n);
        compare(name, got, n, -1);
        free(got);
    }
    json_decref(j);
    snprintf(body, sizeof body, "{\"prompt\":%s,\"hooks\":[\"blocks.3.mixer.hook_pattern\"]}", IDS);
    j = post_json(body, 200);
    size_t n;
    float *pat = data_of(j, -1, "blocks.3.mixer.hook_pattern", &n);
    cr_assert_eq(n, (size_t)4 * T * T, "(heads, all %d rows, all %d keys) over 6 steps", T, T);
    for (int h = 0; h < 4; h++)
        for (int t = 0; t < T; t++) {
            double sum = 0;
            for (int k = 0; k < T; k++) {
                sum += pat[((size_t)h * T + t) * T + k];
                if (k > t)
                    cr_assert_eq(pat[((size_t)h * T + t) * T + k], 0.0f);
            }
            cr_assert_float_eq(sum, 1.0, 1e-5);
        }
    free(pat);
    json_decref(j);
}
