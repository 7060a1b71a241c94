/*
 * sampler.c — choosing the next token from logits: logit bias, penalties,
 * temperature, top-k, top-p, min-p, a seeded random stream, and the log
 * probabilities OpenAI clients ask for (of the model's raw distribution).
 *
 * Cost: a few vector passes over the vocabulary per token, whatever the
 * distribution (bench/sampler.c); the passes are the kernel path's (kernels/vocab.h),
 * chosen when the sampler is made. The truncations never sort it: top_k up to
 * TOP_K_HEAP keeps the k best logits in a heap; otherwise a one-pass threshold
 * search keeps the candidates that can matter, and rank.c finds the cuts and the
 * draw among them (a flat 131072-token vocabulary with top_p used to take 10–20 ms
 * a token in qsort).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "constraint/internal.h"
#include "core/error.h"
#include "kernels/isa.h"
#include "kernels/vocab.h"
#include "rank.h"
#include "strata.h"

typedef struct scored {
    float logit;
    int32_t id;
} scored;

struct strata_sampler {
    strata_sampling p;
    int vocab;
    int32_t *bias_ids;
    float *bias_values;
    uint32_t *generated;    /* (vocab) times generated */
    uint8_t *seen;          /* (vocab) in prompt or output */
    float *work;            /* (vocab) adjusted logits, then the weights draw() picks from */
    const vocab_kernels *vk; /* the passes over the vocabulary, of the kernel path */
    double *block_mass;     /* (vocab / VOCAB_BLOCK + 1) the weights' sums per block of ids */
    rank_set rank;          /* the candidates grouped by weight (zero when unused) */
    scored *best;           /* (top_k) when top_k <= TOP_K_HEAP */
    double drawn_lse;       /* log Σ exp of the logits draw() was given (NAN: not known) */
    cons_cursor *cursor;    /* where the constrained output stands (NULL: no constraint) */
    float *masked;          /* (vocab) the adjusted logits, -inf where the constraint says no */
    uint64_t rng[4];        /* xoshiro256** state */
};

#define TOP_K_HEAP 1024     /* top_k up to this: a heap over the logits, no pass of exp */


void strata_sampling_default(strata_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->temperature = 1.0f;
    s->top_p = 1.0f;
    s->repetition_penalty = 1.0f;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_u64(uint64_t *s)
{
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 24 bits, as fp32 arithmetic uses. */
static float next_unit(uint64_t *s)
{
    return (float)(next_u64(s) >> 40) * (1.0f / 16777216.0f);
}

void strata_sampler_free(strata_sampler *s)
{
    if (!s)
        return;
    free(s->bias_ids);
    free(s->bias_values);
    free(s->generated);
    free(s->seen);
    free(s->work);
    free(s->block_mass);
    rank_set_free(&s->rank);
    free(s->best);
    cons_cursor_free(s->cursor);
    free(s->masked);
    free(s);
}

static int truncates(const strata_sampling *p)
{
    return p->top_k > 0 || p->top_p < 1.0f || p->min_p > 0.0f;
}

static strata_status check_params(const strata_sampling *p, int vocab, strata_error *err)
{
    if (!(p->temperature >= 0 && p->temperature <= 100))
        return strata_fail(err, STRATA_E_INVALID, "temperature must be in [0, 100]");
    if (!(p->top_p > 0 && p->top_p <= 1))
        return strata_fail(err, STRATA_E_INVALID, "top_p must be in (0, 1]");
    if (p->top_k < 0 || !(p->min_p >= 0 && p->min_p <= 1))
        return strata_fail(err, STRATA_E_INVALID, "top_k must be >= 0 and min_p in [0, 1]");
    if (!(p->repetition_penalty > 0 && p->repetition_penalty <= 100) || !isfinite(p->presence_penalty) ||
        !isfinite(p->frequency_penalty))
        return strata_fail(err, STRATA_E_INVALID, "penalties must be finite (repetition_penalty > 0)");
    if (p->top_logprobs < 0 || p->top_logprobs > STRATA_MAX_TOP_LOGPROBS)
        return strata_fail(err, STRATA_E_INVALID, "top_logprobs must be in [0, %d]", STRATA_MAX_TOP_LOGPROBS);
    if (p->constraint && p->constraint->vocab->n != vocab)
        return strata_fail(err, STRATA_E_INVALID, "constraint: built for %d tokens, the model has %d",
                           p->constraint->vocab->n, vocab);
    if (p->n_bias < 0 || (p->n_bias > 0 && (!p->bias_ids || !p->bias_values)))
        return strata_fail(err, STRATA_E_INVALID, "logit_bias arrays missing");
    for (int i = 0; i < p->n_bias; i++)
        if (p->bias_ids[i] < 0 || p->bias_ids[i] >= vocab || !isfinite(p->bias_values[i]))
            return strata_fail(err, STRATA_E_INVALID, "logit_bias: token %d is outside [0, %d) or its bias is "
                               "not finite", p->bias_ids[i], vocab);
    return STRATA_OK;
}

strata_status strata_sampler_new(const strata_sampling *params, int vocab, strata_sampler **out,
                                 strata_error *err)
{
    *out = NULL;
    if (!params || vocab <= 0)
        return strata_fail(err, STRATA_E_INVALID, "sampler: no parameters or empty vocabulary");
    STRATA_TRY(check_params(params, vocab, err));
    strata_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    s->p = *params;
    s->vocab = vocab;
    size_t nb = (size_t)params->n_bias + 1, v = (size_t)vocab;
    s->bias_ids = malloc(nb * sizeof *s->bias_ids);
    s->bias_values = malloc(nb * sizeof *s->bias_values);
    s->generated = calloc(v, sizeof *s->generated);
    s->seen = calloc(v, 1);
    s->work = malloc(v * sizeof *s->work);
    s->block_mass = malloc((v / VOCAB_BLOCK + 1) * sizeof *s->block_mass);
    int heap = params->top_k > 0 && params->top_k <= TOP_K_HEAP;
    s->vk = kernel_select()->vocab;
    int ranked = !truncates(params) || heap || rank_set_init(&s->rank, vocab, s->vk); /* where draw() uses it */
    s->best = heap ? malloc((size_t)params->top_k * sizeof *s->best) : NULL;
    int constrained = !params->constraint || (cons_cursor_new(params->constraint, &s->cursor, NULL) == STRATA_OK &&
                                              (s->masked = malloc(v * sizeof *s->masked)));
    if (!s->bias_ids || !s->bias_values || !s->generated || !s->seen || !s->work ||
        !s->block_mass || !ranked || (heap && !s->best) || !constrained) {
        strata_sampler_free(s);
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    }
    if (params->n_bias) {
        memcpy(s->bias_ids, params->bias_ids, sizeof(int32_t) * (size_t)params->n_bias);
        memcpy(s->bias_values, params->bias_values, sizeof(float) * (size_t)params->n_bias);
    }
    s->p.bias_ids = s->bias_ids;
    s->p.bias_values = s->bias_values;
    uint64_t x = params->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return STRATA_OK;
}

void strata_sampler_accept(strata_sampler *s, int32_t token, int generated)
{
    if (token < 0 || token >= s->vocab)
        return;
    s->seen[token] = 1;
    if (generated && s->generated[token] < UINT32_MAX)
        s->generated[token]++;
    if (generated && s->cursor)
        cons_advance(s->cursor, token);
}

/* log Σ exp(v) over n values whose maximum is mx, stably (131072 values: about 30 µs
 * with AVX-512). */
static double log_sum_exp(const vocab_kernels *vk, const float *v, int n, float mx)
{
    return mx + log(vk->sum_exp(v, n, mx, 1.0f, NULL, NULL));
}

static int penalized(const strata_sampling *p)
{
    return p->n_bias || p->repetition_penalty != 1.0f || p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;
}

/* The logits after bias and penalties: `logits` itself when there are none. */
static const float *adjust(strata_sampler *s, const float *logits)
{
    const strata_sampling *p = &s->p;
    if (!penalized(p))
        return logits;
    memcpy(s->work, logits, sizeof(float) * (size_t)s->vocab);
    for (int i = 0; i < p->n_bias; i++)
        s->work[p->bias_ids[i]] += p->bias_values[i];
    for (int v = 0; v < s->vocab; v++) {
        float *w = &s->work[v];
        if (s->seen[v] && p->repetition_penalty != 1.0f)
            *w = *w > 0 ? *w / p->repetition_penalty : *w * p->repetition_penalty;
        if (s->generated[v])
            *w -= p->frequency_penalty * (float)s->generated[v] + p->presence_penalty;
    }
    return s->work;
}

/* The first id of the largest value (0 when there is none). */
static int argmax_of(const vocab_kernels *vk, const float *v, int n)
{
    int i = vk->first_equal(v, n, vk->max(v, n));
    return i < 0 ? 0 : i;
}

/* Thresholds the candidate search tries, highest first: e^-2, e^-4, e^-8, e^-16, e^-40
 * of the best token's weight, then everything. */
static const float FLOORS[VOCAB_FLOORS] = {1.3533528e-01f, 1.8315639e-02f, 3.3546263e-04f, 1.1253517e-07f, 4.2483541e-18f,
                               0.0f};

/* The lowest weight a token top_k / top_p / min_p can reach may have: the highest
 * threshold whose set provably holds the cut — the top k when top_k is set, else
 * top_p of the mass (with a margin over the fp32 sums' rounding), else everything
 * above min_p. *n: how many tokens reach it. */
static float candidates_floor(strata_sampler *s, const float *e, double total, int *n)
{
    const strata_sampling *p = &s->p;
    float t[VOCAB_FLOORS];
    int count[VOCAB_FLOORS];
    double mass[VOCAB_FLOORS];
    for (int f = 0; f < VOCAB_FLOORS; f++)
        t[f] = FLOORS[f] > p->min_p ? FLOORS[f] : p->min_p;
    s->vk->floor_stats(e, s->vocab, t, count, mass);
    int f = 0;
    for (; f + 1 < VOCAB_FLOORS; f++) {
        int enough = p->top_k > 0 ? count[f] >= p->top_k : mass[f] >= (double)p->top_p * total * (1 + 1e-5);
        if (enough || t[f] <= p->min_p)
            break;
    }
    *n = count[f];
    return t[f];
}

/* The first id at which the running sum of e passes x, walking whole blocks by
 * their sums (-1: rounding left x unreached). */
static int32_t walk(const float *e, int n, const double *block_mass, double x)
{
    for (int b0 = 0; b0 < n; b0 += VOCAB_BLOCK) {
        if (x >= block_mass[b0 / VOCAB_BLOCK]) {
            x -= block_mass[b0 / VOCAB_BLOCK];
            continue;
        }
        int b1 = n - b0 < VOCAB_BLOCK ? n : b0 + VOCAB_BLOCK;
        for (int v = b0; v < b1; v++)
            if ((x -= e[v]) < 0)
                return v;
    }
    return -1;
}

/* a ranks after b in the order by logit (descending, ties by id) */
static int ranks_after(scored a, scored b)
{
    return a.logit < b.logit || (a.logit == b.logit && a.id > b.id);
}

/* Restore the heap (the last-ranked at the root) below node i. */
static void sift_down(scored *h, int n, int i)
{
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && ranks_after(h[c + 1], h[c]))
            c++;
        if (!ranks_after(h[c], h[i]))
            return;
        scored t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

static int best_first(const void *a, const void *b)
{
    return ranks_after(*(const scored *)a, *(const scored *)b) ? 1 : -1;
}

/* The k best logits (NaNs never), best first, into best; how many (fewer than k
 * when the vocabulary has fewer that are not NaN). One pass: a heap holds the best
 * so far, and the vector pass next_above skips to the next logit that beats its
 * last. Scanning in id order, a logit equal to the last never beats it: ties go to
 * the lower id. */
static int best_k(const vocab_kernels *vk, const float *l, int n, int k, scored *best)
{
    int m = 0, v = 0;
    if (k <= 0)
        return 0;
    for (; v < n && m < k; v++)
        if (l[v] == l[v])
            best[m++] = (scored){l[v], v};
    for (int i = m / 2 - 1; i >= 0; i--)
        sift_down(best, m, i);
    while ((v = vk->next_above(l, v, n, best[0].logit)) < n) {
        best[0] = (scored){l[v], v};
        sift_down(best, m, 0);
        v++;
    }
    qsort(best, (size_t)m, sizeof *best, best_first);
    return m;
}

/* draw() when top_k is small: the top k by logit, their weights
 * e_i = exp((l_i - l_0) / T), then top_p of their mass, min_p relative to the
 * best, and the token where the running mass passes r times what is kept. */
static int32_t draw_top_k(strata_sampler *s, const float *logits, double r)
{
    const strata_sampling *p = &s->p;
    int n = best_k(s->vk, logits, s->vocab, p->top_k, s->best);
    if (n == 0 || isinf(s->best[0].logit))      /* all NaN; or +inf logits: the first of them */
        return n ? s->best[0].id : argmax_of(s->vk, logits, s->vocab);
    float *e = s->work;
    double total = 0;
    for (int i = 0; i < n; i++)
        total += e[i] = expf((s->best[i].logit - s->best[0].logit) / p->temperature);
    double cum = 0, mass = 0;
    int cut = n;
    for (int i = 0; i < n; i++) {
        if (i > 0 && e[i] < p->min_p) {
            cut = i;
            break;
        }
        mass += e[i];
        cum += e[i] / total;
        if (cum >= p->top_p) {
            cut = i + 1;
            break;
        }
    }
    r *= mass;
    for (int i = 0; i < cut; i++)
        if ((r -= e[i]) < 0)
            return s->best[i].id;
    return s->best[cut - 1].id;
}

/* Draw from the tempered, truncated distribution of `logits`: weights
 * e_v = exp((l_v - max) / T) in s->work; then in the order by weight (descending,
 * ties by id) the top_k first, top_p of their mass (of all the mass without
 * top_k), only those >= min_p (relative to the best token), and the token where the
 * running mass passes r times what is kept (top_k up to TOP_K_HEAP: draw_top_k,
 * over the k best logits alone). Without truncation, the walk is in id order. */
static int32_t draw(strata_sampler *s, const float *logits)
{
    const strata_sampling *p = &s->p;
    float *e = s->work;
    double r = (double)next_unit(s->rng);
    s->drawn_lse = NAN;
    if (s->best)
        return draw_top_k(s, logits, r);
    float mx = s->vk->max(logits, s->vocab);
    if (isinf(mx))                              /* +inf logits: the first of them */
        return argmax_of(s->vk, logits, s->vocab);
    double total = s->vk->sum_exp(logits, s->vocab, mx, 1.0f / p->temperature, e, s->block_mass);
    if (p->temperature == 1.0f)
        s->drawn_lse = mx + log(total);
    int32_t id;
    if (!truncates(p)) {
        id = walk(e, s->vocab, s->block_mass, r * total);
    } else {
        int n;
        rank_set_build(&s->rank, e, s->vocab, candidates_floor(s, e, total, &n));
        rank_pos cut, *kept = NULL;
        if (p->top_k > 0 && p->top_k < n) {
            cut = rank_find(&s->rank, NULL, RANK_COUNT, p->top_k, 0);
            kept = &cut;
        }
        if (p->top_p < 1.0f) {
            int of_kept = p->top_k > 0;
            cut = rank_find(&s->rank, kept, RANK_MASS_REACH,
                            of_kept ? p->top_p : p->top_p * total, of_kept);
            kept = &cut;
        }
        id = rank_find(&s->rank, kept, RANK_MASS_PASS, r, 1).id;
    }
    return id >= 0 ? id : argmax_of(s->vk, e, s->vocab);
}

/* The k top alternatives by raw log probability: the best logits (ties by id). */
static void fill_top(const vocab_kernels *vk, const float *logits, int vocab, int k, double lse, strata_sample *out)
{
    scored best[STRATA_MAX_TOP_LOGPROBS];
    out->n_top = best_k(vk, logits, vocab, k, best);
    for (int i = 0; i < out->n_top; i++)
        out->top[i] = (strata_token_logprob){.id = best[i].id, .logprob = (float)((double)best[i].logit - lse)};
}

static int32_t pick(strata_sampler *s, const float *adjusted)
{
    return s->p.temperature == 0.0f ? argmax_of(s->vk, adjusted, s->vocab) : draw(s, adjusted);
}

#define CONSTRAINED_TRIES 4  /* draws rejected before the whole vocabulary is masked */

/* pick() from the adjusted logits restricted to the tokens the constraint allows.
 * Without truncation, drawing, and on a rejected token masking it alone and drawing
 * again, is exactly a draw from the restricted distribution (and the masked argmax
 * is the restricted one): the model mostly follows the format, so the first draw
 * usually stands, and needs no copy of the logits. top_k / top_p / min_p must see
 * the restricted distribution whole, so they, and a run of rejections, mask every
 * token first (cons_mask: 0.2–0.5 ms over 131072 tokens). */
static strata_status pick_constrained(strata_sampler *s, const float *adjusted, int32_t *token, strata_error *err)
{
    float *m = s->masked;
    const float *from = adjusted;               /* m once a token is masked */
    for (int i = 0; !truncates(&s->p) && i < CONSTRAINED_TRIES; i++) {
        int32_t t = pick(s, from);
        if (cons_allows(s->cursor, t)) {
            *token = t;
            return STRATA_OK;
        }
        if (from == adjusted)
            memcpy(m, adjusted, sizeof(float) * (size_t)s->vocab);
        from = m;
        m[t] = -INFINITY;
    }
    if (from == adjusted)
        memcpy(m, adjusted, sizeof(float) * (size_t)s->vocab);
    if (cons_mask(s->cursor, m) == 0)
        return strata_fail(err, STRATA_E_UNSUPPORTED, "constraint: no token of the vocabulary can continue the "
                           "output");
    int32_t t = pick(s, m);
    *token = cons_allows(s->cursor, t) ? t : argmax_of(s->vk, m, s->vocab);  /* a draw's rounding: never a masked one */
    return STRATA_OK;
}

strata_status strata_sampler_sample(strata_sampler *s, const float *logits, strata_sample *out, strata_error *err)
{
    if (!s || !logits || !out)
        return strata_fail(err, STRATA_E_INVALID, "sampler: missing argument");
    const float *adjusted = adjust(s, logits);
    if (s->cursor) {
        STRATA_TRY(pick_constrained(s, adjusted, &out->token, err));
        s->drawn_lse = NAN;                     /* the draws summed masked terms */
    } else {
        out->token = pick(s, adjusted);
    }
    out->logprob = 0.0f;
    out->n_top = 0;
    if (s->p.skip_logprob && s->p.top_logprobs == 0)
        return STRATA_OK;
    double lse;
    int raw_argmax = adjusted == logits && s->p.temperature == 0.0f && !s->cursor;
    if (adjusted == logits && s->p.temperature == 1.0f && !isnan(s->drawn_lse))
        lse = s->drawn_lse;                     /* the draw summed these very terms */
    else                                        /* greedy on unadjusted logits found their maximum */
        lse = log_sum_exp(s->vk, logits, s->vocab, raw_argmax ? logits[out->token] : s->vk->max(logits, s->vocab));
    out->logprob = (float)((double)logits[out->token] - lse);
    if (s->p.top_logprobs > 0)
        fill_top(s->vk, logits, s->vocab, s->p.top_logprobs, lse, out);
    return STRATA_OK;
}

strata_status strata_logits_score(const float *logits, int vocab, int32_t id, int top, strata_sample *out,
                                  strata_error *err)
{
    if (!logits || !out || vocab <= 0)
        return strata_fail(err, STRATA_E_INVALID, "logits_score: missing argument");
    if (id < 0 || id >= vocab)
        return strata_fail(err, STRATA_E_INVALID, "logits_score: token %d is outside the vocabulary of %d", id, vocab);
    if (top < 0 || top > STRATA_MAX_TOP_LOGPROBS)
        return strata_fail(err, STRATA_E_INVALID, "logits_score: top must be 0..%d, not %d", STRATA_MAX_TOP_LOGPROBS,
                           top);
    const vocab_kernels *vk = kernel_select()->vocab;
    double lse = log_sum_exp(vk, logits, vocab, vk->max(logits, vocab));
    out->token = id;
    out->logprob = (float)((double)logits[id] - lse);
    fill_top(vk, logits, vocab, top, lse, out);
    return STRATA_OK;
}
