/*
 * cmd_bench.c — strata bench MODEL_DIR: how fast the engine runs a checkpoint on
 * this machine, and how that compares with what the machine can do.
 *
 *   engine:  prefill tok/s (one step of --prompt-tokens), time to first token,
 *            single-stream decode tok/s, aggregate decode tok/s with S sessions
 *            (each prefilled with --session-context tokens, default 16; then one
 *            strata_runner_step of S one-token sequences per step, the next
 *            tokens picked greedily by strata_runner_sample as the server does):
 *            each the best of --repeat 3 interleaved rounds; peak RSS
 *   machine: memory bandwidth (STREAM-style triad on the engine's thread count, and
 *            a read-only pass, which is what decode does),
 *            GEMM rate of our own matmul (BF16 weights) and of OpenBLAS sgemm
 *            and the FMA peak (independent FMA chains on every thread)
 *   ratios:  decode weight bytes/s ÷ bandwidth, prefill FLOP/s ÷ GEMM FLOP/s and
 *            ÷ FMA peak, and each aggregate decode ÷ its roofline: S tokens per
 *            step, a step moving the weights once plus every session's recurrent
 *            state in and out (and its K/V in), at the read-only bandwidth, and
 *            doing S tokens' multiply-adds at the peak — whichever takes longer
 *
 * Only config.json + weights are needed: prompts are fixed pseudo-random ids.
 * Reads internal kernel headers (kernels/kernels.h) to time the matmul alone.
 */
#include <cblas.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "core/error.h"
#include "core/huge.h"
#include "kernels/kernels.h"
#include "kernels/q8.h"

#define MAX_SESSIONS 16

typedef struct bench_opts {
    const char *model_dir;
    const char *compute;    /* "fp32", "bf16" or "int8" (strata_load_opts.compute) */
    int prompt, gen, threads, json, repeat;
    int context;            /* --session-context: each aggregate session's prompt */
    int sessions[MAX_SESSIONS], n_sessions;
    strata_load_opts load;  /* --weights native|int8 */
} bench_opts;

typedef struct bench_result {
    const char *kernel, *weights;
    int threads;
    int bf16, dot_bf16;     /* the bf16 compute mode; through BF16 dot products */
    int int8;               /* the int8 compute mode (VNNI dot products) */
    double prefill_tok_s, ttft_ms, decode_tok_s;    /* each the best of --repeat rounds */
    double aggregate[MAX_SESSIONS];
    double prefill_worst, decode_worst, aggregate_worst[MAX_SESSIONS];  /* the worst rounds */
    double bandwidth, read_bandwidth, gemm_ours, gemm_blas, fma_peak;
    const char *blas_core;
    double peak_rss_mib;
    double load_start, load_end;  /* 1-minute load average: other work on the machine */
    uint64_t weight_bytes, decode_bytes;    /* decode_bytes: what one token reads */
    double expert_bytes, expert_share;  /* all routed experts' bytes; the part a token uses (k / E) */
    double prefill_flops;   /* per prefill step */
    double decode_flops;    /* per decoded token: the matmuls' multiply-adds × 2 */
    double attn_flops_per_key;  /* per decoded token and key in its context: scores and sums × 2 */
    double state_bytes;     /* per session: conv + SSM state (read and written each step) */
    double kv_bytes_per_token;  /* per session and context token: K + V (read each step) */
} bench_result;

static int parse_sessions(const char *s, bench_opts *o)
{
    o->n_sessions = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096 || o->n_sessions == MAX_SESSIONS || (*end && *end != ','))
            return 0;
        o->sessions[o->n_sessions++] = (int)v;
        s = *end ? end + 1 : end;
    }
    return o->n_sessions > 0;
}

static int parse_opts(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){.prompt = 512, .gen = 128, .context = 16, .sessions = {1, 4, 16}, .n_sessions = 3, .repeat = 3,
                      .compute = "fp32"};
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(f, "--prompt-tokens") && has) {
            if (!cli_parse_int(argv[++i], 1, 1 << 20, &o->prompt))
                return cli_fail("bench", "--prompt-tokens needs a positive integer"), 0;
        } else if (!strcmp(f, "--gen-tokens") && has) {
            if (!cli_parse_int(argv[++i], 1, 1 << 20, &o->gen))
                return cli_fail("bench", "--gen-tokens needs a positive integer"), 0;
        } else if (!strcmp(f, "--session-context") && has) {
            if (!cli_parse_int(argv[++i], 1, 1 << 20, &o->context))
                return cli_fail("bench", "--session-context needs a positive integer"), 0;
        } else if (!strcmp(f, "--repeat") && has) {
            if (!cli_parse_int(argv[++i], 1, 100, &o->repeat))
                return cli_fail("bench", "--repeat needs an integer in [1, 100]"), 0;
        } else if (!strcmp(f, "--threads") && has) {
            if (!cli_parse_int(argv[++i], 0, 256, &o->threads))
                return cli_fail("bench", "--threads needs an integer in [0, 256]"), 0;
        } else if (!strcmp(f, "--sessions") && has) {
            if (!parse_sessions(argv[++i], o))
                return cli_fail("bench", "--sessions needs a list like 1,4,16 (at most %d values)", MAX_SESSIONS), 0;
        } else if (!strcmp(f, "--weights") && has) {
            strata_error err;
            if (strata_weights_parse(argv[++i], &o->load.weights, &err) != STRATA_OK)
                return cli_fail("bench", "--weights: %s", err.message), 0;
        } else if (!strcmp(f, "--compute") && has) {
            o->compute = o->load.compute = argv[++i];
        } else if (!strcmp(f, "--json")) {
            o->json = 1;
        } else if (f[0] == '-') {
            return cli_fail("bench", "unknown or incomplete option '%s'", f), 0;
        } else if (!o->model_dir) {
            o->model_dir = f;
        } else {
            return cli_fail("bench", "unexpected argument '%s'", f), 0;
        }
    }
    if (!o->model_dir)
        return cli_fail("bench", "missing MODEL_DIR"), 0;
    return 1;
}

/* ---------------------------------------------------------------- machine */

typedef struct triad_arg {
    float *a, *b, *c;
    size_t lo, hi;
    float sum;
} triad_arg;

static void *triad_part(void *varg)
{
    triad_arg *t = varg;
    for (size_t i = t->lo; i < t->hi; i++)
        t->a[i] = t->b[i] + 3.0f * t->c[i];
    return NULL;
}

/* The read-only pass a decode step makes over its weights: sum b in 8 lanes. */
static void *read_part(void *varg)
{
    triad_arg *t = varg;
    float s[8] = {0};
    for (size_t i = t->lo; i + 8 <= t->hi; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += t->b[i + (size_t)k];
    t->sum = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
    return NULL;
}

/* STREAM triad a = b + s·c over 3 × 128 MiB on n threads; best of 5, in bytes/s
 * (12 bytes per element, write-allocate not counted, as STREAM reports). */
static double stream_bandwidth(int n_threads, void *(*part)(void *), double bytes_per_elem)
{
    /* on huge pages like the weights (core/huge.h), so the bandwidth is not measured
     * through 4 KiB-page TLB misses the weights never take */
    size_t n = (size_t)32 << 20, la, lb, lc;
    float *a = huge_zalloc(n * sizeof *a, &la), *b = huge_zalloc(n * sizeof *b, &lb), *c = huge_zalloc(n * sizeof *c, &lc);
    double best = 0;
    if (a && b && c) {
        for (size_t i = 0; i < n; i++)
            a[i] = 0.0f, b[i] = 1.0f, c[i] = 2.0f;
        pthread_t th[256];
        triad_arg args[256];
        for (int rep = 0; rep < 5; rep++) {
            double t0 = cli_now();
            for (int t = 0; t < n_threads; t++) {
                args[t] = (triad_arg){a, b, c, n * (size_t)t / (size_t)n_threads,
                                      n * (size_t)(t + 1) / (size_t)n_threads, 0.0f};
                if (t && pthread_create(&th[t], NULL, part, &args[t]) != 0)
                    part(&args[t]), th[t] = 0;
            }
            part(&args[0]);
            for (int t = 1; t < n_threads; t++)
                if (th[t])
                    pthread_join(th[t], NULL);
            double bw = bytes_per_elem * (double)n / (cli_now() - t0);
            best = bw > best ? bw : best;
        }
    }
    huge_free(a, la);
    huge_free(b, lb);
    huge_free(c, lc);
    return best;
}

#define GEMM_M 512
#define GEMM_N 4096
#define GEMM_K 1024

/* m (BF16, rows × cols at w) quantized into int8 panels (kernels/q8.h), malloc'd
 * into m->data; 0 on success. */
static int int8_panels_of(strata_mat *m, const uint16_t *w)
{
    strata_error err;
    uint8_t *p = calloc(1, q8_panels_bytes(m->rows, m->cols));
    if (!p || q8_quantize_panels(w, ST_BF16, m->rows, m->cols, 0, m->rows, p, "gemm", &err) != STRATA_OK) {
        free(p);
        return -1;
    }
    m->data = p;
    m->dtype = ST_I8_PANELS;
    return 0;
}

/* Our matmul on (512 × 1024) · (4096 × 1024 BF16)ᵀ, through an exec like the
 * runner's, in the compute mode benchmarked (its W in panels where the model's
 * are: kernels/isa.h); FLOP/s. */
static double gemm_ours(int n_threads, int bf16, int int8)
{
    exec e;
    strata_error err;
    float *x = malloc(sizeof(float) * GEMM_M * GEMM_K), *y = malloc(sizeof(float) * GEMM_M * GEMM_N);
    uint16_t *w = malloc(2 * (size_t)GEMM_N * GEMM_K), *panels = NULL;
    double rate = 0;
    int ready = x && y && w && exec_init(&e, n_threads, GEMM_K, &err) == STRATA_OK;
    if (ready && (exec_set_bf16(&e, bf16, &err) != STRATA_OK || exec_set_int8(&e, int8, &err) != STRATA_OK ||
                  exec_reserve(&e, GEMM_M, &err) != STRATA_OK)) {
        exec_destroy(&e);
        ready = 0;
    }
    if (ready) {
        for (size_t i = 0; i < (size_t)GEMM_M * GEMM_K; i++)
            x[i] = (float)(i % 13) * 0.01f;
        for (size_t i = 0; i < (size_t)GEMM_N * GEMM_K; i++)
            w[i] = 0x3c00 + (uint16_t)(i % 97);      /* bf16 values near 0.01 */
        strata_mat m = {.data = w, .dtype = ST_BF16, .rows = GEMM_N, .cols = GEMM_K};
        if (int8) {
            ready = int8_panels_of(&m, w) == 0;
            panels = ready ? (uint16_t *)(void *)m.data : NULL;    /* freed below */
        } else if (e.isa->block_panels_f32 && (panels = calloc(bf16_panels_elems(GEMM_N, GEMM_K), sizeof *panels))) {
            bf16_panels_pack(panels, w, GEMM_N, GEMM_K, 0, GEMM_N);
            m.data = panels;
            m.dtype = ST_BF16_PANELS;
        }
        if (!ready) {
            exec_destroy(&e);
            goto done;
        }
        matmul(y, x, GEMM_M, &m, &e);
        int reps = 0;
        double t0 = cli_now(), t;
        do {
            matmul(y, x, GEMM_M, &m, &e);
            reps++;
        } while ((t = cli_now() - t0) < 1.0);
        rate = 2.0 * GEMM_M * GEMM_N * GEMM_K * reps / t;
        exec_destroy(&e);
    }
done:
    free(x);
    free(y);
    free(w);
    free(panels);
    return rate;
}

/* OpenBLAS sgemm on the same shape in fp32; FLOP/s. */
static double gemm_blas(int n_threads)
{
    float *x = malloc(sizeof(float) * GEMM_M * GEMM_K), *y = malloc(sizeof(float) * GEMM_M * GEMM_N);
    float *w = malloc(sizeof(float) * GEMM_N * GEMM_K);
    double rate = 0;
    if (x && y && w) {
        for (size_t i = 0; i < (size_t)GEMM_M * GEMM_K; i++)
            x[i] = (float)(i % 13) * 0.01f;
        for (size_t i = 0; i < (size_t)GEMM_N * GEMM_K; i++)
            w[i] = (float)(i % 97) * 0.001f;
        openblas_set_num_threads(n_threads);
        int reps = 0;
        double t0 = cli_now(), t;
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, GEMM_M, GEMM_N, GEMM_K, 1.0f, x, GEMM_K, w,
                        GEMM_K, 0.0f, y, GEMM_N);
            reps++;
        } while ((t = cli_now() - t0) < 1.0);
        rate = 2.0 * GEMM_M * GEMM_N * GEMM_K * reps / t;
    }
    free(x);
    free(y);
    free(w);
    return rate;
}

/* The FMA roofline: independent multiply-add chains (enough to cover the FMA
 * latency on every pipe) on each thread at once, in the widest vectors the
 * engine's kernel path uses; FLOP/s summed over threads, best of 3. */
#define PEAK_ITERS 20000000L
#if defined(__x86_64__) && defined(__GNUC__)
/* N chains of `a = a·x + y` in BYTES-wide vectors; contracted to FMA instructions. */
#define FMA_CHAINS(NAME, TARGET, BYTES, N)                                                  \
    __attribute__((target(TARGET), optimize("fp-contract=fast"))) static float NAME(void)  \
    {                                                                                       \
        typedef float vec __attribute__((vector_size(BYTES)));                              \
        vec a[N], x = (vec){0} + 0.999f, y = (vec){0} + 1e-3f;                              \
        for (int i = 0; i < N; i++)                                                         \
            a[i] = (vec){0} + (float)i;                                                     \
        for (long n = 0; n < PEAK_ITERS; n++) {                                             \
            _Pragma("GCC unroll 32") for (int i = 0; i < N; i++) a[i] = a[i] * x + y;       \
        }                                                                                   \
        float s = 0;                                                                        \
        for (int i = 0; i < N; i++)                                                         \
            s += a[i][0];                                                                   \
        return s;                                                                           \
    }
FMA_CHAINS(fma_chains_avx2, "avx2,fma", 32, 12)
FMA_CHAINS(fma_chains_avx512, "avx512f", 64, 24)

/* The int8 compute mode's roofline: 24 chains of VPDPBUSD (64 multiply-adds each),
 * in assembly: GCC 12 copies and spills a chain of VPDPBUSD intrinsics (it read 707
 * GOP/s of a 1840 peak here). */
#define CHAINS24(X) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) X(17) \
    X(18) X(19) X(20) X(21) X(22) X(23) X(24) X(25)
#define DPBUSD(r) "vpdpbusd %%zmm1, %%zmm0, %%zmm" #r "\n\t"
#define CLOBBER(r) "xmm" #r,
__attribute__((target("avx512f,avx512vnni"))) static float dot_chains_int8(void)
{
    long n = PEAK_ITERS;
    __asm__ volatile("vpternlogd $0xff, %%zmm0, %%zmm0, %%zmm0\n\t"
                     "vpabsb %%zmm0, %%zmm1\n\t"
                     "1:\n\t" CHAINS24(DPBUSD) "dec %0\n\t"
                     "jnz 1b\n\t"
                     : "+r"(n)
                     :
                     : CHAINS24(CLOBBER) "xmm0", "xmm1", "cc");
    return (float)n;
}

/* The bf16 compute mode's roofline: 24 chains of VDPBF16PS (64 FLOP each). */
__attribute__((target("avx512f,avx512bf16"))) static float dot_chains_bf16(void)
{
    __m512 a[24];
    __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f7f3f7f), y = (__m512bh)_mm512_set1_epi32(0x3a833a83);
    for (int i = 0; i < 24; i++)
        a[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < PEAK_ITERS; n++) {
#pragma GCC unroll 24
        for (int i = 0; i < 24; i++)
            a[i] = _mm512_dpbf16_ps(a[i], x, y);
    }
    float s = 0;
    for (int i = 0; i < 24; i++)
        s += _mm512_cvtss_f32(a[i]);
    return s;
}
#endif

typedef enum peak_kind { PEAK_FMA_AVX2, PEAK_FMA_AVX512, PEAK_DOT_BF16, PEAK_DOT_INT8 } peak_kind;

typedef struct peak_arg {
    peak_kind kind;
    double flops, sink;
} peak_arg;

static void *peak_part(void *varg)
{
    peak_arg *p = varg;
    p->flops = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (p->kind == PEAK_DOT_INT8)
        p->sink = dot_chains_int8(), p->flops = 24.0 * 128.0 * PEAK_ITERS;
    else if (p->kind == PEAK_DOT_BF16)
        p->sink = dot_chains_bf16(), p->flops = 24.0 * 64.0 * PEAK_ITERS;
    else if (p->kind == PEAK_FMA_AVX512)
        p->sink = fma_chains_avx512(), p->flops = 24.0 * 32.0 * PEAK_ITERS;
    else
        p->sink = fma_chains_avx2(), p->flops = 12.0 * 16.0 * PEAK_ITERS;
#endif
    return NULL;
}

/* The multiply-add roofline of the matmuls benchmarked: the int8 dot product's in
 * the int8 compute mode, the BF16 dot product's in the bf16 compute mode where the
 * CPU has it, else the kernel path's FMA; 0 where there is none (portable). */
static double fma_peak(int n_threads, const char *kernel, int dot_bf16, int int8)
{
    if (strcmp(kernel, "avx2") && strcmp(kernel, "avx512"))
        return 0;
    peak_kind kind = int8       ? PEAK_DOT_INT8
                     : dot_bf16 ? PEAK_DOT_BF16
                     : !strcmp(kernel, "avx512") ? PEAK_FMA_AVX512 : PEAK_FMA_AVX2;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        pthread_t th[256];
        peak_arg args[256];
        double t0 = cli_now();
        for (int t = 0; t < n_threads; t++) {
            args[t] = (peak_arg){.kind = kind};
            if (t && pthread_create(&th[t], NULL, peak_part, &args[t]) != 0)
                peak_part(&args[t]), th[t] = 0;
        }
        peak_part(&args[0]);
        for (int t = 1; t < n_threads; t++)
            if (th[t])
                pthread_join(th[t], NULL);
        double rate = args[0].flops * n_threads / (cli_now() - t0);
        best = rate > best ? rate : best;
    }
    return best;
}

/* ---------------------------------------------------------------- engine */

/* Fixed pseudo-random prompt ids in [3, vocab). */
static void fill_prompt(int32_t *ids, int n, int vocab, uint32_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = 3 + (int32_t)((seed >> 8) % (uint32_t)(vocab > 3 ? vocab - 3 : 1));
    }
}

/* `gen` decode steps of the S sequences, each continuing from its logits: the next
 * tokens picked greedily by the engine's sampler, all rows at once on the runner's
 * threads, as the server's scheduler does. The seconds the steps took. */
static strata_status decode_steps(strata_runner *run, strata_seq *seqs, int S, int gen, int vocab, double *seconds,
                                  strata_error *err)
{
    strata_sampler **samplers = calloc((size_t)S, sizeof *samplers);
    const float **rows = calloc((size_t)S, sizeof *rows);
    strata_sample *picked = calloc((size_t)S, sizeof *picked);
    int32_t *next = calloc((size_t)S, sizeof *next);
    strata_status s = samplers && rows && picked && next ? STRATA_OK
                    : strata_fail(err, STRATA_E_NOMEM, "out of memory");
    strata_sampling greedy;
    strata_sampling_default(&greedy);
    greedy.temperature = 0;
    greedy.skip_logprob = 1;
    for (int q = 0; s == STRATA_OK && q < S; q++) {
        s = strata_sampler_new(&greedy, vocab, &samplers[q], err);
        rows[q] = seqs[q].logits;
    }
    double t0 = cli_now();
    for (int i = 0; s == STRATA_OK && i < gen; i++) {
        s = strata_runner_sample(run, samplers, rows, picked, S, err);
        for (int q = 0; s == STRATA_OK && q < S; q++) {
            next[q] = picked[q].token;
            seqs[q].tokens = &next[q];
            seqs[q].n_tokens = 1;
        }
        if (s == STRATA_OK)
            s = strata_runner_step(run, seqs, S, err);
    }
    *seconds = cli_now() - t0;
    for (int q = 0; samplers && q < S; q++)
        strata_sampler_free(samplers[q]);
    free(samplers);
    free(rows);
    free(picked);
    free(next);
    return s;
}

/* S sessions each prefilled with `prompt` tokens, then `gen` steps of S one-token
 * sequences; returns aggregate decode tokens/s. */
static strata_status run_sessions(strata_model *model, strata_runner *run, int S, int prompt, int gen,
                                  double *tok_s, strata_error *err)
{
    int vocab = strata_model_get_info(model)->vocab_size;
    strata_cache **caches = calloc((size_t)S, sizeof *caches);
    strata_seq *seqs = calloc((size_t)S, sizeof *seqs);
    int32_t *ids = malloc(sizeof *ids * (size_t)S * (size_t)(prompt > 1 ? prompt : 1));
    float *logits = malloc(sizeof *logits * (size_t)S * (size_t)vocab);
    strata_status s = caches && seqs && ids && logits ? STRATA_OK
                    : strata_fail(err, STRATA_E_NOMEM, "out of memory");
    for (int q = 0; s == STRATA_OK && q < S; q++) {
        s = strata_cache_new(model, &caches[q], err);
        fill_prompt(ids + (size_t)q * (size_t)prompt, prompt, vocab, 77u + (uint32_t)q);
        seqs[q] = (strata_seq){.cache = caches[q], .tokens = ids + (size_t)q * (size_t)prompt, .n_tokens = prompt,
                               .logits = logits + (size_t)q * (size_t)vocab};
    }
    if (s == STRATA_OK)
        s = strata_runner_step(run, seqs, S, err);
    double seconds = 0;
    if (s == STRATA_OK)
        s = decode_steps(run, seqs, S, gen, vocab, &seconds, err);
    *tok_s = (double)S * gen / seconds;
    for (int q = 0; caches && q < S; q++)
        strata_cache_free(caches[q]);
    free(caches);
    free(seqs);
    free(ids);
    free(logits);
    return s;
}

/* One prefill of o->prompt tokens into a fresh cache, then o->gen single-stream
 * decode steps from it; the seconds each took. The cache is freed before the
 * aggregate runs, so peak RSS stays the weights plus their sessions' state. */
static strata_status run_single(strata_model *model, strata_runner *run, const int32_t *ids, float *logits,
                                const bench_opts *o, double *t_prefill, double *t_decode, strata_error *err)
{
    strata_cache *cache = NULL;
    STRATA_TRY(strata_cache_new(model, &cache, err));
    strata_seq seq = {.cache = cache, .tokens = ids, .n_tokens = o->prompt, .logits = logits};
    int vocab = strata_model_get_info(model)->vocab_size;
    double t0 = cli_now();
    strata_status s = strata_runner_step(run, &seq, 1, err);
    *t_prefill = cli_now() - t0;
    if (s == STRATA_OK)
        s = decode_steps(run, &seq, 1, o->gen, vocab, t_decode, err);
    strata_cache_free(cache);
    return s;
}

/* Keep the best and the worst of each round's figure (higher is better). */
static void keep_range(double v, int round, double *best, double *worst)
{
    if (!round || v > *best)
        *best = v;
    if (!round || v < *worst)
        *worst = v;
}

/* Warm-up (touch every weight page), then --repeat rounds, each a prefill into a
 * fresh cache, single-stream decode from it and every aggregate run; each figure
 * is the best over the rounds. The machine may be shared: interleaving the rounds
 * puts every figure, and so every ratio between them, under the same conditions. */
static strata_status run_engine(strata_model *model, strata_runner *run, const bench_opts *o, bench_result *r,
                                strata_error *err)
{
    int vocab = strata_model_get_info(model)->vocab_size;
    double tmp;
    STRATA_TRY(run_sessions(model, run, 1, 8, 1, &tmp, err));
    int32_t *ids = malloc(sizeof *ids * (size_t)o->prompt);
    float *logits = malloc(sizeof *logits * (size_t)vocab);
    strata_status s = ids && logits ? STRATA_OK : strata_fail(err, STRATA_E_NOMEM, "out of memory");
    if (ids)
        fill_prompt(ids, o->prompt, vocab, 12345u);
    for (int rep = 0; s == STRATA_OK && rep < o->repeat; rep++) {
        double t_prefill, t_decode;
        s = run_single(model, run, ids, logits, o, &t_prefill, &t_decode, err);
        if (s != STRATA_OK)
            break;
        keep_range(o->prompt / t_prefill, rep, &r->prefill_tok_s, &r->prefill_worst);
        keep_range(o->gen / t_decode, rep, &r->decode_tok_s, &r->decode_worst);
        for (int i = 0; s == STRATA_OK && i < o->n_sessions; i++) {
            s = run_sessions(model, run, o->sessions[i], o->context, o->gen, &tmp, err);
            keep_range(tmp, rep, &r->aggregate[i], &r->aggregate_worst[i]);
        }
    }
    r->ttft_ms = 1e3 * o->prompt / r->prefill_tok_s;
    free(ids);
    free(logits);
    return s;
}

/* Bytes a one-token decode step streams (every matrix but the embedding table,
 * which is only gathered; of the routed experts, the k of E a token uses) and a
 * prefill step's matmul FLOPs. */
static void model_costs(const strata_model_info *m, int prompt, bench_result *r)
{
    uint64_t embed = (uint64_t)m->vocab_size * (uint64_t)m->hidden_size;
    r->weights = m->weights;
    r->weight_bytes = m->weight_bytes;
    r->expert_bytes = (double)m->expert_bytes;
    r->expert_share = m->expert_bytes ? (double)m->experts_per_tok / m->n_experts : 0;
    double idle = m->expert_bytes ? 1.0 - r->expert_share : 0;
    r->decode_bytes = m->matmul_bytes - (uint64_t)(idle * (double)m->expert_bytes);
    /* every parameter a token uses but the embedding's is a multiply-add per prompt
     * token, except the LM head, which runs for the last token only */
    double body = (double)(m->active_params - (m->tie_word_embeddings ? 1 : 2) * embed);
    double attn = 0;
    for (int i = 0; i < m->n_layers; i++)
        if (m->pattern[i] == '*') {
            attn += 2.0 * (double)m->attn_heads * m->head_dim * (double)prompt * (prompt + 1) / 2.0;
            r->attn_flops_per_key += 4.0 * (double)m->attn_heads * m->head_dim;
        }
    r->prefill_flops = 2.0 * body * prompt + 2.0 * (double)embed + 2.0 * attn;
    r->decode_flops = 2.0 * (body + (double)embed);
    r->state_bytes = (double)m->state_bytes_fixed;              /* as the compute mode keeps it */
    r->kv_bytes_per_token = (double)m->state_bytes_per_token;
}

/* The mean context of an aggregate run's decode steps: --session-context, then
 * `gen` tokens. */
static double mean_context(const bench_opts *o)
{
    return o->context + o->gen / 2.0;
}

/* Bytes a decode step of S sessions moves (K/V at the mean context): the weights
 * once — of the routed experts, the share S tokens touch when each picks k of E
 * independently, 1 - (1 - k/E)^S — each session's recurrent state read and
 * written, its K/V read. */
static double step_bytes(const bench_result *r, const bench_opts *o, int S)
{
    double ctx = mean_context(o), touched = 1.0 - pow(1.0 - r->expert_share, S);
    return (double)r->decode_bytes + (touched - r->expert_share) * r->expert_bytes +
           S * (2.0 * r->state_bytes + ctx * r->kv_bytes_per_token);
}

/* FLOPs of one session's decode step: its matmuls, and attention at the mean
 * context. */
static double step_flops(const bench_result *r, const bench_opts *o)
{
    return r->decode_flops + r->attn_flops_per_key * mean_context(o);
}

/* Tokens/s that S sessions could reach on this machine: S over the longer of the
 * step's traffic at the read-only bandwidth and its FLOPs at the peak (the
 * traffic alone where no peak was measured). */
static double aggregate_bound(const bench_result *r, const bench_opts *o, int S)
{
    double t_mem = step_bytes(r, o, S) / r->read_bandwidth;
    double t_flop = r->fma_peak > 0 ? S * step_flops(r, o) / r->fma_peak : 0;
    return S / (t_mem > t_flop ? t_mem : t_flop);
}

/* The 1-minute load average (-1 where /proc/loadavg is missing). */
static double load_average(void)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double v = -1;
    if (f) {
        if (fscanf(f, "%lf", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static void print_text(const bench_opts *o, const bench_result *r)
{
    printf("engine: kernel %s, %d threads, %s weights, compute %s (load average %.2f before, %.2f after)\n", r->kernel,
           r->threads, r->weights, r->int8 ? "int8 (AVX512_VNNI dot products)" : r->bf16 ? r->dot_bf16 ? "bf16 (AVX512_BF16 dot products)" : "bf16 (x rounded, fp32 FMA)" : "fp32",
           r->load_start, r->load_end);
    printf("engine figures: the best of %d interleaved rounds (the worst in brackets)\n", o->repeat);
    printf("prefill: %d tokens, %.1f tok/s [%.1f] (time to first token %.1f ms)\n", o->prompt, r->prefill_tok_s,
           r->prefill_worst, r->ttft_ms);
    printf("decode: %.2f tok/s [%.2f] single stream (%d tokens)\n", r->decode_tok_s, r->decode_worst, o->gen);
    for (int i = 0; i < o->n_sessions; i++)
        printf("aggregate decode, %d sessions: %.2f tok/s [%.2f] (%.2fx single; each from %d tokens of context)\n",
               o->sessions[i], r->aggregate[i], r->aggregate_worst[i], r->aggregate[i] / r->decode_tok_s, o->context);
    printf("peak RSS: %.1f MiB; weights %.1f MiB, %.1f MiB streamed per decode step\n", r->peak_rss_mib,
           (double)r->weight_bytes / 1048576.0, (double)r->decode_bytes / 1048576.0);
    printf("machine: triad bandwidth %.2f GB/s, read-only %.2f GB/s (%d threads)\n", r->bandwidth / 1e9,
           r->read_bandwidth / 1e9, r->threads);
    printf("machine: GEMM %dx%dx%d: ours (%s W, %s compute) %.1f GFLOP/s, OpenBLAS sgemm %.1f GFLOP/s (core %s)\n",
           GEMM_M, GEMM_N, GEMM_K, r->int8 ? "int8" : "bf16", r->int8 ? "int8" : r->bf16 ? "bf16" : "fp32", r->gemm_ours / 1e9, r->gemm_blas / 1e9, r->blas_core);
    double bound = r->bandwidth / (double)r->decode_bytes;
    printf("ratio: decode weight bytes/s / bandwidth = %.3f (bandwidth bound %.2f tok/s); / read-only bandwidth = %.3f\n",
           r->decode_tok_s * (double)r->decode_bytes / r->bandwidth, bound,
           r->decode_tok_s * (double)r->decode_bytes / r->read_bandwidth);
    printf("ratio: prefill FLOP/s / our GEMM FLOP/s = %.3f (prefill %.1f GFLOP/s; vs OpenBLAS %.3f)\n",
           r->prefill_flops * r->prefill_tok_s / o->prompt / r->gemm_ours,
           r->prefill_flops * r->prefill_tok_s / o->prompt / 1e9,
           r->prefill_flops * r->prefill_tok_s / o->prompt / r->gemm_blas);
    double one = aggregate_bound(r, o, 1);
    for (int i = 0; i < o->n_sessions; i++) {
        int S = o->sessions[i];
        double b = aggregate_bound(r, o, S);
        printf("ratio: aggregate decode, %d sessions / its roofline %.1f tok/s = %.3f (the roofline allows %.2fx "
               "one session's; %.1f MiB moved and %.2f GFLOP per step)\n", S, b, r->aggregate[i] / b, b / one,
               step_bytes(r, o, S) / 1048576.0, S * step_flops(r, o) / 1e9);
    }
    if (r->fma_peak > 0)
        printf("ratio: vs the %s peak %.1f GFLOP/s (%s, %d threads): prefill %.3f, our GEMM %.3f, OpenBLAS %.3f\n",
               r->int8 ? "int8 dot-product" : r->dot_bf16 ? "BF16 dot-product" : "FMA", r->fma_peak / 1e9, r->kernel, r->threads, r->prefill_flops * r->prefill_tok_s / o->prompt / r->fma_peak,
               r->gemm_ours / r->fma_peak, r->gemm_blas / r->fma_peak);
}

/* ,"KEY":{"S":v,...} over the --sessions values, v[i] for the i-th. */
static void print_by_sessions(const bench_opts *o, const char *key, const double *v)
{
    printf(",\"%s\":{", key);
    for (int i = 0; i < o->n_sessions; i++)
        printf(i ? ",\"%d\":%.3f" : "\"%d\":%.3f", o->sessions[i], v[i]);
    printf("}");
}

static void print_json(const bench_opts *o, const bench_result *r)
{
    double pf = r->prefill_flops * r->prefill_tok_s / o->prompt, ratio[MAX_SESSIONS], bound[MAX_SESSIONS];
    double bytes[MAX_SESSIONS];
    for (int i = 0; i < o->n_sessions; i++) {
        ratio[i] = r->aggregate[i] / r->decode_tok_s;
        bound[i] = aggregate_bound(r, o, o->sessions[i]);
        bytes[i] = step_bytes(r, o, o->sessions[i]);
    }
    printf("{\"model_dir\":\"%s\",\"kernel\":\"%s\",\"weights\":\"%s\",\"threads\":%d,\"compute\":\"%s\",\"prompt_tokens\":%d,\"gen_tokens\":%d,"
           "\"session_context\":%d,\"prefill_tok_s\":%.3f,\"ttft_ms\":%.3f,\"decode_tok_s\":%.3f",
           o->model_dir, r->kernel, r->weights, r->threads, o->compute, o->prompt, o->gen, o->context, r->prefill_tok_s,
           r->ttft_ms, r->decode_tok_s);
    print_by_sessions(o, "aggregate_decode_tok_s", r->aggregate);
    print_by_sessions(o, "aggregate_vs_single", ratio);
    print_by_sessions(o, "aggregate_roofline_tok_s", bound);
    print_by_sessions(o, "aggregate_step_bytes", bytes);
    printf(",\"repeat\":%d,\"prefill_tok_s_worst\":%.3f,\"decode_tok_s_worst\":%.3f", o->repeat, r->prefill_worst,
           r->decode_worst);
    print_by_sessions(o, "aggregate_decode_tok_s_worst", r->aggregate_worst);
    printf(",\"peak_rss_mib\":%.1f,\"weight_bytes\":%llu,\"decode_bytes_per_token\":%llu,"
           "\"bandwidth_gb_s\":%.3f,\"read_bandwidth_gb_s\":%.3f,\"gemm_gflop_s\":%.2f,\"openblas_gemm_gflop_s\":%.2f,\"openblas_core\":\"%s\","
           "\"decode_bandwidth_ratio\":%.4f,\"prefill_gemm_ratio\":%.4f,\"fma_peak_gflop_s\":%.2f,\"loadavg_before\":%.2f,\"loadavg_after\":%.2f}\n",
           r->peak_rss_mib, (unsigned long long)r->weight_bytes, (unsigned long long)r->decode_bytes,
           r->bandwidth / 1e9, r->read_bandwidth / 1e9, r->gemm_ours / 1e9, r->gemm_blas / 1e9, r->blas_core,
           r->decode_tok_s * (double)r->decode_bytes / r->bandwidth, pf / r->gemm_ours, r->fma_peak / 1e9, r->load_start,
           r->load_end);
}

int cli_bench(int argc, char **argv)
{
    bench_opts o;
    if (!parse_opts(argc, argv, &o))
        return 1;
    strata_error err;
    strata_model *model = NULL;
    strata_runner *run = NULL;
    bench_result r = {0};
    if (strata_model_load_with(o.model_dir, &o.load, &model, &err) != STRATA_OK ||
        strata_model_set_compute(model, o.compute, &err) != STRATA_OK ||
        strata_runner_new(model, &run, &err) != STRATA_OK ||
        (o.threads && strata_runner_set_threads(run, o.threads, &err) != STRATA_OK)) {
        strata_runner_free(run);
        strata_model_free(model);
        return cli_fail_err("bench", &err);
    }
    r.kernel = strata_runner_kernel(run);
    r.threads = strata_runner_threads(run);
    r.bf16 = !strcmp(o.compute, "bf16");
    r.dot_bf16 = r.bf16 && kernel_bf16_dot(kernel_by_name(r.kernel));
    r.int8 = !strcmp(o.compute, "int8");
    model_costs(strata_model_get_info(model), o.prompt, &r);
    r.load_start = load_average();
    strata_status s = run_engine(model, run, &o, &r, &err);
    r.peak_rss_mib = peak_rss_mib();
    strata_runner_free(run);
    strata_model_free(model);
    if (s != STRATA_OK)
        return cli_fail_err("bench", &err);
    r.bandwidth = stream_bandwidth(r.threads, triad_part, 12.0);
    r.read_bandwidth = stream_bandwidth(r.threads, read_part, 4.0);
    r.gemm_ours = gemm_ours(r.threads, r.bf16, r.int8);
    r.gemm_blas = gemm_blas(r.threads);
    r.blas_core = openblas_get_corename();
    r.fma_peak = fma_peak(r.threads, r.kernel, r.dot_bf16, r.int8);
    r.load_end = load_average();
    if (o.json)
        print_json(&o, &r);
    else
        print_text(&o, &r);
    return 0;
}
