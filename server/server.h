/*
 * server.h — what the pieces of strata-server share: the settings, the loaded model
 * with its tokenizer and chat template, the scheduler the engine thread runs, the
 * counters behind /metrics, and the HTTP daemon glue.
 */
#ifndef STRATA_SERVER_H
#define STRATA_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "strata.h"
#include "strbuf.h"
#include "tool_calls.h"

typedef struct settings {
    char model[4096];
    char model_name[256];       /* id in /v1/models; default: the directory's name */
    char host[256];
    int port;
    int threads;
    char compute[8];            /* matmul precision: fp32 or bf16 */
    int context_limit;          /* prompt + generation tokens; 0 = the model's maximum */
    int max_running;            /* requests batched together */
    int max_queued;             /* waiting beyond that before 429 */
    int max_step_tokens;        /* rows per engine step (decode + prefill chunk) */
    int max_tokens_limit;       /* bound on max_tokens of one request */
    int max_n;                  /* bound on n */
    long max_body_bytes;
    long max_activation_bytes;  /* largest /v1/activations response */
    int request_timeout_s;      /* a generation longer than this is cut (503 "timeout") */
    int connection_timeout_s;   /* idle / slow clients */
    int connection_limit;
    int grace_period_s;         /* SIGTERM: time for in-flight requests */
    char api_key_file[4096];
    char state_dir[4096];
    int max_sessions;           /* sessions resident in memory at most (LRU to disk, else 429) */
    long session_memory_bytes;  /* state bytes resident sessions may hold */
    int session_ttl_s;          /* idle sessions are dropped after this (0: never) */
    int checkpoint_every;       /* session checkpoints every N prompt tokens */
    long session_checkpoint_bytes; /* per session: automatic checkpoints' state bytes (0: no bound) */
    long max_import_bytes;      /* largest session file accepted by import */
    long prefix_cache_bytes;    /* budget of the prefix cache (0: off) */
    char reasoning_format[16];  /* the default of chat requests' reasoning_format: none, deepseek */
    char log_level[16];         /* error, warn, info, debug */
    char weights[16];           /* native, int8 (strata_weights_parse) */
} settings;

/* Fill defaults, read --config FILE if given, then apply the other flags.
 * Returns 0 to run, 1 after --help (print and exit 0), -1 on a usage error. */
int settings_load(settings *s, int argc, char **argv);
void settings_usage(FILE *f);

typedef struct metrics {
    uint64_t requests_total;
    uint64_t http_status[6];    /* by hundreds: 1xx..5xx */
    uint64_t request_prompt_tokens; /* of every generation request admitted */
} metrics;

typedef struct server {
    settings cfg;
    strata_model *model;
    strata_tokenizer *tok;      /* NULL: token-id prompts only */
    strata_template *chat;      /* NULL: no chat endpoint */
    strata_vocab *vocab;        /* token bytes for response_format (NULL: no tokenizer) */
    tool_syntax tool_syntax;    /* how the chat template writes tool calls */
    int32_t *eos_ids;           /* generation stops at these */
    int n_eos;
    int32_t bos_id;
    char *token_blob;           /* every token's bytes (strata_tokenizer_token_bytes), or NULL */
    uint32_t *token_off;        /* (n_token_ids + 1) where each id's bytes start in token_blob */
    int32_t n_token_ids;
    const char **specials;      /* the text of every special added token (tokenizer-owned) */
    int n_specials;
    int context_limit;
    strata_scheduler *sched;
    strata_prefix_cache *prefix; /* NULL when off */
    uv_loop_t *loop;
    uv_async_t wake;            /* the engine thread posted events */
    struct http *http;
    char **api_keys;
    int n_api_keys;
    metrics m;
    int shutting_down;
    double started;
} server;

double now_seconds(void);
/* The bytes token id stands for: raw, so a byte token gives its part of a UTF-8
 * character (OpenAI's logprobs `bytes`, llama.cpp's pieces); a special token, its
 * text. Empty for ids without a token. */
const char *token_piece(const server *srv, int32_t id, size_t *len);
void log_line(const server *srv, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
