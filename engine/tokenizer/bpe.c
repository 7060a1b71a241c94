/*
 * bpe.c — the BPE model of tokenizer.json: vocab and merge tables (merges as "a b"
 * strings or [a, b] pairs), and word encoding as HF does it: ignore_merges whole-word
 * lookup, chars (with continuing_subword_prefix / end_of_word_suffix), byte_fallback
 * to <0xNN>, unk with fuse_unk, then lowest-rank-first merging (leftmost on ties)
 * with a binary heap over a linked list of symbols.
 */
#include <stdio.h>
#include <stdlib.h>

#include "tokenizer/internal.h"

typedef struct merge_entry {
    int32_t rank, pos, merged;
} merge_entry;

typedef struct bpe_work {
    int32_t *id, *prev, *next;
    size_t cap;
    merge_entry *heap;
    size_t heap_n, heap_cap;
    tk_buf key;                 /* char + prefix/suffix lookups */
} bpe_work;

#define VOCAB_BATCH 32

static strata_status vocab_id(const tj_value *k, const tj_value *v, int32_t *id, strata_error *err)
{
    if (v->kind != TJ_NUMBER || v->u.num < 0 || v->u.num >= (double)TK_MAX_IDS || v->u.num != (int32_t)v->u.num)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: model.vocab['%s'] is not a valid id", k->u.str);
    *id = (int32_t)v->u.num;
    return STRATA_OK;
}

/* Insert in batches, prefetching each batch's slots first (see MERGE_BATCH below). */
static strata_status parse_vocab(const tj_value *vocab, tk_bpe *bpe, strata_error *err)
{
    if (!vocab || vocab->kind != TJ_OBJECT)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: model.vocab must be an object");
    if (tk_strmap_init(&bpe->vocab, vocab->n))
        return tk_nomem(err);
    bpe->max_id = -1;
    const tj_value *items = vocab->u.items;
    for (uint32_t base = 0; base < vocab->n; base += VOCAB_BATCH) {
        uint32_t count = vocab->n - base < VOCAB_BATCH ? vocab->n - base : VOCAB_BATCH;
        uint64_t hash[VOCAB_BATCH];
        for (uint32_t j = 0; j < count; j++) {
            const tj_value *k = &items[2 * (base + j)];
            hash[j] = tk_hash(k->u.str, k->n);
            tk_strmap_prefetch(&bpe->vocab, hash[j]);
        }
        for (uint32_t j = 0; j < count; j++) {
            const tj_value *k = &items[2 * (base + j)];
            int32_t id = 0;
            STRATA_TRY(vocab_id(k, k + 1, &id, err));
            if (tk_strmap_put_hashed(&bpe->vocab, k->u.str, k->n, id, hash[j]))
                return tk_nomem(err);
            if (id > bpe->max_id)
                bpe->max_id = id;
        }
    }
    return STRATA_OK;
}

/* The two halves of merges[i], either "a b" or ["a", "b"]. */
static strata_status merge_parts(const tj_value *m, uint32_t i, const char **a, size_t *na, const char **b,
                                 size_t *nb, strata_error *err)
{
    if (m->kind == TJ_STRING) {
        const char *sp = memchr(m->u.str, ' ', m->n);
        if (sp) {
            *a = m->u.str;
            *na = (size_t)(sp - m->u.str);
            *b = sp + 1;
            *nb = m->n - *na - 1;
            return STRATA_OK;
        }
    } else if (m->kind == TJ_ARRAY && m->n == 2 && tj_str(&m->u.items[0]) && tj_str(&m->u.items[1])) {
        *a = m->u.items[0].u.str;
        *na = m->u.items[0].n;
        *b = m->u.items[1].u.str;
        *nb = m->u.items[1].n;
        return STRATA_OK;
    }
    return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: model.merges[%u] is neither \"a b\" nor [a, b]", i);
}

/* Merges are resolved in batches: first every token of the batch is hashed and its
 * vocab slot prefetched, then looked up, so the cache misses of a 7 MB vocab overlap
 * instead of queueing one after another. */
#define MERGE_BATCH 32

typedef struct merge_job {
    const char *a, *b;
    size_t na, nb, joined_off, joined_len;
    uint64_t ha, hb, hm;
} merge_job;

/* Parse merges[i] into job, appending the merged token to joined. */
static strata_status prepare_merge(const tk_bpe *bpe, const tj_value *m, uint32_t i, merge_job *job, tk_buf *joined,
                                   strata_error *err)
{
    STRATA_TRY(merge_parts(m, i, &job->a, &job->na, &job->b, &job->nb, err));
    if (job->nb < bpe->prefix_len)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: model.merges[%u] is shorter than the subword prefix", i);
    job->joined_off = joined->len;
    if (tk_buf_append(joined, job->a, job->na) ||
        tk_buf_append(joined, job->b + bpe->prefix_len, job->nb - bpe->prefix_len))
        return tk_nomem(err);
    job->joined_len = joined->len - job->joined_off;
    job->ha = tk_hash(job->a, job->na);
    job->hb = tk_hash(job->b, job->nb);
    job->hm = tk_hash(joined->p + job->joined_off, job->joined_len);
    tk_strmap_prefetch(&bpe->vocab, job->ha);
    tk_strmap_prefetch(&bpe->vocab, job->hb);
    tk_strmap_prefetch(&bpe->vocab, job->hm);
    return STRATA_OK;
}

static strata_status lookup(const tk_bpe *bpe, const char *s, size_t n, uint64_t h, uint32_t i, int32_t *id,
                            strata_error *err)
{
    *id = tk_strmap_get_hashed(&bpe->vocab, s, n, h);
    if (*id < 0)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: model.merges[%u]: token '%.*s' is not in the vocab",
                           i, (int)(n > 200 ? 200 : n), s);
    return STRATA_OK;
}

static strata_status merge_batch(const tk_bpe *bpe, const tj_value *merges, uint32_t base, uint32_t count,
                                 tk_buf *joined, tk_pairmap_slot *out, strata_error *err)
{
    merge_job jobs[MERGE_BATCH];
    joined->len = 0;
    for (uint32_t j = 0; j < count; j++)
        STRATA_TRY(prepare_merge(bpe, &merges->u.items[base + j], base + j, &jobs[j], joined, err));
    for (uint32_t j = 0; j < count; j++) {
        merge_job *m = &jobs[j];
        int32_t a, b;
        STRATA_TRY(lookup(bpe, m->a, m->na, m->ha, base + j, &a, err));
        STRATA_TRY(lookup(bpe, m->b, m->nb, m->hb, base + j, &b, err));
        STRATA_TRY(lookup(bpe, joined->p + m->joined_off, m->joined_len, m->hm, base + j, &out[j].merged, err));
        out[j].key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
        out[j].rank = (int32_t)(base + j);
    }
    return STRATA_OK;
}

static strata_status parse_merges(const tj_value *merges, tk_bpe *bpe, strata_error *err)
{
    if (!merges || merges->kind != TJ_ARRAY)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: model.merges must be an array");
    tk_pairmap_slot *entries = malloc((merges->n ? merges->n : 1) * sizeof *entries);
    if (!entries)
        return tk_nomem(err);
    tk_buf joined = {0};
    strata_status s = STRATA_OK;
    for (uint32_t base = 0; base < merges->n && s == STRATA_OK; base += MERGE_BATCH) {
        uint32_t count = merges->n - base < MERGE_BATCH ? merges->n - base : MERGE_BATCH;
        s = merge_batch(bpe, merges, base, count, &joined, entries + base, err);
    }
    if (s == STRATA_OK && tk_pairmap_build(&bpe->merges, entries, merges->n))
        s = tk_nomem(err);
    free(entries);
    tk_buf_free(&joined);
    return s;
}

static const char *opt_str(const tj_value *model, const char *key, size_t *len)
{
    const tj_value *v = tj_get(model, key);
    *len = v && v->kind == TJ_STRING ? v->n : 0;
    return v && v->kind == TJ_STRING && v->n ? v->u.str : NULL;
}

strata_status tk_bpe_parse(const tj_value *model, tk_bpe *bpe, strata_error *err)
{
    memset(bpe, 0, sizeof *bpe);
    bpe->unk_id = -1;
    const tj_value *type = tj_get(model, "type");
    if (!model || model->kind != TJ_OBJECT)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: \"model\" is missing");
    if (type && (!tj_str(type) || strcmp(type->u.str, "BPE")))
        return tk_unsupported(err, "model", type);
    const tj_value *dropout = tj_get(model, "dropout");
    if (dropout && dropout->kind == TJ_NUMBER && dropout->u.num != 0.0)
        return strata_fail(err, STRATA_E_UNSUPPORTED, "tokenizer.json: BPE dropout is not supported");
    bpe->fuse_unk = tj_bool(tj_get(model, "fuse_unk"), 0);
    bpe->byte_fallback = tj_bool(tj_get(model, "byte_fallback"), 0);
    bpe->ignore_merges = tj_bool(tj_get(model, "ignore_merges"), 0);
    bpe->prefix = opt_str(model, "continuing_subword_prefix", &bpe->prefix_len);
    bpe->suffix = opt_str(model, "end_of_word_suffix", &bpe->suffix_len);
    STRATA_TRY(parse_vocab(tj_get(model, "vocab"), bpe, err));
    STRATA_TRY(parse_merges(tj_get(model, "merges"), bpe, err));
    size_t unk_len;
    const char *unk = opt_str(model, "unk_token", &unk_len);
    if (unk)
        bpe->unk_id = tk_strmap_get(&bpe->vocab, unk, unk_len);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        bpe->byte_ids[b] = tk_strmap_get(&bpe->vocab, name, 6);
    }
    return STRATA_OK;
}

void tk_bpe_free(tk_bpe *bpe)
{
    tk_strmap_free(&bpe->vocab);
    tk_pairmap_free(&bpe->merges);
}

static bpe_work *work_of(tk_scratch *sc, size_t n)
{
    bpe_work *w = sc->bpe;
    if (!w && !(w = sc->bpe = calloc(1, sizeof *w)))
        return NULL;
    if (w->cap < n) {
        size_t cap = n < 64 ? 64 : n * 2;
        int32_t *id = realloc(w->id, cap * sizeof *id), *prev, *next;
        if (id) w->id = id;
        prev = id ? realloc(w->prev, cap * sizeof *prev) : NULL;
        if (prev) w->prev = prev;
        next = prev ? realloc(w->next, cap * sizeof *next) : NULL;
        if (next) w->next = next;
        merge_entry *heap = next ? realloc(w->heap, cap * sizeof *heap) : NULL;
        if (!heap)
            return NULL;
        w->heap = heap;
        w->cap = w->heap_cap = cap;
    }
    return w;
}

void tk_bpe_work_free(void *p)
{
    bpe_work *w = p;
    if (!w)
        return;
    free(w->id);
    free(w->prev);
    free(w->next);
    free(w->heap);
    tk_buf_free(&w->key);
    free(w);
}

static inline int entry_less(merge_entry a, merge_entry b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static int heap_push(bpe_work *w, merge_entry e)
{
    if (w->heap_n == w->heap_cap) {
        size_t cap = w->heap_cap * 2;
        merge_entry *h = realloc(w->heap, cap * sizeof *h);
        if (!h)
            return -1;
        w->heap = h;
        w->heap_cap = cap;
    }
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!entry_less(e, w->heap[parent]))
            break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = e;
    return 0;
}

static merge_entry heap_pop(bpe_work *w)
{
    merge_entry top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && entry_less(w->heap[c + 1], w->heap[c]))
            c++;
        if (!entry_less(w->heap[c], last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n)
        w->heap[i] = last;
    return top;
}

static int push_pair(const tk_bpe *bpe, bpe_work *w, int32_t left)
{
    int32_t right = w->next[left];
    if (right < 0)
        return 0;
    const tk_pairmap_slot *m = tk_pairmap_get(&bpe->merges, w->id[left], w->id[right]);
    return m ? heap_push(w, (merge_entry){m->rank, left, m->merged}) : 0;
}

/* Id of one char of the word, with the subword prefix / word suffix it needs. */
static int32_t char_id(const tk_bpe *bpe, bpe_work *w, const char *c, size_t n, int first, int last)
{
    if (!bpe->prefix && !bpe->suffix)
        return tk_strmap_get(&bpe->vocab, c, n);
    w->key.len = 0;
    if ((!first && bpe->prefix && tk_buf_append(&w->key, bpe->prefix, bpe->prefix_len)) ||
        tk_buf_append(&w->key, c, n) || (last && bpe->suffix && tk_buf_append(&w->key, bpe->suffix, bpe->suffix_len)))
        return -2;
    return tk_strmap_get(&bpe->vocab, w->key.p, w->key.len);
}

static int bytes_have_ids(const tk_bpe *bpe, const char *s, size_t n)
{
    for (size_t j = 0; j < n; j++)
        if (bpe->byte_ids[(unsigned char)s[j]] < 0)
            return 0;
    return 1;
}

/* Split the word into initial symbols (HF's merge_word: a pending unk is flushed by
 * the next known char, not by byte-fallback tokens); returns the count, or -1 out of memory. */
static long initial_symbols(const tk_bpe *bpe, bpe_work *w, const char *word, size_t n)
{
    long count = 0;
    int pending_unk = 0;
    for (size_t i = 0; i < n;) {
        size_t k = (size_t)tk_utf8_len((unsigned char)word[i]);
        if (k > n - i)
            k = n - i;
        int32_t id = char_id(bpe, w, word + i, k, i == 0, i + k == n);
        if (id == -2)
            return -1;
        if (id >= 0) {
            if (pending_unk)
                w->id[count++] = bpe->unk_id;
            pending_unk = 0;
            w->id[count++] = id;
        } else if (bpe->byte_fallback && bytes_have_ids(bpe, word + i, k)) {
            for (size_t j = 0; j < k; j++)
                w->id[count++] = bpe->byte_ids[(unsigned char)word[i + j]];
        } else if (bpe->unk_id >= 0) {
            if (pending_unk && !bpe->fuse_unk)
                w->id[count++] = bpe->unk_id;
            pending_unk = 1;
        }
        i += k;
    }
    if (pending_unk)
        w->id[count++] = bpe->unk_id;
    return count;
}

strata_status tk_bpe_encode(const tk_bpe *bpe, tk_scratch *sc, const char *word, size_t n, strata_error *err)
{
    if (bpe->ignore_merges) {
        int32_t id = tk_strmap_get(&bpe->vocab, word, n);
        if (id >= 0)
            return tk_ids_push(sc, id) ? tk_nomem(err) : STRATA_OK;
    }
    bpe_work *w = work_of(sc, n + 1);
    if (!w)
        return tk_nomem(err);
    long count = initial_symbols(bpe, w, word, n);
    if (count < 0)
        return tk_nomem(err);
    w->heap_n = 0;
    for (long i = 0; i < count; i++) {
        w->prev[i] = (int32_t)i - 1;
        w->next[i] = i + 1 < count ? (int32_t)i + 1 : -1;
    }
    for (long i = 0; i + 1 < count; i++)
        if (push_pair(bpe, w, (int32_t)i))
            return tk_nomem(err);
    while (w->heap_n) {
        merge_entry e = heap_pop(w);
        int32_t left = e.pos, right = w->next[left];
        if (w->id[left] < 0 || right < 0)
            continue;
        const tk_pairmap_slot *m = tk_pairmap_get(&bpe->merges, w->id[left], w->id[right]);
        if (!m || m->merged != e.merged)
            continue;
        w->id[left] = e.merged;
        w->id[right] = -1;                  /* dead */
        w->next[left] = w->next[right];
        if (w->next[right] >= 0)
            w->prev[w->next[right]] = left;
        if ((w->prev[left] >= 0 && push_pair(bpe, w, w->prev[left])) || push_pair(bpe, w, left))
            return tk_nomem(err);
    }
    for (int32_t i = count ? 0 : -1; i >= 0; i = w->next[i])
        if (tk_ids_push(sc, w->id[i]))
            return tk_nomem(err);
    return STRATA_OK;
}
