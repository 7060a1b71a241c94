/*
 * vocab.c — vocab_impl.h compiled once per kernel path, each at its vector width
 * and under its target (the rest of the build stays baseline x86-64).
 */
#include <float.h>
#include <stdint.h>
#include <string.h>

#include "kernels/vocab.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx2,fma,f16c") /* what select.c asks of the CPU */
#define VP avx512
#define VL 16
#define VANY(m)                                                                                   \
    do {                                                                                          \
        m |= __builtin_shufflevector(m, m, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7); \
        m |= __builtin_shufflevector(m, m, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11); \
        m |= __builtin_shufflevector(m, m, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13); \
        m |= __builtin_shufflevector(m, m, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14); \
    } while (0)
#include "kernels/vocab_impl.h"
#undef VP
#undef VL
#undef VANY
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define VP avx2
#define VL 8
#define VANY(m)                                                                   \
    do {                                                                          \
        m |= __builtin_shufflevector(m, m, 4, 5, 6, 7, 0, 1, 2, 3);               \
        m |= __builtin_shufflevector(m, m, 2, 3, 0, 1, 6, 7, 4, 5);               \
        m |= __builtin_shufflevector(m, m, 1, 0, 3, 2, 5, 4, 7, 6);               \
    } while (0)
#include "kernels/vocab_impl.h"
#undef VP
#undef VL
#undef VANY
#pragma GCC pop_options
#else
const vocab_kernels vocab_avx512, vocab_avx2;
#endif

#define VP portable
#define VL 4
#define VANY(m)                                                                   \
    do {                                                                          \
        m |= __builtin_shufflevector(m, m, 2, 3, 0, 1);                           \
        m |= __builtin_shufflevector(m, m, 1, 0, 3, 2);                           \
    } while (0)
#include "kernels/vocab_impl.h"
