/*
 * matmul.c — y = x·Wᵀ for weights stored as BF16, F16 or F32, in fp32 arithmetic:
 * the driver around the ISA kernels (isa.h), and the exec context (path, threads,
 * panels) it runs in.
 *
 * Work is split over W rows (output columns): each thread owns a contiguous range
 * of W rows and walks it in panels. Few x rows (decode): the kernel reads W in its
 * stored dtype and widens in registers — one pass over the weights per step,
 * whatever the batch. Many x rows (prefill): each panel of W is widened once into
 * the thread's fp32 panel and every x row of the block passes over it. Widening is
 * exact, so both routes give the same bits.
 *
 * Where the path has panel kernels (AVX-512), BF16 weights are repacked at load
 * into panels (ST_BF16_PANELS, isa.h), taken by the threads in whole panels of 64
 * rows by work stealing (exec_span_next, also used by the layers' per-head loops),
 * and read by one kernel per form of x: fp32, or BF16 in the bf16 compute mode,
 * which rounds x first (each thread its share of the rows, in the same region).
 * Int8 panels (ST_I8_PANELS, the int8 compute mode: kernels/q8.h) go the same way,
 * x quantized instead of rounded. The exec also owns the CPU-dispatched rmsnorm and
 * dot_f32.
 *
 * Invariant (batch invariance): every output element's summation order is fixed by
 * the kernel path alone (isa.h), never by n, the tiling or the thread split, so a
 * sequence's numbers do not depend on what else shares its step.
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/kernels.h"
#include "kernels/q8.h"

/* Below this much elementwise work an exec_for runs on the caller alone. */
#define EXEC_FOR_PARALLEL_MIN (1 << 15)

/* Below this many multiply-adds a matmul runs on the calling thread alone. */
#define MATMUL_PARALLEL_MIN (1 << 16)

static inline void spin_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* One thread's share left to take, units [front, back) packed as back << 32 | front,
 * alone in its cache line: the owner's takes stay in its own L1 until a thief comes. */
struct exec_span {
    _Alignas(64) atomic_ullong left;
};

strata_status exec_init(exec *e, int n_threads, int widest_k, strata_error *err)
{
    *e = (exec){.isa = kernel_select(), .n_threads = n_threads, .widest_k = widest_k > 0 ? widest_k : 1};
    size_t need = (size_t)(widest_k > 0 ? widest_k : 1) * 4 + 64;
    e->panel_floats = need > MATMUL_PANEL_FLOATS + 64 ? need : MATMUL_PANEL_FLOATS + 64;
    e->panels = malloc(sizeof(float) * e->panel_floats * (size_t)n_threads);
    e->spans = aligned_alloc(64, sizeof *e->spans * (size_t)n_threads);
    e->local = calloc((size_t)n_threads, sizeof *e->local);
    if (!e->panels || !e->spans || !e->local) {
        exec_destroy(e);
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    }
    if (n_threads > 1) {
        strata_status s = pool_new(n_threads, &e->pool, err);
        if (s != STRATA_OK) {
            exec_destroy(e);
            return s;
        }
    }
    return STRATA_OK;
}

static void room_free(x_room *r)
{
    free(r->xb);
    free(r->xr);
    free(r->xq);
    free(r->xs);
    free(r->xc);
    *r = (x_room){0};
}

void exec_destroy(exec *e)
{
    pool_free(e->pool);
    free(e->panels);
    free(e->spans);
    room_free(&e->room);
    for (int t = 0; e->local && t < e->n_threads; t++)
        room_free(&e->local[t]);
    free(e->local);
    *e = (exec){0};
}

/* *r replaced by room for `rows` rows in e's compute mode (none in fp32). */
static strata_status room_alloc(const exec *e, x_room *r, int rows, strata_error *err)
{
    x_room fresh = {.rows_cap = rows};
    int ok = 1;
    if (e->q8x) {
        size_t kp = q8_padded(e->widest_k), nb = kp / Q8_BLOCK;
        fresh.xq = malloc((size_t)rows * kp);
        fresh.xs = malloc(sizeof *fresh.xs * (size_t)rows * nb);
        fresh.xc = malloc(sizeof *fresh.xc * (size_t)rows * nb);
        ok = fresh.xq && fresh.xs && fresh.xc;
    } else if (e->bf16) {
        size_t n = (size_t)rows * (size_t)(e->widest_k + 1);   /* rows padded to even for the panels */
        fresh.xb = e->dot ? malloc(n * sizeof *fresh.xb) : NULL;  /* panels, where the CPU has dot */
        fresh.xr = malloc(n * sizeof *fresh.xr);                  /* everything else (never touched if unused) */
        ok = fresh.xr && (!e->dot || fresh.xb);
    } else {
        fresh.rows_cap = 0;
    }
    if (!ok) {
        room_free(&fresh);
        return strata_fail(err, STRATA_E_NOMEM, "out of memory: preparing %d rows of x for the %s mode", rows,
                           e->q8x ? "int8" : "bf16");
    }
    room_free(r);
    *r = fresh;
    return STRATA_OK;
}

strata_status exec_reserve(exec *e, int rows, strata_error *err)
{
    if ((!e->q8x && !e->bf16) || rows <= e->room.rows_cap)
        return STRATA_OK;
    return room_alloc(e, &e->room, rows, err);
}

/* After a change of mode: the shared room for 16 rows, each thread's for matmul_local. */
static strata_status rooms_for_mode(exec *e, strata_error *err)
{
    STRATA_TRY(room_alloc(e, &e->room, 16, err));
    for (int t = 0; t < e->n_threads; t++)
        STRATA_TRY(room_alloc(e, &e->local[t], MATMUL_LOCAL_ROWS, err));
    return STRATA_OK;
}

strata_status exec_set_bf16(exec *e, int on, strata_error *err)
{
    e->bf16 = on != 0;
    e->dot = e->bf16 ? kernel_bf16_dot(e->isa) : NULL;
    return e->q8x ? STRATA_OK : rooms_for_mode(e, err);
}

strata_status exec_set_int8(exec *e, int on, strata_error *err)
{
    int fast = e->isa == &kernel_avx512 && q8_panels_kernel() && q8_quantize_x_kernel();
    int was = e->q8x;
    e->q8x = on != 0;
    e->q8p = fast ? q8_panels_kernel() : q8_panels_block_portable;
    e->q8x_quantize = fast ? q8_quantize_x_kernel() : q8_quantize_x_portable;
    return e->q8x || was ? rooms_for_mode(e, err) : STRATA_OK;
}

void exec_parallel(exec *e, pool_fn fn, void *arg)
{
    pool_run(e->pool, fn, arg);
}

void exec_share(int n, int ti, int nt, int *lo, int *hi)
{
    *lo = (int)((long long)n * ti / nt);
    *hi = (int)((long long)n * (ti + 1) / nt);
}

void exec_spans_reset(exec *e, int n, int nt)
{
    for (int t = 0; t < nt; t++) {
        int lo, hi;
        exec_share(n, t, nt, &lo, &hi);
        atomic_store_explicit(&e->spans[t].left, (unsigned long long)hi << 32 | (unsigned)lo, memory_order_relaxed);
    }
}

/* Units off a span: from the front (its owner), a quarter of what is left but at
 * least `group` — a locked instruction per take cost about 100 ns here, and the
 * takes shrink as the span does, so the last are small; from the back (a thief),
 * `group`. */
static int span_take(struct exec_span *sp, int front, int group, int *lo, int *hi)
{
    unsigned long long v = atomic_load_explicit(&sp->left, memory_order_relaxed);
    for (;;) {
        int f = (int)(v & 0xffffffffu), b = (int)(v >> 32);
        if (f >= b)
            return 0;
        if (front && (b - f) / 4 > group)
            group = (b - f) / 4;
        *lo = front ? f : b - group > f ? b - group : f;
        *hi = front ? (f + group < b ? f + group : b) : b;
        unsigned long long w = front ? (unsigned long long)b << 32 | (unsigned)*hi
                                     : (unsigned long long)*lo << 32 | (unsigned)f;
        if (atomic_compare_exchange_weak_explicit(&sp->left, &v, w, memory_order_relaxed, memory_order_relaxed))
            return 1;
    }
}

static int span_size(const struct exec_span *sp)
{
    unsigned long long v = atomic_load_explicit(&sp->left, memory_order_relaxed);
    int f = (int)(v & 0xffffffffu), b = (int)(v >> 32);
    return b > f ? b - f : 0;
}

int exec_span_next(exec *e, int ti, int nt, int group, int *lo, int *hi, int *after)
{
    if (span_take(&e->spans[ti], 1, group, lo, hi)) {
        *after = span_size(&e->spans[ti]) ? *hi : -1;
        return 1;
    }
    for (;;) {
        int victim = -1, most = 0;
        for (int t = 0; t < nt; t++) {
            int left = span_size(&e->spans[t]);
            if (left > most) {
                most = left;
                victim = t;
            }
        }
        if (victim < 0)
            return 0;
        if (span_take(&e->spans[victim], 0, group, lo, hi)) {
            *after = span_size(&e->spans[victim]) ? (*lo > group ? *lo - group : 0) : -1;
            return 1;
        }
    }
}

typedef struct for_job {
    range_fn fn;
    void *arg;
    int n;
} for_job;

static void for_thread(void *arg, int ti, int nt)
{
    const for_job *J = arg;
    int lo, hi;
    exec_share(J->n, ti, nt, &lo, &hi);
    if (lo < hi)
        J->fn(J->arg, lo, hi);
}

void exec_for(exec *e, int n, double work, range_fn fn, void *arg)
{
    if (n <= 0)
        return;
    if (e->n_threads == 1 || n == 1 || work < EXEC_FOR_PARALLEL_MIN) {
        fn(arg, 0, n);
        return;
    }
    for_job J = {fn, arg, n};
    exec_parallel(e, for_thread, &J);
}

typedef struct mm_job {
    float *y;
    const float *x;
    const uint16_t *xb;     /* x in BF16 for e->dot (W in panels), or NULL */
    int n;
    const strata_mat *w;
    exec *e;
    int nt;                 /* threads taking part */
    const float *x_prep;    /* x to round into room->xb (the bf16 dot mode) or to quantize into
                               room->xq (the int8 mode) in the region first, or NULL */
    atomic_int prepared;    /* threads done with their rows of x_prep */
    const x_room *room;     /* where x is prepared */
    int ti;                 /* matmul_local: the one thread it runs on; -1: e's threads */
} mm_job;

/* W rows [ja, jb) for every x row. */
static void matmul_range(const mm_job *J, int ja, int jb, float *panel, size_t panel_floats)
{
    const strata_mat *w = J->w;
    const kernel_isa *isa = J->e->isa;
    if (w->dtype == ST_I8) {
        q8_matmul_rows(J->y, J->x, J->n, w, isa, ja, jb, panel, panel_floats);
        return;
    }
    int K = w->cols, nr = isa->nr;
    size_t esz = st_dtype_size(w->dtype), rows = (size_t)w->rows;
    int pr = MATMUL_PANEL_FLOATS / K / nr * nr;
    pr = pr < nr ? nr : pr;
    int widen = w->dtype != ST_F32 && J->n >= MATMUL_WIDEN_MIN_ROWS && (size_t)pr * (size_t)K <= panel_floats;
    for (int j0 = ja; j0 < jb; j0 += pr) {
        int nw = jb - j0 < pr ? jb - j0 : pr;
        const char *src = (const char *)w->data + (size_t)j0 * (size_t)K * esz;
        mm_block b = {.y = J->y + (size_t)j0, .ldy = rows, .x = J->x, .xb = J->xb, .ldx = (size_t)K,
                      .w = src, .dtype = w->dtype, .ldw = (size_t)K,
                      .bias = w->bias ? w->bias + j0 : NULL, .m = J->n, .nw = nw, .k = K};
        if (widen) {
            isa->widen(panel, src, w->dtype, (size_t)nw * (size_t)K);
            b.w = panel;
            b.dtype = ST_F32;
        }
        isa->block(&b);
    }
}

/* W in panels: rows [ja, jb) from panel ja / 64 on, by the exec's panel kernel
 * for x in BF16 (rows padded to even) or in fp32; then panel `after` is prefetched
 * (-1: none). */
static void matmul_panels(const mm_job *J, int ja, int jb, int after)
{
    const strata_mat *w = J->w;
    size_t kp = (size_t)(w->cols + (w->cols & 1));
    mm_block b = {.y = J->y + (size_t)ja, .ldy = (size_t)w->rows, .x = J->x, .xb = J->xb,
                  .ldx = J->xb ? kp : (size_t)w->cols, .w = (const uint16_t *)w->data + (size_t)ja * kp,
                  .dtype = ST_BF16_PANELS, .ldw = kp, .bias = w->bias ? w->bias + ja : NULL, .m = J->n,
                  .nw = jb - ja, .k = w->cols};
    b.pf_after = after < 0 ? NULL : (const uint16_t *)w->data + (size_t)after * BF16_PANEL_ROWS * kp;
    if (J->xb)
        J->e->dot(&b);
    else
        J->e->isa->block_panels_f32(&b);
}

/* x rounded to BF16, to nearest even (NaN stays NaN), into xb (the path's vector
 * code first, where it has one), or widened back to fp32 into xr. */
static void round_bf16(const exec *e, uint16_t *xb, float *xr, const float *x, size_t n)
{
    size_t i = xb && e->isa->to_bf16 ? e->isa->to_bf16(xb, x, n) : 0;
    for (; i < n; i++) {
        uint16_t h = bf16_round(x[i]);
        if (xb)
            xb[i] = h;
        else
            xr[i] = bf16_widen(h);
    }
}

/* m rows of x (k) rounded to BF16 into xb rows ldx apart, each padded with zero
 * to ldx (the panels' pairs read one past an odd k). */
static void round_rows_bf16(const exec *e, uint16_t *xb, size_t ldx, const float *x, int m, int k)
{
    for (int r = 0; r < m; r++) {
        round_bf16(e, xb + (size_t)r * ldx, NULL, x + (size_t)r * (size_t)k, (size_t)k);
        memset(xb + (size_t)r * ldx + k, 0, sizeof *xb * (ldx - (size_t)k));
    }
}

/* Rows [lo, hi) of x (k) quantized into room's int8 buffers. */
static void quantize_rows_int8(const exec *e, const x_room *room, const float *x, int lo, int hi, int k)
{
    size_t kp = q8_padded(k), nb = kp / Q8_BLOCK;
    for (int r = lo; r < hi; r++)
        e->q8x_quantize(x + (size_t)r * (size_t)k, k, room->xq + (size_t)r * kp, room->xs + (size_t)r * nb,
                        room->xc + (size_t)r * nb);
}

/* Thread ti's rows of J->x_prep rounded into the room's xb (the bf16 dot mode) or
 * quantized into its xq (the int8 mode), then a wait until every thread's are: the
 * work runs split over the threads, inside the matmul's own region, instead of on
 * the caller before it while the workers wait. */
static void prep_share(mm_job *J, int ti)
{
    int lo, hi, K = J->w->cols;
    size_t ldx = (size_t)K + (size_t)(K & 1);
    exec_share(J->n, ti, J->nt, &lo, &hi);
    if (J->w->dtype == ST_I8_PANELS)
        quantize_rows_int8(J->e, J->room, J->x_prep, lo, hi, K);
    else
        round_rows_bf16(J->e, J->room->xb + (size_t)lo * ldx, ldx, J->x_prep + (size_t)lo * (size_t)K, hi - lo, K);
    atomic_fetch_add_explicit(&J->prepared, 1, memory_order_release);
    while (atomic_load_explicit(&J->prepared, memory_order_acquire) < J->nt)
        spin_pause();
}

/* W in int8 panels: rows [ja, jb) from panel ja / 32 on, x quantized in the job's
 * room; then panel `after` is prefetched (-1: none). */
static void matmul_int8_panels(const mm_job *J, int ja, int jb, int after)
{
    const strata_mat *w = J->w;
    const exec *e = J->e;
    size_t kp = q8_padded(w->cols), panel = kp / Q8_BLOCK * Q8P_BLOCK_BYTES;
    const uint8_t *base = w->data;
    q8p_block b = {.y = J->y + (size_t)ja, .ldy = (size_t)w->rows, .xq = J->room->xq, .xs = J->room->xs, .xc = J->room->xc,
                   .ldx = kp, .lds = kp / Q8_BLOCK, .w = base + (size_t)(ja / Q8P_ROWS) * panel,
                   .bias = w->bias ? w->bias + ja : NULL, .m = J->n, .nw = jb - ja, .k = w->cols,
                   .pf_after = after < 0 ? NULL : base + (size_t)after * panel};
    e->q8p(&b);
}

/* Thread ti's W rows: whole register tiles in its fixed share, or whole panels
 * one at a time by work stealing (exec_span_next), each panel's walk prefetching
 * the one taken next. */
static void matmul_thread(void *arg, int ti, int nt)
{
    mm_job *J = arg;
    (void)nt;
    if (ti >= J->nt)
        return;
    int lo, hi, after;
    if (J->x_prep)
        prep_share(J, ti);
    if (J->w->dtype == ST_I8_PANELS) {
        while (exec_span_next(J->e, ti, J->nt, 1, &lo, &hi, &after))
            matmul_int8_panels(J, lo * Q8P_ROWS, hi * Q8P_ROWS < J->w->rows ? hi * Q8P_ROWS : J->w->rows, after);
        return;
    }
    if (J->w->dtype == ST_BF16_PANELS) {
        while (exec_span_next(J->e, ti, J->nt, 1, &lo, &hi, &after))
            matmul_panels(J, lo * BF16_PANEL_ROWS, hi * BF16_PANEL_ROWS < J->w->rows ? hi * BF16_PANEL_ROWS : J->w->rows,
                          after);
        return;
    }
    int unit = J->e->isa->nr;
    exec_share((J->w->rows + unit - 1) / unit, ti, J->nt, &lo, &hi);
    int ja = lo * unit, jb = hi * unit < J->w->rows ? hi * unit : J->w->rows;
    if (ja < jb)
        matmul_range(J, ja, jb, J->e->panels + (size_t)ti * J->e->panel_floats, J->e->panel_floats);
}

void ssm_head_bf16(const kernel_isa *isa, uint16_t *S, float *scratch, int P, int N, int n, const float *x,
                   size_t ldx, const float *B, const float *C, size_t ldbc, const float *dt, const float *a, float Dh,
                   float *y, size_t ldy)
{
    if (isa->ssm_head_bf16 && cpu_has_bf16() && isa->ssm_head_bf16(S, P, N, n, x, ldx, B, C, ldbc, dt, a, Dh, y, ldy))
        return;
    size_t len = (size_t)P * (size_t)N;
    for (int t = 0; t < n; t++) {
        for (size_t i = 0; i < len; i++)
            scratch[i] = bf16_widen(S[i]);
        isa->ssm_head(scratch, P, N, 1, x + (size_t)t * ldx, ldx, B + (size_t)t * ldbc, C + (size_t)t * ldbc, ldbc,
                      dt + t, a + t, Dh, y + (size_t)t * ldy, ldy);
        for (size_t i = 0; i < len; i++)
            S[i] = bf16_round_state(scratch[i]);
    }
}

size_t bf16_panels_elems(int rows, int cols)
{
    size_t panels = (size_t)((rows + BF16_PANEL_ROWS - 1) / BF16_PANEL_ROWS);
    return panels * BF16_PANEL_ROWS * (size_t)(cols + (cols & 1));
}

void bf16_panels_pack(uint16_t *dst, const uint16_t *w, int rows, int cols, int r0, int r1)
{
    size_t pairs = (size_t)(cols + 1) / 2;
    for (int r = r0; r < r1 && r < rows; r++)
        for (size_t k = 0; k < (size_t)cols; k++)
            dst[bf16_panel_index(pairs, r, k)] = w[(size_t)r * (size_t)cols + k];
}

/* W in panels on an exec whose path has no panel kernels (one asked for by name
 * after the model was packed): plainly, x as given, each output summed in k order. */
static void matmul_panels_portable(float *y, const float *x, int n, const strata_mat *w)
{
    size_t pairs = (size_t)(w->cols + 1) / 2, K = (size_t)w->cols;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < w->rows; j++) {
            float acc = 0.0f;
            for (size_t k = 0; k < K; k++)
                acc += x[(size_t)i * K + k] * mat_elem(w->data, ST_BF16, bf16_panel_index(pairs, j, k));
            y[(size_t)i * (size_t)w->rows + (size_t)j] = w->bias ? acc + w->bias[j] : acc;
        }
}

/* J on thread J->ti alone, every W row in order (no spans: the other threads may
 * be running matmuls of their own). */
static void matmul_alone(mm_job *J)
{
    int rows = J->w->rows;
    if (J->x_prep)
        prep_share(J, 0);
    if (J->w->dtype == ST_I8_PANELS)
        matmul_int8_panels(J, 0, rows, -1);
    else if (J->w->dtype == ST_BF16_PANELS)
        matmul_panels(J, 0, rows, -1);
    else
        matmul_range(J, 0, rows, J->e->panels + (size_t)J->ti * J->e->panel_floats, J->e->panel_floats);
}

/* J on the exec's threads, or on the caller alone when it is small (or local). */
static void matmul_run(mm_job *J)
{
    if (J->ti >= 0) {
        J->nt = 1;
        matmul_alone(J);
        return;
    }
    double work = (double)J->n * (double)J->w->rows * (double)J->w->cols;
    if (J->e->n_threads == 1 || work < MATMUL_PARALLEL_MIN)
        J->nt = 1;
    if (J->w->dtype == ST_BF16_PANELS)
        exec_spans_reset(J->e, (J->w->rows + BF16_PANEL_ROWS - 1) / BF16_PANEL_ROWS, J->nt);
    if (J->w->dtype == ST_I8_PANELS)
        exec_spans_reset(J->e, (J->w->rows + Q8P_ROWS - 1) / Q8P_ROWS, J->nt);
    if (J->nt == 1)
        matmul_thread(J, 0, 1);
    else
        exec_parallel(J->e, matmul_thread, J);
}

/* The bf16 compute mode: x rounded in parts of at most the room's rows. */
static void matmul_bf16(float *y, const float *x, int n, const strata_mat *w, exec *e, const x_room *room, int ti)
{
    size_t K = (size_t)w->cols;
    int dot = w->dtype == ST_BF16_PANELS && e->dot;    /* else x rounded in fp32, through the fp32 kernels */
    for (int r0 = 0; r0 < n; r0 += room->rows_cap) {
        int m = n - r0 < room->rows_cap ? n - r0 : room->rows_cap;
        if (!dot)
            round_bf16(e, NULL, room->xr, x + (size_t)r0 * K, (size_t)m * K);
        mm_job J = {.y = y + (size_t)r0 * (size_t)w->rows, .x = room->xr, .xb = dot ? room->xb : NULL, .n = m,
                    .w = w, .e = e, .nt = e->n_threads, .x_prep = dot ? x + (size_t)r0 * K : NULL, .room = room,
                    .ti = ti};
        matmul_run(&J);
    }
}

/* The int8 compute mode: x quantized in parts of at most the room's rows. */
static void matmul_int8(float *y, const float *x, int n, const strata_mat *w, exec *e, const x_room *room, int ti)
{
    if (!room->xq || w->cols > e->widest_k) {  /* no room: a row at a time on the thread, quantized in
                                                  its panel (≥ 32768 floats: rows up to 100k columns) */
        size_t kp = q8_padded(w->cols), nb = kp / Q8_BLOCK;
        float *panel = e->panels + (size_t)(ti < 0 ? 0 : ti) * e->panel_floats;
        int8_t *xq = (int8_t *)(void *)panel;
        float *xs = panel + kp / 4;
        int32_t *xc = (int32_t *)(void *)(xs + nb);
        for (int r = 0; r < n; r++) {
            q8_quantize_x_portable(x + (size_t)r * (size_t)w->cols, w->cols, xq, xs, xc);
            q8p_block b = {.y = y + (size_t)r * (size_t)w->rows, .ldy = (size_t)w->rows, .xq = xq, .xs = xs,
                           .xc = xc, .ldx = kp, .lds = nb, .w = w->data, .bias = w->bias, .m = 1, .nw = w->rows,
                           .k = w->cols};
            q8_panels_block_portable(&b);
        }
        return;
    }
    for (int r0 = 0; r0 < n; r0 += room->rows_cap) {
        int m = n - r0 < room->rows_cap ? n - r0 : room->rows_cap;
        mm_job J = {.y = y + (size_t)r0 * (size_t)w->rows, .n = m, .w = w, .e = e, .nt = e->n_threads,
                    .x_prep = x + (size_t)r0 * (size_t)w->cols, .room = room, .ti = ti};
        matmul_run(&J);
    }
}

/* matmul with x prepared in `room`, split over e's threads (ti = -1) or on thread ti alone. */
static void matmul_in(float *y, const float *x, int n, const strata_mat *w, exec *e, const x_room *room, int ti)
{
    if (n <= 0)
        return;
    if (w->dtype == ST_I8_PANELS) {
        matmul_int8(y, x, n, w, e, room, ti);
        return;
    }
    int bf16_ready = e->bf16 && (room->xb || room->xr) && w->cols <= e->widest_k;
    if (w->dtype == ST_BF16_PANELS && !e->isa->block_panels_f32) {
        matmul_panels_portable(y, x, n, w);
        return;
    }
    if (bf16_ready && (w->dtype == ST_BF16 || w->dtype == ST_BF16_PANELS)) {
        matmul_bf16(y, x, n, w, e, room, ti);
        return;
    }
    mm_job J = {.y = y, .x = x, .n = n, .w = w, .e = e, .nt = e->n_threads, .room = room, .ti = ti};
    matmul_run(&J);
}

void matmul(float *y, const float *x, int n, const strata_mat *w, exec *e)
{
    matmul_in(y, x, n, w, e, &e->room, -1);
}

void matmul_local(float *y, const float *x, int n, const strata_mat *w, exec *e, int ti)
{
    matmul_in(y, x, n, w, e, ti < 0 ? &e->room : &e->local[ti], ti < 0 ? -1 : ti);
}

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

void relu2_inplace(float *v, size_t n)
{
    size_t i = 0;
#if defined(__SSE2__)
    __m128 zero = _mm_setzero_ps();
    for (; i + 4 <= n; i += 4) {
        __m128 r = _mm_max_ps(_mm_loadu_ps(v + i), zero);
        _mm_storeu_ps(v + i, _mm_mul_ps(r, r));
    }
#endif
    for (; i < n; i++)
        v[i] = relu2(v[i]);
}

/* dot_f32's running sums combined, then the tail: the order every path keeps. */
static float dot_finish(const float s[8], const float *a, const float *b, int i, int n)
{
    float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; i < n; i++)
        t += a[i] * b[i];
    return t;
}

static float dot_f32_portable(const float *a, const float *b, int n)
{
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += a[i + k] * b[i + k];
    return dot_finish(s, a, b, i, n);
}

void rmsnorm_portable(float *out, const float *x, const float *w, int n, float eps)
{
    float ss = dot_f32_portable(x, x, n);
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++)
        out[i] = x[i] * inv * (w ? w[i] : 1.0f);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* The same sums as dot_f32_portable, its eight running sums the eight lanes of
 * one AVX vector (a multiply, then an add: no FMA), so the same bits. */
__attribute__((target("avx2"))) static float dot_f32_avx2(const float *a, const float *b, int n)
{
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    float s[8];
    _mm256_storeu_ps(s, acc);
    return dot_finish(s, a, b, i, n);
}

/* rmsnorm_portable eight values at a time, the same two multiplies per value. */
__attribute__((target("avx2"))) static void rmsnorm_avx2(float *out, const float *x, const float *w, int n,
                                                         float eps)
{
    float ss = dot_f32_avx2(x, x, n);
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    __m256 iv = _mm256_set1_ps(inv);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), iv);
        _mm256_storeu_ps(out + i, w ? _mm256_mul_ps(v, _mm256_loadu_ps(w + i)) : v);
    }
    for (; i < n; i++)
        out[i] = x[i] * inv * (w ? w[i] : 1.0f);
}

#else
#define dot_f32_avx2 dot_f32_portable
#define rmsnorm_avx2 rmsnorm_portable
#endif

float dot_f32(const float *a, const float *b, int n)
{
    return cpu_has_avx2() ? dot_f32_avx2(a, b, n) : dot_f32_portable(a, b, n);
}

void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    if (cpu_has_avx2())
        rmsnorm_avx2(out, x, w, n, eps);
    else
        rmsnorm_portable(out, x, w, n, eps);
}
