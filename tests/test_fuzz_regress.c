/*
 * test_fuzz_regress.c — every input that once crashed a fuzz target (kept under
 * tests/fuzz-regress/<target>/) is fed again to the same target function of
 * fuzz/targets.c, so a fixed crash stays fixed in `make test` and `make asan`
 * without clang or libFuzzer.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#include "../fuzz/targets.h"
#include "util.h"

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Replays one target's saved inputs; returns how many. */
static int replay(const fuzz_target *t)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fuzz-regress/%s", getenv("STRATA_ROOT") ? getenv("STRATA_ROOT") : ".", t->name);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        unsigned char *bytes = slurp(path, &len);
        cr_log_info("fuzz regression %s/%s", t->name, e->d_name);
        t->run(bytes, len);
        free(bytes);
        n++;
    }
    closedir(d);
    return n;
}

Test(fuzz_regress, every_saved_input_runs_clean, .timeout = 300)
{
    int total = 0;
    for (int i = 0; i < fuzz_n_targets; i++)
        total += replay(&fuzz_targets[i]);
    cr_assert_gt(total, 0, "no saved inputs found under tests/fuzz-regress");
}
