/*
 * cmd_chat_template.c — `strata chat-template PATH`: render a checkpoint's (or a
 * template file's) chat template with the JSON object on stdin as its variables
 * ("now", if present, is the time strftime_now formats) and print exactly the
 * rendered prompt. raise_exception's message goes to stderr with a non-zero exit.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/json.h"

static const char *const CMD = "chat-template";

int cli_chat_template(int argc, char **argv)
{
    if (argc != 1)
        return cli_fail(CMD, "usage: strata chat-template PATH < vars.json");
    json_t *vars = NULL;
    char *text;
    size_t len;
    strata_error rerr;
    strata_status st = file_read_all("/dev/stdin", &text, &len, &rerr);
    if (st == STRATA_OK) {
        st = json_parse_python(text, len, "stdin", &vars, &rerr);   /* as Python writes JSON */
        free(text);
    }
    if (st != STRATA_OK || !json_is_object(vars)) {
        json_decref(vars);
        return cli_fail(CMD, "stdin: expected a JSON object (%s)", st != STRATA_OK ? rerr.message : "not an object");
    }
    char *now = NULL;
    json_t *jnow = json_object_get(vars, "now");
    if (json_is_string(jnow))
        now = strdup(json_string_value(jnow));
    json_object_del(vars, "now");
    char *vars_text = json_dumps(vars, JSON_COMPACT);
    json_decref(vars);

    strata_error err = {0};
    strata_template *tmpl = NULL;
    char *out = NULL;
    size_t out_len = 0;
    int rc = 0;
    if (strata_template_load(argv[0], &tmpl, &err) != STRATA_OK ||
        strata_template_render(tmpl, vars_text, now, &out, &out_len, &err) != STRATA_OK)
        rc = cli_fail_err(CMD, &err);
    else if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout) != 0)
        rc = cli_fail(CMD, "cannot write the output");
    free(out);
    strata_template_free(tmpl);
    free(vars_text);
    free(now);
    return rc;
}
