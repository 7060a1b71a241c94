/*
 * matmul_portable.c — the reference kernels in plain C: 8 lanes, multiply then add,
 * the summation order of isa.h. Every CPU can run them; the fast paths are tested
 * against them (tests/test_kernels.c).
 */
#include <string.h>

#include "kernels/isa.h"
#include "kernels/vocab.h"
#include "kernels/kernels.h"

#define LANES 8
#define MR 2
#define NR 2

/* The fixed 8 → 4 → 2 → 1 reduction of isa.h. */
static float reduce8(const float *s)
{
    float a0 = s[0] + s[4], a1 = s[1] + s[5], a2 = s[2] + s[6], a3 = s[3] + s[7];
    float b0 = a0 + a2, b1 = a1 + a3;
    return b0 + b1;
}

/* LANES elements of W at element offset i, zero past `len`. */
static void load_w(float *out, const void *w, st_dtype dt, size_t i, int len)
{
    for (int l = 0; l < LANES; l++)
        out[l] = l < len ? mat_elem(w, dt, i + (size_t)l) : 0.0f;
}

static void tile(const mm_block *b, int r0, int j0, int mr, int nr)
{
    float acc[MR][NR][LANES];
    memset(acc, 0, sizeof acc);
    for (int kk = 0; kk < b->k; kk += LANES) {
        int len = b->k - kk < LANES ? b->k - kk : LANES;
        float wv[NR][LANES], xv[LANES];
        for (int j = 0; j < nr; j++)
            load_w(wv[j], b->w, b->dtype, (size_t)(j0 + j) * b->ldw + (size_t)kk, len);
        for (int i = 0; i < mr; i++) {
            const float *x = b->x + (size_t)(r0 + i) * b->ldx + kk;
            for (int l = 0; l < LANES; l++)
                xv[l] = l < len ? x[l] : 0.0f;
            for (int j = 0; j < nr; j++)
                for (int l = 0; l < LANES; l++)
                    acc[i][j][l] += xv[l] * wv[j][l];
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            float v = reduce8(acc[i][j]);
            if (b->bias)
                v += b->bias[j0 + j];
            b->y[(size_t)(r0 + i) * b->ldy + (size_t)(j0 + j)] = v;
        }
}

static void block(const mm_block *b)
{
    for (int r0 = 0; r0 < b->m; r0 += MR)
        for (int j0 = 0; j0 < b->nw; j0 += NR)
            tile(b, r0, j0, b->m - r0 < MR ? b->m - r0 : MR, b->nw - j0 < NR ? b->nw - j0 : NR);
}

static void widen(float *dst, const void *src, st_dtype dt, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = mat_elem(src, dt, i);
}

static void ssm_head(float *S, int P, int N, int n, const float *x, size_t ldx, const float *B,
                     const float *C, size_t ldbc, const float *dt, const float *a, float Dh, float *y,
                     size_t ldy)
{
    for (int t = 0; t < n; t++) {
        const float *Bt = B + (size_t)t * ldbc, *Ct = C + (size_t)t * ldbc;
        for (int p = 0; p < P; p++) {
            float xv = x[(size_t)t * ldx + (size_t)p], dx = dt[t] * xv, *s = S + (size_t)p * (size_t)N;
            float acc = 0.0f;
            for (int k = 0; k < N; k++) {
                s[k] = a[t] * s[k] + dx * Bt[k];
                acc += s[k] * Ct[k];
            }
            y[(size_t)t * ldy + (size_t)p] = acc + Dh * xv;
        }
    }
}

const kernel_isa kernel_portable = {
    .name = "portable", .lanes = LANES, .mr = MR, .nr = NR, .block = block, .widen = widen, .ssm_head = ssm_head,
    .silu = silu_portable, .silu_mul = silu_mul_portable, .conv_taps = conv_taps_portable,
    .attn_scores = attn_scores_portable, .attn_mix = attn_mix_portable, .softmax = softmax_portable,
    .vocab = &vocab_portable,
};
