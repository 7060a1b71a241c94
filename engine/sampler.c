/*
 * sampler.c — choosing the next token from logits: logit bias, penalties,
 * temperature, top-k, top-p, min-p, a seeded random stream, and the log
 * probabilities OpenAI clients ask for (of the model's raw distribution).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "strata.h"

struct strata_sampler {
    strata_sampling p;
    int vocab;
    int32_t *bias_ids;
    float *bias_values;
    uint32_t *generated;    /* (vocab) times generated */
    uint8_t *seen;          /* (vocab) in prompt or output */
    float *work;            /* (vocab) adjusted logits, then the weights draw() picks from */
    int32_t *order;         /* (vocab) candidate ids */
    uint64_t rng[4];        /* xoshiro256** state */
};

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
    free(s->order);
    free(s);
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
    s->order = malloc(v * sizeof *s->order);
    if (!s->bias_ids || !s->bias_values || !s->generated || !s->seen || !s->work || !s->order) {
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
}

/* e^x for x <= 0, 16 lanes at a time (GCC vector extensions; the clones below pick
 * the widest ISA). Cody-Waite reduction x = n·ln2 + r, |r| <= ln2/2, then a
 * degree-6 Taylor polynomial: relative error under 3e-7, close to expf's. Below -87
 * it gives ~2^-126 instead of a denormal: the terms are summed next to a term of 1.
 * In place (a vector argument by value would change the ABI between the clones). */
typedef float vec16 __attribute__((vector_size(64)));
typedef int32_t ivec16 __attribute__((vector_size(64)));

static inline __attribute__((always_inline)) void exp_nonpositive(vec16 *v)
{
    vec16 x = *v;
    const vec16 lo = x - x - 87.0f;
    ivec16 below = x < lo;
    x = (vec16)(((ivec16)x & ~below) | ((ivec16)lo & below));
    vec16 n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round(x / ln2) */
    vec16 r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    vec16 p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    *v = (vec16)((ivec16)p + __builtin_convertvector(n, ivec16) * (1 << 23));
}

/* Σ e^(v[i] - mx) over n values (each term <= 1) in 16 fp32 partial sums; with
 * `out`, each term is also stored. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static double sum_exp(const float *v, int n, float mx, float *out)
{
    vec16 part = {0}, x;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        memcpy(&x, v + i, sizeof x);
        vec16 e = x - mx;
        exp_nonpositive(&e);
        part += e;
        if (out)
            memcpy(out + i, &e, sizeof e);
    }
    double sum = 0;
    for (int k = 0; k < 16; k++)
        sum += part[k];
    if (i < n) {                                /* the tail, padded with e^-87 terms dropped */
        vec16 t = {0}, e;
        memcpy(&t, v + i, sizeof(float) * (size_t)(n - i));
        e = t - mx;
        exp_nonpositive(&e);
        for (int k = 0; k < n - i; k++) {
            sum += e[k];
            if (out)
                out[i + k] = e[k];
        }
    }
    return sum;
}

/* The largest of n values (NaNs never win), 16 lanes at a time. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static float max_of(const float *v, int n)
{
    vec16 m, x;
    for (int k = 0; k < 16; k++)
        m[k] = -FLT_MAX;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        memcpy(&x, v + i, sizeof x);
        ivec16 gt = x > m;
        m = (vec16)(((ivec16)x & gt) | ((ivec16)m & ~gt));
    }
    float mx = -FLT_MAX;
    for (int k = 0; k < 16; k++)
        mx = m[k] > mx ? m[k] : mx;
    for (; i < n; i++)
        mx = v[i] > mx ? v[i] : mx;
    return mx;
}

/* log Σ exp(v) over n values whose maximum is mx, stably (131072 values: about 30 µs
 * with AVX-512). */
static double log_sum_exp(const float *v, int n, float mx)
{
    return mx + log(sum_exp(v, n, mx, NULL));
}

float strata_logprob_of(const float *logits, int vocab, int32_t id)
{
    return (float)((double)logits[id] - log_sum_exp(logits, vocab, max_of(logits, vocab)));
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

static int by_value_desc(const void *a, const void *b, void *keys)
{
    const float *k = keys;
    float x = k[*(const int32_t *)a], y = k[*(const int32_t *)b];
    if (x != y)
        return x < y ? 1 : -1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

/* The first id of the largest value (0 when there is none). */
static int argmax_of(const float *v, int n)
{
    float mx = max_of(v, n);
    for (int i = 0; i < n; i++)
        if (v[i] == mx)
            return i;
    return 0;
}

/* The ids of the n largest-weight tokens top_k / top_p / min_p can reach, sorted by
 * weight (descending, ties by id). Rather than sorting the vocabulary, candidates
 * are taken above a falling threshold until the set provably holds the cut: the
 * top k when top_k is set, else top_p of the mass, else everything above min_p. */
static int candidates(strata_sampler *s, const float *e, double total)
{
    const strata_sampling *p = &s->p;
    static const float floor_of[] = {1.3533528e-01f /* e^-2 */, 1.8315639e-02f, 3.3546263e-04f, 1.1253517e-07f,
                                     4.2483541e-18f /* e^-40 */, 0.0f};
    int n = 0;
    for (size_t f = 0; f < sizeof floor_of / sizeof *floor_of; f++) {
        float t = floor_of[f] > p->min_p ? floor_of[f] : p->min_p;
        double mass = 0;
        n = 0;
        for (int v = 0; v < s->vocab; v++)
            if (e[v] >= t) {
                s->order[n++] = v;
                mass += e[v];
            }
        int enough = p->top_k > 0 ? n >= p->top_k : mass >= (double)p->top_p * total;
        if (enough || t <= p->min_p || t == 0.0f)
            break;
    }
    qsort_r(s->order, (size_t)n, sizeof *s->order, by_value_desc, (void *)e);
    return n;
}

/* Draw from the tempered, truncated distribution of `logits`: weights
 * e_v = exp((l_v - max) / T) in s->work; top_k, then top_p over the survivors, then
 * min_p relative to the best token. Without truncation, a walk in id order. */
static int32_t draw(strata_sampler *s, const float *logits)
{
    const strata_sampling *p = &s->p;
    float *e = s->work;
    for (int v = 0; v < s->vocab; v++)
        e[v] = logits[v] / p->temperature;
    float mx = max_of(e, s->vocab);
    double total = sum_exp(e, s->vocab, mx, e);
    double r = (double)next_unit(s->rng);
    if (p->top_k == 0 && p->top_p >= 1.0f && p->min_p == 0.0f) {
        r *= total;
        for (int v = 0; v < s->vocab; v++)
            if ((r -= e[v]) < 0)
                return v;
        return argmax_of(e, s->vocab);
    }
    int n = candidates(s, e, total);
    int keep = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    if (p->top_k > 0) {
        total = 0;
        for (int i = 0; i < keep; i++)
            total += e[s->order[i]];
    }
    double cum = 0, mass = 0;
    int cut = keep;
    for (int i = 0; i < keep; i++) {
        double rel = e[s->order[i]];
        if (i > 0 && rel < p->min_p) {
            cut = i;
            break;
        }
        mass += rel;
        cum += rel / total;
        if (cum >= p->top_p) {
            cut = i + 1;
            break;
        }
    }
    r *= mass;
    for (int i = 0; i < cut; i++)
        if ((r -= e[s->order[i]]) < 0)
            return s->order[i];
    return s->order[cut - 1];
}

/* The top alternatives by raw log probability. */
static void fill_top(strata_sampler *s, const float *logits, double lse, strata_sample *out)
{
    int k = s->p.top_logprobs;
    out->n_top = 0;
    for (int v = 0; v < s->vocab; v++) {
        float lp = (float)((double)logits[v] - lse);
        int pos = out->n_top < k ? out->n_top++ : k;
        if (pos == k && (k == 0 || lp <= out->top[k - 1].logprob))
            continue;
        if (pos == k)
            pos = k - 1;
        while (pos > 0 && out->top[pos - 1].logprob < lp) {
            out->top[pos] = out->top[pos - 1];
            pos--;
        }
        out->top[pos] = (strata_token_logprob){.id = v, .logprob = lp};
    }
}

strata_status strata_sampler_sample(strata_sampler *s, const float *logits, strata_sample *out, strata_error *err)
{
    if (!s || !logits || !out)
        return strata_fail(err, STRATA_E_INVALID, "sampler: missing argument");
    const float *adjusted = adjust(s, logits);
    out->token = s->p.temperature == 0.0f ? argmax_of(adjusted, s->vocab) : draw(s, adjusted);
    out->logprob = 0.0f;
    out->n_top = 0;
    if (s->p.skip_logprob && s->p.top_logprobs == 0)
        return STRATA_OK;
    /* greedy on unadjusted logits already found their maximum */
    float mx = adjusted == logits && s->p.temperature == 0.0f ? logits[out->token] : max_of(logits, s->vocab);
    double lse = log_sum_exp(logits, s->vocab, mx);
    out->logprob = (float)((double)logits[out->token] - lse);
    if (s->p.top_logprobs > 0)
        fill_top(s, logits, lse, out);
    return STRATA_OK;
}
