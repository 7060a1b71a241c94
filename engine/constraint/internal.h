/*
 * internal.h — constrained output, shared by engine/constraint/: the vocabulary's
 * bytes (vocab.c), a JSON Schema compiled to a graph of nodes (json_schema.c), and
 * the byte automaton that walks the graph as text is generated (json_fsm.c).
 * sampler.c sees only the cursor API at the end.
 *
 * Invariant: a cursor's state is always a prefix of some valid text; a token is
 * allowed exactly when every one of its bytes keeps it so (or, for an end id, when
 * the text is whole). So a masked draw can never paint itself into a corner, except
 * where the schema itself asks for nesting deeper than JF_MAX_DEPTH.
 */
#ifndef STRATA_CONSTRAINT_INTERNAL_H
#define STRATA_CONSTRAINT_INTERNAL_H

#include <stdint.h>

#include "strata.h"

/* ---- vocab.c */
struct strata_vocab {
    int n;                      /* token ids 0..n-1 */
    char *blob;                 /* every token's bytes, back to back */
    uint32_t *off;              /* (n + 1) token id's bytes: blob[off[id] .. off[id + 1]) */
    int32_t *by_first;          /* (n) ids with bytes, ordered by first byte */
    uint8_t *plain;             /* (n) characters of a token that is whole UTF-8 characters with no
                                 * '"', '\\' or control byte (fits anywhere in a string: no walk
                                 * needed), 1..255; 0: any other token */
    int32_t first_at[257];      /* ids starting with byte b: by_first[first_at[b] .. first_at[b + 1]) */
    int32_t *empty;             /* ids with no bytes (special tokens, ids past the tokenizer's) */
    int n_empty;
};

/* The first byte of a UTF-8 character beyond ASCII: how many continuation bytes
 * follow (0: not a valid first byte) and the range of the next one (the later ones
 * are 0x80..0xBF); RFC 3629, so no overlong forms or surrogates. */
static inline int jf_utf8_lead(unsigned char b, uint8_t *lo, uint8_t *hi)
{
    static const struct { unsigned char first, last, need, lo, hi; } LEADS[] = {
        {0xC2, 0xDF, 1, 0x80, 0xBF}, {0xE0, 0xE0, 2, 0xA0, 0xBF}, {0xE1, 0xEC, 2, 0x80, 0xBF},
        {0xED, 0xED, 2, 0x80, 0x9F}, {0xEE, 0xEF, 2, 0x80, 0xBF}, {0xF0, 0xF0, 3, 0x90, 0xBF},
        {0xF1, 0xF3, 3, 0x80, 0xBF}, {0xF4, 0xF4, 3, 0x80, 0x8F}};
    for (size_t i = 0; i < sizeof LEADS / sizeof *LEADS; i++)
        if (b >= LEADS[i].first && b <= LEADS[i].last) {
            *lo = LEADS[i].lo;
            *hi = LEADS[i].hi;
            return LEADS[i].need;
        }
    return 0;
}

/* ---- json_schema.c: the compiled schema */

/* The fixed texts a constraint writes (raws[]): the user's prefix and suffix, then
 * the pieces of an XML call's parameter list. */
enum { JF_RAW_PREFIX, JF_RAW_MID, JF_RAW_SUFFIX, JF_RAW_PARAM, JF_RAW_FUNCTION, JF_RAW_NL, JF_RAW_PARAM_END, JF_RAWS };
enum {
    JT_NULL = 1, JT_BOOL = 2, JT_INT = 4, JT_NUM = 8, JT_STR = 16, JT_ARR = 32, JT_OBJ = 64, JT_ANY = 127
};
#define JF_NONE (-1)            /* additionalProperties: false */
#define JF_MAX_PROPS 64         /* properties of one object, literals of one enum */
#define JF_MAX_DEPTH 64         /* nesting of objects and arrays */
#define JF_MAX_INDENT 20        /* spaces or tabs after a newline between JSON tokens */
#define JF_MAX_NUMBER 24        /* bytes of a number */
#define JF_MAX_END 16           /* end ids of a constraint */

typedef struct jf_lit {         /* an enum / const value as compact JSON text */
    const char *text;
    int len;
} jf_lit;

typedef struct jf_call {        /* a function a forced tool call may name */
    const char *name;           /* no '<', '>', '"', '\\' or control bytes (checked at compile) */
    int len;
    int node;                   /* its arguments */
} jf_call;

typedef struct jf_prop {
    const char *name;           /* no '"', '\\' or control bytes (checked at compile) */
    int len;
    int node;
} jf_prop;

typedef struct jf_node {
    unsigned types;             /* JT_* the value may take */
    int lit0, n_lits;           /* n_lits > 0: the value is one of lits[lit0 ..] exactly */
    int min_len, max_len;       /* string, in characters; max_len -1: none */
    double min, max;            /* number: its bounds (-inf / inf: none; no exponent when bounded) */
    int min_excl, max_excl;     /* 1: exclusiveMinimum / exclusiveMaximum */
    int items;                  /* array: node of every item */
    int min_items, max_items;   /* max_items -1: none */
    int prop0, n_props;         /* object: props[prop0 ..] */
    uint64_t required;          /* bit i: props[prop0 + i] must appear */
    int additional;             /* node of other keys' values, or JF_NONE */
    int alt0, n_alts;           /* anyOf: the value takes the part of alts[alt0 + i] whose
                                 * types hold its own (their types do not overlap) */
} jf_node;

struct strata_constraint {
    const strata_vocab *vocab;
    jf_node *nodes;             /* nodes[0]: any JSON value; root is the text's */
    int n_nodes, root;
    jf_prop *props;
    int n_props;
    jf_lit *lits;
    int n_lits;
    int *alts;                  /* anyOf branches' nodes */
    int n_alts;
    char **strings;             /* owned texts of names and literals */
    int n_strings;
    int32_t *end_ids;
    int n_end;
    jf_lit raws[JF_RAWS];       /* fixed texts: around a call's name, and the XML syntax's */
    jf_call *calls;             /* a tool call (strata_constraint_new_call): prefix, one of these */
    int n_calls;                /* names, mid, its arguments, suffix; 0: root is the whole text */
    int xml;                    /* the arguments are written as XML parameters */
};

/* ---- json_fsm.c: the cursor sampler.c keeps per choice */
typedef struct cons_cursor cons_cursor;

strata_status cons_cursor_new(const strata_constraint *c, cons_cursor **out, strata_error *err);
void cons_cursor_free(cons_cursor *k);
/* 1 when token may come next. */
int cons_allows(const cons_cursor *k, int32_t token);
/* Move on by token (one cons_allows accepted; others leave the cursor as it is). */
void cons_advance(cons_cursor *k, int32_t token);
/* logits[t] = -inf for every token t that may not come next; how many may. */
int cons_mask(const cons_cursor *k, float *logits);

#endif
