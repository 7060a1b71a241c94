/*
 * internal.h — the in-memory form of a loaded tokenizer.json, shared by the files of
 * engine/tokenizer/. Each pipeline stage is a small tagged struct parsed once at
 * load; a Sequence holds its children. A loaded tokenizer is immutable; everything a
 * call mutates lives in a tk_scratch owned by that call.
 */
#ifndef STRATA_TOKENIZER_INTERNAL_H
#define STRATA_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"
#include "tokenizer/json.h"
#include "tokenizer/util.h"

/* Bounds on untrusted input. */
#define TK_MAX_TEXT_BYTES ((size_t)1 << 30)
#define TK_MAX_FILE_BYTES ((size_t)1 << 30)
#define TK_MAX_IDS ((size_t)1 << 24)

/* ---- per-call scratch */
typedef struct tk_scratch {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    tk_pieces a, b;             /* pre-tokenizer / decoder double buffer */
    tk_buf norm, tmp;
    int32_t *ids;               /* output ids */
    size_t n_ids, cap_ids;
    struct tk_span *spans;      /* split work array (pretokenizer.c) */
    size_t spans_cap;
    void *bpe;                  /* BPE work arrays (bpe.c) */
    int raw;                    /* decoders keep a token's bytes as they are: no U+FFFD, and no
                                 * rule of the stream's start (Strip, Metaspace's first space) */
} tk_scratch;

typedef struct tk_span {
    size_t start, end;
    int match;
} tk_span;

void tk_scratch_free(tk_scratch *s);
int tk_ids_push(tk_scratch *s, int32_t id);

/* ---- a String (literal) or Regex pattern */
typedef struct tk_pattern {
    const char *literal;        /* NULL for a regex */
    size_t literal_len;
    pcre2_code *re;
} tk_pattern;

/* Parse {"String": s} or {"Regex": r} (what names the owner for errors). */
strata_status tk_pattern_parse(const tj_value *v, const char *what, tk_pattern *p, strata_error *err);
strata_status tk_pattern_compile(const char *regex, size_t len, const char *what, tk_pattern *p,
                                 strata_error *err);
void tk_pattern_free(tk_pattern *p);
/* Next non-empty match in s[from..n): 1 found ([*ms, *me)), 0 none, -1 error. */
int tk_pattern_next(const tk_pattern *p, tk_scratch *sc, const char *s, size_t n, size_t from,
                    size_t *ms, size_t *me, strata_error *err);

/* ---- normalizers (normalizer.c) */
typedef enum { NORM_SEQUENCE, NORM_PREPEND, NORM_REPLACE, NORM_UNICODE, NORM_LOWERCASE, NORM_STRIP } tk_norm_kind;

typedef struct tk_normalizer {
    tk_norm_kind kind;
    struct tk_normalizer *children;
    size_t n_children;
    const char *content;        /* Prepend / Replace text */
    size_t content_len;
    tk_pattern pattern;         /* Replace */
    int utf8proc_flags;         /* NFC, NFD, NFKC, NFKD */
    int strip_left, strip_right;
} tk_normalizer;

strata_status tk_normalizer_parse(const tj_value *v, tk_normalizer *n, strata_error *err);
void tk_normalizer_free(tk_normalizer *n);
/* Replace buf's contents by their normalized form. */
strata_status tk_normalize(const tk_normalizer *n, tk_scratch *sc, tk_buf *buf, strata_error *err);

/* ---- pre-tokenizers (pretokenizer.c) */
typedef enum { PT_SEQUENCE, PT_SPLIT, PT_BYTELEVEL, PT_METASPACE } tk_pretok_kind;
typedef enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS } tk_split_behavior;
typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } tk_prepend_scheme;

typedef struct tk_pretok {
    tk_pretok_kind kind;
    struct tk_pretok *children;
    size_t n_children;
    tk_pattern pattern;         /* Split; ByteLevel's GPT-2 regex */
    tk_split_behavior behavior;
    int invert;
    int add_prefix_space, use_regex;        /* ByteLevel */
    char replacement[5];                    /* Metaspace */
    size_t replacement_len;
    tk_prepend_scheme prepend_scheme;
    int split;
} tk_pretok;

strata_status tk_pretok_parse(const tj_value *v, tk_pretok *p, strata_error *err);
void tk_pretok_free(tk_pretok *p);
/* Split every piece of sc->a (result in sc->a). */
strata_status tk_pretokenize(const tk_pretok *p, tk_scratch *sc, strata_error *err);
/* Parse a Metaspace "replacement" / "prepend_scheme" pair (also used by the decoder). */
strata_status tk_metaspace_parse(const tj_value *v, char *rep, size_t *rep_len,
                                 tk_prepend_scheme *scheme, strata_error *err);

/* ---- BPE model (bpe.c) */
typedef struct tk_bpe {
    tk_strmap vocab;
    tk_pairmap merges;
    int32_t unk_id;             /* -1: none */
    int fuse_unk, byte_fallback, ignore_merges;
    const char *prefix, *suffix;   /* continuing_subword_prefix / end_of_word_suffix */
    size_t prefix_len, suffix_len;
    int32_t byte_ids[256];      /* <0xNN> tokens, -1 when absent */
    int32_t max_id;
} tk_bpe;

strata_status tk_bpe_parse(const tj_value *model, tk_bpe *bpe, strata_error *err);
void tk_bpe_free(tk_bpe *bpe);
void tk_bpe_work_free(void *work);
/* Append the ids of one pre-tokenized word to sc->ids. */
strata_status tk_bpe_encode(const tk_bpe *bpe, tk_scratch *sc, const char *word, size_t n, strata_error *err);

/* ---- added tokens (added_tokens.c) */
typedef struct tk_added_token {
    const char *content;
    size_t len;
    int32_t id;
    uint8_t special, normalized, lstrip, rstrip, single_word;
} tk_added_token;

typedef struct tk_trie_node {
    int32_t child, sibling;     /* -1: none */
    int32_t token;              /* index into added[], -1: not a token end */
    unsigned char byte;
} tk_trie_node;

typedef struct tk_trie {
    tk_trie_node *nodes;
    size_t n, cap;
    int32_t root[256];
} tk_trie;

typedef struct tk_added {
    tk_added_token *tokens;
    size_t n;
    tk_trie raw, norm;          /* tokens matched before / after normalization */
} tk_added;

/* One span of a text split by added tokens: token index, or -1 for plain text. */
typedef struct tk_segment {
    size_t start, end;
    int32_t token;
} tk_segment;

typedef struct strata_tokenizer strata_tokenizer;
strata_status tk_added_parse(strata_tokenizer *tok, const tj_value *arr, strata_error *err);
void tk_added_free(tk_added *a);
/* Split s into segments by the trie's tokens, leftmost-longest, honouring lstrip,
 * rstrip and single_word; special tokens are skipped unless parse_special. */
int tk_added_split(const tk_added *a, const tk_trie *trie, const char *s, size_t n, int parse_special,
                   tk_segment **segs, size_t *n_segs);

/* ---- post-processor (postprocessor.c): flattened to ids around the sequence */
typedef struct tk_post {
    int32_t *prefix, *suffix;
    size_t n_prefix, n_suffix;
} tk_post;

strata_status tk_post_parse(const tj_value *v, const strata_tokenizer *tok, tk_post *p, strata_error *err);
void tk_post_free(tk_post *p);

/* ---- decoders (decoder.c) */
typedef enum { DEC_SEQUENCE, DEC_BYTELEVEL, DEC_METASPACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_REPLACE } tk_dec_kind;

typedef struct tk_decoder {
    tk_dec_kind kind;
    struct tk_decoder *children;
    size_t n_children;
    tk_pattern pattern;         /* Replace */
    const char *content;        /* Replace text; Strip char */
    size_t content_len;
    size_t start, stop;         /* Strip */
    char replacement[5];        /* Metaspace */
    size_t replacement_len;
    tk_prepend_scheme prepend_scheme;
} tk_decoder;

strata_status tk_decoder_parse(const tj_value *v, tk_decoder *d, strata_error *err);
void tk_decoder_free(tk_decoder *d);
/* 1 when the decoder or one of its children has the given kind. */
int tk_decoder_has(const tk_decoder *d, tk_dec_kind kind);
/* 1 when a token string has ByteFallback's "<0xNN>" form. */
int tk_is_byte_token(const char *s, size_t n);
/* Run the decoder chain over the token strings in sc->a (result in sc->a). */
strata_status tk_decode_chain(const tk_decoder *d, tk_scratch *sc, strata_error *err);

/* ---- the tokenizer */
struct strata_tokenizer {
    char *json;                 /* the file's bytes; every string points into it */
    tj_doc doc;                 /* the parsed file, freed once the stages are built */
    tk_bpe bpe;
    int32_t n_ids;              /* max id + 1 */
    const char **tok_str;       /* id -> token string (added tokens win) */
    uint32_t *tok_len;
    uint8_t *tok_special;       /* id -> 1 for a special added token */
    tk_strmap added_map;        /* added token content -> id */
    tk_added added;
    tk_normalizer *normalizer;
    tk_pretok *pretok;
    tk_post post;
    tk_decoder *decoder;
};

/* Normalize with the tokenizer's normalizer (none: unchanged). */
strata_status tk_tokenizer_normalize(const strata_tokenizer *tok, tk_scratch *sc, tk_buf *buf,
                                     strata_error *err);
/* Decode ids into out (appended). */
strata_status tk_decode_ids(const strata_tokenizer *tok, tk_scratch *sc, const int32_t *ids, size_t n,
                            int skip_special, tk_buf *out, strata_error *err);

static inline strata_status tk_nomem(strata_error *err)
{
    return strata_fail(err, STRATA_E_NOMEM, "tokenizer: out of memory");
}

/* Unsupported component: "tokenizer.json: <what> type 'X' is not supported". */
strata_status tk_unsupported(strata_error *err, const char *what, const tj_value *type);
/* Fetch a required string field. */
strata_status tk_need_str(const tj_value *obj, const char *key, const char *what, const char **out,
                          size_t *len, strata_error *err);

#endif
