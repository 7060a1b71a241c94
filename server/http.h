/*
 * http.h — libmicrohttpd driven by the libuv loop, and what route handlers use:
 * the request being served, JSON / error responses, suspend and resume.
 */
#ifndef STRATA_SERVER_HTTP_H
#define STRATA_SERVER_HTTP_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdint.h>

#include "server.h"

struct gen_job;
struct act_job;

typedef struct http_req {
    server *srv;
    struct MHD_Connection *conn;
    const char *method, *url;
    strbuf body;
    int body_too_large;
    int status;                 /* for the log line */
    long tokens;                /* for the log line */
    double t0;
    struct gen_job *job;        /* a generation in flight for this request */
    struct act_job *act;        /* an activations run in flight (routes_activations.c) */
    struct pending_save *save;  /* a session route's answer waiting for its save (routes_sessions.c) */
    int suspended;
    const char *allow;          /* a 405's Allow header */
} http_req;

typedef struct http http;

/* Start listening on cfg.host:cfg.port (0 = any free port), driven by srv->loop. */
int http_start(server *srv);
/* The port actually bound. */
int http_port(const server *srv);
/* Stop accepting new connections (in-flight ones go on). */
void http_quiesce(server *srv);
/* Connections still open. */
int http_open_connections(const server *srv);
void http_stop(server *srv);
/* Let MHD process what is ready now (after resuming a connection). */
void http_kick(server *srv);
/* Every second: close connections whose client has taken longer than
 * --connection-timeout to send its request (headers and body), however slowly it
 * trickles; MHD's own timeout only closes idle ones. */
void http_sweep(server *srv);

/* An error to send: HTTP status, the parameter and code of the OpenAI error object.
 * Parsers fill one with api_fail (which returns 0, so `return api_fail(...)`). */
typedef struct api_error {
    int status;
    const char *param, *code;
    char message[1024];
} api_error;

int api_fail(api_error *e, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The elements of JSON array arr as token ids in [0, vocab), into a new array with
 * room for one more (*out: the caller frees it); else 0, nothing allocated, and a
 * 400 on `param` naming the first element that is not one. */
int api_token_ids(const json_t *arr, int vocab, const char *param, int32_t **out, api_error *e);
/* U+0000 is text only where text goes to the tokenizer: body field `text`, and
 * field `list_text` of the objects in array `list` (NULL: none); anywhere else (ids,
 * names, roles) a C string would end at it. 1, or 0 and a 400 naming the field. */
int api_nul_only_in(json_t *body, const char *text, const char *list, const char *list_text, api_error *e);
/* v as an integer: a JSON integer, or a real with an integral value that fits
 * (4.0, 1e3: pydantic's lax mode reads them so). 0 for anything else. */
int api_integer(const json_t *v, long long *out);
enum MHD_Result http_send_api_error(http_req *r, const api_error *e);
/* e as the OpenAI error object: {"error": {"message", "type", "param", "code"}}. */
void api_error_json(strbuf *b, const api_error *e);

enum MHD_Result http_send(http_req *r, int status, const char *content_type, const char *body, size_t len);
enum MHD_Result http_send_json(http_req *r, int status, const strbuf *json);
/* The OpenAI error object: {"error": {"message", "type", "param", "code"}}. */
enum MHD_Result http_send_error(http_req *r, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* 405 with the Allow header: the methods the route takes ("GET, HEAD", "POST"). */
enum MHD_Result http_not_allowed(http_req *r, const char *allow);
void http_suspend(http_req *r);
void http_resume(http_req *r);

/* Routes (routes_*.c). Each returns what the MHD access handler returns. */
enum MHD_Result route_health(http_req *r);
enum MHD_Result route_models(http_req *r);
enum MHD_Result route_model(http_req *r, const char *id);
enum MHD_Result route_tokenize(http_req *r);
enum MHD_Result route_detokenize(http_req *r);
enum MHD_Result route_metrics(http_req *r);
enum MHD_Result route_completions(http_req *r, int chat);
enum MHD_Result route_sessions(http_req *r, const char *rest);
/* Called again after a session route waiting for its save is resumed; the connection
 * ended while it waited. */
enum MHD_Result route_sessions_resumed(http_req *r);
void route_sessions_closed(http_req *r);
/* Called again after a suspended generation request is resumed. */
enum MHD_Result route_generation_resumed(http_req *r);
/* The connection ended (normally or not) while a generation was attached. */
void route_generation_closed(http_req *r);

#endif
