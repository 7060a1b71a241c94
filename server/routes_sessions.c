/*
 * routes_sessions.c — /v1/sessions: create (optionally prefilled), list, inspect,
 * delete, fork, checkpoint, rewind, export and import. Prefill and the replay of a
 * rewind run on the engine thread as requests on the session's cache (jobs.c);
 * everything else is bookkeeping on the loop thread, allowed only while the
 * session is not busy (single writer: 409 otherwise). A change is answered once
 * the session is saved, which runs beside the loop (answer_when_saved).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "activations.h"
#include "jobs.h"
#include "parse.h"
#include "sessions.h"

static enum MHD_Result send_session(http_req *r, int status, const session_entry *e)
{
    strbuf b = {0};
    session_json(e, &b);
    enum MHD_Result ret = http_send_json(r, status, &b);
    sb_free(&b);
    return ret;
}

/* A route's answer waiting for its session's save: the session object, or `body`
 * when one was built (a checkpoint). */
typedef struct pending_save {
    http_req *req;              /* NULL once the client is gone */
    session_entry *e;           /* busy until saved */
    int status, done;
    strbuf body;
} pending_save;

static void pending_free(pending_save *ps)
{
    sb_free(&ps->body);
    free(ps);
}

static void saved(void *arg)
{
    pending_save *ps = arg;
    ps->e->busy = 0;
    ps->done = 1;
    if (ps->req) {
        http_resume(ps->req);  /* route_sessions_resumed answers */
        http_kick(ps->req->srv);   /* now, not at MHD's next timeout (up to a second) */
    } else {
        pending_free(ps);
    }
}

static enum MHD_Result answer(http_req *r, int status, const session_entry *e, const strbuf *body)
{
    return body && body->len ? http_send_json(r, status, body) : send_session(r, status, e);
}

/* Save e (it stays busy meanwhile), then answer with status and body (NULL: the
 * session object); the loop serves every other client while the file is written.
 * Takes body. Without a state directory, the answer goes now. */
static enum MHD_Result answer_when_saved(http_req *r, session_entry *e, int status, strbuf *body)
{
    pending_save *ps = calloc(1, sizeof *ps);
    if (ps) {
        *ps = (pending_save){.req = r, .e = e, .status = status};
        if (body)
            ps->body = *body, *body = (strbuf){0};
        sessions_claim(e);
        if (sessions_persist_async(r->srv, e, saved, ps)) {
            r->save = ps;
            http_suspend(r);
            return MHD_YES;
        }
        e->busy = 0;
    } else {
        sessions_persist(r->srv, e);
    }
    enum MHD_Result ret = answer(r, status, e, ps ? &ps->body : body);
    if (ps)
        pending_free(ps);
    else if (body)
        sb_free(body);
    return ret;
}

enum MHD_Result route_sessions_resumed(http_req *r)
{
    pending_save *ps = r->save;
    if (!ps->done) {
        http_suspend(r);
        return MHD_YES;
    }
    r->save = NULL;
    enum MHD_Result ret = answer(r, ps->status, ps->e, &ps->body);
    pending_free(ps);
    return ret;
}

void route_sessions_closed(http_req *r)
{
    pending_save *ps = r->save;
    r->save = NULL;
    if (ps->done)
        pending_free(ps);
    else
        ps->req = NULL;        /* saved() frees it */
}

static enum MHD_Result not_found(http_req *r, const char *id)
{
    return http_send_error(r, 404, "session", "session_not_found", "no session '%.64s'", id);
}

static enum MHD_Result busy(http_req *r, const session_entry *e)
{
    return http_send_error(r, 409, "session", "session_busy", "session '%s' is busy with another request", e->id);
}

static enum MHD_Result full(http_req *r)
{
    api_error e;
    sessions_no_room(r->srv, &e);
    return http_send_api_error(r, &e);
}

/* Run `tokens` through the session's cache (no generation), answering with the
 * session object once done. Takes ownership of tokens. */
static enum MHD_Result prefill(http_req *r, session_entry *e, int32_t *tokens, int n, int status, int replayed)
{
    const strata_session *s = e->s;
    int have = strata_session_n_tokens(s);
    int32_t *all = malloc(sizeof *all * (size_t)(have + n));
    if (!all) {
        free(tokens);
        return http_send_error(r, 500, NULL, "internal_error", "out of memory");
    }
    if (have)
        memcpy(all, strata_session_tokens(s), sizeof *all * (size_t)have);
    memcpy(all + have, tokens, sizeof *all * (size_t)n);
    free(tokens);
    gen_params p = {.n = 1, .logprobs = -1, .max_tokens = 0, .response = RESP_SESSION, .status = status,
                    .n_prompts = 1};
    strata_sampling_default(&p.sampling);
    p.sampling.temperature = 0;
    p.prompts[0] = all;
    p.replayed = replayed;
    p.prompt_len[0] = have + n;
    snprintf(p.session_id, sizeof p.session_id, "%s", e->id);
    return job_start(r, &p);
}

/* The body's "prompt" (string or token ids) as tokens; 0 with the error in e. */
int session_prompt_parse(const server *srv, json_t *prompt, int32_t **ids, int *n, api_error *e)
{
    int vocab = strata_model_get_info(srv->model)->vocab_size;
    if (json_is_string(prompt) && srv->tok) {
        size_t len;
        strata_error err;
        if (strata_tokenizer_encode(srv->tok, json_string_value(prompt), json_string_length(prompt),
                                    STRATA_TOKENIZE_ADD_SPECIAL | STRATA_TOKENIZE_PARSE_SPECIAL, ids, &len, &err) != STRATA_OK)
            return api_fail(e, 400, "prompt", "invalid_value", "%s", err.message);
        *n = (int)len;
    } else if (json_is_array(prompt) && json_array_size(prompt) > 0) {
        *n = (int)json_array_size(prompt);
        if (!api_token_ids(prompt, vocab, "prompt", ids, e))
            return 0;
    } else {
        return api_fail(e, 400, "prompt", "invalid_value", "prompt must be a string or a non-empty array of token ids");
    }
    if (*n + 1 > srv->context_limit) {
        free(*ids);
        *ids = NULL;
        return api_fail(e, 400, "prompt", "context_length_exceeded", "the prompt exceeds the context of %d tokens",
                        srv->context_limit);
    }
    return 1;
}

static int body_prompt(http_req *r, json_t *prompt, int32_t **ids, int *n, enum MHD_Result *ret)
{
    api_error e = {0};
    if (session_prompt_parse(r->srv, prompt, ids, n, &e))
        return 1;
    *ret = http_send_error(r, e.status, e.param, e.code, "%s", e.message);
    return 0;
}

json_t *session_body_object(const char *data, size_t len, int *bad)
{
    *bad = 0;
    if (!len)
        return json_object();
    json_t *j = json_loadb(data, len, JSON_ALLOW_NUL, NULL);
    api_error e;
    if (!json_is_object(j) || !api_nul_only_in(j, "prompt", NULL, NULL, &e)) {    /* a NUL only in the prompt */
        json_decref(j);
        *bad = 1;
        return NULL;
    }
    return j;
}

static json_t *optional_body(http_req *r, int *bad)
{
    return session_body_object(r->body.data, r->body.len, bad);
}

/* The id a client gives in X-Session-Id when creating or importing a session: the
 * load balancer's routing key (deploy/), so that the session is named by the key
 * that routes to its replica. 1 with *id NULL (no header) or the id; 0 with an
 * error sent when it is not a valid id (400) or is taken (409). */
static int requested_id(http_req *r, const char **id, enum MHD_Result *ret)
{
    *id = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Session-Id");
    if (!*id)
        return 1;
    if (!session_id_valid(*id)) {
        *ret = http_send_error(r, 400, "X-Session-Id", "invalid_value",
                               "X-Session-Id must be 1 to 64 characters of [A-Za-z0-9_-]");
        return 0;
    }
    if (sessions_exists(*id)) {
        *ret = http_send_error(r, 409, "X-Session-Id", "session_exists", "session '%s' exists already", *id);
        return 0;
    }
    return 1;
}

static enum MHD_Result create(http_req *r)
{
    const char *want;
    enum MHD_Result ret = MHD_YES;
    if (!requested_id(r, &want, &ret))
        return ret;
    int bad;
    json_t *body = optional_body(r, &bad);
    if (bad)
        return http_send_error(r, 400, NULL, "invalid_json", "the body must be a JSON object");
    strata_session *s;
    strata_error err;
    json_t *prompt = json_object_get(body, "prompt");
    int32_t *ids = NULL;
    int n = 0;
    if (prompt && !json_is_null(prompt) && !body_prompt(r, prompt, &ids, &n, &ret)) {
        json_decref(body);
        return ret;
    }
    json_decref(body);
    if (strata_session_new(r->srv->model, &s, &err) != STRATA_OK) {
        free(ids);
        return http_send_error(r, 500, NULL, "internal_error", "%s", err.message);
    }
    session_entry *e = sessions_add(r->srv, s, want);
    if (!e) {
        strata_session_free(s);
        free(ids);
        return full(r);
    }
    if (!ids)
        return answer_when_saved(r, e, 201, NULL);
    ret = prefill(r, e, ids, n, 201, 0);
    if (!r->job)                /* the prefill was refused (the answer says why): no session was made */
        sessions_remove(r->srv, e);
    return ret;
}

static enum MHD_Result list(http_req *r)
{
    (void)r;
    strbuf b = {0};
    sb_puts(&b, "{\"object\":\"list\",\"data\":[");
    sessions_each_json(&b);
    sb_puts(&b, "]}");
    enum MHD_Result ret = http_send_json(r, 200, &b);
    sb_free(&b);
    return ret;
}

static enum MHD_Result fork_session(http_req *r, session_entry *e)
{
    strata_session *f;
    strata_error err;
    if (strata_session_fork(e->s, &f, &err) != STRATA_OK)
        return http_send_error(r, 500, NULL, "internal_error", "%s", err.message);
    session_entry *fe = sessions_add(r->srv, f, NULL);
    if (!fe) {
        strata_session_free(f);
        return full(r);
    }
    return answer_when_saved(r, fe, 201, NULL);
}

static enum MHD_Result checkpoint(http_req *r, session_entry *e)
{
    strata_error err;
    if (strata_session_checkpoint(e->s, 0, &err) != STRATA_OK)
        return http_send_error(r, 500, NULL, "internal_error", "%s", err.message);
    int pos = strata_session_n_tokens(e->s);
    uint64_t bytes = 0;
    for (int i = 0; i < strata_session_checkpoint_count(e->s); i++) {
        int p;
        strata_session_checkpoint_info(e->s, i, &p, &bytes);
        if (p == pos)
            break;
    }
    strbuf b = {0};
    sb_printf(&b, "{\"id\":\"cp-%d\",\"object\":\"session.checkpoint\",\"position\":%d,\"bytes\":%llu}", pos, pos,
              (unsigned long long)bytes);
    return answer_when_saved(r, e, 201, &b);
}

static enum MHD_Result rewind_session(http_req *r, session_entry *e)
{
    int bad;
    json_t *body = optional_body(r, &bad);
    if (bad)
        return http_send_error(r, 400, NULL, "invalid_json", "the body must be a JSON object");
    json_t *pos = json_object_get(body, "position");
    int n = strata_session_n_tokens(e->s);
    if (!json_is_integer(pos) || json_integer_value(pos) < 0 || json_integer_value(pos) > n) {
        json_decref(body);
        return http_send_error(r, 400, "position", "invalid_value", "position must be an integer in [0, %d]", n);
    }
    int32_t *replay;
    int n_replay;
    strata_error err;
    strata_status st = strata_session_rewind(e->s, (int)json_integer_value(pos), &replay, &n_replay, &err);
    json_decref(body);
    if (st != STRATA_OK)
        return http_send_error(r, 500, NULL, "internal_error", "%s", err.message);
    e->last_reprocessed = n_replay;
    if (n_replay == 0) {
        free(replay);
        return answer_when_saved(r, e, 200, NULL);
    }
    return prefill(r, e, replay, n_replay, 200, n_replay);
}

static enum MHD_Result export_session(http_req *r, session_entry *e)
{
    void *bytes;
    size_t len;
    strata_error err;
    if (strata_session_serialize(e->s, &bytes, &len, &err) != STRATA_OK)
        return http_send_error(r, 500, NULL, "internal_error", "%s", err.message);
    enum MHD_Result ret = http_send(r, 200, "application/x-safetensors", bytes, len);
    free(bytes);
    return ret;
}

static enum MHD_Result import_session(http_req *r)
{
    strata_session *s;
    strata_error err;
    const char *want;
    enum MHD_Result ret = MHD_YES;
    if (!requested_id(r, &want, &ret))
        return ret;
    if (strata_session_deserialize(r->srv->model, r->body.data, r->body.len, &s, &err) != STRATA_OK)
        return http_send_error(r, err.status == STRATA_E_INVALID ? 422 : 400, NULL, "invalid_session_file", "%s",
                               err.message);
    session_entry *e = sessions_add(r->srv, s, want);
    if (!e) {
        strata_session_free(s);
        return full(r);
    }
    return answer_when_saved(r, e, 201, NULL);
}

/* /v1/sessions[/...]: `rest` is what follows "/v1/sessions". */
enum MHD_Result route_sessions(http_req *r, const char *rest)
{
    int get = !strcmp(r->method, "GET") || !strcmp(r->method, "HEAD"), post = !strcmp(r->method, "POST"),
        del = !strcmp(r->method, "DELETE");
    if (!*rest)
        return post ? create(r) : get ? list(r) : http_not_allowed(r, "GET, HEAD, POST");
    if (!strcmp(rest, "/import"))
        return post ? import_session(r) : http_not_allowed(r, "POST");
    char id[72] = "";
    const char *slash = strchr(rest + 1, '/');
    size_t len = slash ? (size_t)(slash - rest - 1) : strlen(rest + 1);
    if (len >= sizeof id)
        return not_found(r, rest + 1);
    memcpy(id, rest + 1, len);
    api_error ae;
    session_entry *e = sessions_find(r->srv, id, &ae);
    if (!e)
        return http_send_api_error(r, &ae);
    const char *action = slash ? slash : "";
    if (!*action && get)
        return send_session(r, 200, e);
    if (e->busy && !(!*action && get))
        return busy(r, e);
    if (!*action && del) {
        if (sessions_remove(r->srv, e) != 0)
            return http_send_error(r, 500, "session", "session_not_deleted", "session '%s' could not be deleted: its "
                                   "file in the state directory cannot be removed (see the server log)", id);
        strbuf b = {0};
        sb_printf(&b, "{\"id\":\"%s\",\"object\":\"session.deleted\",\"deleted\":true}", id);
        enum MHD_Result ret = http_send_json(r, 200, &b);
        sb_free(&b);
        return ret;
    }
    if (!strcmp(action, "/fork") && post)
        return fork_session(r, e);
    if (!strcmp(action, "/checkpoints") && post)
        return checkpoint(r, e);
    if (!strcmp(action, "/rewind") && post)
        return rewind_session(r, e);
    if (!strcmp(action, "/export") && get)
        return export_session(r, e);
    if (!*action)
        return http_not_allowed(r, "GET, HEAD, DELETE");
    if (!strcmp(action, "/fork") || !strcmp(action, "/checkpoints") || !strcmp(action, "/rewind"))
        return http_not_allowed(r, "POST");
    if (!strcmp(action, "/export"))
        return http_not_allowed(r, "GET, HEAD");
    return http_send_error(r, 404, NULL, "not_found", "no route %s /v1/sessions/%s%s", r->method, id, action);
}
