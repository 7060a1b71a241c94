/*
 * routes_service.c — the service routes: /health, /v1/models, /v1/models/{id},
 * /tokenize, /detokenize and /metrics (Prometheus text).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "jobs.h"
#include "sessions.h"
#include "tool_calls.h"

enum MHD_Result route_health(http_req *r)
{
    return http_send(r, 200, "application/json", "{\"status\":\"ok\"}", 15);
}

static void model_object(const server *srv, strbuf *b)
{
    const strata_model_info *m = strata_model_get_info(srv->model);
    static const char *const names[128] = {['M'] = "mamba", ['*'] = "attention", ['-'] = "mlp", ['E'] = "moe"};
    sb_puts(b, "{\"id\":");
    sb_json_string(b, srv->cfg.model_name, strlen(srv->cfg.model_name));
    sb_printf(b, ",\"object\":\"model\",\"created\":%ld,\"owned_by\":\"strata\",\"meta\":{"
                 "\"architecture\":\"NemotronHForCausalLM\",\"layers_block_type\":[",
              (long)srv->started);
    for (int i = 0; i < m->n_layers; i++)
        sb_printf(b, "%s\"%s\"", i ? "," : "", names[(unsigned char)m->pattern[i] & 127]);
    sb_printf(b, "],\"hybrid_override_pattern\":\"%s\",\"hidden_size\":%d,\"vocab_size\":%d,\"n_params\":%llu,"
                 "\"context_length\":%d,\"state_bytes_fixed\":%llu,\"state_bytes_per_token\":%llu,"
                 "\"mamba\":{\"heads\":%d,\"head_dim\":%d,\"state_size\":%d,\"groups\":%d,\"conv_kernel\":%d},"
                 "\"attention\":{\"heads\":%d,\"kv_heads\":%d,\"head_dim\":%d},\"intermediate_size\":%d,"
                 "\"compute\":\"%s\",\"weights\":\"%s\",\"weight_bytes\":%llu",
              m->pattern, m->hidden_size, m->vocab_size, (unsigned long long)m->n_params, srv->context_limit,
              (unsigned long long)m->state_bytes_fixed, (unsigned long long)m->state_bytes_per_token, m->mamba_heads,
              m->mamba_head_dim, m->ssm_state_size, m->n_groups, m->conv_kernel, m->attn_heads, m->kv_heads,
              m->head_dim, m->intermediate_size, strata_model_compute(srv->model), m->weights,
              (unsigned long long)m->weight_bytes);
    if (strchr(m->pattern, 'E'))
        sb_printf(b, ",\"moe\":{\"experts\":%d,\"experts_per_tok\":%d,\"intermediate_size\":%d,"
                     "\"shared_intermediate_size\":%d,\"active_params\":%llu}",
                  m->n_experts, m->experts_per_tok, m->moe_intermediate_size, m->shared_intermediate_size,
                  (unsigned long long)m->active_params);
    /* what a client may ask of the chat side: structured output, and calls in which syntax */
    sb_printf(b, ",\"response_format\":%s,\"tool_calls\":\"%s\"", srv->vocab && srv->n_eos ? "true" : "false",
              tool_syntax_name(srv->tool_syntax));
    sb_puts(b, "}}");
}

enum MHD_Result route_models(http_req *r)
{
    strbuf b = {0};
    sb_puts(&b, "{\"object\":\"list\",\"data\":[");
    model_object(r->srv, &b);
    sb_puts(&b, "]}");
    enum MHD_Result ret = http_send_json(r, 200, &b);
    sb_free(&b);
    return ret;
}

enum MHD_Result route_model(http_req *r, const char *id)
{
    if (strcmp(id, r->srv->cfg.model_name))
        return http_send_error(r, 404, "model", "model_not_found", "the model '%s' does not exist", id);
    strbuf b = {0};
    model_object(r->srv, &b);
    enum MHD_Result ret = http_send_json(r, 200, &b);
    sb_free(&b);
    return ret;
}

static json_t *body_object(http_req *r)
{
    json_t *body = json_loadb(r->body.data ? r->body.data : "", r->body.len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(body)) {
        json_decref(body);
        return NULL;
    }
    return body;
}

const char *token_piece(const server *srv, int32_t id, size_t *len)
{
    *len = 0;
    if (!srv->token_off || id < 0 || id >= srv->n_token_ids)
        return "";
    *len = srv->token_off[id + 1] - srv->token_off[id];
    if (*len)
        return srv->token_blob + srv->token_off[id];
    const char *t = strata_tokenizer_id_to_token(srv->tok, id, len);
    return t && strata_tokenizer_is_special(srv->tok, id) ? t : (*len = 0, "");
}

/* A token's piece as llama.cpp gives it: a string when its bytes are valid UTF-8,
 * else the list of its bytes (part of a character). */
static void piece_json(const server *srv, int32_t id, strbuf *b)
{
    size_t n;
    const char *raw = token_piece(srv, id, &n);
    json_t *text = json_stringn(raw, n);     /* NULL: not valid UTF-8 */
    if (text) {
        sb_json_string(b, raw, n);
        json_decref(text);
        return;
    }
    sb_puts(b, "[");
    for (size_t i = 0; i < n; i++)
        sb_printf(b, i ? ",%u" : "%u", (unsigned char)raw[i]);
    sb_puts(b, "]");
}

enum MHD_Result route_tokenize(http_req *r)
{
    server *srv = r->srv;
    json_t *body = body_object(r);
    if (!body)
        return http_send_error(r, 400, NULL, "invalid_json", "the body must be a JSON object");
    json_t *content = json_object_get(body, "content");
    json_t *add = json_object_get(body, "add_special"), *parse = json_object_get(body, "parse_special"),
           *pieces = json_object_get(body, "with_pieces");
    enum MHD_Result ret;
    if (!srv->tok) {
        ret = http_send_error(r, 400, NULL, "no_tokenizer", "this model has no tokenizer.json");
    } else if (!json_is_string(content)) {
        ret = http_send_error(r, 400, "content", "invalid_value", "content must be a string");
    } else if (add && !json_is_boolean(add)) {
        ret = http_send_error(r, 400, "add_special", "invalid_value", "add_special must be true or false");
    } else if (parse && !json_is_boolean(parse)) {
        ret = http_send_error(r, 400, "parse_special", "invalid_value", "parse_special must be true or false");
    } else if (pieces && !json_is_boolean(pieces)) {
        ret = http_send_error(r, 400, "with_pieces", "invalid_value", "with_pieces must be true or false");
    } else {    /* llama.cpp's defaults: add_special false, parse_special true */
        unsigned flags = (json_is_true(add) ? STRATA_TOKENIZE_ADD_SPECIAL : 0) |
                         (!parse || json_is_true(parse) ? STRATA_TOKENIZE_PARSE_SPECIAL : 0);
        int32_t *ids;
        size_t n;
        strata_error err;
        if (strata_tokenizer_encode(srv->tok, json_string_value(content), json_string_length(content), flags, &ids, &n,
                                    &err) != STRATA_OK) {
            ret = http_send_error(r, 400, "content", "invalid_value", "%s", err.message);
        } else {
            strbuf b = {0};
            sb_puts(&b, "{\"tokens\":[");
            for (size_t i = 0; i < n; i++) {
                if (i)
                    sb_puts(&b, ",");
                if (json_is_true(pieces)) {
                    sb_printf(&b, "{\"id\":%d,\"piece\":", ids[i]);
                    piece_json(srv, ids[i], &b);
                    sb_puts(&b, "}");
                } else {
                    sb_printf(&b, "%d", ids[i]);
                }
            }
            sb_puts(&b, "]}");
            free(ids);
            ret = http_send_json(r, 200, &b);
            sb_free(&b);
        }
    }
    json_decref(body);
    return ret;
}

enum MHD_Result route_detokenize(http_req *r)
{
    server *srv = r->srv;
    json_t *body = body_object(r);
    if (!body)
        return http_send_error(r, 400, NULL, "invalid_json", "the body must be a JSON object");
    json_t *tokens = json_object_get(body, "tokens");
    int32_t V = srv->tok ? strata_tokenizer_vocab_size(srv->tok) : 0;
    size_t n = json_array_size(tokens);
    int32_t *ids = malloc(sizeof(int32_t) * (n + 1));
    enum MHD_Result ret = MHD_NO;
    const char *bad = !srv->tok ? "this model has no tokenizer.json" : !json_is_array(tokens) ? "tokens must be an array of token ids" : NULL;
    for (size_t i = 0; !bad && ids && i < n; i++) {
        json_t *v = json_array_get(tokens, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= V)
            bad = "tokens must be token ids of this model's vocabulary";
        else
            ids[i] = (int32_t)json_integer_value(v);
    }
    if (!ids) {
        ret = http_send_error(r, 500, NULL, "internal_error", "out of memory");
    } else if (bad) {
        ret = http_send_error(r, 400, "tokens", "invalid_value", "%s", bad);
    } else {
        char *text = NULL;
        size_t len = 0;
        strata_error err;
        if (strata_tokenizer_decode(srv->tok, ids, n, 0, &text, &len, &err) != STRATA_OK) {
            ret = http_send_error(r, 400, "tokens", "invalid_value", "%s", err.message);
        } else {
            strbuf b = {0};
            sb_puts(&b, "{\"content\":");
            sb_json_string(&b, text, len);
            sb_puts(&b, "}");
            ret = http_send_json(r, 200, &b);
            sb_free(&b);
        }
        free(text);
    }
    free(ids);
    json_decref(body);
    return ret;
}

static uint64_t prefix_hits(const server *srv)
{
    strata_prefix_stats ps;
    strata_prefix_cache_get_stats(srv->prefix, &ps);
    return ps.hits;
}

enum MHD_Result route_metrics(http_req *r)
{
    server *srv = r->srv;
    strata_scheduler_stats st;
    strata_scheduler_get_stats(srv->sched, &st);
    strbuf b = {0};
    sb_printf(&b, "# HELP strata_requests_total HTTP requests served.\n# TYPE strata_requests_total counter\n"
                  "strata_requests_total %llu\n", (unsigned long long)srv->m.requests_total);
    sb_puts(&b, "# HELP strata_responses_total HTTP responses by status class.\n# TYPE strata_responses_total counter\n");
    for (int h = 1; h <= 5; h++)
        sb_printf(&b, "strata_responses_total{status=\"%dxx\"} %llu\n", h, (unsigned long long)srv->m.http_status[h]);
    sb_printf(&b, "# HELP strata_request_prompt_tokens_total Prompt tokens of the completions and chats asked for.\n"
                  "# TYPE strata_request_prompt_tokens_total counter\nstrata_request_prompt_tokens_total %llu\n",
              (unsigned long long)srv->m.request_prompt_tokens);
    sb_printf(&b, "# HELP strata_prompt_tokens_total Prompt tokens the engine processed (cached and shared ones are "
                  "not).\n# TYPE strata_prompt_tokens_total counter\nstrata_prompt_tokens_total %llu\n"
                  "# TYPE strata_generated_tokens_total counter\nstrata_generated_tokens_total %llu\n"
                  "# TYPE strata_engine_steps_total counter\nstrata_engine_steps_total %llu\n"
                  "# TYPE strata_prefill_tokens_per_second gauge\nstrata_prefill_tokens_per_second %.3f\n"
                  "# TYPE strata_decode_tokens_per_second gauge\nstrata_decode_tokens_per_second %.3f\n"
                  "# TYPE strata_queue_depth gauge\nstrata_queue_depth %d\n"
                  "# TYPE strata_running_requests gauge\nstrata_running_requests %d\n"
                  "# TYPE strata_live_sessions gauge\nstrata_live_sessions %d\n"
                  "# TYPE strata_session_state_bytes gauge\nstrata_session_state_bytes %llu\n"
                  "# TYPE strata_state_bytes gauge\nstrata_state_bytes %llu\n"
                  "# TYPE strata_prefix_cache_hits_total counter\nstrata_prefix_cache_hits_total %llu\n"
                  "# TYPE strata_requests_cancelled_total counter\nstrata_requests_cancelled_total %llu\n",
              (unsigned long long)st.prompt_tokens, (unsigned long long)st.generated_tokens,
              (unsigned long long)st.steps, st.prefill_seconds > 0 ? (double)st.prompt_tokens / st.prefill_seconds : 0.0,
              st.decode_seconds > 0 ? (double)st.generated_tokens / st.decode_seconds : 0.0, st.queued, st.running,
              sessions_count(srv), (unsigned long long)sessions_bytes(srv), (unsigned long long)st.state_bytes,
              (unsigned long long)(srv->prefix ? prefix_hits(srv) : 0), (unsigned long long)st.requests_cancelled);
    strata_prefix_stats ps = {0};
    if (srv->prefix)
        strata_prefix_cache_get_stats(srv->prefix, &ps);
    sb_printf(&b, "# TYPE strata_prefix_cache_lookups_total counter\nstrata_prefix_cache_lookups_total %llu\n"
                  "# TYPE strata_prefix_cache_hit_rate gauge\nstrata_prefix_cache_hit_rate %.4f\n"
                  "# TYPE strata_prefix_cache_tokens_saved_total counter\nstrata_prefix_cache_tokens_saved_total %llu\n"
                  "# TYPE strata_prefix_cache_bytes gauge\nstrata_prefix_cache_bytes %llu\n"
                  "# TYPE strata_prefix_cache_snapshots gauge\nstrata_prefix_cache_snapshots %d\n"
                  "# TYPE strata_prefix_cache_evictions_total counter\nstrata_prefix_cache_evictions_total %llu\n",
              (unsigned long long)ps.lookups, ps.lookups ? (double)ps.hits / (double)ps.lookups : 0.0,
              (unsigned long long)ps.tokens_saved, (unsigned long long)ps.bytes, ps.snapshots,
              (unsigned long long)ps.evictions);
    enum MHD_Result ret = b.failed ? MHD_NO : http_send(r, 200, "text/plain; version=0.0.4", b.data, b.len);
    sb_free(&b);
    return ret;
}
