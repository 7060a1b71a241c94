/*
 * session.c — strata_session: a cache, the tokens it consumed, and checkpoints
 * (forks of the cache at earlier positions), with prefix reuse, rewind, fork and
 * (de)serialization as one checksummed safetensors file.
 *
 * Invariants: tokens[0..n) are exactly what the cache consumed (n == cache's
 * n_tokens); checkpoints are sorted by position, distinct, all <= n and on the
 * path of tokens (their KV is a prefix of the live cache's). A checkpoint may keep
 * the logits after its last token: the prompt that ends there needs no step.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "core/error.h"
#include "model/safetensors.h"

typedef struct checkpoint {
    int pos;
    int automatic;
    strata_cache *cache;
    float *logits;              /* (vocab) after tokens[pos-1], or NULL */
} checkpoint;

struct strata_session {
    const strata_model *model;
    strata_cache *cache;
    int32_t *tokens;
    int n, cap;
    checkpoint cps[STRATA_SESSION_MAX_CHECKPOINTS];
    int n_cps;
    uint64_t cp_budget;         /* bytes automatic checkpoints may hold (0: no bound) */
    int64_t created;            /* seconds since the epoch (a fork: when forked) */
};

strata_status strata_session_new(const strata_model *model, strata_session **out, strata_error *err)
{
    *out = NULL;
    strata_session *s = calloc(1, sizeof *s);
    if (!s)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    s->model = model;
    s->created = (int64_t)time(NULL);
    strata_status st = strata_cache_new(model, &s->cache, err);
    if (st != STRATA_OK) {
        free(s);
        return st;
    }
    *out = s;
    return STRATA_OK;
}

static size_t logits_bytes(const strata_model *model)
{
    return sizeof(float) * (size_t)model->cfg.info.vocab_size;
}

static void drop_checkpoint(strata_session *s, int i)
{
    strata_cache_free(s->cps[i].cache);
    free(s->cps[i].logits);
    memmove(&s->cps[i], &s->cps[i + 1], sizeof s->cps[0] * (size_t)(s->n_cps - i - 1));
    s->n_cps--;
}

void strata_session_free(strata_session *s)
{
    if (!s)
        return;
    while (s->n_cps)
        drop_checkpoint(s, s->n_cps - 1);
    strata_cache_free(s->cache);
    free(s->tokens);
    free(s);
}

int strata_session_n_tokens(const strata_session *s)
{
    return s->n;
}

const int32_t *strata_session_tokens(const strata_session *s)
{
    return s->tokens;
}

strata_cache *strata_session_cache(strata_session *s)
{
    return s->cache;
}

int64_t strata_session_created(const strata_session *s)
{
    return s->created;
}

/* The bytes checkpoint i holds beyond the KV it shares with the live state. */
static uint64_t checkpoint_bytes(const strata_session *s, int i)
{
    return cache_recurrent_bytes(s->model) + (s->cps[i].logits ? logits_bytes(s->model) : 0);
}

uint64_t strata_session_state_bytes(const strata_session *s)
{
    uint64_t b = strata_cache_state_bytes(s->cache);
    for (int i = 0; i < s->n_cps; i++)
        b += checkpoint_bytes(s, i);
    return b;
}

strata_status strata_session_append(strata_session *s, const int32_t *tokens, int n, strata_error *err)
{
    if (n <= 0)
        return STRATA_OK;
    if (s->n + n > s->cap) {
        int cap = s->cap ? s->cap : 256;
        while (cap < s->n + n)
            cap *= 2;
        int32_t *grown = realloc(s->tokens, sizeof *grown * (size_t)cap);
        if (!grown)
            return strata_fail(err, STRATA_E_NOMEM, "out of memory");
        s->tokens = grown;
        s->cap = cap;
    }
    memcpy(s->tokens + s->n, tokens, sizeof *tokens * (size_t)n);
    s->n += n;
    return STRATA_OK;
}

void strata_session_sync(strata_session *s)
{
    int have = strata_cache_n_tokens(s->cache);
    if (have < s->n)
        s->n = have;
    while (s->n_cps && s->cps[s->n_cps - 1].pos > s->n)
        drop_checkpoint(s, s->n_cps - 1);
}

/* Drop the oldest automatic checkpoints (explicit ones stay) until `extra` more
 * fit in the budget; *at keeps pointing at the same place. 0 when even with none
 * left they would not. */
static int within_budget(strata_session *s, int extra, int *at)
{
    uint64_t each = cache_recurrent_bytes(s->model);
    int automatic = 0;
    for (int k = 0; k < s->n_cps; k++)
        automatic += s->cps[k].automatic;
    while (s->cp_budget && (uint64_t)(automatic + extra) * each > s->cp_budget) {
        if (!automatic)
            return 0;
        int victim = 0;
        while (!s->cps[victim].automatic)
            victim++;
        drop_checkpoint(s, victim);
        *at -= victim < *at;
        automatic--;
    }
    return 1;
}

void strata_session_set_checkpoint_budget(strata_session *s, uint64_t bytes)
{
    int at = 0;
    s->cp_budget = bytes;
    within_budget(s, 0, &at);
}

/* Keep `cache` and `logits` (owned; logits may be NULL) as the checkpoint at the
 * cache's position, in order; one already there keeps its state and gains the logits
 * it lacked. */
static strata_status insert_checkpoint(strata_session *s, strata_cache *cache, float *logits, int automatic,
                                       strata_error *err)
{
    int pos = strata_cache_n_tokens(cache), i = 0;
    if (pos > s->n) {
        strata_cache_free(cache);
        free(logits);
        return strata_fail(err, STRATA_E_INVALID, "checkpoint at %d is past the session's %d tokens", pos, s->n);
    }
    while (i < s->n_cps && s->cps[i].pos < pos)
        i++;
    if (i < s->n_cps && s->cps[i].pos == pos) {
        s->cps[i].automatic &= automatic;
        if (!s->cps[i].logits)
            s->cps[i].logits = logits, logits = NULL;
        strata_cache_free(cache);
        free(logits);
        return STRATA_OK;
    }
    if (s->n_cps == STRATA_SESSION_MAX_CHECKPOINTS) {
        int victim = 0;
        while (victim < s->n_cps - 1 && !s->cps[victim].automatic)
            victim++;
        drop_checkpoint(s, victim);
        if (victim < i)
            i--;
    }
    if (automatic && !within_budget(s, 1, &i)) {
        strata_cache_free(cache);               /* one alone passes the budget: none is taken */
        free(logits);
        return STRATA_OK;
    }
    memmove(&s->cps[i + 1], &s->cps[i], sizeof s->cps[0] * (size_t)(s->n_cps - i));
    s->cps[i] = (checkpoint){.pos = pos, .automatic = automatic, .cache = cache, .logits = logits};
    s->n_cps++;
    return STRATA_OK;
}

strata_status strata_session_checkpoint(strata_session *s, int automatic, strata_error *err)
{
    strata_cache *snap;
    STRATA_TRY(strata_cache_copy(s->cache, &snap, err));
    return insert_checkpoint(s, snap, NULL, automatic, err);
}

strata_status strata_session_adopt_checkpoint(strata_session *s, strata_cache *cache, float *logits, int automatic,
                                              strata_error *err)
{
    if (!cache) {
        free(logits);
        return strata_fail(err, STRATA_E_INVALID, "no checkpoint cache");
    }
    return insert_checkpoint(s, cache, logits, automatic, err);
}

int strata_session_checkpoint_count(const strata_session *s)
{
    return s->n_cps;
}

void strata_session_checkpoint_info(const strata_session *s, int i, int *position, uint64_t *bytes)
{
    *position = s->cps[i].pos;
    *bytes = checkpoint_bytes(s, i);
}

/* Replace the live state with checkpoint i's (checkpoints past it are dropped). */
static strata_status restore(strata_session *s, int i, strata_error *err)
{
    strata_cache *live;
    STRATA_TRY(strata_cache_copy(s->cps[i].cache, &live, err));
    strata_cache_free(s->cache);
    s->cache = live;
    s->n = s->cps[i].pos;
    while (s->n_cps > i + 1)
        drop_checkpoint(s, s->n_cps - 1);
    return STRATA_OK;
}

/* Newest checkpoint at or before pos, or -1. */
static int checkpoint_before(const strata_session *s, int pos)
{
    int best = -1;
    for (int i = 0; i < s->n_cps; i++)
        if (s->cps[i].pos <= pos)
            best = i;
    return best;
}

static void reset(strata_session *s)
{
    strata_cache_reset(s->cache);
    s->n = 0;
    while (s->n_cps)
        drop_checkpoint(s, s->n_cps - 1);
}

/* The checkpoint at exactly pos that keeps its logits, or -1. */
static int checkpoint_with_logits(const strata_session *s, int pos)
{
    int i = checkpoint_before(s, pos);
    return i >= 0 && s->cps[i].pos == pos && s->cps[i].logits ? i : -1;
}

strata_status strata_session_prepare(strata_session *s, const int32_t *prompt, int n, int *reused,
                                     int *reprocessed, const float **logits, strata_error *err)
{
    if (logits)
        *logits = NULL;
    if (!prompt || n < 1)
        return strata_fail(err, STRATA_E_INVALID, "empty prompt");
    int common = 0;
    while (common < s->n && common < n && s->tokens[common] == prompt[common])
        common++;
    *reprocessed = 0;
    int whole = logits && common == n ? checkpoint_with_logits(s, n) : -1;
    if (whole >= 0) {       /* a prompt the session has seen end to end, logits kept */
        if (n < s->n)
            STRATA_TRY(restore(s, whole, err));
        *logits = s->cps[whole].logits;
        *reused = n;
        return STRATA_OK;
    }
    int target = common < n - 1 ? common : n - 1;
    if (target < s->n) {
        int i = checkpoint_before(s, target);
        if (i >= 0) {
            STRATA_TRY(restore(s, i, err));
        } else {
            reset(s);
        }
        *reprocessed = target - s->n;
    }
    *reused = s->n;
    return STRATA_OK;
}

strata_status strata_session_rewind(strata_session *s, int position, int32_t **replay, int *n_replay,
                                    strata_error *err)
{
    *replay = NULL;
    *n_replay = 0;
    if (position < 0 || position > s->n)
        return strata_fail(err, STRATA_E_RANGE, "position %d is outside [0, %d]", position, s->n);
    if (position == s->n)
        return STRATA_OK;
    int32_t *keep = malloc(sizeof *keep * (size_t)(position + 1));
    if (!keep)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    memcpy(keep, s->tokens, sizeof *keep * (size_t)position);
    int i = checkpoint_before(s, position);
    strata_status st = STRATA_OK;
    if (i >= 0)
        st = restore(s, i, err);
    else
        reset(s);
    if (st != STRATA_OK) {
        free(keep);
        return st;
    }
    *n_replay = position - s->n;
    memmove(keep, keep + s->n, sizeof *keep * (size_t)*n_replay);
    *replay = keep;
    return STRATA_OK;
}

strata_status strata_session_fork(const strata_session *s, strata_session **out, strata_error *err)
{
    *out = NULL;
    strata_session *f = calloc(1, sizeof *f);
    if (!f)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    f->model = s->model;
    f->cp_budget = s->cp_budget;
    f->created = (int64_t)time(NULL);
    strata_status st = strata_cache_copy(s->cache, &f->cache, err);
    if (st == STRATA_OK)
        st = strata_session_append(f, s->tokens, s->n, err);
    for (int i = 0; st == STRATA_OK && i < s->n_cps; i++) {
        st = strata_cache_copy(s->cps[i].cache, &f->cps[i].cache, err);
        if (st == STRATA_OK && s->cps[i].logits && (f->cps[i].logits = malloc(logits_bytes(s->model))))
            memcpy(f->cps[i].logits, s->cps[i].logits, logits_bytes(s->model));
        f->cps[i].pos = s->cps[i].pos;
        f->cps[i].automatic = s->cps[i].automatic;
        f->n_cps += st == STRATA_OK;
    }
    if (st != STRATA_OK) {
        strata_session_free(f);
        return st;
    }
    *out = f;
    return STRATA_OK;
}

/* ---------------------------------------------------------------- serialization */

/* What a session file must match to be loaded into this model. */
static void fingerprint(const strata_model *model, char *buf, size_t len)
{
    const strata_model_info *m = strata_model_get_info(model);
    snprintf(buf, len, "%s|d%d|v%d|H%dx%d|N%d|G%d|K%d|attn%d/%dx%d", m->pattern, m->hidden_size, m->vocab_size,
             m->mamba_heads, m->mamba_head_dim, m->ssm_state_size, m->n_groups, m->conv_kernel, m->attn_heads,
             m->kv_heads, m->head_dim);
}

typedef struct tensor_list {
    strata_tensor_view *v;
    char (*names)[64];
    int n, cap;
    float **owned;
    int n_owned;
} tensor_list;

static int list_add(tensor_list *l, const char *name, strata_dtype dtype, int ndim, const int64_t *shape,
                    const void *data)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        strata_tensor_view *v = realloc(l->v, sizeof *v * (size_t)cap);
        char(*names)[64] = v ? realloc(l->names, sizeof *names * (size_t)cap) : NULL;
        if (v)
            l->v = v;
        if (!names)
            return 0;
        l->names = names;
        l->cap = cap;
        for (int i = 0; i < l->n; i++)
            l->v[i].name = l->names[i];
    }
    snprintf(l->names[l->n], 64, "%s", name);
    strata_tensor_view *t = &l->v[l->n++];
    *t = (strata_tensor_view){.name = l->names[l->n - 1], .dtype = dtype, .ndim = ndim, .data = data};
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    return 1;
}

static void list_free(tensor_list *l)
{
    for (int i = 0; i < l->n_owned; i++)
        free(l->owned[i]);
    free(l->owned);
    free(l->v);
    free(l->names);
}

/* A buffer of n floats that lives as long as the list, or NULL. */
static float *list_own(tensor_list *l, size_t n)
{
    float **grown = realloc(l->owned, sizeof *grown * (size_t)(l->n_owned + 1));
    if (!grown)
        return NULL;
    l->owned = grown;
    float *buf = malloc(sizeof(float) * (n + 1));
    if (buf)
        l->owned[l->n_owned++] = buf;
    return buf;
}

/* Conv and SSM state, in fp32 whatever the cache keeps (cache_copy_ssm). */
static int add_recurrent(tensor_list *l, const strata_model *model, const strata_cache *c, const char *prefix)
{
    const strata_model_info *m = &model->cfg.info;
    char name[64];
    int ok = 1;
    for (int i = 0; ok && i < model->n_mamba; i++) {
        snprintf(name, sizeof name, "%sconv.%d", prefix, i);
        ok = list_add(l, name, STRATA_F32, 2, (int64_t[]){m->conv_kernel - 1, m->conv_dim}, c->conv[i]);
        float *ssm = ok ? list_own(l, (size_t)m->d_inner * (size_t)m->ssm_state_size) : NULL;
        if (ssm)
            cache_copy_ssm(c, i, ssm);
        snprintf(name, sizeof name, "%sssm.%d", prefix, i);
        ok = ssm && list_add(l, name, STRATA_F32, 3, (int64_t[]){m->mamba_heads, m->mamba_head_dim, m->ssm_state_size},
                             ssm);
    }
    return ok;
}

/* K / V of every attention layer, gathered from the blocks: (n_kv, T, hd). */
static int add_kv(tensor_list *l, const strata_session *s)
{
    const strata_model_info *m = &s->model->cfg.info;
    size_t hd = (size_t)m->head_dim, T = (size_t)s->n;
    for (int j = 0; j < s->model->n_attn; j++)
        for (int kv = 0; kv < 2; kv++) {
            float *buf = list_own(l, (size_t)m->kv_heads * T * hd);
            if (!buf)
                return 0;
            for (int h = 0; h < m->kv_heads; h++)
                for (size_t t = 0; t < T; t++)
                    cache_kv_get(s->cache, j, kv, h, (int)t, buf + ((size_t)h * T + t) * hd);
            char name[64];
            snprintf(name, sizeof name, "state.%s.%d", kv ? "v" : "k", j);
            if (!list_add(l, name, STRATA_F32, 3, (int64_t[]){m->kv_heads, (int64_t)T, m->head_dim}, buf))
                return 0;
        }
    return 1;
}

strata_status strata_session_serialize(const strata_session *s, void **bytes, size_t *len, strata_error *err)
{
    tensor_list l = {0};
    int ok = list_add(&l, "tokens", STRATA_I32, 1, (int64_t[]){s->n}, s->tokens ? (void *)s->tokens : (void *)"") &&
             add_recurrent(&l, s->model, s->cache, "state.") && add_kv(&l, s);
    char prefix[48];
    for (int i = 0; ok && i < s->n_cps; i++) {
        snprintf(prefix, sizeof prefix, "checkpoint.%d.", i);
        ok = add_recurrent(&l, s->model, s->cps[i].cache, prefix);
        snprintf(prefix, sizeof prefix, "checkpoint.%d.logits", i);
        if (ok && s->cps[i].logits)
            ok = list_add(&l, prefix, STRATA_F32, 1, (int64_t[]){s->model->cfg.info.vocab_size}, s->cps[i].logits);
    }
    if (!ok) {
        list_free(&l);
        return strata_fail(err, STRATA_E_NOMEM, "out of memory serializing a session");
    }
    uint32_t crc = 0;
    for (int i = 0; i < l.n; i++) {
        size_t b = 4;
        for (int d = 0; d < l.v[i].ndim; d++)
            b *= (size_t)l.v[i].shape[d];
        crc = st_crc32(crc, l.v[i].data, b);
    }
    char fp[256];
    fingerprint(s->model, fp, sizeof fp);
    json_t *cps = json_array();
    for (int i = 0; i < s->n_cps; i++)     /* [position, automatic, bytes] */
        json_array_append_new(cps, json_pack("[i,b,I]", s->cps[i].pos, s->cps[i].automatic,
                                             (json_int_t)checkpoint_bytes(s, i)));
    char *cps_text = json_dumps(cps, JSON_COMPACT);
    json_decref(cps);
    char created[24], bytes_text[24];
    snprintf(created, sizeof created, "%lld", (long long)s->created);
    snprintf(bytes_text, sizeof bytes_text, "%llu", (unsigned long long)strata_session_state_bytes(s));
    json_t *meta = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "format", "strata-session", "version", "1", "model", fp,
                             "checkpoints", cps_text ? cps_text : "[]", "crc32", "", "created", created,
                             "state_bytes", bytes_text);
    char crc_text[16];
    snprintf(crc_text, sizeof crc_text, "%08x", crc);
    json_object_set_new(meta, "crc32", json_string(crc_text));
    char *meta_text = json_dumps(meta, JSON_COMPACT);
    json_decref(meta);
    free(cps_text);
    strata_status st = st_serialize(l.v, l.n, meta_text, bytes, len, err);
    free(meta_text);
    list_free(&l);
    return st;
}

/* State tensor `name`: F32 of exactly this model's shape (ndim dims), finite. */
static strata_status expect_tensor(const st_file *f, const char *name, int ndim, const int64_t *shape,
                                   const st_tensor **out, strata_error *err)
{
    const st_tensor *t = st_find(f, name);
    int ok = t && t->dtype == ST_F32 && t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++)
        ok = t->shape[d] == shape[d];
    if (!ok)        /* present but of other shapes: a file of another model (as a wrong fingerprint is) */
        return strata_fail(err, t && t->dtype == ST_F32 ? STRATA_E_INVALID : STRATA_E_FORMAT,
                           "session file: tensor %s is missing or not of this model's shape", name);
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(((const float *)t->data)[i]))
            return strata_fail(err, STRATA_E_FORMAT, "session file: tensor %s holds a value that is not finite", name);
    *out = t;
    return STRATA_OK;
}

static strata_status read_recurrent(const st_file *f, const strata_model *model, strata_cache *c, const char *prefix,
                                    strata_error *err)
{
    const strata_model_info *m = &model->cfg.info;
    size_t conv = (size_t)(m->conv_kernel - 1) * (size_t)m->conv_dim;
    for (int i = 0; i < model->n_mamba; i++) {
        char name[64];
        snprintf(name, sizeof name, "%sconv.%d", prefix, i);
        const st_tensor *t;
        STRATA_TRY(expect_tensor(f, name, 2, (int64_t[]){m->conv_kernel - 1, m->conv_dim}, &t, err));
        memcpy(c->conv[i], t->data, conv * 4);
        snprintf(name, sizeof name, "%sssm.%d", prefix, i);
        STRATA_TRY(expect_tensor(f, name, 3, (int64_t[]){m->mamba_heads, m->mamba_head_dim, m->ssm_state_size}, &t,
                                 err));
        cache_set_ssm(c, i, t->data);
    }
    return STRATA_OK;
}

static strata_status read_kv(const st_file *f, strata_session *s, strata_error *err)
{
    const strata_model_info *m = &s->model->cfg.info;
    size_t hd = (size_t)m->head_dim, T = (size_t)s->n;
    STRATA_TRY(cache_reserve(s->cache, s->n, err));
    for (int j = 0; j < s->model->n_attn; j++)
        for (int kv = 0; kv < 2; kv++) {
            char name[64];
            snprintf(name, sizeof name, "state.%s.%d", kv ? "v" : "k", j);
            const st_tensor *t;
            STRATA_TRY(expect_tensor(f, name, 3, (int64_t[]){m->kv_heads, (int64_t)T, (int64_t)hd}, &t, err));
            for (int h = 0; h < m->kv_heads; h++)
                for (size_t p = 0; p < T; p++)
                    cache_kv_put(s->cache, j, kv, h, (int)p, (const float *)t->data + ((size_t)h * T + p) * hd);
        }
    s->cache->n_tokens = s->n;
    return STRATA_OK;
}

static strata_status check_header(const st_file *f, const strata_model *model, json_t **meta_out, strata_error *err)
{
    json_t *meta = f->metadata_json ? json_loads(f->metadata_json, 0, NULL) : NULL;
    const char *format = json_string_value(json_object_get(meta, "format"));
    const char *fp = json_string_value(json_object_get(meta, "model"));
    const char *crc = json_string_value(json_object_get(meta, "crc32"));
    const char *version = json_string_value(json_object_get(meta, "version"));
    char want[256];
    fingerprint(model, want, sizeof want);
    strata_status st = STRATA_OK;
    if (!format || strcmp(format, "strata-session"))
        st = strata_fail(err, STRATA_E_FORMAT, "not a strata session file");
    else if (!version || strcmp(version, "1"))
        st = strata_fail(err, STRATA_E_FORMAT, "session file version %.16s (this build reads 1)", version ? version : "?");
    else if (!fp || strcmp(fp, want))
        st = strata_fail(err, STRATA_E_INVALID, "the session belongs to another model (%s, this is %s)", fp ? fp : "?", want);
    else if (!crc || strtoul(crc, NULL, 16) != st_crc32(0, (const uint8_t *)f->map + f->data_offset,
                                                         f->map_len - f->data_offset))
        st = strata_fail(err, STRATA_E_FORMAT, "session file: checksum mismatch (corrupt)");
    if (st != STRATA_OK) {
        json_decref(meta);
        return st;
    }
    *meta_out = meta;
    return STRATA_OK;
}

/* Checkpoint i's logits (optional: a malloc'd copy, or NULL). */
static strata_status read_logits(const st_file *f, const strata_model *model, size_t i, float **out,
                                 strata_error *err)
{
    char name[48];
    snprintf(name, sizeof name, "checkpoint.%zu.logits", i);
    const st_tensor *t;
    *out = NULL;
    if (!st_find(f, name))
        return STRATA_OK;       /* optional */
    STRATA_TRY(expect_tensor(f, name, 1, (int64_t[]){model->cfg.info.vocab_size}, &t, err));
    if (!(*out = malloc(logits_bytes(model))))
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    memcpy(*out, t->data, logits_bytes(model));
    return STRATA_OK;
}

static strata_status read_checkpoints(const st_file *f, strata_session *s, json_t *meta, strata_error *err)
{
    json_t *cps = json_loads(json_string_value(json_object_get(meta, "checkpoints")), 0, NULL);
    strata_status st = json_is_array(cps) && json_array_size(cps) <= STRATA_SESSION_MAX_CHECKPOINTS
                           ? STRATA_OK : strata_fail(err, STRATA_E_FORMAT, "session file: bad checkpoint list");
    size_t i;
    json_t *cp;
    json_array_foreach(cps, i, cp) {
        if (st != STRATA_OK)
            break;
        json_int_t pos = json_integer_value(json_array_get(cp, 0));
        if (!json_is_integer(json_array_get(cp, 0)) || !json_is_boolean(json_array_get(cp, 1))) {
            st = strata_fail(err, STRATA_E_FORMAT, "session file: checkpoint %zu is not [position, automatic, ...]", i);
            break;
        }
        if (pos < 0 || pos > s->n) {
            st = strata_fail(err, STRATA_E_FORMAT, "session file: checkpoint position %lld out of range", (long long)pos);
            break;
        }
        strata_cache *c = NULL;
        st = cache_share_prefix(s->cache, (int)pos, &c, err);
        char prefix[48];
        snprintf(prefix, sizeof prefix, "checkpoint.%zu.", i);
        float *logits = NULL;
        if (st == STRATA_OK && (st = read_recurrent(f, s->model, c, prefix, err)) == STRATA_OK &&
            (st = read_logits(f, s->model, i, &logits, err)) == STRATA_OK)
            st = insert_checkpoint(s, c, logits, json_is_true(json_array_get(cp, 1)), err);
        else if (c)
            strata_cache_free(c);
    }
    json_decref(cps);
    return st;
}

strata_status strata_session_deserialize(const strata_model *model, const void *bytes, size_t len,
                                         strata_session **out, strata_error *err)
{
    *out = NULL;
    st_file *f;
    STRATA_TRY(st_open_buffer(bytes, len, "session file", &f, err));
    json_t *meta = NULL;
    strata_session *s = NULL;
    strata_status st = check_header(f, model, &meta, err);
    const st_tensor *tokens = st == STRATA_OK ? st_find(f, "tokens") : NULL;
    if (st == STRATA_OK && (!tokens || tokens->dtype != ST_I32 || tokens->ndim != 1))
        st = strata_fail(err, STRATA_E_FORMAT, "session file: no tokens");
    else if (st == STRATA_OK && tokens->numel > model->cfg.info.max_position_embeddings)
        st = strata_fail(err, STRATA_E_FORMAT, "session file: %lld tokens, over this model's context of %d",
                         (long long)tokens->numel, model->cfg.info.max_position_embeddings);
    if (st == STRATA_OK)
        st = strata_session_new(model, &s, err);
    if (st == STRATA_OK)
        st = strata_session_append(s, tokens->data, (int)tokens->numel, err);
    for (int64_t i = 0; st == STRATA_OK && i < tokens->numel; i++)
        if (s->tokens[i] < 0 || s->tokens[i] >= model->cfg.info.vocab_size)
            st = strata_fail(err, STRATA_E_FORMAT, "session file: token %lld out of range", (long long)i);
    if (st == STRATA_OK)
        st = read_recurrent(f, model, s->cache, "state.", err);
    if (st == STRATA_OK)
        st = read_kv(f, s, err);
    if (st == STRATA_OK)
        st = read_checkpoints(f, s, meta, err);
    const char *created = json_string_value(json_object_get(meta, "created"));
    if (st == STRATA_OK && created && strtoll(created, NULL, 10) > 0)  /* else (older files): the time of loading */
        s->created = strtoll(created, NULL, 10);
    json_decref(meta);
    st_close(f);
    if (st != STRATA_OK) {
        strata_session_free(s);
        return st;
    }
    *out = s;
    return STRATA_OK;
}

strata_status strata_session_save(const strata_session *s, const char *path, strata_error *err)
{
    void *bytes;
    size_t len;
    STRATA_TRY(strata_session_serialize(s, &bytes, &len, err));
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t done = 0;
    while (fd >= 0 && done < len) {
        ssize_t w = write(fd, (const char *)bytes + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    int ok = fd >= 0 && done == len && fsync(fd) == 0;
    int saved_errno = errno;
    if (fd >= 0)
        close(fd);
    free(bytes);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return strata_fail(err, STRATA_E_IO, "%s: cannot save the session: %s", path, strerror(ok ? errno : saved_errno));
    }
    return STRATA_OK;
}

strata_status strata_session_load(const strata_model *model, const char *path, strata_session **out,
                                  strata_error *err)
{
    *out = NULL;
    st_file *f;
    STRATA_TRY(st_open(path, &f, err));
    strata_status st = strata_session_deserialize(model, f->map, f->map_len, out, err);
    st_close(f);
    if (st != STRATA_OK)
        strata_fail_prefix(err, st, "%s: ", path);
    return st;
}

strata_status strata_session_peek(const char *path, strata_session_summary *out, strata_error *err)
{
    memset(out, 0, sizeof *out);
    st_file *f;
    STRATA_TRY(st_open(path, &f, err));
    json_t *meta = f->metadata_json ? json_loads(f->metadata_json, 0, NULL) : NULL;
    json_t *cps = json_loads(json_string_value(json_object_get(meta, "checkpoints")), 0, NULL);
    const st_tensor *tokens = st_find(f, "tokens");
    const char *format = json_string_value(json_object_get(meta, "format"));
    strata_status st = STRATA_OK;
    if (!format || strcmp(format, "strata-session") || !tokens || tokens->ndim != 1 || !json_is_array(cps) ||
        json_array_size(cps) > STRATA_SESSION_MAX_CHECKPOINTS)
        st = strata_fail(err, STRATA_E_FORMAT, "%s: not a strata session file", path);
    if (st == STRATA_OK) {
        struct stat sb;
        out->n_tokens = (int)tokens->numel;
        out->created = strtoll(json_string_value(json_object_get(meta, "created")) ?: "0", NULL, 10);
        out->created = out->created > 0 ? out->created : 0;
        out->saved = stat(path, &sb) == 0 ? (int64_t)sb.st_mtime : 0;
        out->state_bytes = strtoull(json_string_value(json_object_get(meta, "state_bytes")) ?: "0", NULL, 10);
        size_t i;
        json_t *cp;
        json_array_foreach(cps, i, cp) {
            out->checkpoint_position[i] = (int)json_integer_value(json_array_get(cp, 0));
            out->checkpoint_bytes[i] = (uint64_t)json_integer_value(json_array_get(cp, 2));
        }
        out->n_checkpoints = (int)json_array_size(cps);
    }
    json_decref(cps);
    json_decref(meta);
    st_close(f);
    return st;
}
