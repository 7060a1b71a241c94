/*
 * test_q8_compute.c — the int8 compute mode (kernels/q8.h): x's quantizer, the
 * panel packing, the VNNI kernel against the portable one bit for bit and both
 * against the exact integer math, and batch and thread invariance through matmul.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/q8.h"
#include "kernel_util.h"

/* A random W (rows, cols) quantized, its panels, and a strata_mat over them. */
typedef struct pmat {
    int8_t *q;
    uint16_t *s;
    uint8_t *panels;
    float *bias;
    strata_mat m;
} pmat;

static void pmat_random(pmat *t, int rows, int cols, int with_bias)
{
    size_t n = (size_t)rows * (size_t)cols, kp = q8_padded(cols);
    float *w = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        w[i] = test_frand() * (1.0f + (float)((i / 32) % 5)) * ((i % 97) == 0 ? 8.0f : 1.0f);
    t->q = malloc((size_t)rows * kp);
    t->s = malloc(sizeof(uint16_t) * (size_t)rows * (kp / Q8_BLOCK));
    strata_error err;
    cr_assert_eq(q8_quantize(w, ST_F32, rows, cols, t->q, t->s, "test", &err), STRATA_OK, "%s", err.message);
    free(w);
    t->panels = calloc(1, q8_panels_bytes(rows, cols));
    /* packed in two parts, as the loader does in whole panels */
    int half = rows / 2 / Q8P_ROWS * Q8P_ROWS;
    q8_panels_pack(t->panels, t->q, t->s, rows, cols, 0, half);
    q8_panels_pack(t->panels, t->q + (size_t)half * kp, t->s + (size_t)half * (kp / Q8_BLOCK), rows, cols, half, rows);
    t->bias = with_bias ? test_vec_random((size_t)rows) : NULL;
    t->m = (strata_mat){.data = t->panels, .dtype = ST_I8_PANELS, .rows = rows, .cols = cols, .bias = t->bias};
}

static void pmat_free(pmat *t)
{
    free(t->q);
    free(t->s);
    free(t->panels);
    free(t->bias);
}

/* x rows with the shapes that matter: a zero block, tiny and huge magnitudes. */
static float *x_random(int n, int k)
{
    float *x = test_vec_random((size_t)n * (size_t)k);
    for (int r = 0; r < n; r++)
        for (int c = 0; c < k; c++) {
            float *v = x + (size_t)r * (size_t)k + c;
            if (r % 3 == 1 && c < 32)
                *v = 0.0f;
            else if (c % 41 == 5)
                *v *= r % 2 ? 1e-6f : 300.0f;
        }
    return x;
}

static const int Ks[] = {1, 7, 31, 32, 33, 64, 100, 257, 1030};

Test(q8_compute, x_quantizer_is_within_half_a_step)
{
    for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
        int K = Ks[ki];
        size_t kp = q8_padded(K), nb = kp / Q8_BLOCK;
        float *x = x_random(3, K);
        int8_t *xq = malloc(kp);
        float *xs = malloc(sizeof(float) * nb);
        int32_t *xc = malloc(sizeof(int32_t) * nb);
        for (int r = 0; r < 3; r++) {
            const float *xr = x + (size_t)r * (size_t)K;
            q8_quantize_x_portable(xr, K, xq, xs, xc);
            for (size_t b = 0; b < nb; b++) {
                float amax = 0.0f;
                int sum = 0;
                for (size_t c = b * Q8_BLOCK; c < (b + 1) * Q8_BLOCK; c++) {
                    if (c < (size_t)K)
                        amax = fmaxf(amax, fabsf(xr[c]));
                    else
                        cr_assert_eq(xq[c], 0, "K=%d: padding quantized to %d", K, xq[c]);
                    cr_assert(xq[c] >= -127 && xq[c] <= 127);
                    sum += xq[c];
                }
                cr_assert_eq(xs[b], amax / 127.0f, "K=%d block %zu: scale %g", K, b, xs[b]);
                cr_assert_eq(xc[b], -128 * sum, "K=%d block %zu: correction", K, b);
                for (size_t c = b * Q8_BLOCK; c < (b + 1) * Q8_BLOCK && c < (size_t)K; c++)
                    cr_assert_leq(fabs((double)xr[c] - (double)xq[c] * xs[b]), 0.5 * xs[b] * (1.0 + 1e-5) + 1e-30,
                                  "K=%d col %zu: %g vs %d · %g", K, c, xr[c], xq[c], xs[b]);
            }
        }
        free(x);
        free(xq);
        free(xs);
        free(xc);
    }
    float tiny[33] = {1e-39f, -2e-39f, 0.0f, 5e-40f};
    int8_t tq[64];
    float ts[2];
    int32_t tc[2];
    tiny[32] = 1e-36f;  /* 127 / 1e-36 is finite: the next block quantizes */
    q8_quantize_x_portable(tiny, 33, tq, ts, tc);
    cr_assert(tq[0] == 0 && tq[1] == 0 && tc[0] == 0, "127 / amax overflows: the block quantizes to 0");
    cr_assert_eq(tq[32], 127);
    float bad[40] = {1.0f, INFINITY}, one[1] = {0.0f};
    int8_t q[64];
    float s[2];
    int32_t c[2];
    q8_quantize_x_portable(bad, 40, q, s, c);
    cr_assert(isnan(s[0]), "a block with inf gets a NaN scale, so its outputs are NaN");
    cr_assert_eq(q[0], 0);
    cr_assert_eq(s[1], 0.0f, "the next block (zeros) is untouched by it");
    q8_quantize_x_portable(one, 1, q, s, c);
    cr_assert_eq(s[0], 0.0f);
    cr_assert_eq(c[0], 0);
}

/* y (n, rows) in exact integer sums: Σ_b isum_b · sw_b · xs_b in double, and the
 * sum of the magnitudes of its terms. */
static void exact_int8(const pmat *t, int rows, int K, const float *x, int n, double *ref, double *mag)
{
    size_t kp = q8_padded(K), nb = kp / Q8_BLOCK;
    int8_t *xq = malloc(kp);
    float *xs = malloc(sizeof(float) * nb);
    int32_t *xc = malloc(sizeof(int32_t) * nb);
    for (int r = 0; r < n; r++) {
        q8_quantize_x_portable(x + (size_t)r * (size_t)K, K, xq, xs, xc);
        for (int j = 0; j < rows; j++) {
            double acc = t->bias ? t->bias[j] : 0.0, m = fabs(acc);
            for (size_t b = 0; b < nb; b++) {
                long long isum = 0;
                for (size_t c = b * Q8_BLOCK; c < (b + 1) * Q8_BLOCK; c++)
                    isum += (long long)t->q[(size_t)j * kp + c] * xq[c];
                double term = (double)isum * (double)q8_scale_f32(t->s[(size_t)j * nb + b]) * (double)xs[b];
                acc += term;
                m += fabs(term);
            }
            ref[(size_t)r * (size_t)rows + (size_t)j] = acc;
            mag[(size_t)r * (size_t)rows + (size_t)j] = m;
        }
    }
    free(xq);
    free(xs);
    free(xc);
}

/* matmul in the int8 mode on `threads` threads of the AVX-512 path (whose exec
 * takes the VNNI kernel where the CPU has it) or the portable one; on 3 threads
 * with room for 16 rows of x only, so larger n goes in parts. matmul_local on
 * the last thread gives the same bits (in parts of MATMUL_LOCAL_ROWS). */
static void int8_matmul(float *y, const float *x, int n, const pmat *t, const kernel_isa *isa, int threads)
{
    exec e;
    strata_error err;
    cr_assert_eq(exec_init(&e, threads, t->m.cols, &err), STRATA_OK);
    e.isa = isa;
    cr_assert_eq(exec_set_int8(&e, 1, &err), STRATA_OK);
    cr_assert_eq(exec_reserve(&e, threads == 3 ? 16 : 40, &err), STRATA_OK);
    if (isa != &kernel_avx512)
        cr_assert_eq((void *)e.q8p, (void *)q8_panels_block_portable);
    matmul(y, x, n, &t->m, &e);
    float *alone = malloc(sizeof(float) * (size_t)n * (size_t)t->m.rows);
    matmul_local(alone, x, n, &t->m, &e, threads - 1);
    cr_assert(!memcmp(alone, y, sizeof(float) * (size_t)n * (size_t)t->m.rows),
              "%s: matmul_local of %d rows differs from matmul on %d threads", isa->name, n, threads);
    free(alone);
    exec_destroy(&e);
}

Test(q8_compute, kernels_equal_the_exact_integer_math, .timeout = 120)
{
    static const int rows_of[] = {1, 31, 32, 33, 70};
    static const int ns[] = {1, 5, 6, 7, 16, 17, 40};
    int have_vnni = q8_panels_kernel() != NULL && test_path_supported(&kernel_avx512);
    if (!have_vnni)
        cr_log_info("no AVX512_VNNI here: only the portable kernel is tested");
    for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++)
        for (size_t ri = 0; ri < sizeof rows_of / sizeof rows_of[0]; ri++) {
            int K = Ks[ki], rows = rows_of[ri], nmax = 40;
            pmat t;
            pmat_random(&t, rows, K, (int)(ki + ri) % 2);
            float *x = x_random(nmax, K);
            size_t ny = (size_t)nmax * (size_t)rows;
            double *ref = malloc(sizeof(double) * ny), *mag = malloc(sizeof(double) * ny);
            float *solo = malloc(sizeof(float) * ny), *y = malloc(sizeof(float) * ny);
            exact_int8(&t, rows, K, x, nmax, ref, mag);
            for (int r = 0; r < nmax; r++)
                int8_matmul(solo + (size_t)r * (size_t)rows, x + (size_t)r * (size_t)K, 1, &t, &kernel_portable, 1);
            for (size_t i = 0; i < ny; i++)
                cr_assert(fabs(solo[i] - ref[i]) <= 3e-6 * mag[i] + 1e-30, "K=%d rows=%d [%zu]: %.9g vs exact %.9g", K,
                          rows, i, solo[i], ref[i]);
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
                for (int threads = 1; threads <= 3; threads++) {
                    int n = ns[ni], r0 = nmax - n;
                    const kernel_isa *isa = have_vnni && threads != 2 ? &kernel_avx512 : &kernel_portable;
                    memset(y, 0xff, sizeof(float) * (size_t)n * (size_t)rows);
                    int8_matmul(y, x + (size_t)r0 * (size_t)K, n, &t, isa, threads);
                    cr_assert(!memcmp(y, solo + (size_t)r0 * (size_t)rows, sizeof(float) * (size_t)n * (size_t)rows),
                              "%s K=%d rows=%d: %d rows on %d threads differ from the portable kernel's rows alone",
                              isa->name, K, rows, n, threads);
                }
            free(ref);
            free(mag);
            free(solo);
            free(y);
            free(x);
            pmat_free(&t);
        }
}

/* Without exec_set_int8 (a library user's own exec), matmul still gives the mode's
 * numbers, a row at a time. */
Test(q8_compute, matmul_without_the_mode_gives_the_same_bits)
{
    int K = 100, rows = 45, n = 3;
    pmat t;
    pmat_random(&t, rows, K, 1);
    float *x = x_random(n, K), *y0 = malloc(sizeof(float) * (size_t)n * rows), *y1 = malloc(sizeof(float) * (size_t)n * rows);
    int8_matmul(y0, x, n, &t, &kernel_portable, 1);
    exec e;
    strata_error err;
    cr_assert_eq(exec_init(&e, 2, K, &err), STRATA_OK);
    matmul(y1, x, n, &t.m, &e);
    exec_destroy(&e);
    cr_assert(!memcmp(y0, y1, sizeof(float) * (size_t)n * rows));
    free(x);
    free(y0);
    free(y1);
    pmat_free(&t);
}

/* The AVX-512 quantizer (where the CPU has it) gives the portable one's bits, ties
 * and clamps included. */
Test(q8_compute, fast_x_quantizer_equals_portable)
{
    static const int ks[] = {1, 5, 16, 17, 31, 32, 33, 64, 100, 1030};
    q8_quantize_x_fn fast = q8_quantize_x_kernel() ? q8_quantize_x_kernel() : q8_quantize_x_portable;
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        int K = ks[ki];
        size_t kp = q8_padded(K), nb = kp / Q8_BLOCK;
        float *x = x_random(4, K);
        for (int c = 0; c < K; c += 3)   /* exact halves of a step: 127 / 127 · (n + 0.5) */
            x[c] = c % 2 ? 127.0f : (float)(c % 64) + 0.5f;
        for (int c = 0; c < K; c++)      /* row 3: denormals, a block 127 / amax overflows */
            x[3 * (size_t)K + c] = (float)(c % 7) * 1e-40f;
        int8_t *q0 = malloc(kp), *q1 = malloc(kp);
        float *s0 = malloc(sizeof(float) * nb), *s1 = malloc(sizeof(float) * nb);
        int32_t *c0 = malloc(sizeof(int32_t) * nb), *c1 = malloc(sizeof(int32_t) * nb);
        for (int r = 0; r < 4; r++) {
            q8_quantize_x_portable(x + (size_t)r * (size_t)K, K, q0, s0, c0);
            fast(x + (size_t)r * (size_t)K, K, q1, s1, c1);
            cr_assert(!memcmp(q0, q1, kp) && !memcmp(s0, s1, sizeof(float) * nb) &&
                          !memcmp(c0, c1, sizeof(int32_t) * nb),
                      "K=%d row %d: the quantizers differ", K, r);
        }
        free(x);
        free(q0);
        free(q1);
        free(s0);
        free(s1);
        free(c0);
        free(c1);
    }
    if (!q8_quantize_x_kernel())
        cr_log_info("no AVX-512 here: only the portable quantizer runs");
}
