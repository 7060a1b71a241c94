/*
 * test_scheduler.c — continuous batching and sampling: greedy generation through the
 * scheduler equals the fixture's greedy ids, concurrent requests equal solo runs,
 * seeds reproduce, penalties and biases act, cancellation frees the request.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct collected {
    int32_t tokens[STRATA_MAX_CHOICES][256];
    int n[STRATA_MAX_CHOICES];
    strata_finish finish[STRATA_MAX_CHOICES];
    int progress_calls, done, stop_after;
    void *user;                 /* a test's own state for its callbacks */
} collected;

static int on_token(void *user, int choice, const strata_sample *smp)
{
    collected *c = user;
    cr_assert_leq(smp->logprob, 0.0f);
    if (c->n[choice] < 256)
        c->tokens[choice][c->n[choice]++] = smp->token;
    return c->stop_after && c->n[choice] >= c->stop_after;
}

static void on_finish(void *user, int choice, strata_finish reason)
{
    ((collected *)user)->finish[choice] = reason;
}

static void on_progress(void *user, int done, int total)
{
    (void)done;
    (void)total;
    ((collected *)user)->progress_calls++;
}

static void on_done(void *user)
{
    __atomic_store_n(&((collected *)user)->done, 1, __ATOMIC_SEQ_CST);
}

typedef struct harness {
    strata_model *model;
    strata_scheduler *sched;
    pthread_t thread;
} harness;

static void *run_thread(void *arg)
{
    strata_scheduler_run(arg);
    return NULL;
}

static void harness_start(harness *h, const char *rel, int max_step_tokens)
{
    strata_error err;
    cr_assert_eq(strata_model_load(shared_path(rel), &h->model, &err), STRATA_OK, "%s", err.message);
    strata_scheduler_limits lim = {.max_running = 8, .max_queued = 8, .max_step_tokens = max_step_tokens,
                                   .max_context = 4096};
    cr_assert_eq(strata_scheduler_new(h->model, &lim, &h->sched, &err), STRATA_OK);
    pthread_create(&h->thread, NULL, run_thread, h->sched);
}

static void harness_stop(harness *h)
{
    strata_scheduler_stop(h->sched);
    pthread_join(h->thread, NULL);
    strata_scheduler_free(h->sched);
    strata_model_free(h->model);
}

static void wait_done(collected *c)
{
    while (!__atomic_load_n(&c->done, __ATOMIC_SEQ_CST))
        sched_yield();
}

static strata_request greedy_request(const int32_t *prompt, int n, int max_tokens, collected *c)
{
    strata_request r = {.prompt = prompt, .n_prompt = n, .max_tokens = max_tokens, .n = 1, .ignore_eos = 1,
                        .user = c, .on_token = on_token, .on_finish = on_finish, .on_done = on_done,
                        .on_progress = on_progress};
    strata_sampling_default(&r.sampling);
    r.sampling.temperature = 0;
    return r;
}

static const int32_t hybrid_prompt[] = {1, 83, 510, 389, 385, 277, 453, 64};

Test(scheduler, greedy_generation_matches_the_fixture, .timeout = 60)
{
    harness h;
    harness_start(&h, "fixtures/models/hybrid-small", 3); /* a 3-token budget: the prompt is chunked */
    st_file *exp;
    strata_error err;
    cr_assert_eq(st_open(shared_path("fixtures/models/hybrid-small/expected.safetensors"), &exp, &err), STRATA_OK);
    const st_tensor *want = st_find(exp, "greedy.output_ids");
    collected c = {0};
    strata_request r = greedy_request(hybrid_prompt, 8, (int)want->numel, &c);
    cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_OK, "%s", err.message);
    wait_done(&c);
    cr_assert_eq(c.n[0], want->numel);
    cr_assert_eq(memcmp(c.tokens[0], want->data, sizeof(int32_t) * (size_t)want->numel), 0);
    cr_assert_eq(c.finish[0], STRATA_FINISH_LENGTH);
    cr_assert_geq(c.progress_calls, 3, "the prompt went in chunks");
    st_close(exp);
    harness_stop(&h);
}

Test(scheduler, concurrent_requests_equal_solo_runs, .timeout = 60)
{
    harness h;
    harness_start(&h, "fixtures/models/moe-small", 16);
    enum { N = 6 };
    static int32_t prompts[N][12];
    collected solo[N], many[N];
    memset(solo, 0, sizeof solo);
    memset(many, 0, sizeof many);
    strata_error err;
    for (int k = 0; k < N; k++)
        for (int t = 0; t < 12; t++)
            prompts[k][t] = (int32_t)((k * 37 + t * 11) % 500);
    for (int k = 0; k < N; k++) {
        strata_request r = greedy_request(prompts[k], 3 + k, 10 + k, &solo[k]);
        cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_OK);
        wait_done(&solo[k]);
    }
    for (int k = 0; k < N; k++) {
        strata_request r = greedy_request(prompts[k], 3 + k, 10 + k, &many[k]);
        r.sampling.temperature = 0.8f; /* seeded sampling is batch-independent too */
        r.sampling.seed = (uint64_t)k;
        cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_OK);
    }
    for (int k = 0; k < N; k++)
        wait_done(&many[k]);
    for (int k = 0; k < N; k++) {
        collected again = {0};
        strata_request r = greedy_request(prompts[k], 3 + k, 10 + k, &again);
        r.sampling.temperature = 0.8f;
        r.sampling.seed = (uint64_t)k;
        cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_OK);
        wait_done(&again);
        cr_assert_eq(again.n[0], 10 + k);
        cr_assert_eq(memcmp(again.tokens[0], many[k].tokens[0], sizeof(int32_t) * (size_t)(10 + k)), 0,
                     "request %d: same seed, batched vs alone", k);
    }
    strata_scheduler_stats st;
    strata_scheduler_get_stats(h.sched, &st);
    cr_assert_eq(st.requests_finished, 3 * N);
    cr_assert_eq(st.running + st.queued, 0);
    cr_assert_eq(st.state_bytes, 0, "finished requests hold no state");
    harness_stop(&h);
}

/* Greedy with a strong repetition penalty, `n` generated tokens, from `prompt` on
 * top of `cache` (NULL: fresh) whose state holds `history`. */
static void penalised_run(harness *h, strata_cache *cache, const int32_t *history, int n_history,
                          const int32_t *prompt, int n_prompt, int n, collected *c)
{
    strata_error err;
    strata_request r = greedy_request(prompt, n_prompt, n, c);
    r.sampling.repetition_penalty = 3.0f;
    r.cache = cache;
    r.history = history;
    r.n_history = n_history;
    cr_assert_eq(strata_scheduler_submit(h->sched, &r, NULL, &err), STRATA_OK, "%s", err.message);
    wait_done(c);
    cr_assert_eq(c->n[0], n);
}

/* A request that continues a cache holding the prompt's first part samples as a
 * fresh run over the whole prompt, given that part as its history: the repetition
 * penalty counts the tokens the cache already holds. */
Test(scheduler, a_continued_cache_samples_as_a_fresh_run_of_history_and_prompt, .timeout = 60)
{
    harness h;
    harness_start(&h, "fixtures/models/hybrid-small", 64);
    enum { HEAD = 300, N = 306, GEN = 24 };
    int32_t prompt[N];
    for (int t = 0; t < N; t++)
        prompt[t] = (int32_t)((t * 7 + 3) % 512);   /* the head: 300 distinct ids of the 512 */
    collected fresh = {0}, head = {0}, with = {0}, without = {0};
    penalised_run(&h, NULL, NULL, 0, prompt, N, GEN, &fresh);
    strata_error err;
    strata_cache *c1, *c2;
    cr_assert_eq(strata_cache_new(h.model, &c1, &err), STRATA_OK);
    penalised_run(&h, c1, NULL, 0, prompt, HEAD, 0, &head);    /* the cache holds prompt[0..HEAD) */
    cr_assert_eq(strata_cache_n_tokens(c1), HEAD);
    cr_assert_eq(strata_cache_copy(c1, &c2, &err), STRATA_OK);
    penalised_run(&h, c1, prompt, HEAD, prompt + HEAD, N - HEAD, GEN, &with);
    cr_assert_eq(memcmp(with.tokens[0], fresh.tokens[0], sizeof(int32_t) * GEN), 0,
                 "the continued request samples as the fresh one");
    penalised_run(&h, c2, NULL, 0, prompt + HEAD, N - HEAD, GEN, &without);
    cr_assert_neq(memcmp(without.tokens[0], fresh.tokens[0], sizeof(int32_t) * GEN), 0,
                  "without its history the penalty sees another context (so the case above can fail)");
    int32_t bad = 9999;
    collected none = {0};
    strata_request r = greedy_request(prompt, 2, 1, &none);
    r.history = &bad;
    r.n_history = 1;
    cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_E_RANGE);
    r.history = NULL;
    cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_E_INVALID);
    strata_cache_free(c1);
    strata_cache_free(c2);
    harness_stop(&h);
}

typedef struct prompt_end {
    float logits[512];
    int calls, at, with_logits;
} prompt_end;

static void keep_prompt_end(void *user, const strata_cache *cache, int n_prefilled, const float *logits)
{
    (void)cache;
    prompt_end *pe = ((collected *)user)->user;
    pe->calls++;
    pe->at = n_prefilled;
    pe->with_logits = logits != NULL;
    if (logits)
        memcpy(pe->logits, logits, sizeof pe->logits);
}

/* A cache that holds the whole prompt, with the logits after it (as the end-of-prompt
 * checkpoint reports them), starts without a step and draws what a fresh run draws. */
Test(scheduler, a_whole_cached_prompt_starts_from_its_last_logits, .timeout = 60)
{
    harness h;
    harness_start(&h, "fixtures/models/hybrid-small", 8);
    int32_t prompt[20];
    for (int t = 0; t < 20; t++)
        prompt[t] = (int32_t)((t * 13 + 5) % 512);
    strata_error err;
    collected fresh = {0}, head = {0}, cached = {0};
    strata_request r = greedy_request(prompt, 20, 12, &fresh);
    r.n = 2;
    r.sampling.temperature = 0.9f;
    r.sampling.seed = 7;
    r.sampling.repetition_penalty = 1.5f;
    cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_OK);
    wait_done(&fresh);
    strata_cache *c;
    cr_assert_eq(strata_cache_new(h.model, &c, &err), STRATA_OK);
    prompt_end pe = {0};
    head.user = &pe;
    strata_request fill = greedy_request(prompt, 20, 0, &head);
    fill.cache = c;
    fill.on_checkpoint = keep_prompt_end;
    cr_assert_eq(strata_scheduler_submit(h.sched, &fill, NULL, &err), STRATA_OK);
    wait_done(&head);
    cr_assert_eq(pe.calls, 1, "the end of the prompt only (chunks of 8 pause nowhere else)");
    cr_assert_eq(pe.at, 20);
    cr_assert(pe.with_logits);
    strata_request whole = r;
    whole.user = &cached;
    whole.prompt = NULL;
    whole.n_prompt = 0;
    whole.cache = c;
    whole.history = prompt;
    whole.n_history = 20;
    cr_assert_eq(strata_scheduler_submit(h.sched, &whole, NULL, &err), STRATA_E_INVALID,
                 "no logits: nothing to start from");
    whole.prompt_logits = pe.logits;
    strata_scheduler_stats before, after;
    strata_scheduler_get_stats(h.sched, &before);
    cr_assert_eq(strata_scheduler_submit(h.sched, &whole, NULL, &err), STRATA_OK, "%s", err.message);
    wait_done(&cached);
    strata_scheduler_get_stats(h.sched, &after);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(cached.n[i], 12);
        cr_assert_eq(memcmp(cached.tokens[i], fresh.tokens[i], sizeof(int32_t) * 12), 0, "choice %d", i);
    }
    cr_assert_eq(after.prompt_tokens, before.prompt_tokens, "no prompt token was processed");
    cr_assert_eq(after.steps - before.steps, 11, "one step per token after the first");
    strata_cache_free(c);
    harness_stop(&h);
}

/* A request whose first token holds the scheduler's thread until `open` is set:
 * whatever is submitted meanwhile is admitted together, in submission order. */
static int gate_token(void *user, int choice, const strata_sample *smp)
{
    (void)choice;
    (void)smp;
    int *open = ((collected *)user)->user;
    while (!__atomic_load_n(open, __ATOMIC_SEQ_CST))
        sched_yield();
    return 0;
}

/* Submit a gate request (3 tokens of ids) and wait, yielding, until its prompt is in
 * and its first token holds the scheduler's thread; *at: the stats then. */
static void gate_close(harness *h, const int32_t *ids, collected *gate, int *open, strata_scheduler_stats *at)
{
    strata_error err;
    memset(gate, 0, sizeof *gate);
    gate->user = open;
    strata_request g = greedy_request(ids, 3, 2, gate);
    g.on_token = gate_token;
    strata_scheduler_get_stats(h->sched, at);
    uint64_t base = at->prompt_tokens;
    cr_assert_eq(strata_scheduler_submit(h->sched, &g, NULL, &err), STRATA_OK);
    for (strata_scheduler_get_stats(h->sched, at); at->prompt_tokens < base + 3; strata_scheduler_get_stats(h->sched, at))
        sched_yield();
}

static strata_request sampled_request(const int32_t *prompt, int n_prompt, int n, uint64_t seed, collected *c)
{
    strata_request r = greedy_request(prompt, n_prompt, 10, c);
    r.n = n;
    r.sampling.temperature = 0.9f;
    r.sampling.seed = seed;
    return r;
}

/* Requests with the same prompt that arrive together compute it once: the later
 * ones start from a copy of the first one's state and draw exactly what each draws
 * alone (seeded, n = 2 too); a first one cancelled leaves the next to prefill. */
Test(scheduler, twin_prompts_are_prefilled_once, .timeout = 60)
{
    harness h;
    harness_start(&h, "fixtures/models/hybrid-small", 256);  /* room for every prompt in one step */
    int32_t prompt[37], other[37];
    for (int t = 0; t < 37; t++) {
        prompt[t] = (int32_t)((t * 17 + 3) % 512);
        other[t] = (int32_t)((t * 19 + 1) % 512);
    }
    strata_error err;
    enum { T = 4 };
    collected solo[T], together[T];
    memset(solo, 0, sizeof solo);
    memset(together, 0, sizeof together);
    for (int k = 0; k < T; k++) {   /* k = 3: another prompt between the twins */
        strata_request r = sampled_request(k == 3 ? other : prompt, 37, k == 1 ? 2 : 1, (uint64_t)k, &solo[k]);
        cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_OK);
        wait_done(&solo[k]);
    }
    for (int round = 0; round < 2; round++) {   /* round 1: the first twin is cancelled */
        int open = 0;
        static collected gate;
        strata_scheduler_stats before, after;
        gate_close(&h, other, &gate, &open, &before);
        uint64_t ids[T];
        memset(together, 0, sizeof together);
        int order[T] = {0, 3, 1, 2};
        for (int i = 0; i < T; i++) {
            int k = order[i];
            strata_request r = sampled_request(k == 3 ? other : prompt, 37, k == 1 ? 2 : 1, (uint64_t)k, &together[k]);
            cr_assert_eq(strata_scheduler_submit(h.sched, &r, &ids[k], &err), STRATA_OK);
        }
        if (round == 1)
            strata_scheduler_cancel(h.sched, ids[0]);
        __atomic_store_n(&open, 1, __ATOMIC_SEQ_CST);
        wait_done(&gate);
        for (int k = 0; k < T; k++)
            wait_done(&together[k]);
        strata_scheduler_get_stats(h.sched, &after);
        cr_assert_eq(after.prompt_tokens - before.prompt_tokens, 2 * 37, "round %d: each prompt once, not %llu",
                     round, (unsigned long long)(after.prompt_tokens - before.prompt_tokens));
        for (int k = round; k < T; k++)
            for (int c = 0; c < (k == 1 ? 2 : 1); c++) {
                cr_assert_eq(together[k].n[c], 10);
                cr_assert_eq(memcmp(together[k].tokens[c], solo[k].tokens[c], sizeof(int32_t) * 10), 0,
                             "round %d, request %d, choice %d: as alone", round, k, c);
            }
        if (round == 1)
            cr_assert_eq(together[0].finish[0], STRATA_FINISH_CANCELLED);
    }
    harness_stop(&h);
}

typedef struct positions {
    int at[8], n;
} positions;

static void note_checkpoint(void *user, const strata_cache *cache, int n_prefilled, const float *logits)
{
    (void)cache;
    (void)logits;
    positions *p = ((collected *)user)->user;
    if (p->n < 8)
        p->at[p->n++] = n_prefilled;
}

/* Requests arriving together whose prompts share a long start compute it once: the
 * first stops there (a checkpoint) and the others continue from copies of its state;
 * a start shorter than the scheduler's minimum is not shared. Each draws what it
 * draws alone. */
Test(scheduler, a_shared_start_is_prefilled_once, .timeout = 60)
{
    harness h;
    harness_start(&h, "fixtures/models/hybrid-small", 256);
    enum { HEAD = 100, TAIL = 12, T = 5 };
    static int32_t prompts[T][HEAD + TAIL];
    int len[T] = {HEAD + TAIL, HEAD + TAIL, 40 + TAIL, HEAD + TAIL, HEAD};
    /* 0 and 1: the head, then each its own tail; 2: 40 tokens of the head, then its
     * own; 3: 0's twin; 4: the head alone */
    for (int k = 0; k < T; k++)
        for (int t = 0; t < HEAD + TAIL; t++) {
            int shared = k == 2 ? 40 : HEAD, own = k == 3 ? 0 : k;
            prompts[k][t] = (int32_t)(t < shared ? (t * 17 + 3) % 512 : (t * 5 + 11 * own) % 512);
        }
    strata_error err;
    collected solo[T], together[T];
    memset(solo, 0, sizeof solo);
    for (int k = 0; k < T; k++) {
        strata_request r = sampled_request(prompts[k], len[k], 1, (uint64_t)k, &solo[k]);
        cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_OK);
        wait_done(&solo[k]);
    }
    int open = 0;
    static collected gate;
    strata_scheduler_stats before, after;
    gate_close(&h, prompts[2], &gate, &open, &before);
    memset(together, 0, sizeof together);
    positions first = {0};
    together[0].user = &first;
    for (int k = 0; k < T; k++) {
        strata_request r = sampled_request(prompts[k], len[k], 1, (uint64_t)k, &together[k]);
        if (k == 0)
            r.on_checkpoint = note_checkpoint;
        cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_OK);
    }
    __atomic_store_n(&open, 1, __ATOMIC_SEQ_CST);
    wait_done(&gate);
    for (int k = 0; k < T; k++)
        wait_done(&together[k]);
    strata_scheduler_get_stats(h.sched, &after);
    /* 0 all of its prompt; 1 its tail; 2 all (40 < the minimum); 3 nothing; 4 its last token */
    cr_assert_eq(after.prompt_tokens - before.prompt_tokens, (HEAD + TAIL) + TAIL + (40 + TAIL) + 0 + 1,
                 "not %llu", (unsigned long long)(after.prompt_tokens - before.prompt_tokens));
    for (int k = 0; k < T; k++)
        cr_assert_eq(memcmp(together[k].tokens[0], solo[k].tokens[0], sizeof(int32_t) * 10), 0, "request %d", k);
    cr_assert_eq(first.n, 3, "the first stopped where the others part: at %d, %d, %d", first.at[0], first.at[1],
                 first.at[2]);
    cr_assert_eq(first.at[0], HEAD - 1, "4 takes all of its prompt but the last token");
    cr_assert_eq(first.at[1], HEAD, "1 takes the head");
    cr_assert_eq(first.at[2], HEAD + TAIL, "and the end of the prompt");
    harness_stop(&h);
}

Test(scheduler, choices_share_the_prompt_and_stop_callbacks_stop, .timeout = 60)
{
    harness h;
    harness_start(&h, "fixtures/models/hybrid-small", 64);
    strata_error err;
    collected c = {.stop_after = 5};
    strata_request r = greedy_request(hybrid_prompt, 8, 20, &c);
    r.n = 3;
    cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_OK);
    wait_done(&c);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(c.n[i], 5);
        cr_assert_eq(c.finish[i], STRATA_FINISH_STOP);
        cr_assert_eq(memcmp(c.tokens[i], c.tokens[0], 5 * sizeof(int32_t)), 0, "greedy choices agree");
    }
    /* a bias that forbids the greedy first token changes it */
    collected b = {0};
    float minus = -1e9f;
    strata_request rb = greedy_request(hybrid_prompt, 8, 1, &b);
    rb.sampling.bias_ids = &c.tokens[0][0];
    rb.sampling.bias_values = &minus;
    rb.sampling.n_bias = 1;
    cr_assert_eq(strata_scheduler_submit(h.sched, &rb, NULL, &err), STRATA_OK);
    wait_done(&b);
    cr_assert_neq(b.tokens[0][0], c.tokens[0][0]);
    /* stop ids end a choice with "stop" */
    collected e = {0};
    strata_request re = greedy_request(hybrid_prompt, 8, 20, &e);
    re.ignore_eos = 0;
    re.stop_ids = &c.tokens[0][2];
    re.n_stop_ids = 1;
    cr_assert_eq(strata_scheduler_submit(h.sched, &re, NULL, &err), STRATA_OK);
    wait_done(&e);
    cr_assert_eq(e.finish[0], STRATA_FINISH_STOP);
    cr_assert_leq(e.n[0], 3);
    harness_stop(&h);
}

Test(scheduler, bad_requests_and_cancellation, .timeout = 60)
{
    harness h;
    harness_start(&h, "fixtures/models/hybrid-small", 64);
    strata_error err;
    collected c = {0};
    int32_t bad[2] = {1, 9999};
    strata_request r = greedy_request(bad, 2, 4, &c);
    cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_E_RANGE);
    r = greedy_request(hybrid_prompt, 8, 5000, &c);
    cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_E_LIMIT);
    cr_assert(strstr(err.message, "context limit"), "%s", err.message);
    r = greedy_request(hybrid_prompt, 0, 4, &c);
    cr_assert_eq(strata_scheduler_submit(h.sched, &r, NULL, &err), STRATA_E_INVALID);
    r = greedy_request(hybrid_prompt, 8, 4000, &c);
    uint64_t id;
    cr_assert_eq(strata_scheduler_submit(h.sched, &r, &id, &err), STRATA_OK);
    strata_scheduler_cancel(h.sched, id);
    wait_done(&c);
    cr_assert_eq(c.finish[0], STRATA_FINISH_CANCELLED);
    cr_assert_lt(c.n[0], 4000);
    strata_scheduler_stats st;
    strata_scheduler_get_stats(h.sched, &st);
    cr_assert_eq(st.requests_cancelled, 1);
    harness_stop(&h);
}
