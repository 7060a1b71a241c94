/*
 * bench/activations.c — what looking inside costs (a benchmark, not a test): a
 * 256-token prefill of the demo model (models/strata-demo, 12 layers, all four
 * kinds) plain, with blocks.*.hook_out captured, and with an `add` intervention on
 * every block output, interleaved in one run so that machine noise hits all three
 * alike. Reports the median of each and the ratios (goal: capture ≤ 1.3× plain).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "strata.h"

#define POSITIONS 256
#define ROUNDS 15

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

static void check(strata_status st, const strata_error *err)
{
    if (st != STRATA_OK) {
        fprintf(stderr, "bench_activations: %s\n", err->message);
        exit(1);
    }
}

/* One prefill of ids on a fresh state; returns milliseconds. */
static double prefill(strata_runner *run, strata_cache *cache, const int32_t *ids, strata_capture *cap,
                      const strata_interventions *iv, float *logits)
{
    strata_error err;
    strata_cache_reset(cache);
    if (cap)
        strata_capture_clear(cap);
    strata_seq seq = {.cache = cache, .tokens = ids, .n_tokens = POSITIONS, .logits = logits, .capture = cap,
                      .interventions = iv};
    double t0 = now_ms();
    check(strata_runner_step(run, &seq, 1, &err), &err);
    return now_ms() - t0;
}

int main(void)
{
    const char *root = getenv("STRATA_ROOT");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/models/strata-demo", root ? root : ".");
    strata_error err;
    strata_model *m;
    strata_runner *run;
    strata_cache *cache;
    strata_capture *cap;
    strata_interventions *iv;
    check(strata_model_load(dir, &m, &err), &err);
    const strata_model_info *info = strata_model_get_info(m);
    check(strata_runner_new(m, &run, &err), &err);
    check(strata_cache_new(m, &cache, &err), &err);
    check(strata_capture_new(m, &cap, &err), &err);
    check(strata_capture_add(cap, "blocks.*.hook_out", &err), &err);
    check(strata_interventions_new(m, 0, POSITIONS, &iv, &err), &err);
    float *v = calloc((size_t)info->hidden_size, sizeof *v);
    float *logits = malloc(sizeof(float) * (size_t)info->vocab_size);
    int32_t ids[POSITIONS];
    for (int i = 0; i < POSITIONS; i++)
        ids[i] = (int32_t)((i * 7919 + 17) % info->vocab_size);
    for (int i = 0; i < info->hidden_size; i++)
        v[i] = 1e-3f * (float)(i % 7);
    strata_intervention add = {.hook = "blocks.*.hook_out", .op = STRATA_OP_ADD, .value = v,
                               .n_value = (size_t)info->hidden_size};
    check(strata_interventions_add(iv, &add, &err), &err);

    double plain[ROUNDS], captured[ROUNDS], edited[ROUNDS];
    prefill(run, cache, ids, NULL, NULL, logits); /* warm-up: workspace, page faults */
    prefill(run, cache, ids, cap, NULL, logits);
    for (int r = 0; r < ROUNDS; r++) {
        plain[r] = prefill(run, cache, ids, NULL, NULL, logits);
        captured[r] = prefill(run, cache, ids, cap, NULL, logits);
        edited[r] = prefill(run, cache, ids, NULL, iv, logits);
    }
    strata_tensor_view t;
    check(strata_capture_get(cap, info->n_layers - 1, &t, &err), &err);
    double p = median(plain, ROUNDS), c = median(captured, ROUNDS), e = median(edited, ROUNDS);
    printf("activations: %d-token prefill of strata-demo (%d layers), median of %d interleaved rounds\n", POSITIONS,
           info->n_layers, ROUNDS);
    printf("  plain forward                    %8.2f ms\n", p);
    printf("  + capture blocks.*.hook_out      %8.2f ms  %.3fx  (%d tensors, last %s [%lld, %lld])\n", c, c / p,
           strata_capture_count(cap), t.name, (long long)t.shape[0], (long long)t.shape[1]);
    printf("  + add on every blocks.*.hook_out %8.2f ms  %.3fx\n", e, e / p);
    printf("  goal: capture <= 1.3x plain: %s\n", c / p <= 1.3 ? "met" : "NOT met");
    free(v);
    free(logits);
    strata_interventions_free(iv);
    strata_capture_free(cap);
    strata_cache_free(cache);
    strata_runner_free(run);
    strata_model_free(m);
    return 0;
}
