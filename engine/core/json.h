/*
 * json.h — reading JSON files as Python writes them. Checkpoints re-saved by
 * transformers carry json.dumps' non-standard literals (Infinity, -Infinity, NaN),
 * which jansson rejects; json_load_python() maps them to ±DBL_MAX and null before
 * parsing, and json_get_real() turns ±DBL_MAX back into ±infinity.
 */
#ifndef STRATA_CORE_JSON_H
#define STRATA_CORE_JSON_H

#include <jansson.h>

#include "strata.h"

/* Parse a whole file; the error names the file, line and column. */
strata_status json_load_python(const char *path, json_t **out, strata_error *err);
/* The same on a buffer; `what` names it in errors. */
strata_status json_parse_python(const char *text, size_t len, const char *what, json_t **out,
                                strata_error *err);

/* A JSON number as double (ints included); ±DBL_MAX read as ±infinity. */
double json_get_real(const json_t *value);

/* Read a whole file into a NUL-terminated buffer (caller frees). */
strata_status file_read_all(const char *path, char **out, size_t *len, strata_error *err);

#endif
