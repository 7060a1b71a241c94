/*
 * test_kernels.c — the matmul kernels and the thread pool: every path this CPU
 * supports against the portable one (random shapes with odd sizes, F32 / BF16 /
 * F16 weights, 1..9 rows), batch invariance bit for bit (a row computed in a batch
 * of n, alone, through the widening route or the in-register route, on 1, 2 or 3
 * threads), the SSM head kernel, and runner thread counts.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/vocab.h"
#include "kernel_util.h"
#include "util.h"

/* f rounded to BF16 and back (the bf16 compute mode's view of x). */
static float bf16_view(float f)
{
    return bf16_widen(bf16_round(f));
}

/* Exact for |f| in F16's normal range (values here are in [-1, 1) rounded). */
static uint16_t to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    if (fabsf(f) < 6.2e-5f)
        return sign;
    uint32_t e = ((u >> 23) & 0xffu) - 112u, m = (u >> 13) & 0x3ffu;
    return sign | (uint16_t)((e << 10) | m);
}

/* A random W (rows, cols) stored as dtype, with optional bias. */
typedef struct test_mat {
    strata_mat m;
    void *data;
    float *bias;
} test_mat;

static void mat_random(test_mat *t, int rows, int cols, st_dtype dt, int with_bias)
{
    size_t n = (size_t)rows * (size_t)cols;
    t->data = malloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        float v = test_frand();
        if (dt == ST_F32)
            ((float *)t->data)[i] = v;
        else
            ((uint16_t *)t->data)[i] = dt == ST_BF16 ? test_to_bf16(v) : to_f16(v);
    }
    t->bias = with_bias ? test_vec_random((size_t)rows) : NULL;
    t->m = (strata_mat){.data = t->data, .dtype = dt, .rows = rows, .cols = cols, .bias = t->bias};
}

static void mat_free(test_mat *t)
{
    free(t->data);
    free(t->bias);
}

static const int Ks[] = {1, 7, 8, 9, 16, 17, 33, 100, 257, 1030};
static const int Rows[] = {1, 2, 3, 5, 7, 8, 13, 31, 64};
static const st_dtype dtypes[] = {ST_F32, ST_BF16, ST_F16};

Test(kernels, selected_path_is_supported_and_named)
{
    const kernel_isa *k = kernel_select();
    cr_assert(test_path_supported(k));
    cr_assert(!strcmp(k->name, "portable") || !strcmp(k->name, "avx2") || !strcmp(k->name, "avx512"));
    cr_assert(test_path_supported(&kernel_portable));
    cr_assert_str_eq(strata_runner_kernel(NULL), k->name);
}

/* Every supported path agrees with the portable path (and with a double-precision
 * dot product) up to rounding, in both compute modes (bf16: of x rounded to BF16
 * when W is BF16, whether the path has a BF16 dot product or not). */
Test(kernels, fast_paths_match_portable, .timeout = 120)
{
    for (int p = 0; p < 6; p++) {
        int bf16 = p >= 3;
        if (!test_path_supported(test_all_paths[p % 3]))
            continue;
        for (size_t d = 0; d < 3; d++)
            for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++)
                for (size_t ri = 0; ri < sizeof Rows / sizeof Rows[0]; ri += 2) {
                    int K = Ks[ki], rows = Rows[ri], n = 1 + (int)((ki + ri + d) % 9);
                    test_mat w;
                    mat_random(&w, rows, K, dtypes[d], (ki + ri) % 2);
                    float *x = test_vec_random((size_t)n * (size_t)K);
                    float *y0 = malloc(sizeof(float) * (size_t)n * (size_t)rows), *y1 = malloc(sizeof(float) * (size_t)n * (size_t)rows);
                    exec e0, e1;
                    test_exec_with(&e0, &kernel_portable, 1, K, bf16);
                    test_exec_with(&e1, test_all_paths[p % 3], 2, K, bf16);
                    matmul(y0, x, n, &w.m, &e0);
                    matmul(y1, x, n, &w.m, &e1);
                    for (int r = 0; r < n; r++)
                        for (int j = 0; j < rows; j++) {
                            double ref = w.bias ? w.bias[j] : 0.0, mag = 0.0;
                            for (int k = 0; k < K; k++) {
                                double a = x[(size_t)r * (size_t)K + (size_t)k];
                                a = bf16 && dtypes[d] == ST_BF16 ? bf16_view((float)a) : a;
                                double b = mat_elem(w.data, dtypes[d], (size_t)j * (size_t)K + (size_t)k);
                                ref += a * b;
                                mag += fabs(a * b);
                            }
                            double tol = 1e-6 * mag + 1e-6;
                            size_t i = (size_t)r * (size_t)rows + (size_t)j;
                            cr_assert(fabs(y0[i] - ref) <= tol, "portable K=%d rows=%d n=%d: %g vs %g", K, rows, n, y0[i], ref);
                            cr_assert(fabs(y1[i] - y0[i]) <= tol, "%s%s dtype %zu K=%d rows=%d n=%d (%d,%d): %g vs portable %g",
                                      test_all_paths[p % 3]->name, bf16 ? " bf16" : "", d, K, rows, n, r, j, y1[i], y0[i]);
                        }
                    exec_destroy(&e0);
                    exec_destroy(&e1);
                    free(x);
                    free(y0);
                    free(y1);
                    mat_free(&w);
                }
    }
}

/* The last n of x's BATCH_ROWS rows for n = 1..9 and BATCH_ROWS, as one batch on
 * each of es (1, 2 and 3 threads), give solo's rows bit for bit (solo: each row
 * alone). */
#define BATCH_ROWS 37
static void check_batches_match_solo(const strata_mat *m, const float *x, const float *solo, exec *const es[3],
                                     const char *what)
{
    int ns[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, BATCH_ROWS}, K = m->cols, rows = m->rows;
    float *batch = malloc(sizeof(float) * BATCH_ROWS * (size_t)rows);
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (int ei = 0; ei < 3; ei++) {
            int n = ns[ni], r0 = BATCH_ROWS - n;    /* the batch's rows start anywhere */
            memset(batch, 0xff, sizeof(float) * (size_t)n * (size_t)rows);
            matmul(batch, x + (size_t)r0 * (size_t)K, n, m, es[ei]);
            cr_assert(!memcmp(batch, solo + (size_t)r0 * (size_t)rows, sizeof(float) * (size_t)n * (size_t)rows),
                      "%s K=%d rows=%d: batch of %d on %d threads differs from solo rows", what, K, rows, n, ei + 1);
            memset(batch, 0xff, sizeof(float) * (size_t)n * (size_t)rows);
            matmul_local(batch, x + (size_t)r0 * (size_t)K, n, m, es[ei], es[ei]->n_threads - 1);
            cr_assert(!memcmp(batch, solo + (size_t)r0 * (size_t)rows, sizeof(float) * (size_t)n * (size_t)rows),
                      "%s K=%d rows=%d: matmul_local of %d rows (exec of %d threads) differs from solo rows", what, K,
                      rows, n, ei + 1);
        }
    free(batch);
}

/* Within one path and compute mode: row r of a batch of n equals row r alone, bit
 * for bit, whatever n (1..9 and 37, which takes the widening route and, in the bf16
 * mode, is rounded in two parts), and whatever the thread count — split over the
 * threads or on one of them (matmul_local, 37 rows in two parts). */
Test(kernels, batch_invariance_is_bitwise, .timeout = 180)
{
    for (int p = 0; p < 6; p++) {
        int bf16 = p >= 3;
        if (!test_path_supported(test_all_paths[p % 3]))
            continue;
        for (size_t d = 0; d < 3; d++)
            for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki += 1)
                for (size_t ri = 0; ri < sizeof Rows / sizeof Rows[0]; ri += 3) {
                    int K = Ks[ki], rows = Rows[ri] * 5 + 3;   /* enough rows to split over threads */
                    test_mat w;
                    mat_random(&w, rows, K, dtypes[d], ri % 2);
                    float *x = test_vec_random((size_t)BATCH_ROWS * (size_t)K);
                    float *solo = malloc(sizeof(float) * BATCH_ROWS * (size_t)rows);
                    exec e1, e2, e3;
                    test_exec_with(&e1, test_all_paths[p % 3], 1, K, bf16);
                    test_exec_with(&e2, test_all_paths[p % 3], 2, K, bf16);
                    test_exec_with(&e3, test_all_paths[p % 3], 3, K, bf16);
                    e3.room.rows_cap = bf16 ? 20 : 0;    /* 37 rows: two parts (buffers hold 40) */
                    for (int r = 0; r < BATCH_ROWS; r++)
                        matmul(solo + (size_t)r * (size_t)rows, x + (size_t)r * (size_t)K, 1, &w.m, &e1);
                    exec *es[] = {&e1, &e2, &e3};
                    char what[64];
                    snprintf(what, sizeof what, "%s%s dtype %zu", test_all_paths[p % 3]->name, bf16 ? " bf16" : "", d);
                    check_batches_match_solo(&w.m, x, solo, es, what);
                    exec_destroy(&e1);
                    exec_destroy(&e2);
                    exec_destroy(&e3);
                    free(x);
                    free(solo);
                    mat_free(&w);
                }
    }
}

/* Decode rows of 4096 elements or more go four W rows at a time on the AVX-512
 * path (matmul_avx512.c, WALK): on every path and dtype, for K = 4096 and 4100 (a
 * tail) and 11 rows (a partial tile), a single x row gives the bits the same row
 * gets inside batches of 5 and 37 (batch invariance), and the portable path's
 * values within 1e-6 of the magnitude. */
Test(kernels, long_rows_keep_batch_invariance, .timeout = 120)
{
    int Klong[] = {4096, 4100}, rows = 11, ns[] = {5, 37};
    for (int p = 0; p < 6; p++) {
        int bf16 = p >= 3;
        if (!test_path_supported(test_all_paths[p % 3]))
            continue;
        for (size_t d = 0; d < 3; d++)
            for (size_t ki = 0; ki < 2; ki++) {
                int K = Klong[ki];
                test_mat w;
                mat_random(&w, rows, K, dtypes[d], (int)ki);
                float *x = test_vec_random((size_t)37 * (size_t)K);
                float *solo = malloc(sizeof(float) * 37 * (size_t)rows), *batch = malloc(sizeof(float) * 37 * (size_t)rows);
                float *port = malloc(sizeof(float) * 37 * (size_t)rows);
                exec e, e0;
                test_exec_with(&e, test_all_paths[p % 3], 2, K, bf16);
                test_exec_with(&e0, &kernel_portable, 1, K, bf16);
                for (int r = 0; r < 37; r++)
                    matmul(solo + (size_t)r * (size_t)rows, x + (size_t)r * (size_t)K, 1, &w.m, &e);
                matmul(port, x, 37, &w.m, &e0);
                for (size_t i = 0; i < (size_t)37 * (size_t)rows; i++)
                    cr_assert(fabsf(solo[i] - port[i]) <= 1e-6f * (float)K + 1e-5f, "%s%s dtype %zu K=%d: %g vs portable %g",
                              test_all_paths[p % 3]->name, bf16 ? " bf16" : "", d, K, solo[i], port[i]);
                for (size_t ni = 0; ni < 2; ni++) {
                    int n = ns[ni];
                    matmul(batch, x + (size_t)(37 - n) * (size_t)K, n, &w.m, &e);
                    cr_assert(!memcmp(batch, solo + (size_t)(37 - n) * (size_t)rows, sizeof(float) * (size_t)n * (size_t)rows),
                              "%s%s dtype %zu K=%d: a batch of %d differs from the rows alone", test_all_paths[p % 3]->name,
                              bf16 ? " bf16" : "", d, K, n);
                }
                exec_destroy(&e);
                exec_destroy(&e0);
                free(x);
                free(solo);
                free(batch);
                free(port);
                mat_free(&w);
            }
    }
}

Test(kernels, ssm_head_matches_portable)
{
    int P = 5, n = 6;
    int Ns[] = {1, 8, 13, 16, 35, 128};
    for (size_t p = 1; p < 3; p++) {
        if (!test_path_supported(test_all_paths[p]))
            continue;
        for (size_t ni = 0; ni < sizeof Ns / sizeof Ns[0]; ni++) {
            int N = Ns[ni];
            size_t ldx = 7, ldbc = (size_t)N + 3, ldy = 9;
            float *x = test_vec_random((size_t)n * ldx), *B = test_vec_random((size_t)n * ldbc), *C = test_vec_random((size_t)n * ldbc);
            float *dt = test_vec_random((size_t)n), *a = test_vec_random((size_t)n);
            float *S0 = test_vec_random((size_t)P * (size_t)N), *S1 = malloc(sizeof(float) * (size_t)P * (size_t)N);
            float *y0 = calloc((size_t)n * ldy, sizeof(float)), *y1 = calloc((size_t)n * ldy, sizeof(float));
            memcpy(S1, S0, sizeof(float) * (size_t)P * (size_t)N);
            kernel_portable.ssm_head(S0, P, N, n, x, ldx, B, C, ldbc, dt, a, 0.5f, y0, ldy);
            test_all_paths[p]->ssm_head(S1, P, N, n, x, ldx, B, C, ldbc, dt, a, 0.5f, y1, ldy);
            for (size_t i = 0; i < (size_t)P * (size_t)N; i++)
                cr_assert(fabsf(S0[i] - S1[i]) <= 1e-5f * (1.0f + fabsf(S0[i])), "%s N=%d state %zu", test_all_paths[p]->name, N, i);
            for (size_t i = 0; i < (size_t)n * ldy; i++)
                cr_assert(fabsf(y0[i] - y1[i]) <= 1e-4f * (1.0f + fabsf(y0[i])), "%s N=%d y %zu: %g vs %g",
                          test_all_paths[p]->name, N, i, y1[i], y0[i]);
            free(x), free(B), free(C), free(dt), free(a), free(S0), free(S1), free(y0), free(y1);
        }
    }
}

typedef struct count_job {
    int hits[8];
    int nt_seen;
} count_job;

static void count_fn(void *arg, int ti, int nt)
{
    count_job *j = arg;
    j->hits[ti]++;
    j->nt_seen = nt;
}

Test(kernels, pool_runs_each_thread_once_per_run)
{
    strata_error err;
    pool *p;
    cr_assert_eq(pool_new(3, &p, &err), STRATA_OK);
    count_job j = {{0}, 0};
    for (int i = 0; i < 2000; i++)
        pool_run(p, count_fn, &j);
    cr_assert_eq(j.nt_seen, 3);
    for (int t = 0; t < 3; t++)
        cr_assert_eq(j.hits[t], 2000, "thread %d ran %d times", t, j.hits[t]);
    pool_free(p);
    cr_assert_neq(pool_new(0, &p, &err), STRATA_OK);
    pool_free(NULL);
}

/* A whole model's logits do not depend on the thread count. */
Test(kernels, runner_thread_count_does_not_change_logits, .timeout = 120)
{
    strata_error err;
    strata_model *model;
    cr_assert_eq(strata_model_load(shared_path("fixtures/models/hybrid-small"), &model, &err), STRATA_OK, "%s", err.message);
    int V = strata_model_get_info(model)->vocab_size;
    int32_t ids[23];
    for (int i = 0; i < 23; i++)
        ids[i] = (i * 37 + 5) % V;
    float *ref = malloc(sizeof(float) * 23 * (size_t)V), *got = malloc(sizeof(float) * 23 * (size_t)V);
    int threads[] = {1, 2, 3, 0};
    for (int ti = 0; ti < 4; ti++) {
        strata_runner *run;
        strata_cache *cache;
        cr_assert_eq(strata_runner_new(model, &run, &err), STRATA_OK);
        cr_assert_eq(strata_runner_set_threads(run, threads[ti], &err), STRATA_OK, "%s", err.message);
        cr_assert(strata_runner_threads(run) >= 1);
        cr_assert_eq(strata_cache_new(model, &cache, &err), STRATA_OK);
        strata_seq seq = {.cache = cache, .tokens = ids, .n_tokens = 23, .logits = ti ? got : ref, .all_logits = 1};
        cr_assert_eq(strata_runner_step(run, &seq, 1, &err), STRATA_OK, "%s", err.message);
        if (ti)
            cr_assert(!memcmp(ref, got, sizeof(float) * 23 * (size_t)V), "%d threads change the logits", threads[ti]);
        cr_assert_neq(strata_runner_set_threads(run, -1, &err), STRATA_OK);
        cr_assert_eq(err.status, STRATA_E_INVALID);
        strata_cache_free(cache);
        strata_runner_free(run);
    }
    free(ref);
    free(got);
    strata_model_free(model);
}

/* silu / silu_mul on every kernel path this CPU runs: the float formula
 * x / (1 + e^-x) over a correctly rounded e^-x (long double expl, rounded to float)
 * on a sweep of 2^20 values from -110 to 100, bit for bit; the same formula over
 * glibc's expf (what the engine used before; it misrounds e^x on a few inputs in
 * ten thousand) differs on less than 0.5 %; special values as the formula gives
 * them; tails of any length as inside a full vector; silu_mul(y, z) == y ·
 * silu(z) bit for bit; and every path gives the same bits. */
static void silu_check(const kernel_isa *isa, const float *x, float *v, float *y, size_t n, float *first)
{
    memcpy(v, x, sizeof(float) * n);
    isa->silu(v, n);
    size_t off = 0, vs_glibc = 0;
    for (size_t i = 0; i < n; i++) {
        off += v[i] != x[i] / (1.0f + (float)expl(-(long double)x[i]));
        vs_glibc += v[i] != x[i] / (1.0f + expf(-x[i]));
    }
    cr_expect_eq(off, 0, "%s: %zu of %zu SiLU values differ from the formula over a correctly rounded exp",
                 isa->name, off, n);
    cr_expect_lt(vs_glibc, n / 200, "%s: %zu of %zu differ from the formula over glibc's expf", isa->name, vs_glibc, n);
    cr_expect(memcmp(v, first, sizeof(float) * n) == 0, "%s gives other bits than the first path", isa->name);

    float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-30f, -1e-30f, 88.0f, -88.0f, 200.0f, -200.0f};
    size_t ns = sizeof special / sizeof special[0];
    memcpy(y, special, sizeof special);
    isa->silu(y, ns);
    for (size_t i = 0; i < ns; i++) {
        float want = special[i] / (1.0f + expf(-special[i]));
        cr_expect(isnan(want) ? isnan(y[i]) : y[i] == want, "%s: silu(%g) = %g, want %g", isa->name, special[i],
                  y[i], want);
    }
    for (size_t len = 1; len <= 19; len++) {
        memcpy(y, x + 1000, sizeof(float) * len);
        isa->silu(y, len);
        cr_expect(memcmp(y, v + 1000, sizeof(float) * len) == 0, "%s: tail of %zu", isa->name, len);
    }
    for (size_t i = 0; i < 4099; i++)
        y[i] = (float)(i % 17) * 0.25f - 2.0f;
    isa->silu_mul(y, x, 4099);
    for (size_t i = 0; i < 4099; i++)
        cr_expect(y[i] == ((float)(i % 17) * 0.25f - 2.0f) * v[i], "%s: silu_mul at %zu", isa->name, i);
}

Test(kernels, silu_is_accurate_and_consistent)
{
    const size_t n = (size_t)1 << 20;
    float *x = malloc(sizeof(float) * n), *v = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n),
          *first = malloc(sizeof(float) * n);
    cr_assert(x && v && y && first);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(-110.0 + 210.0 * (double)i / (double)n);
    memcpy(first, x, sizeof(float) * n);
    kernel_portable.silu(first, n);
    const char *paths[] = {"portable", "avx2", "avx512"};
    for (size_t p = 0; p < 3; p++) {
        const kernel_isa *isa = kernel_by_name(paths[p]);
        if (isa)
            silu_check(isa, x, v, y, n, first);
    }
    free(x);
    free(v);
    free(y);
    free(first);
}

/* Attention's softmax (activation.c): every path gives the portable path's bits
 * at every length around its vector widths, with scores spread from a few units
 * to past where e^x underflows; each probability is within rounding — (n + 3)
 * float ulps, relative — of the double-precision softmax of the same float
 * differences p − max, and they sum to 1. */
Test(kernels, softmax_is_accurate_and_consistent)
{
    enum { N = 70 };
    float *r = test_vec_random(N);
    const double spreads[] = {1.0, 30.0, 200.0};
    for (size_t si = 0; si < sizeof spreads / sizeof spreads[0]; si++)
        for (int n = 0; n <= N; n++) {
            float want[N], got[N];
            for (int t = 0; t < n; t++)
                want[t] = (float)(spreads[si] * r[t]);
            double m = -HUGE_VAL, sum = 0.0;
            for (int t = 0; t < n; t++)
                m = want[t] > m ? want[t] : m;
            for (int t = 0; t < n; t++)
                sum += exp((double)(want[t] - (float)m));
            float scores[N];
            memcpy(scores, want, sizeof want);
            kernel_portable.softmax(want, n);
            double total = 0.0;
            for (int t = 0; t < n; t++) {
                double ref = exp((double)(scores[t] - (float)m)) / sum;
                cr_assert(fabs(want[t] - ref) <= (n + 3) * 0x1p-24 * ref + 1e-37, "n %d spread %g: p[%d] %g vs %g",
                          n, spreads[si], t, want[t], ref);
                total += want[t];
            }
            cr_assert(n == 0 || fabs(total - 1.0) < 1e-5, "n %d: the probabilities sum to %g", n, total);
            for (int path = 0; path < 3; path++) {
                const kernel_isa *isa = test_all_paths[path];
                if (!test_path_supported(isa))
                    continue;
                memcpy(got, scores, sizeof scores);
                isa->softmax(got, n);
                cr_assert(!memcmp(want, got, sizeof(float) * (size_t)n), "%s: softmax of %d scores differs",
                          isa->name, n);
            }
        }
    free(r);
}

/* Every output of y = x (n rows of K) times W (in panels) within rounding of the
 * double-precision dot product of W and x (rounded to BF16 first when `rounded`). */
static void check_panels_values(const test_mat *w, const float *y, const float *x, int n, int rounded,
                                const char *what)
{
    int rows = w->m.rows, K = w->m.cols;
    for (int r = 0; r < n; r++)
        for (int j = 0; j < rows; j++) {
            double ref = w->bias ? w->bias[j] : 0.0, mag = 0.0;
            for (int k = 0; k < K; k++) {
                double a = x[(size_t)r * (size_t)K + (size_t)k];
                a = rounded ? bf16_view((float)a) : a;
                double b = mat_elem(w->data, ST_BF16, (size_t)j * (size_t)K + (size_t)k);
                ref += a * b;
                mag += fabs(a * b);
            }
            float got = y[(size_t)r * (size_t)rows + (size_t)j];
            cr_assert(fabs(got - ref) <= 1e-5 * mag + 1e-6, "panels %s K=%d rows=%d (%d,%d): %g vs %g", what, K,
                      rows, r, j, got, ref);
        }
}

/* BF16 weights in panels (isa.h), with x in fp32 and, where this CPU has
 * AVX512_BF16, in the bf16 mode: W packed, then every output within rounding of
 * the double-precision dot product; a row alone gives the same bits as inside
 * batches of 1..9 and 37 on 1, 2 or 3 threads (37 rows rounded in two parts);
 * K = 1100 and 2049 take more than one chunk of pairs (partial sums in y), odd K a
 * zero pair, 65 and 200 rows a partial panel. An exec on a path without panel
 * kernels still computes them. */
Test(kernels, panels_match_and_keep_batch_invariance, .timeout = 240)
{
    const kernel_isa *isa = &kernel_avx512;
    if (!test_path_supported(isa) || !isa->block_panels_f32)
        cr_skip_test("this CPU has no AVX-512 panel kernels");
    int Kp[] = {1, 7, 33, 257, 1030, 1100, 2049}, Rp[] = {1, 13, 64, 65, 200};
    for (size_t ki = 0; ki < sizeof Kp / sizeof Kp[0]; ki++)
        for (size_t ri = 0; ri < sizeof Rp / sizeof Rp[0]; ri++) {
            int K = Kp[ki], rows = Rp[ri], nmax = BATCH_ROWS;
            test_mat w;
            mat_random(&w, rows, K, ST_BF16, (int)(ki + ri) % 2);
            uint16_t *packed = calloc(bf16_panels_elems(rows, K), sizeof *packed);
            bf16_panels_pack(packed, w.data, rows, K, 0, rows);
            strata_mat pm = w.m;
            pm.data = packed;
            pm.dtype = ST_BF16_PANELS;
            float *x = test_vec_random((size_t)nmax * (size_t)K);
            float *solo = malloc(sizeof(float) * (size_t)nmax * (size_t)rows);
            float *batch = malloc(sizeof(float) * (size_t)nmax * (size_t)rows);
            exec ep;
            test_exec_with(&ep, &kernel_portable, 1, K, 0);
            matmul(batch, x, nmax, &pm, &ep);
            check_panels_values(&w, batch, x, nmax, 0, "on the portable path");
            exec_destroy(&ep);
            for (int bf16 = 0; bf16 <= (kernel_bf16_dot(isa) != NULL); bf16++) {
                exec e1, e2, e3;
                test_exec_with(&e1, isa, 1, K, bf16);
                test_exec_with(&e2, isa, 2, K, bf16);
                test_exec_with(&e3, isa, 3, K, bf16);
                e3.room.rows_cap = bf16 ? 20 : e3.room.rows_cap;
                for (int r = 0; r < nmax; r++)
                    matmul(solo + (size_t)r * (size_t)rows, x + (size_t)r * (size_t)K, 1, &pm, &e1);
                check_panels_values(&w, solo, x, nmax, bf16, bf16 ? "bf16" : "fp32");
                exec *es[] = {&e1, &e2, &e3};
                check_batches_match_solo(&pm, x, solo, es, bf16 ? "panels bf16" : "panels fp32");
                exec_destroy(&e1);
                exec_destroy(&e2);
                exec_destroy(&e3);
            }
            free(x);
            free(solo);
            free(batch);
            free(packed);
            mat_free(&w);
        }
}

/* The Mamba conv's taps (conv.c): every supported path gives the portable path's
 * bits, over channel ranges with vector tails and starts off a vector boundary. */
Test(kernels, conv_taps_match_portable_bitwise)
{
    enum { CD = 100, K = 4 };
    float *wT = test_vec_random((size_t)K * CD), *b = test_vec_random(CD), *rows = test_vec_random((size_t)K * CD);
    const float *win[K];
    for (int k = 0; k < K; k++)
        win[k] = rows + (size_t)k * CD;
    int ranges[][2] = {{0, 100}, {3, 97}, {16, 48}, {5, 6}, {0, 0}};
    for (int p = 0; p < 3; p++) {
        if (!test_path_supported(test_all_paths[p]))
            continue;
        for (size_t ri = 0; ri < sizeof ranges / sizeof ranges[0]; ri++)
            for (int taps = 1; taps <= K; taps++) {
                float want[CD], got[CD];
                memset(want, 0, sizeof want);
                memset(got, 0, sizeof got);
                conv_taps_portable(want, b, wT, win, CD, taps, ranges[ri][0], ranges[ri][1]);
                test_all_paths[p]->conv_taps(got, b, wT, win, CD, taps, ranges[ri][0], ranges[ri][1]);
                cr_assert(!memcmp(want, got, sizeof want), "%s: conv taps [%d, %d) with %d taps differ",
                          test_all_paths[p]->name, ranges[ri][0], ranges[ri][1], taps);
                if (ranges[ri][1] > ranges[ri][0]) {
                    int c = ranges[ri][0];
                    float ref = b[c];
                    for (int k = 0; k < taps; k++)
                        ref += wT[(size_t)k * CD + (size_t)c] * win[k][c];
                    cr_assert_eq(got[c], ref, "%s: channel %d", test_all_paths[p]->name, c);
                }
            }
    }
    free(wT);
    free(b);
    free(rows);
}

/* Attention's inner loops (attend.c): every supported path gives the portable
 * path's bits — scores over runs of keys that are and are not a multiple of the
 * keys done at once, head sizes with and without vector tails, and the weighted sum
 * of values added onto what z already holds. */
Test(kernels, attention_loops_match_portable_bitwise)
{
    enum { N = 13, HD = 136 };
    float *q = test_vec_random(HD), *kv = test_vec_random((size_t)N * HD), *p = test_vec_random(N);
    int hds[] = {1, 5, 8, 24, 72, 128, 136};
    for (int path = 0; path < 3; path++) {
        const kernel_isa *isa = test_all_paths[path];
        if (!test_path_supported(isa))
            continue;
        for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++)
            for (int n = 0; n <= N; n++) {
                int hd = hds[hi];
                float want[N + 1], got[N + 1], zw[HD], zg[HD];
                attn_scores_portable(want, q, kv, n, hd, 0.125f);
                isa->attn_scores(got, q, kv, n, hd, 0.125f);
                cr_assert(!memcmp(want, got, sizeof(float) * (size_t)n), "%s: scores over %d keys, hd %d differ",
                          isa->name, n, hd);
                for (int i = 0; i < hd; i++)
                    zw[i] = zg[i] = q[i];
                attn_mix_portable(zw, p, kv, n, hd);
                isa->attn_mix(zg, p, kv, n, hd);
                cr_assert(!memcmp(zw, zg, sizeof(float) * (size_t)hd), "%s: mix of %d values, hd %d differs",
                          isa->name, n, hd);
            }
    }
    float d = 0.0f;
    for (int i = 0; i < 24; i++)
        d += q[i] * kv[24 + i];
    float one;
    attn_scores_portable(&one, q, kv + 24, 1, 24, 1.0f);
    cr_assert(fabsf(one - d) <= 1e-5f * (fabsf(d) + 1.0f), "portable score %g vs %g", one, d);
    free(q);
    free(kv);
    free(p);
}

/* The bf16 mode's rounding of x on a path's vector code (isa.h: to_bf16) gives the
 * scalar rounding's bits: to nearest even, ties both ways, NaN quiet, infinities,
 * denormals and random bit patterns (NaNs among them), tails left to the caller. */
Test(kernels, bf16_rounding_matches_scalar_bitwise)
{
    enum { N = 4099 };
    uint32_t bits[N];
    uint32_t special[] = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7f800001u, 0xffc00000u,
                          0x7fffffffu, 0x00000001u, 0x807fffffu, 0x3f808000u, 0x3f818000u, 0x3f807fffu,
                          0x7f7fffffu, 0x7f7f8000u, 0x00008000u, 0x00018000u};
    uint64_t st = 99;
    for (int i = 0; i < N; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        bits[i] = i < (int)(sizeof special / sizeof special[0]) ? special[i] : (uint32_t)(st >> 32);
    }
    float x[N];
    memcpy(x, bits, sizeof x);
    for (int p = 0; p < 3; p++) {
        const kernel_isa *isa = test_all_paths[p];
        if (!test_path_supported(isa) || !isa->to_bf16)
            continue;
        uint16_t got[N];
        size_t done = isa->to_bf16(got, x, N);
        cr_assert(done > N - 64 && done <= N, "%s rounded %zu of %d", isa->name, done, N);
        for (size_t i = 0; i < done; i++) {
            uint32_t u = bits[i];
            int nan = (u & 0x7fffffffu) > 0x7f800000u;
            uint16_t want = (uint16_t)((nan ? u | 0x00400000u : u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
            cr_assert_eq(got[i], want, "%s: 0x%08x rounded to 0x%04x, not 0x%04x", isa->name, u, got[i], want);
        }
    }
}

/* Prefill equals decode in the scan: on every path, ssm_head over n tokens at once
 * leaves the state and gives the outputs that n one-token calls do, bit for bit
 * (the AVX-512 path keeps state rows in registers across tokens for N = 16..128). */
Test(kernels, ssm_head_many_tokens_equal_one_at_a_time)
{
    int P = 5, n = 6, Ns[] = {13, 16, 32, 35, 64, 128};
    for (int p = 0; p < 3; p++) {
        if (!test_path_supported(test_all_paths[p]))
            continue;
        for (size_t ni = 0; ni < sizeof Ns / sizeof Ns[0]; ni++) {
            int N = Ns[ni];
            size_t ldx = 7, ldbc = (size_t)N + 3, ldy = 9, ns = (size_t)P * (size_t)N;
            float *x = test_vec_random((size_t)n * ldx), *B = test_vec_random((size_t)n * ldbc), *C = test_vec_random((size_t)n * ldbc);
            float *dt = test_vec_random((size_t)n), *a = test_vec_random((size_t)n);
            float *S0 = test_vec_random(ns), *S1 = malloc(sizeof(float) * ns);
            float *y0 = calloc((size_t)n * ldy, sizeof(float)), *y1 = calloc((size_t)n * ldy, sizeof(float));
            memcpy(S1, S0, sizeof(float) * ns);
            test_all_paths[p]->ssm_head(S0, P, N, n, x, ldx, B, C, ldbc, dt, a, 0.5f, y0, ldy);
            for (int t = 0; t < n; t++)
                test_all_paths[p]->ssm_head(S1, P, N, 1, x + (size_t)t * ldx, ldx, B + (size_t)t * ldbc, C + (size_t)t * ldbc,
                                            ldbc, dt + t, a + t, 0.5f, y1 + (size_t)t * ldy, ldy);
            cr_assert(!memcmp(S0, S1, sizeof(float) * ns), "%s N=%d: state differs", test_all_paths[p]->name, N);
            cr_assert(!memcmp(y0, y1, sizeof(float) * (size_t)n * ldy), "%s N=%d: y differs", test_all_paths[p]->name, N);
            free(x), free(B), free(C), free(dt), free(a), free(S0), free(S1), free(y0), free(y1);
        }
    }
}

/* The scan on a state kept in BF16 (the bf16 mode's caches): on every path,
 * ssm_head_bf16 — fused on AVX-512, through fp32 scratch otherwise — gives the bits
 * of, token by token, widening the state, the path's fp32 ssm_head for that token,
 * and rounding back by bf16_round. */
Test(kernels, ssm_head_bf16_equals_widened_fp32_then_rounded)
{
    int P = 5, Ns[] = {13, 16, 64, 128}, ntok[] = {1, 3, 4, 6, 11};
    for (int p = 0; p < 3; p++) {
        const kernel_isa *isa = test_all_paths[p];
        if (!test_path_supported(isa))
            continue;
        for (size_t ni = 0; ni < sizeof Ns / sizeof Ns[0]; ni++)
            for (size_t ti = 0; ti < sizeof ntok / sizeof ntok[0]; ti++) {
                int N = Ns[ni], n = ntok[ti];
                size_t ldx = 7, ldbc = (size_t)N + 3, ldy = 9, ns = (size_t)P * (size_t)N;
                float *x = test_vec_random((size_t)n * ldx), *B = test_vec_random((size_t)n * ldbc);
                float *C = test_vec_random((size_t)n * ldbc), *dt = test_vec_random((size_t)n), *a = test_vec_random((size_t)n);
                float *S = test_vec_random(ns), *scratch = malloc(sizeof(float) * ns);
                float *y0 = calloc((size_t)n * ldy, sizeof(float)), *y1 = calloc((size_t)n * ldy, sizeof(float));
                uint16_t *S16 = malloc(sizeof *S16 * ns), *want = malloc(sizeof *want * ns);
                for (size_t i = 0; i < (size_t)N; i++)   /* row 0 decays into denormals: they go to zero */
                    S[i] = (1.5f + 0.5f * S[i]) * 1.2e-38f;
                for (int t = 0; t < n; t++)
                    x[(size_t)t * ldx] = 0.0f, a[t] = 0.25f;
                for (size_t i = 0; i < ns; i++)
                    S16[i] = bf16_round_state(S[i]), S[i] = bf16_widen(S16[i]);
                for (int t = 0; t < n; t++) {
                    isa->ssm_head(S, P, N, 1, x + (size_t)t * ldx, ldx, B + (size_t)t * ldbc, C + (size_t)t * ldbc,
                                  ldbc, dt + t, a + t, 0.5f, y0 + (size_t)t * ldy, ldy);
                    for (size_t i = 0; i < ns; i++)
                        want[i] = bf16_round_state(S[i]), S[i] = bf16_widen(want[i]);
                }
                ssm_head_bf16(isa, S16, scratch, P, N, n, x, ldx, B, C, ldbc, dt, a, 0.5f, y1, ldy);
                cr_assert(!memcmp(S16, want, sizeof *want * ns), "%s N=%d n=%d: state differs", isa->name, N, n);
                int flushed = 0;
                for (int i = 0; i < N; i++)
                    flushed += (S16[i] & 0x7fff) == 0;
                cr_assert_gt(flushed, 0, "%s N=%d n=%d: no denormal was flushed", isa->name, N, n);
                cr_assert(!memcmp(y0, y1, sizeof(float) * (size_t)n * ldy), "%s N=%d n=%d: y differs", isa->name, N, n);
                free(x), free(B), free(C), free(dt), free(a), free(S), free(scratch), free(y0), free(y1), free(S16), free(want);
            }
    }
}

/* Work stealing hands out every unit exactly once, whatever order the threads ask
 * in: here 1..4 simulated threads take turns in a fixed pseudo-random order, with
 * groups of 1..5, over 0..37 units; each range is inside [0, n), and a stolen
 * one (after the thread's own share is gone) at most a group long. */
Test(kernels, spans_hand_out_every_unit_once)
{
    exec e;
    strata_error err;
    for (int nt = 1; nt <= 4; nt++) {
        cr_assert_eq(exec_init(&e, nt, 16, &err), STRATA_OK, "%s", err.message);
        for (int n = 0; n <= 37; n++)
            for (int group = 1; group <= 5; group++) {
                int taken[37] = {0}, done[4] = {0}, left = nt, own[4], own_hi[4];
                unsigned seed = (unsigned)(n * 31 + group * 7 + nt);
                exec_spans_reset(&e, n, nt);
                for (int t = 0; t < nt; t++)
                    exec_share(n, t, nt, &own[t], &own_hi[t]);
                while (left > 0) {
                    seed = seed * 1103515245u + 12345u;
                    int ti = (int)((seed >> 16) % (unsigned)nt), lo, hi, after;
                    if (done[ti])
                        continue;
                    if (!exec_span_next(&e, ti, nt, group, &lo, &hi, &after)) {
                        done[ti] = 1;
                        left--;
                        continue;
                    }
                    int mine = lo >= own[ti] && hi <= own_hi[ti];
                    cr_assert(0 <= lo && lo < hi && hi <= n && (mine || hi - lo <= group), "nt %d n %d: [%d, %d)", nt, n,
                              lo, hi);
                    cr_assert(after < n, "after %d of %d", after, n);
                    for (int u = lo; u < hi; u++)
                        taken[u]++;
                }
                for (int u = 0; u < n; u++)
                    cr_assert_eq(taken[u], 1, "nt %d n %d group %d: unit %d taken %d times", nt, n, group, u, taken[u]);
            }
        exec_destroy(&e);
    }
}

/* rmsnorm's vector path gives the portable loop's bits, every length 1..300 (the
 * tails of both loops), with and without a weight, in place too. */
Test(kernels, rmsnorm_equals_portable_bitwise)
{
    enum { N = 300 };
    float x[N], w[N], a[N], b[N];
    unsigned seed = 12345u;
    for (int i = 0; i < N; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * (i % 7 == 0 ? 300.0f : 1.0f);
        w[i] = 0.5f + (float)(i % 11) * 0.1f;
    }
    for (int n = 1; n <= N; n++)
        for (int wi = 0; wi < 2; wi++) {
            rmsnorm(a, x, wi ? w : NULL, n, 1e-5f);
            rmsnorm_portable(b, x, wi ? w : NULL, n, 1e-5f);
            cr_assert(!memcmp(a, b, sizeof(float) * (size_t)n), "n %d, weight %d", n, wi);
        }
    memcpy(a, x, sizeof x);
    rmsnorm(a, a, w, N, 1e-6f);
    rmsnorm_portable(b, x, w, N, 1e-6f);
    cr_assert(!memcmp(a, b, sizeof a), "in place");
}

/* The sampler's vocabulary passes (vocab.h) on every supported path against plain
 * scalar loops: the maximum, the first equal and next larger values and the ranges
 * of bits exactly; the exponentials bit for bit the portable path's, their sums and
 * the threshold and group sums within fp32-lane rounding; lengths off every vector
 * width, NaN and infinite values among them. */
Test(kernels, vocab_passes_match_scalar_loops)
{
    enum { N = 5003 };
    float *v = test_vec_random(N), *e = malloc(sizeof(float) * N), *want_e = malloc(sizeof(float) * N);
    int32_t *ids = malloc(sizeof(int32_t) * N), *want_ids = malloc(sizeof(int32_t) * N);
    for (int i = 0; i < N; i++)
        v[i] *= 8.0f;
    v[17] = NAN, v[40] = -INFINITY, v[4000] = 7.9999f;
    double block_mass[N / VOCAB_BLOCK + 1];
    vocab_portable.sum_exp(v, N, 7.9999f, 1.0f, want_e, NULL);
    for (int p = 0; p < 3; p++) {
        const kernel_isa *k = test_all_paths[p];
        if (!test_path_supported(k))
            continue;
        const vocab_kernels *vk = k->vocab;
        for (int n = 1; n <= N; n += n < 40 ? 1 : 997) {
            float mx = -FLT_MAX;
            for (int i = 0; i < n; i++)
                mx = v[i] > mx ? v[i] : mx;
            cr_assert_eq(vk->max(v, n), mx, "%s: max of %d", k->name, n);
            int first = -1;
            for (int i = 0; i < n && first < 0; i++)
                first = v[i] == v[n / 2] ? i : -1;
            cr_assert_eq(vk->first_equal(v, n, v[n / 2]), first, "%s: first_equal of %d", k->name, n);
            for (int from = 0; from < n; from += 1 + n / 7) {
                int next = from;
                while (next < n && !(v[next] > 3.0f))
                    next++;
                cr_assert_eq(vk->next_above(v, from, n, 3.0f), next, "%s: next_above %d of %d", k->name, from, n);
            }
        }
        double sum = vk->sum_exp(v, N, 7.9999f, 1.0f, e, block_mass), ref = 0, blocks = 0;
        cr_assert(!memcmp(e, want_e, sizeof(float) * N), "%s: the exponentials differ from portable's", k->name);
        for (int i = 0; i < N; i++)
            ref += e[i];
        for (int b = 0; b <= N / VOCAB_BLOCK; b++)
            blocks += block_mass[b];
        cr_assert(fabs(sum - ref) <= 1e-6 * ref && fabs(blocks - sum) <= 1e-9 * ref, "%s: sum %g, %g", k->name,
                  sum, ref);
        const float t[VOCAB_FLOORS] = {0.5f, 0.1f, 0.01f, 1e-4f, 1e-20f, 0.0f};
        int count[VOCAB_FLOORS];
        double mass[VOCAB_FLOORS];
        vk->floor_stats(e, N, t, count, mass);
        for (int f = 0; f < VOCAB_FLOORS; f++) {
            int c = 0;
            double m = 0;
            for (int i = 0; i < N; i++)
                if (e[i] >= t[f])
                    c++, m += e[i];
            cr_assert_eq(count[f], c, "%s: floor %g", k->name, t[f]);
            cr_assert(fabs(mass[f] - m) <= 1e-6 * m, "%s: floor %g mass %g, %g", k->name, t[f], mass[f], m);
        }
        uint32_t base, lo = 0x3d000000u, span = 1u << 21;
        float floor = 0.01f;
        memcpy(&base, &floor, sizeof base);
        uint32_t *gc = calloc(VOCAB_COPIES * (VOCAB_GROUPS + 1), sizeof *gc);
        double *gm = calloc(VOCAB_COPIES * (VOCAB_GROUPS + 1), sizeof *gm);
        vk->count_groups(e, N, floor, base, 15, gc, gm);
        int m = vk->take_range(e, N, lo, span, ids), want_m = 0;
        uint32_t *want_gc = calloc(VOCAB_GROUPS, sizeof *want_gc);
        double *want_gm = calloc(VOCAB_GROUPS, sizeof *want_gm);
        for (int i = 0; i < N; i++) {
            uint32_t key;
            memcpy(&key, &e[i], sizeof key);
            uint32_t g = (key - base) >> 15 < VOCAB_GROUPS - 1 ? (key - base) >> 15 : VOCAB_GROUPS - 1;
            if (e[i] >= floor)
                want_gc[g]++, want_gm[g] += e[i];
            if (key - lo < span)
                want_ids[want_m++] = i;
        }
        for (int g = 0; g < VOCAB_GROUPS; g++) {
            uint32_t c = 0;
            double w = 0;
            for (int k2 = 0; k2 < VOCAB_COPIES; k2++)
                c += gc[g * VOCAB_COPIES + k2], w += gm[g * VOCAB_COPIES + k2];
            cr_assert_eq(c, want_gc[g], "%s: group %d counts %u, expected %u", k->name, g, c, want_gc[g]);
            cr_assert(fabs(w - want_gm[g]) <= 1e-12 * (1 + want_gm[g]), "%s: group %d sums %g", k->name, g, w);
        }
        free(want_gc);
        free(want_gm);
        cr_assert(m == want_m && !memcmp(ids, want_ids, sizeof(int32_t) * (size_t)m), "%s: take_range", k->name);
        free(gc);
        free(gm);
    }
    free(v);
    free(e);
    free(want_e);
    free(ids);
    free(want_ids);
}
