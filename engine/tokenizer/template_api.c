/*
 * template_api.c — the public chat-template functions: parse a template once,
 * render it many times (each render owns a fresh bounded arena, so a template is
 * immutable after parse and may be shared by threads). Both entry points catch
 * the interpreter's unwinding (tpl_throw) and turn it into a strata_status.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata.h"
#include "tokenizer/template_internal.h"
#include "tokenizer/template_loader.h"

struct strata_template {
    tpl_arena arena;
    tpl_node *root;
    char *defaults_json;     /* variables from tokenizer_config.json, or NULL */
};

/* State of one parse or render; on the heap so nothing changes across setjmp. */
typedef struct job {
    jmp_buf jump;
    strata_error err;
    tpl_arena arena;
} job;

static job *job_new(size_t cap)
{
    job *j = calloc(1, sizeof *j);
    if (j) {
        j->arena.cap = cap;
        j->arena.jump = &j->jump;
        j->arena.err = &j->err;
    }
    return j;
}

static strata_status job_fail(job *j, strata_error *err)
{
    strata_status s = j->err.status;
    if (err)
        *err = j->err;
    tpl_arena_free(&j->arena);
    free(j);
    return s;
}

/* Jinja reads the source with universal newlines and drops one trailing newline. */
static char *normalize_source(tpl_arena *a, const char *src, size_t len, size_t *out_len)
{
    char *p = tpl_alloc(a, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            p[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else
            p[n++] = src[i];
    }
    if (n && p[n - 1] == '\n')
        n--;
    p[n] = '\0';
    *out_len = n;
    return p;
}

strata_status strata_template_parse(const char *src, size_t len, strata_template **out,
                                    strata_error *err)
{
    if (!out || (!src && len))
        return strata_fail(err, STRATA_E_INVALID, "strata_template_parse: NULL argument");
    *out = NULL;
    job *j = job_new(0);
    if (!j)
        return strata_fail(err, STRATA_E_NOMEM, "chat template: out of memory");
    if (setjmp(j->jump))
        return job_fail(j, err);
    size_t n;
    char *text = normalize_source(&j->arena, src ? src : "", len, &n);
    tpl_node *root = tpl_parse(&j->arena, text, n);
    strata_template *t = calloc(1, sizeof *t);
    if (!t) {
        strata_fail(&j->err, STRATA_E_NOMEM, "chat template: out of memory");
        return job_fail(j, err);
    }
    t->arena = j->arena;
    t->arena.jump = NULL;
    t->arena.err = NULL;
    t->root = root;
    free(j);
    *out = t;
    return STRATA_OK;
}

void strata_template_free(strata_template *tmpl)
{
    if (!tmpl)
        return;
    tpl_arena_free(&tmpl->arena);
    free(tmpl->defaults_json);
    free(tmpl);
}

/* ISO-8601 "YYYY-MM-DD[THH:MM[:SS[.fff]]]" (any zone suffix is ignored, as a naive
 * datetime's strftime would not print it). */
static int parse_now(const char *s, struct tm *tm)
{
    memset(tm, 0, sizeof *tm);
    int y, mo, d, h = 0, mi = 0, sec = 0;
    if (sscanf(s, "%4d-%2d-%2d", &y, &mo, &d) != 3)
        return -1;
    if (s[10] == 'T' || s[10] == ' ')
        if (sscanf(s + 11, "%2d:%2d:%2d", &h, &mi, &sec) < 2)
            return -1;
    tm->tm_year = y - 1900;
    tm->tm_mon = mo - 1;
    tm->tm_mday = d;
    tm->tm_hour = h;
    tm->tm_min = mi;
    tm->tm_sec = sec;
    tm->tm_isdst = -1;
    time_t t = timegm(tm);      /* fills weekday and day of year */
    if (t == (time_t)-1 || !gmtime_r(&t, tm))
        return -1;
    return 0;
}

static void set_vars(tpl_render *r, const char *json, const char *what)
{
    tv vars = tpl_json_parse(r->arena, json, what);
    for (size_t i = 0; i < vars.u.d->n; i++) {
        tv k = vars.u.d->keys[i];
        tpl_scope_set_global(r, tpl_strndup(r->arena, k.u.s.p, k.u.s.n), vars.u.d->vals[i]);
    }
}

strata_status strata_template_render(const strata_template *tmpl, const char *vars_json,
                                     const char *now, char **out, size_t *out_len,
                                     strata_error *err)
{
    if (!tmpl || !out)
        return strata_fail(err, STRATA_E_INVALID, "strata_template_render: NULL argument");
    *out = NULL;
    if (out_len)
        *out_len = 0;
    job *j = job_new(TPL_MAX_MEMORY);
    if (!j)
        return strata_fail(err, STRATA_E_NOMEM, "chat template: out of memory");
    if (setjmp(j->jump))
        return job_fail(j, err);
    tpl_render *r = tpl_alloc(&j->arena, sizeof *r);
    tpl_buf *buf = tpl_alloc(&j->arena, sizeof *buf);
    buf->limit = TPL_MAX_OUTPUT;
    r->arena = &j->arena;
    r->out = buf;
    if (now) {
        if (parse_now(now, &r->now))
            tpl_throw(&j->arena, STRATA_E_INVALID, "chat template: 'now' is not an ISO-8601 time: %s", now);
        r->have_now = 1;
    }
    /* transformers' apply_chat_template always defines these */
    tpl_scope_set_global(r, "tools", tv_none());
    tpl_scope_set_global(r, "documents", tv_none());
    tpl_scope_set_global(r, "add_generation_prompt", tv_bool(0));
    if (tmpl->defaults_json)
        set_vars(r, tmpl->defaults_json, "tokenizer_config.json");
    set_vars(r, vars_json, "template variables");
    tpl_render_body(r, tmpl->root);
    char *text = malloc(buf->n + 1);
    if (!text)
        tpl_throw(&j->arena, STRATA_E_NOMEM, "chat template: out of memory");
    if (buf->n)
        memcpy(text, buf->p, buf->n);
    text[buf->n] = '\0';
    *out = text;
    if (out_len)
        *out_len = buf->n;
    tpl_arena_free(&j->arena);
    free(j);
    return STRATA_OK;
}

strata_status strata_template_load(const char *path, strata_template **out, strata_error *err)
{
    if (!path || !out)
        return strata_fail(err, STRATA_E_INVALID, "strata_template_load: NULL argument");
    *out = NULL;
    char *src = NULL, *defaults = NULL;
    size_t len = 0;
    STRATA_TRY(tpl_load_source(path, &src, &len, &defaults, err));
    strata_status s = strata_template_parse(src, len, out, err);
    free(src);
    if (s != STRATA_OK) {
        free(defaults);
        return strata_fail_prefix(err, s, "%s: ", path);
    }
    (*out)->defaults_json = defaults;
    return STRATA_OK;
}
