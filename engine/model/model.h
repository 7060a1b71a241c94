/*
 * model.h — the loaded model: config, the layer plan and each layer's weights.
 * Matrices stay in the mmapped safetensors in their stored dtype (strata_mat);
 * small 1-D parameters are converted to fp32 at load. Immutable after load.
 */
#ifndef STRATA_MODEL_MODEL_H
#define STRATA_MODEL_MODEL_H

#include "core/huge.h"
#include "model/config.h"
#include "model/safetensors.h"

/* A weight matrix W [rows, cols] as stored (y = x·Wᵀ + bias), or quantized to int8
 * at load (dtype ST_I8: data is q (rows, cols rounded up to 32) with `scales`, the
 * format of kernels/q8.h). */
typedef struct strata_mat {
    const void *data;
    st_dtype dtype;         /* ST_F32, ST_BF16, ST_F16, or ST_I8 (int8 blocks) */
    int rows, cols;
    const float *bias;      /* (rows) or NULL */
    const uint16_t *scales; /* ST_I8 only: (rows, cols rounded up to 32 / 32) bf16 */
} strata_mat;

typedef struct mamba_weights {
    strata_mat in_proj;     /* [d_mlp*2 + d_inner + conv_dim + H, d] rows: z | xBC | dt */
    strata_mat out_proj;    /* [d, d_inner] */
    float *conv_wT;         /* (K, conv_dim) taps, tap-major so channels are contiguous;
                               tap K-1 multiplies the current token */
    float *conv_b;          /* (conv_dim) zeros when use_conv_bias is false */
    float *dt_bias;         /* (H) */
    float *A;               /* (H) = -exp(A_log) */
    float *D;               /* (H) */
    float *norm_w;          /* (d_inner) gated RMSNorm weight */
} mamba_weights;

typedef struct attn_weights {
    strata_mat q, k, v, o;  /* q [nh*hd, d], k/v [nkv*hd, d], o [d, nh*hd] */
} attn_weights;

typedef struct mlp_weights {
    strata_mat up, down;    /* up [F, d_in], down [d_in, F] */
} mlp_weights;

typedef struct moe_weights {
    float *router;          /* (E, d) fp32: routing is always fp32 */
    float *score_bias;      /* (E) e_score_correction_bias, steers selection only */
    mlp_weights *experts;   /* (E) acting on u = h, or fc1_latent(h) */
    mlp_weights shared;     /* acts on h */
    strata_mat fc1_latent, fc2_latent; /* only when moe_latent_size > 0 */
} moe_weights;

typedef struct layer {
    char kind;              /* 'M', '*', '-', 'E' */
    int state_index;        /* index among the Mamba layers, or among the attention layers */
    float *norm_w;          /* (d) block pre-norm */
    union {
        mamba_weights mamba;
        attn_weights attn;
        mlp_weights mlp;
        moe_weights moe;
    };
} layer;

struct strata_model {
    model_config cfg;
    int n_mamba, n_attn;
    layer *layers;          /* (n_layers) */
    strata_mat embed;       /* [V, d] */
    strata_mat lm_head;     /* [V, d] (= embed when tied, unless packed into panels) */
    float *norm_f;          /* (d) */
    st_file **files;        /* the mmapped shards */
    int n_files;
    void **owned;           /* fp32 conversions made at load */
    int n_owned, cap_owned;
    int compute_bf16;       /* strata_model_set_compute */
    int compute_int8;       /* strata_load_opts.compute = "int8": matmul weights in int8 panels */
    huge_arena weights;     /* matmul weights made at load: int8 blocks, BF16 panels */
};

/* Whether `packed` bytes of panels (kernels/isa.h) may be made at load on a machine
 * with `phys` bytes of RAM (0: unknown): at most 3/4 of it. Panels are anonymous
 * memory, which cannot be paged back to the file as mapped weights can, so a model
 * near or above the RAM size keeps its stored layout (slower matmuls, but it runs). */
int panels_fit(size_t packed, size_t phys);

/* Convert element i of a stored tensor to fp32. */
float mat_elem(const void *data, st_dtype dtype, size_t i);
/* Convert row r of W to fp32 into out (cols). */
void mat_row_f32(const strata_mat *w, int r, float *out);

#endif
