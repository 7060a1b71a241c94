/*
 * tensor_out.c — captured tensors as response bytes, produced as the socket takes
 * them (an MHD callback response pulls out_stream_read), so a large result is never
 * serialised whole in memory. Three formats:
 *   json         {"object":"activations", "model", "tokens", "activations": {name: {"shape",
 *                "dtype", "positions", "data"}}, "usage"} (several runs: "runs": [...])
 *   npy          one tensor, NumPy format 1.0
 *   safetensors  every tensor plus input_ids; __metadata__ holds the JSON parts
 * A tensor is its capture's data with one axis narrowed to the selected positions.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activations.h"

typedef enum unit { U_TEXT, U_TENSOR } unit;

typedef struct part {
    unit kind;
    strbuf text;                /* U_TEXT */
    const out_tensor *t;        /* U_TENSOR */
    int json;                   /* the tensor's numbers as JSON text */
} part;

struct out_stream {
    part *parts;
    int n, cap;
    int cur;                    /* part being produced */
    size_t row;                 /* next (outer · n_rows) row of the current tensor part */
    strbuf pending;             /* produced, not yet read */
    size_t pending_off;
    uint64_t total;             /* binary formats: exact body size */
};

static size_t tensor_rows(const out_tensor *t)
{
    return t->rows ? (size_t)t->n_rows : (size_t)t->src_rows;
}

static uint64_t tensor_elems(const out_tensor *t)
{
    return (uint64_t)t->outer * tensor_rows(t) * t->inner;
}

uint64_t out_size(const out_run *runs, int n_runs, out_format f)
{
    uint64_t bytes = 1024;
    for (int r = 0; r < n_runs; r++) {
        bytes += (uint64_t)runs[r].n_ids * (f == OUT_JSON ? 24 : 4);
        for (int i = 0; i < runs[r].n_t; i++)
            bytes += tensor_elems(&runs[r].t[i]) * (f == OUT_JSON ? 13 : 4) + 256;
    }
    return bytes;
}

static part *add_part(out_stream *s, unit kind)
{
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        part *grown = realloc(s->parts, sizeof *grown * (size_t)cap);
        if (!grown)
            return NULL;
        s->parts = grown;
        s->cap = cap;
    }
    part *p = &s->parts[s->n++];
    memset(p, 0, sizeof *p);
    p->kind = kind;
    return p;
}

/* The text part being built (a new one after a tensor). */
static strbuf *text(out_stream *s)
{
    if (s->n && s->parts[s->n - 1].kind == U_TEXT)
        return &s->parts[s->n - 1].text;
    part *p = add_part(s, U_TEXT);
    return p ? &p->text : NULL;
}

static void put(out_stream *s, const char *str)
{
    strbuf *b = text(s);
    if (b)
        sb_puts(b, str);
}

static void put_tensor(out_stream *s, const out_tensor *t, int json)
{
    part *p = add_part(s, U_TENSOR);
    if (p) {
        p->t = t;
        p->json = json;
    }
}

static void shape_json(strbuf *b, const out_tensor *t)
{
    sb_puts(b, "[");
    for (int d = 0; d < t->ndim; d++)
        sb_printf(b, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    sb_puts(b, "]");
}

static void ids_json(strbuf *b, const int32_t *ids, int n)
{
    sb_puts(b, "[");
    for (int i = 0; i < n; i++)
        sb_printf(b, "%s%d", i ? "," : "", ids[i]);
    sb_puts(b, "]");
}

static void pieces_json(strbuf *b, const out_run *r)
{
    sb_puts(b, "[");
    for (int i = 0; i < r->n_ids; i++) {
        if (i)
            sb_puts(b, ",");
        const char *p = r->pieces && r->pieces[i] ? r->pieces[i] : "";
        sb_json_string(b, p, strlen(p));
    }
    sb_puts(b, "]");
}

static void tensor_head_json(strbuf *b, const out_tensor *t)
{
    sb_json_string(b, t->name, strlen(t->name));
    sb_puts(b, ":{\"shape\":");
    shape_json(b, t);
    sb_printf(b, ",\"dtype\":\"%s\",\"positions\":", t->dtype == STRATA_I32 ? "int32" : "float32");
    if (t->positions)
        ids_json(b, t->positions, t->n_positions);
    else
        sb_puts(b, "null");
    sb_puts(b, ",\"data\":[");
}

static void json_layout(out_stream *s, const out_run *runs, int n_runs, const char *model, int usage_tokens)
{
    strbuf *b = text(s);
    if (!b)
        return;
    sb_puts(b, "{\"object\":\"activations\",\"model\":");
    sb_json_string(b, model, strlen(model));
    sb_puts(b, n_runs > 1 ? ",\"runs\":[" : ",");
    for (int r = 0; r < n_runs; r++) {
        b = text(s);
        sb_puts(b, r ? ",{" : n_runs > 1 ? "{" : "");
        sb_puts(b, "\"tokens\":{\"ids\":");
        ids_json(b, runs[r].ids, runs[r].n_ids);
        sb_puts(b, ",\"pieces\":");
        pieces_json(b, &runs[r]);
        sb_puts(b, "},\"activations\":{");
        for (int i = 0; i < runs[r].n_t; i++) {
            b = text(s);
            if (i)
                sb_puts(b, ",");
            tensor_head_json(b, &runs[r].t[i]);
            put_tensor(s, &runs[r].t[i], 1);
            put(s, "]}");
        }
        put(s, n_runs > 1 ? "}}" : "}");
    }
    b = text(s);
    sb_printf(b, "%s,\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d}}", n_runs > 1 ? "]" : "", usage_tokens,
              usage_tokens);
}

static const char *st_dtype(strata_dtype d)
{
    return d == STRATA_I32 ? "I32" : "F32";
}

/* safetensors: 8-byte header length, JSON header (space-padded to 8), raw data. */
static void safetensors_layout(out_stream *s, const out_run *runs, int n_runs, const char *model, int usage_tokens)
{
    strbuf h = {0}, meta = {0};
    uint64_t off = 0;
    sb_puts(&h, "{\"__metadata__\":{\"format\":\"strata-activations\",\"model\":");
    sb_json_string(&h, model, strlen(model));
    sb_printf(&h, ",\"runs\":\"%d\",\"usage\":", n_runs);
    sb_printf(&meta, "{\"prompt_tokens\":%d,\"total_tokens\":%d}", usage_tokens, usage_tokens);
    sb_json_string(&h, meta.data, meta.len);
    for (int r = 0; r < n_runs; r++) {
        char prefix[32] = "";
        if (n_runs > 1)
            snprintf(prefix, sizeof prefix, "runs.%d.", r);
        meta.len = 0;
        pieces_json(&meta, &runs[r]);
        sb_printf(&h, ",\"%spieces\":", prefix);
        sb_json_string(&h, meta.data, meta.len);
        for (int i = 0; i < runs[r].n_t; i++) {
            const out_tensor *t = &runs[r].t[i];
            meta.len = 0;
            if (t->positions)
                ids_json(&meta, t->positions, t->n_positions);
            else
                sb_puts(&meta, "null");
            sb_printf(&h, ",");
            strbuf key = {0};
            sb_printf(&key, "%spositions.%s", prefix, t->name);
            sb_json_string(&h, key.data, key.len);
            sb_free(&key);
            sb_puts(&h, ":");
            sb_json_string(&h, meta.data, meta.len);
        }
    }
    sb_puts(&h, "}");
    for (int r = 0; r < n_runs; r++) {
        char prefix[32] = "";
        if (n_runs > 1)
            snprintf(prefix, sizeof prefix, "runs.%d.", r);
        sb_printf(&h, ",\"%sinput_ids\":{\"dtype\":\"I32\",\"shape\":[%d],\"data_offsets\":[%llu,%llu]}", prefix,
                  runs[r].n_ids, (unsigned long long)off, (unsigned long long)(off + 4u * (uint64_t)runs[r].n_ids));
        off += 4u * (uint64_t)runs[r].n_ids;
        for (int i = 0; i < runs[r].n_t; i++) {
            const out_tensor *t = &runs[r].t[i];
            uint64_t bytes = 4 * tensor_elems(t);
            strbuf key = {0};
            sb_printf(&key, "%s%s", prefix, t->name);
            sb_puts(&h, ",");
            sb_json_string(&h, key.data, key.len);
            sb_free(&key);
            sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":", st_dtype(t->dtype));
            shape_json(&h, t);
            sb_printf(&h, ",\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + bytes));
            off += bytes;
        }
    }
    sb_puts(&h, "}");
    while (h.len % 8)
        sb_puts(&h, " ");
    uint64_t hl = h.len;
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(hl >> (8 * i));
    strbuf *b = text(s);
    if (b) {
        sb_append(b, (const char *)le, 8);
        sb_append(b, h.data, h.len);
    }
    s->total = 8 + hl + off;
    for (int r = 0; r < n_runs; r++) {
        b = text(s);
        if (b)
            sb_append(b, (const char *)runs[r].ids, 4 * (size_t)runs[r].n_ids);
        for (int i = 0; i < runs[r].n_t; i++)
            put_tensor(s, &runs[r].t[i], 0);
    }
    sb_free(&h);
    sb_free(&meta);
}

static void npy_layout(out_stream *s, const out_tensor *t)
{
    strbuf h = {0};
    sb_printf(&h, "{'descr': '%s', 'fortran_order': False, 'shape': (", t->dtype == STRATA_I32 ? "<i4" : "<f4");
    for (int d = 0; d < t->ndim; d++)
        sb_printf(&h, "%lld,%s", (long long)t->shape[d], d + 1 < t->ndim ? " " : "");
    sb_puts(&h, "), }");
    while ((10 + h.len + 1) % 64)
        sb_puts(&h, " ");
    sb_puts(&h, "\n");
    strbuf *b = text(s);
    if (b) {
        unsigned char magic[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(h.len & 0xff),
                                   (unsigned char)(h.len >> 8)};
        sb_append(b, (const char *)magic, 10);
        sb_append(b, h.data, h.len);
    }
    s->total = 10 + h.len + 4 * tensor_elems(t);
    put_tensor(s, t, 0);
    sb_free(&h);
}

out_stream *out_stream_new(const out_run *runs, int n_runs, out_format f, const char *model, int usage_tokens)
{
    out_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (f == OUT_JSON)
        json_layout(s, runs, n_runs, model, usage_tokens);
    else if (f == OUT_SAFETENSORS)
        safetensors_layout(s, runs, n_runs, model, usage_tokens);
    else
        npy_layout(s, &runs[0].t[0]);
    for (int i = 0; i < s->n; i++)
        if (s->parts[i].kind == U_TEXT && s->parts[i].text.failed) {
            out_stream_free(s);
            return NULL;
        }
    return s;
}

uint64_t out_stream_total(const out_stream *s)
{
    return s->total;
}

void out_stream_free(out_stream *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++)
        sb_free(&s->parts[i].text);
    free(s->parts);
    sb_free(&s->pending);
    free(s);
}

static void number_json(strbuf *b, const out_tensor *t, const char *p)
{
    if (t->dtype == STRATA_I32) {
        int32_t v;
        memcpy(&v, p, 4);
        sb_printf(b, "%d", v);
        return;
    }
    float v;
    memcpy(&v, p, 4);
    char tmp[32];
    int n = isfinite(v) ? snprintf(tmp, sizeof tmp, "%.9g", (double)v) : snprintf(tmp, sizeof tmp, "null");
    sb_append(b, tmp, (size_t)n);
}

/* Produce the next row of tensor part p into pending; 0 when the tensor is done. */
static int tensor_row(out_stream *s, const part *p)
{
    const out_tensor *t = p->t;
    size_t nr = tensor_rows(t), total = t->outer * nr;
    if (s->row >= total)
        return 0;
    size_t o = s->row / nr, k = s->row % nr;
    size_t src = t->rows ? (size_t)t->rows[k] : k;
    const char *row = t->data + ((o * (size_t)t->src_rows + src) * t->inner) * 4;
    if (p->json) {
        for (size_t i = 0; i < t->inner; i++) {
            if (s->row || i)
                sb_append(&s->pending, ",", 1);
            number_json(&s->pending, t, row + 4 * i);
        }
    } else {
        sb_append(&s->pending, row, 4 * t->inner);
    }
    s->row++;
    return 1;
}

/* Refill pending with the next unit; 0 at the end. */
static int produce(out_stream *s)
{
    while (s->cur < s->n) {
        part *p = &s->parts[s->cur];
        if (p->kind == U_TEXT) {
            sb_append(&s->pending, p->text.data, p->text.len);
            s->cur++;
            return 1;
        }
        if (tensor_row(s, p))
            return 1;
        s->cur++;
        s->row = 0;
    }
    return 0;
}

size_t out_stream_read(out_stream *s, char *buf, size_t max)
{
    size_t n = 0;
    while (n < max) {
        if (s->pending_off == s->pending.len) {
            s->pending.len = 0;
            s->pending_off = 0;
            if (!produce(s) || s->pending.failed)
                break;
        }
        size_t k = s->pending.len - s->pending_off;
        k = k < max - n ? k : max - n;
        memcpy(buf + n, s->pending.data + s->pending_off, k);
        s->pending_off += k;
        n += k;
    }
    return n;
}

void out_json_object(strbuf *b, const out_tensor *t, int n_t)
{
    sb_puts(b, "{");
    for (int i = 0; i < n_t; i++) {
        if (i)
            sb_puts(b, ",");
        tensor_head_json(b, &t[i]);
        out_stream one = {0};
        part p = {.kind = U_TENSOR, .t = &t[i], .json = 1};
        while (tensor_row(&one, &p))
            ;
        sb_append(b, one.pending.data, one.pending.len);
        sb_free(&one.pending);
        sb_puts(b, "]}");
    }
    sb_puts(b, "}");
}
