/*
 * model.c — strata_model_load: config.json + safetensors (one file or shards) →
 * the layer plan with every weight bound, shape-checked and ready. Any failure
 * frees everything: there is never a partial model. With --weights int8 each
 * matmul weight is quantized here (kernels/q8.h; into int8 panels for the int8
 * compute mode) and its file pages released, so the resident weights are the int8
 * blocks plus what stays as stored; where the CPU's kernels read panels, the BF16
 * ones are repacked into them the same way (kernels/isa.h).
 * Both live on huge pages (model->weights), like the mapped files.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "core/error.h"
#include "core/huge.h"
#include "core/json.h"
#include "core/spread.h"
#include "kernels/isa.h"
#include "kernels/q8.h"
#include "model/model.h"

typedef struct loader {
    strata_model *m;
    const char *dir;
    char prefix[64];        /* "backbone." in released files */
    int int8;               /* quantize matmul weights (strata_load_opts.weights) */
    int int8_panels;        /* ... into panels, for the int8 compute mode (strata_load_opts.compute) */
    strata_error *err;
} loader;

/* ---------------------------------------------------------------- dtype conversion */

static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (mant << 13);
    } else if (exp) {
        u = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant) { /* subnormal: renormalise */
        int e = -1;
        do {
            mant <<= 1;
            e++;
        } while (!(mant & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3ff) << 13);
    } else {
        u = sign;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float mat_elem(const void *data, st_dtype dtype, size_t i)
{
    switch (dtype) {
    case ST_F32: return ((const float *)data)[i];
    case ST_BF16: return bf16_to_f32(((const uint16_t *)data)[i]);
    case ST_F16: return f16_to_f32(((const uint16_t *)data)[i]);
    default: return 0.0f; /* never bound: the loader admits float dtypes only */
    }
}

void mat_row_f32(const strata_mat *w, int r, float *out)
{
    size_t base = (size_t)r * (size_t)w->cols;
    if (w->dtype == ST_F32) {
        memcpy(out, (const float *)w->data + base, sizeof(float) * (size_t)w->cols);
    } else if (w->dtype == ST_BF16) {
        const uint16_t *src = (const uint16_t *)w->data + base;
        for (int c = 0; c < w->cols; c++)
            out[c] = bf16_to_f32(src[c]);
    } else {
        for (int c = 0; c < w->cols; c++)
            out[c] = mat_elem(w->data, w->dtype, base + (size_t)c);
    }
}

/* ---------------------------------------------------------------- opening files */

static strata_status add_file(strata_model *m, const char *path, strata_error *err)
{
    st_file **grown = realloc(m->files, sizeof *grown * (size_t)(m->n_files + 1));
    if (!grown)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    m->files = grown;
    STRATA_TRY(st_open(path, &m->files[m->n_files], err));
    m->n_files++;
    return STRATA_OK;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Shards listed by model.safetensors.index.json's weight_map, each opened once. */
static strata_status open_shards(strata_model *m, const char *dir, const char *index, strata_error *err)
{
    json_t *root;
    STRATA_TRY(json_load_python(index, &root, err));
    json_t *map = json_object_get(root, "weight_map");
    strata_status s = json_is_object(map) ? STRATA_OK
                      : strata_fail(err, STRATA_E_FORMAT, "%s: no weight_map object", index);
    const char *name;
    json_t *file;
    json_object_foreach(map, name, file) {
        if (s != STRATA_OK)
            break;
        const char *fn = json_string_value(file);
        if (!fn || !*fn || strchr(fn, '/') || !strcmp(fn, "..")) {
            s = strata_fail(err, STRATA_E_FORMAT, "%s: tensor %s: shard name must be a plain file name",
                            index, name);
            break;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, fn);
        int seen = 0;
        for (int i = 0; i < m->n_files && !seen; i++)
            seen = !strcmp(m->files[i]->path, path);
        if (!seen)
            s = add_file(m, path, err);
    }
    json_decref(root);
    return s;
}

static strata_status open_weights(strata_model *m, const char *dir, strata_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (file_exists(path))
        return open_shards(m, dir, path, err);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!file_exists(path))
        return strata_fail(err, STRATA_E_IO, "%s: no model.safetensors or model.safetensors.index.json", dir);
    return add_file(m, path, err);
}

/* ---------------------------------------------------------------- finding tensors */

static const st_tensor *find_tensor(const strata_model *m, const char *name, const st_file **where)
{
    for (int i = 0; i < m->n_files; i++) {
        const st_tensor *t = st_find(m->files[i], name);
        if (t) {
            if (where)
                *where = m->files[i];
            return t;
        }
    }
    return NULL;
}

/* The prefix under which the language model's tensors sit: "backbone." as released,
 * "model." after vLLM/transformers re-saves, "model.language_model." in VL releases. */
static strata_status find_prefix(loader *L)
{
    static const char *const prefixes[] = {"backbone.", "model.", "model.language_model.",
                                           "language_model.backbone.", "language_model.model.",
                                           "model.backbone.", ""};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        char name[256];
        snprintf(name, sizeof name, "%snorm_f.weight", prefixes[i]);
        if (find_tensor(L->m, name, NULL)) {
            snprintf(L->prefix, sizeof L->prefix, "%s", prefixes[i]);
            return STRATA_OK;
        }
    }
    return strata_fail(L->err, STRATA_E_WEIGHTS, "%s: tensor backbone.norm_f.weight not found "
                       "(nor under the prefixes model., model.language_model.)", L->m->files[0]->path);
}

static const char *shape_str(const int64_t *shape, int ndim, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
    return buf;
}

/* Look up `name` (under the prefix unless it starts with '/') and check its shape. */
static strata_status lookup(loader *L, const char *name, int ndim, const int64_t *shape,
                            const st_tensor **out)
{
    char full[512];
    if (name[0] == '/')
        snprintf(full, sizeof full, "%s", name + 1);
    else
        snprintf(full, sizeof full, "%s%s", L->prefix, name);
    const st_file *file = NULL;
    const st_tensor *t = find_tensor(L->m, full, &file);
    if (!t)
        return strata_fail(L->err, STRATA_E_WEIGHTS, "%s: tensor %s is missing",
                           L->m->n_files == 1 ? L->m->files[0]->path : L->dir, full);
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++)
        ok = t->shape[d] == shape[d];
    if (!ok) {
        char got[128], want[128];
        return strata_fail(L->err, STRATA_E_WEIGHTS, "%s: tensor %s has shape %s, expected %s", file->path,
                           full, shape_str(t->shape, t->ndim, got, sizeof got),
                           shape_str(shape, ndim, want, sizeof want));
    }
    if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16)
        return strata_fail(L->err, STRATA_E_WEIGHTS, "%s: tensor %s has dtype %s (expected BF16, F16 or F32)",
                           file->path, full, st_dtype_name(t->dtype));
    strata_model_info *info = &L->m->cfg.info;
    info->n_params += (uint64_t)t->numel;
    info->weight_bytes += t->nbytes;
    *out = t;
    return STRATA_OK;
}

static strata_status own(strata_model *m, void *p, strata_error *err);

/* Drop the mapped pages wholly inside [p, p + n) from this process (read-only file
 * pages: a later read faults them back in). */
static void release_pages(const void *p, size_t n)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~(uintptr_t)(page - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

/* fn over W's stored rows in parts of about 32 MiB (whole multiples of `unit`
 * rows), each part's file pages dropped once done where `release` (not where the
 * stored rows are still read, as a tied embedding's are): the stored copy of a
 * large matrix (an LM head) is never resident whole while it is converted. */
static strata_status convert_in_parts(const strata_mat *w, int unit, int release, spread_fn fn, void *arg,
                                      strata_error *err)
{
    size_t row_bytes = (size_t)w->cols * st_dtype_size(w->dtype);
    int part = (int)((32u << 20) / (row_bytes ? row_bytes : 1)) / unit * unit;
    part = part < unit ? unit : part;
    for (int r0 = 0; r0 < w->rows; r0 += part) {
        int r1 = w->rows - r0 < part ? w->rows : r0 + part;
        STRATA_TRY(fn(arg, r0, r1, err));
        if (release)
            release_pages((const char *)w->data + (size_t)r0 * row_bytes, (size_t)(r1 - r0) * row_bytes);
    }
    return STRATA_OK;
}

typedef struct quant_job {
    const strata_mat *w;
    int8_t *q;
    uint16_t *s;
    const char *name;
} quant_job;

static strata_status quant_rows(void *arg, int r0, int r1, strata_error *err)
{
    const quant_job *J = arg;
    return q8_quantize_rows(J->w->data, J->w->dtype, r0, r1, J->w->cols, J->q, J->s, J->name, err);
}

typedef struct panel_quant_job {
    const strata_mat *w;
    uint8_t *dst;
    const char *name;
} panel_quant_job;

static strata_status quant_pack_rows(void *arg, int r0, int r1, strata_error *err)
{
    const panel_quant_job *J = arg;
    return q8_quantize_panels(J->w->data, J->w->dtype, J->w->rows, J->w->cols, r0, r1, J->dst, J->name, err);
}

/* Bytes a matmul reads of W as held now: stored, int8 blocks + scales, or panels. */
static uint64_t mat_bytes(const strata_mat *w)
{
    size_t kp = q8_padded(w->cols);
    switch (w->dtype) {
    case ST_BF16_PANELS: return (uint64_t)bf16_panels_elems(w->rows, w->cols) * 2;
    case ST_I8_PANELS: return q8_panels_bytes(w->rows, w->cols);
    case ST_I8: return (uint64_t)w->rows * (kp + kp / Q8_BLOCK * 2);
    default: return (uint64_t)w->rows * (uint64_t)w->cols * st_dtype_size(w->dtype);
    }
}

/* W as stored → int8 panels (kernels/q8.h: the int8 compute mode), as quantize_mat. */
static strata_status quantize_mat_panels(loader *L, strata_mat *w, const char *name, int release)
{
    size_t bytes = q8_panels_bytes(w->rows, w->cols);
    uint8_t *p = huge_arena_alloc(&L->m->weights, bytes);
    if (!p)
        return strata_fail(L->err, STRATA_E_NOMEM, "out of memory quantizing %s", name);
    panel_quant_job J = {.w = w, .dst = p, .name = name};
    STRATA_TRY(convert_in_parts(w, Q8P_ROWS, release, quant_pack_rows, &J, L->err));
    *w = (strata_mat){.data = p, .dtype = ST_I8_PANELS, .rows = w->rows, .cols = w->cols, .bias = w->bias};
    L->m->cfg.info.weight_bytes += mat_bytes(w);
    L->m->cfg.info.matmul_bytes += mat_bytes(w);
    return STRATA_OK;
}

/* W as stored → int8 blocks (kernels/q8.h), owned by the model; or panels in the
 * int8 compute mode. `release`: drop the stored tensor's pages as it goes
 * (convert_in_parts). Counts the int8 bytes into weight_bytes. */
static strata_status quantize_mat(loader *L, strata_mat *w, const char *name, int release)
{
    if (L->int8_panels)
        return quantize_mat_panels(L, w, name, release);
    size_t kp = q8_padded(w->cols), qbytes = (size_t)w->rows * kp, sbytes = (size_t)w->rows * (kp / Q8_BLOCK) * 2;
    int8_t *q = huge_arena_alloc(&L->m->weights, qbytes);
    uint16_t *s = huge_arena_alloc(&L->m->weights, sbytes);
    if (!q || !s)
        return strata_fail(L->err, STRATA_E_NOMEM, "out of memory quantizing %s", name);
    quant_job J = {w, q, s, name};
    STRATA_TRY(convert_in_parts(w, 1, release, quant_rows, &J, L->err));
    *w = (strata_mat){.data = q, .dtype = ST_I8, .rows = w->rows, .cols = w->cols, .bias = w->bias, .scales = s};
    L->m->cfg.info.weight_bytes += mat_bytes(w);
    L->m->cfg.info.matmul_bytes += mat_bytes(w);
    return STRATA_OK;
}

/* A matmul weight: used in place, or quantized with --weights int8. */
static strata_status bind_mat(loader *L, strata_mat *w, int rows, int cols, const char *fmt, ...)
    STRATA_PRINTF(5, 6);
static strata_status bind_mat(loader *L, strata_mat *w, int rows, int cols, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const st_tensor *t;
    STRATA_TRY(lookup(L, name, 2, (int64_t[]){rows, cols}, &t));
    *w = (strata_mat){.data = t->data, .dtype = t->dtype, .rows = rows, .cols = cols};
    if (!L->int8) {
        L->m->cfg.info.matmul_bytes += t->nbytes;
        return STRATA_OK;
    }
    L->m->cfg.info.weight_bytes -= t->nbytes;
    return quantize_mat(L, w, name, 1);
}

static strata_status own(strata_model *m, void *p, strata_error *err)
{
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 64;
        void **grown = realloc(m->owned, sizeof *grown * (size_t)cap);
        if (!grown) {
            free(p);
            return strata_fail(err, STRATA_E_NOMEM, "out of memory");
        }
        m->owned = grown;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return STRATA_OK;
}

/* A small parameter of `n` elements (any shape with that many) converted to fp32. */
static strata_status bind_f32(loader *L, float **out, int ndim, const int64_t *shape, const char *fmt, ...)
    STRATA_PRINTF(5, 6);
static strata_status bind_f32(loader *L, float **out, int ndim, const int64_t *shape, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const st_tensor *t;
    STRATA_TRY(lookup(L, name, ndim, shape, &t));
    float *p = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    if (!p)
        return strata_fail(L->err, STRATA_E_NOMEM, "out of memory converting %s", name);
    for (int64_t i = 0; i < t->numel; i++)
        p[i] = mat_elem(t->data, t->dtype, (size_t)i);
    STRATA_TRY(own(L->m, p, L->err));
    *out = p;
    return STRATA_OK;
}

#define VEC(n) 1, (int64_t[]){(n)}

/* w (channels, K) as stored → (K, channels) in place, once at load: the conv reads
 * one tap across contiguous channels. */
static strata_status taps_major(loader *L, float *w, int channels, int K)
{
    size_t n = (size_t)channels * (size_t)K;
    float *t = malloc(sizeof(float) * (n ? n : 1));
    if (!t)
        return strata_fail(L->err, STRATA_E_NOMEM, "out of memory");
    memcpy(t, w, sizeof(float) * n);
    for (int c = 0; c < channels; c++)
        for (int k = 0; k < K; k++)
            w[(size_t)k * (size_t)channels + (size_t)c] = t[(size_t)c * (size_t)K + (size_t)k];
    free(t);
    return STRATA_OK;
}

static strata_status bind_bias(loader *L, int enabled, strata_mat *w, const char *name)
{
    if (!enabled)
        return STRATA_OK;
    float *b;
    STRATA_TRY(bind_f32(L, &b, VEC(w->rows), "%s", name));
    w->bias = b;
    return STRATA_OK;
}

/* ---------------------------------------------------------------- per layer kind */

static strata_status bind_mamba(loader *L, int i, mamba_weights *w)
{
    model_config *c = &L->m->cfg;
    strata_model_info *m = &c->info;
    const char *p = "layers";
    int H = m->mamba_heads, d = m->hidden_size, K = m->conv_kernel;
    /* in_proj rows = 2·d_mlp + d_inner + conv_dim + H; d_mlp is 0 in released models */
    char name[256];
    snprintf(name, sizeof name, "%s%s.%d.mixer.in_proj.weight", L->prefix, p, i);
    const st_tensor *t = find_tensor(L->m, name, NULL);
    int base = m->d_inner + m->conv_dim + H;
    if (t && t->ndim == 2 && t->shape[0] > base && (t->shape[0] - base) % 2 == 0 && t->shape[0] < (1 << 24)) {
        c->d_mlp = (int)(t->shape[0] - base) / 2;
        m->in_proj_dim = 2 * c->d_mlp + base;
    }
    STRATA_TRY(bind_mat(L, &w->in_proj, m->in_proj_dim, d, "%s.%d.mixer.in_proj.weight", p, i));
    snprintf(name, sizeof name, "%s.%d.mixer.in_proj.bias", p, i);
    STRATA_TRY(bind_bias(L, c->use_bias, &w->in_proj, name));
    STRATA_TRY(bind_mat(L, &w->out_proj, d, m->d_inner, "%s.%d.mixer.out_proj.weight", p, i));
    snprintf(name, sizeof name, "%s.%d.mixer.out_proj.bias", p, i);
    STRATA_TRY(bind_bias(L, c->use_bias, &w->out_proj, name));
    STRATA_TRY(bind_f32(L, &w->conv_wT, 3, (int64_t[]){m->conv_dim, 1, K}, "%s.%d.mixer.conv1d.weight", p, i));
    STRATA_TRY(taps_major(L, w->conv_wT, m->conv_dim, K));
    if (c->use_conv_bias) {
        STRATA_TRY(bind_f32(L, &w->conv_b, VEC(m->conv_dim), "%s.%d.mixer.conv1d.bias", p, i));
    } else {
        w->conv_b = calloc((size_t)m->conv_dim, sizeof(float));
        if (!w->conv_b)
            return strata_fail(L->err, STRATA_E_NOMEM, "out of memory");
        STRATA_TRY(own(L->m, w->conv_b, L->err));
    }
    STRATA_TRY(bind_f32(L, &w->dt_bias, VEC(H), "%s.%d.mixer.dt_bias", p, i));
    STRATA_TRY(bind_f32(L, &w->A, VEC(H), "%s.%d.mixer.A_log", p, i));
    for (int h = 0; h < H; h++)
        w->A[h] = -expf(w->A[h]);
    STRATA_TRY(bind_f32(L, &w->D, VEC(H), "%s.%d.mixer.D", p, i));
    return bind_f32(L, &w->norm_w, VEC(m->d_inner), "%s.%d.mixer.norm.weight", p, i);
}

static strata_status bind_attention(loader *L, int i, attn_weights *w)
{
    const model_config *c = &L->m->cfg;
    const strata_model_info *m = &c->info;
    int d = m->hidden_size, q = m->attn_heads * m->head_dim, kv = m->kv_heads * m->head_dim;
    struct { strata_mat *w; int rows, cols; const char *name; } mats[] = {
        {&w->q, q, d, "q_proj"}, {&w->k, kv, d, "k_proj"}, {&w->v, kv, d, "v_proj"}, {&w->o, d, q, "o_proj"}};
    for (int j = 0; j < 4; j++) {
        char name[256];
        STRATA_TRY(bind_mat(L, mats[j].w, mats[j].rows, mats[j].cols, "layers.%d.mixer.%s.weight", i, mats[j].name));
        snprintf(name, sizeof name, "layers.%d.mixer.%s.bias", i, mats[j].name);
        STRATA_TRY(bind_bias(L, c->attention_bias, mats[j].w, name));
    }
    return STRATA_OK;
}

/* up [F, d_in] and down [d_in, F] under `base` ("layers.3.mixer", "...experts.5"). */
static strata_status bind_mlp(loader *L, const char *base, int d_in, int F, mlp_weights *w)
{
    int bias = L->m->cfg.mlp_bias;
    char name[256];
    STRATA_TRY(bind_mat(L, &w->up, F, d_in, "%s.up_proj.weight", base));
    snprintf(name, sizeof name, "%s.up_proj.bias", base);
    STRATA_TRY(bind_bias(L, bias, &w->up, name));
    STRATA_TRY(bind_mat(L, &w->down, d_in, F, "%s.down_proj.weight", base));
    snprintf(name, sizeof name, "%s.down_proj.bias", base);
    return bind_bias(L, bias, &w->down, name);
}

static strata_status bind_moe(loader *L, int i, moe_weights *w)
{
    const model_config *c = &L->m->cfg;
    const strata_model_info *m = &c->info;
    int d = m->hidden_size, E = m->n_experts, d_moe = c->moe_latent_size ? c->moe_latent_size : d;
    char base[256];
    STRATA_TRY(bind_f32(L, &w->router, 2, (int64_t[]){E, d}, "layers.%d.mixer.gate.weight", i));
    STRATA_TRY(bind_f32(L, &w->score_bias, VEC(E), "layers.%d.mixer.gate.e_score_correction_bias", i));
    w->experts = calloc((size_t)E, sizeof *w->experts);
    if (!w->experts)
        return strata_fail(L->err, STRATA_E_NOMEM, "out of memory");
    STRATA_TRY(own(L->m, w->experts, L->err));
    for (int e = 0; e < E; e++) {
        snprintf(base, sizeof base, "layers.%d.mixer.experts.%d", i, e);
        STRATA_TRY(bind_mlp(L, base, d_moe, m->moe_intermediate_size, &w->experts[e]));
    }
    snprintf(base, sizeof base, "layers.%d.mixer.shared_experts", i);
    STRATA_TRY(bind_mlp(L, base, d, m->shared_intermediate_size, &w->shared));
    if (c->moe_latent_size) {
        STRATA_TRY(bind_mat(L, &w->fc1_latent, d_moe, d, "layers.%d.mixer.fc1_latent_proj.weight", i));
        STRATA_TRY(bind_mat(L, &w->fc2_latent, d, d_moe, "layers.%d.mixer.fc2_latent_proj.weight", i));
    }
    return STRATA_OK;
}

static strata_status bind_layer(loader *L, int i)
{
    strata_model *m = L->m;
    layer *l = &m->layers[i];
    int d = m->cfg.info.hidden_size;
    char base[64];
    l->kind = m->cfg.pattern[i];
    STRATA_TRY(bind_f32(L, &l->norm_w, VEC(d), "layers.%d.norm.weight", i));
    switch (l->kind) {
    case 'M':
        l->state_index = m->n_mamba++;
        return bind_mamba(L, i, &l->mamba);
    case '*':
        l->state_index = m->n_attn++;
        return bind_attention(L, i, &l->attn);
    case '-':
        snprintf(base, sizeof base, "layers.%d.mixer", i);
        return bind_mlp(L, base, d, m->cfg.info.intermediate_size, &l->mlp);
    default:
        return bind_moe(L, i, &l->moe);
    }
}

/* The embedding under its released name or the aliases vLLM / transformers write. */
static strata_status bind_embeddings(loader *L)
{
    strata_model_info *m = &L->m->cfg.info;
    static const char *const names[] = {"embeddings.weight", "embedding.weight", "embed_tokens.weight"};
    const char *name = names[0];
    for (size_t i = 0; i < 3; i++) {
        char full[256];
        snprintf(full, sizeof full, "%s%s", L->prefix, names[i]);
        if (find_tensor(L->m, full, NULL)) {
            name = names[i];
            break;
        }
    }
    /* rows are gathered, never multiplied: the embedding stays as stored */
    const st_tensor *t;
    STRATA_TRY(lookup(L, name, 2, (int64_t[]){m->vocab_size, m->hidden_size}, &t));
    L->m->embed = (strata_mat){.data = t->data, .dtype = t->dtype, .rows = m->vocab_size, .cols = m->hidden_size};
    return STRATA_OK;
}

/* lm_head sits at the top level ("lm_head.weight") or beside the backbone in VL files. */
static strata_status bind_lm_head(loader *L)
{
    strata_model_info *m = &L->m->cfg.info;
    if (m->tie_word_embeddings) {
        /* the embedding stays as stored (rows are gathered); the head reads a copy */
        L->m->lm_head = L->m->embed;
        if (L->int8)
            return quantize_mat(L, &L->m->lm_head, "lm_head (tied to the embedding)", 0);
        L->m->cfg.info.matmul_bytes += (uint64_t)m->vocab_size * (uint64_t)m->hidden_size *
                                       st_dtype_size(L->m->embed.dtype);
        return STRATA_OK;
    }
    char parent[64];
    snprintf(parent, sizeof parent, "%s", L->prefix);
    char *dot = strstr(parent, "language_model.");
    if (dot)
        dot[strlen("language_model.")] = '\0';
    else
        parent[0] = '\0';
    char alt[128];
    snprintf(alt, sizeof alt, "%slm_head.weight", parent);
    const char *name = find_tensor(L->m, alt, NULL) ? alt : "lm_head.weight";
    return bind_mat(L, &L->m->lm_head, m->vocab_size, m->hidden_size, "/%s", name);
}

void strata_model_free(strata_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    huge_arena_free(&m->weights);
    for (int i = 0; i < m->n_files; i++)
        st_close(m->files[i]);
    free(m->files);
    free(m->layers);
    free(m);
}

static strata_status load(loader *L, const char *dir)
{
    strata_model *m = L->m;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    STRATA_TRY(config_load(path, &m->cfg, L->err));
    m->cfg.info.pattern = m->cfg.pattern;
    m->cfg.info.weights = strata_weights_name(L->int8 ? STRATA_WEIGHTS_INT8 : STRATA_WEIGHTS_NATIVE);
    STRATA_TRY(open_weights(m, dir, L->err));
    STRATA_TRY(find_prefix(L));
    STRATA_TRY(bind_embeddings(L));
    m->layers = calloc((size_t)m->cfg.info.n_layers, sizeof *m->layers);
    if (!m->layers)
        return strata_fail(L->err, STRATA_E_NOMEM, "out of memory");
    for (int i = 0; i < m->cfg.info.n_layers; i++)
        STRATA_TRY(bind_layer(L, i));
    STRATA_TRY(bind_f32(L, &m->norm_f, VEC(m->cfg.info.hidden_size), "norm_f.weight"));
    return bind_lm_head(L);
}

strata_status strata_weights_parse(const char *name, strata_weights *out, strata_error *err)
{
    if (name && !strcmp(name, "native"))
        *out = STRATA_WEIGHTS_NATIVE;
    else if (name && !strcmp(name, "int8"))
        *out = STRATA_WEIGHTS_INT8;
    else
        return strata_fail(err, STRATA_E_INVALID, "weights '%s' is not one of: native, int8", name ? name : "");
    return STRATA_OK;
}

const char *strata_weights_name(strata_weights weights)
{
    return weights == STRATA_WEIGHTS_INT8 ? "int8" : "native";
}

static strata_status pack_panels(strata_model *m, strata_error *err);
static void count_experts(strata_model *m);

static strata_status compute_mode_known(const char *mode, strata_error *err)
{
    if (strcmp(mode, "fp32") && strcmp(mode, "bf16") && strcmp(mode, "int8"))
        return strata_fail(err, STRATA_E_INVALID, "compute mode '%s' is not one of: fp32, bf16, int8", mode);
    return STRATA_OK;
}

/* The int8 compute mode needs int8 weights and the VNNI kernel (kernels/q8.h). */
static strata_status int8_compute_possible(strata_weights weights, strata_error *err)
{
    if (weights != STRATA_WEIGHTS_INT8)
        return strata_fail(err, STRATA_E_INVALID, "compute mode int8 needs int8 weights (--weights int8)");
    if (!q8_compute_supported())
        return strata_fail(err, STRATA_E_INVALID,
                           "compute mode int8 needs the AVX-512 kernels and AVX512_VNNI, which this CPU (%s "
                           "kernels) does not run; use --compute fp32",
                           kernel_select()->name);
    return STRATA_OK;
}

strata_status strata_model_load(const char *dir, strata_model **out, strata_error *err)
{
    return strata_model_load_with(dir, NULL, out, err);
}

strata_status strata_model_load_with(const char *dir, const strata_load_opts *opts, strata_model **out,
                                     strata_error *err)
{
    *out = NULL;
    if (!dir)
        return strata_fail(err, STRATA_E_INVALID, "no model directory given");
    strata_weights weights = opts ? opts->weights : STRATA_WEIGHTS_NATIVE;
    if (weights != STRATA_WEIGHTS_NATIVE && weights != STRATA_WEIGHTS_INT8)
        return strata_fail(err, STRATA_E_INVALID, "unknown weights mode %d", (int)weights);
    const char *compute = opts && opts->compute ? opts->compute : "fp32";
    int int8_compute = !strcmp(compute, "int8");
    if (int8_compute)
        STRATA_TRY(int8_compute_possible(weights, err));
    else
        STRATA_TRY(compute_mode_known(compute, err));
    strata_model *m = calloc(1, sizeof *m);
    if (!m)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    loader L = {.m = m, .dir = dir, .int8 = weights == STRATA_WEIGHTS_INT8, .int8_panels = int8_compute, .err = err};
    m->compute_int8 = int8_compute;
    strata_status s = load(&L, dir);
    if (s == STRATA_OK)
        s = pack_panels(m, err);
    if (s == STRATA_OK)
        count_experts(m);
    if (s == STRATA_OK && !int8_compute)
        s = strata_model_set_compute(m, compute, err);  /* which sets the state sizes */
    else if (s == STRATA_OK)
        cache_set_sizes(m);
    if (s != STRATA_OK) {
        strata_model_free(m);
        return s;
    }
    /* Drop every file page the load mapped: headers, the small tensors copied to
     * fp32 and the 2 MiB folios each of them mapped whole (on the 470m 48 MiB, an
     * int8 run's margin under its memory bound). What is read in place (the
     * embedding, weights not converted) faults back in where a step reads it. */
    for (int i = 0; i < m->n_files; i++)
        release_pages(m->files[i]->map, m->files[i]->map_len);
    *out = m;
    return STRATA_OK;
}

const strata_model_info *strata_model_get_info(const strata_model *model)
{
    return &model->cfg.info;
}

/* ---- BF16 weights in panels (kernels/isa.h) */

typedef void (*mat_fn)(strata_model *m, strata_mat *w, void *arg);

static void each_mlp_mat(strata_model *m, mlp_weights *w, mat_fn fn, void *arg)
{
    fn(m, &w->up, arg);
    fn(m, &w->down, arg);
}

/* fn on every matmul weight: what a decode step streams. */
static void each_mat(strata_model *m, mat_fn fn, void *arg)
{
    for (int i = 0; i < m->cfg.info.n_layers; i++) {
        layer *l = &m->layers[i];
        switch (l->kind) {
        case 'M':
            fn(m, &l->mamba.in_proj, arg);
            fn(m, &l->mamba.out_proj, arg);
            break;
        case '*':
            fn(m, &l->attn.q, arg), fn(m, &l->attn.k, arg), fn(m, &l->attn.v, arg), fn(m, &l->attn.o, arg);
            break;
        case '-':
            each_mlp_mat(m, &l->mlp, fn, arg);
            break;
        default:
            for (int e = 0; e < m->cfg.info.n_experts; e++)
                each_mlp_mat(m, &l->moe.experts[e], fn, arg);
            each_mlp_mat(m, &l->moe.shared, fn, arg);
            if (m->cfg.moe_latent_size) {
                fn(m, &l->moe.fc1_latent, arg);
                fn(m, &l->moe.fc2_latent, arg);
            }
        }
    }
    fn(m, &m->lm_head, arg);
}

/* Elements of W in panels, rounded up to whole cache lines. */
static size_t panel_slot(const strata_mat *w)
{
    return (bf16_panels_elems(w->rows, w->cols) + 31) & ~(size_t)31;
}

static void count_panels(strata_model *m, strata_mat *w, void *arg)
{
    (void)m;
    if (w->dtype == ST_BF16)
        *(size_t *)arg += panel_slot(w);
}

typedef struct pack_job {
    uint16_t *dst;
    const strata_mat *w;
    int r0;
} pack_job;

static strata_status pack_part(void *arg, int lo, int hi, strata_error *err)
{
    const pack_job *J = arg;
    (void)err;
    bf16_panels_pack(J->dst, J->w->data, J->w->rows, J->w->cols, J->r0 + lo, J->r0 + hi);
    return STRATA_OK;
}

/* Rows [r0, r1) packed, split over the CPUs in whole panels (most of the time is
 * the kernel zeroing fresh huge pages). */
static strata_status pack_rows(void *arg, int r0, int r1, strata_error *err)
{
    pack_job J = *(const pack_job *)arg;
    J.r0 = r0;
    return spread_run(r1 - r0, BF16_PANEL_ROWS, 4 * BF16_PANEL_ROWS, pack_part, &J, err);
}

/* W (BF16) → its panels at *next, its file pages released as it goes
 * (convert_in_parts; not a tied embedding's, which the lookup still reads). */
static void pack_mat(strata_model *m, strata_mat *w, void *arg)
{
    if (w->dtype != ST_BF16)
        return;
    uint16_t **next = arg;
    uint64_t stored = mat_bytes(w);
    int release = w->data != m->embed.data;
    pack_job J = {*next, w, 0};
    convert_in_parts(w, BF16_PANEL_ROWS, release, pack_rows, &J, NULL);
    w->data = J.dst;
    w->dtype = ST_BF16_PANELS;
    uint64_t packed = mat_bytes(w);
    m->cfg.info.matmul_bytes += packed - stored;
    m->cfg.info.weight_bytes += release ? packed - stored : packed;
    *next = J.dst + panel_slot(w);
}

/* expert_bytes / expert_params / active_params of the info, once the weights are
 * in their final form. */
static void count_experts(strata_model *m)
{
    strata_model_info *info = &m->cfg.info;
    info->active_params = info->n_params;
    for (int i = 0; i < info->n_layers; i++)
        for (int e = 0; m->layers[i].kind == 'E' && e < info->n_experts; e++) {
            const mlp_weights *x = &m->layers[i].moe.experts[e];
            info->expert_bytes += mat_bytes(&x->up) + mat_bytes(&x->down);
            info->expert_params += (uint64_t)x->up.rows * (uint64_t)x->up.cols + (uint64_t)x->down.rows * (uint64_t)x->down.cols;
        }
    if (info->expert_params)    /* a token uses experts_per_tok of every n_experts */
        info->active_params -= (uint64_t)((double)info->expert_params *
                                          (1.0 - (double)info->experts_per_tok / info->n_experts));
}

int panels_fit(size_t packed, size_t phys)
{
    return phys == 0 || packed <= phys / 4 * 3;
}

/* The BF16 matmul weights in panels, where this CPU's path has the panel kernels
 * (kernels/isa.h; both compute modes read them) and they fit (panels_fit): once,
 * at load — the stored layout's pages are released. */
static strata_status pack_panels(strata_model *m, strata_error *err)
{
    if (!kernel_select()->block_panels_f32)
        return STRATA_OK;
    size_t elems = 0;
    each_mat(m, count_panels, &elems);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (!elems || !panels_fit(elems * 2, pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0))
        return STRATA_OK;
    uint16_t *next = huge_arena_alloc(&m->weights, elems * 2);
    if (!next)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory repacking %zu MiB of weights into panels",
                           elems * 2 >> 20);
    each_mat(m, pack_mat, &next);
    return STRATA_OK;
}

strata_status strata_model_set_compute(strata_model *model, const char *mode, strata_error *err)
{
    if (!model || !mode)
        return strata_fail(err, STRATA_E_INVALID, "no model or compute mode");
    STRATA_TRY(compute_mode_known(mode, err));
    if (model->compute_int8 && strcmp(mode, "int8"))
        return strata_fail(err, STRATA_E_INVALID,
                           "this model was loaded for compute mode int8 (its weights are packed for it); load it "
                           "again for %s", mode);
    if (!model->compute_int8 && !strcmp(mode, "int8"))
        return strata_fail(err, STRATA_E_INVALID,
                           "compute mode int8 is chosen when the model loads (strata_load_opts.compute; "
                           "--compute int8 with --weights int8)");
    model->compute_bf16 = !strcmp(mode, "bf16");
    cache_set_sizes(model);
    return STRATA_OK;
}

const char *strata_model_compute(const strata_model *model)
{
    return !model ? "fp32" : model->compute_int8 ? "int8" : model->compute_bf16 ? "bf16" : "fp32";
}
