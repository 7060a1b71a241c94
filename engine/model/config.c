/*
 * config.c — config.json → model_config. Accepts the stored key names first, then the
 * constructor aliases (mamba_n_groups, mamba_d_conv, ...), the layer pattern as
 * hybrid_override_pattern or layers_block_type, and a nested text_config. Every value
 * the forward pass uses is range-checked here so the layers can trust it.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/json.h"
#include "model/config.h"

/* The first of `keys` (NULL-terminated) present and not null. */
static json_t *get_any(json_t *obj, const char *const *keys, const char **found)
{
    for (; *keys; keys++) {
        json_t *v = json_object_get(obj, *keys);
        if (v && !json_is_null(v)) {
            if (found)
                *found = *keys;
            return v;
        }
    }
    return NULL;
}

#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})

static strata_status get_int(json_t *obj, const char *path, const char *const *keys, long dflt,
                             long lo, long hi, int *out, strata_error *err)
{
    const char *key = keys[0];
    json_t *v = get_any(obj, keys, &key);
    long x = dflt;
    if (v) {
        if (!json_is_integer(v))
            return strata_fail(err, STRATA_E_CONFIG, "%s: %s must be an integer", path, key);
        x = (long)json_integer_value(v);
    }
    if (x < lo || x > hi)
        return strata_fail(err, STRATA_E_CONFIG, "%s: %s = %ld is out of range [%ld, %ld]", path, key, x,
                           lo, hi);
    *out = (int)x;
    return STRATA_OK;
}

static strata_status get_bool(json_t *obj, const char *path, const char *const *keys, int dflt,
                              int *out, strata_error *err)
{
    const char *key = keys[0];
    json_t *v = get_any(obj, keys, &key);
    if (v && !json_is_boolean(v))
        return strata_fail(err, STRATA_E_CONFIG, "%s: %s must be true or false", path, key);
    *out = v ? json_is_true(v) : dflt;
    return STRATA_OK;
}

static strata_status get_real(json_t *obj, const char *path, const char *const *keys, double dflt,
                              float *out, strata_error *err)
{
    const char *key = keys[0];
    json_t *v = get_any(obj, keys, &key);
    if (v && !json_is_number(v))
        return strata_fail(err, STRATA_E_CONFIG, "%s: %s must be a number", path, key);
    *out = (float)(v ? json_get_real(v) : dflt);
    return STRATA_OK;
}

static char kind_from_block_name(const char *name)
{
    static const struct { const char *name; char kind; } names[] = {
        {"mamba", 'M'}, {"linear_attention", 'M'}, {"attention", '*'}, {"full_attention", '*'},
        {"mlp", '-'},   {"moe", 'E'},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(names[i].name, name))
            return names[i].kind;
    return 0;
}

static strata_status read_pattern(json_t *obj, const char *path, model_config *c, strata_error *err)
{
    json_t *pat = json_object_get(obj, "hybrid_override_pattern");
    json_t *types = json_object_get(obj, "layers_block_type");
    if (json_is_string(pat)) {
        size_t n = strlen(json_string_value(pat));
        if (n == 0 || n > STRATA_MAX_LAYERS)
            return strata_fail(err, STRATA_E_CONFIG, "%s: hybrid_override_pattern has %zu layers", path, n);
        memcpy(c->pattern, json_string_value(pat), n + 1);
    } else if (json_is_array(types)) {
        size_t n = json_array_size(types);
        if (n == 0 || n > STRATA_MAX_LAYERS)
            return strata_fail(err, STRATA_E_CONFIG, "%s: layers_block_type has %zu layers", path, n);
        for (size_t i = 0; i < n; i++) {
            json_t *t = json_array_get(types, i);
            char k = json_is_string(t) ? kind_from_block_name(json_string_value(t)) : 0;
            if (!k)
                return strata_fail(err, STRATA_E_CONFIG, "%s: layers_block_type[%zu] is not one of "
                                   "mamba, attention, mlp, moe", path, i);
            c->pattern[i] = k;
        }
        c->pattern[n] = '\0';
    } else {
        return strata_fail(err, STRATA_E_CONFIG,
                           "%s: neither hybrid_override_pattern nor layers_block_type is given", path);
    }
    for (int i = 0; c->pattern[i]; i++)
        if (!strchr("M*-E", c->pattern[i]))
            return strata_fail(err, STRATA_E_CONFIG,
                               "%s: hybrid_override_pattern has unknown layer character '%c' at layer %d "
                               "(expected M, *, - or E)", path, c->pattern[i], i);
    c->info.pattern = c->pattern;
    c->info.n_layers = (int)strlen(c->pattern);
    return STRATA_OK;
}

static strata_status read_dt_limit(json_t *obj, const char *path, strata_model_info *m, strata_error *err)
{
    json_t *lim = get_any(obj, KEYS("time_step_limit", "mamba_dt_limit"), NULL);
    m->dt_limit_lo = 0.0f;
    m->dt_limit_hi = INFINITY;
    if (!lim)
        return STRATA_OK;
    if (!json_is_array(lim) || json_array_size(lim) != 2 || !json_is_number(json_array_get(lim, 0)) ||
        !json_is_number(json_array_get(lim, 1)))
        return strata_fail(err, STRATA_E_CONFIG, "%s: time_step_limit must be [lo, hi]", path);
    m->dt_limit_lo = (float)json_get_real(json_array_get(lim, 0));
    m->dt_limit_hi = (float)json_get_real(json_array_get(lim, 1));
    if (!(m->dt_limit_lo <= m->dt_limit_hi))
        return strata_fail(err, STRATA_E_CONFIG, "%s: time_step_limit has lo > hi", path);
    return STRATA_OK;
}

static strata_status check_activations(json_t *obj, const char *path, strata_error *err)
{
    json_t *a = json_object_get(obj, "mamba_hidden_act");
    if (a && !(json_is_string(a) && !strcmp(json_string_value(a), "silu")))
        return strata_fail(err, STRATA_E_UNSUPPORTED, "%s: mamba_hidden_act must be \"silu\"", path);
    a = json_object_get(obj, "mlp_hidden_act");
    if (a && !(json_is_string(a) && !strcmp(json_string_value(a), "relu2")))
        return strata_fail(err, STRATA_E_UNSUPPORTED, "%s: mlp_hidden_act must be \"relu2\"", path);
    a = json_object_get(obj, "sliding_window");
    if (a && !json_is_null(a))
        return strata_fail(err, STRATA_E_UNSUPPORTED, "%s: sliding_window attention is not supported", path);
    return STRATA_OK;
}

static int count_kind(const model_config *c, char kind)
{
    int n = 0;
    for (int i = 0; c->pattern[i]; i++)
        n += c->pattern[i] == kind;
    return n;
}

static strata_status read_sizes(json_t *o, const char *p, model_config *c, strata_error *err)
{
    strata_model_info *m = &c->info;
    const long BIG = 1L << 24;
    int layers;
    STRATA_TRY(get_int(o, p, KEYS("vocab_size"), 131072, 1, BIG, &m->vocab_size, err));
    STRATA_TRY(get_int(o, p, KEYS("hidden_size"), 4096, 1, 1 << 16, &m->hidden_size, err));
    STRATA_TRY(get_int(o, p, KEYS("num_hidden_layers"), m->n_layers, 1, STRATA_MAX_LAYERS, &layers, err));
    if (layers != m->n_layers)
        return strata_fail(err, STRATA_E_CONFIG, "%s: num_hidden_layers = %d but the layer pattern has %d",
                           p, layers, m->n_layers);
    STRATA_TRY(get_int(o, p, KEYS("mamba_num_heads"), 128, 1, 1 << 14, &m->mamba_heads, err));
    STRATA_TRY(get_int(o, p, KEYS("mamba_head_dim"), 64, 1, 1 << 12, &m->mamba_head_dim, err));
    STRATA_TRY(get_int(o, p, KEYS("ssm_state_size"), 128, 1, 1 << 12, &m->ssm_state_size, err));
    STRATA_TRY(get_int(o, p, KEYS("n_groups", "mamba_n_groups"), 8, 1, 1 << 12, &m->n_groups, err));
    STRATA_TRY(get_int(o, p, KEYS("conv_kernel", "mamba_d_conv"), 4, 1, 64, &m->conv_kernel, err));
    STRATA_TRY(get_int(o, p, KEYS("num_attention_heads"), 32, 1, 1 << 12, &m->attn_heads, err));
    STRATA_TRY(get_int(o, p, KEYS("num_key_value_heads"), m->attn_heads, 1, 1 << 12, &m->kv_heads, err));
    STRATA_TRY(get_int(o, p, KEYS("head_dim", "attention_head_dim"), 128, 1, 1 << 12, &m->head_dim, err));
    STRATA_TRY(get_int(o, p, KEYS("intermediate_size"), 21504, 1, BIG, &m->intermediate_size, err));
    STRATA_TRY(get_int(o, p, KEYS("n_routed_experts"), 8, 1, 1 << 14, &m->n_experts, err));
    STRATA_TRY(get_int(o, p, KEYS("num_experts_per_tok"), 2, 1, 1 << 14, &m->experts_per_tok, err));
    STRATA_TRY(get_int(o, p, KEYS("moe_intermediate_size"), 7688, 1, BIG, &m->moe_intermediate_size, err));
    STRATA_TRY(get_int(o, p, KEYS("moe_shared_expert_intermediate_size"), 7688, 1, BIG,
                       &m->shared_intermediate_size, err));
    STRATA_TRY(get_int(o, p, KEYS("n_group"), 1, 1, 1 << 14, &m->n_group, err));
    STRATA_TRY(get_int(o, p, KEYS("topk_group"), 1, 1, 1 << 14, &m->topk_group, err));
    STRATA_TRY(get_int(o, p, KEYS("moe_latent_size"), 0, 0, BIG, &c->moe_latent_size, err));
    STRATA_TRY(get_int(o, p, KEYS("max_position_embeddings"), 4096, 1, 1 << 30, &m->max_position_embeddings, err));
    STRATA_TRY(get_int(o, p, KEYS("bos_token_id"), 1, -1, BIG, &m->bos_token_id, err));
    STRATA_TRY(get_int(o, p, KEYS("pad_token_id"), 0, -1, BIG, &m->pad_token_id, err));
    json_t *eos = json_object_get(o, "eos_token_id"); /* may be a list: take the first */
    m->eos_token_id = json_is_integer(eos) ? (int)json_integer_value(eos)
                      : json_is_array(eos) && json_is_integer(json_array_get(eos, 0))
                          ? (int)json_integer_value(json_array_get(eos, 0)) : 2;
    return STRATA_OK;
}

static strata_status read_flags(json_t *o, const char *p, model_config *c, strata_error *err)
{
    strata_model_info *m = &c->info;
    STRATA_TRY(get_real(o, p, KEYS("layer_norm_epsilon", "norm_eps", "rms_norm_eps"), 1e-5, &m->norm_eps, err));
    STRATA_TRY(get_real(o, p, KEYS("routed_scaling_factor"), 1.0, &m->routed_scaling_factor, err));
    STRATA_TRY(get_bool(o, p, KEYS("tie_word_embeddings"), 0, &m->tie_word_embeddings, err));
    STRATA_TRY(get_bool(o, p, KEYS("norm_topk_prob"), 1, &m->norm_topk_prob, err));
    STRATA_TRY(get_bool(o, p, KEYS("use_bias"), 0, &c->use_bias, err));
    STRATA_TRY(get_bool(o, p, KEYS("use_conv_bias", "mamba_conv_bias"), 1, &c->use_conv_bias, err));
    STRATA_TRY(get_bool(o, p, KEYS("attention_bias"), 0, &c->attention_bias, err));
    STRATA_TRY(get_bool(o, p, KEYS("mlp_bias"), 0, &c->mlp_bias, err));
    if (!(m->norm_eps > 0 && m->norm_eps < 1))
        return strata_fail(err, STRATA_E_CONFIG, "%s: layer_norm_epsilon must be in (0, 1)", p);
    if (!isfinite(m->routed_scaling_factor))
        return strata_fail(err, STRATA_E_CONFIG, "%s: routed_scaling_factor must be finite", p);
    return read_dt_limit(o, p, m, err);
}

/* Cross-field consistency: everything the layers divide by or index with. */
static strata_status check_consistency(const char *p, model_config *c, strata_error *err)
{
    strata_model_info *m = &c->info;
    if (count_kind(c, '*') && m->attn_heads % m->kv_heads)
        return strata_fail(err, STRATA_E_CONFIG,
                           "%s: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)", p,
                           m->attn_heads, m->kv_heads);
    if (count_kind(c, 'M') && m->mamba_heads % m->n_groups)
        return strata_fail(err, STRATA_E_CONFIG, "%s: mamba_num_heads (%d) is not a multiple of n_groups (%d)",
                           p, m->mamba_heads, m->n_groups);
    if (count_kind(c, 'E')) {
        if (m->experts_per_tok > m->n_experts)
            return strata_fail(err, STRATA_E_CONFIG, "%s: num_experts_per_tok (%d) > n_routed_experts (%d)",
                               p, m->experts_per_tok, m->n_experts);
        if (m->n_experts % m->n_group || m->topk_group > m->n_group)
            return strata_fail(err, STRATA_E_CONFIG,
                               "%s: n_routed_experts (%d) must split into n_group (%d) groups, topk_group (%d) <= n_group",
                               p, m->n_experts, m->n_group, m->topk_group);
        if (m->n_group > 1 && (m->n_experts / m->n_group < 2 ||
                               m->topk_group * (m->n_experts / m->n_group) < m->experts_per_tok))
            return strata_fail(err, STRATA_E_CONFIG,
                               "%s: group-limited routing keeps fewer experts than num_experts_per_tok", p);
    }
    m->d_inner = m->mamba_heads * m->mamba_head_dim;
    m->conv_dim = m->d_inner + 2 * m->n_groups * m->ssm_state_size;
    m->in_proj_dim = 2 * c->d_mlp + m->d_inner + m->conv_dim + m->mamba_heads;
    return STRATA_OK;
}

strata_status config_load(const char *path, model_config *cfg, strata_error *err)
{
    json_t *root;
    memset(cfg, 0, sizeof *cfg);
    STRATA_TRY(json_load_python(path, &root, err));
    json_t *o = root;
    strata_status s = STRATA_OK;
    if (!json_is_object(root))
        s = strata_fail(err, STRATA_E_CONFIG, "%s: not a JSON object", path);
    else if (json_is_object(json_object_get(root, "text_config")) &&
             !json_object_get(root, "hybrid_override_pattern") && !json_object_get(root, "layers_block_type"))
        o = json_object_get(root, "text_config");
    if (s == STRATA_OK) {
        json_t *mt = json_object_get(o, "model_type");
        if (mt && !(json_is_string(mt) && !strcmp(json_string_value(mt), "nemotron_h")))
            s = strata_fail(err, STRATA_E_UNSUPPORTED, "%s: model_type \"%s\" is not nemotron_h", path,
                            json_is_string(mt) ? json_string_value(mt) : "?");
    }
    if (s == STRATA_OK)
        s = read_pattern(o, path, cfg, err);
    if (s == STRATA_OK)
        s = check_activations(o, path, err);
    if (s == STRATA_OK)
        s = read_sizes(o, path, cfg, err);
    if (s == STRATA_OK)
        s = read_flags(o, path, cfg, err);
    if (s == STRATA_OK)
        s = check_consistency(path, cfg, err);
    json_decref(root);
    return s;
}
