/*
 * prefix_cache.c — the server-wide prefix cache (see strata.h): a radix tree over
 * token ids whose nodes may hold a state snapshot (a cache fork) taken after
 * exactly the tokens on the path to them.
 *
 * Invariants: a node's depth is the number of tokens from the root; every snapshot
 * sits at the node whose depth equals its n_tokens; logits are held only beside a
 * snapshot (the logits after its last token: a prompt that ends there needs no step);
 * children of a node start with distinct tokens; `bytes` is the sum of the
 * snapshots' accounted sizes, their logits included.
 *
 * Eviction (Marconi): utility = recency + ALPHA · efficiency, both normalized to
 * [0, 1] over the snapshots held, where efficiency = prefill FLOPs the snapshot
 * saves / bytes it holds. Hybrid models make long-prefix snapshots cheap (the
 * recurrent part is fixed-size), so they are worth keeping even if a little older.
 */
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "core/error.h"

#define ALPHA 1.0
#define MAX_NODES 100000

typedef struct node {
    int32_t *edge;          /* tokens from the parent to here */
    int edge_len;
    int depth;
    struct node *parent;
    struct node **kids;
    int n_kids;
    strata_cache *snap;     /* state after `depth` tokens, or NULL */
    float *logits;          /* (vocab) the logits after those tokens, or NULL */
    uint64_t snap_bytes;    /* the snapshot's and its logits' */
    uint64_t last_use;      /* logical clock */
} node;

struct strata_prefix_cache {
    const strata_model *model;
    uint64_t budget;
    node root;
    uint64_t clock;
    strata_prefix_stats stats;
};

strata_status strata_prefix_cache_new(const strata_model *model, uint64_t budget_bytes,
                                      strata_prefix_cache **out, strata_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    (*out)->model = model;
    (*out)->budget = budget_bytes;
    (*out)->stats.nodes = 1;
    return STRATA_OK;
}

static void free_subtree(node *n)
{
    for (int i = 0; i < n->n_kids; i++) {
        free_subtree(n->kids[i]);
        free(n->kids[i]);
    }
    free(n->kids);
    free(n->edge);
    strata_cache_free(n->snap);
    free(n->logits);
}

void strata_prefix_cache_free(strata_prefix_cache *pc)
{
    if (!pc)
        return;
    free_subtree(&pc->root);
    free(pc);
}

static node *child_starting(const node *n, int32_t t)
{
    for (int i = 0; i < n->n_kids; i++)
        if (n->kids[i]->edge[0] == t)
            return n->kids[i];
    return NULL;
}

/* Walk the prompt down the tree: the deepest node fully matched, how many tokens
 * matched in total (into the next edge too), and the deepest snapshot at most
 * `limit` deep on the way. */
static node *walk(strata_prefix_cache *pc, const int32_t *p, int n, int limit, int *matched, node **snap)
{
    node *at = &pc->root;
    *matched = 0;
    *snap = NULL;
    for (;;) {
        if (at->snap && at->depth <= limit)
            *snap = at;
        node *next = *matched < n ? child_starting(at, p[*matched]) : NULL;
        if (!next)
            return at;
        int k = 0;
        while (k < next->edge_len && *matched + k < n && next->edge[k] == p[*matched + k])
            k++;
        *matched += k;
        if (k < next->edge_len)
            return at;
        at = next;
    }
}

strata_status strata_prefix_cache_lookup(strata_prefix_cache *pc, const int32_t *prompt, int n,
                                         strata_cache **fork, int *reused, int *branch, const float **logits,
                                         strata_error *err)
{
    *fork = NULL;
    *reused = 0;
    *branch = 0;
    if (!pc || n < 1)
        return STRATA_OK;
    if (logits)
        *logits = NULL;
    node *snap, *at = walk(pc, prompt, n, n - 1, branch, &snap);
    pc->stats.lookups++;
    if (logits && at->depth == n && at->snap && at->logits) {
        snap = at;          /* the whole prompt, its last logits kept too */
        *logits = at->logits;
    }
    if (!snap)
        return STRATA_OK;
    strata_status st = strata_cache_copy(snap->snap, fork, err);
    if (st != STRATA_OK) {
        if (logits)
            *logits = NULL;
        return st;
    }
    snap->last_use = ++pc->clock;
    *reused = snap->depth;
    pc->stats.hits++;
    pc->stats.tokens_saved += (uint64_t)snap->depth;
    return STRATA_OK;
}

static node *new_node(const int32_t *edge, int len, node *parent)
{
    node *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->edge = malloc(sizeof *edge * (size_t)(len > 0 ? len : 1));
    if (!x->edge) {
        free(x);
        return NULL;
    }
    memcpy(x->edge, edge, sizeof *edge * (size_t)len);
    x->edge_len = len;
    x->parent = parent;
    x->depth = parent->depth + len;
    return x;
}

static int add_kid(node *parent, node *kid)
{
    node **grown = realloc(parent->kids, sizeof *grown * (size_t)(parent->n_kids + 1));
    if (!grown)
        return 0;
    parent->kids = grown;
    parent->kids[parent->n_kids++] = kid;
    kid->parent = parent;
    return 1;
}

/* Split next's edge after k tokens: a new middle node at depth parent + k. */
static node *split(strata_prefix_cache *pc, node *parent, node *next, int k)
{
    node *mid = new_node(next->edge, k, parent);
    if (!mid)
        return NULL;
    for (int i = 0; i < parent->n_kids; i++)
        if (parent->kids[i] == next)
            parent->kids[i] = mid;
    memmove(next->edge, next->edge + k, sizeof *next->edge * (size_t)(next->edge_len - k));
    next->edge_len -= k;
    if (!add_kid(mid, next)) {
        /* leave the tree as it was */
        memmove(next->edge + k, next->edge, sizeof *next->edge * (size_t)next->edge_len);
        memcpy(next->edge, mid->edge, sizeof *next->edge * (size_t)k);
        next->edge_len += k;
        for (int i = 0; i < parent->n_kids; i++)
            if (parent->kids[i] == mid)
                parent->kids[i] = next;
        free(mid->edge);
        free(mid);
        return NULL;
    }
    pc->stats.nodes++;
    return mid;
}

/* A new leaf under `at` holding the prompt's tokens from at's depth to `depth`. */
static node *add_leaf(strata_prefix_cache *pc, node *at, const int32_t *p, int depth)
{
    if (pc->stats.nodes >= MAX_NODES)
        return NULL;
    node *leaf = new_node(p + at->depth, depth - at->depth, at);
    if (!leaf || !add_kid(at, leaf)) {
        if (leaf)
            free(leaf->edge);
        free(leaf);
        return NULL;
    }
    pc->stats.nodes++;
    return leaf;
}

/* The node at exactly `depth` on the prompt's path, creating what is missing. */
static node *node_at(strata_prefix_cache *pc, const int32_t *p, int depth)
{
    node *at = &pc->root;
    while (at->depth < depth) {
        node *next = child_starting(at, p[at->depth]);
        if (!next)
            return add_leaf(pc, at, p, depth);
        int k = 0, room = depth - at->depth;
        while (k < next->edge_len && k < room && next->edge[k] == p[at->depth + k])
            k++;
        if (k == next->edge_len) {
            at = next;
            continue;
        }
        node *mid = split(pc, at, next, k);
        if (!mid)
            return NULL;
        at = mid;
        if (k < room) /* diverges inside the edge: hang a new leaf off the middle */
            return add_leaf(pc, at, p, depth);
    }
    return at;
}

/* Prefill FLOPs a snapshot at `depth` saves: ~2 per parameter per token. */
static double flops_saved(const strata_model *m, int depth)
{
    return 2.0 * (double)m->cfg.info.n_params * (double)depth;
}

typedef struct pick { node *worst; double score; uint64_t min_use, max_use; double min_eff, max_eff; } pick;

static void scan(const strata_prefix_cache *pc, node *n, pick *p, int pass)
{
    if (n->snap) {
        double eff = flops_saved(pc->model, n->depth) / (double)(n->snap_bytes ? n->snap_bytes : 1);
        if (pass == 0) {
            p->min_use = n->last_use < p->min_use ? n->last_use : p->min_use;
            p->max_use = n->last_use > p->max_use ? n->last_use : p->max_use;
            p->min_eff = eff < p->min_eff ? eff : p->min_eff;
            p->max_eff = eff > p->max_eff ? eff : p->max_eff;
        } else {
            double r = p->max_use > p->min_use ? (double)(n->last_use - p->min_use) / (double)(p->max_use - p->min_use) : 1.0;
            double e = p->max_eff > p->min_eff ? (eff - p->min_eff) / (p->max_eff - p->min_eff) : 1.0;
            double score = r + ALPHA * e;
            if (!p->worst || score < p->score) {
                p->worst = n;
                p->score = score;
            }
        }
    }
    for (int i = 0; i < n->n_kids; i++)
        scan(pc, n->kids[i], p, pass);
}

static void evict_until_within_budget(strata_prefix_cache *pc)
{
    while (pc->stats.bytes > pc->budget && pc->stats.snapshots > 0) {
        pick p = {.min_use = UINT64_MAX, .min_eff = 1e300, .max_eff = -1};
        scan(pc, &pc->root, &p, 0);
        scan(pc, &pc->root, &p, 1);
        if (!p.worst)
            break;
        strata_cache_free(p.worst->snap);
        free(p.worst->logits);
        p.worst->snap = NULL;
        p.worst->logits = NULL;
        pc->stats.bytes -= p.worst->snap_bytes;
        pc->stats.snapshots--;
        pc->stats.evictions++;
    }
}

strata_status strata_prefix_cache_insert(strata_prefix_cache *pc, const int32_t *prompt, int n,
                                         strata_cache *snapshot, float *logits, strata_error *err)
{
    int depth = snapshot ? strata_cache_n_tokens(snapshot) : 0;
    if (!pc || !snapshot || depth < 1 || depth > n || snapshot->model != pc->model) {
        strata_cache_free(snapshot);
        free(logits);
        return strata_fail(err, STRATA_E_INVALID, "prefix cache: snapshot does not fit the prompt");
    }
    uint64_t bytes = strata_cache_state_bytes(snapshot);
    uint64_t logit_bytes = sizeof(float) * (uint64_t)pc->model->cfg.info.vocab_size;
    node *at = bytes + logit_bytes <= pc->budget ? node_at(pc, prompt, depth) : NULL;
    if (!at) {
        strata_cache_free(snapshot);
        free(logits);
        return STRATA_OK; /* over budget or the tree is full: simply not cached */
    }
    if (at->snap) {
        strata_cache_free(snapshot); /* same state already held */
    } else {
        at->snap = snapshot;
        at->snap_bytes = bytes;
        pc->stats.bytes += bytes;
        pc->stats.snapshots++;
    }
    if (logits && !at->logits) {
        at->logits = logits;
        at->snap_bytes += logit_bytes;
        pc->stats.bytes += logit_bytes;
    } else {
        free(logits);   /* the same logits already held, or not wanted */
    }
    at->last_use = ++pc->clock;
    evict_until_within_budget(pc);
    return STRATA_OK;
}

void strata_prefix_cache_get_stats(const strata_prefix_cache *pc, strata_prefix_stats *out)
{
    *out = pc->stats;
}
