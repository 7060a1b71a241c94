/*
 * test_interventions.c — strata_interventions in the engine: batch invariance (an
 * edited sequence does not change its neighbours in the step), chunked prefill
 * equals one step with the edit at the same positions (recurrent state included),
 * decode steps get "all"-position edits, pattern capture over several steps, and
 * refusals that name what is wrong.
 */
#include <criterion/criterion.h>
#include <math.h>
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

static const int32_t IDS[12] = {1, 5, 70, 300, 2, 9, 511, 44, 45, 46, 100, 7};

/* An edit set on moe-small touching every layer kind. */
static strata_interventions *edits(strata_model *m, int n_tokens)
{
    strata_interventions *iv;
    strata_error err;
    cr_assert_eq(strata_interventions_new(m, 0, n_tokens, &iv, &err), STRATA_OK);
    static float v[64];
    for (int i = 0; i < 64; i++)
        v[i] = 0.3f * sinf((float)i);
    int32_t pos[] = {2, -1, 5};
    int32_t experts[] = {1, 6};
    strata_intervention list[] = {
        {.hook = "blocks.0.mixer.hook_conv_act", .op = STRATA_OP_SCALE, .factor = 0.5f, .positions = pos, .n_positions = 3},
        {.hook = "blocks.2.hook_out", .op = STRATA_OP_ADD, .value = v, .n_value = 64},
        {.hook = "blocks.3.mixer.hook_k", .op = STRATA_OP_ZERO, .positions = pos, .n_positions = 1},
        {.hook = "blocks.4.mixer.hook_router_logits", .op = STRATA_OP_ABLATE_EXPERTS, .experts = experts, .n_experts = 2},
        {.hook = "blocks.6.mixer.hook_pre", .op = STRATA_OP_SCALE, .factor = 1.5f},
        {.hook = "blocks.5.mixer.hook_out", .op = STRATA_OP_PROJECT_OUT, .value = v, .n_value = 64},
    };
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++)
        cr_assert_eq(strata_interventions_add(iv, &list[i], &err), STRATA_OK, "%s", err.message);
    return iv;
}

/* logits (n, 512) of IDS[0..n) in chunks of `chunk`, with edits iv; also the final SSM state of layer 5. */
static void run(strata_model *m, int n, int chunk, const strata_interventions *iv, float *logits, float *ssm)
{
    strata_cache *c;
    strata_runner *r;
    strata_capture *cap;
    strata_error err;
    cr_assert_eq(strata_cache_new(m, &c, &err), STRATA_OK);
    cr_assert_eq(strata_runner_new(m, &r, &err), STRATA_OK);
    cr_assert_eq(strata_capture_new(m, &cap, &err), STRATA_OK);
    cr_assert_eq(strata_capture_add(cap, "blocks.5.mixer.ssm_state", &err), STRATA_OK);
    for (int p = 0; p < n; p += chunk) {
        int k = n - p < chunk ? n - p : chunk;
        strata_seq s = {.cache = c, .tokens = IDS + p, .n_tokens = k, .logits = logits + (size_t)p * 512,
                        .all_logits = 1, .interventions = iv, .capture = cap};
        cr_assert_eq(strata_runner_step(r, &s, 1, &err), STRATA_OK, "%s", err.message);
    }
    strata_tensor_view v;
    strata_capture_get(cap, 0, &v, &err);
    memcpy(ssm, v.data, sizeof(float) * 8 * 16 * 16);
    strata_capture_free(cap);
    strata_runner_free(r);
    strata_cache_free(c);
}

Test(interventions, chunked_equals_whole_and_edits_change_state)
{
    strata_model *m = load("fixtures/models/moe-small");
    strata_interventions *iv = edits(m, 12);
    float a[12 * 512], b[12 * 512], plain[12 * 512], sa[2048], sb[2048], sp[2048];
    run(m, 12, 12, iv, a, sa);
    run(m, 12, 5, iv, b, sb);
    run(m, 12, 12, NULL, plain, sp);
    double diff, tol;
    cr_assert(within_tolerance(b, a, 12 * 512, &diff, &tol), "chunked %g > %g", diff, tol);
    cr_assert(within_tolerance(sb, sa, 2048, &diff, &tol), "state %g > %g", diff, tol);
    cr_assert_gt(max_abs_diff(a, plain, 12 * 512), 1e-3, "the edits change the logits");
    cr_assert_gt(max_abs_diff(sa, sp, 2048), 1e-4, "and the recurrent state downstream");
    strata_interventions_free(iv);
    strata_model_free(m);
}

/* An edit of hook_ssm_dt reaches the scan: with dt zeroed, exp(dt·A) = 1 and
 * dt·x·Bᵀ = 0, so layer 5's state stays at its initial zeros however the prompt is
 * stepped. */
Test(interventions, ssm_dt_edit_reaches_the_scan)
{
    strata_model *m = load("fixtures/models/moe-small");
    strata_interventions *iv;
    strata_error err;
    cr_assert_eq(strata_interventions_new(m, 0, 12, &iv, &err), STRATA_OK);
    strata_intervention zero_dt = {.hook = "blocks.5.mixer.hook_ssm_dt", .op = STRATA_OP_ZERO};
    cr_assert_eq(strata_interventions_add(iv, &zero_dt, &err), STRATA_OK, "%s", err.message);
    static float logits[12 * 512], plain[12 * 512];
    float state[2048], plain_state[2048];
    for (int chunk = 1; chunk <= 12; chunk += 11) {
        run(m, 12, chunk, iv, logits, state);
        for (int i = 0; i < 2048; i++)
            cr_assert_eq(state[i], 0.0f, "chunks of %d: state[%d] = %g", chunk, i, state[i]);
    }
    run(m, 12, 12, NULL, plain, plain_state);
    cr_assert_gt(max_abs_diff(plain_state, state, 2048), 1e-4, "without the edit the state moves");
    strata_interventions_free(iv);
    strata_model_free(m);
}

Test(interventions, batch_invariance)
{
    strata_model *m = load("fixtures/models/moe-small");
    strata_interventions *iv = edits(m, 12);
    strata_cache *c[3];
    strata_runner *r;
    strata_error err;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(strata_cache_new(m, &c[i], &err), STRATA_OK);
    cr_assert_eq(strata_runner_new(m, &r, &err), STRATA_OK);
    static float l[3][12 * 512], solo_plain[12 * 512], solo_edit[12 * 512];
    strata_seq seqs[3] = {{.cache = c[0], .tokens = IDS, .n_tokens = 12, .logits = l[0], .all_logits = 1},
                          {.cache = c[1], .tokens = IDS, .n_tokens = 12, .logits = l[1], .all_logits = 1, .interventions = iv},
                          {.cache = c[2], .tokens = IDS, .n_tokens = 12, .logits = l[2], .all_logits = 1}};
    cr_assert_eq(strata_runner_step(r, seqs, 3, &err), STRATA_OK, "%s", err.message);
    float s0[2048];
    run(m, 12, 12, NULL, solo_plain, s0);
    run(m, 12, 12, iv, solo_edit, s0);
    cr_assert_eq(memcmp(l[0], solo_plain, sizeof solo_plain), 0, "neighbour before the edited sequence");
    cr_assert_eq(memcmp(l[2], solo_plain, sizeof solo_plain), 0, "neighbour after it");
    double diff, tol;
    cr_assert(within_tolerance(l[1], solo_edit, 12 * 512, &diff, &tol), "%g > %g", diff, tol);
    for (int i = 0; i < 3; i++)
        strata_cache_free(c[i]);
    strata_runner_free(r);
    strata_interventions_free(iv);
    strata_model_free(m);
}

Test(interventions, decode_steps_and_pattern_over_steps)
{
    strata_model *m = load("fixtures/models/moe-small");
    strata_interventions *iv;
    strata_capture *cap;
    strata_cache *c;
    strata_runner *r;
    strata_error err;
    cr_assert_eq(strata_interventions_new(m, 0, 4, &iv, &err), STRATA_OK);
    strata_intervention z = {.hook = "blocks.3.mixer.hook_z", .op = STRATA_OP_ZERO};
    cr_assert_eq(strata_interventions_add(iv, &z, &err), STRATA_OK);
    cr_assert_eq(strata_capture_new(m, &cap, &err), STRATA_OK);
    cr_assert_eq(strata_capture_add(cap, "blocks.3.mixer.hook_out", &err), STRATA_OK);
    cr_assert_eq(strata_capture_add(cap, "blocks.3.mixer.hook_pattern", &err), STRATA_OK);
    cr_assert_eq(strata_cache_new(m, &c, &err), STRATA_OK);
    cr_assert_eq(strata_runner_new(m, &r, &err), STRATA_OK);
    strata_seq s = {.cache = c, .tokens = IDS, .n_tokens = 4, .interventions = iv, .capture = cap};
    cr_assert_eq(strata_runner_step(r, &s, 1, &err), STRATA_OK);
    for (int t = 4; t < 7; t++) { /* decode: positions past the prompt still get "all" edits */
        s = (strata_seq){.cache = c, .tokens = IDS + t, .n_tokens = 1, .interventions = iv, .capture = cap};
        cr_assert_eq(strata_runner_step(r, &s, 1, &err), STRATA_OK);
    }
    strata_tensor_view out, pat;
    strata_capture_get(cap, 0, &out, &err);
    strata_capture_get(cap, 1, &pat, &err);
    cr_assert_eq(out.shape[0], 7);
    for (int i = 0; i < 7 * 64; i++)
        cr_assert_eq(((const float *)out.data)[i], 0.0f, "o_proj of zero is zero at every step");
    cr_assert_eq(pat.shape[1], 7, "pattern rows of every step");
    cr_assert_eq(pat.shape[2], 7, "over all keys");
    for (int h = 0; h < 4; h++)
        for (int t = 0; t < 7; t++) {
            const float *row = (const float *)pat.data + ((size_t)h * 7 + (size_t)t) * 7;
            float sum = 0;
            for (int k = 0; k < 7; k++) {
                sum += row[k];
                if (k > t)
                    cr_assert_eq(row[k], 0.0f);
            }
            cr_assert_float_eq(sum, 1.0f, 1e-5);
        }
    strata_capture_free(cap);
    strata_cache_free(c);
    strata_runner_free(r);
    strata_interventions_free(iv);
    strata_model_free(m);
}

Test(interventions, refusals_name_the_problem)
{
    strata_model *m = load("fixtures/models/moe-small");
    strata_interventions *iv;
    strata_error err;
    cr_assert_eq(strata_interventions_new(m, 0, 5, &iv, &err), STRATA_OK);
    float v[3] = {1, 2, 3}, bad[64] = {0};
    bad[7] = NAN;
    int32_t far[] = {5}, experts[] = {9};
    strata_intervention cases[] = {
        {.hook = "blocks.0.hook_out", .op = STRATA_OP_ADD, .value = v, .n_value = 3},
        {.hook = "blocks.0.hook_out", .op = STRATA_OP_SET, .value = bad, .n_value = 64},
        {.hook = "blocks.0.hook_out", .op = STRATA_OP_ZERO, .positions = far, .n_positions = 1},
        {.hook = "blocks.1.mixer.hook_pre", .op = STRATA_OP_ZERO},
        {.hook = "blocks.0.mixer.ssm_state", .op = STRATA_OP_ZERO},
        {.hook = "blocks.1.mixer.hook_expert_indices", .op = STRATA_OP_ZERO},
        {.hook = "blocks.1.mixer.hook_out", .op = STRATA_OP_ABLATE_EXPERTS, .experts = experts, .n_experts = 1},
        {.hook = "blocks.0.hook_out", .op = STRATA_OP_PROJECT_OUT, .value = (float[64]){0}, .n_value = 64},
    };
    const char *needles[] = {"expected 64 values", "not a finite", "position 5 is outside", "exists on layers [6]",
                             "cannot be intervened", "use ablate_experts", "expert 9 is outside", "direction is zero"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_neq(strata_interventions_add(iv, &cases[i], &err), STRATA_OK, "case %zu", i);
        cr_assert(strstr(err.message, needles[i]), "case %zu: %s", i, err.message);
    }
    cr_assert_eq(strata_interventions_count(iv), 0, "nothing half-added");
    strata_interventions_free(iv);
    strata_model_free(m);
}
