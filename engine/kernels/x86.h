/*
 * x86.h — what every x86 kernel file (fp32, bf16 and int8 tiles) shares: the lane
 * reductions of isa.h's summation order, which must fold lanes identically
 * everywhere — 16 → 8 (i + i+8, AVX-512 only), 8 → 4 (i + i+4), 4 → 2 (i + i+2),
 * 2 → 1 — and the software prefetch of W. Each carries the smallest target it
 * needs, so any kernel file can inline it.
 */
#ifndef STRATA_KERNELS_X86_H
#define STRATA_KERNELS_X86_H

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include <stddef.h>

/* Start fetching [p, p + bytes) toward the core, a cache line at a time (never
 * faults). Not T0: on a Zen 4 the batched-decode tiles (2–16 x rows) ran 1.3–2×
 * faster from DRAM with T2 than with T0 (the bf16 dot tiles of the time at 16 rows
 * 124–207 → 215–297 GFLOP/s, fp32 tiles at 4 rows 58–69 → 94–138 on two threads),
 * presumably because T0 fills evict the x rows the tile is still using from L1.
 * T1, not T2: on a Zen 5 the panel kernels at 16 x rows, weights from DRAM, best of
 * 12 alternating runs: in_proj 305 against 333 µs, the LM head 6.13 against 6.51 ms,
 * the rest the same or better, and 1 x row the same. */
static inline __attribute__((always_inline)) void prefetch_span(const char *p, size_t bytes)
{
    for (size_t off = 0; off < bytes; off += 64)
        _mm_prefetch(p + off, _MM_HINT_T1);
}

/* Step `step` of a prefetch spread over a walk: its `lines` cache lines from pf. */
static inline __attribute__((always_inline)) void prefetch_step(const char *pf, int step, int lines)
{
    prefetch_span(pf + (size_t)step * (size_t)lines * 64, (size_t)lines * 64);
}

static inline __attribute__((always_inline, target("avx"))) float reduce8(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); // i + i+4
    __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));                                // i + i+2
    return _mm_cvtss_f32(_mm_add_ss(b, _mm_shuffle_ps(b, b, 1)));                 // 0 + 1
}

static inline __attribute__((always_inline, target("avx512f"))) float reduce16(__m512 v)
{
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))); // i + i+8
    return reduce8(h);
}
#endif

#endif
