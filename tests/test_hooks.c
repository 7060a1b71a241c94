/*
 * test_hooks.c — hook names and globs, errors that teach, derived identities between
 * hooks, and steps that refuse bad input without touching any cache.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static strata_model *load(const char *rel)
{
    strata_error err;
    strata_model *m;
    cr_assert_eq(strata_model_load(shared_path(rel), &m, &err), STRATA_OK, "%s", err.message);
    return m;
}

Test(hooks, globs_expand_over_the_layers_that_have_the_hook)
{
    strata_model *m = load("fixtures/models/hybrid-small"); /* M-M*-M-M*- */
    strata_capture *c;
    strata_error err;
    cr_assert_eq(strata_capture_new(m, &c, &err), STRATA_OK);
    cr_assert_eq(strata_capture_add(c, "blocks.*.hook_out", &err), STRATA_OK);
    cr_assert_eq(strata_capture_count(c), 10);
    cr_assert_eq(strata_capture_add(c, "blocks.*.mixer.k_cache", &err), STRATA_OK);
    cr_assert_eq(strata_capture_count(c), 12);
    cr_assert_eq(strata_capture_add(c, "blocks.*.hook_out", &err), STRATA_OK, "adding twice is harmless");
    cr_assert_eq(strata_capture_count(c), 12);
    strata_tensor_view v;
    cr_assert_eq(strata_capture_get(c, 10, &v, &err), STRATA_OK);
    cr_assert_str_eq(v.name, "blocks.3.mixer.k_cache");
    cr_assert_eq(strata_capture_get(c, 12, &v, &err), STRATA_E_RANGE);
    strata_capture_free(c);
    strata_model_free(m);
}

Test(hooks, wrong_layer_kind_names_the_layers_where_it_exists)
{
    strata_model *m = load("fixtures/models/hybrid-small");
    strata_capture *c;
    strata_error err;
    cr_assert_eq(strata_capture_new(m, &c, &err), STRATA_OK);
    cr_assert_eq(strata_capture_add(c, "blocks.1.mixer.ssm_state", &err), STRATA_E_INVALID);
    cr_assert(strstr(err.message, "layers [0, 2, 5, 7]"), "%s", err.message);
    cr_assert_eq(strata_capture_add(c, "blocks.0.hook_ot", &err), STRATA_E_INVALID);
    cr_assert(strstr(err.message, "unknown hook") && strstr(err.message, "blocks.0.hook_out"), "%s", err.message);
    cr_assert_eq(strata_capture_add(c, "blocks.*.mixer.hook_router_logits", &err), STRATA_E_INVALID);
    cr_assert_eq(strata_capture_add(c, "", &err), STRATA_E_INVALID);
    cr_assert_eq(strata_capture_count(c), 0);
    strata_capture_free(c);
    strata_model_free(m);
}

static const strata_tensor_view *view_named(strata_capture *c, const char *name, strata_tensor_view *v)
{
    for (int i = 0; i < strata_capture_count(c); i++) {
        strata_capture_get(c, i, v, NULL);
        if (!strcmp(v->name, name))
            return v;
    }
    cr_assert_fail("no capture %s", name);
    return NULL;
}

Test(hooks, internal_hooks_agree_with_each_other)
{
    strata_model *m = load("fixtures/models/moe-small"); /* MEM*EM-E */
    strata_capture *c;
    strata_cache *cache;
    strata_runner *r;
    strata_error err;
    cr_assert_eq(strata_capture_new(m, &c, &err), STRATA_OK);
    const char *names[] = {"blocks.6.mixer.hook_pre", "blocks.6.mixer.hook_post", "blocks.3.mixer.hook_pattern",
                           "blocks.0.mixer.hook_ssm_dt", "blocks.1.mixer.hook_expert_weights"};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(strata_capture_add(c, names[i], &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(strata_cache_new(m, &cache, &err), STRATA_OK);
    cr_assert_eq(strata_runner_new(m, &r, &err), STRATA_OK);
    int32_t ids[12] = {1, 5, 70, 300, 2, 9, 511, 44, 45, 46, 100, 0};
    strata_seq seq = {.cache = cache, .tokens = ids, .n_tokens = 12, .capture = c};
    cr_assert_eq(strata_runner_step(r, &seq, 1, &err), STRATA_OK, "%s", err.message);
    strata_tensor_view pre, post, pat, dt, w;
    view_named(c, names[0], &pre);
    view_named(c, names[1], &post);
    cr_assert_eq(pre.shape[0], 12);
    for (int64_t i = 0; i < pre.shape[0] * pre.shape[1]; i++) {
        float x = ((const float *)pre.data)[i];
        cr_assert_float_eq(((const float *)post.data)[i], x > 0 ? x * x : 0.0f, 1e-6);
    }
    view_named(c, names[2], &pat); /* (heads, 12, 12): causal rows summing to 1 */
    cr_assert_eq(pat.ndim, 3);
    for (int h = 0; h < pat.shape[0]; h++)
        for (int t = 0; t < 12; t++) {
            const float *row = (const float *)pat.data + ((size_t)h * 12 + (size_t)t) * 12;
            float sum = 0;
            for (int k = 0; k < 12; k++) {
                sum += row[k];
                if (k > t)
                    cr_assert_eq(row[k], 0.0f);
            }
            cr_assert_float_eq(sum, 1.0f, 1e-5);
        }
    view_named(c, names[3], &dt);
    for (int64_t i = 0; i < dt.shape[0] * dt.shape[1]; i++)
        cr_assert_gt(((const float *)dt.data)[i], 0.0f);
    view_named(c, names[4], &w); /* norm_topk_prob then ×2.5: each row sums to 2.5 */
    for (int t = 0; t < 12; t++)
        cr_assert_float_eq(((const float *)w.data)[2 * t] + ((const float *)w.data)[2 * t + 1], 2.5f, 1e-5);
    strata_runner_free(r);
    strata_cache_free(cache);
    strata_capture_free(c);
    strata_model_free(m);
}

Test(hooks, bad_steps_change_no_cache)
{
    strata_model *m = load("fixtures/models/hybrid-small");
    strata_cache *a, *b;
    strata_runner *r;
    strata_error err;
    cr_assert_eq(strata_cache_new(m, &a, &err), STRATA_OK);
    cr_assert_eq(strata_cache_new(m, &b, &err), STRATA_OK);
    cr_assert_eq(strata_runner_new(m, &r, &err), STRATA_OK);
    int32_t good[3] = {1, 2, 3}, bad[2] = {4, 512};
    float la[512], lb[512];
    strata_seq seqs[2] = {{.cache = a, .tokens = good, .n_tokens = 3}, {.cache = b, .tokens = bad, .n_tokens = 2}};
    cr_assert_eq(strata_runner_step(r, seqs, 2, &err), STRATA_E_RANGE);
    cr_assert(strstr(err.message, "token 512"), "%s", err.message);
    cr_assert_eq(strata_cache_n_tokens(a), 0, "the good sequence did not advance either");
    seqs[1].cache = a;
    seqs[1].tokens = good;
    cr_assert_eq(strata_runner_step(r, seqs, 2, &err), STRATA_E_INVALID, "two sequences, one cache");
    seqs[0].n_tokens = 0;
    cr_assert_eq(strata_runner_step(r, seqs, 1, &err), STRATA_E_INVALID);
    cr_assert_eq(strata_runner_step(r, NULL, 0, &err), STRATA_E_INVALID);
    /* after the refusals, a and a fresh cache give identical results */
    seqs[0] = (strata_seq){.cache = a, .tokens = good, .n_tokens = 3, .logits = la};
    seqs[1] = (strata_seq){.cache = b, .tokens = good, .n_tokens = 3, .logits = lb};
    cr_assert_eq(strata_runner_step(r, seqs, 2, &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(memcmp(la, lb, sizeof la), 0);
    strata_cache_reset(a);
    cr_assert_eq(strata_cache_n_tokens(a), 0);
    seqs[0].logits = la;
    cr_assert_eq(strata_runner_step(r, seqs, 1, &err), STRATA_OK);
    cr_assert_eq(memcmp(la, lb, sizeof la), 0, "reset gives the empty state back");
    strata_runner_free(r);
    strata_cache_free(a);
    strata_cache_free(b);
    strata_model_free(m);
}
