/* test_error.c — the error helpers every module reports through. */
#include <criterion/criterion.h>
#include <string.h>

#include "core/error.h"

Test(error, fail_fills_message_and_returns_status)
{
    strata_error err = {0};
    strata_status s = strata_fail(&err, STRATA_E_WEIGHTS, "tensor %s missing", "x.weight");
    cr_assert_eq(s, STRATA_E_WEIGHTS);
    cr_assert_eq(err.status, STRATA_E_WEIGHTS);
    cr_assert_str_eq(err.message, "tensor x.weight missing");
    strata_fail_prefix(&err, STRATA_E_WEIGHTS, "%s: ", "model.safetensors");
    cr_assert_str_eq(err.message, "model.safetensors: tensor x.weight missing");
    cr_assert_str_eq(strata_status_name(STRATA_E_IO), "io");
    cr_assert_eq(strata_fail(NULL, STRATA_E_IO, "no sink"), STRATA_E_IO);
}
