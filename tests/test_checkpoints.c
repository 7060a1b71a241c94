/*
 * test_checkpoints.c — loading checkpoints as they ship, and refusing broken ones.
 * Variants are made from the hybrid-small fixture: its weights re-saved as F32, in
 * shards, under another prefix, with other config spellings (same numbers
 * expected), or damaged in one way each (a clear error expected, never a crash).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/isa.h"
#include "model/model.h"
#include "util.h"

#define SRC "fixtures/models/hybrid-small"

/* A tensor to write: name, dtype string, shape, bytes. */
typedef struct raw_tensor {
    char name[160];
    const char *dtype;
    int ndim;
    int64_t shape[4];
    const void *data;
    size_t nbytes;
} raw_tensor;

/* Write a safetensors file byte by byte, so tests can also write lies. `lie_end`
 * (if > 0) replaces the end offset of tensor 0; `skew` blanks after the header
 * padded to 8 bytes put the data section off alignment (the format allows it). */
static void write_raw_skewed(const char *path, const raw_tensor *t, int n, long long lie_end, int skew)
{
    json_t *root = json_object();
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < t[i].ndim; d++)
            json_array_append_new(shape, json_integer(t[i].shape[d]));
        long long end = i == 0 && lie_end > 0 ? lie_end : (long long)(off + t[i].nbytes);
        json_object_set_new(root, t[i].name, json_pack("{s:s,s:o,s:[I,I]}", "dtype", t[i].dtype, "shape", shape,
                                                       "data_offsets", (json_int_t)off, (json_int_t)end));
        off += t[i].nbytes;
    }
    char *h = json_dumps(root, JSON_COMPACT);
    size_t hl = strlen(h), padded = ((hl + 7) & ~(size_t)7) + (size_t)skew;
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    uint64_t n64 = padded;
    fwrite(&n64, 8, 1, f);
    fwrite(h, 1, hl, f);
    for (size_t i = hl; i < padded; i++)
        fputc(' ', f);
    for (int i = 0; i < n; i++)
        fwrite(t[i].data, 1, t[i].nbytes, f);
    fclose(f);
    free(h);
    json_decref(root);
}

static void write_raw(const char *path, const raw_tensor *t, int n, long long lie_end)
{
    write_raw_skewed(path, t, n, lie_end, 0);
}

/* The fixture's tensors widened to F32 (exact from BF16), renamed by `prefix`. */
typedef struct tensor_set {
    raw_tensor *t;
    int n;
    float **bufs;
} tensor_set;

static void load_as_f32(tensor_set *s, const char *prefix)
{
    char path[4096];
    strata_error err;
    st_file *f;
    snprintf(path, sizeof path, "%s/model.safetensors", shared_path(SRC));
    cr_assert_eq(st_open(path, &f, &err), STRATA_OK, "%s", err.message);
    s->n = f->n_tensors;
    s->t = calloc((size_t)s->n, sizeof *s->t);
    s->bufs = calloc((size_t)s->n, sizeof *s->bufs);
    for (int i = 0; i < s->n; i++) {
        const st_tensor *src = &f->tensors[i];
        raw_tensor *t = &s->t[i];
        const char *name = src->name;
        if (prefix && !strncmp(name, "backbone.", 9))
            snprintf(t->name, sizeof t->name, "%s%s", prefix, name + 9);
        else
            snprintf(t->name, sizeof t->name, "%s", name);
        t->dtype = "F32";
        t->ndim = src->ndim;
        memcpy(t->shape, src->shape, sizeof(int64_t) * (size_t)src->ndim);
        s->bufs[i] = malloc(sizeof(float) * (size_t)src->numel);
        for (int64_t k = 0; k < src->numel; k++)
            s->bufs[i][k] = mat_elem(src->data, src->dtype, (size_t)k);
        t->data = s->bufs[i];
        t->nbytes = sizeof(float) * (size_t)src->numel;
    }
    st_close(f);
}

static void free_set(tensor_set *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->bufs[i]);
    free(s->bufs);
    free(s->t);
}

static int find_raw(const tensor_set *s, const char *suffix)
{
    for (int i = 0; i < s->n; i++) {
        size_t a = strlen(s->t[i].name), b = strlen(suffix);
        if (a >= b && !strcmp(s->t[i].name + a - b, suffix))
            return i;
    }
    cr_assert_fail("no tensor ending in %s", suffix);
    return -1;
}

static json_t *fixture_config(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", shared_path(SRC));
    json_t *c = json_load_file(path, 0, NULL);
    cr_assert(c);
    return c;
}

static void write_config(const char *dir, json_t *config)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cr_assert_eq(json_dump_file(config, path, JSON_INDENT(2)), 0);
}

/* Write config.json as raw text (to carry Python's non-standard literals). */
static void write_config_text(const char *dir, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

/* Logits of input_ids through the model in `dir`, checked against the fixture. */
static void expect_fixture_logits(const char *dir)
{
    strata_error err;
    strata_model *m;
    st_file *exp;
    char path[4096];
    cr_assert_eq(strata_model_load(dir, &m, &err), STRATA_OK, "%s", err.message);
    snprintf(path, sizeof path, "%s/expected.safetensors", shared_path(SRC));
    cr_assert_eq(st_open(path, &exp, &err), STRATA_OK);
    const st_tensor *ids = st_find(exp, "input_ids"), *want = st_find(exp, "logits");
    strata_cache *c;
    strata_runner *r;
    cr_assert_eq(strata_cache_new(m, &c, &err), STRATA_OK);
    cr_assert_eq(strata_runner_new(m, &r, &err), STRATA_OK);
    float *logits = malloc(sizeof(float) * (size_t)want->numel);
    strata_seq seq = {.cache = c, .tokens = ids->data, .n_tokens = (int)ids->numel, .logits = logits, .all_logits = 1};
    cr_assert_eq(strata_runner_step(r, &seq, 1, &err), STRATA_OK, "%s", err.message);
    double diff, tol;
    cr_assert(within_tolerance(logits, want->data, (size_t)want->numel, &diff, &tol), "logits diff %g > %g", diff, tol);
    free(logits);
    strata_runner_free(r);
    strata_cache_free(c);
    st_close(exp);
    strata_model_free(m);
}

/* Expect the load of `dir` to fail with `status` and a message holding `needle`. */
static void expect_load_error(const char *dir, strata_status status, const char *needle)
{
    strata_error err = {0};
    strata_model *m = (strata_model *)1;
    strata_status s = strata_model_load(dir, &m, &err);
    cr_assert_eq(s, status, "status %s, want %s: %s", strata_status_name(s), strata_status_name(status), err.message);
    cr_assert_null(m, "no partial model on failure");
    cr_assert(strstr(err.message, needle), "message '%s' lacks '%s'", err.message, needle);
}

static char *dir_with_fixture_weights(void)
{
    char *dir = make_temp_dir(), from[4096], to[4096];
    snprintf(from, sizeof from, "%s/model.safetensors", shared_path(SRC));
    snprintf(to, sizeof to, "%s/model.safetensors", dir);
    cr_assert_eq(copy_file(from, to), 0);
    json_t *c = fixture_config();
    write_config(dir, c);
    json_decref(c);
    return dir;
}

Test(checkpoints, f32_shards_prefix_and_config_spellings_give_same_logits, .timeout = 60)
{
    char *dir = make_temp_dir(), path[4096];
    tensor_set s;
    load_as_f32(&s, "model.language_model.");
    int half = s.n / 2;
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
    write_raw(path, s.t, half, 0);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    write_raw(path, s.t + half, s.n - half, 0);
    json_t *map = json_object();
    for (int i = 0; i < s.n; i++)
        json_object_set_new(map, s.t[i].name, json_string(i < half ? "model-00001-of-00002.safetensors"
                                                                   : "model-00002-of-00002.safetensors"));
    json_t *index = json_pack("{s:{s:i},s:o}", "metadata", "total_size", 0, "weight_map", map);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    cr_assert_eq(json_dump_file(index, path, 0), 0);
    json_decref(index);

    /* nested text_config, layers_block_type, attention_head_dim, mamba_n_groups,
     * and json.dumps' Infinity in time_step_limit */
    json_t *c = fixture_config();
    const char *pattern = json_string_value(json_object_get(c, "hybrid_override_pattern"));
    json_t *types = json_array();
    for (const char *p = pattern; *p; p++)
        json_array_append_new(types, json_string(*p == 'M' ? "mamba" : *p == '*' ? "attention" : "mlp"));
    json_object_set_new(c, "layers_block_type", types);
    json_object_del(c, "hybrid_override_pattern");
    json_object_set(c, "attention_head_dim", json_object_get(c, "head_dim"));
    json_object_del(c, "head_dim");
    json_object_set(c, "mamba_n_groups", json_object_get(c, "n_groups"));
    json_object_del(c, "n_groups");
    json_object_set_new(c, "time_step_limit", json_string("@LIMIT@"));
    json_t *outer = json_pack("{s:[s],s:o}", "architectures", "NemotronVLForConditionCausalLM", "text_config", c);
    char *text = json_dumps(outer, JSON_INDENT(2)), *at = strstr(text, "\"@LIMIT@\"");
    cr_assert(at);
    char *final = malloc(strlen(text) + 32);
    sprintf(final, "%.*s[0.0, Infinity]%s", (int)(at - text), text, at + strlen("\"@LIMIT@\""));
    write_config_text(dir, final);
    free(final);
    free(text);
    json_decref(outer);
    expect_fixture_logits(dir);
    free_set(&s);
    remove_tree(dir);
    free(dir);
}

Test(checkpoints, f16_and_bf16_widen_exactly)
{
    const uint16_t f16[] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x3555};
    const float want[] = {1.0f, -2.0f, 65504.0f, 5.9604645e-8f, INFINITY, 0.33325195f};
    for (int i = 0; i < 6; i++)
        cr_assert(mat_elem(f16, ST_F16, (size_t)i) == want[i], "f16 %d: %g", i, (double)mat_elem(f16, ST_F16, (size_t)i));
    const uint16_t bf16[] = {0x3F80, 0xC040, 0x3EAB};
    cr_assert_eq(mat_elem(bf16, ST_BF16, 0), 1.0f);
    cr_assert_eq(mat_elem(bf16, ST_BF16, 1), -3.0f);
    cr_assert_float_eq(mat_elem(bf16, ST_BF16, 2), 0.333984375f, 1e-12);
}

/* BF16 matmul weights go into panels at load where the kernel path reads them and
 * they fit in RAM (model.h: panels_fit); a tied LM head is a copy, so the
 * embedding lookup keeps reading the stored rows. */
Test(checkpoints, bf16_weights_are_packed_where_they_fit)
{
    size_t gib = (size_t)1 << 30;
    cr_assert(panels_fit(16 * gib, 24 * gib), "the 8B on this machine");
    cr_assert(!panels_fit(60 * gib, 64 * gib), "a model near the RAM size keeps its stored layout");
    cr_assert(panels_fit(1, 0), "RAM unknown");
    strata_model *m;
    strata_error err;
    cr_assert_eq(strata_model_load(shared_path("fixtures/models/tied-small"), &m, &err), STRATA_OK, "%s", err.message);
    st_dtype want = kernel_select()->block_panels_f32 ? ST_BF16_PANELS : ST_BF16;
    cr_assert_eq(m->lm_head.dtype, want);
    cr_assert_eq(m->embed.dtype, ST_BF16);
    if (want == ST_BF16_PANELS)
        cr_assert_neq(m->lm_head.data, m->embed.data);
    strata_model_free(m);
}

Test(checkpoints, truncated_weights_are_refused)
{
    char *dir = dir_with_fixture_weights(), path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(truncate(path, 200000), 0);
    expect_load_error(dir, STRATA_E_FORMAT, "model.safetensors: tensor");
    cr_assert_eq(truncate(path, 5), 0);
    expect_load_error(dir, STRATA_E_FORMAT, "too short");
    remove_tree(dir);
    free(dir);
}

Test(checkpoints, header_lying_about_offsets_is_refused)
{
    char *dir = dir_with_fixture_weights(), path[4096];
    tensor_set s;
    load_as_f32(&s, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_raw(path, s.t, s.n, 1LL << 40);
    expect_load_error(dir, STRATA_E_FORMAT, s.t[0].name);
    write_raw(path, s.t, s.n, (long long)s.t[0].nbytes - 4); /* span disagrees with the shape */
    expect_load_error(dir, STRATA_E_FORMAT, "data_offsets span");
    free_set(&s);
    remove_tree(dir);
    free(dir);
}

/* A header not padded to 8 bytes leaves every tensor off its dtype's alignment: the
 * format allows it (only current writers pad), so such a file loads (its tensors
 * copied to aligned memory) and gives the same logits. */
Test(checkpoints, an_unpadded_header_loads_the_same)
{
    char *dir = dir_with_fixture_weights(), path[4096];
    tensor_set s;
    load_as_f32(&s, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_raw_skewed(path, s.t, s.n, 0, 1);
    expect_fixture_logits(dir);
    free_set(&s);
    remove_tree(dir);
    free(dir);
}

Test(checkpoints, malformed_header_is_refused)
{
    char *dir = dir_with_fixture_weights(), path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    uint64_t n = 16;
    fwrite(&n, 8, 1, f);
    fwrite("{\"a\": not json }", 1, 16, f);
    fclose(f);
    expect_load_error(dir, STRATA_E_FORMAT, "malformed header JSON");
    f = fopen(path, "wb");
    n = 1000;
    fwrite(&n, 8, 1, f);
    fwrite("{}", 1, 2, f);
    fclose(f);
    expect_load_error(dir, STRATA_E_FORMAT, "exceeds the file");
    remove_tree(dir);
    free(dir);
}

Test(checkpoints, missing_tensor_is_named)
{
    char *dir = dir_with_fixture_weights(), path[4096];
    tensor_set s;
    load_as_f32(&s, NULL);
    int i = find_raw(&s, "layers.3.mixer.k_proj.weight");
    s.t[i] = s.t[s.n - 1];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_raw(path, s.t, s.n - 1, 0);
    expect_load_error(dir, STRATA_E_WEIGHTS, "backbone.layers.3.mixer.k_proj.weight is missing");
    free_set(&s);
    remove_tree(dir);
    free(dir);
}

Test(checkpoints, wrong_shape_is_named)
{
    char *dir = dir_with_fixture_weights(), path[4096];
    tensor_set s;
    load_as_f32(&s, NULL);
    int i = find_raw(&s, "layers.5.mixer.out_proj.weight");
    s.t[i].shape[0] /= 2;
    s.t[i].nbytes /= 2;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_raw(path, s.t, s.n, 0);
    expect_load_error(dir, STRATA_E_WEIGHTS, "backbone.layers.5.mixer.out_proj.weight has shape [32, 128], "
                                             "expected [64, 128]");
    free_set(&s);
    remove_tree(dir);
    free(dir);
}

Test(checkpoints, unknown_layer_character_is_refused)
{
    char *dir = dir_with_fixture_weights();
    json_t *c = fixture_config();
    json_object_set_new(c, "hybrid_override_pattern", json_string("M-M*-X-M*-"));
    write_config(dir, c);
    json_decref(c);
    expect_load_error(dir, STRATA_E_CONFIG, "unknown layer character 'X' at layer 5");
    remove_tree(dir);
    free(dir);
}

Test(checkpoints, vocab_mismatch_is_refused)
{
    char *dir = dir_with_fixture_weights();
    json_t *c = fixture_config();
    json_object_set_new(c, "vocab_size", json_integer(600));
    write_config(dir, c);
    json_decref(c);
    expect_load_error(dir, STRATA_E_WEIGHTS, "backbone.embeddings.weight has shape [512, 64], expected [600, 64]");
    remove_tree(dir);
    free(dir);
}

Test(checkpoints, inconsistent_configs_are_refused)
{
    char *dir = dir_with_fixture_weights();
    struct { const char *key; json_t *value; strata_status status; const char *needle; } cases[] = {
        {"num_hidden_layers", json_integer(11), STRATA_E_CONFIG, "num_hidden_layers = 11"},
        {"num_key_value_heads", json_integer(3), STRATA_E_CONFIG, "not a multiple of num_key_value_heads"},
        {"hidden_size", json_string("64"), STRATA_E_CONFIG, "hidden_size must be an integer"},
        {"mamba_hidden_act", json_string("gelu"), STRATA_E_UNSUPPORTED, "mamba_hidden_act"},
        {"model_type", json_string("llama"), STRATA_E_UNSUPPORTED, "model_type"},
        {"ssm_state_size", json_integer(-1), STRATA_E_CONFIG, "ssm_state_size = -1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *c = fixture_config();
        json_object_set_new(c, cases[i].key, cases[i].value);
        write_config(dir, c);
        json_decref(c);
        expect_load_error(dir, cases[i].status, cases[i].needle);
    }
    write_config_text(dir, "{\"hidden_size\": 64,");
    expect_load_error(dir, STRATA_E_FORMAT, "config.json: invalid JSON");
    remove_tree(dir);
    free(dir);
}

Test(checkpoints, missing_files_are_named)
{
    char *dir = make_temp_dir();
    expect_load_error(dir, STRATA_E_IO, "config.json");
    json_t *c = fixture_config();
    write_config(dir, c);
    json_decref(c);
    expect_load_error(dir, STRATA_E_IO, "no model.safetensors or model.safetensors.index.json");
    remove_tree(dir);
    free(dir);
}
