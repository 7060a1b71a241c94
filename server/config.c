/*
 * config.c — settings: defaults, then the config file (--config FILE, lines of
 * `key = value`, `#` comments), then command-line flags (--key value), which win.
 * One table describes every setting, so the file keys, the flags and --help can
 * never disagree.
 */
#include <errno.h>
#include <libgen.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

typedef enum { T_STR, T_INT, T_LONG } kind;

static const struct option_def {
    const char *name;           /* flag --name, file key name (dashes or underscores) */
    kind type;
    size_t offset, size;
    const char *dflt, *help;
} options[] = {
#define STR(f, n, d, h) {n, T_STR, offsetof(settings, f), sizeof(((settings *)0)->f), d, h}
#define INT(f, n, d, h) {n, T_INT, offsetof(settings, f), sizeof(int), d, h}
    STR(model, "model", "", "checkpoint directory (default: the built-in models/strata-demo)"),
    STR(model_name, "model-name", "", "model id clients send (default: the directory's name)"),
    STR(host, "host", "127.0.0.1", "IPv4 address to listen on"),
    INT(port, "port", "8080", "TCP port (0: any free port)"),
    INT(threads, "threads", "0", "compute threads (0: all cores)"),
    STR(weights, "weights", "native", "matmul weights: native (as stored) or int8 (quantized at load)"),
    STR(compute, "compute", "fp32", "matmul precision: fp32 (exact), bf16 (faster, BF16 weights) or int8 (fastest, with weights = int8 on AVX512_VNNI; see README)"),
    INT(context_limit, "context-limit", "0", "max prompt + generated tokens per sequence (0: the model's)"),
    INT(max_running, "max-running", "16", "requests decoded together (continuous batching)"),
    INT(max_queued, "max-queued", "64", "requests waiting beyond that before 429"),
    INT(max_step_tokens, "max-step-tokens", "256", "rows per engine step: decode tokens + a prefill chunk"),
    INT(max_tokens_limit, "max-tokens-limit", "4096", "largest max_tokens a request may ask for"),
    INT(max_n, "max-n", "8", "largest n (choices) a request may ask for"),
    {"max-body-bytes", T_LONG, offsetof(settings, max_body_bytes), sizeof(long), "8388608", "largest request body"},
    {"max-activation-bytes", T_LONG, offsetof(settings, max_activation_bytes), sizeof(long), "268435456",
     "largest /v1/activations response"},
    INT(request_timeout_s, "request-timeout", "600", "seconds a generation may run before it is cut"),
    INT(connection_timeout_s, "connection-timeout", "30", "seconds an idle or slow connection is kept"),
    INT(connection_limit, "connection-limit", "256", "open connections at most"),
    INT(grace_period_s, "grace-period", "10", "seconds in-flight requests get on SIGTERM / SIGINT"),
    STR(api_key_file, "api-key-file", "", "file of API keys, one per line (none: no authentication)"),
    STR(state_dir, "state-dir", "", "directory where sessions persist (empty: sessions live in memory only)"),
    INT(max_sessions, "max-sessions", "1024", "sessions held in memory (idle ones move to --state-dir, else 429)"),
    {"session-memory-bytes", T_LONG, offsetof(settings, session_memory_bytes), sizeof(long), "4294967296",
     "state bytes sessions may hold in memory"},
    INT(session_ttl_s, "session-ttl", "86400", "seconds an idle session lives (0: forever)"),
    INT(checkpoint_every, "checkpoint-every", "512", "session checkpoints every N prompt tokens of a long prefill"),
    {"session-checkpoint-bytes", T_LONG, offsetof(settings, session_checkpoint_bytes), sizeof(long), "268435456",
     "state bytes one session's automatic checkpoints may hold (0: no bound)"},
    {"max-import-bytes", T_LONG, offsetof(settings, max_import_bytes), sizeof(long), "1073741824",
     "largest session file POST /v1/sessions/import accepts"},
    {"prefix-cache-bytes", T_LONG, offsetof(settings, prefix_cache_bytes), sizeof(long), "268435456",
     "memory for state snapshots of repeated prompt prefixes (0: no prefix cache)"},
    STR(reasoning_format, "reasoning-format", "none",
        "chat answers' <think> blocks: none (left in the content) or deepseek (apart, in reasoning_content); "
        "a request may choose with reasoning_format"),
    STR(log_level, "log-level", "info", "error, warn, info or debug"),
#undef STR
#undef INT
};

#define N_OPTIONS (sizeof options / sizeof options[0])

static const struct option_def *find(const char *name)
{
    char canon[64];
    snprintf(canon, sizeof canon, "%s", name);
    for (char *c = canon; *c; c++)
        if (*c == '_')
            *c = '-';
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (!strcmp(options[i].name, canon))
            return &options[i];
    return NULL;
}

static int set(settings *s, const struct option_def *o, const char *value, const char *where)
{
    char *field = (char *)s + o->offset, *end;
    if (o->type == T_STR) {
        if (strlen(value) >= o->size) {
            fprintf(stderr, "strata-server: %s: value of %s is too long\n", where, o->name);
            return -1;
        }
        strcpy(field, value);
        return 0;
    }
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < 0 || (o->type == T_INT && v > 1000000000L)) {
        fprintf(stderr, "strata-server: %s: %s needs a non-negative integer, got '%s'\n", where, o->name, value);
        return -1;
    }
    if (o->type == T_INT)
        *(int *)field = (int)v;
    else
        *(long *)field = v;
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

static int load_file(settings *s, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "strata-server: --config %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[8192];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char *l = trim(line), *eq = strchr(l, '=');
        if (!*l || *l == '#')
            continue;
        char where[4200];
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        if (!eq) {
            fprintf(stderr, "strata-server: %s: expected key = value\n", where);
            rc = -1;
            break;
        }
        *eq = '\0';
        const struct option_def *o = find(trim(l));
        if (!o) {
            fprintf(stderr, "strata-server: %s: unknown setting '%s'\n", where, trim(l));
            rc = -1;
        } else {
            rc = set(s, o, trim(eq + 1), where);
        }
    }
    fclose(f);
    return rc;
}

void settings_usage(FILE *f)
{
    fprintf(f, "usage: strata-server [--config FILE] [--model DIR] [--host ADDR] [--port N] [options]\n\n"
               "Serves a Nemotron-H checkpoint over an OpenAI-compatible HTTP API.\n"
               "Settings come from defaults, then --config FILE (key = value), then flags.\n\n"
               "  --config FILE              read settings from FILE (see config/strata.conf)\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s %s", options[i].name, options[i].type == T_STR ? "VALUE" : "N");
        fprintf(f, "  %-26s %s", flag, options[i].help);
        if (*options[i].dflt)
            fprintf(f, " [%s]", options[i].dflt);
        fputc('\n', f);
    }
    fprintf(f, "  --help                     this text\n");
}

int settings_load(settings *s, int argc, char **argv)
{
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < N_OPTIONS; i++)
        set(s, &options[i], options[i].dflt, "default");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            settings_usage(stdout);
            return 1;
        }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc || load_file(s, argv[i + 1]) != 0)
                return -1;
            i++;
        }
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            i++;
            continue;
        }
        const struct option_def *o = strncmp(argv[i], "--", 2) ? NULL : find(argv[i] + 2);
        if (!o || i + 1 >= argc) {
            fprintf(stderr, "strata-server: unknown or incomplete option '%s' (see --help)\n", argv[i]);
            return -1;
        }
        if (set(s, o, argv[++i], "command line") != 0)
            return -1;
    }
    strata_weights w;
    strata_error err;
    if (strata_weights_parse(s->weights, &w, &err) != STRATA_OK) {
        fprintf(stderr, "strata-server: --weights: %s\n", err.message);
        return -1;
    }
    if (!*s->model_name && *s->model) {
        char copy[4096];
        snprintf(copy, sizeof copy, "%s", s->model);
        size_t n = strlen(copy);
        while (n > 1 && copy[n - 1] == '/')
            copy[--n] = '\0';
        snprintf(s->model_name, sizeof s->model_name, "%s", basename(copy));
    }
    if (s->connection_limit < 1 || s->max_running < 1 || s->max_step_tokens < 1 || s->max_n < 1 ||
        s->max_n > STRATA_MAX_CHOICES || s->port > 65535) {
        fprintf(stderr, "strata-server: connection-limit, max-running, max-step-tokens must be >= 1, "
                        "max-n in [1, %d], port <= 65535\n", STRATA_MAX_CHOICES);
        return -1;
    }
    return 0;
}
