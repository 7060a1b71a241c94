/*
 * activation.c — SiLU over arrays, the Mamba mixer's elementwise hot spot (the conv
 * output and the gate, 6144 values per token and layer on the 470 M shape). A call
 * to libm's expf per value cost as much as the conv itself; here e^x is evaluated
 * in double precision, 8 (AVX-512) or 4 (AVX2) lanes at a time, and rounded to
 * float once. The SiLU is then computed in float as before: x / (1 + e^-x). Each
 * kernel path (isa.h) points its silu / silu_mul here.
 *
 * Accuracy: the double evaluation is within ~1e-14 of e^x, so the float it rounds to
 * is the correctly rounded expf(x) except within ~1e-14 of a rounding midpoint.
 * glibc's expf is within 0.502 ulp: on 2^20 inputs from -110 to 100 the SiLU over
 * it differs on 277 (0.03 %), and on every one of them ours is the one over the
 * correctly rounded e^x (tests/test_kernels.c).
 *
 * Attention's softmax takes its e^x from here too (softmax_*), for the same reason:
 * libm's expf was the largest part of a long context's attention.
 *
 * Every path does the same IEEE operations in the same order (multiplies and adds,
 * never fused), and tails go through the scalar path, so the bits depend on neither
 * the kernel path nor where a value sits in the array.
 */
#include <float.h>
#include <stdint.h>
#include <string.h>

#include "kernels/isa.h"
#include "kernels/kernels.h"

/* e^x = 2^n · e^r, x = n·ln2 + r, |r| <= ln2/2 (Cody-Waite: ln2 split so n·ln2_hi
 * is exact); e^r by its Taylor series to r^11 (truncation under 1e-14 relative);
 * 2^n built in the exponent bits from k = x/ln2 + 1.5·2^52, whose low bits hold
 * 2^51 + n. x is clamped to [-104, 89] first: e^x still rounds to 0 or +inf in
 * float as expf does, and 2^n stays a normal double. NaN passes through. */
#define EXP_LO (-104.0)
#define EXP_HI 89.0
#define EXP_LOG2E 0x1.71547652b82fep0
#define EXP_SHIFT 0x1.8p52
#define EXP_LN2_HI 0x1.62e42fee00000p-1
#define EXP_LN2_LO 0x1.a39ef35793c76p-33
#define EXP_TERMS 12
/* 1/k! for k = 11 down to 0, Horner's order */
static const double inv_fact[EXP_TERMS] = {1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880, 1.0 / 40320,
                                           1.0 / 5040,     1.0 / 720,     1.0 / 120,    1.0 / 24,
                                           1.0 / 6,        0.5,           1.0,          1.0};

static double exp_scalar(double x)
{
    x = x < EXP_LO ? EXP_LO : x;
    x = x > EXP_HI ? EXP_HI : x;
    double k = x * EXP_LOG2E + EXP_SHIFT, n = k - EXP_SHIFT;
    double r = (x - n * EXP_LN2_HI) - n * EXP_LN2_LO, p = r * inv_fact[0] + inv_fact[1], scale;
    for (int i = 2; i < EXP_TERMS; i++)
        p = p * r + inv_fact[i];
    uint64_t bits;
    memcpy(&bits, &k, sizeof bits);
    bits = (bits + 1023) << 52;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static float silu_scalar(float x)
{
    return x / (1.0f + (float)exp_scalar(-(double)x));
}

void silu_portable(float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = silu_scalar(v[i]);
}

void silu_mul_portable(float *y, const float *z, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] *= silu_scalar(z[i]);
}

/* p[0..n) ← softmax: m = the largest p (NaNs skipped), e = e^(p − m) (the float
 * difference, this file's e^x rounded to float), each e divided by their sum. The
 * sum keeps 8 running sums (element t in sum t mod 8, in increasing t), folds them
 * ((s0+s4) + (s1+s5)) + ((s2+s6) + (s3+s7)) and adds the elements past the last 8
 * in order: on the vector paths the 8 sums are the lanes of one vector. */
/* The larger of m and p[t..n) (a NaN never wins the compare). */
static float softmax_max(const float *p, int t, int n, float m)
{
    for (; t < n; t++)
        m = p[t] > m ? p[t] : m;
    return m;
}

static void softmax_rest(float *p, int n, float m, int t)
{
    for (; t < n; t++)
        p[t] = (float)exp_scalar((double)(p[t] - m));
}

/* The sum from its 8 running sums s, the elements from t on after them. */
static float softmax_fold(const float s[8], const float *p, int t, int n)
{
    float sum = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; t < n; t++)
        sum += p[t];
    return sum;
}

static float softmax_sum(const float *p, int n)
{
    float s[8] = {0};
    int t = 0;
    for (; t + 8 <= n; t += 8)
        for (int j = 0; j < 8; j++)
            s[j] += p[t + j];
    return softmax_fold(s, p, t, n);
}

void softmax_portable(float *p, int n)
{
    float m = softmax_max(p, 0, n, -FLT_MAX);
    softmax_rest(p, n, m, 0);
    float sum = softmax_sum(p, n);
    for (int t = 0; t < n; t++)
        p[t] /= sum;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* The same steps on vectors: max/min return their second operand when either is
 * NaN, so a NaN x passes the clamp as in exp_scalar. */
#define EXP_VECTOR(NAME, TARGET, VD, VI, P, AS_INT, AS_DOUBLE, SET1_I64)                           \
    static inline __attribute__((always_inline, target(TARGET))) VD NAME(VD x)                     \
    {                                                                                               \
        x = P##_min_pd(P##_set1_pd(EXP_HI), P##_max_pd(P##_set1_pd(EXP_LO), x));                   \
        VD k = P##_add_pd(P##_mul_pd(x, P##_set1_pd(EXP_LOG2E)), P##_set1_pd(EXP_SHIFT));           \
        VD n = P##_sub_pd(k, P##_set1_pd(EXP_SHIFT));                                               \
        VD r = P##_sub_pd(P##_sub_pd(x, P##_mul_pd(n, P##_set1_pd(EXP_LN2_HI))),                    \
                          P##_mul_pd(n, P##_set1_pd(EXP_LN2_LO)));                                  \
        VD p = P##_add_pd(P##_mul_pd(r, P##_set1_pd(inv_fact[0])), P##_set1_pd(inv_fact[1]));      \
        for (int i = 2; i < EXP_TERMS; i++)                                                         \
            p = P##_add_pd(P##_mul_pd(p, r), P##_set1_pd(inv_fact[i]));                             \
        VI bits = P##_slli_epi64(P##_add_epi64(AS_INT(k), SET1_I64(1023)), 52);                     \
        return P##_mul_pd(p, AS_DOUBLE(bits));                                                      \
    }

EXP_VECTOR(exp_avx512, "avx512f", __m512d, __m512i, _mm512, _mm512_castpd_si512, _mm512_castsi512_pd,
           _mm512_set1_epi64)
EXP_VECTOR(exp_avx2, "avx2", __m256d, __m256i, _mm256, _mm256_castpd_si256, _mm256_castsi256_pd,
           _mm256_set1_epi64x)

/* silu of 8 floats (AVX-512: one vector of 8 doubles) or 4 (AVX2) at p */
static inline __attribute__((always_inline, target("avx512f"))) __m256 silu_avx512_8(const float *p)
{
    __m256 x = _mm256_loadu_ps(p);
    __m512d e = exp_avx512(_mm512_sub_pd(_mm512_setzero_pd(), _mm512_cvtps_pd(x)));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), _mm512_cvtpd_ps(e)));
}

static inline __attribute__((always_inline, target("avx2"))) __m128 silu_avx2_4(const float *p)
{
    __m128 x = _mm_loadu_ps(p);
    __m256d e = exp_avx2(_mm256_sub_pd(_mm256_setzero_pd(), _mm256_cvtps_pd(x)));
    return _mm_div_ps(x, _mm_add_ps(_mm_set1_ps(1.0f), _mm256_cvtpd_ps(e)));
}

/* silu_ISA / silu_mul_ISA: STEP values at a time through SILU_STEP, the tail
 * through the scalar path. */
#define SILU_LOOPS(ISA, TARGET, STEP, LOAD, STORE, MUL, SILU_STEP)                                 \
    __attribute__((target(TARGET))) void silu_##ISA(float *v, size_t n)                            \
    {                                                                                               \
        size_t i = 0;                                                                               \
        for (; i + STEP <= n; i += STEP)                                                            \
            STORE(v + i, SILU_STEP(v + i));                                                         \
        silu_portable(v + i, n - i);                                                                \
    }                                                                                               \
    __attribute__((target(TARGET))) void silu_mul_##ISA(float *y, const float *z, size_t n)        \
    {                                                                                               \
        size_t i = 0;                                                                               \
        for (; i + STEP <= n; i += STEP)                                                            \
            STORE(y + i, MUL(LOAD(y + i), SILU_STEP(z + i)));                                       \
        silu_mul_portable(y + i, z + i, n - i);                                                     \
    }

SILU_LOOPS(avx512, "avx512f", 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_mul_ps, silu_avx512_8)
SILU_LOOPS(avx2, "avx2", 4, _mm_loadu_ps, _mm_storeu_ps, _mm_mul_ps, silu_avx2_4)

/* softmax_portable's steps, W floats at a time: the largest by vector max (its
 * second operand on a NaN, as the scalar compare skips one; which zero wins does not
 * matter, p − (±0) being the same), e^x by the path's exp, the sum as there, the
 * quotients by vector division (correctly rounded: the same bits). */
#define SOFTMAX(ISA, TARGET, W, VF, PF, EXP_STEP, EXPS)                                            \
    __attribute__((target(TARGET))) void softmax_##ISA(float *p, int n)                            \
    {                                                                                               \
        int t = 0;                                                                                  \
        VF mv = PF##_set1_ps(-FLT_MAX);                                                             \
        for (; t + (W) <= n; t += (W))                                                              \
            mv = PF##_max_ps(PF##_loadu_ps(p + t), mv);                                             \
        float lanes[W];                                                                             \
        PF##_storeu_ps(lanes, mv);                                                                  \
        float m = softmax_max(p, t, n, softmax_max(lanes, 0, (W), -FLT_MAX));                       \
        for (t = 0; t + (EXPS) <= n; t += (EXPS))                                                   \
            EXP_STEP(p + t, m);                                                                     \
        softmax_rest(p, n, m, t);                                                                   \
        float sum = softmax_sum_vec(p, n);                                                          \
        VF sv = PF##_set1_ps(sum);                                                                  \
        for (t = 0; t + (W) <= n; t += (W))                                                         \
            PF##_storeu_ps(p + t, PF##_div_ps(PF##_loadu_ps(p + t), sv));                           \
        for (; t < n; t++)                                                                          \
            p[t] /= sum;                                                                            \
    }

/* softmax_sum with its 8 running sums the lanes of an AVX vector */
static inline __attribute__((always_inline, target("avx"))) float softmax_sum_vec(const float *p, int n)
{
    __m256 acc = _mm256_setzero_ps();
    int t = 0;
    for (; t + 8 <= n; t += 8)
        acc = _mm256_add_ps(acc, _mm256_loadu_ps(p + t));
    float s[8];
    _mm256_storeu_ps(s, acc);
    return softmax_fold(s, p, t, n);
}

/* e^(p − m) for the 8 (AVX-512) or 4 (AVX2) floats at p, in place */
static inline __attribute__((always_inline, target("avx512f"))) void softmax_exp_avx512(float *p, float m)
{
    __m256 x = _mm256_sub_ps(_mm256_loadu_ps(p), _mm256_set1_ps(m));
    _mm256_storeu_ps(p, _mm512_cvtpd_ps(exp_avx512(_mm512_cvtps_pd(x))));
}

static inline __attribute__((always_inline, target("avx2"))) void softmax_exp_avx2(float *p, float m)
{
    __m128 x = _mm_sub_ps(_mm_loadu_ps(p), _mm_set1_ps(m));
    _mm_storeu_ps(p, _mm256_cvtpd_ps(exp_avx2(_mm256_cvtps_pd(x))));
}

SOFTMAX(avx512, "avx512f", 16, __m512, _mm512, softmax_exp_avx512, 8)
SOFTMAX(avx2, "avx2", 8, __m256, _mm256, softmax_exp_avx2, 4)
#endif
