/*
 * matmul.c — y = x·Wᵀ for weights stored as BF16, F16 or F32, in fp32 arithmetic.
 *
 * W is widened one panel of MATMUL_PANEL_ROWS rows at a time (never copied whole),
 * and each panel serves every input row of the step: one pass over the weights per
 * step, however many sequences it batches.
 *
 * Invariant (batch invariance): every output element is one dot_f32 over k in a
 * fixed order, whatever n is, so a sequence's numbers do not depend on what else
 * shares its step — batched results equal solo results bit for bit.
 */
#include <string.h>

#include "kernels/kernels.h"

float dot_f32(const float *a, const float *b, int n)
{
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += a[i + k] * b[i + k];
    float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; i < n; i++)
        t += a[i] * b[i];
    return t;
}

void matmul(float *y, const float *x, int n, const strata_mat *w, float *panel)
{
    size_t cols = (size_t)w->cols, rows = (size_t)w->rows;
    for (int j0 = 0; j0 < w->rows; j0 += MATMUL_PANEL_ROWS) {
        int pr = w->rows - j0 < MATMUL_PANEL_ROWS ? w->rows - j0 : MATMUL_PANEL_ROWS;
        const float *p = (const float *)w->data + (size_t)j0 * cols;
        if (w->dtype != ST_F32) {
            for (int j = 0; j < pr; j++)
                mat_row_f32(w, j0 + j, panel + (size_t)j * cols);
            p = panel;
        }
        for (int r = 0; r < n; r++)
            for (int j = 0; j < pr; j++)
                y[(size_t)r * rows + (size_t)(j0 + j)] = dot_f32(x + (size_t)r * cols, p + (size_t)j * cols, w->cols);
    }
    if (w->bias)
        for (int r = 0; r < n; r++)
            for (size_t j = 0; j < rows; j++)
                y[(size_t)r * rows + j] += w->bias[j];
}

void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    float ss = dot_f32(x, x, n);
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++)
        out[i] = x[i] * inv * (w ? w[i] : 1.0f);
}
