/*
 * json.h — a small in-place JSON reader for tokenizer.json. jansson needs ~370 ms for
 * the 7 MB Nemotron-H file; this reader decodes strings inside the caller's buffer
 * (NUL-terminating each one where its closing quote was) and allocates values from one
 * arena, so it reads the same file in a few tens of milliseconds. It keeps U+0000 in
 * strings (n is the byte length), checks that strings are UTF-8, and bounds nesting
 * depth.
 */
#ifndef STRATA_TOKENIZER_JSON_H
#define STRATA_TOKENIZER_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "strata.h"

typedef enum tj_kind { TJ_NULL, TJ_FALSE, TJ_TRUE, TJ_NUMBER, TJ_STRING, TJ_ARRAY, TJ_OBJECT } tj_kind;

typedef struct tj_value tj_value;
struct tj_value {
    uint32_t kind;
    uint32_t n;                 /* string: bytes; array: items; object: members */
    union {
        double num;
        const char *str;        /* NUL-terminated, may also hold NULs */
        tj_value *items;        /* array: n values; object: 2n values, key then value */
    } u;
};

typedef struct tj_doc {
    tj_value root;
    void *blocks;               /* arena blocks, freed by tj_doc_free */
} tj_doc;

/* Parse text[0..len); text must be writable with text[len] == '\0'. Strings of the
 * result point into text, which must outlive the document. */
strata_status tj_parse(char *text, size_t len, tj_doc *doc, strata_error *err);
void tj_doc_free(tj_doc *doc);

/* Member of an object by key, or NULL (also when obj is not an object). */
const tj_value *tj_get(const tj_value *obj, const char *key);
/* The value as a string, or NULL when it is not one. */
const char *tj_str(const tj_value *v);
/* 1 when v is true, 0 when false, null or absent, def otherwise. */
int tj_bool(const tj_value *v, int def);
const char *tj_kind_name(const tj_value *v);

#endif
