/*
 * postprocessor.c — tokenizer.json post_processor, applied when the caller asks for
 * add_special (HF's add_special_tokens=True) to a single sequence: TemplateProcessing
 * ("single" template), BertProcessing / RobertaProcessing, ByteLevel (changes offsets
 * only, so nothing here) and Sequence. All of them reduce to ids before and after the
 * sequence, so the chain is flattened at load into one prefix and one suffix.
 */
#include <stdlib.h>

#include "tokenizer/internal.h"

/* *arr = add + *arr (front) or *arr + add. */
static int add_ids(int32_t **arr, size_t *n, const int32_t *add, size_t n_add, int front)
{
    if (!n_add)
        return 0;
    int32_t *a = realloc(*arr, (*n + n_add) * sizeof *a);
    if (!a)
        return -1;
    if (front) {
        memmove(a + n_add, a, *n * sizeof *a);
        memcpy(a, add, n_add * sizeof *a);
    } else {
        memcpy(a + *n, add, n_add * sizeof *a);
    }
    *arr = a;
    *n += n_add;
    return 0;
}

/* The ids of special_tokens[name] of a TemplateProcessing. */
static strata_status template_special(const tj_value *specials, const char *name, int32_t *ids, size_t *n,
                                      strata_error *err)
{
    const tj_value *arr = tj_get(tj_get(specials, name), "ids");
    if (!arr || arr->kind != TJ_ARRAY || arr->n > 64)
        return strata_fail(err, STRATA_E_FORMAT,
                           "tokenizer.json: TemplateProcessing special token '%s' has no ids", name);
    for (uint32_t i = 0; i < arr->n; i++) {
        const tj_value *v = &arr->u.items[i];
        if (v->kind != TJ_NUMBER || v->u.num < 0 || v->u.num >= (double)TK_MAX_IDS)
            return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: TemplateProcessing '%s' has a bad id", name);
        ids[i] = (int32_t)v->u.num;
    }
    *n = arr->n;
    return STRATA_OK;
}

static strata_status parse_template(const tj_value *v, tk_post *one, strata_error *err)
{
    const tj_value *single = tj_get(v, "single"), *specials = tj_get(v, "special_tokens");
    int seen_a = 0;
    if (!single || single->kind != TJ_ARRAY)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: TemplateProcessing needs a \"single\" template");
    for (uint32_t i = 0; i < single->n; i++) {
        const tj_value *item = &single->u.items[i];
        const char *name = tj_str(tj_get(tj_get(item, "SpecialToken"), "id"));
        const char *seq = tj_str(tj_get(tj_get(item, "Sequence"), "id"));
        if (seq && !strcmp(seq, "A") && !seen_a) {
            seen_a = 1;
            continue;
        }
        if (!name)
            return strata_fail(err, STRATA_E_UNSUPPORTED, "tokenizer.json: TemplateProcessing single item %u is not supported", i);
        int32_t ids[64];
        size_t n = 0;
        STRATA_TRY(template_special(specials, name, ids, &n, err));
        if (seen_a ? add_ids(&one->suffix, &one->n_suffix, ids, n, 0) : add_ids(&one->prefix, &one->n_prefix, ids, n, 0))
            return tk_nomem(err);
    }
    return STRATA_OK;
}

/* "cls": ["<s>", 0] style pair of Bert/RobertaProcessing. */
static strata_status pair_id(const tj_value *v, const char *key, int32_t *id, strata_error *err)
{
    const tj_value *p = tj_get(v, key);
    if (!p || p->kind != TJ_ARRAY || p->n != 2 || p->u.items[1].kind != TJ_NUMBER || p->u.items[1].u.num < 0 ||
        p->u.items[1].u.num >= (double)TK_MAX_IDS)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: post_processor needs \"%s\": [token, id]", key);
    *id = (int32_t)p->u.items[1].u.num;
    return STRATA_OK;
}

static strata_status parse_one(const tj_value *v, tk_post *acc, strata_error *err)
{
    const tj_value *type = tj_get(v, "type");
    const char *t = tj_str(type);
    tk_post one = {0};
    strata_status s = STRATA_OK;
    if (!t)
        return tk_unsupported(err, "post_processor", type);
    if (!strcmp(t, "Sequence")) {
        const tj_value *arr = tj_get(v, "processors");
        if (!arr || arr->kind != TJ_ARRAY)
            return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: post_processor Sequence needs \"processors\"");
        for (uint32_t i = 0; i < arr->n; i++)
            STRATA_TRY(parse_one(&arr->u.items[i], acc, err));
        return STRATA_OK;
    }
    if (!strcmp(t, "ByteLevel"))
        return STRATA_OK;
    if (!strcmp(t, "TemplateProcessing")) {
        s = parse_template(v, &one, err);
    } else if (!strcmp(t, "BertProcessing") || !strcmp(t, "RobertaProcessing")) {
        int32_t cls, sep;
        if (!(s = pair_id(v, "cls", &cls, err)) && !(s = pair_id(v, "sep", &sep, err)) &&
            (add_ids(&one.prefix, &one.n_prefix, &cls, 1, 0) || add_ids(&one.suffix, &one.n_suffix, &sep, 1, 0)))
            s = tk_nomem(err);
    } else {
        return tk_unsupported(err, "post_processor", type);
    }
    /* a later processor wraps the result of the earlier ones */
    if (s == STRATA_OK && (add_ids(&acc->prefix, &acc->n_prefix, one.prefix, one.n_prefix, 1) ||
                           add_ids(&acc->suffix, &acc->n_suffix, one.suffix, one.n_suffix, 0)))
        s = tk_nomem(err);
    tk_post_free(&one);
    return s;
}

strata_status tk_post_parse(const tj_value *v, const strata_tokenizer *tok, tk_post *p, strata_error *err)
{
    memset(p, 0, sizeof *p);
    if (!v || v->kind == TJ_NULL)
        return STRATA_OK;
    STRATA_TRY(parse_one(v, p, err));
    for (size_t i = 0; i < p->n_prefix + p->n_suffix; i++) {
        int32_t id = i < p->n_prefix ? p->prefix[i] : p->suffix[i - p->n_prefix];
        if (id >= tok->n_ids)
            return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: post_processor id %d is not in the vocab", id);
    }
    return STRATA_OK;
}

void tk_post_free(tk_post *p)
{
    free(p->prefix);
    free(p->suffix);
    memset(p, 0, sizeof *p);
}
