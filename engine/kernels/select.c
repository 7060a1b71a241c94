/*
 * select.c — which kernel path this CPU runs, decided at run time from CPUID
 * (__builtin_cpu_supports), so one binary serves AVX-512, AVX2 and older CPUs.
 */
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

#include "kernels/isa.h"

#if defined(__x86_64__) && defined(__GNUC__)
/* CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports does not know "f16c"). */
static int has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

static int supported(const kernel_isa *k)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (k == &kernel_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("fma") && has_f16c() && k->block;
    if (k == &kernel_avx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c() && k->block;
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

/* A CPU feature asked of CPUID once (the scan asks for AVX512_BF16 for every head it
 * runs on a BF16 state, rmsnorm for AVX2 on every row); threads racing on the first
 * call all store the same answer. */
#if defined(__x86_64__) && defined(__GNUC__)
#define CPU_FEATURE(NAME, FEATURE)                                                                 \
    int NAME(void)                                                                                 \
    {                                                                                              \
        static int known = -1;                                                                     \
        int has = __atomic_load_n(&known, __ATOMIC_RELAXED);                                       \
        if (has < 0) {                                                                             \
            __builtin_cpu_init();                                                                  \
            has = __builtin_cpu_supports(FEATURE) != 0;                                            \
            __atomic_store_n(&known, has, __ATOMIC_RELAXED);                                       \
        }                                                                                          \
        return has;                                                                                \
    }
#else
#define CPU_FEATURE(NAME, FEATURE)                                                                 \
    int NAME(void)                                                                                 \
    {                                                                                              \
        return 0;                                                                                  \
    }
#endif

CPU_FEATURE(cpu_has_bf16, "avx512bf16")
CPU_FEATURE(cpu_has_avx2, "avx2")

void (*kernel_bf16_dot(const kernel_isa *k))(const mm_block *b)
{
    return k->block_panels && cpu_has_bf16() ? k->block_panels : NULL;
}
