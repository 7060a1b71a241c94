/*
 * test_session.c — sessions in the engine: continuing equals a fresh run, forks and
 * rewinds are exact, divergent prompts restore a checkpoint instead of starting
 * over, and a session survives serialization (and refuses corruption).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define V 512

static strata_model *M;
static strata_runner *R;
static int32_t ids[200];

static void setup(void)
{
    strata_error err;
    cr_assert_eq(strata_model_load(shared_path("fixtures/models/moe-small"), &M, &err), STRATA_OK);
    cr_assert_eq(strata_runner_new(M, &R, &err), STRATA_OK);
    for (int i = 0; i < 200; i++)
        ids[i] = (int32_t)((i * 53 + 7) % V);
}

static void teardown(void)
{
    strata_runner_free(R);
    strata_model_free(M);
}

/* Feed tokens to a session (one step) and record them; logits of the last one. */
static void feed(strata_session *s, const int32_t *t, int n, float *logits)
{
    strata_error err;
    strata_seq q = {.cache = strata_session_cache(s), .tokens = t, .n_tokens = n, .logits = logits};
    cr_assert_eq(strata_runner_step(R, &q, 1, &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(strata_session_append(s, t, n, &err), STRATA_OK);
}

static void fresh_logits(const int32_t *t, int n, float *logits)
{
    strata_error err;
    strata_session *s;
    cr_assert_eq(strata_session_new(M, &s, &err), STRATA_OK);
    feed(s, t, n, logits);
    strata_session_free(s);
}

TestSuite(session, .init = setup, .fini = teardown, .timeout = 60);

Test(session, continuing_equals_a_fresh_run)
{
    strata_error err;
    strata_session *s;
    float a[V], b[V];
    cr_assert_eq(strata_session_new(M, &s, &err), STRATA_OK);
    feed(s, ids, 70, a);
    feed(s, ids + 70, 9, a);
    feed(s, ids + 79, 1, a);
    fresh_logits(ids, 80, b);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    cr_assert_eq(strata_session_n_tokens(s), 80);
    strata_session_free(s);
}

Test(session, fork_then_both_ways_equals_independent_runs)
{
    strata_error err;
    strata_session *s, *f;
    float a[V], b[V], fa[V], fb[V];
    cr_assert_eq(strata_session_new(M, &s, &err), STRATA_OK);
    feed(s, ids, 100, a);
    cr_assert_eq(strata_session_fork(s, &f, &err), STRATA_OK);
    feed(s, ids + 100, 10, a);
    feed(f, ids + 150, 10, b);
    int32_t other[110];
    memcpy(other, ids, 100 * 4);
    memcpy(other + 100, ids + 150, 10 * 4);
    fresh_logits(ids, 110, fa);
    fresh_logits(other, 110, fb);
    cr_assert_eq(memcmp(a, fa, sizeof a), 0);
    cr_assert_eq(memcmp(b, fb, sizeof b), 0);
    strata_session_free(s);
    strata_session_free(f);
}

Test(session, rewind_restores_a_checkpoint_and_replays)
{
    strata_error err;
    strata_session *s;
    float a[V], b[V];
    cr_assert_eq(strata_session_new(M, &s, &err), STRATA_OK);
    feed(s, ids, 30, a);
    cr_assert_eq(strata_session_checkpoint(s, 0, &err), STRATA_OK);
    feed(s, ids + 30, 40, a);
    cr_assert_eq(strata_session_checkpoint(s, 1, &err), STRATA_OK);
    cr_assert_eq(strata_session_checkpoint_count(s), 2);
    int32_t *replay;
    int n;
    cr_assert_eq(strata_session_rewind(s, 50, &replay, &n, &err), STRATA_OK);
    cr_assert_eq(n, 20, "from the checkpoint at 30 up to 50");
    cr_assert_eq(strata_session_n_tokens(s), 30);
    cr_assert_eq(strata_session_checkpoint_count(s), 1, "the checkpoint at 70 is gone");
    feed(s, replay, n, a);
    free(replay);
    feed(s, ids + 120, 5, a);
    int32_t want[55];
    memcpy(want, ids, 50 * 4);
    memcpy(want + 50, ids + 120, 5 * 4);
    fresh_logits(want, 55, b);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    cr_assert_eq(strata_session_rewind(s, 99, &replay, &n, &err), STRATA_E_RANGE);
    strata_session_free(s);
}

Test(session, a_divergent_prompt_restores_the_newest_checkpoint_before_it)
{
    strata_error err;
    strata_session *s;
    float a[V], b[V];
    cr_assert_eq(strata_session_new(M, &s, &err), STRATA_OK);
    feed(s, ids, 40, a);
    cr_assert_eq(strata_session_checkpoint(s, 1, &err), STRATA_OK);
    feed(s, ids + 40, 20, a);
    cr_assert_eq(strata_session_checkpoint(s, 1, &err), STRATA_OK);
    /* the new prompt agrees on 50 tokens, then differs */
    int32_t prompt[70];
    memcpy(prompt, ids, 50 * 4);
    memcpy(prompt + 50, ids + 130, 20 * 4);
    int reused, reprocessed;
    cr_assert_eq(strata_session_prepare(s, prompt, 70, &reused, &reprocessed, NULL, &err), STRATA_OK);
    cr_assert_eq(reused, 40);
    cr_assert_eq(reprocessed, 10);
    feed(s, prompt + reused, 70 - reused, a);
    fresh_logits(prompt, 70, b);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    /* an extension reuses everything; the same prompt again reprocesses only its last token */
    cr_assert_eq(strata_session_prepare(s, prompt, 70, &reused, &reprocessed, NULL, &err), STRATA_OK);
    cr_assert_eq(reused, 40, "back to the checkpoint before the last token");
    strata_session_free(s);
}

Test(session, serialization_round_trip_and_corruption)
{
    strata_error err;
    strata_session *s, *t;
    float a[V], b[V];
    cr_assert_eq(strata_session_new(M, &s, &err), STRATA_OK);
    feed(s, ids, 90, a);
    cr_assert_eq(strata_session_checkpoint(s, 0, &err), STRATA_OK);
    feed(s, ids + 90, 10, a);
    void *bytes;
    size_t len;
    cr_assert_eq(strata_session_serialize(s, &bytes, &len, &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(strata_session_deserialize(M, bytes, len, &t, &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(strata_session_n_tokens(t), 100);
    cr_assert_eq(strata_session_checkpoint_count(t), 1);
    feed(s, ids + 100, 3, a);
    feed(t, ids + 100, 3, b);
    cr_assert_eq(memcmp(a, b, sizeof a), 0, "the imported session continues identically");
    int32_t *replay;
    int n;
    cr_assert_eq(strata_session_rewind(t, 95, &replay, &n, &err), STRATA_OK);
    cr_assert_eq(n, 5, "its checkpoint came along");
    free(replay);
    strata_session_free(t);
    ((unsigned char *)bytes)[len - 7] ^= 0x40;
    cr_assert_eq(strata_session_deserialize(M, bytes, len, &t, &err), STRATA_E_FORMAT);
    cr_assert(strstr(err.message, "checksum"), "%s", err.message);
    cr_assert_eq(strata_session_deserialize(M, bytes, 100, &t, &err), STRATA_E_FORMAT);
    strata_model *other;
    cr_assert_eq(strata_model_load(shared_path("fixtures/models/hybrid-small"), &other, &err), STRATA_OK);
    ((unsigned char *)bytes)[len - 7] ^= 0x40;
    cr_assert_eq(strata_session_deserialize(other, bytes, len, &t, &err), STRATA_E_INVALID);
    strata_model_free(other);
    free(bytes);
    strata_session_free(s);
}

/* In the bf16 compute mode a session's SSM state is kept in BF16: it is saved as
 * fp32 (exactly) and loads back to the same bits, so the imported session goes on
 * exactly as the original. */
Test(session, bf16_state_survives_serialization)
{
    strata_error err;
    strata_session *s, *t;
    float a[V], b[V];
    cr_assert_eq(strata_model_set_compute(M, "bf16", &err), STRATA_OK);
    strata_runner_free(R);
    cr_assert_eq(strata_runner_new(M, &R, &err), STRATA_OK);
    cr_assert_eq(strata_session_new(M, &s, &err), STRATA_OK);
    feed(s, ids, 40, a);
    for (int i = 40; i < 44; i++)
        feed(s, ids + i, 1, a);
    void *bytes;
    size_t len;
    cr_assert_eq(strata_session_serialize(s, &bytes, &len, &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(strata_session_deserialize(M, bytes, len, &t, &err), STRATA_OK, "%s", err.message);
    for (int i = 44; i < 47; i++) {
        feed(s, ids + i, 1, a);
        feed(t, ids + i, 1, b);
        cr_assert_eq(memcmp(a, b, sizeof a), 0, "token %d: the imported session goes on differently", i);
    }
    free(bytes);
    strata_session_free(t);
    strata_session_free(s);
}

/* A budget keeps the newest automatic checkpoints that fit; explicit ones stay
 * whatever it says; forks inherit it; and rewinding still lands exactly. */
Test(session, a_checkpoint_budget_keeps_the_newest_automatic_ones)
{
    strata_error err;
    strata_session *s;
    float a[V], b[V];
    cr_assert_eq(strata_session_new(M, &s, &err), STRATA_OK);
    feed(s, ids, 10, a);
    cr_assert_eq(strata_session_checkpoint(s, 1, &err), STRATA_OK);
    int pos;
    uint64_t each;
    strata_session_checkpoint_info(s, 0, &pos, &each);
    strata_session_set_checkpoint_budget(s, each * 5 / 2);      /* room for two */
    cr_assert_eq(strata_session_checkpoint_count(s), 1);
    for (int k = 1; k < 5; k++) {
        feed(s, ids + 10 * k, 10, a);
        cr_assert_eq(strata_session_checkpoint(s, k != 2, &err), STRATA_OK);   /* the one at 30 is explicit */
    }
    int want[] = {30, 40, 50};
    cr_assert_eq(strata_session_checkpoint_count(s), 3);
    for (int i = 0; i < 3; i++) {
        strata_session_checkpoint_info(s, i, &pos, &each);
        cr_expect_eq(pos, want[i], "checkpoint %d at %d", i, pos);
    }
    strata_session *f;
    cr_assert_eq(strata_session_fork(s, &f, &err), STRATA_OK);
    feed(f, ids + 50, 10, a);
    cr_assert_eq(strata_session_checkpoint(f, 1, &err), STRATA_OK);
    cr_assert_eq(strata_session_checkpoint_count(f), 3, "the fork keeps the budget: 30 (explicit), 50, 60");
    strata_session_free(f);
    int32_t *replay;
    int n;
    cr_assert_eq(strata_session_rewind(s, 45, &replay, &n, &err), STRATA_OK);
    cr_assert_eq(n, 5, "from the checkpoint at 40");
    feed(s, replay, n, a);
    free(replay);
    fresh_logits(ids, 45, b);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    strata_session_set_checkpoint_budget(s, each / 2);          /* room for none */
    cr_assert_eq(strata_session_checkpoint_count(s), 1, "the explicit one stays");
    cr_assert_eq(strata_session_checkpoint(s, 1, &err), STRATA_OK);
    cr_assert_eq(strata_session_checkpoint_count(s), 1, "an automatic one is not taken");
    strata_session_free(s);
}

/* A copy of the logits the session's current state gives after its last token,
 * adopted with a snapshot of that state as a checkpoint. */
static void checkpoint_with_logits(strata_session *s, const float *logits)
{
    strata_error err;
    strata_cache *snap;
    float *kept = malloc(sizeof(float) * V);
    memcpy(kept, logits, sizeof(float) * V);
    cr_assert_eq(strata_cache_copy(strata_session_cache(s), &snap, &err), STRATA_OK);
    cr_assert_eq(strata_session_adopt_checkpoint(s, snap, kept, 1, &err), STRATA_OK);
}

/* A prompt that ends where a checkpoint kept its logits is reused whole: those
 * logits are the ones a fresh run ends with, also after the session went on (the
 * checkpoint is restored), in a fork, and after serialization. Elsewhere the old
 * rule holds (the last token is processed). */
Test(session, a_prompt_ending_at_a_checkpoint_with_logits_is_reused_whole)
{
    strata_error err;
    strata_session *s, *f, *t;
    float a[V], b[V], c[V];
    const float *kept;
    int reused, reprocessed;
    cr_assert_eq(strata_session_new(M, &s, &err), STRATA_OK);
    feed(s, ids, 60, a);
    checkpoint_with_logits(s, a);
    fresh_logits(ids, 60, b);
    fresh_logits(ids, 65, c);
    cr_assert_eq(strata_session_prepare(s, ids, 60, &reused, &reprocessed, &kept, &err), STRATA_OK);
    cr_assert(kept && reused == 60 && reprocessed == 0);
    cr_assert_eq(memcmp(kept, b, sizeof b), 0);
    feed(s, ids + 60, 20, a);                                   /* the session goes on */
    cr_assert_eq(strata_session_fork(s, &f, &err), STRATA_OK);
    void *bytes;
    size_t len;
    cr_assert_eq(strata_session_serialize(s, &bytes, &len, &err), STRATA_OK);
    cr_assert_eq(strata_session_deserialize(M, bytes, len, &t, &err), STRATA_OK, "%s", err.message);
    free(bytes);
    strata_session *each[3] = {s, f, t};
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(strata_session_prepare(each[k], ids, 60, &reused, &reprocessed, &kept, &err), STRATA_OK);
        cr_assert(kept && reused == 60 && reprocessed == 0, "session %d", k);
        cr_assert_eq(memcmp(kept, b, sizeof b), 0, "session %d", k);
        cr_assert_eq(strata_session_n_tokens(each[k]), 60, "back at the checkpoint");
        feed(each[k], ids + 60, 5, a);                          /* and from there as a fresh run */
        cr_assert_eq(memcmp(a, c, sizeof a), 0, "session %d", k);
    }
    /* a prompt ending elsewhere, or without asking for logits: the last token is processed */
    cr_assert_eq(strata_session_prepare(t, ids, 65, &reused, &reprocessed, &kept, &err), STRATA_OK);
    cr_assert(!kept && reused == 60);
    cr_assert_eq(strata_session_prepare(s, ids, 60, &reused, &reprocessed, NULL, &err), STRATA_OK);
    cr_assert_eq(reused, 0, "no checkpoint before the last token");
    strata_session_free(s);
    strata_session_free(f);
    strata_session_free(t);
}

/* The bytes of a session file whose header `edit` changed, the data section (and so
 * its checksum) as it was: the header is written back at its old length. */
static void *edited_header(const void *bytes, size_t len, void (*edit)(json_t *header))
{
    uint64_t hl;
    memcpy(&hl, bytes, 8);
    json_t *h = json_loadb((const char *)bytes + 8, (size_t)hl, 0, NULL);
    cr_assert(h);
    edit(h);
    char *text = json_dumps(h, JSON_COMPACT);
    cr_assert_leq(strlen(text), hl);
    char *out = malloc(len);
    memcpy(out, bytes, len);
    memset(out + 8, ' ', (size_t)hl);
    memcpy(out + 8, text, strlen(text));
    free(text);
    json_decref(h);
    return out;
}

static void flatten_ssm(json_t *h)      /* (H, P, N) → (H, P·N): the same bytes, another shape */
{
    json_t *shape = json_object_get(json_object_get(h, "state.ssm.0"), "shape");
    json_int_t pn = json_integer_value(json_array_get(shape, 1)) * json_integer_value(json_array_get(shape, 2));
    json_array_remove(shape, 2);
    json_array_set_new(shape, 1, json_integer(pn));
}

static void later_version(json_t *h)
{
    json_object_set_new(json_object_get(h, "__metadata__"), "version", json_string("2"));
}

/* An imported file must hold this model's shapes, not only its byte counts, and be
 * of the version this build writes. */
Test(session, a_file_of_other_shapes_or_version_is_refused)
{
    strata_error err;
    strata_session *s, *t;
    float a[V];
    cr_assert_eq(strata_session_new(M, &s, &err), STRATA_OK);
    feed(s, ids, 20, a);
    void *bytes;
    size_t len;
    cr_assert_eq(strata_session_serialize(s, &bytes, &len, &err), STRATA_OK);
    void (*edits[2])(json_t *) = {flatten_ssm, later_version};
    const char *says[2] = {"shape", "version"};
    strata_status status[2] = {STRATA_E_INVALID, STRATA_E_FORMAT};      /* another model's file; not one we read */
    for (int k = 0; k < 2; k++) {
        void *bad = edited_header(bytes, len, edits[k]);
        cr_assert_eq(strata_session_deserialize(M, bad, len, &t, &err), status[k], "edit %d: %s", k, err.message);
        cr_assert(strstr(err.message, says[k]), "%s", err.message);
        free(bad);
    }
    cr_assert_eq(strata_session_deserialize(M, bytes, len, &t, &err), STRATA_OK, "the file as written loads");
    strata_session_free(t);
    free(bytes);
    /* logits kept with a checkpoint are checked as the state is: a NaN is refused */
    a[7] = NAN;
    checkpoint_with_logits(s, a);
    cr_assert_eq(strata_session_serialize(s, &bytes, &len, &err), STRATA_OK);
    cr_assert_eq(strata_session_deserialize(M, bytes, len, &t, &err), STRATA_E_FORMAT);
    cr_assert(strstr(err.message, "not finite"), "%s", err.message);
    free(bytes);
    strata_session_free(s);
}
