/*
 * attention.c — the `*` layer: grouped-query self-attention with NO positional
 * encoding (Nemotron-H is NoPE), scale head_dim^-0.5, causal over the sequence's
 * whole history in the cache:
 *
 *   q = h·W_qᵀ (nh heads), k = h·W_kᵀ, v = h·W_vᵀ (nkv heads) ; K, V = cache ++ k, v
 *   z[t, j] = Σ_τ≤pos(t) softmax_τ(q[t,j]·K[τ, j/(nh/nkv)] / √hd) · V[τ, ...]
 *   out = z · W_oᵀ
 */
#include <string.h>

#include "forward.h"

/* Query rows attended together, and the keys of one sub-run: QB rows of every
 * head of a unit share each sub-run of KB keys (16 KiB of K or V rows at head_dim
 * 128) while it sits in L1, instead of each row and head streaming the whole
 * history from L3 or DRAM (a 4096-token history is 2 MiB of K and 2 MiB of V per
 * kv head, read once per unit instead of once per query head). */
#define QB 8
#define KB 32

size_t attention_scratch(const strata_model *model, int R, int max_keys, int n_threads)
{
    const strata_model_info *m = &model->cfg.info;
    size_t q = (size_t)m->attn_heads * (size_t)m->head_dim, kv = (size_t)m->kv_heads * (size_t)m->head_dim;
    size_t group = (size_t)(m->attn_heads / m->kv_heads);
    return (size_t)R * (2 * q + 2 * kv + 4) +
           (size_t)n_threads * (QB * group * ((size_t)max_keys + 16) + KB * (size_t)m->head_dim) + 128;
}

/* Append the sequence's new keys/values (n rows) at positions p0.. of its cache
 * (rounded to BF16 in a cache that keeps them so, before any query reads them). */
static void append_kv(strata_cache *c, int j, const float *k, const float *v, int n, int p0)
{
    const strata_model_info *m = &c->model->cfg.info;
    size_t hd = (size_t)m->head_dim, kvw = (size_t)m->kv_heads * hd;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < m->kv_heads; h++) {
            cache_kv_put(c, j, 0, h, p0 + t, k + (size_t)t * kvw + (size_t)h * hd);
            cache_kv_put(c, j, 1, h, p0 + t, v + (size_t)t * kvw + (size_t)h * hd);
        }
}

/* Keys (kv 0) or values (kv 1) t0 .. t0 + run - 1 of head kvh, rows hd apart, in
 * fp32: the block's own rows, or its BF16 rows widened exactly into tmp (KB, hd). */
static const float *kv_rows(const kernel_isa *isa, const strata_cache *c, int j, int kv, int kvh, int t0, int run,
                            float *tmp)
{
    const void *rows = cache_kv_row(c, j, kv, kvh, t0);
    if (!c->kv_bf16)
        return rows;
    isa->widen(tmp, rows, ST_BF16, (size_t)run * (size_t)c->model->cfg.info.head_dim);
    return tmp;
}

/* Keys (or values) from position t0 on that one cache block holds contiguously
 * (rows hd apart), up to end: a sub-run of at most KB. */
static int kv_run(int t0, int end)
{
    int in_block = KV_BLOCK - t0 % KV_BLOCK, run = in_block < end - t0 ? in_block : end - t0;
    return run < KB ? run : KB;
}

/* The first of a block's rows (row b attends keys 0..last0 + b) that sees key t0,
 * and how many of the sub-run t0 .. t0 + run - 1 a row seeing keys 0..last sees. */
static int first_row(int t0, int last0)
{
    return t0 > last0 ? t0 - last0 : 0;
}

static int keys_of_row(int t0, int run, int last)
{
    return run < last + 1 - t0 ? run : last + 1 - t0;
}

/* A block of nb consecutive query rows of G query heads that share one kv head:
 * row b of head g reads its query at q + b·ldq + g·hd, attends keys 0..last0 + b,
 * writes its probabilities to row b·G + g of p (ldp apart) and its output to
 * z + b·ldz + g·hd; kv_tmp (KB, hd) holds a sub-run of BF16 keys or values widened. */
typedef struct rows_block {
    const float *q;
    float *p, *z, *kv_tmp;
    size_t ldq, ldp, ldz;
    int last0, nb, G;
} rows_block;

static float *prob_row(const rows_block *B, int b, int g)
{
    return B->p + ((size_t)b * (size_t)B->G + (size_t)g) * B->ldp;
}

/* Block B against kv head kvh of cache layer j. Keys and values of a head are
 * contiguous within a cache block (head-major); each sub-run serves every row and
 * head before the next is read. Every score is the path's attn_scores of its key,
 * and every output element adds its values in increasing key order (attn_mix,
 * sub-run after sub-run): the bits of one row of one head at a time (attend.c). */
static void attend_rows(const kernel_isa *isa, const strata_cache *c, int j, int kvh, const rows_block *B,
                        float scale)
{
    int hd = c->model->cfg.info.head_dim, end = B->last0 + B->nb;
    for (int t0 = 0, run; t0 < end; t0 += run) {
        run = kv_run(t0, end);
        const float *k = kv_rows(isa, c, j, 0, kvh, t0, run, B->kv_tmp);
        for (int b = first_row(t0, B->last0); b < B->nb; b++)
            for (int g = 0; g < B->G; g++)
                isa->attn_scores(prob_row(B, b, g) + t0, B->q + (size_t)b * B->ldq + (size_t)g * (size_t)hd, k,
                                 keys_of_row(t0, run, B->last0 + b), hd, scale);
    }
    for (int b = 0; b < B->nb; b++)
        for (int g = 0; g < B->G; g++) {
            isa->softmax(prob_row(B, b, g), B->last0 + b + 1);
            memset(B->z + (size_t)b * B->ldz + (size_t)g * (size_t)hd, 0, sizeof(float) * (size_t)hd);
        }
    for (int t0 = 0, run; t0 < end; t0 += run) {
        run = kv_run(t0, end);
        const float *v = kv_rows(isa, c, j, 1, kvh, t0, run, B->kv_tmp);
        for (int b = first_row(t0, B->last0); b < B->nb; b++)
            for (int g = 0; g < B->G; g++)
                isa->attn_mix(B->z + (size_t)b * B->ldz + (size_t)g * (size_t)hd, prob_row(B, b, g) + t0, v,
                              keys_of_row(t0, run, B->last0 + b), hd);
    }
}

/* The step's work units — a sequence and G query heads of one kv group — taken by
 * the threads by work stealing (exec_span_next); each thread has its own rows of
 * scores. */
typedef struct attn_job {
    step *s;
    int li, G;              /* G query heads per unit */
    const float *q;         /* (R, nh, hd) */
    float *z;               /* (R, nh, hd) */
    float **pattern;        /* (n_seqs) capture slot (nh, rows, keys) or NULL */
    size_t *pattern_stride; /* (n_seqs) floats between heads in the slot */
    float *scores;          /* (n_threads, QB · G, score_stride) */
    size_t score_stride;
    float *kv_tmp;          /* (n_threads, KB, hd) */
} attn_job;

/* Query heads per unit: a whole kv group, so its K and V are read once for all of
 * its heads, unless that leaves a thread without a unit; then the largest divisor
 * of the group that does not. */
static int heads_per_unit(const strata_model_info *m, int n_seqs, int n_threads)
{
    int group = m->attn_heads / m->kv_heads, G = group;
    while (G > 1 && (long long)n_seqs * (m->attn_heads / G) < n_threads)
        do
            G--;
        while (group % G);
    return G;
}

/* The probabilities of block B's rows (positions t0 .. t0 + nb - 1 of the step's
 * n) for heads h0 .. h0 + G - 1 into the sequence's capture slot. */
static void keep_pattern(const attn_job *J, int q_idx, int h0, const rows_block *B, int t0, int n)
{
    float *pattern = J->pattern[q_idx];         // (nh, rows, keys), heads pattern_stride[q_idx] apart
    int keys = B->last0 - t0 + n;
    for (int b = 0, t = t0; pattern && b < B->nb; b++, t++)
        for (int g = 0; g < B->G; g++) {
            float *row = pattern + (size_t)(h0 + g) * J->pattern_stride[q_idx] + (size_t)t * (size_t)keys;
            memcpy(row, prob_row(B, b, g), sizeof(float) * (size_t)(B->last0 + b + 1));
            memset(row + B->last0 + b + 1, 0, sizeof(float) * (size_t)(n - t - 1));
        }
}

static void attend_unit(const attn_job *J, int q_idx, int h0, float *scores, float *kv_tmp)
{
    const step *s = J->s;
    const strata_model_info *m = &s->model->cfg.info;
    strata_cache *c = s->seqs[q_idx].cache;
    int j = s->model->layers[J->li].state_index, r0 = s->off[q_idx], n = s->off[q_idx + 1] - r0, p0 = c->n_tokens;
    size_t hd = (size_t)m->head_dim, qw = (size_t)m->attn_heads * hd;
    float scale = 1.0f / sqrtf((float)m->head_dim);
    for (int t0 = 0; t0 < n; t0 += QB) {
        size_t at = (size_t)(r0 + t0) * qw + (size_t)h0 * hd;
        rows_block B = {.q = J->q + at, .p = scores, .z = J->z + at, .kv_tmp = kv_tmp, .ldq = qw,
                        .ldp = J->score_stride, .ldz = qw, .last0 = p0 + t0, .nb = n - t0 < QB ? n - t0 : QB,
                        .G = J->G};
        attend_rows(s->ex->isa, c, j, h0 / (m->attn_heads / m->kv_heads), &B, scale);
        keep_pattern(J, q_idx, h0, &B, t0, n);
    }
}

static void attend_thread(void *arg, int ti, int nt)
{
    const attn_job *J = arg;
    const strata_model_info *m = &J->s->model->cfg.info;
    int units = m->attn_heads / J->G, lo, hi, after;
    float *scores = J->scores + (size_t)ti * QB * (size_t)J->G * J->score_stride;
    float *kv_tmp = J->kv_tmp + (size_t)ti * KB * (size_t)m->head_dim;
    while (exec_span_next(J->s->ex, ti, nt, 1, &lo, &hi, &after))
        for (int i = lo; i < hi; i++)
            attend_unit(J, i / units, i % units * J->G, scores, kv_tmp);
}

void attention_forward(step *s, int li, const float *h, float *out)
{
    const strata_model_info *m = &s->model->cfg.info;
    const layer *l = &s->model->layers[li];
    const attn_weights *w = &l->attn;
    size_t R = (size_t)s->R, qw = (size_t)m->attn_heads * (size_t)m->head_dim,
           kvw = (size_t)m->kv_heads * (size_t)m->head_dim;
    int max_keys = 0;
    for (int q = 0; q < s->n_seqs; q++) {
        int keys = s->seqs[q].cache->n_tokens + s->off[q + 1] - s->off[q];
        max_keys = keys > max_keys ? keys : max_keys;
    }
    float *q = step_alloc(s, R * qw);           // (R, nh, hd)
    float *k = step_alloc(s, R * kvw);          // (R, nkv, hd)
    float *v = step_alloc(s, R * kvw);          // (R, nkv, hd)
    float *z = step_alloc(s, R * qw);           // (R, nh, hd)
    size_t score_stride = ((size_t)max_keys + 16) & ~(size_t)15;
    int G = heads_per_unit(m, s->n_seqs, s->ex->n_threads);
    float *scores = step_alloc(s, (size_t)s->ex->n_threads * QB * (size_t)G * score_stride); // (threads, QB·G, keys)
    float *kv_tmp = step_alloc(s, (size_t)s->ex->n_threads * KB * (size_t)m->head_dim);   // (threads, KB, hd)
    float **pattern = (float **)step_alloc(s, 2 * (size_t)s->n_seqs);      // (n_seqs) capture slots
    size_t *pattern_stride = (size_t *)step_alloc(s, 2 * (size_t)s->n_seqs); // (n_seqs)

    matmul(q, h, s->R, &w->q, s->ex);
    matmul(k, h, s->R, &w->k, s->ex);
    matmul(v, h, s->R, &w->v, s->ex);
    hook_rows(s, HOOK_Q, li, q);
    hook_rows(s, HOOK_K, li, k);
    hook_rows(s, HOOK_V, li, v);
    for (int i = 0; i < s->n_seqs; i++) {
        strata_seq *seq = &s->seqs[i];
        int r0 = s->off[i], n = s->off[i + 1] - r0, pe = seq->capture ? capture_entry(seq->capture, HOOK_PATTERN, li) : -1;
        append_kv(seq->cache, l->state_index, k + (size_t)r0 * kvw, v + (size_t)r0 * kvw, n, seq->cache->n_tokens);
        pattern[i] = pe >= 0 ? capture_pattern_slot(seq->capture, pe, n, seq->cache->n_tokens + n, &pattern_stride[i])
                             : NULL;
    }
    attn_job job = {.s = s, .li = li, .G = G, .q = q, .z = z, .pattern = pattern, .pattern_stride = pattern_stride,
                    .scores = scores, .score_stride = score_stride, .kv_tmp = kv_tmp};
    exec_spans_reset(s->ex, s->n_seqs * (m->attn_heads / G), s->ex->n_threads);
    exec_parallel(s->ex, attend_thread, &job);
    hook_rows(s, HOOK_Z, li, z);
    matmul(out, z, s->R, &w->o, s->ex);
}
