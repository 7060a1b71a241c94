/*
 * kernel_util.c — see kernel_util.h.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_util.h"

static uint64_t rng_state = 0x1234567;

float test_frand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) & 0xffffff) / 8388608.0f - 1.0f;   /* [-1, 1) */
}

float *test_vec_random(size_t n)
{
    float *v = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        v[i] = test_frand();
    return v;
}

uint16_t test_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

const kernel_isa *const test_all_paths[3] = {&kernel_portable, &kernel_avx2, &kernel_avx512};

int test_path_supported(const kernel_isa *k)
{
    return kernel_by_name(k->name) == k;
}

void test_exec_with(exec *e, const kernel_isa *isa, int threads, int widest, int bf16)
{
    strata_error err;
    cr_assert_eq(exec_init(e, threads, widest, &err), STRATA_OK, "%s", err.message);
    e->isa = isa;
    cr_assert_eq(exec_set_bf16(e, bf16, &err), STRATA_OK);
    cr_assert_eq(exec_reserve(e, 40, &err), STRATA_OK);
}
