/*
 * jobs.c — generations in flight (see jobs.h).
 *
 * Threads and ownership:
 *   engine thread: the scheduler callbacks (on_token, on_finish, ...) own each
 *     choice's streaming detokenizer and stop-string window, and post events;
 *   loop thread: drains events, owns the results, the response bytes, the
 *     reference count and the job's lifetime.
 * A job holds one reference per submitted prompt (dropped at its DONE event) and one
 * for the HTTP request (dropped when MHD reports the request closed), so it is freed
 * on the loop thread when both sides are finished with it.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "activations.h"
#include "jobs.h"
#include "reasoning.h"
#include "sessions.h"
#include "tool_calls.h"

enum ev_kind { EV_TOKEN, EV_FINISH, EV_PROMPT_LOGPROB, EV_PROGRESS, EV_CHECKPOINT, EV_DONE };

typedef struct event {
    struct event *next;
    gen_job *job;
    enum ev_kind kind;
    int choice;                 /* global choice index; the prompt index for prompt events */
    int pos;                    /* EV_PROMPT_LOGPROB: the prompt position */
    strata_finish finish;
    strata_sample sample;
    strata_cache *snapshot;     /* EV_CHECKPOINT */
    float *logits;              /* EV_CHECKPOINT at the end of a prompt: the logits after it, or NULL */
    size_t len;
    char text[];
} event;

typedef struct sub {
    gen_job *job;
    int index;                  /* which prompt */
    uint64_t sched_id;
    int submitted, done;
    strata_cache *cache;        /* a prefix-cache hit the request continues (owned) */
    int reused;                 /* prompt tokens that hit already held */
    int checkpoints[3];         /* prompt positions worth a snapshot */
} sub;

typedef struct choice_engine {  /* engine thread only */
    strata_detok *detok;
    strbuf pending;             /* decoded text held back: it may start a stop string */
    int stopped;                /* a stop string matched */
} choice_engine;

typedef struct lp_fragments {   /* completions logprobs, as JSON array bodies */
    strbuf tokens, values, top, offsets;
    size_t offset;              /* text offset of the next token */
} lp_fragments;

typedef struct choice_result {  /* loop thread only */
    strbuf text;
    int n_tokens;
    strata_finish finish;
    lp_fragments lp;
    strbuf lp_content;          /* chat logprobs entries */
    int role_sent;              /* chat stream: the role chunk went out */
    int echo_sent;              /* completions stream with echo: the prompt chunk went out */
    size_t streamed;            /* with tools or reasoning: bytes of the content streamed so far */
    size_t reasoning_streamed;  /* with reasoning: bytes of the reasoning streamed so far */
    reasoning_split parts;      /* where the finished text's reasoning and content are (no
                                   reasoning: all content) */
    json_t *calls;              /* with tools: the finished content's tool_calls, or NULL */
    size_t content_len;         /* with calls: the bytes of content before them */
} choice_result;

struct gen_job {
    server *srv;
    http_req *req;              /* NULL once the client is gone */
    gen_params p;
    char id[48];
    long created;
    int refs;
    int n_choices;
    sub subs[MAX_PROMPTS];
    choice_engine *ce;
    choice_result *cr;
    lp_fragments prompt_lp[MAX_PROMPTS]; /* echo + logprobs: the prompt's entries */
    strbuf out;                 /* response bytes not yet handed to MHD */
    int complete;               /* every prompt is done and the last bytes are in out */
    int error_sent;             /* stream: the error event went out */
    const char *cut;            /* why the server cancelled it: "timeout", "shutting_down" or NULL */
    int prompt_tokens, completion_tokens;
    double t0, last_write;
    gen_job *next_live;
    /* on a session */
    session_entry *session;
    int reused, reprocessed;    /* prompt tokens already in the cache; tokens done again */
    const float *session_logits; /* a session checkpoint's logits when the prompt ends there */
    int persisted;              /* the session's save after it worked */
    int32_t *generated;         /* choice 0's tokens, in order */
    int n_generated;
    strata_cache *snapshots[STRATA_SESSION_MAX_CHECKPOINTS]; /* taken during prefill */
    float *snapshot_logits[STRATA_SESSION_MAX_CHECKPOINTS];  /* the end of the prompt's, or NULL */
    int n_snapshots;
};

static struct {
    pthread_mutex_t mu;
    event *head, *tail;
    gen_job *live;
} Q = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* ---------------------------------------------------------------- engine thread */

static void post_snapshot(gen_job *job, enum ev_kind kind, int choice, const char *text, size_t len,
                          const strata_sample *smp, strata_finish finish, int pos, strata_cache *snap, float *logits)
{
    event *e = calloc(1, sizeof *e + len + 1);
    if (!e) { /* the response will miss this piece; the DONE event is what matters */
        strata_cache_free(snap);
        free(logits);
        return;
    }
    *e = (event){.job = job, .kind = kind, .choice = choice, .pos = pos, .finish = finish, .len = len,
                 .snapshot = snap, .logits = logits};
    if (smp)
        e->sample = *smp;
    if (len)
        memcpy(e->text, text, len);
    pthread_mutex_lock(&Q.mu);
    if (Q.tail)
        Q.tail->next = e;
    else
        Q.head = e;
    Q.tail = e;
    pthread_mutex_unlock(&Q.mu);
    uv_async_send(&job->srv->wake);
}

static void post(gen_job *job, enum ev_kind kind, int choice, const char *text, size_t len,
                 const strata_sample *smp, strata_finish finish, int pos)
{
    post_snapshot(job, kind, choice, text, len, smp, finish, pos, NULL, NULL);
}

/* Length of the longest suffix of s that is a proper prefix of a stop string. */
static size_t stop_prefix_hold(const gen_params *p, const char *s, size_t n)
{
    size_t best = 0;
    for (int i = 0; i < p->n_stop; i++) {
        size_t sl = strlen(p->stop[i]);
        for (size_t k = sl - 1 < n ? sl - 1 : n; k > best; k--)
            if (!memcmp(s + n - k, p->stop[i], k)) {
                best = k;
                break;
            }
    }
    return best;
}

/* The earliest stop string in s, or -1. */
static long stop_match(const gen_params *p, const char *s, size_t n)
{
    long best = -1;
    for (int i = 0; i < p->n_stop; i++) {
        const char *m = memmem(s, n, p->stop[i], strlen(p->stop[i]));
        if (m && (best < 0 || m - s < best))
            best = m - s;
    }
    return best;
}

static int on_token(void *user, int choice, const strata_sample *smp)
{
    sub *sb = user;
    gen_job *job = sb->job;
    int c = sb->index * job->p.n + choice;
    choice_engine *ce = &job->ce[c];
    const char *piece = "";
    size_t len = 0;
    if (ce->detok)
        strata_detok_push(ce->detok, smp->token, &piece, &len, NULL);
    sb_append(&ce->pending, piece, len);
    long at = stop_match(&job->p, ce->pending.data ? ce->pending.data : "", ce->pending.len);
    if (at >= 0) {
        ce->stopped = 1;
        post(job, EV_TOKEN, c, ce->pending.data, (size_t)at, smp, 0, 0);
        sb_consume(&ce->pending, ce->pending.len);
        return 1;
    }
    size_t emit = ce->pending.len - stop_prefix_hold(&job->p, ce->pending.data ? ce->pending.data : "", ce->pending.len);
    post(job, EV_TOKEN, c, ce->pending.data, emit, smp, 0, 0);
    sb_consume(&ce->pending, emit);
    return 0;
}

static void on_finish(void *user, int choice, strata_finish reason)
{
    sub *sb = user;
    gen_job *job = sb->job;
    int c = sb->index * job->p.n + choice;
    choice_engine *ce = &job->ce[c];
    if (!ce->stopped && ce->detok) {
        const char *rest;
        size_t len;
        if (strata_detok_flush(ce->detok, &rest, &len, NULL) == STRATA_OK)
            sb_append(&ce->pending, rest, len);
        long at = stop_match(&job->p, ce->pending.data ? ce->pending.data : "", ce->pending.len);
        if (at >= 0) {
            ce->pending.len = (size_t)at;
            reason = STRATA_FINISH_STOP;
        }
    }
    post(job, EV_FINISH, c, ce->stopped ? "" : ce->pending.data, ce->stopped ? 0 : ce->pending.len, NULL, reason, 0);
    sb_consume(&ce->pending, ce->pending.len);
}

static void on_prompt_token(void *user, int pos, const strata_sample *smp)
{
    sub *sb = user;
    post(sb->job, EV_PROMPT_LOGPROB, sb->index, NULL, 0, smp, 0, pos);
}

static void on_progress(void *user, int done, int total)
{
    sub *sb = user;
    if (done < total)
        post(sb->job, EV_PROGRESS, sb->index, NULL, 0, NULL, 0, done);
}

/* A snapshot for the session's checkpoints or the prefix cache; the latter keeps
 * the end of a prompt's logits too, so the same prompt again needs no step. */
static void on_checkpoint(void *user, const strata_cache *cache, int n_prefilled, const float *logits)
{
    (void)n_prefilled;
    sub *sb = user;
    strata_cache *snap;
    if (strata_cache_copy(cache, &snap, NULL) != STRATA_OK)
        return;
    size_t bytes = sizeof(float) * (size_t)strata_model_get_info(sb->job->srv->model)->vocab_size;
    float *kept = logits ? malloc(bytes) : NULL;
    if (kept)
        memcpy(kept, logits, bytes);
    post_snapshot(sb->job, EV_CHECKPOINT, sb->index, NULL, 0, NULL, 0, 0, snap, kept);
}

static void on_done(void *user)
{
    sub *sb = user;
    post(sb->job, EV_DONE, sb->index, NULL, 0, NULL, 0, 0);
}

/* ---------------------------------------------------------------- response bytes */

static const char *finish_name(strata_finish f)
{
    return f == STRATA_FINISH_STOP ? "stop" : "length";
}

/* A choice cancelled by the server (request timeout, shutdown) or failed in the
 * engine ends the request with an error, never a "length" answer that could not be
 * told from a finished one: 1 and e filled when some choice ended so. */
static int job_failure(const gen_job *job, api_error *e)
{
    const char *session = *job->p.session_id ? "; the session keeps what was generated before the cut" : "";
    for (int c = 0; c < job->n_choices; c++) {
        if (job->cr[c].finish == STRATA_FINISH_ERROR) {
            api_fail(e, 500, NULL, "engine_error", "the engine failed while generating%s", session);
            return 1;
        }
        if (job->cr[c].finish != STRATA_FINISH_CANCELLED)
            continue;
        const char *cut = job->cut ? job->cut : "cancelled";
        if (!strcmp(cut, "timeout"))
            api_fail(e, 503, NULL, cut, "the request ran past the server's request timeout (%d s)%s",
                     job->srv->cfg.request_timeout_s, session);
        else if (!strcmp(cut, "shutting_down"))
            api_fail(e, 503, NULL, cut, "the server is shutting down and the request did not finish within its "
                     "grace period%s", session);
        else
            api_fail(e, 503, NULL, cut, "the request was cancelled before it finished%s", session);
        return 1;
    }
    return 0;
}

/* Stream: the request's error as an event (once); respond() then ends with [DONE]. */
static void stream_failure(gen_job *job)
{
    api_error e;
    if (job->error_sent || !job_failure(job, &e))
        return;
    job->error_sent = 1;
    sb_puts(&job->out, "data: ");
    api_error_json(&job->out, &e);
    sb_puts(&job->out, "\n\n");
}

static int cached_tokens(const gen_job *job)
{
    int n = job->reused;
    for (int i = 0; i < job->p.n_prompts; i++)
        n += job->subs[i].reused;
    return n;
}

static void usage_json(strbuf *b, const gen_job *job)
{
    sb_printf(b, "\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,"
                 "\"prompt_tokens_details\":{\"cached_tokens\":%d}}",
              job->prompt_tokens, job->completion_tokens, job->prompt_tokens + job->completion_tokens, cached_tokens(job));
}

/* An SSE chunk up to its choices array. With include_usage, OpenAI gives every
 * chunk but the last a "usage": null (the last carries the usage: last = 1). */
static void chunk_open(strbuf *b, const gen_job *job, int last)
{
    sb_printf(b, "data: {\"id\":\"%s\",\"object\":\"%s\",\"created\":%ld,\"model\":", job->id,
              job->p.chat ? "chat.completion.chunk" : "text_completion", job->created);
    sb_json_string(b, job->srv->cfg.model_name, strlen(job->srv->cfg.model_name));
    sb_puts(b, job->p.include_usage && !last ? ",\"usage\":null,\"choices\":[" : ",\"choices\":[");
}

static void chunk_head(strbuf *b, const gen_job *job)
{
    chunk_open(b, job, 0);
}

/* A token's text for logprobs: the decode of that id alone. */
/* Append an id's text as a JSON string; returns its length in bytes. */
static size_t token_text(const gen_job *job, int32_t id, strbuf *b)
{
    char *t = NULL;
    size_t n = 0;
    if (job->srv->tok && strata_tokenizer_decode(job->srv->tok, &id, 1, 0, &t, &n, NULL) == STRATA_OK)
        sb_json_string(b, t, n);
    else
        sb_printf(b, "\"<%d>\"", id);
    free(t);
    return n;
}

/* Chat logprobs entry: {"token","logprob","bytes","top_logprobs":[...]}; `bytes`
 * are the token's own (a byte token's part of a character, which the token text
 * can only show as U+FFFD), so a client can join a character split over tokens. */
static void chat_lp_entry(const gen_job *job, strbuf *b, int32_t id, float lp, const strata_sample *smp, int top)
{
    sb_puts(b, "{\"token\":");
    token_text(job, id, b);
    size_t n;
    const char *raw = token_piece(job->srv, id, &n);
    sb_printf(b, ",\"logprob\":%.6g,\"bytes\":[", (double)lp);
    for (size_t i = 0; i < n; i++)
        sb_printf(b, i ? ",%u" : "%u", (unsigned char)raw[i]);
    sb_puts(b, "]");
    if (top) {
        sb_puts(b, ",\"top_logprobs\":[");
        for (int k = 0; k < smp->n_top && k < job->p.logprobs; k++) {
            if (k)
                sb_puts(b, ",");
            chat_lp_entry(job, b, smp->top[k].id, smp->top[k].logprob, smp, 0);
        }
        sb_puts(b, "]");
    }
    sb_puts(b, "}");
}

static void lp_free(lp_fragments *f)
{
    sb_free(&f->tokens);
    sb_free(&f->values);
    sb_free(&f->top);
    sb_free(&f->offsets);
}

/* Append one completions entry: token text, its logprob (NaN: null), alternatives. */
/* text_len: the text the entry stands for; TOKEN_OWN_TEXT: the token's own. */
#define TOKEN_OWN_TEXT ((size_t)-1)
static void lp_add(const gen_job *job, lp_fragments *f, int32_t id, float lp, const strata_sample *alts,
                   size_t text_len)
{
    const char *sep = f->values.len ? "," : "";
    sb_puts(&f->tokens, sep);
    size_t own = token_text(job, id, &f->tokens);
    if (text_len == TOKEN_OWN_TEXT)
        text_len = own;
    if (lp != lp)
        sb_printf(&f->values, "%snull", sep);
    else
        sb_printf(&f->values, "%s%.6g", sep, (double)lp);
    sb_printf(&f->offsets, "%s%zu", sep, f->offset);
    if (!alts) {
        sb_printf(&f->top, "%snull", sep);
    } else {    /* the `logprobs` most likely, and the token itself where it is not among them */
        int listed = 0, k = 0;
        sb_printf(&f->top, "%s{", sep);
        for (; k < alts->n_top && k < job->p.logprobs; k++) {
            if (k)
                sb_puts(&f->top, ",");
            token_text(job, alts->top[k].id, &f->top);
            sb_printf(&f->top, ":%.6g", (double)alts->top[k].logprob);
            listed |= alts->top[k].id == id;
        }
        if (!listed && lp == lp) {
            sb_puts(&f->top, k ? "," : "");
            token_text(job, id, &f->top);
            sb_printf(&f->top, ":%.6g", (double)lp);
        }
        sb_puts(&f->top, "}");
    }
    f->offset += text_len;
}

/* Record a sampled token's logprobs in the choice's result. */
static void record_logprobs(gen_job *job, choice_result *cr, const strata_sample *smp, size_t text_len)
{
    if (job->p.logprobs < 0)
        return;
    if (job->p.chat) {
        if (cr->lp_content.len)
            sb_puts(&cr->lp_content, ",");
        chat_lp_entry(job, &cr->lp_content, smp->token, smp->logprob, smp, 1);
        return;
    }
    lp_add(job, &cr->lp, smp->token, smp->logprob, smp, text_len);
}

static void join2(strbuf *b, const strbuf *x, const strbuf *y)
{
    sb_append(b, x ? x->data : NULL, x ? x->len : 0);
    if (x && x->len && y->len)
        sb_puts(b, ",");
    sb_append(b, y->data, y->len);
}

/* {"tokens", "token_logprobs", "top_logprobs", "text_offset"}, prompt entries first. */
static void completion_logprobs_json(strbuf *b, const gen_job *job, const lp_fragments *f, const lp_fragments *prompt)
{
    if (job->p.logprobs < 0) {
        sb_puts(b, "null");
        return;
    }
    sb_puts(b, "{\"tokens\":[");
    join2(b, prompt ? &prompt->tokens : NULL, &f->tokens);
    sb_puts(b, "],\"token_logprobs\":[");
    join2(b, prompt ? &prompt->values : NULL, &f->values);
    sb_puts(b, "],\"top_logprobs\":[");
    join2(b, prompt ? &prompt->top : NULL, &f->top);
    sb_puts(b, "],\"text_offset\":["); /* a choice's offsets start after its echo (job_new) */
    join2(b, prompt ? &prompt->offsets : NULL, &f->offsets);
    sb_puts(b, "]}");
}

/* The text echo adds in front of a completion: the prompt as given. */
static void echo_text(const gen_job *job, int prompt, strbuf *b)
{
    const gen_params *p = &job->p;
    if (p->prompt_text[prompt]) {
        sb_puts(b, p->prompt_text[prompt]);
        return;
    }
    char *t = NULL;
    size_t n = 0;
    if (job->srv->tok && strata_tokenizer_decode(job->srv->tok, p->prompts[prompt], (size_t)p->prompt_len[prompt], 0,
                                                  &t, &n, NULL) == STRATA_OK)
        sb_append(b, t, n);
    free(t);
}

/* Completions streamed with echo: the choice's first chunk is its prompt as given,
 * with the prompt's logprobs entries when asked (the prompt is scored by then). */
static void stream_echo_chunk(gen_job *job, int c)
{
    strbuf *b = &job->out, text = {0};
    int prompt = c / job->p.n;
    static const lp_fragments none;
    echo_text(job, prompt, &text);
    chunk_head(b, job);
    sb_printf(b, "{\"index\":%d,\"text\":", c);
    sb_json_string(b, text.data ? text.data : "", text.len);
    sb_puts(b, ",\"logprobs\":");
    completion_logprobs_json(b, job, &none, &job->prompt_lp[prompt]);
    sb_puts(b, ",\"finish_reason\":null}]}\n\n");
    sb_free(&text);
    job->cr[c].echo_sent = 1;
}

static void stream_text_chunk(gen_job *job, int c, const char *text, size_t len, const strata_sample *smp,
                              const char *finish)
{
    strbuf *b = &job->out;
    choice_result *cr = &job->cr[c];
    if (job->p.echo && !job->p.chat && !cr->echo_sent)
        stream_echo_chunk(job, c);
    if (job->p.chat && !cr->role_sent) {
        chunk_head(b, job);
        sb_printf(b, "{\"index\":%d,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,"
                     "\"finish_reason\":null}]}\n\n", c);
        cr->role_sent = 1;
    }
    if (!len && !finish && (job->p.logprobs < 0 || !smp))
        return;
    chunk_head(b, job);
    if (job->p.chat) {
        sb_printf(b, "{\"index\":%d,\"delta\":{", c);
        if (len || !finish) {
            sb_puts(b, "\"content\":");
            sb_json_string(b, text, len);
        }
        sb_puts(b, "},\"logprobs\":");
        if (smp && job->p.logprobs >= 0) {
            sb_puts(b, "{\"content\":[");
            chat_lp_entry(job, b, smp->token, smp->logprob, smp, 1);
            sb_puts(b, "]}");
        } else {
            sb_puts(b, "null");
        }
    } else {
        sb_printf(b, "{\"index\":%d,\"text\":", c);
        sb_json_string(b, text, len);
        sb_puts(b, ",\"logprobs\":");
        if (smp && job->p.logprobs >= 0) {
            lp_fragments one = {.offset = job->cr[c].lp.offset};
            lp_add(job, &one, smp->token, smp->logprob, smp, len);
            job->cr[c].lp.offset = one.offset;
            completion_logprobs_json(b, job, &one, NULL);
            lp_free(&one);
        } else {
            sb_puts(b, "null");
        }
    }
    sb_puts(b, ",\"finish_reason\":");
    if (finish)
        sb_printf(b, "\"%s\"", finish);
    else
        sb_puts(b, "null");
    sb_puts(b, "}]}\n\n");
}

/* "tool_calls":[...]; streamed, each call also carries its "index". */
static void tool_calls_json(strbuf *b, json_t *calls, int indexed)
{
    size_t i;
    json_t *call;
    sb_puts(b, "\"tool_calls\":[");
    json_array_foreach(calls, i, call) {
        json_t *one = json_deep_copy(call);
        if (indexed)
            json_object_set_new(one, "index", json_integer((json_int_t)i));
        char *text = json_dumps(one, JSON_COMPACT);
        sb_printf(b, "%s%s", i ? "," : "", text ? text : "{}");
        free(text);
        json_decref(one);
    }
    sb_puts(b, "]");
}

/* A chat delta of reasoning text: {"reasoning_content": ...}. */
static void stream_reasoning_chunk(gen_job *job, int c, const char *text, size_t len)
{
    stream_text_chunk(job, c, "", 0, NULL, NULL);  /* the role first */
    chunk_head(&job->out, job);
    sb_printf(&job->out, "{\"index\":%d,\"delta\":{\"reasoning_content\":", c);
    sb_json_string(&job->out, text, len);
    sb_puts(&job->out, "},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
}

/* The reasoning in parts (with reasoning_format "deepseek"): what is new of it. */
static void stream_reasoning_so_far(gen_job *job, int c, const reasoning_split *parts)
{
    choice_result *cr = &job->cr[c];
    size_t have = parts->r_end - parts->r_begin;
    if (have > cr->reasoning_streamed)
        stream_reasoning_chunk(job, c, cr->text.data + parts->r_begin + cr->reasoning_streamed,
                               have - cr->reasoning_streamed);
    cr->reasoning_streamed = have > cr->reasoning_streamed ? have : cr->reasoning_streamed;
}

/* With tools or reasoning, a choice streams as its text settles: the reasoning as
 * far as it cannot be the start of </think>, the content only up to where a call
 * may begin. */
static void stream_so_far(gen_job *job, int c, const strata_sample *smp)
{
    choice_result *cr = &job->cr[c];
    const char *text = cr->text.data ? cr->text.data : "";
    reasoning_split parts = {0, 0, 0};
    if (job->p.reasoning) {
        reasoning_split_text(text, cr->text.len, job->p.think_open, 0, &parts);
        stream_reasoning_so_far(job, c, &parts);
    }
    const char *content = text + parts.c_begin;
    size_t len = cr->text.len - parts.c_begin, limit = len;
    /* a call's marker can only start within the tail held back: look from there on */
    if (job->p.tools)
        limit = cr->streamed + tool_content_limit(job->srv->tool_syntax, content + cr->streamed, len - cr->streamed);
    stream_text_chunk(job, c, content + cr->streamed, limit - cr->streamed, smp, NULL);
    cr->streamed = limit;
}

/* The end of a choice streamed as it settled: the rest of its reasoning, its content
 * up to its calls, the calls as one delta, then finish_reason "tool_calls" (or,
 * without calls, the rest as text and the finish reason). */
static void stream_settled_finish(gen_job *job, int c, const char *finish)
{
    choice_result *cr = &job->cr[c];
    stream_reasoning_so_far(job, c, &cr->parts);
    const char *text = (cr->text.data ? cr->text.data : "") + cr->parts.c_begin;
    size_t end = cr->calls ? cr->content_len : cr->text.len - cr->parts.c_begin;
    if (!cr->calls) {
        stream_text_chunk(job, c, text + cr->streamed, end > cr->streamed ? end - cr->streamed : 0, NULL, finish);
        return;
    }
    if (end > cr->streamed)
        stream_text_chunk(job, c, text + cr->streamed, end - cr->streamed, NULL, NULL);
    chunk_head(&job->out, job);
    sb_printf(&job->out, "{\"index\":%d,\"delta\":{", c);
    tool_calls_json(&job->out, cr->calls, 1);
    sb_puts(&job->out, "},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    stream_text_chunk(job, c, "", 0, NULL, "tool_calls");
}

/* ,"activations": the captures at the rows that produced each generated token. */
static void generated_activations(const gen_job *job, strbuf *b)
{
    if (!job->p.capture)
        return;
    sb_puts(b, ",\"activations\":");
    activations_json(b, job->p.capture, job->p.prompt_len[0] - 1, job->cr[0].n_tokens);
}

static void final_json(gen_job *job, strbuf *b)
{
    const gen_params *p = &job->p;
    sb_printf(b, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%ld,\"model\":", job->id,
              p->chat ? "chat.completion" : "text_completion", job->created);
    sb_json_string(b, job->srv->cfg.model_name, strlen(job->srv->cfg.model_name));
    sb_puts(b, ",\"choices\":[");
    for (int c = 0; c < job->n_choices; c++) {
        choice_result *cr = &job->cr[c];
        sb_printf(b, "%s{\"index\":%d,", c ? "," : "", c);
        if (p->chat) {
            const char *text = cr->text.data ? cr->text.data : "";
            sb_puts(b, "\"message\":{\"role\":\"assistant\",\"content\":");
            size_t n = cr->calls ? cr->content_len : cr->text.len - cr->parts.c_begin;
            if (cr->calls && !n)
                sb_puts(b, "null");
            else
                sb_json_string(b, text + cr->parts.c_begin, n);
            if (p->reasoning) {
                sb_puts(b, ",\"reasoning_content\":");
                if (cr->parts.r_end > cr->parts.r_begin)
                    sb_json_string(b, text + cr->parts.r_begin, cr->parts.r_end - cr->parts.r_begin);
                else
                    sb_puts(b, "null");
            }
            if (cr->calls) {
                sb_puts(b, ",");
                tool_calls_json(b, cr->calls, 0);
            }
            sb_puts(b, "},\"logprobs\":");
            if (p->logprobs >= 0) {
                sb_puts(b, "{\"content\":[");
                sb_append(b, cr->lp_content.data, cr->lp_content.len);
                sb_puts(b, "]}");
            } else {
                sb_puts(b, "null");
            }
        } else {
            strbuf text = {0};
            if (p->echo)
                echo_text(job, c / p->n, &text);
            sb_append(&text, cr->text.data, cr->text.len);
            sb_puts(b, "\"text\":");
            sb_json_string(b, text.data ? text.data : "", text.len);
            sb_free(&text);
            sb_puts(b, ",\"logprobs\":");
            completion_logprobs_json(b, job, &cr->lp, p->echo ? &job->prompt_lp[c / p->n] : NULL);
        }
        sb_printf(b, ",\"finish_reason\":\"%s\"}", cr->calls ? "tool_calls" : finish_name(cr->finish));
    }
    sb_puts(b, "],");
    usage_json(b, job);
    if (*job->p.session_id) {
        sb_printf(b, ",\"session\":{\"id\":\"%s\",\"tokens_reused\":%d,\"tokens_reprocessed\":%d",
                  job->p.session_id, job->reused, job->reprocessed);
        if (*job->srv->cfg.state_dir)  /* whether the save after it worked (the log says why not) */
            sb_printf(b, ",\"persisted\":%s", job->persisted ? "true" : "false");
        sb_puts(b, "}");
    }
    generated_activations(job, b);
    sb_puts(b, "}");
}

/* ---------------------------------------------------------------- loop thread */

static void job_free(gen_job *job)
{
    gen_job **pp = &Q.live;
    while (*pp && *pp != job)
        pp = &(*pp)->next_live;
    if (*pp)
        *pp = job->next_live;
    for (int c = 0; c < job->n_choices; c++) {
        strata_detok_free(job->ce[c].detok);
        sb_free(&job->ce[c].pending);
        choice_result *cr = &job->cr[c];
        sb_free(&cr->text);
        lp_free(&cr->lp);
        sb_free(&cr->lp_content);
        json_decref(cr->calls);
    }
    for (int i = 0; i < MAX_PROMPTS; i++)
        lp_free(&job->prompt_lp[i]);
    for (int i = 0; i < job->n_snapshots; i++) {
        strata_cache_free(job->snapshots[i]);
        free(job->snapshot_logits[i]);
    }
    for (int i = 0; i < job->p.n_prompts; i++)
        strata_cache_free(job->subs[i].cache);
    free(job->generated);
    free(job->ce);
    free(job->cr);
    sb_free(&job->out);
    gen_params_free(&job->p);
    free(job);
}

static void unref(gen_job *job)
{
    if (--job->refs == 0)
        job_free(job);
}

static void wake_client(gen_job *job)
{
    if (job->req && job->req->suspended) {
        http_resume(job->req);
        http_kick(job->srv);
    }
}

static void remember_token(gen_job *job, int32_t token)
{
    int32_t *grown = realloc(job->generated, sizeof *grown * (size_t)(job->n_generated + 1));
    if (grown) {
        job->generated = grown;
        job->generated[job->n_generated++] = token;
    }
}

/* The request on a session is over: record what its cache consumed, keep the
 * checkpoints taken during prefill and one at the end (the session stays busy until
 * it is saved). */
static void session_finish(gen_job *job)
{
    session_entry *e = job->session;
    strata_session *s = e->s;
    strata_error err;
    strata_session_append(s, job->p.prompts[0] + job->reused, job->p.prompt_len[0] - job->reused, &err);
    strata_session_append(s, job->generated, job->n_generated, &err);
    strata_session_sync(s);
    for (int i = 0; i < job->n_snapshots; i++)
        strata_session_adopt_checkpoint(s, job->snapshots[i], job->snapshot_logits[i], 1, &err);
    job->n_snapshots = 0;
    strata_session_checkpoint(s, 1, &err);
    sessions_touch(e);
    e->last_reprocessed = job->reprocessed + job->p.replayed;
}

static void respond(gen_job *job, const session_entry *se);

/* The session is saved: release it, then answer. */
static void session_saved(void *arg)
{
    gen_job *job = arg;
    session_entry *se = job->session;
    se->busy = 0;
    job->persisted = se->on_disk;
    job->session = NULL;
    respond(job, se);
    wake_client(job);
    unref(job);
}

/* Every choice is done: answer, once the session (if any) is saved in the background
 * (session_saved): the answer still means the session is on disk, and the loop
 * thread serves the other clients meanwhile. */
static void all_done(gen_job *job)
{
    for (int i = 0; i < job->p.n_prompts; i++)
        if (!job->subs[i].done)
            return;
    session_entry *se = job->session;
    if (se) {
        session_finish(job);
        job->refs++;
        if (sessions_persist_async(job->srv, se, session_saved, job))
            return;
        job->refs--;
        se->busy = 0;
        job->session = NULL;
    }
    respond(job, se);
}

/* The response's last bytes. */
static void respond(gen_job *job, const session_entry *se)
{
    if (job->p.response == RESP_SESSION) {
        session_json(se, &job->out);
    } else if (job->p.stream) {
        if (!job->error_sent && (job->p.include_usage || job->p.capture)) {
            chunk_open(&job->out, job, 1);
            sb_puts(&job->out, "]");
            if (job->p.include_usage) {
                sb_puts(&job->out, ",");
                usage_json(&job->out, job);
            }
            generated_activations(job, &job->out);
            sb_puts(&job->out, "}\n\n");
        }
        sb_puts(&job->out, "data: [DONE]\n\n");
    } else {
        api_error e;
        if (job_failure(job, &e)) {
            job->p.status = e.status;
            api_error_json(&job->out, &e);
        } else {
            final_json(job, &job->out);
        }
    }
    job->complete = 1;
}

/* The bytes prompt token id stands for in the echoed text of a prompt given as text:
 * none for a special token the tokenizer added (BOS), which that text lacks. */
static size_t echoed_len(const gen_job *job, int prompt, int32_t id)
{
    char *t = NULL;
    size_t n = 0;
    if (!job->p.prompt_text[prompt] || !job->srv->tok ||
        strata_tokenizer_decode(job->srv->tok, &id, 1, 1, &t, &n, NULL) != STRATA_OK)
        n = TOKEN_OWN_TEXT;
    free(t);
    return n;
}

/* echo + logprobs: prompt position pos (>= 1) scored (its logprob and the top
 * alternatives there); position 0 has none. */
static void prompt_logprob(gen_job *job, int prompt, int pos, const strata_sample *smp)
{
    lp_fragments *f = &job->prompt_lp[prompt];
    const int32_t *ids = job->p.prompts[prompt];
    if (pos == 1)
        lp_add(job, f, ids[0], NAN, NULL, echoed_len(job, prompt, ids[0]));
    lp_add(job, f, ids[pos], smp->logprob, smp, echoed_len(job, prompt, ids[pos]));
}

/* A token that ends the answer (EOS) is not part of a chat message: OpenAI lists
 * no logprobs for it. */
static int ends_answer(const gen_job *job, int32_t id)
{
    for (int i = 0; !job->p.ignore_eos && i < job->srv->n_eos; i++)
        if (job->srv->eos_ids[i] == id)
            return 1;
    return 0;
}

static void apply(gen_job *job, event *e)
{
    server *srv = job->srv;
    choice_result *cr = e->kind == EV_TOKEN || e->kind == EV_FINISH ? &job->cr[e->choice] : NULL;
    switch (e->kind) {
    case EV_TOKEN:
        if (job->session && e->choice == 0)
            remember_token(job, e->sample.token);
        cr->n_tokens++;
        job->completion_tokens++;
        sb_append(&cr->text, e->text, e->len);
        const strata_sample *lp = job->p.chat && ends_answer(job, e->sample.token) ? NULL : &e->sample;
        if (job->p.stream && (job->p.tools || job->p.reasoning))
            stream_so_far(job, e->choice, lp);
        else if (job->p.stream)
            stream_text_chunk(job, e->choice, e->text, e->len, lp, NULL);
        else if (lp)
            record_logprobs(job, cr, lp, e->len);
        if (job->req)
            job->req->tokens++;
        break;
    case EV_FINISH:
        cr->finish = e->finish;
        sb_append(&cr->text, e->text, e->len);
        if (e->finish == STRATA_FINISH_CANCELLED || e->finish == STRATA_FINISH_ERROR) {
            if (job->p.stream)
                stream_failure(job);
            break;
        }
        if (job->p.reasoning)
            reasoning_split_text(cr->text.data ? cr->text.data : "", cr->text.len, job->p.think_open, 1, &cr->parts);
        if (job->p.tools) {
            char stem[64];
            snprintf(stem, sizeof stem, "%s_%d", strchr(job->id, '-') + 1, e->choice);
            cr->calls = tool_calls_parse(srv->tool_syntax, job->p.tools, (cr->text.data ? cr->text.data : "") +
                                         cr->parts.c_begin, cr->text.len - cr->parts.c_begin, stem, &cr->content_len);
            while (job->p.one_call && json_array_size(cr->calls) > 1)  /* parallel_tool_calls: false */
                json_array_remove(cr->calls, json_array_size(cr->calls) - 1);
        }
        if (job->p.stream && (job->p.tools || job->p.reasoning))
            stream_settled_finish(job, e->choice, finish_name(e->finish));
        else if (job->p.stream)
            stream_text_chunk(job, e->choice, e->text, e->len, NULL, finish_name(e->finish));
        break;
    case EV_PROMPT_LOGPROB:
        prompt_logprob(job, e->choice, e->pos, &e->sample);
        break;
    case EV_CHECKPOINT:
        if (!job->session) {
            strata_prefix_cache_insert(srv->prefix, job->p.prompts[e->choice], job->p.prompt_len[e->choice], e->snapshot,
                                       e->logits, NULL);
        } else if (job->n_snapshots < STRATA_SESSION_MAX_CHECKPOINTS) {
            job->snapshot_logits[job->n_snapshots] = e->logits;
            job->snapshots[job->n_snapshots++] = e->snapshot;
        } else {
            strata_cache_free(e->snapshot);
            free(e->logits);
        }
        break;
    case EV_PROGRESS:
        if (job->p.stream && now_seconds() - job->last_write > 1.0) {
            sb_puts(&job->out, ": ping\n\n");
            job->last_write = now_seconds();
        }
        break;
    case EV_DONE:
        job->subs[e->choice].done = 1;
        all_done(job);
        wake_client(job);
        unref(job);
        return;
    }
    (void)srv;
    wake_client(job);
}

void jobs_drain(server *srv)
{
    (void)srv;
    pthread_mutex_lock(&Q.mu);
    event *e = Q.head;
    Q.head = Q.tail = NULL;
    pthread_mutex_unlock(&Q.mu);
    while (e) {
        event *next = e->next;
        apply(e->job, e);
        free(e);
        e = next;
    }
}

/* ---------------------------------------------------------------- HTTP side */

void gen_params_free(gen_params *p)
{
    free(p->bias_ids);
    free(p->bias_values);
    for (int i = 0; i < p->n_stop; i++)
        free(p->stop[i]);
    for (int i = 0; i < p->n_prompts; i++) {
        free(p->prompts[i]);
        free(p->prompt_text[i]);
        strata_interventions_free(p->iv[i]);
    }
    strata_capture_free(p->capture);
    strata_constraint_free(p->constraint);
    json_decref(p->tools);
    memset(p, 0, sizeof *p);
}

/* The streaming body: hand out what is ready; suspend until more arrives. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    gen_job *job = cls;
    if (job->out.len) {
        size_t n = job->out.len < max ? job->out.len : max;
        memcpy(buf, job->out.data, n);
        sb_consume(&job->out, n);
        job->last_write = now_seconds();
        return (ssize_t)n;
    }
    if (job->complete || !job->req)
        return MHD_CONTENT_READER_END_OF_STREAM;
    http_suspend(job->req);
    return 0;
}

static enum MHD_Result start_stream(http_req *r, gen_job *job)
{
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, job, NULL);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    r->status = 200;
    enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static uint64_t fresh_seed(void)
{
    static uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (++counter * 0x9e3779b97f4a7c15ULL);
}

/* Run q on `cache`, whose state already holds the prompt's first `reused` tokens;
 * snapshot at the given prompt positions that lie in what is left to process. */
static void continue_from(strata_request *q, strata_cache *cache, int reused, const int *marks, int n_marks,
                          int *rel)
{
    int k = 0;
    for (int m = 0; m < n_marks; m++)
        if (marks[m] > reused && marks[m] < q->n_prompt)
            rel[k++] = marks[m] - reused;
    q->cache = cache;
    q->history = q->prompt;     /* the repetition penalty sees the whole prompt */
    q->n_history = reused;
    q->prompt += reused;
    q->n_prompt -= reused;
    q->checkpoint_at = rel;
    q->n_checkpoint_at = k;
    q->on_checkpoint = on_checkpoint;
}

static strata_request request_of(gen_job *job, int i)
{
    server *srv = job->srv;
    const gen_params *p = &job->p;
    strata_request q = {.prompt = p->prompts[i], .n_prompt = p->prompt_len[i], .max_tokens = p->max_tokens,
                        .n = p->n, .sampling = p->sampling, .stop_ids = srv->eos_ids, .n_stop_ids = srv->n_eos,
                        .ignore_eos = p->ignore_eos, .prompt_logprobs = p->echo && p->logprobs >= 0 && !p->chat,
                        .user = &job->subs[i], .on_token = on_token, .on_prompt_token = on_prompt_token,
                        .on_progress = on_progress, .on_finish = on_finish, .on_done = on_done,
                        .interventions = p->iv[i], .capture = i == 0 ? p->capture : NULL};
    q.sampling.seed = p->sampling.seed + (uint64_t)i * STRATA_MAX_CHOICES;
    sub *sb = &job->subs[i];
    if (job->session) {
        int marks[2] = {p->checkpoint_at, p->checkpoint_at2};
        continue_from(&q, strata_session_cache(job->session->s), job->reused, marks, 2, sb->checkpoints);
        q.checkpoint_every = srv->cfg.checkpoint_every;
        q.prompt_logits = job->session_logits;
    } else if (srv->prefix && !p->iv[i] && !p->capture && !q.prompt_logprobs) {
        /* (a snapshot holds unsteered state and at most the logits after its last
         * token: runs that steer, capture or score the prompt start fresh) */
        int branch = 0;
        strata_prefix_cache_lookup(srv->prefix, q.prompt, q.n_prompt, &sb->cache, &sb->reused, &branch,
                                   &q.prompt_logits, NULL);
        int marks[3] = {branch, p->checkpoint_at, p->checkpoint_at2};
        continue_from(&q, sb->cache, sb->reused, marks, 3, sb->checkpoints);
    }
    return q;
}

static gen_job *job_new(http_req *r, gen_params *p)
{
    gen_job *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->srv = r->srv;
    job->req = r;
    job->p = *p;
    memset(p, 0, sizeof *p);
    job->n_choices = job->p.n_prompts * job->p.n;
    job->ce = calloc((size_t)job->n_choices, sizeof *job->ce);
    job->cr = calloc((size_t)job->n_choices, sizeof *job->cr);
    job->created = (long)time(NULL);
    job->t0 = job->last_write = now_seconds();
    static unsigned long serial;
    snprintf(job->id, sizeof job->id, "%s-%lx%06lx", job->p.chat ? "chatcmpl" : "cmpl", (unsigned long)time(NULL),
             ++serial & 0xffffff);
    int ok = job->ce && job->cr;
    for (int c = 0; ok && c < job->n_choices && job->srv->tok; c++)
        ok = strata_detok_new(job->srv->tok, 1, &job->ce[c].detok, NULL) == STRATA_OK;
    for (int i = 0; i < job->p.n_prompts; i++) {
        job->subs[i] = (sub){.job = job, .index = i};
        job->prompt_tokens += job->p.prompt_len[i];
        if (job->p.echo && !job->p.chat) {
            strbuf t = {0};
            echo_text(job, i, &t);
            job->prompt_lp[i].offset = 0;
            for (int k = 0; k < job->p.n; k++)
                job->cr[i * job->p.n + k].lp.offset = t.len;
            sb_free(&t);
        }
    }
    if (!ok) {
        job->refs = 1;
        unref(job);
        return NULL;
    }
    if (!job->p.sampling.seed)
        job->p.sampling.seed = fresh_seed();
    job->next_live = Q.live;
    Q.live = job;
    return job;
}

/* Claim the job's session (single writer) and line its cache up with the prompt. */
static int take_session(http_req *r, gen_job *job, enum MHD_Result *ret)
{
    api_error ae;
    session_entry *e = sessions_find(r->srv, job->p.session_id, &ae);
    strata_error err;
    if (!e) {
        *ret = http_send_api_error(r, &ae);
        return 0;
    }
    if (e->busy) {
        *ret = http_send_error(r, 409, "session", "session_busy", "session '%s' is busy with another request", e->id);
        return 0;
    }
    if (!sessions_fit(r->srv, e, &ae)) {
        *ret = http_send_api_error(r, &ae);
        return 0;
    }
    if (job->p.n != 1 || job->p.n_prompts != 1) {
        *ret = http_send_error(r, 400, "n", "invalid_value", "a request on a session has one prompt and n = 1");
        return 0;
    }
    if (strata_session_prepare(e->s, job->p.prompts[0], job->p.prompt_len[0], &job->reused, &job->reprocessed,
                               &job->session_logits, &err) != STRATA_OK) {
        *ret = http_send_error(r, 500, "session", "internal_error", "%s", err.message);
        return 0;
    }
    sessions_claim(e);
    job->session = e;
    return 1;
}

enum MHD_Result job_start(http_req *r, gen_params *p)
{
    server *srv = r->srv;
    gen_job *job = job_new(r, p);
    if (!job) {
        gen_params_free(p);
        return http_send_error(r, 500, NULL, "internal_error", "out of memory");
    }
    job->refs = 1; /* the HTTP request's */
    if (*job->p.session_id) {
        enum MHD_Result ret;
        if (!take_session(r, job, &ret)) {
            job->req = NULL;
            unref(job);
            return ret;
        }
    }
    for (int i = 0; i < job->p.n_prompts; i++) {
        strata_request q = request_of(job, i);
        strata_error err;
        strata_status st = strata_scheduler_submit(srv->sched, &q, &job->subs[i].sched_id, &err);
        if (st != STRATA_OK) {
            for (int k = 0; k < i; k++)
                strata_scheduler_cancel(srv->sched, job->subs[k].sched_id);
            job->req = NULL;
            r->job = NULL;
            if (job->session) {
                strata_session_sync(job->session->s);
                job->session->busy = 0;
                job->session = NULL;
            }
            int status = st == STRATA_E_LIMIT && strstr(err.message, "queue") ? 429 : 400;
            enum MHD_Result ret = http_send_error(r, status, status == 400 ? "prompt" : NULL,
                                                  status == 429 ? "queue_full" : "context_length_exceeded", "%s",
                                                  err.message);
            unref(job); /* the DONE events of submitted prompts hold their own references */
            return ret;
        }
        job->refs++;
    }
    r->job = job;
    srv->m.request_prompt_tokens += (uint64_t)job->prompt_tokens;
    if (job->p.stream)
        return start_stream(r, job);
    http_suspend(r);
    return MHD_YES;
}

enum MHD_Result route_generation_resumed(http_req *r)
{
    gen_job *job = r->job;
    if (job->p.stream || !job->complete) {
        if (!job->p.stream)
            http_suspend(r);
        return MHD_YES;
    }
    int status = job->p.status ? job->p.status : 200;
    return http_send(r, status, "application/json", job->out.data ? job->out.data : "", job->out.len);
}

void route_generation_closed(http_req *r)
{
    gen_job *job = r->job;
    r->job = NULL;
    job->req = NULL;
    if (!job->complete)
        for (int i = 0; i < job->p.n_prompts; i++)
            if (!job->subs[i].done)
                strata_scheduler_cancel(job->srv->sched, job->subs[i].sched_id);
    unref(job);
}

/* A suspended request whose peer closed its socket: recv() peeks 0 bytes. */
static int client_gone(http_req *r)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return 0;
    char c;
    return recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

void jobs_sweep(server *srv)
{
    double now = now_seconds();
    for (gen_job *job = Q.live; job; job = job->next_live) {
        if (job->complete)
            continue;
        int expired = srv->cfg.request_timeout_s > 0 && now - job->t0 > srv->cfg.request_timeout_s;
        int gone = job->req && job->req->suspended && !job->p.stream && client_gone(job->req);
        if (expired && !job->cut)
            job->cut = "timeout";
        if (expired || gone)
            for (int i = 0; i < job->p.n_prompts; i++)
                if (!job->subs[i].done)
                    strata_scheduler_cancel(srv->sched, job->subs[i].sched_id);
        if (job->p.stream && job->req && now - job->last_write > 5.0) {
            sb_puts(&job->out, ": ping\n\n");
            job->last_write = now;
            wake_client(job);
        }
    }
}

void jobs_cut(server *srv, const char *why)
{
    (void)srv;
    for (gen_job *job = Q.live; job; job = job->next_live)
        if (!job->complete && !job->cut)
            job->cut = why;
}

int jobs_active(const server *srv)
{
    (void)srv;
    int n = 0;
    for (gen_job *job = Q.live; job; job = job->next_live)
        n += !job->complete;
    return n;
}


