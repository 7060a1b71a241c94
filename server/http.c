/*
 * http.c — libmicrohttpd in external-event mode, driven by the libuv loop: MHD's
 * epoll fd is watched by a uv_poll_t and its timeout by a uv_timer_t, so the whole
 * HTTP side runs on the loop thread and MHD has no threads of its own. This file
 * also owns request plumbing: body accumulation with a size bound, API keys,
 * dispatch to the routes, error objects, and the one log line per request; and the
 * bound on how long a client may take to send a request (MHD's own timeout only
 * sees idleness, so a slowloris trickling a byte a second would hold a slot).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "activations.h"

/* A connection, for the time its client takes to send a request: from its
 * accept, or the end of its previous request, until its request's body is in. */
typedef struct conn_clock {
    struct conn_clock *next;
    MHD_socket fd;
    double since;
    size_t received;            /* body bytes in since then */
    int receiving;              /* a request is awaited or coming in */
} conn_clock;

/* A body that keeps coming at this rate or more is given the time it needs (a large
 * session import over a slow link); a trickle earns next to nothing. */
#define UPLOAD_MIN_RATE (64.0 * 1024)

struct http {
    struct MHD_Daemon *d;
    uv_poll_t poll;
    uv_timer_t timer;
    int open_connections;
    int port;
    int quiesced;
    conn_clock *clocks;
};

/* The error object's type, as OpenAI's API names them (the code says more). */
static const char *status_type(int status)
{
    return status == 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error";
}

enum MHD_Result http_send(http_req *r, int status, const char *content_type, const char *body, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", content_type);
    if (status == 429)
        MHD_add_response_header(resp, "Retry-After", "1");
    if (status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    if (status == 405 && r->allow)
        MHD_add_response_header(resp, "Allow", r->allow);
    r->status = status;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result http_send_json(http_req *r, int status, const strbuf *json)
{
    if (json->failed)
        return http_send_error(r, 500, NULL, "internal_error", "out of memory building the response");
    return http_send(r, status, "application/json", json->data ? json->data : "", json->len);
}

void api_error_json(strbuf *b, const api_error *e)
{
    sb_puts(b, "{\"error\":{\"message\":");
    sb_json_string(b, e->message, strlen(e->message));
    sb_printf(b, ",\"type\":\"%s\",\"param\":", status_type(e->status));
    if (e->param)
        sb_json_string(b, e->param, strlen(e->param));
    else
        sb_puts(b, "null");
    sb_puts(b, ",\"code\":");
    sb_json_string(b, e->code, strlen(e->code));
    sb_puts(b, "}}");
}

enum MHD_Result http_send_error(http_req *r, int status, const char *param, const char *code, const char *fmt, ...)
{
    api_error e = {.status = status, .param = param, .code = code};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    return http_send_api_error(r, &e);
}

int api_fail(api_error *e, int status, const char *param, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    e->status = status;
    e->param = param;
    e->code = code;
    return 0;
}

/* Whether any string in v holds U+0000. */
static int has_nul(json_t *v)
{
    if (json_is_string(v))
        return memchr(json_string_value(v), 0, json_string_length(v)) != NULL;
    size_t i;
    const char *k;
    json_t *x;
    if (json_is_array(v))
        json_array_foreach(v, i, x) if (has_nul(x)) return 1;
    if (json_is_object(v))
        json_object_foreach(v, k, x) if (has_nul(x)) return 1;
    return 0;
}

int api_nul_only_in(json_t *body, const char *text, const char *list, const char *list_text, api_error *e)
{
    static _Thread_local char field[64];        /* e->param outlives body: a copy of the key */
    const char *k, *bad = NULL;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (bad || !strcmp(k, text))
            continue;
        if (!list || strcmp(k, list) || !json_is_array(v)) {
            bad = has_nul(v) ? k : NULL;
            continue;
        }
        size_t i;
        json_t *item, *x;
        const char *ik;
        json_array_foreach(v, i, item) {
            if (!json_is_object(item) && has_nul(item))
                bad = k;
            json_object_foreach(item, ik, x) if (strcmp(ik, list_text) && has_nul(x)) bad = k;
        }
    }
    if (!bad)
        return 1;
    snprintf(field, sizeof field, "%s", bad);
    return api_fail(e, 400, field, "invalid_value", "%s holds U+0000, which only the text to tokenize may", field);
}

int api_integer(const json_t *v, long long *out)
{
    if (json_is_integer(v)) {
        *out = (long long)json_integer_value(v);
        return 1;
    }
    double r = json_is_real(v) ? json_real_value(v) : 0.5;
    if (!(r >= -9.2e18 && r <= 9.2e18) || r != (double)(long long)r)
        return 0;
    *out = (long long)r;
    return 1;
}

int api_token_ids(const json_t *arr, int vocab, const char *param, int32_t **out, api_error *e)
{
    size_t n = json_array_size(arr);
    for (size_t i = 0; i < n; i++) {
        long long id;
        if (!api_integer(json_array_get(arr, i), &id))
            return api_fail(e, 400, param, "invalid_value", "%s[%zu] is not an integer token id", param, i);
        if (id < 0 || id >= vocab)
            return api_fail(e, 400, param, "invalid_value", "%s[%zu] is %lld, not a token id in [0, %d)", param, i,
                            id, vocab);
    }
    int32_t *ids = malloc(sizeof *ids * (n + 1));
    if (!ids)
        return api_fail(e, 500, NULL, "internal_error", "out of memory");
    for (size_t i = 0; i < n; i++) {
        long long id;
        api_integer(json_array_get(arr, i), &id);
        ids[i] = (int32_t)id;
    }
    *out = ids;
    return 1;
}

enum MHD_Result http_send_api_error(http_req *r, const api_error *e)
{
    strbuf b = {0};
    api_error_json(&b, e);
    enum MHD_Result ret = b.failed ? MHD_NO : http_send(r, e->status, "application/json", b.data, b.len);
    sb_free(&b);
    return ret;
}

void http_suspend(http_req *r)
{
    if (!r->suspended) {
        r->suspended = 1;
        MHD_suspend_connection(r->conn);
    }
}

void http_resume(http_req *r)
{
    if (r->suspended) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
}

/* ---------------------------------------------------------------- auth */

/* Compare without an early exit, so the time taken does not reveal how much of a
 * key matched. */
static int equal_constant_time(const char *a, size_t la, const char *b, size_t lb)
{
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return diff == 0;
}

static int authorized(http_req *r)
{
    server *srv = r->srv;
    if (srv->n_api_keys == 0)
        return 1;
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7))     /* the scheme is case-insensitive (RFC 9110) */
        return 0;
    const char *key = h + 7;
    int ok = 0;
    for (int i = 0; i < srv->n_api_keys; i++)
        ok |= equal_constant_time(key, strlen(key), srv->api_keys[i], strlen(srv->api_keys[i]));
    return ok;
}

/* ---------------------------------------------------------------- dispatch */

/* Session files are larger than any JSON request. */
static long body_limit(const http_req *r)
{
    return strcmp(r->url, "/v1/sessions/import") ? r->srv->cfg.max_body_bytes : r->srv->cfg.max_import_bytes;
}

enum MHD_Result http_not_allowed(http_req *r, const char *allow)
{
    r->allow = allow;
    return http_send_error(r, 405, NULL, "method_not_allowed", "%s %s: use %s", r->method, r->url, allow);
}

static enum MHD_Result dispatch(http_req *r)
{
    const char *m = r->method, *u = r->url;
    int get = !strcmp(m, "GET") || !strcmp(m, "HEAD"), post = !strcmp(m, "POST");  /* MHD sends HEAD no body */
    if (!strcmp(u, "/health"))
        return get ? route_health(r) : http_not_allowed(r, "GET, HEAD");
    if (r->srv->shutting_down)
        return http_send_error(r, 503, NULL, "shutting_down", "the server is shutting down");
    if (!authorized(r))
        return http_send_error(r, 401, NULL, "invalid_api_key",
                               "missing or invalid API key (send Authorization: Bearer KEY)");
    if (r->body_too_large)
        return http_send_error(r, 413, NULL, "request_too_large", "the request body exceeds %ld bytes",
                               body_limit(r));
    struct { const char *path; int post; } routes[] = {
        {"/v1/models", 0}, {"/tokenize", 1}, {"/detokenize", 1}, {"/metrics", 0},
        {"/v1/completions", 1}, {"/v1/chat/completions", 1}, {"/v1/hooks", 0}, {"/v1/activations", 1},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(u, routes[i].path))
            continue;
        if (routes[i].post ? !post : !get)
            return http_not_allowed(r, routes[i].post ? "POST" : "GET, HEAD");
        switch (i) {
        case 0: return route_models(r);
        case 1: return route_tokenize(r);
        case 2: return route_detokenize(r);
        case 3: return route_metrics(r);
        case 6: return route_hooks(r);
        case 7: return route_activations(r);
        default: return route_completions(r, i == 5);
        }
    }
    if (!strncmp(u, "/v1/models/", 11) && get)
        return route_model(r, u + 11);
    if (!strcmp(u, "/v1/sessions") || !strncmp(u, "/v1/sessions/", 13))
        return route_sessions(r, u + 12);
    return http_send_error(r, 404, NULL, "not_found", "no route %s %s", m, u);
}

static conn_clock *clock_get(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* The clock of a connection (its socket context), now awaiting a request or not. */
static void clock_of(struct MHD_Connection *conn, int receiving)
{
    conn_clock *c = clock_get(conn);
    if (c) {
        c->receiving = receiving;
        c->since = now_seconds();
        c->received = 0;
    }
}

static enum MHD_Result count_content_length(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    (void)value;
    *(int *)cls += !strcasecmp(key, "Content-Length");
    return MHD_YES;
}

/* Framing refused before any body is read (so `Expect: 100-continue` gets no 100):
 * two Content-Lengths (smuggling), a transfer coding other than chunked, a declared
 * body over the limit. */
static enum MHD_Result refuse_framing(http_req *r)
{
    int lengths = 0;
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_content_length, &lengths);
    const char *te = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Transfer-Encoding");
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    if (lengths > 1)
        return http_send_error(r, 400, NULL, "invalid_request", "more than one Content-Length header");
    if (te && strcasecmp(te, "chunked") && strcasecmp(te, "identity"))
        return http_send_error(r, 501, NULL, "not_implemented", "Transfer-Encoding %.40s is not supported (chunked is)",
                               te);
    if (cl && strtoull(cl, NULL, 10) > (unsigned long long)body_limit(r)) {
        r->body_too_large = 1;
        return http_send_error(r, 413, NULL, "request_too_large", "the request body exceeds %ld bytes", body_limit(r));
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    server *srv = cls;
    http_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        *r = (http_req){.srv = srv, .conn = conn, .method = method, .url = url, .t0 = now_seconds()};
        *con_cls = r;
        return refuse_framing(r);
    }
    if (r->status && !r->job && !r->act && !r->save) {     /* answered already (refused framing): drop the rest */
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->job)
        return route_generation_resumed(r);
    if (r->act)
        return route_activations_resumed(r);
    if (r->save)
        return route_sessions_resumed(r);
    if (*upload_size) {
        conn_clock *c = clock_get(conn);
        if (c)
            c->received += *upload_size;
        if ((long)(r->body.len + *upload_size) > body_limit(r))
            r->body_too_large = 1;
        else
            sb_append(&r->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    clock_of(conn, 0);      /* the request is in: from here the route takes its time */
    return dispatch(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    server *srv = cls;
    http_req *r = *con_cls;
    if (!r)
        return;
    if (r->job)
        route_generation_closed(r);
    if (r->act)
        route_activations_closed(r);
    if (r->save)
        route_sessions_closed(r);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status < 400)
        r->status = 499; /* the client went away */
    clock_of(conn, 1);      /* the connection awaits its next request */
    srv->m.requests_total++;
    int hundreds = r->status / 100;
    srv->m.http_status[hundreds >= 1 && hundreds <= 5 ? hundreds : 0]++;
    log_line(srv, "info", "%s %s %d %ld tokens %.1f ms", r->method, r->url, r->status ? r->status : 0,
             r->tokens, (now_seconds() - r->t0) * 1e3);
    sb_free(&r->body);
    free(r);
    *con_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx, enum MHD_ConnectionNotificationCode code)
{
    server *srv = cls;
    http *h = srv->http;
    h->open_connections += code == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_clock *c = ci ? calloc(1, sizeof *c) : NULL;
        if (c) {
            *c = (conn_clock){.next = h->clocks, .fd = ci->connect_fd, .since = now_seconds(), .receiving = 1};
            h->clocks = c;
        }
        *socket_ctx = c;
        return;
    }
    for (conn_clock **pp = &h->clocks; *pp; pp = &(*pp)->next)
        if (*pp == *socket_ctx) {
            conn_clock *c = *pp;
            *pp = c->next;
            free(c);
            break;
        }
    *socket_ctx = NULL;
}

void http_sweep(server *srv)
{
    double now = now_seconds(), limit = srv->cfg.connection_timeout_s;
    int cut = 0;
    for (conn_clock *c = srv->http ? srv->http->clocks : NULL; c; c = c->next)
        if (c->receiving && now - c->since > limit + (double)c->received / UPLOAD_MIN_RATE) {
            shutdown(c->fd, SHUT_RDWR);     /* MHD sees the end of the stream and closes the connection */
            c->receiving = 0;
            cut = 1;
        }
    if (cut)
        http_kick(srv);
}

/* ---------------------------------------------------------------- the uv glue */

static void arm_timer(server *srv);

static void run_mhd(server *srv)
{
    MHD_run(srv->http->d);
    arm_timer(srv);
}

static void on_timer(uv_timer_t *t)
{
    run_mhd(t->data);
}

static void arm_timer(server *srv)
{
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(srv->http->d, &ms) != MHD_YES)
        ms = 1000;
    uv_timer_start(&srv->http->timer, on_timer, ms > 1000 ? 1000 : ms, 0);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    run_mhd(p->data);
}

void http_kick(server *srv)
{
    run_mhd(srv);
}

static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addr;
    (void)addrlen;
    server *srv = cls;
    return srv->http->open_connections < srv->cfg.connection_limit ? MHD_YES : MHD_NO;
}

/* URL unescaping, except that a %00 stays as written: a NUL would end the path as
 * a C string, so "/v1/sessions/ID%00/../x" would act on ID. Such a URL then names
 * nothing (404). */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    return strstr(s, "%00") ? strlen(s) : MHD_http_unescape(s);
}

/* libmicrohttpd's own messages, into the server's log: a client gone before its
 * answer was sent (a dropped stream) is routine, at debug level; the rest warn. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    int gone = strstr(msg, "closed by remote") || strstr(msg, "closed when reading") ||
               strstr(msg, "no longer available") || strstr(msg, "not connected") ||
               strstr(msg, "disconnected") || strstr(msg, "reset by peer") || strstr(msg, "Broken pipe");
    log_line(cls, gone ? "debug" : "warn", "http: %s", msg);
}

int http_start(server *srv)
{
    http *h = calloc(1, sizeof *h);
    if (!h)
        return -1;
    srv->http = h;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv->cfg.port)};
    if (inet_pton(AF_INET, srv->cfg.host, &addr.sin_addr) != 1) {
        log_line(srv, "error", "--host %s: not an IPv4 address", srv->cfg.host);
        return -1;
    }
    h->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, on_accept, srv,
                            on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, srv,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
                            MHD_OPTION_UNESCAPE_CALLBACK, unescape, srv,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)srv->cfg.connection_timeout_s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)srv->cfg.connection_limit + 8,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, MHD_OPTION_END);
    if (!h->d) {
        log_line(srv, "error", "cannot listen on %s:%d", srv->cfg.host, srv->cfg.port);
        return -1;
    }
    const union MHD_DaemonInfo *fd = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    const union MHD_DaemonInfo *port = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = port ? port->port : srv->cfg.port;
    uv_poll_init(srv->loop, &h->poll, fd->epoll_fd);
    h->poll.data = srv;
    uv_poll_start(&h->poll, UV_READABLE, on_poll);
    uv_timer_init(srv->loop, &h->timer);
    h->timer.data = srv;
    arm_timer(srv);
    return 0;
}

int http_port(const server *srv)
{
    return srv->http->port;
}

int http_open_connections(const server *srv)
{
    return srv->http ? srv->http->open_connections : 0;
}

void http_quiesce(server *srv)
{
    if (srv->http && !srv->http->quiesced) {
        srv->http->quiesced = 1;
        MHD_socket s = MHD_quiesce_daemon(srv->http->d);
        if (s != MHD_INVALID_SOCKET)
            close(s);
    }
}

void http_stop(server *srv)
{
    http *h = srv->http;
    if (!h)
        return;
    uv_poll_stop(&h->poll);
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->poll, NULL);
    uv_close((uv_handle_t *)&h->timer, NULL);
    MHD_stop_daemon(h->d);
}
