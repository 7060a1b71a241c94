/*
 * attention.c — the `*` layer: grouped-query self-attention with NO positional
 * encoding (Nemotron-H is NoPE), scale head_dim^-0.5, causal over the sequence's
 * whole history in the cache:
 *
 *   q = h·W_qᵀ (nh heads), k = h·W_kᵀ, v = h·W_vᵀ (nkv heads) ; K, V = cache ++ k, v
 *   z[t, j] = Σ_τ≤pos(t) softmax_τ(q[t,j]·K[τ, j/(nh/nkv)] / √hd) · V[τ, ...]
 *   out = z · W_oᵀ
 */
#include <float.h>
#include <string.h>

#include "forward.h"

/* Query rows attended together, and the keys of one sub-run: QB rows share each
 * sub-run of KB keys (16 KiB of K or V rows at head_dim 128) while it sits in L1,
 * instead of each row streaming the whole history from L3 (a 4096-token prompt
 * read 2 MiB of K and 2 MiB of V per row and head). */
#define QB 8
#define KB 32

size_t attention_scratch(const strata_model *model, int R, int max_keys, int n_threads)
{
    const strata_model_info *m = &model->cfg.info;
    size_t q = (size_t)m->attn_heads * (size_t)m->head_dim, kv = (size_t)m->kv_heads * (size_t)m->head_dim;
    return (size_t)R * (2 * q + 2 * kv + 4) + (size_t)n_threads * QB * ((size_t)max_keys + 16) + 128;
}

/* Append the sequence's new keys/values (n rows) at positions p0.. of its cache. */
static void append_kv(strata_cache *c, int j, const float *k, const float *v, int n, int p0)
{
    const strata_model_info *m = &c->model->cfg.info;
    size_t hd = (size_t)m->head_dim, kvw = (size_t)m->kv_heads * hd;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < m->kv_heads; h++) {
            memcpy(cache_k(c, j, h, p0 + t), k + (size_t)t * kvw + (size_t)h * hd, sizeof(float) * hd);
            memcpy(cache_v(c, j, h, p0 + t), v + (size_t)t * kvw + (size_t)h * hd, sizeof(float) * hd);
        }
}

/* Keys (or values) from position t0 on that one cache block holds contiguously
 * (rows hd apart), up to end: a sub-run of at most KB. */
static int kv_run(int t0, int end)
{
    int in_block = KV_BLOCK - t0 % KV_BLOCK, run = in_block < end - t0 ? in_block : end - t0;
    return run < KB ? run : KB;
}

/* p[0..n) ← softmax(p[0..n)) */
static void softmax(float *p, int n)
{
    float mx = -FLT_MAX, sum = 0.0f;
    for (int tau = 0; tau < n; tau++)
        mx = p[tau] > mx ? p[tau] : mx;
    for (int tau = 0; tau < n; tau++)
        sum += (p[tau] = expf(p[tau] - mx));
    for (int tau = 0; tau < n; tau++)
        p[tau] /= sum;
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

/* nb consecutive query rows of one head: row b (q + b·ldq) attends keys
 * 0..last0 + b, its probabilities to p + b·ldp, its output to z + b·ldz. Keys and
 * values of a head are contiguous within a cache block (head-major); each sub-run
 * serves every row before the next is read. Every score is the path's attn_scores
 * of its key, and every output element adds its values in increasing key order
 * (attn_mix, sub-run after sub-run): the bits of one row at a time (attend.c). */
static void attend_rows(const kernel_isa *isa, const strata_cache *c, int j, int kvh, const float *q, size_t ldq,
                        int last0, int nb, float scale, float *p, size_t ldp, float *z, size_t ldz)
{
    int hd = c->model->cfg.info.head_dim, end = last0 + nb;
    for (int t0 = 0, run; t0 < end; t0 += run) {
        run = kv_run(t0, end);
        for (int b = first_row(t0, last0); b < nb; b++)
            isa->attn_scores(p + (size_t)b * ldp + t0, q + (size_t)b * ldq, cache_k(c, j, kvh, t0),
                             keys_of_row(t0, run, last0 + b), hd, scale);
    }
    for (int b = 0; b < nb; b++) {
        softmax(p + (size_t)b * ldp, last0 + b + 1);
        memset(z + (size_t)b * ldz, 0, sizeof(float) * (size_t)hd);
    }
    for (int t0 = 0, run; t0 < end; t0 += run) {
        run = kv_run(t0, end);
        for (int b = first_row(t0, last0); b < nb; b++)
            isa->attn_mix(z + (size_t)b * ldz, p + (size_t)b * ldp + t0, cache_v(c, j, kvh, t0),
                          keys_of_row(t0, run, last0 + b), hd);
    }
}

/* The (sequence, query head) pairs of a step, taken by the threads by work
 * stealing (exec_span_next); each thread has its own row of scores. */
typedef struct attn_job {
    step *s;
    int li;
    const float *q;         /* (R, nh, hd) */
    float *z;               /* (R, nh, hd) */
    float **pattern;        /* (n_seqs) capture slot (nh, rows, keys) or NULL */
    size_t *pattern_stride; /* (n_seqs) floats between heads in the slot */
    float *scores;          /* (n_threads, QB, score_stride) */
    size_t score_stride;
} attn_job;

static void attend_pair(const attn_job *J, int q_idx, int h, float *scores)
{
    const step *s = J->s;
    const strata_model_info *m = &s->model->cfg.info;
    strata_cache *c = s->seqs[q_idx].cache;
    int j = s->model->layers[J->li].state_index, r0 = s->off[q_idx], n = s->off[q_idx + 1] - r0, p0 = c->n_tokens;
    int keys = p0 + n, group = m->attn_heads / m->kv_heads;
    size_t hd = (size_t)m->head_dim, qw = (size_t)m->attn_heads * hd;
    float scale = 1.0f / sqrtf((float)m->head_dim);
    float *pattern = J->pattern[q_idx];         // (nh, rows, keys), heads pattern_stride[q_idx] apart
    for (int t0 = 0; t0 < n; t0 += QB) {
        int nb = n - t0 < QB ? n - t0 : QB;
        size_t at = (size_t)(r0 + t0) * qw + (size_t)h * hd;
        attend_rows(s->ex->isa, c, j, h / group, J->q + at, qw, p0 + t0, nb, scale, scores, J->score_stride,
                    J->z + at, qw);
        for (int b = 0, t = t0; pattern && b < nb; b++, t++) {
            float *row = pattern + (size_t)h * J->pattern_stride[q_idx] + (size_t)t * (size_t)keys;
            memcpy(row, scores + (size_t)b * J->score_stride, sizeof(float) * (size_t)(p0 + t + 1));
            memset(row + p0 + t + 1, 0, sizeof(float) * (size_t)(n - t - 1));
        }
    }
}

static void attend_thread(void *arg, int ti, int nt)
{
    const attn_job *J = arg;
    int nh = J->s->model->cfg.info.attn_heads, lo, hi, after;
    while (exec_span_next(J->s->ex, ti, nt, 1, &lo, &hi, &after))
        for (int i = lo; i < hi; i++)
            attend_pair(J, i / nh, i % nh, J->scores + (size_t)ti * QB * J->score_stride);
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
    float *scores = step_alloc(s, (size_t)s->ex->n_threads * QB * score_stride); // (threads, QB, keys)
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
    attn_job job = {.s = s, .li = li, .q = q, .z = z, .pattern = pattern, .pattern_stride = pattern_stride,
                    .scores = scores, .score_stride = score_stride};
    exec_spans_reset(s->ex, s->n_seqs * m->attn_heads, s->ex->n_threads);
    exec_parallel(s->ex, attend_thread, &job);
    hook_rows(s, HOOK_Z, li, z);
    matmul(out, z, s->R, &w->o, s->ex);
}
