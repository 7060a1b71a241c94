/*
 * kernels.h — the numeric building blocks the layers are written in. All math is
 * fp32; weights are read in their stored dtype (BF16 / F16 / F32) and widened in
 * registers or in a small per-thread panel, never copied whole.
 */
#ifndef STRATA_KERNELS_H
#define STRATA_KERNELS_H

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

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

struct q8p_block;   /* kernels/q8.h */

/* Room for rows_cap rows of x (widest_k each) made ready for the compute mode's
 * kernels: rounded to BF16 (xb for the dot product, else xr in fp32) or quantized
 * to int8 (xq, xs, xc). Empty in the fp32 mode. */
typedef struct x_room {
    uint16_t *xb;           /* (rows_cap, widest_k rounded up to even) */
    float *xr;              /* (rows_cap, widest_k) */
    int8_t *xq;             /* (rows_cap, widest_k padded to 32) */
    float *xs;              /* (rows_cap, blocks of widest_k) the int8 rows' scales */
    int32_t *xc;            /* (rows_cap, blocks of widest_k) their corrections */
    int rows_cap;
} x_room;

/* Rows of x a matmul_local prepares at a time (a thread's own x_room). */
#define MATMUL_LOCAL_ROWS 32

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
    int q8x;                /* the int8 compute mode (kernels/q8.h) */
    void (*q8p)(const struct q8p_block *b); /* its panel kernel: VNNI where the CPU has it, else portable */
    void (*q8x_quantize)(const float *x, int k, int8_t *xq, float *xs, int32_t *xc); /* its quantizer of x */
    x_room room;            /* x of the matmuls split over the threads */
    x_room *local;          /* (n_threads) MATMUL_LOCAL_ROWS rows each: x of matmul_local */
    struct exec_span *spans; /* (n_threads) what is left of each thread's share (exec_span_next) */
} exec;

/* widest_k: the longest matmul input (W.cols) the exec will see. */
strata_status exec_init(exec *e, int n_threads, int widest_k, strata_error *err);
void exec_destroy(exec *e);
/* Turn the bf16 compute mode on or off (on: room for rounding 16 rows of x), after
 * e->isa is final. */
strata_status exec_set_bf16(exec *e, int on, strata_error *err);
/* Turn the int8 compute mode on or off (on: room for quantizing 16 rows of x).
 * matmul with W in int8 panels (ST_I8_PANELS) needs it on. */
strata_status exec_set_int8(exec *e, int on, strata_error *err);
/* Room to round or quantize `rows` rows of x at once in the bf16 or int8 mode (a
 * no-op otherwise); matmuls of more rows go in parts. */
strata_status exec_reserve(exec *e, int rows, strata_error *err);
/* fn(arg, ti, nt) on every thread of e (just the caller when it has one). */
void exec_parallel(exec *e, pool_fn fn, void *arg);
/* fn(arg, lo, hi) over contiguous parts of [0, n) on e's threads; on the caller
 * alone when `work` (about one unit per float touched) is too small to split. */
typedef void (*range_fn)(void *arg, int lo, int hi);
void exec_for(exec *e, int n, double work, range_fn fn, void *arg);
/* [*lo, *hi): thread ti's share of n items split in nt contiguous parts. */
void exec_share(int n, int ti, int nt, int *lo, int *hi);
/* Work stealing over n units in a parallel region of nt threads: each thread takes
 * its exec_share front to back, a quarter of what is left at a time (at least
 * `group` units), then takes `group` units at a time from the back of the share
 * with the most left. Every range is part of a contiguous stream, and a thread
 * that starts late or runs slow (a preempted vCPU, a cold cache) is helped instead
 * of waited for. Which thread computes a unit never changes a number.
 * exec_spans_reset(e, n, nt) before the region; in it, exec_span_next gives thread
 * ti its next range [*lo, *hi) (0 when all is taken) and in *after the unit it will
 * most likely take next (-1: none), for prefetching. */
void exec_spans_reset(exec *e, int n, int nt);
int exec_span_next(exec *e, int ti, int nt, int group, int *lo, int *hi, int *after);

/* y (n, W.rows) = x (n, W.cols) · Wᵀ (+ bias), split over W rows across e's threads.
 * Each output element is summed in the fixed order of isa.h, so results do not
 * depend on n, on the threads, or on what else shares the step. */
void matmul(float *y, const float *x, int n, const strata_mat *w, exec *e);
/* The same on the calling thread alone, thread ti of a region of e's pool (its
 * own panel and x_room): the same bits as matmul. For work split over the threads
 * in pieces bigger than one matmul (a step's MoE experts). ti < 0: matmul. */
void matmul_local(float *y, const float *x, int n, const strata_mat *w, exec *e, int ti);

float dot_f32(const float *a, const float *b, int n);

/* x rounded to BF16, to nearest even (a NaN stays a NaN, made quiet): the bf16
 * mode's rounding of activations into its dot products (the vector paths' to_bf16
 * gives the same bits). */
static inline uint16_t bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u & 0x7fffffffu) > 0x7f800000u ? u | 0x00400000u : u + 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* The SSM state's rounding to BF16 (a bf16-mode cache), VCVTNEPS2BF16's steps: as
 * bf16_round, but a denormal goes to the zero of its sign. */
static inline uint16_t bf16_round_state(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (u & 0x7f800000u) == 0 ? (uint16_t)((u >> 16) & 0x8000u) : bf16_round(x);
}

static inline float bf16_widen(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* isa->ssm_head on a head's state S (P, N) kept in BF16: token by token, the state
 * widened exactly, the path's ssm_head for the token (its y from that fp32 state),
 * the state rounded back by bf16_round_state. Rounding after every token makes the
 * state after token t the same however the tokens were split into steps or passes.
 * Fused where the path and the CPU have it, else through scratch (P·N floats); the
 * same bits. */
void ssm_head_bf16(const kernel_isa *isa, uint16_t *S, float *scratch, int P, int N, int n, const float *x,
                   size_t ldx, const float *B, const float *C, size_t ldbc, const float *dt, const float *a, float Dh,
                   float *y, size_t ldy);

/* out = x / sqrt(mean(x²) + eps) * w over n values (w may be NULL). */
void rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* The same in plain C, which rmsnorm's vector path (AVX2, where the CPU has it)
 * equals bit for bit; for the tests. */
void rmsnorm_portable(float *out, const float *x, const float *w, int n, float eps);

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
/* torch.nn.functional.softplus with threshold 20. */
static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
static inline float relu2(float x) { return x > 0.0f ? x * x : 0.0f; }
/* v[i] = relu2(v[i]) over n values, branch-free where SSE is there (MAXPS returns
 * its second operand, 0, for x ≤ 0, -0 and NaN: the same values as relu2). */
void relu2_inplace(float *v, size_t n);

#endif
