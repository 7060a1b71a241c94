/*
 * activations.h — the interpretability routes: GET /v1/hooks, POST /v1/activations
 * (captures and interventions over one or several runs), the JSON form of
 * interventions shared with the OpenAI routes (steering), and the writers that
 * stream captured tensors as JSON, .npy or .safetensors.
 */
#ifndef STRATA_SERVER_ACTIVATIONS_H
#define STRATA_SERVER_ACTIVATIONS_H

#include <jansson.h>

#include "http.h"

struct act_job;

/* ---------------------------------------------------------------- interventions_json.c */

/* Where a patch takes its rows from: the capture of an earlier run and its length. */
typedef struct patch_source {
    const strata_capture *capture;
    int n_tokens;
} patch_source;

/* Positions: "all" (*ids = NULL), "last", an index, or a list; negatives count from
 * the end of n tokens. check_range: fail outside [-n, n). Returns 1, or 0 with e set. */
int positions_parse(json_t *v, int n, int check_range, int32_t **ids, int *count, api_error *e);
/* Build the interventions of a request of n_tokens tokens from a JSON list. sources
 * (n_sources earlier runs) feed "patch"; without sources patch is refused. */
/* origin: the sequence position of the request's first token (a session's length). */
int interventions_from_json(const server *srv, json_t *list, int origin, int n_tokens, const patch_source *sources,
                            int n_sources, strata_interventions **out, api_error *e);
/* Hooks a list of interventions patches from: calls add(user, run, hook) for each. */
int interventions_patch_hooks(json_t *list, int (*add)(void *user, int run, const char *hook, api_error *e),
                              void *user, api_error *e);

/* ---------------------------------------------------------------- tensor_out.c */

typedef enum out_format { OUT_JSON, OUT_NPY, OUT_SAFETENSORS } out_format;

typedef struct out_tensor {
    char name[200];
    strata_dtype dtype;
    int ndim;
    int64_t shape[4];           /* as returned */
    const char *data;           /* the capture's row-major data */
    size_t outer, inner;        /* elements: blocks before the selected axis, after it */
    int64_t src_rows;           /* length of the selected axis in data */
    const int *rows;            /* selected indices of that axis (NULL: all src_rows) */
    int n_rows;
    const int *positions;       /* JSON "positions" (NULL: none) */
    int n_positions;
} out_tensor;

/* One run's part of the output. */
typedef struct out_run {
    const int32_t *ids;
    int n_ids;
    char **pieces;              /* (n_ids) token texts */
    out_tensor *t;
    int n_t;
} out_run;

typedef struct out_stream out_stream;

/* The bytes of the whole response (exact for npy / safetensors, an estimate for JSON). */
uint64_t out_size(const out_run *runs, int n_runs, out_format f);
/* A stream over runs (borrowed until out_stream_free); model for the JSON / metadata. */
out_stream *out_stream_new(const out_run *runs, int n_runs, out_format f, const char *model, int usage_tokens);
/* Fill buf with up to max next bytes; 0 at the end. */
size_t out_stream_read(out_stream *s, char *buf, size_t max);
void out_stream_free(out_stream *s);
/* Bytes of an exact binary body (npy / safetensors), for Content-Length. */
uint64_t out_stream_total(const out_stream *s);
/* The "activations" JSON object of one run, whole (small results of /v1/completions). */
void out_json_object(strbuf *b, const out_tensor *t, int n_t);

/* ---------------------------------------------------------------- routes_activations.c */

/* The JSON object {name: {shape, dtype, positions, data}} of a generation's capture,
 * per-position hooks narrowed to rows first .. first + n - 1. */
void activations_json(strbuf *b, const strata_capture *cap, int first, int n);
/* A generation's captures (JSON, `generated` rows of a sequence of n_tokens) within
 * --max-activation-bytes; else 0 and the 413. */
int generation_capture_fits(const server *srv, const strata_capture *cap, int n_tokens, int generated, api_error *e);
/* The "interventions" and "activations" fields of /v1/completions and chat. */
int generation_hooks_parse(const server *srv, json_t *body, const int *prompt_len, int n_prompts, int n,
                           strata_interventions **iv, strata_capture **cap, api_error *e);

enum MHD_Result route_hooks(http_req *r);
enum MHD_Result route_activations(http_req *r);
enum MHD_Result route_activations_resumed(http_req *r);
void route_activations_closed(http_req *r);
/* Apply the engine thread's finished runs (loop thread, on wake). */
void activations_drain(server *srv);

#endif
