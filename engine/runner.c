/*
 * runner.c — strata_runner_step: one forward step over several sequences, reading
 * top-down like the math:
 *
 *   x = E[tokens]                               (R, d)
 *   for each layer i:  x = x + mixer_i(rmsnorm(x))
 *   logits = rmsnorm(x; norm_f) · W_lmᵀ         rows each sequence asked for
 *
 * A step runs as passes of at most pass_rows rows (sequences in order, each pass
 * continuing where the last left off): a row's arithmetic never depends on the
 * rows beside it, so the passes give one pass's bits, and the workspace stays
 * bounded by the pass, not the prompt.
 *
 * Invariant: everything that can fail (validation, KV growth, capture storage,
 * workspace for the largest pass) happens before the first cache is touched, so a
 * failed step leaves every cache as it was.
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "forward.h"

struct strata_runner {
    const strata_model *model;
    float *ws;              /* step workspace */
    size_t ws_cap;
    exec ex;                /* kernel path, thread pool, matmul panels */
    int pass_rows;          /* rows per pass (strata_runner_set_pass_rows) */
    int seq_cap;            /* sequences the three arrays below hold */
    int *off;               /* (seq_cap + 1) a pass's row offsets */
    int *done;              /* (seq_cap) tokens of each sequence already run */
    strata_seq *pass;       /* (seq_cap) the current pass's slices */
};

#define DEFAULT_PASS_ROWS 256

static int widest_input(const strata_model *model)
{
    const strata_model_info *m = &model->cfg.info;
    int w[] = {m->hidden_size, m->d_inner, m->intermediate_size, m->moe_intermediate_size,
               m->shared_intermediate_size, m->attn_heads * m->head_dim, model->cfg.moe_latent_size};
    int best = 1;
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        best = w[i] > best ? w[i] : best;
    return best;
}

strata_status strata_runner_new(const strata_model *model, strata_runner **out, strata_error *err)
{
    *out = NULL;
    if (!model)
        return strata_fail(err, STRATA_E_INVALID, "no model");
    strata_runner *r = calloc(1, sizeof *r);
    if (!r)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    strata_status s = exec_init(&r->ex, pool_default_threads(), widest_input(model), err);
    if (s == STRATA_OK && (s = exec_set_bf16(&r->ex, model->compute_bf16, err)) == STRATA_OK)
        s = exec_set_int8(&r->ex, model->compute_int8, err);
    if (s != STRATA_OK && r->ex.panels)
        exec_destroy(&r->ex);
    if (s != STRATA_OK) {
        free(r);
        return s;
    }
    r->model = model;
    r->pass_rows = DEFAULT_PASS_ROWS;
    *out = r;
    return STRATA_OK;
}

strata_status strata_runner_set_pass_rows(strata_runner *r, int rows, strata_error *err)
{
    if (!r)
        return strata_fail(err, STRATA_E_INVALID, "no runner");
    if (rows < 1 || rows > (1 << 20))
        return strata_fail(err, STRATA_E_INVALID, "rows per pass %d is outside [1, %d]", rows, 1 << 20);
    r->pass_rows = rows;
    return STRATA_OK;
}

strata_status strata_runner_set_threads(strata_runner *r, int n_threads, strata_error *err)
{
    if (!r)
        return strata_fail(err, STRATA_E_INVALID, "no runner");
    if (n_threads == 0)
        n_threads = pool_default_threads();
    if (n_threads < 1 || n_threads > 256)
        return strata_fail(err, STRATA_E_INVALID, "thread count %d is outside [1, 256]", n_threads);
    if (n_threads == r->ex.n_threads)
        return STRATA_OK;
    exec fresh;
    STRATA_TRY(exec_init(&fresh, n_threads, widest_input(r->model), err));
    strata_status s = exec_set_bf16(&fresh, r->ex.bf16, err);
    if (s == STRATA_OK)
        s = exec_set_int8(&fresh, r->ex.q8x, err);
    if (s == STRATA_OK)
        s = exec_reserve(&fresh, r->ex.room.rows_cap, err);
    if (s != STRATA_OK) {
        exec_destroy(&fresh);
        return s;
    }
    exec_destroy(&r->ex);
    r->ex = fresh;
    return STRATA_OK;
}

int strata_runner_threads(const strata_runner *r)
{
    return r ? r->ex.n_threads : 0;
}

const char *strata_runner_kernel(const strata_runner *r)
{
    return r ? r->ex.isa->name : kernel_select()->name;
}

void strata_runner_free(strata_runner *r)
{
    if (!r)
        return;
    exec_destroy(&r->ex);
    free(r->ws);
    free(r->off);
    free(r->done);
    free(r->pass);
    free(r);
}

void hook_rows(step *s, hook_point p, int li, void *rows)
{
    if (!s->hooked)
        return;
    size_t w = hook_width(s->model, p);
    for (int q = 0; q < s->n_seqs; q++) {
        strata_seq *seq = &s->seqs[q];
        float *mine = (float *)rows + (size_t)s->off[q] * w;
        int n = s->off[q + 1] - s->off[q];
        if (seq->interventions)
            interventions_apply(seq->interventions, p, li, mine, seq->cache->n_tokens, n);
        int e = seq->capture ? capture_entry(seq->capture, p, li) : -1;
        if (e >= 0)
            capture_append(seq->capture, e, mine, n);
    }
}

const strata_interventions *step_row_interventions(const step *s, int r, int *pos)
{
    int q = 0;
    while (q + 1 < s->n_seqs && s->off[q + 1] <= r)
        q++;
    *pos = s->seqs[q].cache->n_tokens + r - s->off[q];
    return s->seqs[q].interventions;
}

/* Rows of sequence q that need logits: all of them, or the last one. */
static int wants_all_logits(const strata_seq *seq)
{
    return seq->all_logits || (seq->capture && capture_wants_logits(seq->capture));
}

static int logit_rows(const strata_seq *seq)
{
    return wants_all_logits(seq) ? seq->n_tokens : (seq->logits ? 1 : 0);
}

static strata_status validate(strata_runner *run, strata_seq *seqs, int n, strata_error *err)
{
    const strata_model_info *m = &run->model->cfg.info;
    if (n <= 0 || !seqs)
        return strata_fail(err, STRATA_E_INVALID, "a step needs at least one sequence");
    for (int q = 0; q < n; q++) {
        const strata_seq *s = &seqs[q];
        if (!s->cache || s->cache->model != run->model)
            return strata_fail(err, STRATA_E_INVALID, "sequence %d: cache missing or of another model", q);
        if (s->n_tokens <= 0 || !s->tokens)
            return strata_fail(err, STRATA_E_INVALID, "sequence %d: no tokens", q);
        if (s->n_tokens > (1 << 24) || s->cache->n_tokens > (1 << 28) - s->n_tokens)
            return strata_fail(err, STRATA_E_LIMIT, "sequence %d: too many tokens", q);
        for (int t = 0; t < s->n_tokens; t++)
            if (s->tokens[t] < 0 || s->tokens[t] >= m->vocab_size)
                return strata_fail(err, STRATA_E_RANGE, "sequence %d: token %d at position %d is outside "
                                   "the vocabulary [0, %d)", q, s->tokens[t], t, m->vocab_size);
        for (int p = 0; p < q; p++)
            if (seqs[p].cache == s->cache)
                return strata_fail(err, STRATA_E_INVALID, "sequences %d and %d share a cache", p, q);
        if (s->capture && capture_model(s->capture) != run->model)
            return strata_fail(err, STRATA_E_INVALID, "sequence %d: capture of another model", q);
        if (s->interventions && interventions_model(s->interventions) != run->model)
            return strata_fail(err, STRATA_E_INVALID, "sequence %d: interventions of another model", q);
    }
    return STRATA_OK;
}

/* Workspace floats for a pass of R rows: residual, norm and mixer rows, the largest
 * layer's needs (attention's for the step's last key), and the logits rows. */
static size_t workspace_need(const strata_model *model, strata_seq *seqs, int n, int R, int n_threads)
{
    const strata_model_info *m = &model->cfg.info;
    int max_keys = 0, lrows = 0;
    for (int q = 0; q < n; q++) {
        int keys = seqs[q].cache->n_tokens + seqs[q].n_tokens;
        max_keys = keys > max_keys ? keys : max_keys;
        lrows += logit_rows(&seqs[q]);
    }
    lrows = lrows < R ? lrows : R;
    size_t layer = mlp_scratch(model, R);
    size_t cand[] = {model->n_mamba ? mamba2_scratch(model, R, n_threads) : 0,
                     model->n_attn ? attention_scratch(model, R, max_keys, n_threads) : 0,
                     strchr(m->pattern, 'E') ? moe_scratch(model, R, n_threads) : 0};
    for (size_t i = 0; i < 3; i++)
        layer = cand[i] > layer ? cand[i] : layer;
    size_t head = (size_t)lrows * ((size_t)m->hidden_size + (size_t)m->vocab_size) + 64;
    return 3 * ((size_t)R * (size_t)m->hidden_size + 16) + (layer > head ? layer : head);
}

/* Room for n sequences in the pass arrays. */
static strata_status reserve_seqs(strata_runner *run, int n, strata_error *err)
{
    if (n <= run->seq_cap)
        return STRATA_OK;
    int *off = realloc(run->off, sizeof *off * (size_t)(n + 1));
    run->off = off ? off : run->off;
    int *done = off ? realloc(run->done, sizeof *done * (size_t)n) : NULL;
    run->done = done ? done : run->done;
    strata_seq *pass = done ? realloc(run->pass, sizeof *pass * (size_t)n) : NULL;
    run->pass = pass ? pass : run->pass;
    if (!pass)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    run->seq_cap = n;
    return STRATA_OK;
}

/* Everything a step of these sequences can need, its largest pass R rows. */
static strata_status reserve(strata_runner *run, strata_seq *seqs, int n, int R, strata_error *err)
{
    for (int q = 0; q < n; q++) {
        STRATA_TRY(cache_reserve(seqs[q].cache, seqs[q].cache->n_tokens + seqs[q].n_tokens, err));
        if (seqs[q].capture)
            STRATA_TRY(capture_reserve(seqs[q].capture, seqs[q].n_tokens, seqs[q].cache->n_tokens + seqs[q].n_tokens, err));
    }
    STRATA_TRY(reserve_seqs(run, n, err));
    STRATA_TRY(exec_reserve(&run->ex, R, err));
    size_t need = workspace_need(run->model, seqs, n, R, run->ex.n_threads);
    if (need > run->ws_cap) {
        float *grown = realloc(run->ws, sizeof(float) * need);
        if (!grown)
            return strata_fail(err, STRATA_E_NOMEM, "out of memory: a pass of %d rows needs %zu MiB of workspace",
                               R, need * 4 >> 20);
        run->ws = grown;
        run->ws_cap = need;
    }
    return STRATA_OK;
}

static void embed(step *s, float *x)
{
    const strata_model *model = s->model;
    size_t d = (size_t)model->cfg.info.hidden_size;
    for (int q = 0; q < s->n_seqs; q++)
        for (int t = 0; t < s->seqs[q].n_tokens; t++)
            mat_row_f32(&model->embed, s->seqs[q].tokens[t], x + (size_t)(s->off[q] + t) * d);
}

typedef struct norm_job {
    float *out;
    const float *x, *w;
    int d;
    float eps;
} norm_job;

static void norm_rows(void *arg, int lo, int hi)
{
    const norm_job *J = arg;
    for (int r = lo; r < hi; r++)
        rmsnorm(J->out + (size_t)r * (size_t)J->d, J->x + (size_t)r * (size_t)J->d, J->w, J->d, J->eps);
}

/* out (R, d) = rmsnorm of each row of x, rows split over the threads. */
static void norm_all(step *s, float *out, const float *x, const float *w)
{
    const strata_model_info *m = &s->model->cfg.info;
    norm_job J = {out, x, w, m->hidden_size, m->norm_eps};
    exec_for(s->ex, s->R, (double)s->R * m->hidden_size, norm_rows, &J);
}

typedef struct add_job {
    float *x;
    const float *v;
    size_t d;
} add_job;

static void add_rows(void *arg, int lo, int hi)
{
    const add_job *J = arg;
    for (size_t i = (size_t)lo * J->d; i < (size_t)hi * J->d; i++)
        J->x[i] += J->v[i];
}

void step_add_rows(step *s, float *x, const float *v, int width)
{
    add_job J = {x, v, (size_t)width};
    exec_for(s->ex, s->R, (double)s->R * width, add_rows, &J);
}

static void run_layer(step *s, int li, float *x, float *h, float *mix)
{
    const strata_model *model = s->model;
    const layer *l = &model->layers[li];
    int d = model->cfg.info.hidden_size;
    size_t mark = s->ws_used;
    hook_rows(s, HOOK_BLOCK_IN, li, x);
    norm_all(s, h, x, l->norm_w);
    hook_rows(s, HOOK_MIXER_IN, li, h);
    switch (l->kind) {
    case 'M': mamba2_forward(s, li, h, mix); break;
    case '*': attention_forward(s, li, h, mix); break;
    case '-': mlp_forward(s, li, h, mix); break;
    default: moe_forward(s, li, h, mix); break;
    }
    hook_rows(s, HOOK_MIXER_OUT, li, mix);
    step_add_rows(s, x, mix, d);       /* the residual stream */
    hook_rows(s, HOOK_BLOCK_OUT, li, x);
    s->ws_used = mark;
}

/* Where the LM head can write its rows in place: every sequence with logit rows
 * receives all of them (all_logits, or its one last row) and their buffers lie one
 * after another, as the scheduler's and the bench's do. Saves copying rows × vocab
 * floats on one thread (8 MiB a step at 16 sessions of the 470m). NULL where not. */
static float *logits_in_place(const step *s, size_t V)
{
    float *base = NULL;
    size_t o = 0;
    for (int q = 0; q < s->n_seqs; q++) {
        const strata_seq *seq = &s->seqs[q];
        int n = logit_rows(seq);
        if (n == 0)
            continue;
        if (!seq->logits || n != (seq->all_logits ? seq->n_tokens : 1) || (base && seq->logits != base + o * V))
            return NULL;
        base = base ? base : seq->logits;
        o += (size_t)n;
    }
    return base;
}

/* Final norm, then logits for the rows each sequence asked for. */
static void head(step *s, float *x, float *h)
{
    const strata_model *model = s->model;
    const strata_model_info *m = &model->cfg.info;
    size_t d = (size_t)m->hidden_size, V = (size_t)m->vocab_size;
    norm_all(s, h, x, model->norm_f);
    hook_rows(s, HOOK_LN_FINAL_OUT, -1, h);
    int total = 0;
    for (int q = 0; q < s->n_seqs; q++)
        total += logit_rows(&s->seqs[q]);
    if (!total)
        return;
    float *hsel = step_alloc(s, (size_t)total * d);    // (rows, d)
    float *direct = logits_in_place(s, V);
    float *lsel = direct ? direct : step_alloc(s, (size_t)total * V);    // (rows, V)
    int o = 0;
    for (int q = 0; q < s->n_seqs; q++) {
        int n = logit_rows(&s->seqs[q]), first = s->off[q + 1] - n;
        memcpy(hsel + (size_t)o * d, h + (size_t)first * d, sizeof(float) * (size_t)n * d);
        o += n;
    }
    matmul(lsel, hsel, total, &model->lm_head, s->ex);
    o = 0;
    for (int q = 0; q < s->n_seqs; q++) {
        strata_seq *seq = &s->seqs[q];
        int n = logit_rows(seq);
        if (s->hooked && seq->interventions)
            interventions_apply(seq->interventions, HOOK_LOGITS, -1, lsel + (size_t)o * V,
                                seq->cache->n_tokens + seq->n_tokens - n, n);
        if (seq->logits && !direct)
            memcpy(seq->logits, lsel + (size_t)(seq->all_logits ? o : o + n - 1) * V,
                   sizeof(float) * (seq->all_logits ? (size_t)n : 1) * V);
        int e = seq->capture ? capture_entry(seq->capture, HOOK_LOGITS, -1) : -1;
        if (e >= 0)
            capture_append(seq->capture, e, lsel + (size_t)o * V, n);
        o += n;
    }
}

/* One pass: the forward over n sequence slices of R rows in all. */
static void run_pass(strata_runner *run, strata_seq *seqs, int n, int R, int hooked)
{
    run->off[0] = 0;
    for (int q = 0; q < n; q++)
        run->off[q + 1] = run->off[q] + seqs[q].n_tokens;
    step s = {.model = run->model, .seqs = seqs, .n_seqs = n, .off = run->off, .R = R,
              .hooked = hooked, .ws = run->ws, .ws_cap = run->ws_cap, .ex = &run->ex};
    size_t d = (size_t)run->model->cfg.info.hidden_size;
    float *x = step_alloc(&s, (size_t)R * d);      // (R, d) residual stream
    float *h = step_alloc(&s, (size_t)R * d);      // (R, d) normed input of the mixer
    float *mix = step_alloc(&s, (size_t)R * d);    // (R, d) mixer output
    embed(&s, x);
    hook_rows(&s, HOOK_EMBED_OUT, -1, x);
    for (int li = 0; li < run->model->cfg.info.n_layers; li++)
        run_layer(&s, li, x, h, mix);
    head(&s, x, h);
    for (int q = 0; q < n; q++)
        seqs[q].cache->n_tokens += seqs[q].n_tokens;
}

/* The next pass's slices into run->pass: each sequence's next tokens, in order,
 * up to pass_rows rows. A slice writes logits only where the whole step would:
 * its rows of all_logits, or the sequence's last token. Returns the slices. */
static int next_pass(strata_runner *run, const strata_seq *seqs, int n, int *rows)
{
    size_t V = (size_t)run->model->cfg.info.vocab_size;
    int m = 0, budget = run->pass_rows;
    for (int q = 0; q < n && budget > 0; q++) {
        int from = run->done[q], take = seqs[q].n_tokens - from;
        if (take == 0)
            continue;
        take = take < budget ? take : budget;
        strata_seq *p = &run->pass[m++];
        *p = seqs[q];
        p->tokens += from;
        p->n_tokens = take;
        int last = from + take == seqs[q].n_tokens;
        p->logits = !seqs[q].logits ? NULL
                  : seqs[q].all_logits ? seqs[q].logits + (size_t)from * V
                  : last ? seqs[q].logits : NULL;
        run->done[q] += take;
        budget -= take;
    }
    *rows = run->pass_rows - budget;
    return m;
}

typedef struct sample_job {
    strata_sampler *const *samplers;
    const float *const *logits;
    strata_sample *out;
} sample_job;

static void sample_rows(void *arg, int lo, int hi)
{
    const sample_job *J = arg;
    for (int i = lo; i < hi; i++)
        strata_sampler_sample(J->samplers[i], J->logits[i], &J->out[i], NULL);
}

/* Rows split evenly over the threads: a row costs a few passes over the vocabulary
 * whatever its settings (sampler.c). */
strata_status strata_runner_sample(strata_runner *r, strata_sampler *const *samplers, const float *const *logits,
                                   strata_sample *out, int n, strata_error *err)
{
    if (!r || n < 0 || (n > 0 && (!samplers || !logits || !out)))
        return strata_fail(err, STRATA_E_INVALID, "runner_sample: missing argument");
    for (int i = 0; i < n; i++)
        if (!samplers[i] || !logits[i])
            return strata_fail(err, STRATA_E_INVALID, "runner_sample: row %d has no sampler or logits", i);
    sample_job J = {samplers, logits, out};
    exec_for(&r->ex, n, (double)n * r->model->cfg.info.vocab_size * 4, sample_rows, &J);
    return STRATA_OK;
}

typedef struct score_job {
    const float *logits;        /* (n, vocab) */
    const int32_t *ids;         /* (n) */
    int vocab, top;
    strata_sample *out;         /* (n) */
} score_job;

static void score_rows(void *arg, int lo, int hi)
{
    const score_job *J = arg;
    for (int i = lo; i < hi; i++)
        strata_logits_score(J->logits + (size_t)i * (size_t)J->vocab, J->vocab, J->ids[i], J->top, &J->out[i], NULL);
}

strata_status strata_runner_score(strata_runner *r, const float *logits, const int32_t *ids, int n, int top,
                                  strata_sample *out, strata_error *err)
{
    if (!r || n < 0 || (n > 0 && (!logits || !ids || !out)))
        return strata_fail(err, STRATA_E_INVALID, "runner_score: missing argument");
    int vocab = r->model->cfg.info.vocab_size;
    if (top < 0 || top > STRATA_MAX_TOP_LOGPROBS)
        return strata_fail(err, STRATA_E_INVALID, "runner_score: top must be 0..%d, not %d", STRATA_MAX_TOP_LOGPROBS,
                           top);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return strata_fail(err, STRATA_E_INVALID, "runner_score: row %d's token %d is outside the vocabulary of %d",
                               i, ids[i], vocab);
    score_job J = {logits, ids, vocab, top, out};
    exec_for(&r->ex, n, (double)n * vocab * 4, score_rows, &J);
    return STRATA_OK;
}

strata_status strata_runner_step(strata_runner *run, strata_seq *seqs, int n, strata_error *err)
{
    if (!run)
        return strata_fail(err, STRATA_E_INVALID, "no runner");
    STRATA_TRY(validate(run, seqs, n, err));
    int R = 0, hooked = 0;
    for (int q = 0; q < n; q++) {
        R += seqs[q].n_tokens;
        hooked |= seqs[q].capture != NULL && strata_capture_count(seqs[q].capture) > 0;
        hooked |= strata_interventions_count(seqs[q].interventions) > 0;
    }
    STRATA_TRY(reserve(run, seqs, n, R < run->pass_rows ? R : run->pass_rows, err));
    memset(run->done, 0, sizeof *run->done * (size_t)n);
    for (int left = R, rows; left > 0; left -= rows) {
        int m = next_pass(run, seqs, n, &rows);
        run_pass(run, run->pass, m, rows, hooked);
    }
    for (int q = 0; q < n; q++)
        if (seqs[q].capture)
            capture_states(seqs[q].capture, seqs[q].cache);
    return STRATA_OK;
}
