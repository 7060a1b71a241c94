/*
 * kernels.h — the numeric building blocks the layers are written in. All math is
 * fp32; weights are read in their stored dtype (BF16 / F16 / F32) and widened in
 * registers or in a small panel, never copied whole.
 */
#ifndef STRATA_KERNELS_H
#define STRATA_KERNELS_H

#include <math.h>

#include "model/model.h"

/* Rows of W widened per panel in the GEMM path; the panel buffer holds
 * MATMUL_PANEL_ROWS * W.cols floats. */
#define MATMUL_PANEL_ROWS 128

/* y (n, W.rows) = x (n, W.cols) · Wᵀ (+ bias). */
void matmul(float *y, const float *x, int n, const strata_mat *w, float *panel);

float dot_f32(const float *a, const float *b, int n);

/* out = x / sqrt(mean(x²) + eps) * w over n values (w may be NULL). */
void rmsnorm(float *out, const float *x, const float *w, int n, float eps);

static inline float silu(float x) { return x / (1.0f + expf(-x)); }
static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
/* torch.nn.functional.softplus with threshold 20. */
static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
static inline float relu2(float x) { return x > 0.0f ? x * x : 0.0f; }

#endif
