/*
 * seed_session.c — writes the seed corpus of the session_import target: sessions of
 * the demo model (empty; a few tokens with a checkpoint) as export produces them.
 * Usage: seed_session MODEL_DIR OUT_DIR
 */
#include <stdio.h>
#include <stdlib.h>

#include "strata.h"

static int save(const strata_session *s, const char *dir, const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    strata_error err;
    if (strata_session_save(s, path, &err) != STRATA_OK) {
        fprintf(stderr, "seed_session: %s\n", err.message);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    strata_model *m;
    strata_runner *r;
    strata_session *s;
    strata_error err;
    if (argc != 3 || strata_model_load(argv[1], &m, &err) != STRATA_OK || strata_runner_new(m, &r, &err) != STRATA_OK ||
        strata_session_new(m, &s, &err) != STRATA_OK) {
        fprintf(stderr, "usage: seed_session MODEL_DIR OUT_DIR\n");
        return 2;
    }
    int rc = save(s, argv[2], "empty.safetensors");
    const int32_t t[] = {1, 1165, 276, 2102, 7};
    strata_seq q = {.cache = strata_session_cache(s), .tokens = t, .n_tokens = 3};
    if (strata_runner_step(r, &q, 1, &err) != STRATA_OK || strata_session_append(s, t, 3, &err) != STRATA_OK ||
        strata_session_checkpoint(s, 0, &err) != STRATA_OK)
        return 1;
    q.tokens = t + 3;
    q.n_tokens = 2;
    if (strata_runner_step(r, &q, 1, &err) != STRATA_OK || strata_session_append(s, t + 3, 2, &err) != STRATA_OK)
        return 1;
    rc |= save(s, argv[2], "five_tokens.safetensors");
    strata_session_free(s);
    strata_runner_free(r);
    strata_model_free(m);
    return rc;
}
