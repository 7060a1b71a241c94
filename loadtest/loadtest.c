/*
 * loadtest.c — `make loadtest`: a bounded load run against a real strata-server on
 * 127.0.0.1. 64 clients each send a mix of non-streamed and streamed completions,
 * chat, activations and session operations (create with a prompt, continue, fork,
 * delete) until a request count or a time limit is reached. Reports requests/s,
 * errors (anything but the intended 2xx and 429), p50/p99 latency, and the server's
 * RSS before, between and after two identical rounds (growth must stay bounded).
 * Settings: LOADTEST_CLIENTS (64), LOADTEST_REQUESTS per client and round (12),
 * LOADTEST_SECONDS per round (120), STRATA_BENCH_MODEL (models/strata-demo).
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_client.h"

typedef struct client {
    int port, id, requests;
    double deadline;
    double *lat;
    int n_lat, ok, throttled, errors;
    char last_error[256];
} client;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v ? atoi(v) : dflt;
}

/* One request; records latency and classifies the status. Returns the body (or NULL). */
static json_t *request(client *c, const char *method, const char *path, const char *body)
{
    http_response r;
    double t0 = now();
    if (http_do(c->port, method, path, body, body ? strlen(body) : 0, NULL, &r) != 0) {
        c->errors++;
        snprintf(c->last_error, sizeof c->last_error, "%s %s: connection failed", method, path);
        return NULL;
    }
    c->lat[c->n_lat++] = now() - t0;
    json_t *j = NULL;
    if (r.status == 200 || r.status == 201) {
        c->ok++;
        j = json_loadb(r.body, r.body_len, 0, NULL);
        if (!j)
            j = json_object(); /* SSE or binary bodies: success all the same */
    } else if (r.status == 429) {
        c->throttled++;
    } else {
        c->errors++;
        snprintf(c->last_error, sizeof c->last_error, "%s %s -> %d %.160s", method, path, r.status, r.body);
    }
    http_response_free(&r);
    return j;
}

static void session_round(client *c)
{
    json_t *s = request(c, "POST", "/v1/sessions", "{\"prompt\":\"In the beginning\"}");
    const char *id = json_string_value(json_object_get(s, "id"));
    if (id) {
        char body[256], path[128];
        snprintf(body, sizeof body, "{\"session\":\"%s\",\"prompt\":\"In the beginning God\",\"max_tokens\":6}", id);
        json_decref(request(c, "POST", "/v1/completions", body));
        snprintf(path, sizeof path, "/v1/sessions/%s/fork", id);
        json_t *f = request(c, "POST", path, NULL);
        const char *fid = json_string_value(json_object_get(f, "id"));
        if (fid) {
            snprintf(path, sizeof path, "/v1/sessions/%s", fid);
            json_decref(request(c, "DELETE", path, NULL));
        }
        json_decref(f);
        snprintf(path, sizeof path, "/v1/sessions/%s", id);
        json_decref(request(c, "DELETE", path, NULL));
    }
    json_decref(s);
}

static void *run_client(void *arg)
{
    client *c = arg;
    unsigned seed = (unsigned)c->id * 2654435761u;
    for (int i = 0; i < c->requests && now() < c->deadline; i++) {
        int kind = (int)(rand_r(&seed) % 10);
        if (kind < 3)
            json_decref(request(c, "POST", "/v1/completions", "{\"prompt\":\"And God said\",\"max_tokens\":8}"));
        else if (kind < 5)
            json_decref(request(c, "POST", "/v1/completions",
                                "{\"prompt\":\"The LORD is\",\"max_tokens\":8,\"stream\":true}"));
        else if (kind < 7)
            json_decref(request(c, "POST", "/v1/chat/completions",
                                "{\"messages\":[{\"role\":\"user\",\"content\":\"Who is David?\"}],\"max_tokens\":8}"));
        else if (kind < 8)
            json_decref(request(c, "POST", "/v1/activations",
                                "{\"prompt\":\"In the beginning\",\"hooks\":[\"blocks.*.hook_out\"],\"positions\":\"last\"}"));
        else
            session_round(c);
    }
    return NULL;
}

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kib = atol(line + 6);
    if (f)
        fclose(f);
    return kib;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One round of every client; returns the number of unexpected errors. */
static int round_of(int port, int n_clients, int per_client, int seconds, int round)
{
    client *cs = calloc((size_t)n_clients, sizeof *cs);
    pthread_t *th = calloc((size_t)n_clients, sizeof *th);
    double t0 = now();
    for (int i = 0; i < n_clients; i++) {
        cs[i] = (client){.port = port, .id = i + round * 1000, .requests = per_client, .deadline = t0 + seconds,
                         .lat = calloc((size_t)per_client * 6 + 8, sizeof(double))};
        pthread_create(&th[i], NULL, run_client, &cs[i]);
    }
    int total = 0, ok = 0, throttled = 0, errors = 0;
    for (int i = 0; i < n_clients; i++) {
        pthread_join(th[i], NULL);
        total += cs[i].n_lat;
        ok += cs[i].ok;
        throttled += cs[i].throttled;
        errors += cs[i].errors;
    }
    double elapsed = now() - t0;
    double *all = malloc(sizeof(double) * (size_t)(total + 1));
    int k = 0;
    for (int i = 0; i < n_clients; i++)
        for (int j = 0; j < cs[i].n_lat; j++)
            all[k++] = cs[i].lat[j];
    qsort(all, (size_t)k, sizeof *all, cmp_double);
    printf("round %d: %d requests in %.1f s = %.1f requests/s; ok %d, 429 %d, errors %d; latency p50 %.0f ms, "
           "p99 %.0f ms\n", round, k, elapsed, k / elapsed, ok, throttled, errors, k ? all[k / 2] * 1e3 : 0,
           k ? all[(int)(k * 0.99)] * 1e3 : 0);
    for (int i = 0; i < n_clients; i++)
        if (cs[i].errors)
            printf("  client %d: %s\n", i, cs[i].last_error);
    for (int i = 0; i < n_clients; i++)
        free(cs[i].lat);
    free(all);
    free(cs);
    free(th);
    return errors;
}

int main(void)
{
    const char *model = getenv("STRATA_BENCH_MODEL") ? getenv("STRATA_BENCH_MODEL") : "models/strata-demo";
    int n_clients = env_int("LOADTEST_CLIENTS", 64), per = env_int("LOADTEST_REQUESTS", 12),
        seconds = env_int("LOADTEST_SECONDS", 120);
    if (n_clients < 1 || n_clients > 1024 || per < 1)
        return 2;
    if (!getenv("STRATA_SERVER"))
        setenv("STRATA_SERVER", "build/strata-server", 0);
    test_server s;
    const char *args[] = {"--max-queued", "256", "--connection-limit", "512", NULL};
    if (server_start(&s, model, args) != 0) {
        fprintf(stderr, "loadtest: strata-server did not start\n");
        return 1;
    }
    printf("== loadtest: %d clients x %d requests per round (at most %d s), model %s\n", n_clients, per, seconds, model);
    long rss0 = rss_kib(s.pid);
    int errors = round_of(s.port, n_clients, per, seconds, 1);
    long rss1 = rss_kib(s.pid);
    errors += round_of(s.port, n_clients, per, seconds, 2);
    long rss2 = rss_kib(s.pid);
    printf("server RSS: %ld MiB at start, %ld MiB after round 1, %ld MiB after round 2 (growth in round 2: %+ld KiB)\n",
           rss0 / 1024, rss1 / 1024, rss2 / 1024, rss2 - rss1);
    int status = server_stop(&s);
    /* bound: a second identical round may not grow the server by more than 10% + 16 MiB */
    int bounded = rss2 - rss1 <= rss1 / 10 + 16 * 1024;
    printf("%s: %d unexpected errors, RSS growth %s, server exit %d\n", errors || !bounded || status ? "FAIL" : "OK",
           errors, bounded ? "bounded" : "UNBOUNDED", status);
    return errors || !bounded || status ? 1 : 0;
}
