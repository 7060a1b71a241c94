/*
 * bench/tokenizer.c — tokenizer speed (a benchmark, not a test): load time of the
 * Nemotron-H proxy tokenizer.json (131072 tokens, 7.3 MB), single-threaded encode
 * throughput on the fixture corpus concatenated and repeated to ~1.8 MB (per-row ids
 * checked against the Rust library's first), decode throughput, and peak RSS.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "strata.h"

#define TARGET_BYTES (1800 * 1000)
#define LOAD_RUNS 11

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double clock_ms(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double now_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

/* CPU time of this process: less disturbed than wall time on a shared machine. */
static double cpu_ms(void)
{
    return clock_ms(CLOCK_PROCESS_CPUTIME_ID);
}

static char *path_of(const char *rel)
{
    static char buf[4][4096];
    static int k;
    const char *root = getenv("STRATA_SHARED");
    char *p = buf[k++ & 3];
    snprintf(p, 4096, "%s/%s", root ? root : "../shared", rel);
    return p;
}

/* One JSON object per line, loaded with NULs kept. */
static json_t *read_jsonl(const char *rel)
{
    FILE *f = fopen(path_of(rel), "r");
    if (!f) {
        fprintf(stderr, "bench: cannot open %s\n", path_of(rel));
        exit(1);
    }
    json_t *rows = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_error_t e;
        json_t *r = json_loadb(line, (size_t)n, JSON_ALLOW_NUL, &e);
        if (r)
            json_array_append_new(rows, r);
    }
    free(line);
    fclose(f);
    return rows;
}

/* Check every row's ids against the Rust library's; returns the number that differ. */
static int check_rows(const strata_tokenizer *tok, json_t *rows)
{
    int bad = 0;
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i), *want = json_object_get(r, "ids"), *text = json_object_get(r, "text");
        int32_t *ids;
        size_t n;
        strata_error err;
        if (strata_tokenizer_encode(tok, json_string_value(text), json_string_length(text),
                                    STRATA_TOKENIZE_PARSE_SPECIAL, &ids, &n, &err)) {
            bad++;
            continue;
        }
        int same = json_array_size(want) == n;
        for (size_t k = 0; same && k < n; k++)
            same = json_integer_value(json_array_get(want, k)) == ids[k];
        bad += !same;
        free(ids);
    }
    return bad;
}

int main(void)
{
    const char *file = path_of("fixtures/tokenizers/nemotron_h_proxy/tokenizer.json");
    strata_error err;
    strata_tokenizer *tok = NULL;
    double loads[LOAD_RUNS], cpu[LOAD_RUNS];
    for (int i = 0; i < LOAD_RUNS; i++) {
        strata_tokenizer_free(tok);
        double t0 = now_ms(), c0 = cpu_ms();
        if (strata_tokenizer_load(file, &tok, &err)) {
            fprintf(stderr, "bench: %s\n", err.message);
            return 1;
        }
        loads[i] = now_ms() - t0;
        cpu[i] = cpu_ms() - c0;
    }
    qsort(loads, LOAD_RUNS, sizeof loads[0], cmp_double);
    qsort(cpu, LOAD_RUNS, sizeof cpu[0], cmp_double);
    printf("tokenizer load  nemotron_h_proxy/tokenizer.json (%d ids): best %.1f ms, median %.1f ms wall; "
           "median %.1f ms CPU (%d runs)\n",
           strata_tokenizer_vocab_size(tok), loads[0], loads[LOAD_RUNS / 2], cpu[LOAD_RUNS / 2], LOAD_RUNS);

    json_t *rows = read_jsonl("fixtures/tokenizers/expected_nemotron_h_proxy.jsonl");
    double t_rows = now_ms();
    int bad = check_rows(tok, rows);
    t_rows = now_ms() - t_rows;
    printf("tokenizer check %zu corpus rows against the Rust ids: %d differ (%.1f us per row, one call each)\n",
           json_array_size(rows), bad, t_rows * 1e3 / (double)json_array_size(rows));

    /* the corpus, concatenated (rows joined by newlines) and repeated to ~1.8 MB */
    size_t len = 0, cap = TARGET_BYTES + 65536;
    char *text = malloc(cap);
    while (len < TARGET_BYTES)
        for (size_t i = 0; i < json_array_size(rows) && len < TARGET_BYTES; i++) {
            json_t *t = json_object_get(json_array_get(rows, i), "text");
            size_t n = json_string_length(t);
            if (len + n + 1 > cap)
                break;
            memcpy(text + len, json_string_value(t), n);
            len += n;
            text[len++] = '\n';
        }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    double best = 1e9, best_cpu = 1e9;
    for (int i = 0; i < 3; i++) {
        free(ids);
        double t0 = now_ms(), c0 = cpu_ms();
        if (strata_tokenizer_encode(tok, text, len, 0, &ids, &n_ids, &err)) {
            fprintf(stderr, "bench: %s\n", err.message);
            return 1;
        }
        double t = now_ms() - t0, c = cpu_ms() - c0;
        best = t < best ? t : best;
        best_cpu = c < best_cpu ? c : best_cpu;
    }
    printf("tokenizer encode %.2f MB -> %zu ids: %.1f ms = %.2f MB/s wall, %.2f MB/s CPU (single thread, best of 3)\n",
           len / 1e6, n_ids, best, len / 1e6 / (best / 1e3), len / 1e6 / (best_cpu / 1e3));

    char *back;
    size_t back_len;
    double t0 = now_ms();
    if (strata_tokenizer_decode(tok, ids, n_ids, 0, &back, &back_len, &err)) {
        fprintf(stderr, "bench: %s\n", err.message);
        return 1;
    }
    double t = now_ms() - t0;
    printf("tokenizer decode %zu ids: %.1f ms = %.2f MB/s; round trip %s\n", n_ids, t, back_len / 1e6 / (t / 1e3),
           back_len == len && !memcmp(back, text, len) ? "exact" : "DIFFERS");
    free(back);
    free(ids);
    free(text);
    json_decref(rows);
    strata_tokenizer_free(tok);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("tokenizer peak RSS: %.1f MB\n", ru.ru_maxrss / 1024.0);
    return bad != 0;
}
