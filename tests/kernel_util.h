/*
 * kernel_util.h — helpers of the kernel tests (test_kernels.c, test_q8.c): a
 * seeded random stream, BF16 rounding, the kernel paths this CPU runs, and an exec
 * on a chosen path.
 */
#ifndef STRATA_TESTS_KERNEL_UTIL_H
#define STRATA_TESTS_KERNEL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

/* Uniform in [-1, 1), from a fixed seed (a 64-bit LCG). */
float test_frand(void);
/* n values of test_frand() (caller frees). */
float *test_vec_random(size_t n);
/* f rounded to BF16, to nearest even. */
uint16_t test_to_bf16(float f);

/* portable, avx2, avx512 */
extern const kernel_isa *const test_all_paths[3];
int test_path_supported(const kernel_isa *k);
/* e on path isa with `threads` threads for inputs up to `widest`; bf16: the bf16
 * compute mode with room for 40 rows of x. Asserts on failure. */
void test_exec_with(exec *e, const kernel_isa *isa, int threads, int widest, int bf16);

#endif
