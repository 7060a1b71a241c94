/*
 * kernels.h — the numeric building blocks the layers are written in. All math is
 * fp32; weights are read in their stored dtype (BF16 / F16 / F32) and widened in
 * registers or in a small per-thread panel, never copied whole.
 */
#ifndef STRATA_KERNELS_H
#define STRATA_KERNELS_H

#include <math.h>
#include <stdint.h>

#include "kernels/isa.h"
#include "kernels/pool.h"
#include "model/model.h"

/* Floats of W widened at a time per thread (128 KiB: stays in L2 while every x row
 * of the step passes over it, so W is read from memory once per step). */
#define MATMUL_PANEL_FLOATS 32768

/* x rows from which a matmul widens (or dequantizes) a panel of W to fp32 once and
 * runs every row over it; below, the kernel reads W in place (decode). */
#ifndef MATMUL_WIDEN_MIN_ROWS
#define MATMUL_WIDEN_MIN_ROWS 17
#endif

/* Where the numeric work runs: the kernel path, the thread pool and each thread's
 * widening panel. A runner owns one. */
typedef struct exec {
    const kernel_isa *isa;
    pool *pool;             /* NULL when single-threaded */
    int n_threads;
    float *panels;          /* (n_threads, panel_floats) */
    size_t panel_floats;
    int widest_k;
    int bf16;               /* the bf16 compute mode (isa.h) */
    void (*dot)(const mm_block *b); /* in that mode, the CPU's BF16 dot product over panels, or NULL */
    uint16_t *xb;           /* (rows_cap, widest_k rounded up to even) x rounded to BF16, for dot */
    float *xr;              /* (rows_cap, widest_k) the same as fp32, for every other kernel */
    int rows_cap;
} exec;

/* widest_k: the longest matmul input (W.cols) the exec will see. */
strata_status exec_init(exec *e, int n_threads, int widest_k, strata_error *err);
void exec_destroy(exec *e);
/* Turn the bf16 compute mode on or off (on: room for rounding 16 rows of x), after
 * e->isa is final. */
strata_status exec_set_bf16(exec *e, int on, strata_error *err);
/* Room to round `rows` rows of x at once in the bf16 mode (a no-op otherwise);
 * matmuls of more rows go in parts. */
strata_status exec_reserve(exec *e, int rows, strata_error *err);
/* fn(arg, ti, nt) on every thread of e (just the caller when it has one). */
void exec_parallel(exec *e, pool_fn fn, void *arg);
/* fn(arg, lo, hi) over contiguous parts of [0, n) on e's threads; on the caller
 * alone when `work` (about one unit per float touched) is too small to split. */
typedef void (*range_fn)(void *arg, int lo, int hi);
void exec_for(exec *e, int n, double work, range_fn fn, void *arg);
/* [*lo, *hi): thread ti's share of n items split in nt contiguous parts. */
void exec_share(int n, int ti, int nt, int *lo, int *hi);

/* y (n, W.rows) = x (n, W.cols) · Wᵀ (+ bias), split over W rows across e's threads.
 * Each output element is summed in the fixed order of isa.h, so results do not
 * depend on n, on the threads, or on what else shares the step. */
void matmul(float *y, const float *x, int n, const strata_mat *w, exec *e);

float dot_f32(const float *a, const float *b, int n);

/* out = x / sqrt(mean(x²) + eps) * w over n values (w may be NULL). */
void rmsnorm(float *out, const float *x, const float *w, int n, float eps);

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
/* torch.nn.functional.softplus with threshold 20. */
static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
static inline float relu2(float x) { return x > 0.0f ? x * x : 0.0f; }
/* v[i] = relu2(v[i]) over n values, branch-free where SSE is there (MAXPS returns
 * its second operand, 0, for x ≤ 0, -0 and NaN: the same values as relu2). */
void relu2_inplace(float *v, size_t n);

#endif
