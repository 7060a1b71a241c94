/*
 * select.c — which kernel path this CPU runs, decided at run time from CPUID
 * (__builtin_cpu_supports), so one binary serves AVX-512, AVX2 and older CPUs.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/isa.h"

static int supported(const kernel_isa *k)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (k == &kernel_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") && k->block;
    if (k == &kernel_avx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c") && k->block;
#endif
    return k == &kernel_portable;
}

const kernel_isa *kernel_by_name(const char *name)
{
    const kernel_isa *all[] = {&kernel_avx512, &kernel_avx2, &kernel_portable};
    for (size_t i = 0; i < 3; i++)
        if (name && !strcmp(name, all[i]->name))
            return supported(all[i]) ? all[i] : NULL;
    return NULL;
}

const kernel_isa *kernel_select(void)
{
    const kernel_isa *forced = kernel_by_name(getenv("STRATA_KERNEL"));
    if (forced)
        return forced;
    if (supported(&kernel_avx512))
        return &kernel_avx512;
    if (supported(&kernel_avx2))
        return &kernel_avx2;
    return &kernel_portable;
}

void (*kernel_bf16_dot(const kernel_isa *k))(const mm_block *b)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (k->block_panels && __builtin_cpu_supports("avx512bf16"))
        return k->block_panels;
#endif
    (void)k;
    return NULL;
}
