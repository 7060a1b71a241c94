/*
 * matmul_q8.c — y = x·Wᵀ for int8 weights (kernels/q8.h): the quantizer, the
 * portable reference kernel, and a thread's share of the work; for the int8 compute
 * mode, the panel packing, x's quantizer and the reference kernel the VNNI one equals.
 *
 * matmul.c splits the W rows over threads as for every dtype and hands each
 * thread's rows to q8_matmul_rows. Few x rows (decode, batched decode): the Q8
 * kernel reads int8 W in place and dequantizes in registers — half the bytes of bf16 per step. Many x rows
 * (prefill): a panel of W is dequantized once to fp32 and the path's fp32 kernel
 * runs every x row over it. Both routes give the same bits (q8.h), so the summation
 * order of every output element is fixed by the kernel path alone, whatever n,
 * tiling or threads (batch invariance, as in matmul.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/spread.h"
#include "kernels/q8.h"

/* ---------------------------------------------------------------- quantizer */

/* The smallest bf16 ≥ v (v ≥ 0, finite); +inf when v rounds past the largest bf16. */
static uint16_t bf16_round_up(float v)
{
    union { float f; uint32_t u; } b = {.f = v};
    uint32_t hi = b.u >> 16;
    if (b.u & 0xffffu)
        hi++;
    return (uint16_t)hi;
}

/* Row r's block starting at column c0 (len ≤ Q8_BLOCK values) as fp32. */
static void load_block(const void *src, st_dtype dtype, size_t at, int len, float *w)
{
    if (dtype == ST_BF16) {
        const uint16_t *h = (const uint16_t *)src + at;
        for (int i = 0; i < len; i++)
            w[i] = q8_scale_f32(h[i]);    /* a bf16 → fp32 widening */
    } else if (dtype == ST_F32) {
        memcpy(w, (const float *)src + at, sizeof(float) * (size_t)len);
    } else {
        for (int i = 0; i < len; i++)
            w[i] = mat_elem(src, dtype, at + (size_t)i);
    }
}

/* Rows [r0, r1) of W (row indices absolute: q, scales and src start at row 0). */
static strata_status quantize_rows(const void *src, st_dtype dtype, int r0, int r1, int cols, int8_t *q,
                                   uint16_t *scales, const char *what, strata_error *err)
{
    size_t kp = q8_padded(cols), nb = kp / Q8_BLOCK;
    float w[Q8_BLOCK];
    for (int r = r0; r < r1; r++) {
        size_t base = (size_t)r * (size_t)cols;
        for (size_t b = 0; b < nb; b++) {
            int c0 = (int)(b * Q8_BLOCK), len = cols - c0 < Q8_BLOCK ? cols - c0 : Q8_BLOCK;
            load_block(src, dtype, base + (size_t)c0, len, w);
            for (int i = len; i < Q8_BLOCK; i++)
                w[i] = 0.0f;
            /* branch-free over the whole block, so the compiler vectorizes it (a plain
             * comparison, not fmaxf: a libm call here on baseline x86-64, 14 % of an
             * int8 load; the two differ only on NaN, which fails below anyway) */
            float amax = 0.0f, nan_if_not_finite = 0.0f;
            for (int i = 0; i < Q8_BLOCK; i++) {
                float a = fabsf(w[i]);
                nan_if_not_finite += w[i] - w[i];
                amax = a > amax ? a : amax;
            }
            if (!isfinite(nan_if_not_finite))
                return strata_fail(err, STRATA_E_WEIGHTS, "%s: row %d, columns %d..%d: a weight is not finite; "
                                   "int8 quantization needs finite weights", what, r, c0, c0 + len - 1);
            uint16_t sb = bf16_round_up(amax / 127.0f);
            float s = q8_scale_f32(sb);
            if (!isfinite(s))
                return strata_fail(err, STRATA_E_WEIGHTS, "%s: row %d: weights too large for an int8 scale", what, r);
            int8_t *qb = q + (size_t)r * kp + (size_t)c0;
            double inv = s > 0.0f ? 1.0 / (double)s : 0.0;
            for (int i = 0; i < Q8_BLOCK; i++) {
                /* to nearest, halves away from zero; |w·inv| ≤ 127 (s ≥ max|w| / 127) */
                double v = (double)w[i] * inv;
                int qi = (int)(v + (v < 0.0 ? -0.5 : 0.5));
                qb[i] = (int8_t)(qi > 127 ? 127 : qi < -127 ? -127 : qi);
            }
            scales[(size_t)r * nb + b] = sb;
        }
    }
    return STRATA_OK;
}

typedef struct quant_job {
    const void *src;
    st_dtype dtype;
    int r0, cols;
    int8_t *q;
    uint16_t *scales;
    const char *what;
} quant_job;

static strata_status quant_part(void *arg, int lo, int hi, strata_error *err)
{
    const quant_job *J = arg;
    return quantize_rows(J->src, J->dtype, J->r0 + lo, J->r0 + hi, J->cols, J->q, J->scales, J->what, err);
}

#define QUANT_PARALLEL_MIN (1 << 20)    /* weights below which one thread does it all */

strata_status q8_quantize(const void *src, st_dtype dtype, int rows, int cols, int8_t *q, uint16_t *scales,
                          const char *what, strata_error *err)
{
    return q8_quantize_rows(src, dtype, 0, rows, cols, q, scales, what, err);
}

/* Large tensors are split by rows over the online CPUs (the load's wall time is
 * mostly this loop). */
strata_status q8_quantize_rows(const void *src, st_dtype dtype, int r0, int r1, int cols, int8_t *q,
                               uint16_t *scales, const char *what, strata_error *err)
{
    quant_job J = {src, dtype, r0, cols, q, scales, what};
    int min_rows = cols > 0 ? QUANT_PARALLEL_MIN / cols : 0;
    return spread_run(r1 - r0, 1, min_rows, quant_part, &J, err);
}

/* ---------------------------------------------------------------- portable path */

#define P_LANES 8

/* As matmul_portable.c's tile for one (x row, W row): 8 lanes, multiply then add,
 * over w = (float)q · s, the tail zero-padded, the fixed 8 → 4 → 2 → 1 reduction. */
static float dot_portable(const float *x, const int8_t *q, const uint16_t *s, int k)
{
    float acc[P_LANES] = {0};
    for (int kk = 0; kk < k; kk += P_LANES) {
        int len = k - kk < P_LANES ? k - kk : P_LANES;
        float sc = q8_scale_f32(s[kk / Q8_BLOCK]);
        for (int l = 0; l < P_LANES; l++) {
            float wv = l < len ? (float)q[kk + l] * sc : 0.0f;
            float xv = l < len ? x[kk + l] : 0.0f;
            acc[l] += xv * wv;
        }
    }
    float a0 = acc[0] + acc[4], a1 = acc[1] + acc[5], a2 = acc[2] + acc[6], a3 = acc[3] + acc[7];
    float b0 = a0 + a2, b1 = a1 + a3;
    return b0 + b1;
}

static void block_portable(const q8_block *b)
{
    for (int r = 0; r < b->m; r++)
        for (int j = 0; j < b->nw; j++) {
            float v = dot_portable(b->x + (size_t)r * b->ldx, b->q + (size_t)j * b->ldq, b->s + (size_t)j * b->lds, b->k);
            if (b->bias)
                v += b->bias[j];
            b->y[(size_t)r * b->ldy + (size_t)j] = v;
        }
}

static void dequant_portable(float *dst, const int8_t *q, const uint16_t *s, size_t ldq, size_t lds, int rows, int k)
{
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < k; c++)
            dst[(size_t)r * (size_t)k + (size_t)c] =
                (float)q[(size_t)r * ldq + (size_t)c] * q8_scale_f32(s[(size_t)r * lds + (size_t)c / Q8_BLOCK]);
}

const q8_isa q8_portable = {.fp32 = &kernel_portable, .block = block_portable, .dequant = dequant_portable};

int q8_compute_supported(void)
{
    return q8_panels_kernel() && kernel_select() == &kernel_avx512;
}

const q8_isa *q8_isa_for(const kernel_isa *isa)
{
    if (isa == &kernel_avx512 && q8_avx512.block)
        return &q8_avx512;
    if (isa == &kernel_avx2 && q8_avx2.block)
        return &q8_avx2;
    if (isa == &kernel_portable)
        return &q8_portable;
    return NULL;
}

/* ---------------------------------------------------------------- int8 compute */

size_t q8_panels_bytes(int rows, int cols)
{
    size_t panels = (size_t)((rows + Q8P_ROWS - 1) / Q8P_ROWS);
    return panels * (q8_padded(cols) / Q8_BLOCK) * Q8P_BLOCK_BYTES;
}

void q8_panels_pack(uint8_t *dst, const int8_t *q, const uint16_t *scales, int rows, int cols, int r0, int r1)
{
    size_t kp = q8_padded(cols), nb = kp / Q8_BLOCK;
    for (int j = r0; j < r1 && j < rows; j++) {
        const int8_t *qj = q + (size_t)(j - r0) * kp;
        const uint16_t *sj = scales + (size_t)(j - r0) * nb;
        int r = j % Q8P_ROWS;
        for (size_t b = 0; b < nb; b++) {
            uint8_t *blk = dst + ((size_t)(j / Q8P_ROWS) * nb + b) * Q8P_BLOCK_BYTES;
            memcpy(blk + 2 * r, &sj[b], 2);
            for (int c = 0; c < Q8_BLOCK; c++)
                blk[q8p_byte(r, c)] = (uint8_t)(qj[b * Q8_BLOCK + (size_t)c] + 128);
        }
    }
    /* rows past the end: q = 0 is the byte 128 (their scales stay 0) */
    for (int j = rows; r1 >= rows && j % Q8P_ROWS; j++)
        for (size_t b = 0; b < nb; b++)
            for (int c = 0; c < Q8_BLOCK; c++)
                dst[((size_t)(j / Q8P_ROWS) * nb + b) * Q8P_BLOCK_BYTES + q8p_byte(j % Q8P_ROWS, c)] = 128;
}

typedef struct panel_pack_job {
    uint8_t *dst;
    const int8_t *q;        /* rows [r0, r1) quantized, from row r0 */
    const uint16_t *s;
    int rows, cols, r0;
} panel_pack_job;

static strata_status pack_part(void *arg, int lo, int hi, strata_error *err)
{
    const panel_pack_job *J = arg;
    size_t kp = q8_padded(J->cols);
    (void)err;
    q8_panels_pack(J->dst, J->q + (size_t)lo * kp, J->s + (size_t)lo * (kp / Q8_BLOCK), J->rows, J->cols, J->r0 + lo,
                   J->r0 + hi);
    return STRATA_OK;
}

strata_status q8_quantize_panels(const void *src, st_dtype dtype, int rows, int cols, int r0, int r1, uint8_t *dst,
                                 const char *what, strata_error *err)
{
    size_t kp = q8_padded(cols), n = (size_t)(r1 - r0);
    int8_t *q = malloc(n * kp);
    uint16_t *s = malloc(sizeof *s * n * (kp / Q8_BLOCK));
    strata_status st = q && s ? STRATA_OK : strata_fail(err, STRATA_E_NOMEM, "out of memory quantizing %s", what);
    if (st == STRATA_OK) {
        const char *rows_r0 = (const char *)src + (size_t)r0 * (size_t)cols * st_dtype_size(dtype);
        st = q8_quantize_rows(rows_r0, dtype, 0, r1 - r0, cols, q, s, what, err);
    }
    if (st == STRATA_OK) {
        panel_pack_job J = {dst, q, s, rows, cols, r0};
        st = spread_run(r1 - r0, Q8P_ROWS, 4 * Q8P_ROWS, pack_part, &J, err);
    }
    free(q);
    free(s);
    return st;
}

void q8_quantize_x_portable(const float *x, int k, int8_t *xq, float *xs, int32_t *xc)
{
    int nb = (int)(q8_padded(k) / Q8_BLOCK);
    for (int b = 0; b < nb; b++) {
        int c0 = b * Q8_BLOCK, len = k - c0 < Q8_BLOCK ? k - c0 : Q8_BLOCK;
        float amax = 0.0f, nan_if_not_finite = 0.0f;
        for (int i = 0; i < len; i++) {
            nan_if_not_finite += x[c0 + i] - x[c0 + i];
            amax = fmaxf(amax, fabsf(x[c0 + i]));
        }
        int finite = isfinite(nan_if_not_finite), sum = 0;
        float inv = finite && amax > 0.0f ? 127.0f / amax : 0.0f;
        inv = isinf(inv) ? 0.0f : inv;  /* amax below 127 / FLT_MAX: the block quantizes to 0 */
        for (int i = 0; i < Q8_BLOCK; i++) {
            float v = i < len && inv != 0.0f ? x[c0 + i] * inv : 0.0f;
            int qi = (int)rintf(v);
            qi = qi > 127 ? 127 : qi < -127 ? -127 : qi;
            xq[c0 + i] = (int8_t)qi;
            sum += qi;
        }
        xs[b] = finite ? amax / 127.0f : NAN;
        xc[b] = -128 * sum;
    }
}

void q8_panels_block_portable(const q8p_block *b)
{
    int nb = (int)(q8_padded(b->k) / Q8_BLOCK);
    for (int r = 0; r < b->m; r++) {
        const int8_t *xq = b->xq + (size_t)r * b->ldx;
        for (int j = 0; j < b->nw; j++) {
            const uint8_t *panel = b->w + (size_t)(j / Q8P_ROWS) * (size_t)nb * Q8P_BLOCK_BYTES;
            int pr = j % Q8P_ROWS;
            float acc = 0.0f;
            for (int blk = 0; blk < nb; blk++) {
                const uint8_t *p = panel + (size_t)blk * Q8P_BLOCK_BYTES;
                uint16_t sw;
                memcpy(&sw, p + 2 * pr, 2);
                int32_t isum = b->xc[(size_t)r * b->lds + (size_t)blk];
                for (int c = 0; c < Q8_BLOCK; c++)
                    isum += (int32_t)p[q8p_byte(pr, c)] * xq[blk * Q8_BLOCK + c];
                acc = fmaf((float)isum, q8_scale_f32(sw) * b->xs[(size_t)r * b->lds + (size_t)blk], acc);
            }
            b->y[(size_t)r * b->ldy + (size_t)j] = b->bias ? acc + b->bias[j] : acc;
        }
    }
}

/* ---------------------------------------------------------------- W rows */

void q8_matmul_rows(float *y, const float *x, int n, const strata_mat *w, const kernel_isa *isa, int ja, int jb,
                    float *panel, size_t panel_floats)
{
    const q8_isa *q8 = q8_isa_for(isa);
    if (!q8) {
        q8 = &q8_portable;
        isa = &kernel_portable;
    }
    int K = w->cols, nr = isa->nr;
    size_t kp = q8_padded(K), nb = kp / Q8_BLOCK, rows = (size_t)w->rows;
    int pr = MATMUL_PANEL_FLOATS / K / nr * nr;
    pr = pr < nr ? nr : pr;
    int widen = n >= MATMUL_WIDEN_MIN_ROWS && (size_t)pr * (size_t)K <= panel_floats;
    /* one x row: the thread's whole range as one sequential stream */
    if (n == 1)
        pr = jb - ja;
    for (int j0 = ja; j0 < jb; j0 += pr) {
        int nw = jb - j0 < pr ? jb - j0 : pr;
        const int8_t *q = (const int8_t *)w->data + (size_t)j0 * kp;
        const uint16_t *s = w->scales + (size_t)j0 * nb;
        const float *bias = w->bias ? w->bias + j0 : NULL;
        if (widen) {
            q8->dequant(panel, q, s, kp, nb, nw, K);
            mm_block b = {.y = y + (size_t)j0, .ldy = rows, .x = x, .ldx = (size_t)K, .w = panel,
                          .dtype = ST_F32, .ldw = (size_t)K, .bias = bias, .m = n, .nw = nw, .k = K};
            isa->block(&b);
        } else {
            q8_block b = {.y = y + (size_t)j0, .ldy = rows, .x = x, .ldx = (size_t)K, .q = q, .s = s,
                          .ldq = kp, .lds = nb, .bias = bias, .m = n, .nw = nw, .k = K};
            q8->block(&b);
        }
    }
}
