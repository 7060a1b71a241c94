/*
 * test_hooks_glob.c — hook globs from requests: several stars in a segment, runs of
 * stars, and stars never crossing a '.', all in bounded time whatever the pattern
 * (110 stars once took exponential time; see tests/fuzz-regress/completions).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

static strata_model *M;

static void setup(void)
{
    strata_error err;
    cr_assert_eq(strata_model_load(shared_path("fixtures/models/hybrid-small"), &M, &err), STRATA_OK, "%s",
                 err.message); /* M-M*-M-M*- */
}

static void teardown(void) { strata_model_free(M); }

/* How many hooks the pattern captures (-1: refused). */
static int count(const char *pattern)
{
    strata_capture *c;
    strata_error err;
    cr_assert_eq(strata_capture_new(M, &c, &err), STRATA_OK);
    int n = strata_capture_add(c, pattern, &err) == STRATA_OK ? strata_capture_count(c) : -1;
    strata_capture_free(c);
    return n;
}

Test(hooks_glob, stars_match_within_one_segment, .init = setup, .fini = teardown)
{
    cr_expect_eq(count("blocks.*.hook_out"), 10);
    cr_expect_eq(count("blocks.***.hook_out"), 10, "a run of stars is one star");
    cr_expect_eq(count("b*s.*.h*k_*t"), 10, "several stars in several segments");
    cr_expect_eq(count("blocks.*.*_out"), 10);
    cr_expect_eq(count("blocks.*.mixer.k_c*e"), 2);
    cr_expect_eq(count("blocks.*"), -1, "a star never crosses a '.'");
    cr_expect_eq(count("*"), count("logits"), "top-level names only (logits)");
    cr_expect_eq(count("blocks.1*.hook_out"), 1, "blocks.1 only (10 layers: 0..9)");
}

Test(hooks_glob, long_star_runs_take_bounded_time, .init = setup, .fini = teardown, .timeout = 30)
{
    size_t n = 180; /* patterns are at most 200 characters */
    char *p = malloc(n + 64);
    strcpy(p, "blocks.*.ho");
    memset(p + strlen(p), '*', n);
    strcpy(p + 11 + n, "ok_out.x");
    clock_t t0 = clock();
    cr_expect_eq(count(p), -1);
    p[11 + n + 6] = '\0'; /* "...ok_out": now it matches */
    cr_expect_eq(count(p), 10);
    for (size_t i = 0; i < n; i += 2) /* "*a*a*a...": the classic exponential case */
        p[11 + i + 1] = 'a';
    cr_expect_eq(count(p), -1);
    cr_expect_lt((double)(clock() - t0) / CLOCKS_PER_SEC, 10.0);
    free(p);
}
