/*
 * strata.h — the one public header of libstrata, the Nemotron-H inference engine.
 *
 * Conventions (as in libuv): every name is strata_<noun>_<verb>; every function that
 * can fail returns a strata_status and, when given a non-NULL strata_error, fills it
 * with a message naming what failed (file, tensor, key, position). Nothing in the
 * library exits or aborts on bad input. Objects are opaque; each has a _free that
 * accepts NULL.
 *
 * Threads: a strata_model is immutable after load and may be shared by threads.
 * A strata_runner (scratch memory for forward steps) and the caches it advances
 * belong to one thread at a time.
 */
#ifndef STRATA_H
#define STRATA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status, errors */

typedef enum strata_status {
    STRATA_OK = 0,
    STRATA_E_IO,          /* a file could not be opened, read or mapped */
    STRATA_E_FORMAT,      /* a file's bytes are malformed (JSON, safetensors header) */
    STRATA_E_CONFIG,      /* config.json is inconsistent or names something unknown */
    STRATA_E_WEIGHTS,     /* a tensor is missing, has the wrong shape or dtype */
    STRATA_E_INVALID,     /* the caller passed an invalid argument */
    STRATA_E_RANGE,       /* a token id, position or index is out of range */
    STRATA_E_UNSUPPORTED, /* valid input using a feature strata does not implement */
    STRATA_E_NOMEM,       /* an allocation failed */
    STRATA_E_TEMPLATE,    /* a chat template failed or called raise_exception */
    STRATA_E_LIMIT        /* a bound on size, steps or memory was reached */
} strata_status;

typedef struct strata_error {
    strata_status status;
    char message[1024];
} strata_error;

/* A short constant name for a status ("io", "format", ...). */
const char *strata_status_name(strata_status status);

/* ---------------------------------------------------------------- model */

typedef struct strata_model strata_model;

/* Layer kinds, by their character in hybrid_override_pattern. */
typedef enum strata_layer_kind {
    STRATA_LAYER_MAMBA = 'M',
    STRATA_LAYER_ATTENTION = '*',
    STRATA_LAYER_MLP = '-',
    STRATA_LAYER_MOE = 'E'
} strata_layer_kind;

/* What a loaded model is: every width the forward pass uses. Read-only. */
typedef struct strata_model_info {
    int n_layers;
    const char *pattern;      /* n_layers characters over M * - E, NUL-terminated */
    int vocab_size;
    int hidden_size;          /* d */
    float norm_eps;
    int tie_word_embeddings;
    /* Mamba-2 */
    int mamba_heads, mamba_head_dim, ssm_state_size, n_groups, conv_kernel;
    int d_inner, conv_dim, in_proj_dim;
    float dt_limit_lo, dt_limit_hi;
    /* attention */
    int attn_heads, kv_heads, head_dim;
    /* dense MLP */
    int intermediate_size;
    /* MoE */
    int n_experts, experts_per_tok, moe_intermediate_size, shared_intermediate_size;
    int n_group, topk_group, norm_topk_prob;
    float routed_scaling_factor;
    /* sizes */
    int max_position_embeddings;
    int bos_token_id, eos_token_id, pad_token_id;
    uint64_t n_params;        /* parameters of the causal LM as loaded */
    uint64_t weight_bytes;    /* bytes of those parameters as stored */
    uint64_t state_bytes_fixed;     /* per session: conv + SSM state of all Mamba layers */
    uint64_t state_bytes_per_token; /* per session and token: K + V of all attention layers */
} strata_model_info;

/* Load a Hugging Face checkpoint directory (config.json + model.safetensors or
 * shards with model.safetensors.index.json). Weights are mmapped and used in place. */
strata_status strata_model_load(const char *dir, strata_model **out, strata_error *err);
void strata_model_free(strata_model *model);
const strata_model_info *strata_model_get_info(const strata_model *model);

/* ---------------------------------------------------------------- cache */

/* The unified per-sequence state: conv window + SSM state per Mamba layer, K/V per
 * attention layer, and the number of tokens consumed. */
typedef struct strata_cache strata_cache;

strata_status strata_cache_new(const strata_model *model, strata_cache **out, strata_error *err);
void strata_cache_free(strata_cache *cache);
int strata_cache_n_tokens(const strata_cache *cache);
/* Bytes of state the cache holds now (fixed part + K/V of the tokens consumed). */
uint64_t strata_cache_state_bytes(const strata_cache *cache);
/* Forget every token: back to the empty state (capacity is kept). */
void strata_cache_reset(strata_cache *cache);

/* ---------------------------------------------------------------- hooks */

/* A set of named hook points to capture during steps, and the captured tensors.
 * Names follow api.md (TransformerLens style): "embed.hook_out", "blocks.3.hook_out",
 * "blocks.*.mixer.ssm_state", "logits", ... A "*" stands for every layer where the hook
 * exists. Per-position hooks append rows at every step; state hooks
 * (ssm_state, conv_state, k_cache, v_cache) hold the state after the last step. */
typedef struct strata_capture strata_capture;

typedef enum strata_dtype { STRATA_F32 = 0, STRATA_I32 = 1 } strata_dtype;

typedef struct strata_tensor_view {
    const char *name;
    strata_dtype dtype;
    int ndim;
    int64_t shape[4];
    const void *data;          /* row-major; valid until the capture changes or is freed */
} strata_tensor_view;

strata_status strata_capture_new(const strata_model *model, strata_capture **out, strata_error *err);
void strata_capture_free(strata_capture *capture);
/* Add one hook name or glob; an unknown name, or an exact name on a layer whose kind
 * lacks that hook, is an error naming the alternatives. */
strata_status strata_capture_add(strata_capture *capture, const char *pattern, strata_error *err);
int strata_capture_count(const strata_capture *capture);
strata_status strata_capture_get(const strata_capture *capture, int index,
                                 strata_tensor_view *out, strata_error *err);
/* Drop captured data, keep the requested names. */
void strata_capture_clear(strata_capture *capture);

/* Write tensors as a .safetensors file; metadata_json is NULL or the text of a JSON
 * object of strings (stored as __metadata__). */
strata_status strata_safetensors_write(const char *path, const strata_tensor_view *tensors, int n,
                                       const char *metadata_json, strata_error *err);

/* ---------------------------------------------------------------- forward steps */

/* Scratch memory for forward steps; grows to the largest step seen. */
typedef struct strata_runner strata_runner;

/* One sequence's part of a step: n_tokens new tokens on top of its cache. */
typedef struct strata_seq {
    strata_cache *cache;        /* advanced in place */
    const int32_t *tokens;      /* (n_tokens) */
    int n_tokens;
    float *logits;              /* out, or NULL: (all_logits ? n_tokens : 1, vocab) */
    int all_logits;             /* 1: a row per new token; 0: the last token only */
    strata_capture *capture;    /* optional */
} strata_seq;

strata_status strata_runner_new(const strata_model *model, strata_runner **out, strata_error *err);
void strata_runner_free(strata_runner *runner);
/* Threads the runner's steps use: its own pool, created here (0 = the default:
 * $STRATA_THREADS if set, else the online CPUs). Matmuls split over output columns,
 * so the thread count never changes a result. */
strata_status strata_runner_set_threads(strata_runner *runner, int n_threads, strata_error *err);
int strata_runner_threads(const strata_runner *runner);
/* The kernel path the runner's matmuls take: "avx512", "avx2" or "portable" (the
 * fastest the CPU supports; $STRATA_KERNEL may ask for a slower one). NULL runner:
 * the path a new runner would take. */
const char *strata_runner_kernel(const strata_runner *runner);
/* Run one step over several sequences at once: every weight matrix is applied once to
 * all rows of the step. Each sequence's result equals running it alone. On error no
 * cache is changed. */
strata_status strata_runner_step(strata_runner *runner, strata_seq *seqs, int n_seqs,
                                 strata_error *err);

#ifdef __cplusplus
}
#endif
#endif /* STRATA_H */
