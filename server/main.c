/*
 * main.c — strata-server: settings, loading the model, its tokenizer and chat
 * template, the engine thread (the scheduler's run loop), the libuv loop that owns
 * the HTTP side, and an orderly shutdown on SIGINT / SIGTERM.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "activations.h"
#include "jobs.h"
#include "reasoning.h"
#include "sessions.h"
#include "tool_calls.h"

/* ---------------------------------------------------------------- loading */

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* With no --model: the built-in model next to the binary (build/../models) or here. */
static void default_model(settings *cfg, const char *argv0)
{
    if (*cfg->model)
        return;
    char exe[PATH_MAX], candidate[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    snprintf(candidate, sizeof candidate, "%s/../models/strata-demo", exe);
    if (!exists(candidate))
        snprintf(candidate, sizeof candidate, "models/strata-demo");
    (void)argv0;
    if (strlen(candidate) < sizeof cfg->model)
        memcpy(cfg->model, candidate, strlen(candidate) + 1);
    if (!*cfg->model_name)
        snprintf(cfg->model_name, sizeof cfg->model_name, "strata-demo");
}

static int load_api_keys(server *srv)
{
    if (!*srv->cfg.api_key_file)
        return 0;
    FILE *f = fopen(srv->cfg.api_key_file, "r");
    if (!f) {
        log_line(srv, "error", "--api-key-file %s: %s", srv->cfg.api_key_file, strerror(errno));
        return -1;
    }
    char buf[1024];
    while (fgets(buf, sizeof buf, f)) {
        char *line = buf + strspn(buf, " \t");        /* a key is the line without surrounding blanks */
        size_t n = strcspn(line, "\r\n");
        while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
            n--;
        line[n] = '\0';
        if (!*line || *line == '#')
            continue;
        char **grown = realloc(srv->api_keys, sizeof *grown * (size_t)(srv->n_api_keys + 1));
        if (!grown || !(grown[srv->n_api_keys] = strdup(line))) {
            free(grown);
            fclose(f);
            return -1;
        }
        srv->api_keys = grown;
        srv->n_api_keys++;
    }
    fclose(f);
    log_line(srv, "info", "API keys: %d loaded (never logged)", srv->n_api_keys);
    return srv->n_api_keys ? 0 : -1;
}

/* End-of-generation ids: the config's eos plus the tokenizer's </s> and <|im_end|>
 * style markers, as generation_config.json usually lists them. */
static void find_eos(server *srv)
{
    const strata_model_info *m = strata_model_get_info(srv->model);
    static const char *const names[] = {"</s>", "<|im_end|>", "<|end_of_text|>", "<|eot_id|>", "<SPECIAL_12>"};
    srv->eos_ids = malloc(sizeof(int32_t) * 8);
    srv->n_eos = 0;
    if (!srv->eos_ids)
        return;
    if (m->eos_token_id >= 0 && m->eos_token_id < m->vocab_size)
        srv->eos_ids[srv->n_eos++] = m->eos_token_id;
    for (size_t i = 0; srv->tok && i < sizeof names / sizeof names[0]; i++) {
        int32_t id = strata_tokenizer_token_to_id(srv->tok, names[i], strlen(names[i]));
        int dup = 0;
        for (int k = 0; k < srv->n_eos; k++)
            dup |= srv->eos_ids[k] == id;
        if (id >= 0 && id < m->vocab_size && !dup && strata_tokenizer_is_special(srv->tok, id))
            srv->eos_ids[srv->n_eos++] = id;
    }
}

/* The special tokens' texts, once: chat requests check user content against them. */
static void find_specials(server *srv)
{
    int32_t V = srv->tok ? strata_tokenizer_vocab_size(srv->tok) : 0;
    for (int32_t id = 0; id < V; id++) {
        size_t len;
        const char *t = strata_tokenizer_is_special(srv->tok, id) ? strata_tokenizer_id_to_token(srv->tok, id, &len) : NULL;
        if (!t || !len)
            continue;
        const char **grown = realloc(srv->specials, sizeof *grown * (size_t)(srv->n_specials + 1));
        if (!grown)
            return;
        srv->specials = grown;
        srv->specials[srv->n_specials++] = t;
    }
}

static int load(server *srv)
{
    strata_error err;
    const char *dir = srv->cfg.model;
    if (srv->cfg.threads > 0) {
        char n[16];
        snprintf(n, sizeof n, "%d", srv->cfg.threads);
        setenv("STRATA_THREADS", n, 1);
    }
    strata_load_opts opts = {.compute = srv->cfg.compute};
    if (strata_weights_parse(srv->cfg.weights, &opts.weights, &err) != STRATA_OK ||
        strata_model_load_with(dir, &opts, &srv->model, &err) != STRATA_OK) {
        log_line(srv, "error", "loading %s: %s", dir, err.message);
        return -1;
    }
    if (strata_model_set_compute(srv->model, srv->cfg.compute, &err) != STRATA_OK) {
        log_line(srv, "error", "--compute: %s", err.message);
        return -1;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (exists(path) && strata_tokenizer_load(path, &srv->tok, &err) != STRATA_OK) {
        log_line(srv, "error", "loading %s: %s", path, err.message);
        return -1;
    }
    if (srv->tok && strata_template_load(dir, &srv->chat, &err) != STRATA_OK) {
        log_line(srv, "warn", "no chat template (%s): /v1/chat/completions is unavailable", err.message);
        srv->chat = NULL;
    }
    srv->tool_syntax = tool_syntax_detect(srv->chat);
    if (reasoning_format_parse(srv->cfg.reasoning_format) < 0) {
        log_line(srv, "error", "--reasoning-format %s: none or deepseek", srv->cfg.reasoning_format);
        return -1;
    }
    const strata_model_info *m = strata_model_get_info(srv->model);
    strata_runner *probe;
    if (strata_runner_new(srv->model, &probe, &err) == STRATA_OK) {
        log_line(srv, "info",
                 "compute: %s kernels, %d threads, %s matmuls, %s weights; a session's state %.1f MiB + %.1f KiB a token",
                 strata_runner_kernel(probe), strata_runner_threads(probe), strata_model_compute(srv->model), m->weights,
                 (double)m->state_bytes_fixed / 1048576.0, (double)m->state_bytes_per_token / 1024.0);
        strata_runner_free(probe);
    }
    srv->context_limit = srv->cfg.context_limit > 0 && srv->cfg.context_limit < m->max_position_embeddings
                             ? srv->cfg.context_limit : m->max_position_embeddings;
    find_eos(srv);
    find_specials(srv);
    if (srv->tok && (srv->n_token_ids = strata_tokenizer_vocab_size(srv->tok)) > 0 &&
        strata_tokenizer_token_bytes(srv->tok, srv->n_token_ids, &srv->token_blob, &srv->token_off, &err) != STRATA_OK) {
        log_line(srv, "error", "token bytes: %s", err.message);
        return -1;
    }
    if (srv->tok && strata_vocab_new(srv->tok, m->vocab_size, &srv->vocab, &err) != STRATA_OK) {
        log_line(srv, "error", "token bytes for structured output: %s", err.message);
        return -1;
    }
    if (srv->cfg.prefix_cache_bytes > 0 &&
        strata_prefix_cache_new(srv->model, (uint64_t)srv->cfg.prefix_cache_bytes, &srv->prefix, &err) != STRATA_OK) {
        log_line(srv, "error", "prefix cache: %s", err.message);
        return -1;
    }
    log_line(srv, "info", "model %s: %d layers (%s), %.1f M parameters, context %d, tokenizer %s, chat template %s "
             "(tool calls: %s)", srv->cfg.model_name, m->n_layers, m->pattern, (double)m->n_params / 1e6,
             srv->context_limit, srv->tok ? "yes" : "no", srv->chat ? "yes" : "no",
             tool_syntax_name(srv->tool_syntax));
    strata_scheduler_limits lim = {.max_running = srv->cfg.max_running, .max_queued = srv->cfg.max_queued,
                                   .max_step_tokens = srv->cfg.max_step_tokens, .max_context = srv->context_limit};
    if (strata_scheduler_new(srv->model, &lim, &srv->sched, &err) != STRATA_OK) {
        log_line(srv, "error", "scheduler: %s", err.message);
        return -1;
    }
    return load_api_keys(srv);
}

/* ---------------------------------------------------------------- the loop */

static server S;
static uv_signal_t sigint, sigterm;
static uv_timer_t sweep_timer;
static double shutdown_deadline;

static void on_wake(uv_async_t *a)
{
    jobs_drain(a->data);
    activations_drain(a->data);
}

static void *engine_main(void *arg)
{
    strata_scheduler_run(arg);
    return NULL;
}

static void finish_shutdown(void)
{
    uv_timer_stop(&sweep_timer);
    uv_close((uv_handle_t *)&sweep_timer, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&S.wake, NULL);
    http_stop(&S);
}

static void on_sweep(uv_timer_t *t)
{
    server *srv = t->data;
    jobs_sweep(srv);
    http_sweep(srv);
    sessions_expire(srv);
    if (!srv->shutting_down)
        return;
    int busy = jobs_active(srv);
    if (busy && now_seconds() < shutdown_deadline)
        return;
    if (busy) {
        log_line(srv, "warn", "grace period over: cancelling %d requests", busy);
        jobs_cut(srv, "shutting_down");
    }
    strata_scheduler_stop(srv->sched);
    if (jobs_active(srv) == 0 && http_open_connections(srv) == 0)
        finish_shutdown();
    else if (now_seconds() > shutdown_deadline + 2)
        finish_shutdown();
}

static void on_signal(uv_signal_t *sig, int signum)
{
    server *srv = sig->data;
    if (srv->shutting_down)
        return;
    log_line(srv, "info", "signal %d: no new connections; finishing in-flight requests (grace %d s)", signum,
             srv->cfg.grace_period_s);
    srv->shutting_down = 1;
    shutdown_deadline = now_seconds() + srv->cfg.grace_period_s;
    http_quiesce(srv);
    uv_timer_start(&sweep_timer, on_sweep, 0, 100);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    int rc = settings_load(&S.cfg, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    default_model(&S.cfg, argv[0]);
    S.started = (double)time(NULL);
    if (load(&S) != 0)
        return 1;
    S.loop = uv_default_loop();
    uv_async_init(S.loop, &S.wake, on_wake);
    S.wake.data = &S;
    sessions_init(&S);
    if (http_start(&S) != 0)
        return 1;
    uv_signal_init(S.loop, &sigint);
    uv_signal_init(S.loop, &sigterm);
    sigint.data = sigterm.data = &S;
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_timer_init(S.loop, &sweep_timer);
    sweep_timer.data = &S;
    uv_timer_start(&sweep_timer, on_sweep, 1000, 1000);
    pthread_t engine;
    pthread_create(&engine, NULL, engine_main, S.sched);
    log_line(&S, "info", "listening on http://%s:%d", S.cfg.host, http_port(&S));
    fflush(stderr);
    uv_run(S.loop, UV_RUN_DEFAULT);
    strata_scheduler_stop(S.sched);
    pthread_join(engine, NULL);
    jobs_drain(&S); /* the engine's last events: every job gets its DONE */
    uv_run(S.loop, UV_RUN_NOWAIT);
    sessions_flush(&S); /* and every session they leave is on disk */
    uv_loop_close(S.loop);
    sessions_free(&S);
    strata_prefix_cache_free(S.prefix);
    strata_scheduler_free(S.sched);
    strata_template_free(S.chat);
    strata_vocab_free(S.vocab);
    free(S.token_blob);
    free(S.token_off);
    strata_tokenizer_free(S.tok);
    strata_model_free(S.model);
    for (int i = 0; i < S.n_api_keys; i++)
        free(S.api_keys[i]);
    free(S.api_keys);
    free(S.eos_ids);
    free(S.specials);
    free(S.http);
    log_line(&S, "info", "stopped");
    return 0;
}
