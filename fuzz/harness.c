/*
 * harness.c — the libFuzzer entry point of one target, chosen at build time with
 * -DFUZZ_TARGET='"name"' (see `make fuzz`).
 */
#include <stdlib.h>

#include "targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const fuzz_target *t;
    if (!t && !(t = fuzz_target_find(FUZZ_TARGET)))
        abort();
    return t->run(data, size);
}
