/*
 * cmd_model.c — the model subcommands of the CLI:
 *   strata info MODEL_DIR [--weights native|int8]
 *   strata run MODEL_DIR --tokens 1,2,3 [--hooks LIST] [--prefill N] [--weights native|int8] --out OUT.safetensors
 *   strata generate MODEL_DIR --tokens 1,2,3 [-n 24] [--weights native|int8]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct args {
    const char *model_dir, *tokens, *hooks, *out;
    const char *compute;    /* --compute fp32|bf16 */
    int prefill, n_new;
    strata_load_opts load;  /* --weights native|int8 */
} args;

static int parse_args(const char *cmd, int argc, char **argv, args *a)
{
    *a = (args){.prefill = -1, .n_new = 24, .compute = "fp32"};
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(f, "--tokens") && has_value)
            a->tokens = argv[++i];
        else if (!strcmp(f, "--hooks") && has_value)
            a->hooks = argv[++i];
        else if (!strcmp(f, "--out") && has_value)
            a->out = argv[++i];
        else if (!strcmp(f, "--weights") && has_value) {
            strata_error err;
            if (strata_weights_parse(argv[++i], &a->load.weights, &err) != STRATA_OK)
                return cli_fail(cmd, "--weights: %s", err.message), 0;
        } else if (!strcmp(f, "--compute") && has_value)
            a->compute = argv[++i];
        else if (!strcmp(f, "--prefill") && has_value) {
            if (!cli_parse_int(argv[++i], 0, 1 << 30, &a->prefill))
                return cli_fail(cmd, "--prefill needs a non-negative integer, got '%s'", argv[i]), 0;
        } else if ((!strcmp(f, "-n") || !strcmp(f, "--max-tokens")) && has_value) {
            if (!cli_parse_int(argv[++i], 0, 1 << 24, &a->n_new))
                return cli_fail(cmd, "-n needs a non-negative integer, got '%s'", argv[i]), 0;
        } else if (f[0] == '-') {
            return cli_fail(cmd, "unknown or incomplete option '%s'", f), 0;
        } else if (!a->model_dir) {
            a->model_dir = f;
        } else {
            return cli_fail(cmd, "unexpected argument '%s'", f), 0;
        }
    }
    if (!a->model_dir)
        return cli_fail(cmd, "missing MODEL_DIR"), 0;
    return 1;
}

/* The checkpoint of a, in a's compute mode. */
static strata_status load_model(const args *a, strata_model **model, strata_error *err)
{
    strata_load_opts opts = a->load;
    opts.compute = a->compute;
    strata_status s = strata_model_load_with(a->model_dir, &opts, model, err);
    if (s != STRATA_OK)
        return s;
    s = strata_model_set_compute(*model, a->compute, err);
    if (s != STRATA_OK) {
        strata_model_free(*model);
        *model = NULL;
    }
    return s;
}

/* "1,2,3" → ids; every id must be an integer in [0, vocab). */
static int parse_tokens(const char *cmd, const char *s, int vocab, int32_t **out, int *n)
{
    if (!s || !*s)
        return cli_fail(cmd, "--tokens needs a comma-separated list of token ids"), 0;
    int cap = 16, len = 0;
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    const char *p = s;
    while (ids) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v >= vocab) {
            free(ids);
            return cli_fail(cmd, "--tokens: '%s' is not a token id in [0, %d)", p, vocab), 0;
        }
        if (len == cap) {
            int32_t *grown = realloc(ids, sizeof *ids * (size_t)(cap *= 2));
            if (!grown)
                break;
            ids = grown;
        }
        ids[len++] = (int32_t)v;
        if (*end == '\0')
            break;
        if (*end != ',') {
            free(ids);
            return cli_fail(cmd, "--tokens: unexpected '%c'", *end), 0;
        }
        p = end + 1;
    }
    if (!ids)
        return cli_fail(cmd, "out of memory"), 0;
    *out = ids;
    *n = len;
    return 1;
}

/* ---------------------------------------------------------------- info */

static void print_plan(const strata_model_info *m)
{
    int counts[4] = {0};
    const char *kinds = "M*-E";
    for (int i = 0; i < m->n_layers; i++)
        counts[strchr(kinds, m->pattern[i]) - kinds]++;
    printf("layers: %d  pattern: %s\n", m->n_layers, m->pattern);
    printf("  mamba2 %d, attention %d, mlp %d, moe %d\n", counts[0], counts[1], counts[2], counts[3]);
    printf("plan:");
    for (int i = 0; i < m->n_layers; i++)
        printf(" %d:%s", i, m->pattern[i] == 'M' ? "mamba2" : m->pattern[i] == '*' ? "attention"
                           : m->pattern[i] == '-' ? "mlp" : "moe");
    printf("\n");
}

int cli_info(int argc, char **argv)
{
    args a;
    if (!parse_args("info", argc, argv, &a))
        return 1;
    strata_error err;
    strata_model *model;
    if (load_model(&a, &model, &err) != STRATA_OK)
        return cli_fail_err("info", &err);
    const strata_model_info *m = strata_model_get_info(model);
    printf("model: %s (nemotron_h)\n", a.model_dir);
    print_plan(m);
    printf("hidden: %d  vocab: %d  norm_eps: %g  tied embeddings: %s\n", m->hidden_size, m->vocab_size,
           (double)m->norm_eps, m->tie_word_embeddings ? "yes" : "no");
    printf("mamba2: heads %d x head_dim %d (d_inner %d), state %d, groups %d, conv kernel %d, conv_dim %d, in_proj %d\n",
           m->mamba_heads, m->mamba_head_dim, m->d_inner, m->ssm_state_size, m->n_groups, m->conv_kernel,
           m->conv_dim, m->in_proj_dim);
    printf("attention: %d query heads, %d kv heads, head_dim %d, no positional encoding\n", m->attn_heads,
           m->kv_heads, m->head_dim);
    printf("mlp: relu2, intermediate %d\n", m->intermediate_size);
    if (strchr(m->pattern, 'E'))
        printf("moe: %d experts (top-%d, width %d), shared width %d, groups %d keep %d, norm_topk %s, scale %g\n",
               m->n_experts, m->experts_per_tok, m->moe_intermediate_size, m->shared_intermediate_size,
               m->n_group, m->topk_group, m->norm_topk_prob ? "yes" : "no", (double)m->routed_scaling_factor);
    printf("parameters: %llu (%.2f M)\n", (unsigned long long)m->n_params, (double)m->n_params / 1e6);
    if (m->expert_params)
        printf("active per token: %.2f M (routed experts %.2f M in all)\n", (double)m->active_params / 1e6,
               (double)m->expert_params / 1e6);
    printf("weight bytes: %llu (%.2f MiB)\n", (unsigned long long)m->weight_bytes,
           (double)m->weight_bytes / (1 << 20));
    printf("state bytes per session: %llu fixed + %llu per token\n", (unsigned long long)m->state_bytes_fixed,
           (unsigned long long)m->state_bytes_per_token);
    strata_model_free(model);
    return 0;
}

/* ---------------------------------------------------------------- run */

static int add_hooks(strata_capture *cap, const char *list, strata_error *err)
{
    char *copy = strdup(list ? list : "logits"), *save = NULL;
    int ok = copy != NULL;
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; ok && tok; tok = strtok_r(NULL, ",", &save))
        ok = strata_capture_add(cap, tok, err) == STRATA_OK;
    free(copy);
    return ok;
}

/* Prefill the first `prefill` tokens as one chunk, then one token per step. */
static strata_status forward_tokens(strata_runner *run, strata_cache *cache, strata_capture *cap,
                                    const int32_t *ids, int n, int prefill, strata_error *err)
{
    if (prefill <= 0 || prefill >= n)
        prefill = n;
    strata_seq seq = {.cache = cache, .tokens = ids, .n_tokens = prefill, .capture = cap};
    strata_status s = strata_runner_step(run, &seq, 1, err);
    for (int t = prefill; s == STRATA_OK && t < n; t++) {
        seq.tokens = ids + t;
        seq.n_tokens = 1;
        s = strata_runner_step(run, &seq, 1, err);
    }
    return s;
}

static strata_status write_capture(const char *path, const strata_capture *cap, const int32_t *ids, int n,
                                   strata_error *err)
{
    int count = strata_capture_count(cap);
    strata_tensor_view *views = calloc((size_t)count + 1, sizeof *views);
    if (!views)
        return STRATA_E_NOMEM;
    views[0] = (strata_tensor_view){.name = "input_ids", .dtype = STRATA_I32, .ndim = 1, .shape = {n}, .data = ids};
    strata_status s = STRATA_OK;
    for (int i = 0; i < count && s == STRATA_OK; i++)
        s = strata_capture_get(cap, i, &views[i + 1], err);
    if (s == STRATA_OK)
        s = strata_safetensors_write(path, views, count + 1, "{\"format\":\"pt\",\"source\":\"strata run\"}", err);
    free(views);
    return s;
}

int cli_run(int argc, char **argv)
{
    args a;
    if (!parse_args("run", argc, argv, &a))
        return 1;
    if (!a.out)
        return cli_fail("run", "missing --out OUT.safetensors");
    strata_error err;
    strata_model *model = NULL;
    strata_cache *cache = NULL;
    strata_capture *cap = NULL;
    strata_runner *run = NULL;
    int32_t *ids = NULL;
    int n = 0, rc = 1;
    if (load_model(&a, &model, &err) != STRATA_OK) {
        cli_fail_err("run", &err);
    } else if (!parse_tokens("run", a.tokens, strata_model_get_info(model)->vocab_size, &ids, &n)) {
    } else if (strata_capture_new(model, &cap, &err) != STRATA_OK || !add_hooks(cap, a.hooks, &err) ||
               strata_cache_new(model, &cache, &err) != STRATA_OK ||
               strata_runner_new(model, &run, &err) != STRATA_OK ||
               forward_tokens(run, cache, cap, ids, n, a.prefill, &err) != STRATA_OK ||
               write_capture(a.out, cap, ids, n, &err) != STRATA_OK) {
        cli_fail_err("run", &err);
    } else {
        rc = 0;
    }
    free(ids);
    strata_runner_free(run);
    strata_cache_free(cache);
    strata_capture_free(cap);
    strata_model_free(model);
    return rc;
}

/* ---------------------------------------------------------------- generate */

/* Prefill, then take the argmax and feed it back n_new - 1 times (EOS does not stop:
 * this is the fixtures' definition of a greedy continuation). */
static strata_status greedy(strata_runner *run, strata_cache *cache, int vocab, const int32_t *ids, int n,
                            int n_new, int32_t *out, float *logits, double *secs, strata_error *err)
{
    double t0 = cli_now();
    strata_seq seq = {.cache = cache, .tokens = ids, .n_tokens = n, .logits = logits};
    strata_status s = strata_runner_step(run, &seq, 1, err);
    secs[0] = cli_now() - t0;
    t0 = cli_now();
    for (int i = 0; s == STRATA_OK && i < n_new; i++) {
        out[i] = cli_argmax(logits, vocab);
        if (i + 1 == n_new)
            break;
        seq.tokens = &out[i];
        seq.n_tokens = 1;
        s = strata_runner_step(run, &seq, 1, err);
    }
    secs[1] = cli_now() - t0;
    return s;
}

static void print_ids(const int32_t *ids, int n)
{
    putchar('[');
    for (int i = 0; i < n; i++)
        printf(i ? ",%d" : "%d", ids[i]);
    printf("]\n");
}

int cli_generate(int argc, char **argv)
{
    args a;
    if (!parse_args("generate", argc, argv, &a))
        return 1;
    strata_error err;
    strata_model *model = NULL;
    strata_cache *cache = NULL;
    strata_runner *run = NULL;
    int32_t *ids = NULL, *out = NULL;
    float *logits = NULL;
    int n = 0, rc = 1;
    double secs[2] = {0};
    if (load_model(&a, &model, &err) != STRATA_OK)
        return cli_fail_err("generate", &err);
    int vocab = strata_model_get_info(model)->vocab_size;
    if (!parse_tokens("generate", a.tokens, vocab, &ids, &n)) {
    } else if (!(out = malloc(sizeof *out * (size_t)(a.n_new + 1))) ||
               !(logits = malloc(sizeof *logits * (size_t)vocab))) {
        cli_fail("generate", "out of memory");
    } else if (strata_cache_new(model, &cache, &err) != STRATA_OK ||
               strata_runner_new(model, &run, &err) != STRATA_OK ||
               greedy(run, cache, vocab, ids, n, a.n_new, out, logits, secs, &err) != STRATA_OK) {
        cli_fail_err("generate", &err);
    } else {
        print_ids(out, a.n_new);
        printf("prefill: %d tokens in %.3f s (%.1f tokens/s)\n", n, secs[0], n / (secs[0] > 0 ? secs[0] : 1e-9));
        printf("decode: %d tokens in %.3f s (%.1f tokens/s)\n", a.n_new > 0 ? a.n_new - 1 : 0, secs[1],
               (a.n_new > 1 ? a.n_new - 1 : 0) / (secs[1] > 0 ? secs[1] : 1e-9));
        rc = 0;
    }
    free(ids);
    free(out);
    free(logits);
    strata_runner_free(run);
    strata_cache_free(cache);
    strata_model_free(model);
    return rc;
}
