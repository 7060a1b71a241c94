/*
 * test_rank.c — rank.c's answers equal a full sort's: on weight sets that are
 * uniform, flat, tied, peaked and tiny, with floors, for counts, masses reached and
 * passed, with and without a limit, the token found and its place in the order are
 * those of a walk down the sorted vocabulary — on every kernel path this CPU runs
 * (vocab.h: the passes at 64, 32 and 16 bytes).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_util.h"
#include "kernels/isa.h"
#include "rank.h"

static const float *sort_w;
static int exact_sums;      /* weights whose sums are exact in any order */

/* The vocabulary passes of every kernel path this CPU runs, and their names. */
static int paths(const vocab_kernels **vk, const char **names)
{
    int n = 0;
    for (int i = 0; i < 3; i++)
        if (test_path_supported(test_all_paths[i])) {
            vk[n] = test_all_paths[i]->vocab;
            names[n++] = test_all_paths[i]->name;
        }
    return n;
}

static uint32_t key_of(float w)
{
    uint32_t k;
    memcpy(&k, &w, sizeof k);
    return k;
}

static int by_weight_desc(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    if (sort_w[x] != sort_w[y])
        return sort_w[x] < sort_w[y] ? 1 : -1;
    return x - y;
}

typedef struct reference {
    int n;                  /* tokens in the set */
    int *order;             /* (n) the set, sorted */
    double *through;        /* (n) mass from the start through each */
} reference;

static reference sorted_set(const float *e, int V, float floor)
{
    reference r = {0};
    r.order = malloc(sizeof(int) * (size_t)V);
    r.through = malloc(sizeof(double) * (size_t)V);
    for (int v = 0; v < V; v++)
        if (e[v] >= floor)
            r.order[r.n++] = v;
    sort_w = e;
    qsort(r.order, (size_t)r.n, sizeof(int), by_weight_desc);
    double m = 0;
    for (int i = 0; i < r.n; i++)
        r.through[i] = m += e[r.order[i]];
    return r;
}

/* The reference answer's index in order: the first within [0, end) reaching x. */
static int walk(const reference *r, int end, rank_by by, double x)
{
    for (int i = 0; i < end; i++) {
        int hit = by == RANK_COUNT ? i + 1 >= x : by == RANK_MASS_REACH ? r->through[i] >= x : r->through[i] > x;
        if (hit)
            return i;
    }
    return end - 1;
}

static void check(rank_set *rs, const reference *ref, const float *e, const rank_pos *limit, int end, rank_by by,
                  double x, int of_set, const char *what)
{
    double target = of_set ? x * ref->through[end - 1] : x;
    int i = walk(ref, end, by, target);
    rank_pos got = rank_find(rs, limit, by, x, of_set);
    /* a mass within rounding of a boundary may land on either side of it, unless
     * every sum is exact (exact_sums) */
    if (by != RANK_COUNT && !exact_sums && got.id != ref->order[i]) {
        double gap = fabs(ref->through[i] - target);
        if (i > 0)
            gap = fmin(gap, fabs(ref->through[i - 1] - target));
        cr_assert(gap <= 1e-9 * ref->through[end - 1], "%s: id %d, expected %d (x %g)", what, got.id,
                  ref->order[i], x);
        return;
    }
    cr_assert_eq(got.id, ref->order[i], "%s: id %d, expected %d (x %g, by %d)", what, got.id, ref->order[i], x,
                 (int)by);
    cr_assert_eq(got.count, i + 1, "%s: count %lld, expected %d", what, (long long)got.count, i + 1);
    cr_assert(fabs(got.mass - ref->through[i]) <= 1e-9 * ref->through[end - 1] + 1e-300, "%s: mass %.17g, expected %.17g",
              what, got.mass, ref->through[i]);
    cr_assert_eq(got.key, key_of(e[got.id]), "%s: key", what);
}

/* Every kind of question, over the whole set and under limits at several places. */
static void check_path(const vocab_kernels *vk, const float *e, int V, float floor, const char *name)
{
    rank_set rs;
    cr_assert(rank_set_init(&rs, V, vk));
    rank_set_build(&rs, e, V, floor);
    reference ref = sorted_set(e, V, floor);
    if (ref.n == 0) {
        cr_assert_eq(rank_find(&rs, NULL, RANK_COUNT, 1, 0).id, -1, "%s: an empty set gave a token", name);
    } else {
        const double fractions[] = {0.0, 1e-7, 0.25, 0.5, 0.9, 0.999, 1.0, 1.5};
        const int ends[] = {ref.n, 1, (ref.n + 1) / 2, ref.n > 3 ? ref.n - 2 : ref.n};
        for (size_t l = 0; l < sizeof ends / sizeof *ends; l++) {
            int end = ends[l];
            rank_pos lim = {.id = ref.order[end - 1], .count = end, .mass = ref.through[end - 1]};
            lim.key = key_of(e[lim.id]);
            const rank_pos *limit = end == ref.n ? NULL : &lim;
            for (int k = 1; k <= end; k = k < 8 ? k + 1 : k * 3)
                check(&rs, &ref, e, limit, end, RANK_COUNT, k, 0, name);
            check(&rs, &ref, e, limit, end, RANK_COUNT, end, 0, name);
            for (size_t f = 0; f < sizeof fractions / sizeof *fractions; f++) {
                check(&rs, &ref, e, limit, end, RANK_MASS_REACH, fractions[f], 1, name);
                check(&rs, &ref, e, limit, end, RANK_MASS_PASS, fractions[f], 1, name);
                check(&rs, &ref, e, limit, end, RANK_MASS_REACH, fractions[f] * ref.through[end - 1], 0, name);
            }
        }
    }
    rank_set_free(&rs);
    free(ref.order);
    free(ref.through);
}

/* check_path on every kernel path. */
static void check_all(const float *e, int V, float floor, const char *name)
{
    const vocab_kernels *vk[3];
    const char *names[3];
    for (int p = 0, n = paths(vk, names); p < n; p++) {
        char full[128];
        snprintf(full, sizeof full, "%s (%s)", name, names[p]);
        check_path(vk[p], e, V, floor, full);
    }
}

static float uniform(void)
{
    return (float)rand() / (float)RAND_MAX;
}

Test(rank, answers_equal_a_full_sort)
{
    enum { V = 12000 };
    float *e = malloc(sizeof(float) * V);
    srand(11);
    const float floors[] = {0.0f, 0.1f, 0.6f, 1.0f};
    for (int shape = 0; shape < 6; shape++) {
        for (int v = 0; v < V; v++) {
            switch (shape) {
            case 0: e[v] = uniform(); break;                                /* uniform */
            case 1: e[v] = 0.95f + 0.05f * uniform(); break;                /* flat */
            case 2: e[v] = (float)(rand() % 7) / 6.0f; break;               /* seven values, many ties */
            case 3: e[v] = expf(-30.0f * uniform()); break;                 /* peaked, long tail */
            case 4: e[v] = uniform() < 0.5f ? 0.0f : 1e-30f * uniform(); break;  /* zeros and denormal-size */
            default: e[v] = 0.5f; break;                                    /* all tied */
            }
        }
        e[V / 3] = 1.0f;                                                    /* the best token, as the sampler has */
        for (size_t f = 0; f < sizeof floors / sizeof *floors; f++) {
            char name[64];
            snprintf(name, sizeof name, "shape %d, floor %g", shape, floors[f]);
            check_all(e, V, floors[f], name);
        }
    }
    free(e);
}

/* Weights in quarters: every running sum is exact, so a mass equal to a running sum
 * must be reached at that token and passed at the next. */
Test(rank, reach_and_pass_at_exact_boundaries)
{
    enum { V = 5000 };
    static float e[V];
    srand(5);
    for (int v = 0; v < V; v++)
        e[v] = 0.25f * (float)(1 + rand() % 4);
    reference ref = sorted_set(e, V, 0.0f);
    const vocab_kernels *vk[3];
    const char *names[3];
    for (int p = 0, n = paths(vk, names); p < n; p++) {
        rank_set rs;
        cr_assert(rank_set_init(&rs, V, vk[p]));
        rank_set_build(&rs, e, V, 0.0f);
        exact_sums = 1;
        for (int i = 0; i + 1 < V; i += 97) {
            check(&rs, &ref, e, NULL, V, RANK_MASS_REACH, ref.through[i], 0, names[p]);
            check(&rs, &ref, e, NULL, V, RANK_MASS_PASS, ref.through[i], 0, names[p]);
            cr_assert_eq(rank_find(&rs, NULL, RANK_MASS_REACH, ref.through[i], 0).count, i + 1, "%s", names[p]);
            cr_assert_eq(rank_find(&rs, NULL, RANK_MASS_PASS, ref.through[i], 0).count, i + 2, "%s", names[p]);
        }
        exact_sums = 0;
        rank_set_free(&rs);
    }
    check_all(e, V, 0.0f, "quarters");
    free(ref.order);
    free(ref.through);
}

Test(rank, small_sets)
{
    float e[20];
    for (int n = 1; n <= 20; n++) {
        for (int v = 0; v < n; v++)
            e[v] = v % 3 == 0 ? 1.0f : 0.25f * (float)(v % 5);
        char name[32];
        snprintf(name, sizeof name, "n %d", n);
        check_all(e, n, 0.0f, name);
        check_all(e, n, 0.3f, name);
    }
}
