/*
 * jobs.h — a generation in flight: one HTTP request's prompts submitted to the
 * scheduler, the engine-thread side that turns sampled tokens into text (streaming
 * detokenizer, stop strings), the events it posts to the loop thread, and the loop
 * side that builds the JSON response or the SSE chunks.
 */
#ifndef STRATA_SERVER_JOBS_H
#define STRATA_SERVER_JOBS_H

#include "http.h"

#define MAX_STOP 4
#define MAX_PROMPTS 64

typedef struct gen_params {
    int chat;
    int stream, include_usage, echo;
    int logprobs;               /* -1: off; otherwise alternatives per token */
    int n, max_tokens, ignore_eos;
    strata_sampling sampling;   /* bias arrays point into bias_ids / bias_values; constraint at constraint */
    strata_constraint *constraint; /* response_format (NULL: free text) */
    json_t *tools;              /* chat tools whose calls the answer reports (tool_choice auto); NULL: none */
    int reasoning;              /* reasoning_format "deepseek": <think> blocks go to reasoning_content */
    int think_open;             /* the prompt left a <think> block open: the answer starts in it */
    int one_call;               /* parallel_tool_calls: false: report the first call only */
    int32_t *bias_ids;
    float *bias_values;
    char *stop[MAX_STOP];
    int n_stop;
    int32_t *prompts[MAX_PROMPTS];
    int prompt_len[MAX_PROMPTS];
    char *prompt_text[MAX_PROMPTS]; /* for echo; NULL: decode the ids */
    int n_prompts;
    char session_id[72];        /* run on this session: one prompt, n = 1 */
    int checkpoint_at;          /* where the generation prompt starts (a snapshot there pays off next turn) */
    int checkpoint_at2;         /* where the last message starts (e.g. the end of a shared system prompt) */
    int response;               /* RESP_*: what the finished job answers */
    int replayed;               /* a rewind's tokens processed again */
    int status;                 /* HTTP status of a successful answer */
    /* steering and captures (activations.h): per prompt, and choice 0 of prompt 0 */
    strata_interventions *iv[MAX_PROMPTS];
    strata_capture *capture;
} gen_params;

enum { RESP_COMPLETION = 0, RESP_SESSION };

void gen_params_free(gen_params *p);

typedef struct gen_job gen_job;

/* Submit every prompt of p (taken over by the job) for request r. On failure the
 * error response is already queued. */
enum MHD_Result job_start(http_req *r, gen_params *p);
/* Apply the events the engine thread posted (loop thread; uv_async callback). */
void jobs_drain(server *srv);
/* Every second: cancel jobs past the request timeout or whose client went away. */
void jobs_sweep(server *srv);
/* Shutdown: the jobs still running are about to be cancelled for reason `why`
 * ("shutting_down"), which their error responses will name. */
void jobs_cut(server *srv, const char *why);
/* Jobs still running (for shutdown). */
int jobs_active(const server *srv);

#endif
