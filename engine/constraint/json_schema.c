/*
 * json_schema.c — a JSON Schema compiled to the node graph json_fsm.c walks
 * (strata_constraint_new_json). The subset is what structured-output clients send
 * (OpenAI's strict mode, pydantic's model_json_schema): types, enum / const,
 * objects with properties, required and additionalProperties, arrays with items and
 * bounds, string lengths, anyOf / oneOf whose branches differ in type, and $ref into
 * the document (recursive schemas included). A keyword outside it is refused by
 * name rather than silently ignored: the client would otherwise trust output that
 * was never checked against it. Annotations (description, format, ...) are ignored.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "constraint/internal.h"
#include "core/error.h"

#define MAX_SCHEMA_DEPTH 64

typedef struct compiler {
    strata_constraint *c;
    json_t *doc;                /* the whole schema, for $ref */
    struct memo { const json_t *schema; int node; } *memo; /* schema objects compiled so far */
    int n_memo, cap_memo, cap_nodes, cap_props, cap_lits, cap_strings, cap_alts;
    json_t *docs[JF_MAX_PROPS + 1]; /* every schema parsed (the memo points into them) */
    int n_docs;
    int depth;
    strata_error *err;
} compiler;

static const char *const ANNOTATIONS[] = {"title", "description", "default", "examples", "$schema", "$id",
                                          "$comment", "strict", "format", "$defs", "definitions", NULL};

static int grow(void **p, int *cap, int need, size_t size)
{
    if (need <= *cap)
        return 1;
    int n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, (size_t)n * size);
    if (!q)
        return 0;
    *p = q;
    *cap = n;
    return 1;
}

static strata_status nomem(compiler *k)
{
    return strata_fail(k->err, STRATA_E_NOMEM, "out of memory");
}

/* A new node (any value, no bounds) at *out. */
static strata_status new_node(compiler *k, int *out)
{
    strata_constraint *c = k->c;
    if (!grow((void **)&c->nodes, &k->cap_nodes, c->n_nodes + 1, sizeof *c->nodes))
        return nomem(k);
    c->nodes[c->n_nodes] = (jf_node){.types = JT_ANY, .max_len = -1, .max_items = -1, .min = -INFINITY,
                                     .max = INFINITY};
    *out = c->n_nodes++;
    return STRATA_OK;
}

/* Keep text (malloc'd) for the constraint's lifetime. */
static strata_status own(compiler *k, char *text)
{
    strata_constraint *c = k->c;
    if (!text || !grow((void **)&c->strings, &k->cap_strings, c->n_strings + 1, sizeof *c->strings)) {
        free(text);
        return nomem(k);
    }
    c->strings[c->n_strings++] = text;
    return STRATA_OK;
}

static strata_status add_lit(compiler *k, const json_t *value)
{
    strata_constraint *c = k->c;
    STRATA_TRY(own(k, json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15))));
    if (!grow((void **)&c->lits, &k->cap_lits, c->n_lits + 1, sizeof *c->lits))
        return nomem(k);
    const char *text = c->strings[c->n_strings - 1];
    c->lits[c->n_lits++] = (jf_lit){text, (int)strlen(text)};
    return STRATA_OK;
}

static int is_annotation(const char *key)
{
    for (int i = 0; ANNOTATIONS[i]; i++)
        if (!strcmp(key, ANNOTATIONS[i]))
            return 1;
    return 0;
}

static size_t count_annotations(const json_t *schema)
{
    size_t n = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)schema, key, v)
        n += (size_t)is_annotation(key);
    return n;
}

static strata_status compile(compiler *k, const json_t *schema, int *out);

static strata_status type_bits(compiler *k, const json_t *t, unsigned *out)
{
    static const struct { const char *name; unsigned bits; } NAMES[] = {
        {"null", JT_NULL}, {"boolean", JT_BOOL}, {"integer", JT_INT}, {"number", JT_NUM | JT_INT},
        {"string", JT_STR}, {"array", JT_ARR}, {"object", JT_OBJ}};
    size_t n = json_is_array(t) ? json_array_size(t) : 1;
    *out = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *one = json_is_array(t) ? json_array_get(t, i) : t;
        unsigned bits = 0;
        for (size_t j = 0; json_is_string(one) && j < sizeof NAMES / sizeof *NAMES; j++)
            if (!strcmp(json_string_value(one), NAMES[j].name))
                bits = NAMES[j].bits;
        if (!bits)
            return strata_fail(k->err, STRATA_E_INVALID, "JSON schema: 'type' must name JSON types");
        *out |= bits;
    }
    return *out ? STRATA_OK : strata_fail(k->err, STRATA_E_INVALID, "JSON schema: 'type' is empty");
}

/* enum (an array) or const (one value): the node's literal set. */
static strata_status literals(compiler *k, const json_t *values, int is_array, jf_node *n)
{
    size_t count = is_array ? json_array_size(values) : 1;
    if (is_array && !json_is_array(values))
        return strata_fail(k->err, STRATA_E_INVALID, "JSON schema: 'enum' must be an array");
    if (count == 0 || count > JF_MAX_PROPS)
        return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: an enum of 1 to %d values is supported",
                           JF_MAX_PROPS);
    n->lit0 = k->c->n_lits;
    for (size_t i = 0; i < count; i++)
        STRATA_TRY(add_lit(k, is_array ? json_array_get(values, i) : values));
    n->n_lits = (int)count;
    return STRATA_OK;
}

static strata_status bound(compiler *k, const json_t *schema, const char *key, int *out)
{
    const json_t *v = json_object_get(schema, key);
    if (!v)
        return STRATA_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000)
        return strata_fail(k->err, STRATA_E_INVALID, "JSON schema: '%s' must be an integer in [0, 1000000]", key);
    *out = (int)json_integer_value(v);
    return STRATA_OK;
}

static int plain_name(const char *s)
{
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
            return 0;
    return 1;
}

static strata_status object_part(compiler *k, const json_t *schema, int node)
{
    strata_constraint *c = k->c;
    const json_t *props = json_object_get(schema, "properties"), *req = json_object_get(schema, "required");
    const json_t *extra = json_object_get(schema, "additionalProperties");
    if (props && (!json_is_object(props) || json_object_size(props) > JF_MAX_PROPS))
        return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: 'properties' must be an object of at most %d",
                           JF_MAX_PROPS);
    int prop0 = c->n_props, n_props = props ? (int)json_object_size(props) : 0;
    if (!grow((void **)&c->props, &k->cap_props, prop0 + n_props, sizeof *c->props))
        return nomem(k);
    c->n_props += n_props;              /* reserved now: compiling the values adds more */
    const char *name;
    const json_t *sub;
    int i = 0;
    json_object_foreach((json_t *)props, name, sub) {
        if (!plain_name(name))
            return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: property names with '\"', '\\' or "
                               "control characters are not supported");
        STRATA_TRY(own(k, strdup(name)));
        const char *owned = c->strings[c->n_strings - 1];
        int value;
        STRATA_TRY(compile(k, sub, &value));
        c->props[prop0 + i++] = (jf_prop){owned, (int)strlen(name), value};
    }
    uint64_t required = 0;
    for (size_t r = 0; req && r < json_array_size(req); r++) {
        const json_t *want = json_array_get(req, r);
        int found = -1;
        for (int j = 0; json_is_string(want) && j < n_props; j++)
            if (!strcmp(c->props[prop0 + j].name, json_string_value(want)))
                found = j;
        if (found < 0)
            return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: 'required' may name only keys of "
                               "'properties'");
        required |= 1ull << found;
    }
    if (req && !json_is_array(req))
        return strata_fail(k->err, STRATA_E_INVALID, "JSON schema: 'required' must be an array");
    int additional = 0;
    if (json_is_false(extra))
        additional = JF_NONE;
    else if (extra && !json_is_true(extra))
        STRATA_TRY(compile(k, extra, &additional));
    jf_node *n = &c->nodes[node];
    n->prop0 = prop0;
    n->n_props = n_props;
    n->required = required;
    n->additional = additional;
    return STRATA_OK;
}

static strata_status array_part(compiler *k, const json_t *schema, int node)
{
    const json_t *items = json_object_get(schema, "items");
    if (items && !json_is_object(items) && !json_is_boolean(items))
        return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: 'items' must be one schema");
    int item = 0, lo = 0, hi = -1;
    if (items)
        STRATA_TRY(compile(k, items, &item));
    STRATA_TRY(bound(k, schema, "minItems", &lo));
    STRATA_TRY(bound(k, schema, "maxItems", &hi));
    if (hi >= 0 && hi < lo)
        return strata_fail(k->err, STRATA_E_INVALID, "JSON schema: maxItems < minItems");
    jf_node *n = &k->c->nodes[node];
    n->items = item;
    n->min_items = lo;
    n->max_items = hi;
    return STRATA_OK;
}

static strata_status string_part(compiler *k, const json_t *schema, int node)
{
    int lo = 0, hi = -1;
    STRATA_TRY(bound(k, schema, "minLength", &lo));
    STRATA_TRY(bound(k, schema, "maxLength", &hi));
    if (hi >= 0 && hi < lo)
        return strata_fail(k->err, STRATA_E_INVALID, "JSON schema: maxLength < minLength");
    k->c->nodes[node].min_len = lo;
    k->c->nodes[node].max_len = hi;
    return STRATA_OK;
}

/* minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers, as JSON Schema
 * draft 6 on spells them); the tighter of an inclusive and an exclusive bound.
 * Enforced on integers (exactly, json_fsm.c); a bounded "number" is refused, as a
 * decimal's reachable values near its byte bound are not worth the risk of
 * stranding one. */
static strata_status number_part(compiler *k, const json_t *schema, int node)
{
    static const char *const KEYS[] = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"};
    jf_node *n = &k->c->nodes[node];
    for (int i = 0; i < 4; i++) {
        const json_t *v = json_object_get(schema, KEYS[i]);
        if (!v)
            continue;
        if (!json_is_number(v))
            return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: '%s' must be a number", KEYS[i]);
        double x = json_number_value(v);
        int excl = i % 2, upper = i >= 2;
        if (!upper && (x > n->min || (x == n->min && excl))) {
            n->min = x;
            n->min_excl = excl;
        } else if (upper && (x < n->max || (x == n->max && excl))) {
            n->max = x;
            n->max_excl = excl;
        }
    }
    if (n->min > n->max || (n->min == n->max && (n->min_excl || n->max_excl)))
        return strata_fail(k->err, STRATA_E_INVALID, "JSON schema: no number lies within minimum .. maximum");
    if ((n->min > -INFINITY || n->max < INFINITY) && (n->types & JT_NUM))
        return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: minimum and maximum are enforced on "
                           "\"type\": \"integer\" only");
    double lo = n->min_excl ? floor(n->min) + 1 : ceil(n->min), hi = n->max_excl ? ceil(n->max) - 1 : floor(n->max);
    if ((isfinite(lo) && fabs(lo) >= 1e17) || (isfinite(hi) && fabs(hi) >= 1e17))
        return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: integer bounds beyond 10^17 are not supported");
    if (lo > hi)
        return strata_fail(k->err, STRATA_E_INVALID, "JSON schema: no integer lies within minimum .. maximum");
    return STRATA_OK;
}

/* A literal-only view of a branch: its literals, or "null" / "true" / "false" for
 * the types null and boolean; 0 when the branch admits other values. */
static int literal_only(const jf_node *n)
{
    return n->n_lits > 0 || (n->types & ~(unsigned)(JT_NULL | JT_BOOL)) == 0;
}

static strata_status add_type_literals(compiler *k, unsigned types)
{
    json_t *v[3] = {types & JT_NULL ? json_null() : NULL, types & JT_BOOL ? json_true() : NULL,
                    types & JT_BOOL ? json_false() : NULL};
    for (int i = 0; i < 3; i++)
        if (v[i])
            STRATA_TRY(add_lit(k, v[i]));
    return STRATA_OK;
}

/* anyOf / oneOf: branches of distinct types become the node's alternatives (each
 * value takes the branch of its own type; the branches are looked up only then, so
 * a branch may be a schema still being compiled, as recursive ones are); branches
 * that are all literal sets (or null / boolean) merge into one literal set. */
static strata_status alternatives(compiler *k, const json_t *branches, int node)
{
    strata_constraint *c = k->c;
    size_t nb = json_array_size(branches);
    if (!json_is_array(branches) || nb == 0 || nb > JF_MAX_PROPS)
        return strata_fail(k->err, STRATA_E_INVALID, "JSON schema: 'anyOf' must be a non-empty array");
    int alt0 = c->n_alts, all_literal = 1, any_literal = 0;
    unsigned seen = 0, overlap = 0;
    if (!grow((void **)&c->alts, &k->cap_alts, alt0 + (int)nb, sizeof *c->alts))
        return nomem(k);
    c->n_alts += (int)nb;                   /* reserved now: compiling the branches adds more */
    for (size_t i = 0; i < nb; i++) {
        int b;
        STRATA_TRY(compile(k, json_array_get(branches, i), &b));
        c->alts[alt0 + (int)i] = b;
        all_literal &= literal_only(&c->nodes[b]);
        any_literal |= c->nodes[b].n_lits > 0;
        overlap |= seen & c->nodes[b].types;
        seen |= c->nodes[b].types;
    }
    if (any_literal || (all_literal && overlap)) {
        if (!all_literal)
            return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: anyOf mixing an enum with open types "
                               "is not supported");
        int lit0 = c->n_lits;
        for (size_t i = 0; i < nb; i++) {
            jf_node b = c->nodes[c->alts[alt0 + (int)i]];
            for (int j = 0; j < b.n_lits; j++) {
                if (!grow((void **)&c->lits, &k->cap_lits, c->n_lits + 1, sizeof *c->lits))
                    return nomem(k);
                c->lits[c->n_lits++] = c->lits[b.lit0 + j];
            }
            if (!b.n_lits)
                STRATA_TRY(add_type_literals(k, b.types));
        }
        if (c->n_lits - lit0 > JF_MAX_PROPS)
            return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: over %d literals", JF_MAX_PROPS);
        c->nodes[node].lit0 = lit0;
        c->nodes[node].n_lits = c->n_lits - lit0;
        return STRATA_OK;
    }
    if (overlap)
        return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: anyOf branches of the same type are not "
                           "supported");
    c->nodes[node].types = seen;
    c->nodes[node].alt0 = alt0;
    c->nodes[node].n_alts = (int)nb;
    return STRATA_OK;
}

/* "#", "#/$defs/name" or "#/definitions/name". */
static strata_status resolve(compiler *k, const json_t *ref, const json_t **out)
{
    const char *r = json_string_value(ref);
    if (r && !strcmp(r, "#")) {
        *out = k->doc;
        return STRATA_OK;
    }
    const char *defs = NULL;
    if (r && !strncmp(r, "#/$defs/", 8))
        defs = "$defs";
    else if (r && !strncmp(r, "#/definitions/", 14))
        defs = "definitions";
    const json_t *target = defs ? json_object_get(json_object_get(k->doc, defs), strchr(r + 2, '/') + 1) : NULL;
    if (!target)
        return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: $ref '%s' is not '#', '#/$defs/NAME' or "
                           "'#/definitions/NAME' of this schema", r ? r : "(not a string)");
    *out = target;
    return STRATA_OK;
}

static strata_status check_keywords(compiler *k, const json_t *schema)
{
    static const char *const KNOWN[] = {"type", "enum", "const", "properties", "required", "additionalProperties",
                                        "items", "minItems", "maxItems", "minLength", "maxLength", "minimum",
                                        "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf",
                                        "allOf", "$ref", NULL};
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)schema, key, v) {
        int known = is_annotation(key);
        for (int i = 0; KNOWN[i] && !known; i++)
            known = !strcmp(key, KNOWN[i]);
        if (!known)
            return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema keyword '%s' is not supported", key);
    }
    return STRATA_OK;
}

static strata_status remember(compiler *k, const json_t *schema, int node)
{
    if (!grow((void **)&k->memo, &k->cap_memo, k->n_memo + 1, sizeof *k->memo))
        return nomem(k);
    k->memo[k->n_memo++] = (struct memo){schema, node};
    return STRATA_OK;
}

/* The parts of one schema object, in node: type, literals, then each type's part. */
static strata_status compile_object(compiler *k, const json_t *schema, int node)
{
    const json_t *any = json_object_get(schema, "anyOf");
    if (any || (any = json_object_get(schema, "oneOf")))
        return json_object_size(schema) == 1 + count_annotations(schema)
                   ? alternatives(k, any, node)
                   : strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: keywords beside anyOf are not supported");
    const json_t *t = json_object_get(schema, "type"), *en = json_object_get(schema, "enum");
    const json_t *cn = json_object_get(schema, "const");
    if (t) {
        unsigned types;
        STRATA_TRY(type_bits(k, t, &types));
        k->c->nodes[node].types = types;
    }
    if (en || cn)
        return literals(k, en ? en : cn, en != NULL, &k->c->nodes[node]);
    STRATA_TRY(string_part(k, schema, node));
    STRATA_TRY(number_part(k, schema, node));
    STRATA_TRY(array_part(k, schema, node));
    return object_part(k, schema, node);
}

/* A $ref, or an allOf of one schema (pydantic 1 wraps a described $ref so), with
 * nothing but annotations beside it, is its target's node itself. */
static strata_status compile_alias(compiler *k, const json_t *schema, const json_t *ref, const json_t *all, int *out)
{
    if (json_object_size(schema) != 1 + count_annotations(schema) || (all && json_array_size(all) != 1))
        return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: keywords beside $ref, and allOf of more than "
                           "one schema, are not supported");
    const json_t *target = NULL;
    if (ref)
        STRATA_TRY(resolve(k, ref, &target));
    else
        target = json_array_get(all, 0);
    k->depth++;
    strata_status st = compile(k, target, out);
    k->depth--;
    return st == STRATA_OK ? remember(k, schema, *out) : st;
}

static strata_status compile(compiler *k, const json_t *schema, int *out)
{
    if (json_is_true(schema) || (json_is_object(schema) && json_object_size(schema) == 0)) {
        *out = 0;
        return STRATA_OK;
    }
    if (!json_is_object(schema))
        return strata_fail(k->err, STRATA_E_UNSUPPORTED, "JSON schema: a schema must be an object (or true)");
    for (int i = 0; i < k->n_memo; i++)
        if (k->memo[i].schema == schema) {
            *out = k->memo[i].node;
            return STRATA_OK;
        }
    if (k->depth >= MAX_SCHEMA_DEPTH)
        return strata_fail(k->err, STRATA_E_LIMIT, "JSON schema: nested deeper than %d", MAX_SCHEMA_DEPTH);
    STRATA_TRY(check_keywords(k, schema));
    const json_t *ref = json_object_get(schema, "$ref"), *all = json_object_get(schema, "allOf");
    if (ref || all)
        return compile_alias(k, schema, ref, all, out);
    STRATA_TRY(new_node(k, out));
    STRATA_TRY(remember(k, schema, *out));
    k->depth++;
    strata_status st = compile_object(k, schema, *out);
    k->depth--;
    return st;
}

void strata_constraint_free(strata_constraint *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_strings; i++)
        free(c->strings[i]);
    free(c->strings);
    free(c->nodes);
    free(c->props);
    free(c->lits);
    free(c->alts);
    free(c->calls);
    free(c->end_ids);
    free(c);
}

/* Parse schema text and compile it into *node (NULL: any object, as json_object
 * and argument-less calls ask). */
static strata_status compile_text(compiler *k, const char *schema, size_t len, int *node)
{
    if (!schema) {
        STRATA_TRY(new_node(k, node));
        k->c->nodes[*node].types = JT_OBJ;
        return STRATA_OK;
    }
    json_error_t je;
    json_t *doc = json_loadb(schema, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc)
        return strata_fail(k->err, STRATA_E_INVALID, "JSON schema: %s (line %d)", je.text, je.line);
    k->docs[k->n_docs++] = k->doc = doc;
    return compile(k, doc, node);
}

/* The fixed texts of the constraint (NULL: none), owned by c. */
static strata_status set_raws(compiler *k, const char *prefix, const char *mid, const char *suffix)
{
    const char *texts[JF_RAWS] = {prefix ? prefix : "", mid ? mid : "", suffix ? suffix : "", "arameter=",
                                  "function>", "\n", "\n</parameter>\n"};
    for (int i = 0; i < JF_RAWS; i++) {
        STRATA_TRY(own(k, strdup(texts[i])));
        k->c->raws[i] = (jf_lit){k->c->strings[k->c->n_strings - 1], (int)strlen(texts[i])};
    }
    return STRATA_OK;
}

/* XML arguments are an object's properties written as <parameter=NAME>: names
 * must not hold '<', '>' or a line break, and the schema must be a plain object. */
static strata_status check_xml(compiler *k, int node)
{
    const strata_constraint *c = k->c;
    const jf_node *n = &c->nodes[node];
    if (n->types != JT_OBJ || n->n_lits || n->n_alts)
        return strata_fail(k->err, STRATA_E_UNSUPPORTED, "XML call: the arguments' schema must be an object");
    for (int i = 0; i < n->n_props; i++)
        if (strpbrk(c->props[n->prop0 + i].name, "<>\n"))
            return strata_fail(k->err, STRATA_E_UNSUPPORTED, "XML call: parameter names may not hold '<', '>' or "
                               "a line break");
    return STRATA_OK;
}

/* The calls' names and arguments (strata_constraint_new_call). */
static strata_status compile_calls(compiler *k, const strata_call_schema *calls, int n, int xml, const char *mid)
{
    strata_constraint *c = k->c;
    if (n < 1 || n > JF_MAX_PROPS || !mid || !*mid)
        return strata_fail(k->err, STRATA_E_INVALID, "constraint: 1 to %d calls and a text after the name",
                           JF_MAX_PROPS);
    if (!(c->calls = calloc((size_t)n, sizeof *c->calls)))
        return nomem(k);
    for (int i = 0; i < n; i++) {
        const char *name = calls[i].name;
        if (!name || !*name || strlen(name) > 256 || strchr(name, mid[0]) || !plain_name(name) ||
            strpbrk(name, "<>"))
            return strata_fail(k->err, STRATA_E_INVALID, "constraint: call name '%s' is empty, too long, or holds "
                               "'<', '>', '\"', '\\' or a control byte", name ? name : "");
        STRATA_TRY(own(k, strdup(name)));
        c->calls[i] = (jf_call){c->strings[c->n_strings - 1], (int)strlen(name), 0};
        int node;
        STRATA_TRY(compile_text(k, calls[i].schema, calls[i].len, &node));
        if (xml)
            STRATA_TRY(check_xml(k, node));
        c->calls[i].node = node;
        c->n_calls = i + 1;
    }
    return STRATA_OK;
}

static strata_status new_constraint(const strata_vocab *v, const int32_t *end_ids, int n_end, strata_constraint **out,
                                    compiler *k, strata_error *err)
{
    *out = NULL;
    *k = (compiler){.err = err};
    if (!v || n_end < 1 || n_end > JF_MAX_END || !end_ids)
        return strata_fail(err, STRATA_E_INVALID, "constraint: needs a vocabulary and 1 to %d end ids", JF_MAX_END);
    for (int i = 0; i < n_end; i++)
        if (end_ids[i] < 0 || end_ids[i] >= v->n)
            return strata_fail(err, STRATA_E_INVALID, "constraint: end id %d is outside the vocabulary", end_ids[i]);
    strata_constraint *c = calloc(1, sizeof *c);
    if (!c || !(c->end_ids = malloc(sizeof(int32_t) * (size_t)n_end))) {
        free(c);
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    }
    k->c = c;
    c->vocab = v;
    memcpy(c->end_ids, end_ids, sizeof(int32_t) * (size_t)n_end);
    c->n_end = n_end;
    int any;
    return new_node(k, &any);               /* node 0: any value */
}

/* The compiler's scratch goes; on failure the constraint too (if there is one yet). */
static strata_status finish(compiler *k, strata_status st, strata_constraint **out)
{
    for (int i = 0; i < k->n_docs; i++)
        json_decref(k->docs[i]);
    free(k->memo);
    if (st != STRATA_OK)
        strata_constraint_free(k->c);
    else
        *out = k->c;
    return st;
}

strata_status strata_constraint_new_json(const strata_vocab *v, const char *schema, size_t len,
                                         const int32_t *end_ids, int n_end, strata_constraint **out,
                                         strata_error *err)
{
    compiler k;
    strata_status st = new_constraint(v, end_ids, n_end, out, &k, err);
    if (st != STRATA_OK)
        return finish(&k, st, out);
    st = compile_text(&k, schema, len, &k.c->root);
    if (st == STRATA_OK)
        st = set_raws(&k, NULL, NULL, NULL);
    return finish(&k, st, out);
}

strata_status strata_constraint_new_call(const strata_vocab *v, const strata_call_schema *calls, int n, int xml,
                                         const char *prefix, const char *mid, const char *suffix,
                                         const int32_t *end_ids, int n_end, strata_constraint **out,
                                         strata_error *err)
{
    compiler k;
    strata_status st = new_constraint(v, end_ids, n_end, out, &k, err);
    if (st != STRATA_OK)
        return finish(&k, st, out);
    k.c->xml = xml;
    st = calls ? compile_calls(&k, calls, n, xml, mid) : strata_fail(err, STRATA_E_INVALID, "constraint: no calls");
    if (st == STRATA_OK)
        st = set_raws(&k, prefix, mid, suffix);
    return finish(&k, st, out);
}
