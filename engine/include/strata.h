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
    uint64_t weight_bytes;    /* bytes of those parameters as stored (as held in memory
                                 after load: int8 blocks + scales for --weights int8) */
    uint64_t matmul_bytes;    /* bytes of the matrices the matmuls read, every expert and
                                 the LM head included: what a decode step streams */
    uint64_t expert_bytes;    /* the routed experts' part of matmul_bytes: a token reads
                                 experts_per_tok of every n_experts */
    uint64_t expert_params;   /* the routed experts' part of n_params */
    uint64_t active_params;   /* what a token uses: n_params less the routed experts it skips
                                 (all of n_params in a dense model) */
    const char *weights;      /* "native" (as stored) or "int8" (strata_weights_name) */
    /* A session's state as the current compute mode keeps it (the SSM state and K/V
     * in fp32, or BF16 in the bf16 and int8 modes): */
    uint64_t state_bytes_fixed;     /* per session: conv + SSM state of all Mamba layers */
    uint64_t state_bytes_per_token; /* per session and token: K + V of all attention layers */
} strata_model_info;

/* Load a Hugging Face checkpoint directory (config.json + model.safetensors or
 * shards with model.safetensors.index.json). Weights are mmapped and used in place. */
strata_status strata_model_load(const char *dir, strata_model **out, strata_error *err);

/* How the matmul weights are held. NATIVE: used in place as stored (BF16/F16/F32).
 * INT8: every matmul weight (Mamba in/out projections, attention q/k/v/o, MLP and
 * expert up/down, MoE latent projections, the LM head) quantized at load to blocks
 * of 32 int8 along each row with one bf16 scale (max|w|/127) per block — about half
 * the bytes of bf16; the file pages of the originals are released. Embeddings, norms,
 * conv weights, biases and the router stay as loaded. */
typedef enum strata_weights {
    STRATA_WEIGHTS_NATIVE = 0,
    STRATA_WEIGHTS_INT8 = 1
} strata_weights;

typedef struct strata_load_opts {
    strata_weights weights;
    /* The compute mode to start in (NULL: "fp32"; see strata_model_set_compute).
     * "int8" is chosen only here: with int8 weights, on a CPU with AVX512_VNNI, the
     * activations are quantized too (blocks of 32, scale max|x|/127) and the dot
     * products run on integers — the weights are packed for that at load, and the
     * model stays in that mode. */
    const char *compute;
} strata_load_opts;

/* strata_model_load with options (opts NULL: the defaults, all zero). */
strata_status strata_model_load_with(const char *dir, const strata_load_opts *opts, strata_model **out,
                                     strata_error *err);
/* "native" / "int8" → the mode; anything else is STRATA_E_INVALID naming the choices. */
strata_status strata_weights_parse(const char *name, strata_weights *out, strata_error *err);
const char *strata_weights_name(strata_weights weights);
void strata_model_free(strata_model *model);
const strata_model_info *strata_model_get_info(const strata_model *model);
/* How matmuls compute, for the runners created after (fp32 and bf16: matmuls with
 * BF16-stored weights; int8: with int8 weights):
 *   "fp32" (the default): the stored weights times fp32 activations, in fp32 — the
 *          mode the fixtures are checked in;
 *   "bf16" (opt-in, faster): activations rounded to BF16 first, products summed in
 *          fp32 — by AVX512_BF16 dot products where the CPU has them (twice the
 *          multiply-adds of fp32 FMA; elsewhere same speed, same rounding).
 *   "int8" (opt-in, fastest): chosen only at load (strata_load_opts.compute), with
 *          int8 weights on an AVX512_VNNI CPU; activations quantized to int8 too,
 *          integer dot products; a model loaded so accepts no other mode.
 * Results stay batch-invariant within a mode; their error against fp32 is stated in
 * README.md. Other weight dtypes always compute in fp32. Set the mode before
 * making runners; fp32 and bf16 can follow each other. */
strata_status strata_model_set_compute(strata_model *model, const char *mode, strata_error *err);
const char *strata_model_compute(const strata_model *model);

/* ---------------------------------------------------------------- cache */

/* The unified per-sequence state: conv window + SSM state per Mamba layer, K/V per
 * attention layer, and the number of tokens consumed. A cache keeps the SSM state and
 * K/V in fp32, or in BF16 if made in the bf16 or int8 compute mode (its copies keep
 * its K/V's form). */
typedef struct strata_cache strata_cache;

strata_status strata_cache_new(const strata_model *model, strata_cache **out, strata_error *err);
void strata_cache_free(strata_cache *cache);
int strata_cache_n_tokens(const strata_cache *cache);
/* Bytes of state the cache holds now (fixed part + K/V of the tokens consumed). */
uint64_t strata_cache_state_bytes(const strata_cache *cache);
/* Forget every token: back to the empty state (capacity is kept). */
void strata_cache_reset(strata_cache *cache);
/* A new cache holding the same state as src. */
strata_status strata_cache_copy(const strata_cache *src, strata_cache **out, strata_error *err);

/* ---------------------------------------------------------------- hooks */

/* A set of named hook points to capture during steps, and the captured tensors.
 * Names follow api.md (TransformerLens style): "embed.hook_out", "blocks.3.hook_out",
 * "blocks.*.mixer.ssm_state", "logits", ... A "*" stands for every layer where the hook
 * exists. Per-position hooks append rows at every step; hook_pattern grows to
 * (heads, rows of every step, keys so far), earlier rows zero-padded on the right;
 * state hooks (ssm_state, conv_state, k_cache, v_cache) hold the state after the last
 * step. strata_capture_clear starts over. */
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

/* The hook catalogue of a model, for listing (GET /v1/hooks). Shapes use -1 for the
 * axis that depends on the request: positions P (first axis of per-position hooks),
 * and for hook_pattern (H, P, T) also the keys T; for k_cache / v_cache the tokens. */
typedef struct strata_hook_info {
    char name[96];
    int layer;                 /* -1: not a block's hook */
    char kind;                 /* the layer's strata_layer_kind character, 0 for global hooks */
    strata_dtype dtype;
    int ndim;
    int64_t shape[4];
    int per_position;          /* 1: a row per position; 0: a state after the last position */
    int interveneable;         /* 1: strata_interventions may modify it */
} strata_hook_info;

int strata_hook_count(const strata_model *model);
strata_status strata_hook_get(const strata_model *model, int index, strata_hook_info *out, strata_error *err);

/* ---------------------------------------------------------------- interventions */

/* Edits of activations during steps (activation patching, ablation, steering): a list
 * applied in order at each hook point before it is captured, so everything downstream
 * (the caches' recurrent state included) sees the edited values. Positions count
 * from the first token of the request (the cache's length when the request began,
 * see strata_interventions_new), negatives from the end of its n_tokens. */
typedef struct strata_interventions strata_interventions;

typedef enum strata_intervention_op {
    STRATA_OP_ZERO,            /* x = 0 */
    STRATA_OP_SCALE,           /* x *= factor */
    STRATA_OP_ADD,             /* x += value */
    STRATA_OP_SET,             /* x = value */
    STRATA_OP_PATCH,           /* x = value (rows captured from another run) */
    STRATA_OP_PROJECT_OUT,     /* x -= (x·d / d·d) d, value = d */
    STRATA_OP_ABLATE_EXPERTS   /* MoE: experts are removed from routing; the router picks among the rest */
} strata_intervention_op;

typedef struct strata_intervention {
    const char *hook;          /* a hook name or glob (every match gets the edit) */
    strata_intervention_op op;
    const int32_t *positions;  /* NULL: every position (generated ones too); else n_positions indices */
    int n_positions;
    float factor;              /* SCALE */
    const float *value;        /* ADD / SET / PATCH: a row (width) broadcast over the positions, or
                                * (selected positions, width); PROJECT_OUT: the direction (width) */
    size_t n_value;
    const int32_t *experts;    /* ABLATE_EXPERTS */
    int n_experts;
} strata_intervention;

/* origin: the cache's token count when the request starts (0 for a fresh cache);
 * n_tokens: the request's prompt length, for negative positions and "all" tensors. */
strata_status strata_interventions_new(const strata_model *model, int origin, int n_tokens,
                                       strata_interventions **out, strata_error *err);
void strata_interventions_free(strata_interventions *iv);
/* Check and copy one edit. Errors name what is wrong: an unknown hook or glob, a hook
 * that cannot be edited, a position outside [-n_tokens, n_tokens), a value whose size
 * is neither the width nor positions × width (expected vs got), NaN or infinity. */
strata_status strata_interventions_add(strata_interventions *iv, const strata_intervention *spec,
                                       strata_error *err);
int strata_interventions_count(const strata_interventions *iv);

/* Write tensors as a .safetensors file; metadata_json is NULL or the text of a JSON
 * object of strings (stored as __metadata__). */
strata_status strata_safetensors_write(const char *path, const strata_tensor_view *tensors, int n,
                                       const char *metadata_json, strata_error *err);

/* ---------------------------------------------------------------- forward steps */

/* Scratch memory for forward steps; grows to the largest pass seen (see
 * strata_runner_set_pass_rows). */
typedef struct strata_runner strata_runner;

/* One sequence's part of a step: n_tokens new tokens on top of its cache. */
typedef struct strata_seq {
    strata_cache *cache;        /* advanced in place */
    const int32_t *tokens;      /* (n_tokens) */
    int n_tokens;
    float *logits;              /* out, or NULL: (all_logits ? n_tokens : 1, vocab) */
    int all_logits;             /* 1: a row per new token; 0: the last token only */
    strata_capture *capture;    /* optional */
    const strata_interventions *interventions; /* optional */
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
/* Rows per forward pass (default 256, at most 2^20). A step of more rows runs as
 * several passes, sequences in order, each continuing where the last left off: the
 * same bits as one pass, with a workspace bounded by the pass instead of the prompt
 * (a 512-row pass of the 470m shape needs 30 MiB). */
strata_status strata_runner_set_pass_rows(strata_runner *runner, int rows, strata_error *err);
/* Run one step over several sequences at once: every weight matrix is applied once to
 * all rows of each pass. Each sequence's result equals running it alone. On error no
 * cache is changed. */
strata_status strata_runner_step(strata_runner *runner, strata_seq *seqs, int n_seqs,
                                 strata_error *err);

/* ---------------------------------------------------------------- sessions */

/* A session: one sequence's cache, the tokens it has consumed, and checkpoints
 * (snapshots of the state at earlier positions: the recurrent state is copied, the
 * attention KV prefix is shared). A session never re-processes what it has seen:
 * continuing with a prompt reuses the common prefix, and where the prompt diverges
 * it restores the newest checkpoint at or before the divergence.
 * Invariant: tokens[0..n) are exactly what the cache has consumed; every checkpoint
 * lies on that path (position <= n). One thread at a time. */
typedef struct strata_session strata_session;

#define STRATA_SESSION_MAX_CHECKPOINTS 32

strata_status strata_session_new(const strata_model *model, strata_session **out, strata_error *err);
void strata_session_free(strata_session *s);
int strata_session_n_tokens(const strata_session *s);
const int32_t *strata_session_tokens(const strata_session *s);
strata_cache *strata_session_cache(strata_session *s);
/* Bytes held: the live state plus what checkpoints hold beyond shared KV. */
uint64_t strata_session_state_bytes(const strata_session *s);
/* When the session was created (a fork: forked), seconds since the epoch; kept by
 * serialize / save. */
int64_t strata_session_created(const strata_session *s);

/* Make the session ready to consume `prompt` (n tokens, the whole sequence): keep
 * the longest common prefix (at most n - 1 tokens, so that the prompt's last token
 * is processed and gives logits); if the session holds more than that, restore the
 * newest checkpoint at or before it. *reused = prompt tokens already in the cache
 * (process prompt[*reused..n)); *reprocessed = tokens the session had seen that
 * must be processed again (0 when nothing diverged). With logits (may be NULL): a
 * prompt on the session's path that ends at a checkpoint keeping its logits is
 * reused whole (*reused = n, that checkpoint restored if the session went on) and
 * *logits points at them (valid until the session changes: strata_request's
 * prompt_logits); else *logits = NULL. */
strata_status strata_session_prepare(strata_session *s, const int32_t *prompt, int n, int *reused,
                                     int *reprocessed, const float **logits, strata_error *err);
/* Record that the cache consumed these tokens (after a step on its cache). */
strata_status strata_session_append(strata_session *s, const int32_t *tokens, int n, strata_error *err);
/* Bring the token list in line with a cache that consumed fewer tokens than were
 * appended (a step that failed or a request cut short). */
void strata_session_sync(strata_session *s);

/* Snapshot the current state as a checkpoint at the current position (an existing
 * one there is kept). Beyond STRATA_SESSION_MAX_CHECKPOINTS the oldest automatic
 * checkpoint goes first. */
strata_status strata_session_checkpoint(strata_session *s, int automatic, strata_error *err);
/* Keep a snapshot taken elsewhere (e.g. by on_checkpoint during prefill) as the
 * checkpoint at its position; the session takes ownership of cache and of logits
 * (NULL, or the (vocab) logits after the snapshot's last token, which let the same
 * prompt again start without a step: strata_session_prepare). */
strata_status strata_session_adopt_checkpoint(strata_session *s, strata_cache *cache, float *logits, int automatic,
                                              strata_error *err);
/* Keep automatic checkpoints within bytes of recurrent state (0: no bound, the
 * default), from now on: the oldest automatic ones go first, and one that alone
 * passes the budget is not taken. Explicit checkpoints are always kept. Forks
 * inherit it. A Nemotron-H 8B's checkpoint is 99 MiB, so 32 automatic ones would be
 * 3.2 GB. */
void strata_session_set_checkpoint_budget(strata_session *s, uint64_t bytes);
int strata_session_checkpoint_count(const strata_session *s);
/* Checkpoint i (oldest first): its position and the bytes its recurrent state holds. */
void strata_session_checkpoint_info(const strata_session *s, int i, int *position, uint64_t *bytes);
/* Go back to `position` (< n): restore the newest checkpoint at or before it; the
 * tokens from there to position are returned in *replay (*n_replay of them, malloc'd)
 * for the caller to process again. Checkpoints past position are dropped. */
strata_status strata_session_rewind(strata_session *s, int position, int32_t **replay, int *n_replay,
                                    strata_error *err);
/* A new session with the same state: recurrent state copied, KV shared. */
strata_status strata_session_fork(const strata_session *s, strata_session **out, strata_error *err);

/* The whole session (tokens, states, checkpoints) as the bytes of a .safetensors
 * file with a CRC-32 of the data in its metadata; and back. A file of another model,
 * or whose checksum fails, is refused. */
strata_status strata_session_serialize(const strata_session *s, void **bytes, size_t *len, strata_error *err);
strata_status strata_session_deserialize(const strata_model *model, const void *bytes, size_t len,
                                         strata_session **out, strata_error *err);
/* serialize to path atomically (temporary file, fsync, rename); load it back. */
strata_status strata_session_save(const strata_session *s, const char *path, strata_error *err);
/* What a saved session holds, from its file's header alone (nothing loaded or
 * verified): for listing sessions that are on disk. Files written before a figure
 * was kept give 0 for it. */
typedef struct strata_session_summary {
    int n_tokens;
    uint64_t state_bytes;       /* strata_session_state_bytes when saved */
    int64_t created;            /* strata_session_created */
    int64_t saved;              /* the file's modification time */
    int n_checkpoints;
    int checkpoint_position[STRATA_SESSION_MAX_CHECKPOINTS];
    uint64_t checkpoint_bytes[STRATA_SESSION_MAX_CHECKPOINTS];
} strata_session_summary;
strata_status strata_session_peek(const char *path, strata_session_summary *out, strata_error *err);
strata_status strata_session_load(const strata_model *model, const char *path, strata_session **out,
                                  strata_error *err);

/* ---------------------------------------------------------------- prefix cache */

/* State snapshots keyed by token prefix (a radix tree over token ids), for requests
 * without a session: a repeated system prompt or few-shot prefix is processed once.
 * A hybrid model's recurrent state exists only at the positions where it was
 * snapshotted, so the cache also reports where a new prompt branches off what it has
 * seen: snapshotting there during prefill is what lets the next request reuse it.
 * Under its byte budget it evicts the snapshots with the lowest utility, a mix of
 * recency and the prefill compute a snapshot saves per byte it holds (Marconi,
 * MLSys 2025). One thread at a time. */
typedef struct strata_prefix_cache strata_prefix_cache;

typedef struct strata_prefix_stats {
    uint64_t lookups, hits, tokens_saved, evictions;
    uint64_t bytes;             /* held by snapshots */
    int snapshots, nodes;
} strata_prefix_stats;

strata_status strata_prefix_cache_new(const strata_model *model, uint64_t budget_bytes,
                                      strata_prefix_cache **out, strata_error *err);
void strata_prefix_cache_free(strata_prefix_cache *pc);
/* For a prompt of n tokens: *fork = a copy of the snapshot with the longest prefix
 * of the prompt, or NULL; *reused = its length (0 without); *branch = how many
 * leading tokens of the prompt the cache has seen before (a checkpoint position
 * worth taking). The prefix is at most n - 1 tokens (the last token must give
 * logits) unless `logits` is given and a snapshot of the whole prompt holds its
 * last logits: then *reused = n and *logits points at them ((vocab) floats, valid
 * until the next insert or free); else *logits = NULL. */
strata_status strata_prefix_cache_lookup(strata_prefix_cache *pc, const int32_t *prompt, int n,
                                         strata_cache **fork, int *reused, int *branch, const float **logits,
                                         strata_error *err);
/* Remember prompt[0..n) and keep snapshot (owned: freed on failure too) as the state
 * after its first strata_cache_n_tokens(snapshot) tokens of it; logits (owned the
 * same way, or NULL): the logits after that last token, (vocab) floats from malloc,
 * kept with it so that the same prompt again needs no step at all. */
strata_status strata_prefix_cache_insert(strata_prefix_cache *pc, const int32_t *prompt, int n,
                                         strata_cache *snapshot, float *logits, strata_error *err);
void strata_prefix_cache_get_stats(const strata_prefix_cache *pc, strata_prefix_stats *out);

/* ---------------------------------------------------------------- constrained output */

/* Structured output (OpenAI's response_format): a constraint masks, at every step,
 * the tokens whose bytes no text of the language can continue, so the output is
 * always a prefix of a valid text and ends (with one of its end ids) only once it is
 * whole. The draw is from the model's distribution restricted to the allowed tokens,
 * exactly (see sampler.c). */

/* Each token's bytes, grouped by first byte: built once per model and tokenizer
 * (14 ms for 131072 tokens), shared read-only by every constraint. */
typedef struct strata_vocab strata_vocab;
typedef struct strata_tokenizer strata_tokenizer;  /* see "tokenizer" below */
strata_status strata_vocab_new(const strata_tokenizer *tok, int vocab_size, strata_vocab **out, strata_error *err);
void strata_vocab_free(strata_vocab *v);

typedef struct strata_constraint strata_constraint;
/* JSON output: schema is JSON Schema text (len bytes), or NULL for any JSON object
 * (OpenAI's json_object). Supported keywords: type (one or a list), enum, const,
 * properties, required, additionalProperties (bool or schema), items, minItems,
 * maxItems, minLength, maxLength, minimum / maximum / exclusiveMinimum /
 * exclusiveMaximum on integers, anyOf / oneOf of branches of different types (or all
 * enums), allOf of one schema, $ref to "#", "#/$defs/..." or
 * "#/definitions/..."; annotations (title, description,
 * default, examples, $schema, $id, strict, format) are ignored. Any other keyword
 * fails with STRATA_E_UNSUPPORTED naming it. end_ids (n_end >= 1): the tokens that
 * may end a whole text. Immutable: one constraint may serve several samplers. */
strata_status strata_constraint_new_json(const strata_vocab *v, const char *schema, size_t len,
                                         const int32_t *end_ids, int n_end, strata_constraint **out,
                                         strata_error *err);
/* A tool call, written in a chat template's syntax: prefix, the name of one of the
 * n calls (1..64; names without '<', '>', '"', '\\' or control bytes), mid, that
 * call's arguments, suffix. The arguments are a value of its schema (NULL:
 * {"type":"object"}) as JSON, or with xml the properties of that object schema as
 * "<parameter=P>\nVALUE\n</parameter>\n" (a string property's VALUE raw and never
 * holding "</parameter>", others as JSON; in any order, each once, required ones
 * present) and then "</function>": Nemotron 3's and Qwen3-Coder's syntax is
 * prefix "<tool_call>\n<function=", mid ">\n", suffix "\n</tool_call>". */
typedef struct strata_call_schema {
    const char *name;
    const char *schema;
    size_t len;
} strata_call_schema;
strata_status strata_constraint_new_call(const strata_vocab *v, const strata_call_schema *calls, int n, int xml,
                                         const char *prefix, const char *mid, const char *suffix,
                                         const int32_t *end_ids, int n_end, strata_constraint **out,
                                         strata_error *err);
void strata_constraint_free(strata_constraint *c);

/* ---------------------------------------------------------------- sampling */

/* How to pick the next token. Applied in this order: logit_bias, repetition /
 * presence / frequency penalties, then temperature 0 → argmax; otherwise temperature,
 * top_k, top_p, min_p, and a draw from the request's own random stream. */
typedef struct strata_sampling {
    float temperature;          /* 0: greedy */
    float top_p;                /* 1: off */
    int top_k;                  /* 0: off */
    float min_p;                /* 0: off */
    float presence_penalty;     /* OpenAI semantics, on generated tokens; 0: off */
    float frequency_penalty;    /* OpenAI semantics, on generated tokens; 0: off */
    float repetition_penalty;   /* HF/CTRL semantics, on prompt and generated tokens; 1: off */
    uint64_t seed;              /* the random stream; same seed + same request = same output */
    const int32_t *bias_ids;    /* logit_bias: ids and values added to their logits */
    const float *bias_values;
    int n_bias;
    int top_logprobs;           /* alternatives to report per token, 0..STRATA_MAX_TOP_LOGPROBS */
    int skip_logprob;           /* 1: leave strata_sample.logprob at 0 (saves a pass over the vocabulary) */
    const strata_constraint *constraint; /* NULL: none; else only tokens it allows, after the
                                 * penalties and before temperature and truncation; it must
                                 * outlive the sampler */
} strata_sampling;

#define STRATA_MAX_TOP_LOGPROBS 20

/* temperature 1, top_p 1, top_k 0, min_p 0, no penalties, seed 0. */
void strata_sampling_default(strata_sampling *s);

typedef struct strata_token_logprob {
    int32_t id;
    float logprob;              /* log softmax of the model's raw logits */
} strata_token_logprob;

typedef struct strata_sample {
    int32_t token;
    float logprob;
    int n_top;
    strata_token_logprob top[STRATA_MAX_TOP_LOGPROBS];
} strata_sample;

typedef struct strata_sampler strata_sampler;

/* The sampler copies what it needs of params (bias arrays included). */
strata_status strata_sampler_new(const strata_sampling *params, int vocab, strata_sampler **out,
                                 strata_error *err);
void strata_sampler_free(strata_sampler *s);
/* Count a token of the context: prompt tokens (generated = 0) feed the repetition
 * penalty only; generated tokens feed all penalties and advance the constraint. */
void strata_sampler_accept(strata_sampler *s, int32_t token, int generated);
/* Pick a token from logits (vocab); logits are not modified. */
strata_status strata_sampler_sample(strata_sampler *s, const float *logits, strata_sample *out,
                                    strata_error *err);
/* Pick a token for each of n rows at once on the runner's threads (between steps,
 * from the thread that steps it): out[i] from samplers[i] over logits[i], each as
 * strata_sampler_sample would give it. The samplers must be distinct. */
strata_status strata_runner_sample(strata_runner *runner, strata_sampler *const *samplers,
                                   const float *const *logits, strata_sample *out, int n, strata_error *err);
/* Score a given token: out->token = id, out->logprob the log softmax of logits
 * (vocab) at id, and out->top its `top` (0..STRATA_MAX_TOP_LOGPROBS) most likely
 * tokens, best first, as a sampler reports them. For echoing a prompt's logprobs. */
strata_status strata_logits_score(const float *logits, int vocab, int32_t id, int top, strata_sample *out,
                                  strata_error *err);
/* The same for n rows of logits (n, vocab) and their tokens ids (n) at once on the
 * runner's threads, out (n): row t of a prefill scores the token after it. Checks
 * every id before scoring any. Between steps, from the thread that steps the runner. */
strata_status strata_runner_score(strata_runner *runner, const float *logits, const int32_t *ids, int n, int top,
                                  strata_sample *out, strata_error *err);

/* ---------------------------------------------------------------- scheduler */

/* Continuous batching: requests arrive from any thread; the thread that calls
 * strata_scheduler_run advances all of them together, step by step. Each step mixes
 * one decode token of every running choice with a bounded chunk of a prompt still
 * being prefilled, so a long prompt never stalls the streams of others. */
typedef struct strata_scheduler strata_scheduler;

typedef enum strata_finish {
    STRATA_FINISH_STOP = 1,     /* a stop id, or on_token asked to stop */
    STRATA_FINISH_LENGTH,       /* max_tokens reached */
    STRATA_FINISH_CANCELLED,    /* strata_scheduler_cancel or shutdown */
    STRATA_FINISH_ERROR         /* the engine failed (e.g. out of memory) */
} strata_finish;

#define STRATA_MAX_CHOICES 16

typedef struct strata_request {
    const int32_t *prompt;      /* (n_prompt) copied at submit */
    int n_prompt;
    int max_tokens;             /* tokens to generate per choice, >= 0 */
    int n;                      /* choices, 1..STRATA_MAX_CHOICES; choice i draws from seed + i */
    strata_sampling sampling;
    const int32_t *stop_ids;    /* end-of-sequence ids (copied); ignored with ignore_eos */
    int n_stop_ids;
    int ignore_eos;
    int prompt_logprobs;        /* report each prompt token's logprob and its sampling.top_logprobs
                                 * alternatives (echo + logprobs) */
    /* Continue this cache instead of a fresh one: the prompt is processed on top of
     * its state (choice 0 goes on in it, other choices in copies), and the cache is
     * left to the caller, who must not touch it until on_done. */
    strata_cache *cache;
    /* The tokens `cache` already holds before `prompt` (copied at submit; none: NULL,
     * 0). They count for the repetition penalty as prompt tokens do, so a request that
     * continues a cache samples exactly as a fresh run over history + prompt would. */
    const int32_t *history;
    int n_history;
    /* With n_prompt = 0 (the cache holds the whole prompt, e.g. a prefix-cache hit of
     * all of it): the logits after its last token, (vocab) floats copied at submit;
     * each choice's first token is drawn from them, without a step. */
    const float *prompt_logits;
    /* Positions (counted in prompt tokens) where prefill pauses to call on_checkpoint,
     * and every checkpoint_every tokens (0: never); the end of the prompt always. */
    const int *checkpoint_at;
    int n_checkpoint_at;
    int checkpoint_every;
    /* Optional, owned by the caller until on_done: captures choice 0's rows (every prompt
     * token, then each generated token fed back); needs n = 1. */
    strata_capture *capture;
    /* Optional, owned by the caller until on_done: applied to every row of every choice. */
    const strata_interventions *interventions;
    /* Called on the scheduler's thread. user is passed back untouched. */
    void *user;
    /* A token of choice `choice` was sampled; return 1 to finish that choice ("stop"). */
    int (*on_token)(void *user, int choice, const strata_sample *sample);
    /* Prompt token `pos` (>= 1) and its logprob given the tokens before it. */
    void (*on_prompt_token)(void *user, int pos, const strata_sample *sample);
    /* n_prefilled of n_prompt tokens are in the cache (after each prefill chunk). */
    void (*on_progress)(void *user, int n_prefilled, int n_prompt);
    /* Prefill reached a checkpoint position: cache holds exactly the prompt's first
     * n_prefilled tokens on top of what it held before. Fork it to keep a snapshot.
     * At the end of the prompt `logits` are the logits after its last token ((vocab)
     * floats, valid during the call), elsewhere NULL. */
    void (*on_checkpoint)(void *user, const strata_cache *cache, int n_prefilled, const float *logits);
    void (*on_finish)(void *user, int choice, strata_finish reason);
    /* Last call for this request: the scheduler holds no reference to user after it. */
    void (*on_done)(void *user);
} strata_request;

typedef struct strata_scheduler_limits {
    int max_running;            /* requests advanced together */
    int max_queued;             /* waiting beyond that; more is STRATA_E_LIMIT */
    int max_step_tokens;        /* rows per step (decode tokens + prefill chunk) */
    int max_context;            /* prompt + generated tokens per choice */
} strata_scheduler_limits;

typedef struct strata_scheduler_stats {
    uint64_t requests_submitted, requests_finished, requests_cancelled;
    uint64_t prompt_tokens, generated_tokens, steps;
    double prefill_seconds, decode_seconds; /* time in steps with prefill rows / decode only */
    int running, queued;
    uint64_t state_bytes;       /* held by running requests */
} strata_scheduler_stats;

strata_status strata_scheduler_new(const strata_model *model, const strata_scheduler_limits *limits,
                                   strata_scheduler **out, strata_error *err);
/* Call after strata_scheduler_run has returned (or was never called). */
void strata_scheduler_free(strata_scheduler *s);
/* Any thread. *id identifies the request for cancel. The queue being full is
 * STRATA_E_LIMIT; a request the model cannot run is STRATA_E_INVALID / _RANGE. */
strata_status strata_scheduler_submit(strata_scheduler *s, const strata_request *req, uint64_t *id,
                                      strata_error *err);
/* Any thread; the request finishes (CANCELLED) and frees its state at the next step.
 * Unknown or finished ids are ignored. */
void strata_scheduler_cancel(strata_scheduler *s, uint64_t id);
/* The engine thread: runs steps until strata_scheduler_stop, sleeping while idle. */
void strata_scheduler_run(strata_scheduler *s);
/* Any thread: run returns after the current step; unfinished requests are cancelled. */
void strata_scheduler_stop(strata_scheduler *s);
void strata_scheduler_get_stats(strata_scheduler *s, strata_scheduler_stats *out);

/* ---------------------------------------------------------------- tokenizer */

/* A Hugging Face tokenizer.json (BPE model), reproducing the Rust `tokenizers` library
 * id for id. Supported parts: normalizers Sequence, Prepend, Replace, NFC, NFD, NFKC,
 * NFKD, Lowercase, Strip; pre-tokenizers Sequence, Split, ByteLevel, Metaspace, Digits,
 * Whitespace, WhitespaceSplit; post-processors TemplateProcessing, BertProcessing,
 * RobertaProcessing, ByteLevel, Sequence; decoders ByteLevel, Metaspace, ByteFallback,
 * Fuse, Strip, Replace, Sequence. A file using anything else (or non-null truncation /
 * padding) fails to load with STRATA_E_UNSUPPORTED naming the part. A loaded tokenizer
 * is immutable and may be shared by threads. */
typedef struct strata_tokenizer strata_tokenizer;

/* path: a tokenizer.json file, or a directory holding one. */
strata_status strata_tokenizer_load(const char *path, strata_tokenizer **out, strata_error *err);
/* The same from the bytes of a tokenizer.json already in memory (copied). */
strata_status strata_tokenizer_load_json(const char *json, size_t len, strata_tokenizer **out,
                                         strata_error *err);
void strata_tokenizer_free(strata_tokenizer *tok);

/* Encode flags. */
enum {
    /* Apply tokenizer.json's post_processor (e.g. prepend <s>), as HF's
     * add_special_tokens=True. tokenizer_config.json flags are not consulted. */
    STRATA_TOKENIZE_ADD_SPECIAL = 1u << 0,
    /* Recognise added tokens marked "special": true when they appear in the text (HF's
     * behaviour). Without this flag their strings are tokenized as ordinary text, so
     * untrusted user text cannot inject control tokens; added tokens with
     * "special": false (e.g. <think> in Nemotron 3) are recognised either way, as in
     * llama.cpp. The server passes 0 for user content. */
    STRATA_TOKENIZE_PARSE_SPECIAL = 1u << 1
};

/* Encode len bytes of UTF-8 text (may contain NUL). *ids receives a malloc'd array of
 * *n_ids ids (release with free()). Text that is not valid UTF-8 fails with
 * STRATA_E_INVALID naming the byte offset of the first invalid byte; text over 1 GiB
 * fails with STRATA_E_LIMIT. */
strata_status strata_tokenizer_encode(const strata_tokenizer *tok, const char *text, size_t len,
                                      unsigned flags, int32_t **ids, size_t *n_ids, strata_error *err);

/* Decode ids to text (HF decode): *text receives a malloc'd NUL-terminated string of
 * *len bytes (release with free()). skip_special drops added tokens marked special.
 * Invalid UTF-8 produced by byte tokens becomes U+FFFD. An id with no token fails
 * with STRATA_E_RANGE. */
strata_status strata_tokenizer_decode(const strata_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                      int skip_special, char **text, size_t *len, strata_error *err);

/* Number of ids: the largest id of the vocab or the added tokens, plus one. */
int32_t strata_tokenizer_vocab_size(const strata_tokenizer *tok);
/* The token string of an id (added tokens first, as HF), or NULL; *len (may be NULL)
 * receives its byte length. Valid while tok lives. */
const char *strata_tokenizer_id_to_token(const strata_tokenizer *tok, int32_t id, size_t *len);
/* The id of a token string (added tokens first), or -1. Use it for bos/eos by name. */
int32_t strata_tokenizer_token_to_id(const strata_tokenizer *tok, const char *token, size_t len);
/* 1 when id is an added token marked "special": true, else 0. */
int strata_tokenizer_is_special(const strata_tokenizer *tok, int32_t id);

/* The bytes each of the ids 0..n-1 adds to a decoded text in mid-stream, raw (a
 * token holding part of a UTF-8 character gives that part; no rule of the stream's
 * start applies); special tokens and ids without a token give none. *blob (malloc'd)
 * holds them back to back, id's at [(*offsets)[id], (*offsets)[id + 1]); *offsets
 * (malloc'd) has n + 1 entries. For constrained decoding (strata_vocab_new). */
strata_status strata_tokenizer_token_bytes(const strata_tokenizer *tok, int32_t n, char **blob, uint32_t **offsets,
                                           strata_error *err);

/* Streaming decoder: push ids one at a time and get text pieces whose concatenation,
 * after strata_detok_flush, equals strata_tokenizer_decode of all ids (same
 * skip_special). A piece never ends inside a UTF-8 character: an incomplete sequence
 * is held back until a later id completes it (or flush turns it into U+FFFD). With a
 * ByteFallback decoder a run of <0xNN> tokens is held until a token that is not a byte
 * ends it, because HF decodes an invalid run as one U+FFFD per byte. Leading-space
 * rules of the decoders (Metaspace, Strip) apply only at the very start of the
 * stream. Output is held back for at most 64 ids: after that (only possible with a
 * long run of broken UTF-8) the text so far is emitted, and only such a stream may
 * then differ from the whole decode. One strata_detok belongs to one thread at a time. */
typedef struct strata_detok strata_detok;

strata_status strata_detok_new(const strata_tokenizer *tok, int skip_special, strata_detok **out,
                               strata_error *err);
void strata_detok_free(strata_detok *detok);
/* Feed one id; *text / *len receive the newly completed text (possibly empty),
 * valid until the next call on detok. */
strata_status strata_detok_push(strata_detok *detok, int32_t id, const char **text, size_t *len,
                                strata_error *err);
/* End of stream: the held-back rest (possibly empty); detok is then ready for a new
 * stream. */
strata_status strata_detok_flush(strata_detok *detok, const char **text, size_t *len,
                                 strata_error *err);
/* ---------------------------------------------------------------- chat templates */

/* A parsed Hugging Face chat template (a Jinja subset rendered byte for byte as
 * transformers renders it: trim_blocks, lstrip_blocks, loopcontrols, tojson as
 * json.dumps, raise_exception, strftime_now). Immutable after parse: one template
 * may be rendered by several threads at once. */
typedef struct strata_template strata_template;

/* Parse template text. A syntax error, or a tag, filter or test outside the
 * supported subset, fails here with STRATA_E_TEMPLATE and a message naming the line
 * and the construct ("chat template line 12: filter 'xmlattr' is not supported"). */
strata_status strata_template_parse(const char *src, size_t len, strata_template **out,
                                    strata_error *err);

/* Load the template of a checkpoint directory (chat_template.jinja, else the
 * "chat_template" of chat_template.json, else of tokenizer_config.json, where it may
 * be a list of {name, template}: "default" is taken), or of a single template file.
 * The special tokens of tokenizer_config.json (bos_token, eos_token, unk_token, ...)
 * become default variables of every render. */
strata_status strata_template_load(const char *path, strata_template **out, strata_error *err);

/* Render with the variables of vars_json, the text of a JSON object ("messages",
 * "add_generation_prompt", "tools", any template kwargs; NULL means {}). Its values
 * override the loader's defaults; "tools" and "documents" are none and
 * "add_generation_prompt" false unless given. now is the ISO-8601 time strftime_now
 * formats ("2025-06-15T12:00:00"), or NULL for the local clock. On success *out is a
 * malloc'd NUL-terminated string of *out_len bytes (out_len may be NULL); free() it.
 * raise_exception(msg) fails with STRATA_E_TEMPLATE and exactly msg as the message;
 * a runaway template (too many steps, too much output or memory, recursion too deep,
 * range() over 100000 items) fails with STRATA_E_LIMIT. */
strata_status strata_template_render(const strata_template *tmpl, const char *vars_json,
                                     const char *now, char **out, size_t *out_len,
                                     strata_error *err);
void strata_template_free(strata_template *tmpl);

#ifdef __cplusplus
}
#endif
#endif /* STRATA_H */
