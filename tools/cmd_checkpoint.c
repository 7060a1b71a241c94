/*
 * cmd_checkpoint.c — strata make-checkpoint: writes a random-weight Nemotron-H
 * checkpoint in Hugging Face format (config.json in the released schema,
 * model.safetensors with the released tensor names backbone.* and lm_head.weight),
 * so benchmarks can run any shape without downloading one.
 *
 * Streaming: the header is computed from the shapes alone, then each tensor is
 * generated and written in 1 MiB pieces; memory stays small even for the 8B shape.
 * Weights are N(0, std²)-like (sum of uniforms) with small std so activations stay
 * finite; Mamba's A_log, D, dt_bias follow the reference initialisation's ranges.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

typedef struct ckpt_shape {
    int hidden, vocab, mamba_heads, mamba_head_dim, ssm_state, groups, conv_kernel;
    int attn_heads, kv_heads, head_dim, intermediate;
    int experts, experts_per_tok, moe_intermediate, shared_intermediate, expert_groups, topk_groups; /* E layers */
    int moe_latent;         /* experts on a latent of this width (Nemotron 3 Super), 0: on the hidden state */
    int tied;               /* the LM head is the embedding (no lm_head.weight) */
    char pattern[512];
} ckpt_shape;

/* hidden 1024; the 8B's M / - / * mix over 24 layers; 470 M parameters. */
static const ckpt_shape preset_470m = {
    .hidden = 1024, .vocab = 131072, .mamba_heads = 32, .mamba_head_dim = 64, .ssm_state = 128, .groups = 8,
    .conv_kernel = 4, .attn_heads = 8, .kv_heads = 2, .head_dim = 128, .intermediate = 4608,
    .experts = 8, .experts_per_tok = 2, .moe_intermediate = 1024, .shared_intermediate = 2048, .expert_groups = 1,
    .topk_groups = 1, .pattern = "M-M-M-M*-M-M-M-M*-M-M-M-"};
/* Nemotron-H 8B's published shape. */
static const ckpt_shape preset_8b = {
    .hidden = 4096, .vocab = 131072, .mamba_heads = 128, .mamba_head_dim = 64, .ssm_state = 128, .groups = 8,
    .conv_kernel = 4, .attn_heads = 32, .kv_heads = 8, .head_dim = 128, .intermediate = 21504,
    .experts = 8, .experts_per_tok = 2, .moe_intermediate = 4096, .shared_intermediate = 8192, .expert_groups = 1,
    .topk_groups = 1, .pattern = "M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-"};
/* Nemotron 3 Nano 30B-A3B's published shape (31.6 B parameters, 3.6 B active with
 * the embedding). */
static const ckpt_shape preset_30b_a3b = {
    .hidden = 2688, .vocab = 131072, .mamba_heads = 64, .mamba_head_dim = 64, .ssm_state = 128, .groups = 8,
    .conv_kernel = 4, .attn_heads = 32, .kv_heads = 2, .head_dim = 128, .intermediate = 1856,
    .experts = 128, .experts_per_tok = 6, .moe_intermediate = 1856, .shared_intermediate = 3712, .expert_groups = 1,
    .topk_groups = 1, .pattern = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME"};
/* The same mix and routing (128 experts, top 6, one shared) at hidden 1024 over 24
 * layers, the 470m's Mamba and attention: 2.4 B parameters, 0.49 B active. */
static const ckpt_shape preset_moe_2b = {
    .hidden = 1024, .vocab = 131072, .mamba_heads = 32, .mamba_head_dim = 64, .ssm_state = 128, .groups = 8,
    .conv_kernel = 4, .attn_heads = 8, .kv_heads = 2, .head_dim = 128, .intermediate = 704,
    .experts = 128, .experts_per_tok = 6, .moe_intermediate = 704, .shared_intermediate = 1408, .expert_groups = 1,
    .topk_groups = 1, .pattern = "MEMEM*EMEMEMEM*EMEMEMEME"};
/* A few-hundred-kilobyte model for tests. */
static const ckpt_shape preset_tiny = {
    .hidden = 64, .vocab = 512, .mamba_heads = 8, .mamba_head_dim = 16, .ssm_state = 16, .groups = 2,
    .conv_kernel = 4, .attn_heads = 4, .kv_heads = 2, .head_dim = 16, .intermediate = 128,
    .experts = 8, .experts_per_tok = 2, .moe_intermediate = 32, .shared_intermediate = 48, .expert_groups = 1,
    .topk_groups = 1, .pattern = "M-M*-M-"};

typedef enum init_kind { INIT_NORMAL, INIT_ONES, INIT_A_LOG, INIT_D, INIT_DT_BIAS, INIT_UNIFORM } init_kind;

typedef struct ckpt_tensor {
    char name[128];
    int ndim;
    int64_t shape[3];
    int f32;            /* stored as F32 whatever the checkpoint dtype (small 1-D params) */
    init_kind init;
    float scale;        /* std (normal) or bound (uniform) */
} ckpt_tensor;

typedef struct ckpt_plan {
    ckpt_tensor *t;
    int n, cap;
} ckpt_plan;

static int plan_add(ckpt_plan *p, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int f32,
                    init_kind init, float scale)
{
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        ckpt_tensor *grown = realloc(p->t, sizeof *grown * (size_t)cap);
        if (!grown)
            return 0;
        p->t = grown;
        p->cap = cap;
    }
    ckpt_tensor *t = &p->t[p->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = d0, t->shape[1] = d1, t->shape[2] = d2;
    t->f32 = f32;
    t->init = init;
    t->scale = scale;
    return 1;
}

static int64_t numel(const ckpt_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* Every tensor of the checkpoint, in file order. */
static int build_plan(const ckpt_shape *s, ckpt_plan *p)
{
    int L = (int)strlen(s->pattern), d = s->hidden;
    int d_inner = s->mamba_heads * s->mamba_head_dim, conv_dim = d_inner + 2 * s->groups * s->ssm_state;
    int in_proj = d_inner + conv_dim + s->mamba_heads, dm = s->moe_latent ? s->moe_latent : d;
    float std = 0.02f, out_std = 0.02f / sqrtf(2.0f * (float)L);
    char n[128];
    int ok = plan_add(p, "backbone.embeddings.weight", 2, s->vocab, d, 0, 0, INIT_NORMAL, std);
    for (int i = 0; ok && i < L; i++) {
#define ADD(suffix, ...) (snprintf(n, sizeof n, "backbone.layers.%d.%s", i, suffix), plan_add(p, n, __VA_ARGS__))
        ok = ADD("norm.weight", 1, d, 0, 0, 1, INIT_ONES, 0);
        switch (s->pattern[i]) {
        case 'M':
            ok = ok && ADD("mixer.A_log", 1, s->mamba_heads, 0, 0, 1, INIT_A_LOG, 0) &&
                 ADD("mixer.D", 1, s->mamba_heads, 0, 0, 1, INIT_D, 0) &&
                 ADD("mixer.conv1d.bias", 1, conv_dim, 0, 0, 1, INIT_UNIFORM, 0.1f) &&
                 ADD("mixer.conv1d.weight", 3, conv_dim, 1, s->conv_kernel, 1, INIT_UNIFORM, 0.5f) &&
                 ADD("mixer.dt_bias", 1, s->mamba_heads, 0, 0, 1, INIT_DT_BIAS, 0) &&
                 ADD("mixer.in_proj.weight", 2, in_proj, d, 0, 0, INIT_NORMAL, std) &&
                 ADD("mixer.norm.weight", 1, d_inner, 0, 0, 1, INIT_ONES, 0) &&
                 ADD("mixer.out_proj.weight", 2, d, d_inner, 0, 0, INIT_NORMAL, out_std);
            break;
        case '*':
            ok = ok && ADD("mixer.k_proj.weight", 2, s->kv_heads * s->head_dim, d, 0, 0, INIT_NORMAL, std) &&
                 ADD("mixer.o_proj.weight", 2, d, s->attn_heads * s->head_dim, 0, 0, INIT_NORMAL, out_std) &&
                 ADD("mixer.q_proj.weight", 2, s->attn_heads * s->head_dim, d, 0, 0, INIT_NORMAL, std) &&
                 ADD("mixer.v_proj.weight", 2, s->kv_heads * s->head_dim, d, 0, 0, INIT_NORMAL, std);
            break;
        case 'E':
            ok = ok && ADD("mixer.gate.e_score_correction_bias", 1, s->experts, 0, 0, 1, INIT_UNIFORM, 0.01f) &&
                 ADD("mixer.gate.weight", 2, s->experts, d, 0, 0, INIT_NORMAL, std);
            for (int e = 0; ok && e < s->experts; e++) {
                char ex[64];
                snprintf(ex, sizeof ex, "mixer.experts.%d.down_proj.weight", e);
                ok = ADD(ex, 2, dm, s->moe_intermediate, 0, 0, INIT_NORMAL, out_std);
                snprintf(ex, sizeof ex, "mixer.experts.%d.up_proj.weight", e);
                ok = ok && ADD(ex, 2, s->moe_intermediate, dm, 0, 0, INIT_NORMAL, std);
            }
            if (ok && s->moe_latent)
                ok = ADD("mixer.fc1_latent_proj.weight", 2, dm, d, 0, 0, INIT_NORMAL, std) &&
                     ADD("mixer.fc2_latent_proj.weight", 2, d, dm, 0, 0, INIT_NORMAL, std);
            ok = ok && ADD("mixer.shared_experts.down_proj.weight", 2, d, s->shared_intermediate, 0, 0, INIT_NORMAL,
                           out_std) &&
                 ADD("mixer.shared_experts.up_proj.weight", 2, s->shared_intermediate, d, 0, 0, INIT_NORMAL, std);
            break;
        default:
            ok = ok && ADD("mixer.down_proj.weight", 2, d, s->intermediate, 0, 0, INIT_NORMAL, out_std) &&
                 ADD("mixer.up_proj.weight", 2, s->intermediate, d, 0, 0, INIT_NORMAL, std);
            break;
        }
#undef ADD
    }
    return ok && plan_add(p, "backbone.norm_f.weight", 1, d, 0, 0, 1, INIT_ONES, 0) &&
           (s->tied || plan_add(p, "lm_head.weight", 2, s->vocab, d, 0, 0, INIT_NORMAL, std));
}

/* ---------------------------------------------------------------- numbers */

static uint64_t splitmix(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static float unif(uint64_t *st)
{
    return (float)(splitmix(st) >> 40) * (1.0f / 16777216.0f);
}

/* Roughly N(0, 1): the sum of four uniforms, rescaled (bounded, cheap). */
static float normalish(uint64_t *st)
{
    uint64_t r = splitmix(st);
    float s = 0.0f;
    for (int i = 0; i < 4; i++)
        s += (float)((r >> (16 * i)) & 0xffff) * (1.0f / 65536.0f);
    return (s - 2.0f) * 1.7320508f;
}

static float init_value(const ckpt_tensor *t, uint64_t *st)
{
    switch (t->init) {
    case INIT_ONES: return 1.0f;
    case INIT_D: return 1.0f;
    case INIT_A_LOG: return logf(1.0f + 15.0f * unif(st));                 /* A ∈ [1, 16] */
    case INIT_DT_BIAS: {                                                   /* softplus⁻¹(dt), dt ∈ [1e-3, 0.1] log-uniform */
        float dt = expf(logf(1e-3f) + unif(st) * (logf(0.1f) - logf(1e-3f)));
        return dt + logf(-expm1f(-dt));
    }
    case INIT_UNIFORM: return t->scale * (2.0f * unif(st) - 1.0f);
    default: return t->scale * normalish(st);
    }
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Round to nearest even half precision (normals, subnormals, overflow to inf). */
static uint16_t to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    float a = fabsf(f);
    if (a != a)
        return 0x7e00;
    if (a >= 65520.0f)
        return sign | 0x7c00;
    if (a < 6.103515625e-05f)                      /* subnormal: multiples of 2^-24 */
        return sign | (uint16_t)lrintf(a * 16777216.0f);
    uint32_t e = ((u >> 23) & 0xffu) - 127u + 15u, m = u & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13), rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++;
    return sign | (uint16_t)h;
}

/* ---------------------------------------------------------------- writing */

typedef struct ckpt_opts {
    ckpt_shape shape;
    const char *dtype;      /* "BF16", "F16", "F32" */
    uint64_t seed;
} ckpt_opts;

static size_t esize(const ckpt_opts *o, const ckpt_tensor *t)
{
    return t->f32 || !strcmp(o->dtype, "F32") ? 4 : 2;
}

/* The safetensors header: JSON padded with spaces to a multiple of 8. */
static char *make_header(const ckpt_opts *o, const ckpt_plan *p, size_t *len)
{
    size_t cap = 256 + (size_t)p->n * 256, n = 0;
    char *h = malloc(cap);
    if (!h)
        return NULL;
    n += (size_t)snprintf(h + n, cap - n, "{\"__metadata__\":{\"format\":\"pt\",\"source\":\"strata make-checkpoint\"}");
    uint64_t off = 0;
    for (int i = 0; i < p->n; i++) {
        const ckpt_tensor *t = &p->t[i];
        uint64_t bytes = (uint64_t)numel(t) * esize(o, t);
        n += (size_t)snprintf(h + n, cap - n, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name,
                              t->f32 ? "F32" : o->dtype);
        for (int d = 0; d < t->ndim; d++)
            n += (size_t)snprintf(h + n, cap - n, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        n += (size_t)snprintf(h + n, cap - n, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                              (unsigned long long)(off + bytes));
        off += bytes;
    }
    n += (size_t)snprintf(h + n, cap - n, "}");
    while (n % 8)
        h[n++] = ' ';
    *len = n;
    return h;
}

static int write_tensor(FILE *f, const ckpt_opts *o, const ckpt_tensor *t, uint64_t *rng, void *buf, size_t buf_elems)
{
    int64_t total = numel(t);
    size_t es = esize(o, t);
    for (int64_t done = 0; done < total;) {
        size_t n = (size_t)(total - done) < buf_elems ? (size_t)(total - done) : buf_elems;
        for (size_t i = 0; i < n; i++) {
            float v = init_value(t, rng);
            if (es == 4)
                ((float *)buf)[i] = v;
            else
                ((uint16_t *)buf)[i] = !strcmp(o->dtype, "BF16") ? to_bf16(v) : to_f16(v);
        }
        if (fwrite(buf, es, n, f) != n)
            return 0;
        done += (int64_t)n;
    }
    return 1;
}

static int write_config(const char *path, const ckpt_opts *o)
{
    const ckpt_shape *s = &o->shape;
    FILE *f = fopen(path, "w");
    if (!f)
        return 0;
    fprintf(f,
            "{\n  \"architectures\": [\"NemotronHForCausalLM\"],\n  \"attention_bias\": false,\n"
            "  \"attention_dropout\": 0.0,\n  \"bos_token_id\": 1,\n  \"chunk_size\": 128,\n"
            "  \"conv_kernel\": %d,\n  \"eos_token_id\": 2,\n  \"expand\": 2,\n  \"head_dim\": %d,\n"
            "  \"hidden_dropout\": 0.0,\n  \"hidden_size\": %d,\n  \"hybrid_override_pattern\": \"%s\",\n"
            "  \"initializer_range\": 0.02,\n  \"intermediate_size\": %d,\n  \"layer_norm_epsilon\": 1e-05,\n"
            "  \"mamba_head_dim\": %d,\n  \"mamba_hidden_act\": \"silu\",\n  \"mamba_num_heads\": %d,\n"
            "  \"mamba_proj_bias\": false,\n  \"max_position_embeddings\": 8192,\n  \"mlp_bias\": false,\n"
            "  \"mlp_hidden_act\": \"relu2\",\n  \"model_type\": \"nemotron_h\",\n  \"n_groups\": %d,\n"
            "  \"num_attention_heads\": %d,\n  \"num_hidden_layers\": %d,\n  \"num_key_value_heads\": %d,\n"
            "  \"num_logits_to_keep\": 1,\n  \"pad_token_id\": 0,\n  \"rescale_prenorm_residual\": true,\n"
            "  \"residual_in_fp32\": false,\n  \"sliding_window\": null,\n  \"ssm_state_size\": %d,\n"
            "  \"tie_word_embeddings\": %s,\n  \"time_step_floor\": 0.0001,\n  \"time_step_max\": 0.1,\n"
            "  \"time_step_min\": 0.001,\n  \"torch_dtype\": \"%s\",\n  \"use_bias\": false,\n"
            "  \"use_cache\": true,\n  \"use_conv_bias\": true,\n  \"use_mamba_kernels\": true,\n"
            "  \"vocab_size\": %d",
            s->conv_kernel, s->head_dim, s->hidden, s->pattern, s->intermediate, s->mamba_head_dim,
            s->mamba_heads, s->groups, s->attn_heads, (int)strlen(s->pattern), s->kv_heads, s->ssm_state,
            s->tied ? "true" : "false",
            !strcmp(o->dtype, "BF16") ? "bfloat16" : !strcmp(o->dtype, "F16") ? "float16" : "float32", s->vocab);
    if (strchr(s->pattern, 'E'))    /* Nemotron 3 Nano's routing: sigmoid scores, top-k renormalised, × 2.5 */
        fprintf(f,
                ",\n  \"moe_intermediate_size\": %d,\n  \"moe_shared_expert_intermediate_size\": %d,\n"
                "  \"n_group\": %d,\n  \"n_routed_experts\": %d,\n  \"n_shared_experts\": 1,\n"
                "  \"norm_topk_prob\": true,\n  \"num_experts_per_tok\": %d,\n  \"routed_scaling_factor\": 2.5,\n"
                "  \"topk_group\": %d",
                s->moe_intermediate, s->shared_intermediate, s->expert_groups, s->experts, s->experts_per_tok,
                s->topk_groups);
    if (strchr(s->pattern, 'E') && s->moe_latent)
        fprintf(f, ",\n  \"moe_latent_size\": %d", s->moe_latent);
    fprintf(f, "\n}\n");
    return fclose(f) == 0;
}

static int write_weights(const char *path, const ckpt_opts *o, const ckpt_plan *p)
{
    size_t hlen = 0;
    char *header = make_header(o, p, &hlen);
    FILE *f = header ? fopen(path, "wb") : NULL;
    size_t buf_elems = 1 << 18;
    void *buf = malloc(buf_elems * 4);
    int ok = f && buf;
    uint8_t len_le[8];
    for (int i = 0; i < 8; i++)
        len_le[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    ok = ok && fwrite(len_le, 1, 8, f) == 8 && fwrite(header, 1, hlen, f) == hlen;
    for (int i = 0; ok && i < p->n; i++) {
        uint64_t rng = o->seed * 0x100000001b3ull + (uint64_t)i * 0x9e3779b97f4a7c15ull;
        ok = write_tensor(f, o, &p->t[i], &rng, buf, buf_elems);
    }
    if (f && fclose(f) != 0)
        ok = 0;
    free(buf);
    free(header);
    return ok;
}

/* ---------------------------------------------------------------- the command */

static int parse_pos(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > (1 << 24))
        return 0;
    *out = (int)v;
    return 1;
}

/* mkdir -p */
static int make_dirs(const char *dir)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return 0;
            *p = '/';
        }
    return mkdir(buf, 0777) == 0 || errno == EEXIST;
}

static int valid_pattern(const char *p)
{
    if (!*p || strlen(p) >= sizeof preset_8b.pattern)
        return 0;
    for (; *p; p++)
        if (!strchr("M*-E", *p))
            return 0;
    return 1;
}

int cli_make_checkpoint(int argc, char **argv)
{
    const char *cmd = "make-checkpoint", *out = NULL, *preset = "470m", *dtype = "bf16";
    ckpt_opts o = {.seed = 1};
    struct { const char *flag; int *field; } ints[] = {
        {"--hidden", &o.shape.hidden}, {"--vocab", &o.shape.vocab}, {"--mamba-heads", &o.shape.mamba_heads},
        {"--mamba-head-dim", &o.shape.mamba_head_dim}, {"--ssm-state", &o.shape.ssm_state},
        {"--groups", &o.shape.groups}, {"--attn-heads", &o.shape.attn_heads}, {"--kv-heads", &o.shape.kv_heads},
        {"--head-dim", &o.shape.head_dim}, {"--intermediate", &o.shape.intermediate},
        {"--experts", &o.shape.experts}, {"--experts-per-token", &o.shape.experts_per_tok},
        {"--moe-intermediate", &o.shape.moe_intermediate}, {"--shared-intermediate", &o.shape.shared_intermediate},
        {"--expert-groups", &o.shape.expert_groups}, {"--topk-groups", &o.shape.topk_groups},
        {"--moe-latent", &o.shape.moe_latent},
    };
    enum { N_INTS = sizeof ints / sizeof ints[0] };
    int given[N_INTS] = {0};
    const char *pattern = NULL;
    int tied = 0;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        int has = i + 1 < argc, matched = 0;
        for (int k = 0; k < N_INTS && !matched; k++)
            if (!strcmp(f, ints[k].flag) && has) {
                matched = 1;
                if (!parse_pos(argv[++i], &given[k]))
                    return cli_fail(cmd, "%s needs a positive integer, got '%s'", f, argv[i]);
            }
        if (matched)
            continue;
        if (!strcmp(f, "--preset") && has)
            preset = argv[++i];
        else if (!strcmp(f, "--dtype") && has)
            dtype = argv[++i];
        else if (!strcmp(f, "--layers-pattern") && has)
            pattern = argv[++i];
        else if (!strcmp(f, "--tied"))
            tied = 1;
        else if (!strcmp(f, "--seed") && has)
            o.seed = strtoull(argv[++i], NULL, 10);
        else if (f[0] == '-')
            return cli_fail(cmd, "unknown or incomplete option '%s'", f);
        else if (!out)
            out = f;
        else
            return cli_fail(cmd, "unexpected argument '%s'", f);
    }
    if (!out)
        return cli_fail(cmd, "missing OUT_DIR");
    static const struct { const char *name; const ckpt_shape *shape; } presets[] = {
        {"470m", &preset_470m}, {"8b", &preset_8b}, {"30b-a3b", &preset_30b_a3b}, {"moe-2b", &preset_moe_2b},
        {"tiny", &preset_tiny},
    };
    const ckpt_shape *chosen = NULL;
    for (size_t k = 0; k < sizeof presets / sizeof presets[0] && !chosen; k++)
        chosen = !strcmp(preset, presets[k].name) ? presets[k].shape : NULL;
    if (!chosen)
        return cli_fail(cmd, "unknown preset '%s' (470m, 8b, 30b-a3b, moe-2b, tiny)", preset);
    o.shape = *chosen;
    for (int k = 0; k < N_INTS; k++)
        if (given[k])
            *ints[k].field = given[k];
    o.shape.tied |= tied;
    if (pattern) {
        if (!valid_pattern(pattern))
            return cli_fail(cmd, "--layers-pattern needs 1..511 characters of M, *, -, E");
        snprintf(o.shape.pattern, sizeof o.shape.pattern, "%s", pattern);
    }
    o.dtype = !strcmp(dtype, "bf16") ? "BF16" : !strcmp(dtype, "f16") ? "F16" : !strcmp(dtype, "f32") ? "F32" : NULL;
    if (!o.dtype)
        return cli_fail(cmd, "--dtype must be bf16, f16 or f32, got '%s'", dtype);
    const ckpt_shape *s = &o.shape;
    if (s->mamba_heads % s->groups || s->attn_heads % s->kv_heads)
        return cli_fail(cmd, "mamba heads must be a multiple of groups, attention heads of kv heads");
    if (s->experts_per_tok > s->experts || s->experts % s->expert_groups || s->topk_groups > s->expert_groups ||
        s->experts_per_tok > s->topk_groups * (s->experts / s->expert_groups))
        return cli_fail(cmd, "experts must be a multiple of expert groups, and the top-k groups must hold at least "
                             "experts-per-token experts");
    if (!make_dirs(out))
        return cli_fail(cmd, "%s: %s", out, strerror(errno));
    ckpt_plan plan = {0};
    char path[4096];
    int ok = build_plan(s, &plan);
    snprintf(path, sizeof path, "%s/config.json", out);
    ok = ok && write_config(path, &o);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    ok = ok && write_weights(path, &o, &plan);
    uint64_t params = 0;
    for (int i = 0; i < plan.n; i++)
        params += (uint64_t)numel(&plan.t[i]);
    free(plan.t);
    if (!ok)
        return cli_fail(cmd, "%s: could not write the checkpoint: %s", out, strerror(errno));
    printf("wrote %s: %s, %d layers (%s), hidden %d, vocab %d, %.1f M parameters", out, o.dtype,
           (int)strlen(s->pattern), s->pattern, s->hidden, s->vocab, (double)params / 1e6);
    int moe_layers = 0;
    for (const char *c = s->pattern; *c; c++)
        moe_layers += *c == 'E';
    if (moe_layers) {   /* a token reads experts_per_tok of each E layer's experts */
        double idle = (double)moe_layers * (s->experts - s->experts_per_tok) * 2.0 * s->moe_intermediate *
                      (s->moe_latent ? s->moe_latent : s->hidden);
        printf(" (%.1f M active per token)", ((double)params - idle) / 1e6);
    }
    printf("\n");
    return 0;
}
