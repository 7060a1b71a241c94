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
    float *work;            /* (vocab) adjusted logits */
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

/* log Σ exp(v) over n values, stably: fp32 exponentials (each term <= 1) summed in
 * 8 partial sums, so a 131072-entry vocabulary costs well under a millisecond. */
static double log_sum_exp(const float *v, int n)
{
    float mx = -FLT_MAX;
    for (int i = 0; i < n; i++)
        mx = v[i] > mx ? v[i] : mx;
    float part[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            part[k] += expf(v[i + k] - mx);
    double sum = 0;
    for (int k = 0; k < 8; k++)
        sum += part[k];
    for (; i < n; i++)
        sum += expf(v[i] - mx);
    return mx + log(sum);
}

float strata_logprob_of(const float *logits, int vocab, int32_t id)
{
    return (float)((double)logits[id] - log_sum_exp(logits, vocab));
}

static void adjust(strata_sampler *s, const float *logits)
{
    const strata_sampling *p = &s->p;
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
}

static int by_value_desc(const void *a, const void *b, void *keys)
{
    const float *k = keys;
    float x = k[*(const int32_t *)a], y = k[*(const int32_t *)b];
    if (x != y)
        return x < y ? 1 : -1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

static int argmax_of(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* Draw from the tempered, truncated distribution of s->work. Tokens more than
 * e^-40 below the best cannot matter in fp32 and are not sorted. */
static int32_t draw(strata_sampler *s)
{
    const strata_sampling *p = &s->p;
    float mx = -FLT_MAX;
    for (int v = 0; v < s->vocab; v++) {
        s->work[v] /= p->temperature;
        mx = s->work[v] > mx ? s->work[v] : mx;
    }
    int n = 0;
    for (int v = 0; v < s->vocab; v++)
        if (s->work[v] >= mx - 40.0f)
            s->order[n++] = v;
    qsort_r(s->order, (size_t)n, sizeof *s->order, by_value_desc, s->work);
    int keep = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    double total = 0;
    for (int i = 0; i < keep; i++)
        total += exp((double)s->work[s->order[i]] - mx);
    /* top_p over the top_k survivors; min_p relative to the best token */
    double cum = 0;
    int cut = keep;
    for (int i = 0; i < keep; i++) {
        double rel = exp((double)s->work[s->order[i]] - mx);
        if (i > 0 && rel < p->min_p) {
            cut = i;
            break;
        }
        cum += rel / total;
        if (cum >= p->top_p) {
            cut = i + 1;
            break;
        }
    }
    double mass = 0;
    for (int i = 0; i < cut; i++)
        mass += exp((double)s->work[s->order[i]] - mx);
    double r = (double)next_unit(s->rng) * mass;
    for (int i = 0; i < cut; i++) {
        r -= exp((double)s->work[s->order[i]] - mx);
        if (r < 0)
            return s->order[i];
    }
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
    adjust(s, logits);
    out->token = s->p.temperature == 0.0f ? argmax_of(s->work, s->vocab) : draw(s);
    out->logprob = 0.0f;
    out->n_top = 0;
    if (s->p.skip_logprob && s->p.top_logprobs == 0)
        return STRATA_OK;
    double lse = log_sum_exp(logits, s->vocab);
    out->logprob = (float)((double)logits[out->token] - lse);
    if (s->p.top_logprobs > 0)
        fill_top(s, logits, lse, out);
    return STRATA_OK;
}
