/*
 * util.h — helpers shared by the test files: fixture paths, tolerance checks in the
 * fixtures README's terms, temporary directories and running the CLI.
 */
#ifndef STRATA_TESTS_UTIL_H
#define STRATA_TESTS_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "model/safetensors.h"
#include "strata.h"

/* $STRATA_SHARED/rel (default ../shared/rel), in a static buffer per call site slot. */
const char *shared_path(const char *rel);
/* The fixture model directories, NULL-terminated (includes the shipped demo model). */
extern const char *const fixture_models[];

/* max|a − b| over n floats. */
double max_abs_diff(const float *a, const float *b, size_t n);
double max_abs(const float *a, size_t n);
/* The README's tolerance: max|actual − expected| <= 1e-4 + 1e-4 · max|expected|. */
int within_tolerance(const float *actual, const float *expected, size_t n, double *diff, double *tol);
int argmax_f(const float *v, int n);

/* A fresh empty directory under /tmp (caller frees the string). */
char *make_temp_dir(void);
void remove_tree(const char *dir);
/* Copy a file; returns 0 on success. */
int copy_file(const char *from, const char *to);
/* Run a shell command, capture stdout (malloc'd) and the exit status. */
int run_capture(const char *cmd, char **out);
/* The CLI binary under test. */
const char *cli_path(void);

#endif
