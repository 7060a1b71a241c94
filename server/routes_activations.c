/*
 * routes_activations.c — GET /v1/hooks and POST /v1/activations.
 *
 * An activations request is one run, or `runs: [...]` executed in order so that a
 * later run can patch from an earlier run's captures (clean → corrupted activation
 * patching in one round trip). Each run is a scheduler request with max_tokens 0,
 * a capture and interventions: the model runs on the engine thread, batched with
 * everything else, never on the loop thread.
 *
 * Threads and ownership: the loop thread owns the act_job; the engine thread only
 * calls on_done, which posts the job to a mutex-protected list and wakes the loop.
 * References: one for the HTTP request (dropped when MHD closes it), one while a run
 * is in the scheduler (dropped at its done event), one for a streaming response
 * (dropped when MHD frees the response).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include "activations.h"
#include "parse.h"
#include "sessions.h"

#define MAX_RUNS 16
#define MAX_HOOKS 256

typedef struct act_run {
    int32_t *ids;
    int n;
    char **pieces;
    json_t *spec;               /* the run's object (borrowed from the body) */
    strata_capture *cap;
    strata_interventions *iv;
    int *sel;                   /* output positions, resolved (NULL: all) */
    int n_sel;
    int32_t *sel_raw;           /* as given, for "positions" */
    out_tensor *t;
    int n_t;
} act_run;

typedef struct act_job {
    server *srv;
    http_req *req;
    json_t *body;
    act_run runs[MAX_RUNS];
    int n_runs, cur;
    out_format format;
    int refs;
    uint64_t sched_id;
    int in_engine;
    strata_finish finish;
    int complete;               /* every run done, or failed */
    api_error err;              /* err.status != 0: the request failed */
    out_run out[MAX_RUNS];
    out_stream *stream;
    struct act_job *next_done;
    /* continuing a session: the one run goes on in the session itself ("commit":
     * true: the session is busy until then), or each run from a fork of `base`, a copy
     * of the session's state taken when the request came (dry run: the request holds
     * nothing of the session, which may meanwhile change, move to disk or go) */
    session_entry *session;     /* committing only */
    int commit, origin;
    int saving;                 /* the committed session is being written (the answer waits) */
    strata_cache *base, *fork;
} act_job;

static struct {
    pthread_mutex_t mu;
    act_job *done;
} AQ = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* ---------------------------------------------------------------- GET /v1/hooks */

enum MHD_Result route_hooks(http_req *r)
{
    const strata_model *m = r->srv->model;
    strbuf b = {0};
    sb_puts(&b, "{\"object\":\"list\",\"model\":");
    sb_json_string(&b, r->srv->cfg.model_name, strlen(r->srv->cfg.model_name));
    sb_puts(&b, ",\"data\":[");
    int n = strata_hook_count(m);
    for (int i = 0; i < n; i++) {
        strata_hook_info h;
        if (strata_hook_get(m, i, &h, NULL) != STRATA_OK)
            continue;
        const char *kind = h.kind == 'M' ? "mamba" : h.kind == '*' ? "attention" : h.kind == '-' ? "mlp"
                           : h.kind == 'E' ? "moe" : NULL;
        sb_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        sb_json_string(&b, h.name, strlen(h.name));
        sb_printf(&b, ",\"layer\":%s", h.layer >= 0 ? "" : "null");
        if (h.layer >= 0)
            sb_printf(&b, "%d", h.layer);
        sb_printf(&b, ",\"layer_kind\":%s%s%s,\"shape\":[", kind ? "\"" : "", kind ? kind : "null", kind ? "\"" : "");
        for (int d = 0; d < h.ndim; d++) {
            const char *sym = d == 0 && h.shape[d] < 0 ? (h.per_position ? "\"P\"" : "\"T\"")
                              : h.shape[d] < 0 ? (d == 1 ? "\"P\"" : "\"T\"") : NULL;
            if (sym)
                sb_printf(&b, "%s%s", d ? "," : "", sym);
            else
                sb_printf(&b, "%s%lld", d ? "," : "", (long long)h.shape[d]);
        }
        sb_printf(&b, "],\"dtype\":\"%s\",\"per_position\":%s,\"interveneable\":%s}",
                  h.dtype == STRATA_I32 ? "int32" : "float32", h.per_position ? "true" : "false",
                  h.interveneable ? "true" : "false");
    }
    sb_puts(&b, "]}");
    enum MHD_Result ret = http_send_json(r, 200, &b);
    sb_free(&b);
    return ret;
}

/* ---------------------------------------------------------------- job lifetime */

static void run_free(act_run *run)
{
    free(run->ids);
    for (int i = 0; run->pieces && i < run->n; i++)
        free(run->pieces[i]);
    free(run->pieces);
    strata_capture_free(run->cap);
    strata_interventions_free(run->iv);
    free(run->sel);
    free(run->sel_raw);
    free(run->t);
}

static void wake_client(act_job *job);
static void unref(act_job *job);

/* The committed session is on disk: it is free again, and the answer may go. */
static void session_saved(void *arg)
{
    act_job *job = arg;
    job->session->busy = 0;
    job->session = NULL;
    job->saving = 0;
    wake_client(job);
    unref(job);
}

/* A committed run's tokens join the session, which is then saved (on the thread
 * pool when `wait`: the answer waits for it, as a generation's does); either way
 * the session is free again after. */
static void release_session(act_job *job, int ran, int wait)
{
    session_entry *se = job->session;
    if (!se)
        return;
    if (job->commit) {
        strata_error err;
        /* the cache may have taken part of the run before a cancel: append, then trim */
        strata_session_append(se->s, job->runs[0].ids, job->runs[0].n, &err);
        strata_session_sync(se->s);
        if (ran)
            strata_session_checkpoint(se->s, 1, &err);
        sessions_touch(se);
        if (wait && sessions_persist_async(job->srv, se, session_saved, job)) {
            job->saving = 1;
            job->refs++;
            return;
        }
        if (!wait)
            sessions_persist(job->srv, se);
        se->busy = 0;
    }
    job->session = NULL;
}

static void unref(act_job *job)
{
    if (--job->refs > 0)
        return;
    release_session(job, 0, 0);
    strata_cache_free(job->fork);
    strata_cache_free(job->base);
    for (int i = 0; i < job->n_runs; i++)
        run_free(&job->runs[i]);
    out_stream_free(job->stream);
    json_decref(job->body);
    free(job);
}

/* engine thread */
static void on_done(void *user)
{
    act_job *job = user;
    pthread_mutex_lock(&AQ.mu);
    job->next_done = AQ.done;
    AQ.done = job;
    pthread_mutex_unlock(&AQ.mu);
    uv_async_send(&job->srv->wake);
}

static void on_finish(void *user, int choice, strata_finish reason)
{
    (void)choice;
    ((act_job *)user)->finish = reason;
}

/* ---------------------------------------------------------------- parsing */

/* A text prompt gets the tokenizer's BOS only where it starts a sequence: one that
 * continues a session's `origin` tokens goes on from them as they are. */
static int prompt_ids(const server *srv, json_t *v, int origin, act_run *run, api_error *e)
{
    int vocab = strata_model_get_info(srv->model)->vocab_size;
    if (json_is_string(v)) {
        if (!srv->tok)
            return api_fail(e, 400, "prompt", "invalid_value", "this model has no tokenizer: send token ids");
        size_t n;
        strata_error err;
        if (strata_tokenizer_encode(srv->tok, json_string_value(v), json_string_length(v),
                                    (origin ? 0 : STRATA_TOKENIZE_ADD_SPECIAL) | STRATA_TOKENIZE_PARSE_SPECIAL,
                                    &run->ids, &n, &err) != STRATA_OK)
            return api_fail(e, 400, "prompt", "invalid_value", "%s", err.message);
        run->n = (int)n;
    } else if (json_is_array(v)) {
        run->n = (int)json_array_size(v);
        if (!api_token_ids(v, vocab, "prompt", &run->ids, e))
            return 0;
    } else {
        return api_fail(e, 400, "prompt", "invalid_value", "prompt must be a string or a list of token ids");
    }
    if (run->n == 0)
        return api_fail(e, 400, "prompt", "invalid_value", "the prompt is empty");
    if (run->n > srv->context_limit)
        return api_fail(e, 400, "prompt", "context_length_exceeded", "the prompt has %d tokens; this model's context "
                        "is %d", run->n, srv->context_limit);
    return 1;
}

static int capture_hook(act_run *run, const char *name, api_error *e)
{
    strata_error err;
    if (strata_capture_add(run->cap, name, &err) == STRATA_OK)
        return 1;
    int unknown = strstr(err.message, "unknown hook") != NULL;
    return api_fail(e, 422, "hooks", unknown ? "unknown_hook" : "hook_not_on_layer", "%s", err.message);
}

static int add_patch_source(void *user, int run, const char *hook, api_error *e)
{
    act_job *job = user;
    if (run < 0 || run >= job->cur)
        return api_fail(e, 422, "interventions", "invalid_intervention", "runs[%d]: patch source run %d is not an "
                        "earlier run of this request", job->cur, run);
    return capture_hook(&job->runs[run], hook, e);
}

/* Field of the run, else of the request. */
static json_t *field(const act_job *job, const act_run *run, const char *key)
{
    json_t *v = json_object_get(run->spec, key);
    return v ? v : json_object_get(job->body, key);
}

static int parse_run(act_job *job, int k, api_error *e)
{
    server *srv = job->srv;
    act_run *run = &job->runs[k];
    json_t *prompt = json_object_get(run->spec, "prompt");
    if (!prompt)
        return api_fail(e, 400, "prompt", "invalid_value", "prompt is required");
    if (!prompt_ids(srv, prompt, job->origin, run, e))
        return 0;
    strata_error err;
    if (strata_capture_new(srv->model, &run->cap, &err) != STRATA_OK)
        return api_fail(e, 500, NULL, "internal_error", "%s", err.message);
    json_t *hooks = field(job, run, "hooks");
    if (hooks && !json_is_array(hooks) && !json_is_string(hooks))
        return api_fail(e, 400, "hooks", "invalid_value", "hooks must be a list of hook names or globs");
    size_t nh = json_is_string(hooks) ? 1 : json_array_size(hooks);
    if (nh > MAX_HOOKS)
        return api_fail(e, 400, "hooks", "invalid_value", "at most %d hook names", MAX_HOOKS);
    for (size_t i = 0; i < nh; i++) {
        json_t *h = json_is_string(hooks) ? hooks : json_array_get(hooks, i);
        if (!json_is_string(h))
            return api_fail(e, 400, "hooks", "invalid_value", "hooks[%zu] must be a string", i);
        if (!capture_hook(run, json_string_value(h), e))
            return 0;
    }
    int n_raw = 0;
    if (!positions_parse(field(job, run, "positions"), run->n, 1, &run->sel_raw, &n_raw, e))
        return 0;
    if (run->sel_raw) {
        run->sel = malloc(sizeof(int) * (size_t)n_raw);
        if (!run->sel)
            return api_fail(e, 500, NULL, "internal_error", "out of memory");
        for (int i = 0; i < n_raw; i++)
            run->sel[i] = run->sel_raw[i] < 0 ? run->n + run->sel_raw[i] : run->sel_raw[i];
        run->n_sel = n_raw;
    }
    job->cur = k;
    json_t *iv = json_object_get(run->spec, "interventions");
    if (iv && !json_is_array(iv))
        return api_fail(e, 400, "interventions", "invalid_value", "interventions must be a list");
    if (!interventions_patch_hooks(iv, add_patch_source, job, e))
        return 0;
    /* the edits of runs without patch are checked now, before anything runs */
    return k > 0 ? 1 : interventions_from_json(srv, iv, job->origin, run->n, NULL, 0, &run->iv, e);
}

static int parse_format(const char *accept, act_job *job, api_error *e)
{
    json_t *f = json_object_get(job->body, "format");
    job->format = OUT_JSON;
    if (f && !json_is_string(f))
        return api_fail(e, 400, "format", "invalid_value", "format must be \"json\", \"npy\" or \"safetensors\"");
    const char *s = f ? json_string_value(f) : NULL;
    if (!s && accept && strstr(accept, "application/x-safetensors"))
        s = "safetensors";
    else if (!s && accept && (strstr(accept, "application/x-npy") || strstr(accept, "application/octet-stream")))
        s = "npy";
    if (!s || !strcmp(s, "json"))
        return 1;
    if (!strcmp(s, "npy"))
        job->format = OUT_NPY;
    else if (!strcmp(s, "safetensors"))
        job->format = OUT_SAFETENSORS;
    else
        return api_fail(e, 400, "format", "invalid_value", "format must be \"json\", \"npy\" or \"safetensors\", got "
                        "\"%s\"", s);
    return 1;
}

/* "session": continue it; "commit": true to keep the result (one run only). */
static int parse_session(server *srv, act_job *job, api_error *e)
{
    json_t *session = json_object_get(job->body, "session"), *commit = json_object_get(job->body, "commit");
    if (commit && !json_is_boolean(commit))
        return api_fail(e, 400, "commit", "invalid_value", "commit must be true or false");
    if (!session || json_is_null(session))
        return 1;
    const char *id = json_string_value(session);
    session_entry *se = sessions_find(srv, id, e);
    if (!se)
        return 0;
    if (se->busy)
        return api_fail(e, 409, "session", "session_busy", "session '%s' is busy with another request", se->id);
    job->commit = json_is_true(commit);
    if (job->commit && json_object_get(job->body, "runs"))
        return api_fail(e, 400, "commit", "invalid_value", "commit applies to a single run, not to runs");
    job->origin = strata_session_n_tokens(se->s);
    if (!job->commit) {
        strata_error err;
        if (strata_cache_copy(strata_session_cache(se->s), &job->base, &err) != STRATA_OK)
            return api_fail(e, 500, NULL, "internal_error", "%s", err.message);
        return 1;
    }
    if (!sessions_fit(srv, se, e))
        return 0;
    job->session = se;
    sessions_claim(se);
    return 1;
}

static int parse_request(const char *data, size_t len, const char *accept, act_job *job, api_error *e)
{
    server *srv = job->srv;
    json_error_t jerr;
    job->body = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(job->body))
        return api_fail(e, 400, NULL, "invalid_json", "the body must be a JSON object: %s",
                        job->body ? "got another JSON value" : jerr.text);
    if (!api_nul_only_in(job->body, "prompt", "runs", "prompt", e))
        return 0;
    json_t *model = json_object_get(job->body, "model");
    if (model && (!json_is_string(model) || strcmp(json_string_value(model), srv->cfg.model_name)))
        return api_fail(e, 404, "model", "model_not_found", "this server serves '%s'", srv->cfg.model_name);
    if (!parse_session(srv, job, e))
        return 0;
    if (!parse_format(accept, job, e))
        return 0;
    json_t *runs = json_object_get(job->body, "runs");
    if (runs && (!json_is_array(runs) || json_array_size(runs) == 0 || json_array_size(runs) > MAX_RUNS))
        return api_fail(e, 400, "runs", "invalid_value", "runs must be a list of 1 to %d run objects", MAX_RUNS);
    job->n_runs = runs ? (int)json_array_size(runs) : 1;
    for (int k = 0; k < job->n_runs; k++) {
        job->runs[k].spec = runs ? json_array_get(runs, (size_t)k) : job->body;
        if (!json_is_object(job->runs[k].spec))
            return api_fail(e, 400, "runs", "invalid_value", "runs[%d] must be an object", k);
        if (!parse_run(job, k, e))
            return 0;
    }
    job->cur = 0;
    return 1;
}

/* ---------------------------------------------------------------- output */

/* The returned tensors of a run: per-position hooks narrowed to the positions. */
static int build_outputs(act_job *job, act_run *run, api_error *e)
{
    int n = strata_capture_count(run->cap);
    run->t = calloc((size_t)(n ? n : 1), sizeof *run->t);
    if (!run->t)
        return api_fail(e, 500, NULL, "internal_error", "out of memory");
    for (int i = 0; i < n; i++) {
        strata_tensor_view v;
        strata_capture_get(run->cap, i, &v, NULL);
        out_tensor *t = &run->t[run->n_t++];
        snprintf(t->name, sizeof t->name, "%s", v.name);
        t->dtype = v.dtype;
        t->ndim = v.ndim;
        memcpy(t->shape, v.shape, sizeof t->shape);
        t->data = v.data;
        int pattern = strstr(v.name, "hook_pattern") != NULL;
        int per_pos = pattern || (v.ndim >= 2 && v.shape[0] == run->n && !strstr(v.name, "_state") &&
                                  !strstr(v.name, "_cache"));
        int axis = pattern ? 1 : 0;
        t->outer = pattern ? (size_t)v.shape[0] : 1;
        t->src_rows = v.shape[axis];
        t->inner = 1;
        for (int d = axis + 1; d < v.ndim; d++)
            t->inner *= (size_t)v.shape[d];
        if (per_pos && run->sel) {
            t->rows = run->sel;
            t->n_rows = run->n_sel;
            t->shape[axis] = run->n_sel;
        }
        if (per_pos) {
            t->positions = run->sel ? run->sel : NULL;
            t->n_positions = run->sel ? run->n_sel : 0;
        }
    }
    job->out[job->cur] = (out_run){.ids = run->ids, .n_ids = run->n, .pieces = run->pieces, .t = run->t, .n_t = run->n_t};
    return 1;
}

static void token_pieces(const server *srv, act_run *run)
{
    if (!srv->tok)
        return;
    run->pieces = calloc((size_t)run->n, sizeof *run->pieces);
    for (int i = 0; run->pieces && i < run->n; i++) {
        size_t len;
        if (strata_tokenizer_decode(srv->tok, &run->ids[i], 1, 0, &run->pieces[i], &len, NULL) != STRATA_OK)
            run->pieces[i] = NULL;
    }
}

/* The 413 for a response of `bytes` over --max-activation-bytes, with advice. */
static int within_limit(const server *srv, uint64_t bytes, const char *advice, api_error *e)
{
    uint64_t limit = (uint64_t)srv->cfg.max_activation_bytes;
    if (bytes > limit)
        return api_fail(e, 413, "hooks", "response_too_large", "the response would be about %.1f MiB, over this "
                        "server's limit of %.1f MiB (--max-activation-bytes); %s", (double)bytes / 1048576.0,
                        (double)limit / 1048576.0, advice);
    return 1;
}

static const char *const RUN_ADVICE = "ask for fewer hooks, fewer positions (\"positions\": \"last\" or a list), or "
                                      "a binary format (safetensors is ~3x smaller than json)";

static int check_size(act_job *job, api_error *e)
{
    return within_limit(job->srv, out_size(job->out, job->n_runs, job->format), RUN_ADVICE, e);
}

/* Values a capture returns for P positions of a run of n tokens (shapes are known
 * before running): a pattern row spans every key, caches every token, states one
 * value set. */
static uint64_t capture_elems(const strata_model_info *m, const strata_capture *cap, uint64_t n, uint64_t P)
{
    uint64_t elems = 0;
    for (int i = 0; i < strata_capture_count(cap); i++) {
        strata_tensor_view v;
        strata_capture_get(cap, i, &v, NULL);
        uint64_t per = 1;
        if (strstr(v.name, "hook_pattern"))
            per = (uint64_t)m->attn_heads * n;
        else if (strstr(v.name, "_cache"))
            per = n * (uint64_t)m->kv_heads * (uint64_t)m->head_dim / (P ? P : 1) + 1;
        else
            for (int d = strstr(v.name, "_state") ? 0 : 1; d < v.ndim; d++)
                per *= (uint64_t)v.shape[d];
        elems += strstr(v.name, "_state") ? per : per * P;
    }
    return elems;
}

int generation_capture_fits(const server *srv, const strata_capture *cap, int n_tokens, int generated, api_error *e)
{
    const strata_model_info *m = strata_model_get_info(srv->model);
    return within_limit(srv, capture_elems(m, cap, (uint64_t)n_tokens, (uint64_t)generated) * 13,
                        "ask for fewer hooks, or a smaller max_tokens (the size counts every token it allows)", e);
}

/* Capture shapes are known before running; the size check uses a dry layout. */
static int precheck_size(act_job *job, api_error *e)
{
    const strata_model_info *m = strata_model_get_info(job->srv->model);
    int count = strata_capture_count(job->runs[0].cap);
    if (job->format == OUT_NPY && (job->n_runs != 1 || count != 1))
        return api_fail(e, 422, "format", "npy_needs_one_tensor", "npy returns a single tensor, and this request "
                        "asks for %d; ask for one hook or use format \"safetensors\"",
                        job->n_runs == 1 ? count : job->n_runs);
    uint64_t elems = 0;
    for (int k = 0; k < job->n_runs; k++) {
        act_run *run = &job->runs[k];
        elems += capture_elems(m, run->cap, (uint64_t)run->n, run->sel ? (uint64_t)run->n_sel : (uint64_t)run->n);
    }
    return within_limit(job->srv, elems * (job->format == OUT_JSON ? 13 : 4), RUN_ADVICE, e);
}

/* ---------------------------------------------------------------- running */

static int submit_run(act_job *job, api_error *e)
{
    act_run *run = &job->runs[job->cur];
    if (job->cur > 0) {
        patch_source src[MAX_RUNS];
        for (int k = 0; k < job->cur; k++)
            src[k] = (patch_source){.capture = job->runs[k].cap, .n_tokens = job->runs[k].n};
        if (!interventions_from_json(job->srv, json_object_get(run->spec, "interventions"), job->origin, run->n, src,
                                     job->cur,
                                     &run->iv, e))
            return 0;
    }
    strata_request q = {.prompt = run->ids, .n_prompt = run->n, .max_tokens = 0, .n = 1, .capture = run->cap,
                        .interventions = run->iv, .user = job, .on_finish = on_finish, .on_done = on_done};
    if (job->session)
        q.cache = strata_session_cache(job->session->s);
    if (job->base) {    /* the last run may take the base itself */
        strata_error ferr;
        strata_cache_free(job->fork);
        job->fork = NULL;
        if (job->cur + 1 < job->n_runs && strata_cache_copy(job->base, &job->fork, &ferr) != STRATA_OK)
            return api_fail(e, 500, NULL, "internal_error", "%s", ferr.message);
        q.cache = job->fork ? job->fork : job->base;
    }
    strata_sampling_default(&q.sampling);
    q.sampling.temperature = 0;
    strata_error err;
    strata_status st = strata_scheduler_submit(job->srv->sched, &q, &job->sched_id, &err);
    if (st != STRATA_OK) {
        int busy = st == STRATA_E_LIMIT && strstr(err.message, "queue");
        return api_fail(e, busy ? 429 : 400, busy ? NULL : "prompt", busy ? "queue_full" : "invalid_value", "%s",
                        err.message);
    }
    job->refs++;
    job->in_engine = 1;
    return 1;
}

static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    act_job *job = cls;
    size_t n = out_stream_read(job->stream, buf, max);
    return n ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
}

static void free_body(void *cls)
{
    unref(cls);
}

static enum MHD_Result send_result(http_req *r, act_job *job)
{
    if (job->err.status)
        return http_send_error(r, job->err.status, job->err.param, job->err.code, "%s", job->err.message);
    int tokens = 0;
    for (int k = 0; k < job->n_runs; k++)
        tokens += job->runs[k].n;
    job->stream = out_stream_new(job->out, job->n_runs, job->format, job->srv->cfg.model_name, tokens);
    if (!job->stream)
        return http_send_error(r, 500, NULL, "internal_error", "out of memory");
    uint64_t size = job->format == OUT_JSON ? MHD_SIZE_UNKNOWN : out_stream_total(job->stream);
    struct MHD_Response *resp = MHD_create_response_from_callback(size, 65536, read_body, job, free_body);
    if (!resp)
        return MHD_NO;
    job->refs++;
    const char *type = job->format == OUT_JSON ? "application/json"
                       : job->format == OUT_NPY ? "application/x-npy" : "application/x-safetensors";
    MHD_add_response_header(resp, "Content-Type", type);
    r->status = 200;
    r->tokens = tokens;
    enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void wake_client(act_job *job)
{
    if (job->req && job->req->suspended) {
        http_resume(job->req);
        http_kick(job->srv);
    }
}

/* A run finished on the engine thread: next run, or the result. */
static void run_done(act_job *job)
{
    job->in_engine = 0;
    if (!job->req) {
        job->complete = 1;
        return;
    }
    if (job->finish != STRATA_FINISH_LENGTH && job->finish != STRATA_FINISH_STOP) {
        api_fail(&job->err, job->finish == STRATA_FINISH_CANCELLED ? 503 : 500, NULL, "engine_error",
                 job->finish == STRATA_FINISH_CANCELLED ? "the run was cancelled (shutting down?)"
                                                        : "the engine failed during the run");
        job->complete = 1;
        return;
    }
    act_run *run = &job->runs[job->cur];
    token_pieces(job->srv, run);
    if (!build_outputs(job, run, &job->err)) {
        job->complete = 1;
        return;
    }
    if (++job->cur < job->n_runs && submit_run(job, &job->err))
        return;
    if (job->cur >= job->n_runs)
        check_size(job, &job->err);
    job->complete = 1;
}

static void job_finished(act_job *job)
{
    if (job->complete && !job->in_engine)
        release_session(job, job->err.status == 0 && job->finish != STRATA_FINISH_CANCELLED &&
                                 job->finish != STRATA_FINISH_ERROR, 1);
}

void activations_drain(server *srv)
{
    (void)srv;
    pthread_mutex_lock(&AQ.mu);
    act_job *list = AQ.done;
    AQ.done = NULL;
    pthread_mutex_unlock(&AQ.mu);
    while (list) {
        act_job *job = list;
        list = job->next_done;
        run_done(job);
        job_finished(job);
        wake_client(job);
        unref(job); /* the engine's reference */
    }
}

/* ---------------------------------------------------------------- the route */

enum MHD_Result route_activations(http_req *r)
{
    act_job *job = calloc(1, sizeof *job);
    if (!job)
        return http_send_error(r, 500, NULL, "internal_error", "out of memory");
    job->srv = r->srv;
    job->req = r;
    job->refs = 1;
    const char *accept = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Accept");
    if (!parse_request(r->body.data, r->body.len, accept, job, &job->err) || !precheck_size(job, &job->err) ||
        !submit_run(job, &job->err)) {
        enum MHD_Result ret = http_send_error(r, job->err.status, job->err.param, job->err.code, "%s", job->err.message);
        unref(job);
        return ret;
    }
    r->act = job;
    http_suspend(r);
    return MHD_YES;
}

int activations_parse(server *srv, const char *data, size_t len, const char *accept, api_error *e)
{
    act_job *job = calloc(1, sizeof *job);
    if (!job)
        return api_fail(e, 500, NULL, "internal_error", "out of memory");
    job->srv = srv;
    job->refs = 1;
    int ok = parse_request(data, len, accept, job, e) && precheck_size(job, e);
    unref(job);
    return ok;
}

enum MHD_Result route_activations_resumed(http_req *r)
{
    act_job *job = r->act;
    if (!job->complete || job->saving) {
        http_suspend(r);
        return MHD_YES;
    }
    if (job->stream)
        return MHD_YES; /* the response is queued already */
    return send_result(r, job);
}

void route_activations_closed(http_req *r)
{
    act_job *job = r->act;
    r->act = NULL;
    job->req = NULL;
    if (job->in_engine)
        strata_scheduler_cancel(job->srv->sched, job->sched_id);
    unref(job);
}

/* ---------------------------------------------------------------- steering in generation */

void activations_json(strbuf *b, const strata_capture *cap, int first, int n)
{
    int count = strata_capture_count(cap);
    out_tensor *t = calloc((size_t)(count ? count : 1), sizeof *t);
    int *rows = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!t || !rows) {
        sb_puts(b, "{}");
        free(t);
        free(rows);
        return;
    }
    for (int i = 0; i < n; i++)
        rows[i] = first + i;
    for (int i = 0; i < count; i++) {
        strata_tensor_view v;
        strata_capture_get(cap, i, &v, NULL);
        int pattern = strstr(v.name, "hook_pattern") != NULL;
        int per_pos = pattern || (!strstr(v.name, "_state") && !strstr(v.name, "_cache"));
        int axis = pattern ? 1 : 0;
        snprintf(t[i].name, sizeof t[i].name, "%s", v.name);
        t[i].dtype = v.dtype;
        t[i].ndim = v.ndim;
        memcpy(t[i].shape, v.shape, sizeof t[i].shape);
        t[i].data = v.data;
        t[i].outer = pattern ? (size_t)v.shape[0] : 1;
        t[i].src_rows = v.shape[axis];
        t[i].inner = 1;
        for (int d = axis + 1; d < v.ndim; d++)
            t[i].inner *= (size_t)v.shape[d];
        if (per_pos) {
            int k = n;
            while (k > 0 && first + k > v.shape[axis]) /* rows that exist */
                k--;
            t[i].rows = rows;
            t[i].n_rows = k;
            t[i].shape[axis] = k;
            t[i].positions = rows;
            t[i].n_positions = k;
        }
    }
    out_json_object(b, t, count);
    free(t);
    free(rows);
}

int generation_hooks_parse(const server *srv, json_t *body, const int *prompt_len, int n_prompts, int n,
                           strata_interventions **iv, strata_capture **cap, api_error *e)
{
    json_t *list = json_object_get(body, "interventions");
    for (int i = 0; list && !json_is_null(list) && i < n_prompts; i++)
        if (!interventions_from_json(srv, list, 0, prompt_len[i], NULL, 0, &iv[i], e))
            return 0;
    json_t *acts = json_object_get(body, "activations");
    if (!acts || json_is_null(acts))
        return 1;
    json_t *hooks = json_object_get(acts, "hooks");
    if (!json_is_object(acts) || !json_is_array(hooks) || json_array_size(hooks) == 0 ||
        json_array_size(hooks) > MAX_HOOKS)
        return api_fail(e, 400, "activations", "invalid_value", "activations must be {\"hooks\": [names or globs]}");
    if (n_prompts != 1 || n != 1)
        return api_fail(e, 400, "activations", "invalid_value", "activations needs one prompt and n = 1");
    strata_error err;
    if (strata_capture_new(srv->model, cap, &err) != STRATA_OK)
        return api_fail(e, 500, NULL, "internal_error", "%s", err.message);
    size_t i;
    json_t *h;
    json_array_foreach(hooks, i, h) {
        if (!json_is_string(h))
            return api_fail(e, 400, "activations", "invalid_value", "activations.hooks[%zu] must be a string", i);
        if (strata_capture_add(*cap, json_string_value(h), &err) != STRATA_OK)
            return api_fail(e, 422, "activations", strstr(err.message, "unknown hook") ? "unknown_hook"
                            : "hook_not_on_layer", "%s", err.message);
    }
    return 1;
}
