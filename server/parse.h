/*
 * parse.h — the request body parsers as functions of (server, bytes), apart from any
 * connection, so that the fuzz harnesses (fuzz/) and the regression tests reach
 * exactly the code the routes run. Each returns 1, or 0 with the error to send.
 */
#ifndef STRATA_SERVER_PARSE_H
#define STRATA_SERVER_PARSE_H

#include <jansson.h>

#include "activations.h"
#include "jobs.h"

/* POST /v1/completions (chat 0) or /v1/chat/completions (chat 1): fills p (release
 * with gen_params_free, also after a failure). */
int completions_parse(server *srv, const char *data, size_t len, int chat, gen_params *p, api_error *e);

/* POST /v1/activations without running it: the body checked as the route checks it
 * (runs, hooks, positions, interventions, the response size). accept: the Accept
 * header or NULL. A "session" must not name a session with "commit" here. */
int activations_parse(server *srv, const char *data, size_t len, const char *accept, api_error *e);

/* Session bodies: the JSON object of an optional body (empty = {}), *bad = 1 when
 * it is not an object; and a "prompt" (string or token ids) as malloc'd tokens. */
json_t *session_body_object(const char *data, size_t len, int *bad);
int session_prompt_parse(const server *srv, json_t *prompt, int32_t **ids, int *n, api_error *e);

#endif
