/*
 * scheduler.c — continuous batching. Requests wait in a bounded queue, are admitted
 * up to max_running, and advance together: every step carries one decode row per
 * running choice plus prefill chunks of admitted prompts within max_step_tokens.
 * Requests that arrive together sharing a prompt, or a long start of one, prefill it
 * once (shared prefills, below); a request whose cache already holds its whole
 * prompt starts from the logits it brings, stepless.
 *
 * Threads: submit / cancel / stop / get_stats take the mutex from any thread; the
 * run loop (one thread) owns every request's caches and samplers, and calls the
 * request callbacks. Other threads touch only the queue, the `cancelled` flags and
 * the stats; the run loop reads flags and changes list links only under the mutex.
 * A request is freed only by the run loop, after on_done.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "core/error.h"

typedef struct choice {
    strata_cache *cache;
    strata_sampler *sampler;
    int32_t last;               /* the token to feed next */
    int n_generated;
    int finished;
} choice;

typedef struct request {
    uint64_t id;
    strata_request r;           /* prompt / stop_ids point at the copies below */
    int32_t *prompt, *history, *stop_ids;
    float *prompt_logits;       /* n_prompt = 0: the given logits after the cached prompt */
    int *checkpoint_at;
    uint64_t base_bytes;        /* state the given cache held before this request */
    int32_t *bias_ids;
    float *bias_values;
    int prefilled;              /* prompt tokens in choice 0's cache */
    int share_stop;             /* where this step's chunk stops for a follower (0: none) */
    int started;                /* the choices have drawn their first tokens */
    int admitted;
    int cancelled;              /* set under the mutex */
    int n_finished;
    choice ch[STRATA_MAX_CHOICES];
    struct request *next;
} request;

struct strata_scheduler {
    const strata_model *model;
    strata_scheduler_limits lim;
    strata_runner *runner;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    request *queue;             /* submitted, not admitted (shared: under mu) */
    request *running;           /* admitted; links change only in gather, under mu */
    int n_queued, n_running;
    int stopping;
    uint64_t next_id;
    strata_scheduler_stats stats;
    /* step buffers, owned by the run loop */
    strata_seq *seqs;
    request **seq_req;
    int *seq_choice;            /* -1: a prefill chunk */
    strata_sampler **row_sampler; /* the decode rows' samplers, logits and samples */
    const float **row_logits;
    strata_sample *row_sample;
    strata_sample *scores;      /* (scores_cap) a prefill chunk's prompt tokens scored */
    int scores_cap;
    float *logits;
    size_t logits_cap;
    int seq_cap;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

strata_status strata_scheduler_new(const strata_model *model, const strata_scheduler_limits *limits,
                                   strata_scheduler **out, strata_error *err)
{
    *out = NULL;
    if (!model || !limits || limits->max_running < 1 || limits->max_queued < 0 || limits->max_step_tokens < 1 ||
        limits->max_context < 1)
        return strata_fail(err, STRATA_E_INVALID, "scheduler: invalid limits");
    strata_scheduler *s = calloc(1, sizeof *s);
    if (!s)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    s->model = model;
    s->lim = *limits;
    s->next_id = 1;
    strata_status st = strata_runner_new(model, &s->runner, err);
    /* a step (decode rows, then prefill within max_step_tokens) in one pass, as configured */
    long rows = (long)limits->max_step_tokens + limits->max_running;
    if (st == STRATA_OK)
        st = strata_runner_set_pass_rows(s->runner, rows < (1 << 20) ? (int)rows : 1 << 20, err);
    if (st != STRATA_OK) {
        strata_runner_free(s->runner);
        free(s);
        return st;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    *out = s;
    return STRATA_OK;
}

static void request_free(request *q)
{
    for (int i = 0; i < q->r.n; i++) {
        if (q->ch[i].cache != q->r.cache)
            strata_cache_free(q->ch[i].cache);
        strata_sampler_free(q->ch[i].sampler);
    }
    free(q->prompt);
    free(q->history);
    free(q->prompt_logits);
    free(q->checkpoint_at);
    free(q->stop_ids);
    free(q->bias_ids);
    free(q->bias_values);
    free(q);
}

void strata_scheduler_free(strata_scheduler *s)
{
    if (!s)
        return;
    request *lists[2] = {s->queue, s->running};
    for (int l = 0; l < 2; l++)
        while (lists[l]) {
            request *q = lists[l];
            lists[l] = q->next;
            request_free(q);
        }
    strata_runner_free(s->runner);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    free(s->seqs);
    free(s->seq_req);
    free(s->seq_choice);
    free(s->row_sampler);
    free(s->row_logits);
    free(s->row_sample);
    free(s->scores);
    free(s->logits);
    free(s);
}

static strata_status check_request(const strata_scheduler *s, const strata_request *r, strata_error *err)
{
    int vocab = s->model->cfg.info.vocab_size;
    if (r->n_prompt < 0 || (r->n_prompt && !r->prompt) || (r->n_prompt == 0 && !(r->cache && r->prompt_logits)))
        return strata_fail(err, STRATA_E_INVALID, "the prompt is empty");
    if (r->n < 1 || r->n > STRATA_MAX_CHOICES)
        return strata_fail(err, STRATA_E_INVALID, "n must be in [1, %d]", STRATA_MAX_CHOICES);
    if (r->max_tokens < 0 || r->n_prompt > s->lim.max_context || r->max_tokens > s->lim.max_context - r->n_prompt)
        return strata_fail(err, STRATA_E_LIMIT, "prompt (%d tokens) + max_tokens (%d) exceeds the context limit "
                           "of %d tokens", r->n_prompt, r->max_tokens, s->lim.max_context);
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= vocab)
            return strata_fail(err, STRATA_E_RANGE, "prompt token %d at position %d is outside the vocabulary "
                               "[0, %d)", r->prompt[i], i, vocab);
    if (r->n_history < 0 || (r->n_history && !r->history))
        return strata_fail(err, STRATA_E_INVALID, "history tokens missing");
    for (int i = 0; i < r->n_history; i++)
        if (r->history[i] < 0 || r->history[i] >= vocab)
            return strata_fail(err, STRATA_E_RANGE, "history token %d at position %d is outside the vocabulary "
                               "[0, %d)", r->history[i], i, vocab);
    if (r->n_stop_ids < 0 || (r->n_stop_ids && !r->stop_ids))
        return strata_fail(err, STRATA_E_INVALID, "stop ids missing");
    if (r->cache && r->cache->model != s->model)
        return strata_fail(err, STRATA_E_INVALID, "the request's cache belongs to another model");
    if (r->cache && strata_cache_n_tokens(r->cache) > s->lim.max_context - r->n_prompt - r->max_tokens)
        return strata_fail(err, STRATA_E_LIMIT, "the cache's %d tokens + prompt (%d) + max_tokens (%d) exceed the "
                           "context limit of %d tokens", strata_cache_n_tokens(r->cache), r->n_prompt, r->max_tokens,
                           s->lim.max_context);
    if (r->n_checkpoint_at < 0 || (r->n_checkpoint_at && !r->checkpoint_at) || r->checkpoint_every < 0)
        return strata_fail(err, STRATA_E_INVALID, "invalid checkpoint positions");
    if (r->capture && r->n != 1)
        return strata_fail(err, STRATA_E_INVALID, "a capture needs n = 1");
    return STRATA_OK;
}

static void *dup_array(const void *src, size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (p && bytes)
        memcpy(p, src, bytes);
    return p;
}

/* The request's own copies and one sampler per choice. */
static strata_status request_build(const strata_scheduler *s, const strata_request *r, request **out,
                                   strata_error *err)
{
    request *q = calloc(1, sizeof *q);
    if (!q)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    q->r = *r;
    const strata_sampling *sp = &r->sampling;
    q->prompt = dup_array(r->prompt, sizeof(int32_t) * (size_t)r->n_prompt);
    q->history = dup_array(r->history, sizeof(int32_t) * (size_t)r->n_history);
    size_t V = (size_t)s->model->cfg.info.vocab_size;
    q->prompt_logits = r->n_prompt == 0 ? dup_array(r->prompt_logits, sizeof(float) * V) : NULL;
    q->stop_ids = dup_array(r->stop_ids, sizeof(int32_t) * (size_t)r->n_stop_ids);
    q->checkpoint_at = dup_array(r->checkpoint_at, sizeof(int) * (size_t)r->n_checkpoint_at);
    q->r.checkpoint_at = q->checkpoint_at;
    q->ch[0].cache = r->cache;
    q->base_bytes = r->cache ? strata_cache_state_bytes(r->cache) : 0;
    q->bias_ids = dup_array(sp->bias_ids, sizeof(int32_t) * (size_t)sp->n_bias);
    q->bias_values = dup_array(sp->bias_values, sizeof(float) * (size_t)sp->n_bias);
    strata_status st = q->prompt && q->history && (r->n_prompt || q->prompt_logits) && q->stop_ids && q->bias_ids &&
                               q->bias_values && q->checkpoint_at
                           ? STRATA_OK : strata_fail(err, STRATA_E_NOMEM, "out of memory");
    q->r.prompt = q->prompt;
    q->r.history = q->history;
    q->r.prompt_logits = q->prompt_logits;
    q->r.stop_ids = q->stop_ids;
    q->r.sampling.bias_ids = q->bias_ids;
    q->r.sampling.bias_values = q->bias_values;
    for (int i = 0; st == STRATA_OK && i < r->n; i++) {
        strata_sampling p = q->r.sampling;
        p.seed += (uint64_t)i;
        st = strata_sampler_new(&p, s->model->cfg.info.vocab_size, &q->ch[i].sampler, err);
        for (int t = 0; st == STRATA_OK && t < r->n_history; t++)
            strata_sampler_accept(q->ch[i].sampler, q->history[t], 0);
        for (int t = 0; st == STRATA_OK && t < r->n_prompt; t++)
            strata_sampler_accept(q->ch[i].sampler, q->prompt[t], 0);
    }
    if (st != STRATA_OK) {
        request_free(q);
        return st;
    }
    *out = q;
    return STRATA_OK;
}

strata_status strata_scheduler_submit(strata_scheduler *s, const strata_request *r, uint64_t *id,
                                      strata_error *err)
{
    if (!s || !r)
        return strata_fail(err, STRATA_E_INVALID, "scheduler: missing request");
    STRATA_TRY(check_request(s, r, err));
    request *q = NULL;
    STRATA_TRY(request_build(s, r, &q, err));
    pthread_mutex_lock(&s->mu);
    strata_status st = STRATA_OK;
    if (s->stopping)
        st = strata_fail(err, STRATA_E_LIMIT, "the server is shutting down");
    else if (s->n_queued >= s->lim.max_queued + (s->lim.max_running - s->n_running))
        st = strata_fail(err, STRATA_E_LIMIT, "the request queue is full (%d waiting)", s->n_queued);
    if (st == STRATA_OK) {
        q->id = s->next_id++;
        request **tail = &s->queue;
        while (*tail)
            tail = &(*tail)->next;
        *tail = q;
        s->n_queued++;
        s->stats.requests_submitted++;
        if (id)
            *id = q->id;
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->mu);
    if (st != STRATA_OK)
        request_free(q);
    return st;
}

void strata_scheduler_cancel(strata_scheduler *s, uint64_t id)
{
    pthread_mutex_lock(&s->mu);
    for (int l = 0; l < 2; l++)
        for (request *q = l ? s->running : s->queue; q; q = q->next)
            if (q->id == id)
                q->cancelled = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void strata_scheduler_stop(strata_scheduler *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void strata_scheduler_get_stats(strata_scheduler *s, strata_scheduler_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    out->running = s->n_running;
    out->queued = s->n_queued;
    pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------------- the run loop */

static void finish_choice(request *q, int i, strata_finish reason)
{
    if (q->ch[i].finished)
        return;
    q->ch[i].finished = 1;
    q->n_finished++;
    if (q->r.on_finish)
        q->r.on_finish(q->r.user, i, reason);
}

/* Choice i drew smp: report it, and decide whether it goes on. */
static void take_sample(strata_scheduler *s, request *q, int i, const strata_sample *smp)
{
    choice *c = &q->ch[i];
    strata_sampler_accept(c->sampler, smp->token, 1);
    c->last = smp->token;
    c->n_generated++;
    s->stats.generated_tokens++;
    int is_stop = 0;
    for (int k = 0; !q->r.ignore_eos && k < q->r.n_stop_ids; k++)
        is_stop |= smp->token == q->stop_ids[k];
    int halt = q->r.on_token ? q->r.on_token(q->r.user, i, smp) : 0;
    if (is_stop || halt)
        finish_choice(q, i, STRATA_FINISH_STOP);
    else if (c->n_generated >= q->r.max_tokens)
        finish_choice(q, i, STRATA_FINISH_LENGTH);
}

/* Sample choice i from logits, then take_sample. */
static void advance_choice(strata_scheduler *s, request *q, int i, const float *logits)
{
    strata_sample smp;
    if (strata_sampler_sample(q->ch[i].sampler, logits, &smp, NULL) != STRATA_OK)
        finish_choice(q, i, STRATA_FINISH_ERROR);
    else
        take_sample(s, q, i, &smp);
}

/* The prompt is in choice 0's cache: give every other choice a copy, then sample
 * each choice's first token from the prompt's last logits. */
static void start_choices(strata_scheduler *s, request *q, const float *last_logits)
{
    q->started = 1;
    for (int i = 1; i < q->r.n; i++)
        if (strata_cache_copy(q->ch[0].cache, &q->ch[i].cache, NULL) != STRATA_OK)
            finish_choice(q, i, STRATA_FINISH_ERROR);
    for (int i = 0; i < q->r.n; i++) {
        if (q->ch[i].finished)
            continue;
        if (q->r.max_tokens == 0)
            finish_choice(q, i, STRATA_FINISH_LENGTH);
        else
            advance_choice(s, q, i, last_logits);
    }
}

/* Move finished or cancelled requests of `list` to *done. */
static void reap(strata_scheduler *s, request **list, int admitted, request **done)
{
    for (request **pp = list; *pp;) {
        request *q = *pp;
        if (!q->cancelled && q->n_finished < q->r.n) {
            pp = &q->next;
            continue;
        }
        *pp = q->next;
        if (admitted)
            s->n_running--;
        else
            s->n_queued--;
        s->stats.requests_finished++;
        s->stats.requests_cancelled += q->cancelled && q->n_finished < q->r.n;
        q->next = *done;
        *done = q;
    }
}

/* Admit queued requests in arrival order while there is room. */
static void admit(strata_scheduler *s)
{
    request **tail = &s->running;
    while (*tail)
        tail = &(*tail)->next;
    while (s->queue && s->n_running < s->lim.max_running) {
        request *q = s->queue;
        s->queue = q->next;
        q->next = NULL;
        q->admitted = 1;
        *tail = q;
        tail = &q->next;
        s->n_queued--;
        s->n_running++;
    }
}

/* Drop finished and cancelled requests, admit queued ones; sleeps while idle.
 * Returns 0 when the scheduler is stopping. */
static int gather(strata_scheduler *s, request **done)
{
    pthread_mutex_lock(&s->mu);
    for (;;) {
        reap(s, &s->running, 1, done);
        reap(s, &s->queue, 0, done);
        admit(s);
        if (s->stopping || s->n_running > 0 || *done)
            break;
        pthread_cond_wait(&s->wake, &s->mu);
    }
    int stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return !stopping;
}

static void release(strata_scheduler *s, request *done)
{
    while (done) {
        request *q = done;
        done = q->next;
        for (int i = 0; i < q->r.n; i++)
            finish_choice(q, i, STRATA_FINISH_CANCELLED);
        uint64_t held = 0;
        for (int i = 0; i < q->r.n; i++)
            held += q->ch[i].cache ? strata_cache_state_bytes(q->ch[i].cache) : 0;
        pthread_mutex_lock(&s->mu);
        s->stats.state_bytes -= held - q->base_bytes;
        pthread_mutex_unlock(&s->mu);
        if (q->r.on_done)
            q->r.on_done(q->r.user);
        request_free(q);
    }
}

static int grow_step_buffers(strata_scheduler *s, int seqs, size_t logit_rows)
{
    size_t V = (size_t)s->model->cfg.info.vocab_size;
    if (seqs > s->seq_cap) {
        int cap = seqs * 2;
        strata_seq *a = realloc(s->seqs, sizeof *a * (size_t)cap);
        if (a)
            s->seqs = a;
        request **b = realloc(s->seq_req, sizeof *b * (size_t)cap);
        if (b)
            s->seq_req = b;
        int *c = realloc(s->seq_choice, sizeof *c * (size_t)cap);
        if (c)
            s->seq_choice = c;
        strata_sampler **d = realloc(s->row_sampler, sizeof *d * (size_t)cap);
        if (d)
            s->row_sampler = d;
        const float **e = realloc(s->row_logits, sizeof *e * (size_t)cap);
        if (e)
            s->row_logits = e;
        strata_sample *f = realloc(s->row_sample, sizeof *f * (size_t)cap);
        if (f)
            s->row_sample = f;
        if (!a || !b || !c || !d || !e || !f)
            return 0;
        s->seq_cap = cap;
    }
    if (logit_rows * V > s->logits_cap) {
        float *l = realloc(s->logits, sizeof(float) * logit_rows * V);
        if (!l)
            return 0;
        s->logits = l;
        s->logits_cap = logit_rows * V;
    }
    return 1;
}

/* The next prompt position past what is prefilled where a checkpoint is due. */
static int next_checkpoint(const request *q)
{
    int best = q->r.n_prompt;
    for (int i = 0; i < q->r.n_checkpoint_at; i++)
        if (q->checkpoint_at[i] > q->prefilled && q->checkpoint_at[i] < best)
            best = q->checkpoint_at[i];
    if (q->r.checkpoint_every > 0) {
        int every = (q->prefilled / q->r.checkpoint_every + 1) * q->r.checkpoint_every;
        best = every < best ? every : best;
    }
    return best;
}

/* Shared prefills. Requests that start from nothing (no cache given, no capture, no
 * interventions, no prompt logprobs) and arrive together compute what their prompts
 * share once. A request that has not begun waits on an earlier one still prefilling
 * (its lead) when their prompts are the same (twins) or share at least SHARE_MIN
 * tokens the lead has not yet passed:
 *  - twins: when the lead's prompt is done, each takes a copy of its state and draws
 *    from the same last logits (adopt_twins);
 *  - a shared start of L tokens (at most all but the follower's last, whose logits it
 *    computes itself): the lead's chunks stop at L (also reported as a checkpoint
 *    there: where the prompts part is worth a prefix-cache snapshot), and at the next
 *    step the follower takes a copy of its state and prefills the rest itself.
 * Bit for bit what each would have computed alone: the engine's results depend on
 * neither batch nor chunks. A lead cancelled or failed leaves the follower to
 * prefill on its own. */
#define SHARE_MIN 64

static int shareable(const request *q)
{
    return !q->r.cache && !q->r.capture && !q->r.interventions && !q->r.prompt_logprobs && q->r.n_prompt > 0 &&
           q->n_finished < q->r.n;
}

/* q has not begun and may still start from another request's state. */
static int not_begun(const request *q)
{
    return !q->prefilled && !q->ch[0].cache && shareable(q);
}

/* How many leading prompt tokens a and b have in common. */
static int common_start(const request *a, const request *b)
{
    int n = a->r.n_prompt < b->r.n_prompt ? a->r.n_prompt : b->r.n_prompt, L = 0;
    while (L < n && a->prompt[L] == b->prompt[L])
        L++;
    return L;
}

static int twins(const request *a, const request *b)
{
    return a->r.n_prompt == b->r.n_prompt && common_start(a, b) == a->r.n_prompt;
}

/* Prompt tokens q can take from p: all for twins, else the start they share (up to
 * q's last token) when it is SHARE_MIN long and p has not passed it; 0: none. */
static int share_with(const request *p, const request *q)
{
    int common = common_start(p, q), n = q->r.n_prompt;
    if (common == n && p->r.n_prompt == n)
        return n;
    int L = common < n - 1 ? common : n - 1;
    return L >= SHARE_MIN && p->prefilled <= L ? L : 0;
}

/* For q, not begun: the earlier request still prefilling it shares the most with
 * (*lead), and how many tokens; 0: none. */
static int share_point(const strata_scheduler *s, const request *q, request **lead)
{
    *lead = NULL;
    if (!not_begun(q))
        return 0;
    int best = 0;
    for (request *p = s->running; p && p != q; p = p->next) {
        int L = shareable(p) && p->prefilled < p->r.n_prompt ? share_with(p, q) : 0;
        if (L > best) {
            best = L;
            *lead = p;
        }
    }
    return best;
}

/* Where p's next chunk must stop for a follower that shares a start with it (the
 * nearest such point past p->prefilled), or 0. */
static int share_stop(const strata_scheduler *s, const request *p)
{
    int stop = 0;
    for (const request *f = p->next; f; f = f->next) {
        request *lead;
        int L = share_point(s, f, &lead);
        if (lead == p && L < f->r.n_prompt && L > p->prefilled && (!stop || L < stop))
            stop = L;
    }
    return stop;
}

/* f, not begun, takes a copy of lead's state, which holds their first L prompt
 * tokens; 0 when it cannot (f then prefills on its own). */
static int follow(const request *lead, request *f, int L)
{
    if (strata_cache_copy(lead->ch[0].cache, &f->ch[0].cache, NULL) != STRATA_OK)
        return 0;
    f->prefilled = L;
    if (f->r.on_progress)
        f->r.on_progress(f->r.user, f->prefilled, f->r.n_prompt);
    return 1;
}

/* q, not begun, may start from its lead's state: now, when the lead stands at their
 * shared start (q then prefills the rest this step); returns 1 while q must wait. */
static int wait_or_take_share(strata_scheduler *s, request *q)
{
    request *lead;
    int L = share_point(s, q, &lead);
    if (!L)
        return 0;
    if (L == q->r.n_prompt || lead->prefilled < L)
        return 1;       /* a twin, or the lead is not there yet */
    follow(lead, q, L);
    return 0;
}

/* q's prompt is done (last: the logits after it): start every waiting twin from it. */
static void adopt_twins(strata_scheduler *s, request *q, const float *last)
{
    if (!shareable(q))
        return;
    for (request *f = q->next; f; f = f->next)
        if (not_begun(f) && twins(q, f) && follow(q, f, f->r.n_prompt))
            start_choices(s, f, last);
}

/* Lay out this step: decode rows first, then prefill chunks within the budget. */
static int plan_step(strata_scheduler *s, int *n_prefill_rows)
{
    int n = 0, budget = s->lim.max_step_tokens;
    size_t rows = 0;
    *n_prefill_rows = 0;
    for (request *q = s->running; q; q = q->next) {
        if (q->n_finished == q->r.n)
            continue;
        if (q->prefilled < q->r.n_prompt) {
            if (wait_or_take_share(s, q))
                continue;
            int chunk = q->r.n_prompt - q->prefilled;
            int room = budget - n; /* decode rows of later requests still fit: they are few */
            if (room < 1)
                continue;
            chunk = chunk < room ? chunk : room;
            int stop_at = next_checkpoint(q);
            if (stop_at > q->prefilled && stop_at - q->prefilled < chunk)
                chunk = stop_at - q->prefilled;
            q->share_stop = share_stop(s, q);
            if (q->share_stop && q->share_stop - q->prefilled < chunk)
                chunk = q->share_stop - q->prefilled;
            if (!q->ch[0].cache && strata_cache_new(s->model, &q->ch[0].cache, NULL) != STRATA_OK) {
                finish_choice(q, 0, STRATA_FINISH_ERROR);
                continue;
            }
            if (!grow_step_buffers(s, n + 1, rows + (size_t)chunk))
                return n;
            int all = q->r.prompt_logprobs;
            s->seqs[n] = (strata_seq){.cache = q->ch[0].cache, .tokens = q->prompt + q->prefilled,
                                      .n_tokens = chunk, .all_logits = all, .capture = q->r.capture,
                                      .interventions = q->r.interventions};
            s->seq_req[n] = q;
            s->seq_choice[n++] = -1;
            rows += all ? (size_t)chunk : 1;
            budget -= chunk - 1;
            *n_prefill_rows += chunk;
            continue;
        }
        if (!q->started)    /* the cache held the whole prompt: draw from the given logits */
            start_choices(s, q, q->prompt_logits);
        for (int i = 0; i < q->r.n; i++) {
            if (q->ch[i].finished)
                continue;
            if (!grow_step_buffers(s, n + 1, rows + 1))
                return n;
            s->seqs[n] = (strata_seq){.cache = q->ch[i].cache, .tokens = &q->ch[i].last, .n_tokens = 1,
                                      .capture = i == 0 ? q->r.capture : NULL,
                                      .interventions = q->r.interventions};
            s->seq_req[n] = q;
            s->seq_choice[n++] = i;
            rows++;
        }
    }
    size_t V = (size_t)s->model->cfg.info.vocab_size, o = 0;
    for (int k = 0; k < n; k++) {
        s->seqs[k].logits = s->logits + o * V;
        o += s->seqs[k].all_logits ? (size_t)s->seqs[k].n_tokens : 1;
    }
    return n;
}

/* The prompt tokens a prefill chunk's logit rows predict (row t: prompt[first + t + 1])
 * scored on the runner's threads, with the request's top_logprobs alternatives, then
 * reported in order. Where the buffer cannot grow, a row at a time. */
static void report_prompt_logprobs(strata_scheduler *s, request *q, const strata_seq *seq)
{
    if (!q->r.on_prompt_token)
        return;
    size_t V = (size_t)s->model->cfg.info.vocab_size;
    int first = q->prefilled, rows = q->r.n_prompt - first - 1;
    rows = rows < seq->n_tokens ? rows : seq->n_tokens;
    if (rows > s->scores_cap) {
        strata_sample *grown = realloc(s->scores, sizeof *grown * (size_t)rows);
        if (grown) {
            s->scores = grown;
            s->scores_cap = rows;
        }
    }
    int part = s->scores_cap < rows ? 1 : rows, top = q->r.sampling.top_logprobs;
    strata_sample one, *out = part == 1 ? &one : s->scores;
    for (int t0 = 0; t0 < rows; t0 += part) {
        const int32_t *ids = q->prompt + first + 1 + t0;
        if (strata_runner_score(s->runner, seq->logits + (size_t)t0 * V, ids, part, top, out, NULL) != STRATA_OK)
            for (int t = 0; t < part; t++)
                out[t] = (strata_sample){.token = ids[t], .logprob = NAN};
        for (int t = 0; t < part; t++)
            q->r.on_prompt_token(q->r.user, first + 1 + t0 + t, &out[t]);
    }
}

/* After the step: sample decode rows (all at once, on the runner's threads), then
 * report them and account prefill chunks, in step order. */
static void consume_step(strata_scheduler *s, int n)
{
    const strata_model_info *m = &s->model->cfg.info;
    int rows = 0;
    for (int k = 0; k < n; k++)
        if (s->seq_choice[k] >= 0) {
            s->row_sampler[rows] = s->seq_req[k]->ch[s->seq_choice[k]].sampler;
            s->row_logits[rows++] = s->seqs[k].logits;
        }
    int sampled = strata_runner_sample(s->runner, s->row_sampler, s->row_logits, s->row_sample, rows, NULL) ==
                  STRATA_OK;
    for (int k = 0, row = 0; k < n; k++) {
        request *q = s->seq_req[k];
        strata_seq *seq = &s->seqs[k];
        if (s->seq_choice[k] >= 0) {
            if (sampled)
                take_sample(s, q, s->seq_choice[k], &s->row_sample[row++]);
            else
                finish_choice(q, s->seq_choice[k], STRATA_FINISH_ERROR);
            continue;
        }
        if (q->r.prompt_logprobs)
            report_prompt_logprobs(s, q, seq);
        int due = next_checkpoint(q);
        q->prefilled += seq->n_tokens;
        s->stats.prompt_tokens += (uint64_t)seq->n_tokens;
        int end = q->prefilled == q->r.n_prompt;
        const float *last = seq->logits + (seq->all_logits ? (size_t)(seq->n_tokens - 1) * (size_t)m->vocab_size : 0);
        if (q->r.on_checkpoint && (q->prefilled == due || q->prefilled == q->share_stop))
            q->r.on_checkpoint(q->r.user, q->ch[0].cache, q->prefilled, end ? last : NULL);
        if (q->r.on_progress)
            q->r.on_progress(q->r.user, q->prefilled, q->r.n_prompt);
        if (end) {
            adopt_twins(s, q, last);
            start_choices(s, q, last);
        }
    }
}

static void run_one_step(strata_scheduler *s)
{
    int prefill_rows;
    uint64_t before = 0, after = 0;
    for (request *q = s->running; q; q = q->next)
        for (int i = 0; i < q->r.n; i++)
            before += q->ch[i].cache ? strata_cache_state_bytes(q->ch[i].cache) : 0;
    int n = plan_step(s, &prefill_rows);
    if (n == 0)
        return;
    double t0 = now_s();
    strata_error err;
    if (strata_runner_step(s->runner, s->seqs, n, &err) != STRATA_OK) {
        for (int k = 0; k < n; k++)
            for (int i = 0; i < s->seq_req[k]->r.n; i++)
                finish_choice(s->seq_req[k], i, STRATA_FINISH_ERROR);
        return;
    }
    double dt = now_s() - t0;
    consume_step(s, n);
    for (request *q = s->running; q; q = q->next)
        for (int i = 0; i < q->r.n; i++)
            after += q->ch[i].cache ? strata_cache_state_bytes(q->ch[i].cache) : 0;
    pthread_mutex_lock(&s->mu);
    s->stats.steps++;
    if (prefill_rows)
        s->stats.prefill_seconds += dt;
    else
        s->stats.decode_seconds += dt;
    s->stats.state_bytes += after - before;
    pthread_mutex_unlock(&s->mu);
}

void strata_scheduler_run(strata_scheduler *s)
{
    for (;;) {
        request *done = NULL;
        int go_on = gather(s, &done);
        release(s, done);
        if (!go_on)
            break;
        run_one_step(s);
    }
    /* shutdown: everything left is cancelled */
    pthread_mutex_lock(&s->mu);
    request *rest = s->running;
    for (request **pp = &rest; ; pp = &(*pp)->next)
        if (!*pp) {
            *pp = s->queue;
            break;
        }
    s->running = s->queue = NULL;
    s->n_running = s->n_queued = 0;
    pthread_mutex_unlock(&s->mu);
    release(s, rest);
}
