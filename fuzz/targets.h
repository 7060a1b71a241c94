/*
 * targets.h — the fuzz targets: one function per input format strata accepts from
 * outside (files it loads, request bodies, session files). libFuzzer drives them
 * from fuzz/harness.c; tests/test_fuzz_regress.c replays the inputs that once
 * crashed them, so the same code runs in `make fuzz` and in `make test`.
 */
#ifndef STRATA_FUZZ_TARGETS_H
#define STRATA_FUZZ_TARGETS_H

#include <stddef.h>
#include <stdint.h>

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

typedef struct fuzz_target {
    const char *name;           /* also the directory of its seeds and regressions */
    fuzz_fn run;
} fuzz_target;

extern const fuzz_target fuzz_targets[];
extern const int fuzz_n_targets;

/* The target called name, or NULL. */
const fuzz_target *fuzz_target_find(const char *name);

#endif
