/*
 * vec16.h — 16-lane fp32 / int32 vectors by GCC's vector extensions, for the
 * sampler's passes over the vocabulary (sampler.c, rank.c). Functions using them
 * are built with target_clones, so one source runs as AVX-512, AVX2 or baseline
 * code; vectors are loaded and stored with memcpy and never passed by value (a
 * vector argument would change the ABI between the clones).
 */
#ifndef STRATA_VEC16_H
#define STRATA_VEC16_H

#include <stdint.h>
#include <string.h>

typedef float vec16 __attribute__((vector_size(64)));
typedef int32_t ivec16 __attribute__((vector_size(64)));
typedef uint32_t uvec16 __attribute__((vector_size(64)));

#define VEC16_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

/* Every lane v: compare with this, not with a plain float, which GCC lowers lane by
 * lane. (A macro: returning a vector would change the ABI between the clones.) */
#define VEC16_SET(v) ((vec16){0} + (v))

/* Whether any lane of a comparison's result is set: an OR across the lanes by
 * shuffles. Through memory, or after an AND of two comparisons, GCC (12) lowered
 * the comparison lane by lane in the clones. */
#define VEC16_ANY(m) vec16_any(&(m))
static inline __attribute__((always_inline)) int vec16_any(const ivec16 *mask)
{
    ivec16 m = *mask;
    m |= __builtin_shufflevector(m, m, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    m |= __builtin_shufflevector(m, m, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    m |= __builtin_shufflevector(m, m, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    m |= __builtin_shufflevector(m, m, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return m[0] != 0;
}

#endif
