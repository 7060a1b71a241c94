/*
 * test_tools.c — the benchmarking tools of the CLI: make-checkpoint writes a
 * loadable Nemotron-H checkpoint in every dtype (tiny preset), and bench runs end to
 * end on it. No timing is asserted anywhere.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static void run_tiny_step(const char *dir, const char *pattern)
{
    strata_error err;
    strata_model *model;
    strata_runner *run;
    strata_cache *cache;
    cr_assert_eq(strata_model_load(dir, &model, &err), STRATA_OK, "%s", err.message);
    const strata_model_info *m = strata_model_get_info(model);
    cr_assert_str_eq(m->pattern, pattern);
    cr_assert_eq(m->hidden_size, 64);
    cr_assert_eq(strata_runner_new(model, &run, &err), STRATA_OK);
    cr_assert_eq(strata_cache_new(model, &cache, &err), STRATA_OK);
    int32_t ids[9] = {1, 5, 9, 200, 3, 77, 511, 0, 42};
    float *logits = malloc(sizeof(float) * 9 * (size_t)m->vocab_size);
    strata_seq seq = {.cache = cache, .tokens = ids, .n_tokens = 9, .logits = logits, .all_logits = 1};
    cr_assert_eq(strata_runner_step(run, &seq, 1, &err), STRATA_OK, "%s", err.message);
    double mx = 0;
    for (size_t i = 0; i < 9 * (size_t)m->vocab_size; i++) {
        cr_assert(isfinite(logits[i]), "logit %zu is not finite", i);
        mx = fabs(logits[i]) > mx ? fabs(logits[i]) : mx;
    }
    cr_assert(mx > 1e-6 && mx < 1e3, "max |logit| %g", mx);
    free(logits);
    strata_cache_free(cache);
    strata_runner_free(run);
    strata_model_free(model);
}

Test(tools, make_checkpoint_tiny_loads_and_runs_in_every_dtype, .timeout = 120)
{
    const char *dtypes[] = {"bf16", "f16", "f32"};
    for (int i = 0; i < 3; i++) {
        char *dir = make_temp_dir(), cmd[8192], *out = NULL;
        snprintf(cmd, sizeof cmd, "%s make-checkpoint %s/ckpt --preset tiny --dtype %s --seed 7", cli_path(), dir, dtypes[i]);
        cr_assert_eq(run_capture(cmd, &out), 0, "%s failed: %s", cmd, out ? out : "");
        cr_assert(strstr(out, "wrote"), "%s", out);
        free(out);
        char path[4200];
        snprintf(path, sizeof path, "%s/ckpt", dir);
        run_tiny_step(path, "M-M*-M-");
        remove_tree(dir);
        free(dir);
    }
}

/* bench --json's decode_bytes_per_token for the checkpoint in dir. */
static double bench_decode_bytes(const char *dir)
{
    char cmd[8192], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s bench %s --prompt-tokens 4 --gen-tokens 2 --sessions 2 --repeat 1 --json",
             cli_path(), dir);
    cr_assert_eq(run_capture(cmd, &out), 0, "%s", out ? out : "");
    json_error_t jerr;
    json_t *r = json_loads(out, 0, &jerr);
    cr_assert(r, "bench --json is not JSON (%s): %s", jerr.text, out);
    double bytes = json_number_value(json_object_get(r, "decode_bytes_per_token"));
    json_decref(r);
    free(out);
    return bytes;
}

/* E layers: the routed experts, their router and the shared expert under the
 * released names, the routing keys in config.json (experts on a latent too, and a
 * tied LM head); a token's decode bytes in the bench count k of the E experts (a
 * dense model's, every matrix). */
Test(tools, make_checkpoint_writes_moe_layers, .timeout = 120)
{
    char *dir = make_temp_dir(), cmd[8192], *out = NULL, path[4200];
    snprintf(cmd, sizeof cmd, "%s make-checkpoint %s/moe --preset tiny --layers-pattern 'ME*E-' --experts 4 "
             "--experts-per-token 1 --moe-intermediate 32 --dtype f32", cli_path(), dir);
    cr_assert_eq(run_capture(cmd, &out), 0, "%s", out ? out : "");
    cr_assert(strstr(out, "active per token"), "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/moe", dir);
    run_tiny_step(path, "ME*E-");
    strata_error err;
    strata_model *model;
    cr_assert_eq(strata_model_load(path, &model, &err), STRATA_OK, "%s", err.message);
    const strata_model_info *m = strata_model_get_info(model);
    cr_assert_eq(m->n_experts, 4);
    cr_assert_eq(m->experts_per_tok, 1);
    cr_assert_eq(m->moe_intermediate_size, 32);
    cr_assert_eq(m->shared_intermediate_size, 48);
    cr_assert_float_eq(m->routed_scaling_factor, 2.5f, 0);
    cr_assert_eq(m->expert_params, 2u * 4u * 2u * 32u * 64u);     /* 2 E layers, 4 experts, up + down */
    cr_assert_eq(m->expert_bytes, 4 * m->expert_params);           /* F32: used as stored */
    cr_assert_eq(m->active_params, m->n_params - m->expert_params / 4 * 3);     /* 1 of 4 experts */
    double want = (double)m->matmul_bytes - 0.75 * (double)m->expert_bytes;
    cr_assert_float_eq(bench_decode_bytes(path), want, 0.5, "decode bytes: want %.0f", want);
    snprintf(cmd, sizeof cmd, "%s info %s", cli_path(), path);
    cr_assert_eq(run_capture(cmd, &out), 0, "%s", out ? out : "");
    const char *line = strstr(out, "active per token: ");
    double active = 0;
    cr_assert(line && sscanf(line, "active per token: %lf M", &active) == 1, "%s", out);
    cr_assert_float_eq(active, (double)m->active_params / 1e6, 0.006, "%s", line);
    free(out);
    strata_model_free(model);
    /* experts on a latent (Nemotron 3 Super's fc1/fc2_latent_proj), the LM head tied */
    snprintf(cmd, sizeof cmd, "%s make-checkpoint %s/latent --preset tiny --layers-pattern 'ME*E' --moe-latent 24 "
             "--tied --dtype f32 >/dev/null", cli_path(), dir);
    cr_assert_eq(run_capture(cmd, &out), 0);
    free(out);
    snprintf(path, sizeof path, "%s/latent", dir);
    run_tiny_step(path, "ME*E");
    cr_assert_eq(strata_model_load(path, &model, &err), STRATA_OK, "%s", err.message);
    m = strata_model_get_info(model);
    cr_assert(m->tie_word_embeddings);
    cr_assert_eq(m->expert_params, 2u * 8u * 2u * 32u * 24u);     /* the tiny preset's 8 experts of width 32 on 24 */
    strata_model_free(model);
    snprintf(cmd, sizeof cmd, "%s make-checkpoint %s/dense --preset tiny >/dev/null", cli_path(), dir);
    cr_assert_eq(run_capture(cmd, &out), 0);
    free(out);
    snprintf(path, sizeof path, "%s/dense", dir);
    cr_assert_eq(strata_model_load(path, &model, &err), STRATA_OK, "%s", err.message);
    m = strata_model_get_info(model);
    cr_assert_eq(m->expert_bytes, 0);
    cr_assert_eq(m->active_params, m->n_params);
    cr_assert_float_eq(bench_decode_bytes(path), (double)m->matmul_bytes, 0.5);
    strata_model_free(model);
    remove_tree(dir);
    free(dir);
}

Test(tools, make_checkpoint_refuses_bad_options)
{
    char *dir = make_temp_dir(), cmd[8192], *out = NULL;
    const char *bad[] = {"--preset huge", "--dtype int4", "--layers-pattern MXM", "--hidden 0",
                         "--layers-pattern ME --experts 4 --experts-per-token 5",
                         "--layers-pattern ME --experts 6 --expert-groups 4"};
    for (int i = 0; i < 6; i++) {
        snprintf(cmd, sizeof cmd, "%s make-checkpoint %s/x %s 2>&1", cli_path(), dir, bad[i]);
        cr_assert_neq(run_capture(cmd, &out), 0, "%s succeeded", bad[i]);
        free(out);
        out = NULL;
    }
    remove_tree(dir);
    free(dir);
}

/* Every engine figure of a bench --json report is the best of `rounds` rounds: no
 * round did better than it (the worst is at most the best), and each S's ratio
 * to single-stream decode is the one its two figures give. */
static void check_bench_rounds(const char *out, int rounds)
{
    json_error_t jerr;
    json_t *r = json_loads(out, 0, &jerr);
    cr_assert(r, "bench --json is not JSON (%s): %s", jerr.text, out);
    cr_assert_eq(json_integer_value(json_object_get(r, "repeat")), rounds);
    const char *pairs[][2] = {{"prefill_tok_s", "prefill_tok_s_worst"}, {"decode_tok_s", "decode_tok_s_worst"}};
    for (int i = 0; i < 2; i++) {
        double best = json_number_value(json_object_get(r, pairs[i][0]));
        double worst = json_number_value(json_object_get(r, pairs[i][1]));
        cr_assert(worst > 0 && worst <= best, "%s %g, worst %g", pairs[i][0], best, worst);
    }
    double single = json_number_value(json_object_get(r, "decode_tok_s"));
    json_t *agg = json_object_get(r, "aggregate_decode_tok_s"), *low = json_object_get(r, "aggregate_decode_tok_s_worst");
    json_t *ratio = json_object_get(r, "aggregate_vs_single");
    cr_assert(json_object_size(agg) > 0 && json_object_size(low) == json_object_size(agg) &&
              json_object_size(ratio) == json_object_size(agg), "%s", out);
    const char *S;
    json_t *v;
    json_object_foreach(agg, S, v) {
        double best = json_number_value(v), worst = json_number_value(json_object_get(low, S));
        cr_assert(worst > 0 && worst <= best, "%s sessions: %g, worst %g", S, best, worst);
        /* printed to 3 decimals: a small ratio (a slow round on a busy machine) is off by up to 5e-4 */
        cr_assert_float_eq(json_number_value(json_object_get(ratio, S)), best / single, 6e-4 + 2e-3 * best / single,
                           "%s sessions: ratio %g, figures give %g", S, json_number_value(json_object_get(ratio, S)),
                           best / single);
    }
    json_decref(r);
}

Test(tools, bench_runs_on_a_tiny_checkpoint_and_prints_json, .timeout = 120)
{
    char *dir = make_temp_dir(), cmd[8192], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s make-checkpoint %s/ckpt --preset tiny >/dev/null && "
             "%s bench %s/ckpt --prompt-tokens 12 --gen-tokens 3 --sessions 1,3 --threads 2 --json",
             cli_path(), dir, cli_path(), dir);
    cr_assert_eq(run_capture(cmd, &out), 0, "%s", out ? out : "");
    const char *keys[] = {"\"prefill_tok_s\"", "\"decode_tok_s\"", "\"aggregate_decode_tok_s\":{\"1\":", "\"3\":",
                          "\"ttft_ms\"", "\"peak_rss_mib\"", "\"weight_bytes\"", "\"kernel\"", "\"threads\":2"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        cr_assert(strstr(out, keys[i]), "bench --json lacks %s: %s", keys[i], out);
    check_bench_rounds(out, 3);
    free(out);
    remove_tree(dir);
    free(dir);
}

/* --compute reaches the engine from every command that runs the model: bench reports
 * it, generate keeps the demo model's greedy ids in bf16, a bad mode is refused. */
Test(tools, compute_mode_option, .timeout = 120)
{
    char *dir = make_temp_dir(), cmd[8192], *out = NULL, *fp32 = NULL, *bf16 = NULL;
    snprintf(cmd, sizeof cmd, "%s make-checkpoint %s/ckpt --preset tiny >/dev/null && "
             "%s bench %s/ckpt --prompt-tokens 8 --gen-tokens 2 --sessions 2 --compute bf16 --json",
             cli_path(), dir, cli_path(), dir);
    cr_assert_eq(run_capture(cmd, &out), 0, "%s", out ? out : "");
    cr_assert(strstr(out, "\"compute\":\"bf16\""), "%s", out);
    free(out);
    const char *gen = "%s generate %s/models/strata-demo --tokens 1,1165,276,2102 -n 12 --compute %s";
    snprintf(cmd, sizeof cmd, gen, cli_path(), getenv("STRATA_ROOT") ? getenv("STRATA_ROOT") : ".", "fp32");
    cr_assert_eq(run_capture(cmd, &fp32), 0);
    snprintf(cmd, sizeof cmd, gen, cli_path(), getenv("STRATA_ROOT") ? getenv("STRATA_ROOT") : ".", "bf16");
    cr_assert_eq(run_capture(cmd, &bf16), 0);
    cr_assert(fp32[0] == '[' && strcspn(fp32, "\n") == strcspn(bf16, "\n") && !strncmp(fp32, bf16, strcspn(fp32, "\n")),
              "greedy ids: fp32 %s, bf16 %s", fp32, bf16);
    snprintf(cmd, sizeof cmd, gen, cli_path(), getenv("STRATA_ROOT") ? getenv("STRATA_ROOT") : ".", "fp8 2>&1");
    cr_assert_eq(run_capture(cmd, &out), 1);
    cr_assert(strstr(out, "compute mode 'fp8' is not one of: fp32, bf16, int8"), "%s", out);
    free(out);
    free(fp32);
    free(bf16);
    remove_tree(dir);
    free(dir);
}

/* bench --json's aggregate_step_bytes for S sessions on dir, each from `context`
 * tokens (0: the default), in compute mode `compute`; checks the report names that
 * context. */
static double bench_step_bytes(const char *dir, int S, int context, const char *compute)
{
    char cmd[8192], extra[96], *out = NULL;
    int n = snprintf(extra, sizeof extra, " --compute %s", compute);
    if (context)
        snprintf(extra + n, sizeof extra - (size_t)n, " --session-context %d", context);
    snprintf(cmd, sizeof cmd, "%s bench %s --prompt-tokens 4 --gen-tokens 2 --sessions %d --repeat 1 --json%s",
             cli_path(), dir, S, extra);
    cr_assert_eq(run_capture(cmd, &out), 0, "%s", out ? out : "");
    json_error_t jerr;
    json_t *r = json_loads(out, 0, &jerr);
    cr_assert(r, "bench --json is not JSON (%s): %s", jerr.text, out);
    cr_assert_eq(json_integer_value(json_object_get(r, "session_context")), context ? context : 16, "%s", out);
    char key[16];
    snprintf(key, sizeof key, "%d", S);
    double bytes = json_number_value(json_object_get(json_object_get(r, "aggregate_step_bytes"), key));
    json_decref(r);
    free(out);
    return bytes;
}

/* --session-context sets the context each aggregate session decodes from (default
 * 16 tokens): a step's bytes then read that much more K/V per session — on the tiny
 * preset one attention layer, 2 kv heads of 16: 256 bytes per token, 128 in the
 * bf16 mode (BF16 K/V). */
Test(tools, bench_session_context_sets_the_aggregate_runs_context, .timeout = 120)
{
    char *dir = make_temp_dir(), cmd[8192], path[4200], *out = NULL;
    snprintf(path, sizeof path, "%s/ckpt", dir);
    snprintf(cmd, sizeof cmd, "%s make-checkpoint %s --preset tiny >/dev/null", cli_path(), path);
    cr_assert_eq(run_capture(cmd, &out), 0, "%s", out ? out : "");
    free(out);
    double base = bench_step_bytes(path, 2, 0, "fp32"), longer = bench_step_bytes(path, 2, 40, "fp32");
    cr_assert_float_eq(longer - base, 2.0 * (40 - 16) * 256, 0.01, "step bytes %g at 16, %g at 40", base, longer);
    base = bench_step_bytes(path, 2, 0, "bf16"), longer = bench_step_bytes(path, 2, 40, "bf16");
    cr_assert_float_eq(longer - base, 2.0 * (40 - 16) * 128, 0.01, "bf16: step bytes %g at 16, %g at 40", base, longer);
    snprintf(cmd, sizeof cmd, "%s bench %s --session-context 0 2>&1", cli_path(), path);
    cr_assert_eq(run_capture(cmd, &out), 1, "%s", out ? out : "");
    cr_assert(strstr(out, "--session-context needs a positive integer"), "%s", out);
    free(out);
    remove_tree(dir);
    free(dir);
}
