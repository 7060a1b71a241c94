/* test_tokenizer.c — tokenizer.json conformance against the Rust `tokenizers` outputs in
 * $STRATA_SHARED/fixtures, streaming decode, untrusted-text mode, malformed input. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata.h"

static char path_buf[4096];

static const char *shared(const char *rel)
{
    const char *root = getenv("STRATA_SHARED");
    snprintf(path_buf, sizeof path_buf, "%s/%s", root ? root : "../shared", rel);
    return path_buf;
}

static strata_tokenizer *load(const char *rel)
{
    strata_error err = {0};
    strata_tokenizer *tok = NULL;
    strata_status s = strata_tokenizer_load(shared(rel), &tok, &err);
    cr_assert_eq(s, STRATA_OK, "load %s: %s", rel, err.message);
    return tok;
}

/* ---- comparing one fixture row */

typedef struct tally {
    int rows, failures;
} tally;

static int ids_equal(const int32_t *ids, size_t n, const json_t *expected)
{
    if (json_array_size(expected) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(expected, i)) != ids[i])
            return 0;
    return 1;
}

static int str_equal(const char *s, size_t n, const json_t *expected)
{
    return json_is_string(expected) && json_string_length(expected) == n && !memcmp(json_string_value(expected), s, n);
}

static void fail_row(tally *t, int row, const char *field)
{
    if (t->failures++ < 10)
        cr_log_error("row %d: field %s differs", row, field);
}

static void check_decode(const strata_tokenizer *tok, tally *t, int row, const int32_t *ids, size_t n, int skip,
                         const json_t *expected, const char *field)
{
    char *text;
    size_t len;
    strata_error err = {0};
    if (!expected)
        return;
    if (strata_tokenizer_decode(tok, ids, n, skip, &text, &len, &err)) {
        fail_row(t, row, field);
        return;
    }
    if (!str_equal(text, len, expected))
        fail_row(t, row, field);
    free(text);
}

static void check_tokens(const strata_tokenizer *tok, tally *t, int row, const int32_t *ids, size_t n,
                         const json_t *expected)
{
    if (!expected)
        return;
    int ok = json_array_size(expected) == n;
    for (size_t i = 0; ok && i < n; i++) {
        size_t len;
        const char *s = strata_tokenizer_id_to_token(tok, ids[i], &len);
        ok = s && str_equal(s, len, json_array_get(expected, i));
    }
    if (!ok)
        fail_row(t, row, "tokens");
}

static void check_row(const strata_tokenizer *tok, tally *t, int row, const json_t *r)
{
    const json_t *text = json_object_get(r, "text");
    const char *s = json_string_value(text);
    size_t len = json_string_length(text);
    int32_t *ids = NULL, *ids_sp = NULL;
    size_t n = 0, n_sp = 0;
    strata_error err = {0};
    t->rows++;
    if (strata_tokenizer_encode(tok, s, len, STRATA_TOKENIZE_PARSE_SPECIAL, &ids, &n, &err) ||
        !ids_equal(ids, n, json_object_get(r, "ids")))
        fail_row(t, row, "ids");
    if (strata_tokenizer_encode(tok, s, len, STRATA_TOKENIZE_PARSE_SPECIAL | STRATA_TOKENIZE_ADD_SPECIAL, &ids_sp,
                                &n_sp, &err) ||
        !ids_equal(ids_sp, n_sp, json_object_get(r, "ids_with_special")))
        fail_row(t, row, "ids_with_special");
    check_tokens(tok, t, row, ids, n, json_object_get(r, "tokens"));
    check_decode(tok, t, row, ids, n, 0, json_object_get(r, "decoded"), "decoded");
    check_decode(tok, t, row, ids_sp, n_sp, 0, json_object_get(r, "decoded_with_special"), "decoded_with_special");
    check_decode(tok, t, row, ids_sp, n_sp, 1, json_object_get(r, "decoded_skip_special"), "decoded_skip_special");
    free(ids);
    free(ids_sp);
}

typedef void (*row_fn)(const strata_tokenizer *tok, tally *t, int row, const json_t *r);

static tally for_each_row(const char *tokenizer, const char *jsonl, row_fn fn)
{
    strata_tokenizer *tok = load(tokenizer);
    FILE *f = fopen(shared(jsonl), "r");
    cr_assert(f, "cannot open %s", jsonl);
    tally t = {0, 0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    for (int row = 0; (got = getline(&line, &cap, f)) > 0; row++) {
        json_error_t jerr;
        json_t *r = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &jerr);
        cr_assert(r, "%s row %d: %s", jsonl, row, jerr.text);
        fn(tok, &t, row, r);
        json_decref(r);
    }
    free(line);
    fclose(f);
    strata_tokenizer_free(tok);
    return t;
}

Test(tokenizer, nemotron_h_proxy_matches_every_field)
{
    tally t = for_each_row("fixtures/tokenizers/nemotron_h_proxy/tokenizer.json",
                           "fixtures/tokenizers/expected_nemotron_h_proxy.jsonl", check_row);
    cr_assert_eq(t.rows, 435);
    cr_assert_eq(t.failures, 0, "%d field mismatches", t.failures);
}

Test(tokenizer, llama2_matches_every_field)
{
    tally t = for_each_row("fixtures/tokenizers/llama2/tokenizer.json", "fixtures/tokenizers/expected_llama2.jsonl",
                           check_row);
    cr_assert_eq(t.rows, 435);
    cr_assert_eq(t.failures, 0, "%d field mismatches", t.failures);
}

Test(tokenizer, hybrid_small_cases_match_every_field)
{
    tally t = for_each_row("fixtures/models/hybrid-small/tokenizer.json", "fixtures/models/tokenizer_cases_512.jsonl",
                           check_row);
    cr_assert_gt(t.rows, 0);
    cr_assert_eq(t.failures, 0, "%d field mismatches", t.failures);
}

/* ---- streaming decode */

/* Stream ids through a detokenizer; the pieces must be whole UTF-8 and add up to the
 * whole-sequence decode. */
static int stream_matches(const strata_tokenizer *tok, const int32_t *ids, size_t n, int skip)
{
    strata_detok *d;
    strata_error err = {0};
    char *whole;
    size_t whole_len, got = 0;
    cr_assert_eq(strata_detok_new(tok, skip, &d, &err), STRATA_OK);
    cr_assert_eq(strata_tokenizer_decode(tok, ids, n, skip, &whole, &whole_len, &err), STRATA_OK);
    char *acc = malloc(whole_len + 1);
    int ok = 1;
    for (size_t i = 0; i <= n && ok; i++) {
        const char *piece;
        size_t len;
        strata_status s = i < n ? strata_detok_push(d, ids[i], &piece, &len, &err)
                                : strata_detok_flush(d, &piece, &len, &err);
        ok = s == STRATA_OK && got + len <= whole_len && !memcmp(whole + got, piece, len);
        /* a piece other than the final flush never ends inside a char */
        if (ok && i < n && len) {
            size_t k = len - 1;
            while (k > 0 && ((unsigned char)piece[k] & 0xC0) == 0x80)
                k--;
            unsigned char lead = (unsigned char)piece[k];
            size_t need = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
            ok = len - k == need;
        }
        if (ok)
            memcpy(acc + got, piece, len), got += len;
    }
    ok = ok && got == whole_len;
    free(acc);
    free(whole);
    strata_detok_free(d);
    return ok;
}

static void check_stream_row(const strata_tokenizer *tok, tally *t, int row, const json_t *r)
{
    const json_t *text = json_object_get(r, "text");
    int32_t *ids;
    size_t n;
    strata_error err = {0};
    t->rows++;
    cr_assert_eq(strata_tokenizer_encode(tok, json_string_value(text), json_string_length(text),
                                         STRATA_TOKENIZE_PARSE_SPECIAL | STRATA_TOKENIZE_ADD_SPECIAL, &ids, &n, &err),
                 STRATA_OK);
    if (!stream_matches(tok, ids, n, 0))
        fail_row(t, row, "stream");
    if (!stream_matches(tok, ids, n, 1))
        fail_row(t, row, "stream skip_special");
    free(ids);
}

Test(tokenizer, streaming_equals_whole_decode_nemotron)
{
    tally t = for_each_row("fixtures/tokenizers/nemotron_h_proxy/tokenizer.json", "fixtures/tokenizers/corpus.jsonl",
                           check_stream_row);
    cr_assert_eq(t.failures, 0, "%d stream mismatches", t.failures);
}

Test(tokenizer, streaming_equals_whole_decode_llama2)
{
    tally t = for_each_row("fixtures/tokenizers/llama2/tokenizer.json", "fixtures/tokenizers/corpus.jsonl",
                           check_stream_row);
    cr_assert_eq(t.failures, 0, "%d stream mismatches", t.failures);
}

Test(tokenizer, streaming_holds_back_split_emoji)
{
    strata_tokenizer *tok = load("fixtures/tokenizers/nemotron_h_proxy/tokenizer.json");
    const char *emoji = "\xF0\x9F\xA7\x91\xE2\x80\x8D\xF0\x9F\x94\xAC";  /* 🧑‍🔬 */
    int32_t *ids;
    size_t n;
    strata_error err = {0};
    cr_assert_eq(strata_tokenizer_encode(tok, emoji, strlen(emoji), 0, &ids, &n, &err), STRATA_OK);
    cr_assert_gt(n, 1);
    cr_assert(stream_matches(tok, ids, n, 0));
    /* a lone lead byte that never completes comes out as U+FFFD at flush */
    strata_detok *d;
    const char *piece;
    size_t len;
    cr_assert_eq(strata_detok_new(tok, 0, &d, &err), STRATA_OK);
    cr_assert_eq(strata_detok_push(d, ids[0], &piece, &len, &err), STRATA_OK);
    cr_assert_eq(len, 0);
    cr_assert_eq(strata_detok_flush(d, &piece, &len, &err), STRATA_OK);
    cr_assert_gt(len, 0);
    cr_assert_eq(memcmp(piece + len - 3, "\xEF\xBF\xBD", 3), 0);
    strata_detok_free(d);
    free(ids);
    strata_tokenizer_free(tok);
}

/* A byte-level stream of lead bytes that never complete: each U+FFFD goes out as
 * soon as the next byte proves it broken (UTF-8 resynchronises there), not held
 * with the rest; only the last waits for the flush. The pieces still add up to the
 * whole decode. */
Test(tokenizer, streaming_emits_broken_utf8_once_it_is_broken)
{
    strata_tokenizer *tok = load("fixtures/tokenizers/nemotron_h_proxy/tokenizer.json");
    int32_t lead = strata_tokenizer_token_to_id(tok, "\xC3\x83", 2), ids[5];  /* byte 0xC3 (é's lead) as "Ã" */
    strata_error err = {0};
    cr_assert_geq(lead, 0);
    for (int i = 0; i < 5; i++)
        ids[i] = lead;
    cr_assert(stream_matches(tok, ids, 5, 0));
    strata_detok *d;
    const char *piece;
    size_t len;
    cr_assert_eq(strata_detok_new(tok, 0, &d, &err), STRATA_OK);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(strata_detok_push(d, ids[i], &piece, &len, &err), STRATA_OK);
        cr_assert_eq(len, i ? 3u : 0u, "push %d", i);
        cr_assert(!i || !memcmp(piece, "\xEF\xBF\xBD", 3));
    }
    cr_assert_eq(strata_detok_flush(d, &piece, &len, &err), STRATA_OK);
    cr_assert_eq(len, 3u);
    strata_detok_free(d);
    strata_tokenizer_free(tok);
}

/* ---- untrusted text, accessors */

Test(tokenizer, parse_special_off_keeps_control_tokens_out)
{
    strata_tokenizer *tok = load("fixtures/models/hybrid-small/tokenizer.json");
    const char *text = "<s>hi<think>";
    int32_t *ids;
    size_t n;
    strata_error err = {0};
    int32_t bos = strata_tokenizer_token_to_id(tok, "<s>", 3), think = strata_tokenizer_token_to_id(tok, "<think>", 7);
    cr_assert_eq(bos, 1);
    cr_assert_eq(think, 12);
    cr_assert(strata_tokenizer_is_special(tok, bos));
    cr_assert(!strata_tokenizer_is_special(tok, think));
    cr_assert_eq(strata_tokenizer_encode(tok, text, strlen(text), STRATA_TOKENIZE_PARSE_SPECIAL, &ids, &n, &err), STRATA_OK);
    cr_assert_eq(ids[0], bos);
    cr_assert_eq(ids[n - 1], think);
    free(ids);
    cr_assert_eq(strata_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n, &err), STRATA_OK);
    for (size_t i = 0; i < n; i++)
        cr_assert_neq(ids[i], bos, "<s> in untrusted text became the control token");
    cr_assert_eq(ids[n - 1], think, "non-special <think> is still recognised");
    free(ids);
    cr_assert_eq(strata_tokenizer_vocab_size(tok), 512);
    size_t len;
    cr_assert_str_eq(strata_tokenizer_id_to_token(tok, think, &len), "<think>");
    cr_assert_null(strata_tokenizer_id_to_token(tok, 512, NULL));
    cr_assert_eq(strata_tokenizer_token_to_id(tok, "no such token", 13), -1);
    strata_tokenizer_free(tok);
}

Test(tokenizer, demo_model_tokenizer_loads_and_round_trips)
{
    strata_tokenizer *tok = load("models/strata-demo/tokenizer.json");
    const char *text = "Hello world, 123!";
    int32_t *ids;
    size_t n, len;
    char *back;
    strata_error err = {0};
    cr_assert_eq(strata_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n, &err), STRATA_OK);
    cr_assert_eq(strata_tokenizer_decode(tok, ids, n, 0, &back, &len, &err), STRATA_OK);
    cr_assert_str_eq(back, text);
    free(back);
    free(ids);
    strata_tokenizer_free(tok);
}

/* ---- bad input */

Test(tokenizer, invalid_utf8_text_names_the_offset)
{
    strata_tokenizer *tok = load("fixtures/models/hybrid-small/tokenizer.json");
    int32_t *ids = (int32_t *)1;
    size_t n = 7;
    strata_error err = {0};
    cr_assert_eq(strata_tokenizer_encode(tok, "abc\xC3(", 5, 0, &ids, &n, &err), STRATA_E_INVALID);
    cr_assert_null(ids);
    cr_assert_eq(n, 0);
    cr_assert(strstr(err.message, "byte offset 3"), "%s", err.message);
    int32_t bad[] = {1, 100000};
    char *text;
    size_t len;
    cr_assert_eq(strata_tokenizer_decode(tok, bad, 2, 0, &text, &len, &err), STRATA_E_RANGE);
    strata_detok *d;
    const char *piece;
    cr_assert_eq(strata_detok_new(tok, 0, &d, &err), STRATA_OK);
    cr_assert_eq(strata_detok_push(d, -5, &piece, &len, &err), STRATA_E_RANGE);
    strata_detok_free(d);
    strata_tokenizer_free(tok);
}

static strata_status load_text(const char *json, strata_error *err)
{
    strata_tokenizer *tok = NULL;
    strata_status s = strata_tokenizer_load_json(json, strlen(json), &tok, err);
    strata_tokenizer_free(tok);
    return s;
}

#define MODEL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": "

Test(tokenizer, malformed_files_fail_with_a_clear_error)
{
    strata_error err = {0};
    cr_assert_eq(load_text("{" MODEL "[\"a b\"]}}", &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(load_text("{" MODEL "[[\"a\", \"b\"]]}}", &err), STRATA_OK, "%s", err.message);

    cr_assert_eq(load_text("{" MODEL "[\"a b\"]", &err), STRATA_E_FORMAT);
    cr_assert(strstr(err.message, "truncated"), "%s", err.message);

    cr_assert_eq(load_text("{\"normalizer\": {\"type\": \"Precompiled\"}, " MODEL "[]}}", &err), STRATA_E_UNSUPPORTED);
    cr_assert_str_eq(err.message, "tokenizer.json: normalizer type 'Precompiled' is not supported");
    cr_assert_eq(load_text("{\"pre_tokenizer\": {\"type\": \"Punctuation\"}, " MODEL "[]}}", &err), STRATA_E_UNSUPPORTED);
    cr_assert(strstr(err.message, "pre_tokenizer type 'Punctuation'"), "%s", err.message);
    cr_assert_eq(load_text("{\"decoder\": {\"type\": \"WordPiece\"}, " MODEL "[]}}", &err), STRATA_E_UNSUPPORTED);
    cr_assert(strstr(err.message, "decoder type 'WordPiece'"), "%s", err.message);
    cr_assert_eq(load_text("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", &err), STRATA_E_UNSUPPORTED);
    cr_assert(strstr(err.message, "model type 'Unigram'"), "%s", err.message);

    cr_assert_eq(load_text("{" MODEL "[\"a c\"]}}", &err), STRATA_E_FORMAT);
    cr_assert(strstr(err.message, "merges[0]: token 'c' is not in the vocab"), "%s", err.message);
    cr_assert_eq(load_text("{" MODEL "[\"b a\"]}}", &err), STRATA_E_FORMAT);
    cr_assert(strstr(err.message, "token 'ba' is not in the vocab"), "%s", err.message);

    cr_assert_eq(load_text("[1, 2", &err), STRATA_E_FORMAT);
    cr_assert_eq(load_text("", &err), STRATA_E_FORMAT);
    cr_assert_eq(load_text("{\"a\": \"\\ud800\"}", &err), STRATA_E_FORMAT);
    cr_assert_eq(load_text("{\"a\": 1}", &err), STRATA_E_FORMAT);
    char deep[1001];
    memset(deep, '[', 1000);
    deep[1000] = '\0';
    cr_assert_eq(load_text(deep, &err), STRATA_E_FORMAT);
    cr_assert(strstr(err.message, "nesting too deep"), "%s", err.message);
}

Test(tokenizer, every_truncation_of_a_real_file_fails_cleanly)
{
    FILE *f = fopen(shared("fixtures/models/hybrid-small/tokenizer.json"), "rb");
    cr_assert(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    cr_assert_lt(n, sizeof buf);
    for (size_t cut = 0; cut < n; cut += 97) {
        strata_tokenizer *tok = NULL;
        strata_error err = {0};
        cr_assert_neq(strata_tokenizer_load_json(buf, cut, &tok, &err), STRATA_OK, "cut %zu", cut);
        cr_assert_null(tok);
        cr_assert_neq(err.message[0], '\0');
    }
    strata_tokenizer *tok = NULL;
    cr_assert_eq(strata_tokenizer_load_json(buf, n, &tok, NULL), STRATA_OK);
    strata_tokenizer_free(tok);
    strata_tokenizer_free(NULL);
    strata_detok_free(NULL);
}

/* ---- the pipeline parts the fixtures do not use */

Test(tokenizer, other_pipeline_parts_follow_hf)
{
    const char *json =
        "{\"added_tokens\": [{\"id\": 5, \"content\": \"[X]\", \"special\": true, \"normalized\": false,"
        " \"lstrip\": true, \"rstrip\": false, \"single_word\": false}],"
        " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": \"Lowercase\"},"
        "   {\"type\": \"Strip\", \"strip_left\": true, \"strip_right\": true}]},"
        " \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"always\","
        "   \"split\": true},"
        " \"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"always\"},"
        " \"model\": {\"type\": \"BPE\", \"vocab\": {\"\\u2581\": 0, \"a\": 1, \"\\u00e9\": 2, \"\\u2581a\": 3,"
        "   \"\\u2581\\u00e9\": 4, \"[X]\": 5}, \"merges\": [\"\\u2581 a\", \"\\u2581 \\u00e9\"]}}";
    strata_tokenizer *tok;
    strata_error err = {0};
    cr_assert_eq(strata_tokenizer_load_json(json, strlen(json), &tok, &err), STRATA_OK, "%s", err.message);
    /* "A E+combining acute" -> NFC é, lowercase, split on the metaspace */
    const char *text = "  A E\xCC\x81 [X]";
    int32_t *ids;
    size_t n;
    cr_assert_eq(strata_tokenizer_encode(tok, text, strlen(text), STRATA_TOKENIZE_PARSE_SPECIAL, &ids, &n, &err), STRATA_OK);
    /* lstrip makes [X] take the space before it */
    int32_t want[] = {3, 4, 5};
    cr_assert_eq(n, 3);
    cr_assert_arr_eq(ids, want, sizeof want);
    char *back;
    size_t len;
    cr_assert_eq(strata_tokenizer_decode(tok, ids, n, 1, &back, &len, &err), STRATA_OK);
    cr_assert_str_eq(back, "a \xC3\xA9");
    free(back);
    free(ids);
    strata_tokenizer_free(tok);
}

/* ---- the CLI */

Test(tokenizer, cli_tokenize_and_detokenize)
{
    const char *cli = getenv("STRATA_CLI");
    if (!cli)
        cr_skip_test("STRATA_CLI not set");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "printf 'Hello world' | %s tokenize %s --add-special", cli,
             shared("fixtures/models/hybrid-small"));
    FILE *p = popen(cmd, "r");
    char out[256] = {0};
    cr_assert(fgets(out, sizeof out, p));
    cr_assert_eq(pclose(p), 0);
    cr_assert_str_eq(out, "[1,90,398,126,129,278,292,372]\n");
    snprintf(cmd, sizeof cmd, "echo '[1,90,398,126,129,278,292,372]' | %s detokenize %s --skip-special", cli,
             shared("fixtures/models/hybrid-small/tokenizer.json"));
    p = popen(cmd, "r");
    memset(out, 0, sizeof out);
    cr_assert(fgets(out, sizeof out, p));
    cr_assert_eq(pclose(p), 0);
    cr_assert_str_eq(out, "Hello world");
    snprintf(cmd, sizeof cmd, "printf '\\377' | %s tokenize %s 2>/dev/null", cli, shared("fixtures/models/hybrid-small"));
    cr_assert_neq(system(cmd), 0);
}

/* ---- Split behaviours (HF's SplitDelimiterBehavior examples on "the-final--countdown") */

static void expect_split(const char *behavior, int invert, const char *const *want, size_t n_want)
{
    char json[2048];
    snprintf(json, sizeof json,
             "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \"-\"}, \"behavior\": \"%s\","
             " \"invert\": %s},"
             " \"model\": {\"type\": \"BPE\", \"ignore_merges\": true, \"merges\": [], \"vocab\": {"
             "\"the\": 0, \"-\": 1, \"final\": 2, \"countdown\": 3, \"the-\": 4, \"final-\": 5, \"-final\": 6,"
             " \"-countdown\": 7, \"--\": 8}}}",
             behavior, invert ? "true" : "false");
    strata_tokenizer *tok;
    strata_error err = {0};
    cr_assert_eq(strata_tokenizer_load_json(json, strlen(json), &tok, &err), STRATA_OK, "%s", err.message);
    int32_t *ids;
    size_t n;
    const char *text = "the-final--countdown";
    cr_assert_eq(strata_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n, &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(n, n_want, "%s: %zu pieces", behavior, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(strata_tokenizer_id_to_token(tok, ids[i], NULL), want[i], "%s piece %zu", behavior, i);
    free(ids);
    strata_tokenizer_free(tok);
}

Test(tokenizer, split_behaviors_follow_hf)
{
    const char *removed[] = {"the", "final", "countdown"};
    const char *isolated[] = {"the", "-", "final", "-", "-", "countdown"};
    const char *prev[] = {"the-", "final-", "-", "countdown"};
    const char *next[] = {"the", "-final", "-", "-countdown"};
    const char *contiguous[] = {"the", "-", "final", "--", "countdown"};
    const char *inverted[] = {"-", "-", "-"};
    expect_split("Removed", 0, removed, 3);
    expect_split("Isolated", 0, isolated, 6);
    expect_split("MergedWithPrevious", 0, prev, 4);
    expect_split("MergedWithNext", 0, next, 4);
    expect_split("Contiguous", 0, contiguous, 5);
    expect_split("Removed", 1, inverted, 3);
}

/* ---- streaming on arbitrary id sequences (what a sampler may produce): byte tokens,
 * broken UTF-8, specials between byte runs */

static void stream_random_ids(const char *tokenizer)
{
    strata_tokenizer *tok = load(tokenizer);
    int32_t vocab = strata_tokenizer_vocab_size(tok);
    uint64_t state = 0x2545F4914F6CDD1DULL;
    int failures = 0;
    for (int it = 0; it < 1500; it++) {
        int32_t ids[12];
        size_t n = 1 + it % 12;
        for (size_t i = 0; i < n; i++) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            uint32_t r = (uint32_t)(state >> 33);
            /* mostly low ids: specials, byte tokens, short pieces */
            ids[i] = (int32_t)(r % 4 == 0 ? (int32_t)(r / 4 % (uint32_t)vocab) : (int32_t)(r / 4 % 1300));
        }
        for (int skip = 0; skip < 2; skip++)
            failures += !stream_matches(tok, ids, n, skip);
    }
    cr_assert_eq(failures, 0, "%s: %d random streams differ from the whole decode", tokenizer, failures);
    strata_tokenizer_free(tok);
}

Test(tokenizer, streaming_random_ids_llama2)
{
    stream_random_ids("fixtures/tokenizers/llama2/tokenizer.json");
}

Test(tokenizer, streaming_random_ids_nemotron)
{
    stream_random_ids("fixtures/tokenizers/nemotron_h_proxy/tokenizer.json");
}

/* ---- more pre-tokenizers, checked by the token strings they produce (vocab entries
 * are whole pieces, ignore_merges makes each piece one token) */

static void expect_pieces(const char *pretok, const char *vocab, const char *text, unsigned flags,
                          const char *const *want, size_t n_want)
{
    char json[4096];
    snprintf(json, sizeof json,
             "{\"added_tokens\": [{\"id\": 0, \"content\": \"<s>\", \"special\": true, \"normalized\": false,"
             " \"lstrip\": false, \"rstrip\": false, \"single_word\": false}],"
             " \"pre_tokenizer\": %s,"
             " \"model\": {\"type\": \"BPE\", \"ignore_merges\": true, \"merges\": [], \"vocab\": {\"<s>\": 0, %s}}}",
             pretok, vocab);
    strata_tokenizer *tok;
    strata_error err = {0};
    cr_assert_eq(strata_tokenizer_load_json(json, strlen(json), &tok, &err), STRATA_OK, "%s", err.message);
    int32_t *ids;
    size_t n;
    cr_assert_eq(strata_tokenizer_encode(tok, text, strlen(text), flags, &ids, &n, &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(n, n_want, "%s: %zu pieces", pretok, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(strata_tokenizer_id_to_token(tok, ids[i], NULL), want[i], "%s piece %zu", pretok, i);
    free(ids);
    strata_tokenizer_free(tok);
}

Test(tokenizer, pre_tokenizers_follow_hf)
{
    const char *bytelevel[] = {"\xC4\xA0Hello", "\xC4\xA0world"};
    expect_pieces("{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"use_regex\": true}",
                  "\"\\u0120Hello\": 1, \"\\u0120world\": 2", "Hello world", 0, bytelevel, 2);
    const char *digits[] = {"abc", "1", "2", "3"};
    expect_pieces("{\"type\": \"Digits\", \"individual_digits\": true}", "\"abc\": 1, \"1\": 2, \"2\": 3, \"3\": 4",
                  "abc123", 0, digits, 4);
    const char *whitespace[] = {"Hey", "friend", "!", "How", "are", "you", "?!?"};
    expect_pieces("{\"type\": \"Whitespace\"}",
                  "\"Hey\": 1, \"friend\": 2, \"!\": 3, \"How\": 4, \"are\": 5, \"you\": 6, \"?!?\": 7",
                  "Hey friend!     How are you?!?", 0, whitespace, 7);
    /* prepend_scheme "first": only the segment at the start of the text gets the marker */
    const char *meta[] = {"\xE2\x96\x81Hey", "\xE2\x96\x81" "friend", "<s>", "Hey"};
    expect_pieces("{\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"first\", \"split\": true}",
                  "\"\\u2581Hey\": 1, \"\\u2581friend\": 2, \"Hey\": 3", "Hey friend<s>Hey", STRATA_TOKENIZE_PARSE_SPECIAL,
                  meta, 4);
}

Test(tokenizer, streaming_garbage_is_bounded)
{
    strata_tokenizer *tok = load("fixtures/tokenizers/llama2/tokenizer.json");
    int32_t ff = strata_tokenizer_token_to_id(tok, "<0xFF>", 6);
    cr_assert_geq(ff, 0);
    int32_t ids[300];
    for (int i = 0; i < 300; i++)
        ids[i] = ff;
    cr_assert(stream_matches(tok, ids, 300, 0));
    strata_detok *d;
    strata_error err = {0};
    const char *piece;
    size_t len, total = 0;
    cr_assert_eq(strata_detok_new(tok, 0, &d, &err), STRATA_OK);
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(strata_detok_push(d, ff, &piece, &len, &err), STRATA_OK);
        total += len;
    }
    cr_assert_gt(total, 0, "a garbage run is not held back forever");
    strata_detok_free(d);
    strata_tokenizer_free(tok);
}

/* ---- normalized added tokens, single_word, Roberta post-processing, no decoder */

Test(tokenizer, added_token_options_follow_hf)
{
    const char *json =
        "{\"added_tokens\": ["
        "  {\"id\": 5, \"content\": \"Hello\", \"special\": false, \"normalized\": true, \"lstrip\": false,"
        "   \"rstrip\": false, \"single_word\": false},"
        "  {\"id\": 6, \"content\": \"cat\", \"special\": false, \"normalized\": false, \"lstrip\": false,"
        "   \"rstrip\": false, \"single_word\": true}],"
        " \"normalizer\": {\"type\": \"Lowercase\"},"
        " \"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"},"
        " \"post_processor\": {\"type\": \"RobertaProcessing\", \"sep\": [\"</s>\", 2], \"cls\": [\"<s>\", 0],"
        "   \"trim_offsets\": true, \"add_prefix_space\": false},"
        " \"model\": {\"type\": \"BPE\", \"ignore_merges\": true, \"merges\": [], \"vocab\": {\"<s>\": 0, \"say\": 1,"
        "   \"</s>\": 2, \"now\": 3, \"concat\": 4, \"hello\": 7}}}";
    strata_tokenizer *tok;
    strata_error err = {0};
    cr_assert_eq(strata_tokenizer_load_json(json, strlen(json), &tok, &err), STRATA_OK, "%s", err.message);
    int32_t *ids;
    size_t n;
    /* "Hello" is matched after lowercasing; HELLO becomes the added token 5, not vocab 7 */
    const char *text = "Say HELLO now";
    cr_assert_eq(strata_tokenizer_encode(tok, text, strlen(text), STRATA_TOKENIZE_ADD_SPECIAL, &ids, &n, &err), STRATA_OK);
    int32_t want[] = {0, 1, 5, 3, 2};
    cr_assert_eq(n, 5);
    cr_assert_arr_eq(ids, want, sizeof want);
    char *back;
    size_t len;
    cr_assert_eq(strata_tokenizer_decode(tok, ids + 1, 3, 0, &back, &len, &err), STRATA_OK);
    cr_assert_str_eq(back, "say Hello now", "no decoder: tokens joined by spaces");
    free(back);
    free(ids);
    /* single_word: "cat" alone is the token, inside "concat" it is not */
    text = "cat concat";
    cr_assert_eq(strata_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n, &err), STRATA_OK);
    int32_t want2[] = {6, 4};
    cr_assert_eq(n, 2);
    cr_assert_arr_eq(ids, want2, sizeof want2);
    free(ids);
    strata_tokenizer_free(tok);
}

/* ---- continuing_subword_prefix, unk without fuse_unk */

Test(tokenizer, subword_prefix_and_unk_follow_hf)
{
    const char *json =
        "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"[UNK]\", \"fuse_unk\": false,"
        " \"continuing_subword_prefix\": \"##\", \"vocab\": {\"a\": 0, \"##b\": 1, \"ab\": 2, \"[UNK]\": 3},"
        " \"merges\": [[\"a\", \"##b\"]]}}";
    strata_tokenizer *tok;
    strata_error err = {0};
    cr_assert_eq(strata_tokenizer_load_json(json, strlen(json), &tok, &err), STRATA_OK, "%s", err.message);
    int32_t *ids;
    size_t n;
    cr_assert_eq(strata_tokenizer_encode(tok, "ab", 2, 0, &ids, &n, &err), STRATA_OK);
    cr_assert_eq(n, 1);
    cr_assert_eq(ids[0], 2, "a + ##b merge into ab");
    free(ids);
    /* "b" first in a word has no prefix and "##a" is unknown: two separate unks */
    cr_assert_eq(strata_tokenizer_encode(tok, "ba", 2, 0, &ids, &n, &err), STRATA_OK);
    int32_t want[] = {3, 3};
    cr_assert_eq(n, 2);
    cr_assert_arr_eq(ids, want, sizeof want);
    free(ids);
    strata_tokenizer_free(tok);
}

/* The bytes one token adds mid-stream: raw (part of a UTF-8 character stays a byte),
 * no start-of-stream rule (Llama 2's leading space stays), none for special tokens;
 * and concatenated they are the decode of any text without special tokens. */
static void expect_token_bytes(const strata_tokenizer *tok, const char *token, const char *bytes, size_t n)
{
    int32_t id = strata_tokenizer_token_to_id(tok, token, strlen(token));
    cr_assert_geq(id, 0, "%s is a token", token);
    char *blob;
    uint32_t *off;
    strata_error err;
    cr_assert_eq(strata_tokenizer_token_bytes(tok, id + 1, &blob, &off, &err), STRATA_OK, "%s", err.message);
    cr_expect_eq(off[id + 1] - off[id], n, "%s: %u bytes, expected %zu", token, off[id + 1] - off[id], n);
    cr_expect(n == 0 || !memcmp(blob + off[id], bytes, n), "%s: bytes", token);
    free(blob);
    free(off);
}

static void expect_bytes_join_to_decode(const strata_tokenizer *tok, const char *text)
{
    int32_t *ids;
    size_t n;
    char *blob, *dec;
    uint32_t *off;
    size_t len;
    cr_assert_eq(strata_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n, NULL), STRATA_OK);
    cr_assert_eq(strata_tokenizer_token_bytes(tok, strata_tokenizer_vocab_size(tok), &blob, &off, NULL), STRATA_OK);
    cr_assert_eq(strata_tokenizer_decode(tok, ids, n, 0, &dec, &len, NULL), STRATA_OK);
    char joined[1024];
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(joined + at, blob + off[ids[i]], off[ids[i] + 1] - off[ids[i]]);
        at += off[ids[i] + 1] - off[ids[i]];
    }
    size_t lead = at == len + 1 && joined[0] == ' ';  /* Llama 2's decode strips the first space */
    cr_expect(at - lead == len && !memcmp(joined + lead, dec, len), "%s: joined bytes %.*s, decode %s", text, (int)at,
              joined, dec);
    free(ids);
    free(blob);
    free(off);
    free(dec);
}

Test(tokenizer, token_bytes_are_what_each_token_adds_mid_stream)
{
    strata_tokenizer *bl, *sp;
    cr_assert_eq(strata_tokenizer_load(shared("fixtures/tokenizers/nemotron_h_proxy"), &bl, NULL), STRATA_OK);
    cr_assert_eq(strata_tokenizer_load(shared("fixtures/tokenizers/llama2"), &sp, NULL), STRATA_OK);
    expect_token_bytes(bl, "\xc4\xa0the", " the", 4);         /* Ġthe */
    expect_token_bytes(bl, "\xc3\xa2", "\xe2", 1);            /* a lone lead byte of a 3-byte character */
    expect_token_bytes(bl, "<s>", "", 0);                     /* special */
    expect_token_bytes(sp, "\xe2\x96\x81the", " the", 4);     /* ▁the, first or not */
    expect_token_bytes(sp, "<0x0A>", "\n", 1);
    expect_token_bytes(sp, "<0xE2>", "\xe2", 1);
    expect_token_bytes(sp, "<s>", "", 0);
    const char *texts[] = {"Hello, wörld! 你好 🙂\n\ttabs", " leading space", "{\"json\": [1, 2]}"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        expect_bytes_join_to_decode(bl, texts[i]);
        expect_bytes_join_to_decode(sp, texts[i]);
    }
    strata_tokenizer_free(bl);
    strata_tokenizer_free(sp);
}
