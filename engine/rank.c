/*
 * rank.c — the grouping and the descent of rank.h. A weight >= 0 read as a uint32
 * (its key) orders like the weight, so the order by weight is the order by keys.
 * Groups are equal ranges of keys from the floor's up to 1.0's, RANK_GROUPS of them:
 * (key - base) >> shift. A question walks the groups from the highest, takes the
 * group where x falls out of the vocabulary (a vector pass over a range of weights),
 * splits it by the next 12 bits below shift, and so on down to bit 0, keeping one
 * bucket each time. After the last bits every token left has the same weight, and
 * they follow in id order, as ties do in the order.
 *
 * Invariant: during a question, `at` holds the count and mass of every token of the
 * (restricted) set ranked before the tokens still being refined.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rank.h"

#define RANK_GROUPS VOCAB_GROUPS
#define SUB_BITS 12
#define RANK_SUB (1 << SUB_BITS)
#define COPIES VOCAB_COPIES /* counters per group, used in turn: a flat vocabulary puts
                               runs of tokens in one group, and one counter would make
                               each increment wait on the last. Side by side, not
                               RANK_GROUPS apart: copies 4 KiB apart stalled on false
                               store-to-load dependencies (5 ns a token) */

int rank_set_init(rank_set *r, int vocab, const vocab_kernels *vk)
{
    memset(r, 0, sizeof *r);
    r->vk = vk;
    r->count = malloc(COPIES * (RANK_GROUPS + 1) * sizeof *r->count);
    r->mass = malloc(COPIES * (RANK_GROUPS + 1) * sizeof *r->mass);
    r->members = malloc((size_t)vocab * sizeof *r->members);
    r->sub_count = malloc(RANK_SUB * sizeof *r->sub_count);
    r->sub_mass = malloc(RANK_SUB * sizeof *r->sub_mass);
    return r->count && r->mass && r->members && r->sub_count && r->sub_mass;
}

void rank_set_free(rank_set *r)
{
    free(r->count);
    free(r->mass);
    free(r->members);
    free(r->sub_count);
    free(r->sub_mass);
}

static uint32_t key_of(float w)
{
    uint32_t k;
    memcpy(&k, &w, sizeof k);
    return k;
}

static int group_of_key(const rank_set *r, uint32_t key)
{
    uint32_t g = (key - r->base) >> r->shift;
    return g < RANK_GROUPS ? (int)g : RANK_GROUPS - 1;
}

static int at_or_before(uint32_t key, int32_t id, const rank_pos *limit)
{
    return !limit || key > limit->key || (key == limit->key && id <= limit->id);
}

static int reaches(rank_by by, int64_t count, double mass, double x)
{
    switch (by) {
    case RANK_COUNT:
        return (double)count >= x;
    case RANK_MASS_REACH:
        return mass >= x;
    default:
        return mass > x;
    }
}

void rank_set_build(rank_set *r, const float *e, int n, float floor)
{
    r->e = e;
    r->n = n;
    r->base = key_of(floor);
    r->shift = 0;
    while (((key_of(1.0f) - r->base) >> r->shift) >= RANK_GROUPS)
        r->shift++;
    memset(r->count, 0, COPIES * (RANK_GROUPS + 1) * sizeof *r->count);
    memset(r->mass, 0, COPIES * (RANK_GROUPS + 1) * sizeof *r->mass);
    r->vk->count_groups(e, n, floor, r->base, r->shift, r->count, r->mass);
    for (int g = 0; g < RANK_GROUPS; g++) {     /* in place: group g's copies lie at or after g */
        uint32_t c = 0;
        double w = 0;
        for (int k = 0; k < COPIES; k++) {
            c += r->count[g * COPIES + k];
            w += r->mass[g * COPIES + k];
        }
        r->count[g] = c;
        r->mass[g] = w;
    }
}

/* The buckets of bits (shift, bits) of key - base over members[0 .. m): counts and sums into
 * sub_count / sub_mass; the lowest bucket used. */
static int fill_sub(rank_set *r, int m, int shift, int bits)
{
    uint32_t mask = (1u << bits) - 1, low = mask;
    memset(r->sub_count, 0, sizeof(uint32_t) << bits);
    memset(r->sub_mass, 0, sizeof(double) << bits);
    for (int i = 0; i < m; i++) {
        float w = r->e[r->members[i]];
        uint32_t b = ((key_of(w) - r->base) >> shift) & mask;
        r->sub_count[b]++;
        r->sub_mass[b] += w;
        low = b < low ? b : low;
    }
    return (int)low;
}

/* From bucket `high` down to `low` (both used): the first where the running quantity
 * reaches *x, `at` gaining every bucket passed. If none does, the lowest, and *x
 * becomes infinite so that the descent goes on to the set's last token. */
static int crossing(const uint32_t *count, const double *mass, int high, int low, rank_by by, double *x,
                    rank_pos *at)
{
    for (int b = high; b > low; b--) {
        if (!count[b])
            continue;
        if (reaches(by, at->count + count[b], at->mass + mass[b], *x))
            return b;
        at->count += count[b];
        at->mass += mass[b];
    }
    if (!reaches(by, at->count + count[low], at->mass + mass[low], *x))
        *x = INFINITY;
    return low;
}

/* Keep those of members[0 .. m) in bucket b of bits (shift, bits), in order. */
static int keep_bucket(rank_set *r, int m, int shift, int bits, int b)
{
    uint32_t mask = (1u << bits) - 1;
    int kept = 0;
    for (int i = 0; i < m; i++)
        if (((key_of(r->e[r->members[i]]) - r->base) >> shift & mask) == (uint32_t)b)
            r->members[kept++] = r->members[i];
    return kept;
}

/* Group g's tokens at or before limit into members; how many, and their mass. */
static int take_group(rank_set *r, int g, const rank_pos *limit, double *mass)
{
    uint32_t lo = r->base + ((uint32_t)g << r->shift);
    uint32_t span = g == RANK_GROUPS - 1 ? UINT32_MAX - lo : 1u << r->shift;
    int m = r->vk->take_range(r->e, r->n, lo, span, r->members), kept = 0;
    *mass = 0;
    for (int i = 0; i < m; i++) {
        int32_t id = r->members[i];
        if (at_or_before(key_of(r->e[id]), id, limit)) {
            r->members[kept++] = id;
            *mass += r->e[id];
        }
    }
    return kept;
}

rank_pos rank_find(rank_set *r, const rank_pos *limit, rank_by by, double x, int of_set)
{
    rank_pos at = {.id = -1};
    /* groups below the limit's are out; the limit's own group only in part */
    int lg = limit ? group_of_key(r, limit->key) : 0, low = lg, high = RANK_GROUPS - 1;
    while (high >= low && !r->count[high])
        high--;
    if (high < low)
        return at;
    uint32_t saved_count = r->count[lg];        /* restored below: the set is reused */
    double saved_mass = r->mass[lg];
    int part = limit ? take_group(r, lg, limit, &r->mass[lg]) : 0; /* its tokens stay in members */
    if (limit)
        r->count[lg] = (uint32_t)part;
    while (low < high && !r->count[low])
        low++;
    if (of_set) {
        double total = 0;
        for (int g = high; g >= low; g--)
            total += r->mass[g];
        x *= total;
    }
    int g = r->count[low] ? crossing(r->count, r->mass, high, low, by, &x, &at) : -1;
    r->count[lg] = saved_count;
    r->mass[lg] = saved_mass;
    if (g < 0)
        return at;
    double unused;
    int m = limit && g == lg ? part : take_group(r, g, NULL, &unused);
    for (int shift = r->shift; shift > 0 && m > 1;) {
        int bits = shift < SUB_BITS ? shift : SUB_BITS;
        shift -= bits;
        int b = crossing(r->sub_count, r->sub_mass, (1 << bits) - 1, fill_sub(r, m, shift, bits), by, &x, &at);
        m = keep_bucket(r, m, shift, bits, b);
    }
    /* the tokens left share one weight (or are one token): in id order */
    for (int i = 0; i < m; i++) {
        at.id = r->members[i];
        at.key = key_of(r->e[at.id]);
        at.count++;
        at.mass += r->e[at.id];
        if (reaches(by, at.count, at.mass, x))
            break;
    }
    return at;
}
