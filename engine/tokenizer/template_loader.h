/*
 * template_loader.h — finding a checkpoint's chat template and special tokens.
 */
#ifndef STRATA_TEMPLATE_LOADER_H
#define STRATA_TEMPLATE_LOADER_H

#include <stddef.h>

#include "strata.h"

/* path is a template file, or a checkpoint directory: chat_template.jinja, else
 * chat_template.json's "chat_template", else tokenizer_config.json's (a string, or a
 * list of {name, template} whose "default" is taken). *defaults_json receives a JSON
 * object of the special tokens tokenizer_config.json names (bos_token, eos_token, ...),
 * or NULL. Both outputs are malloc'd. */
strata_status tpl_load_source(const char *path, char **src, size_t *len, char **defaults_json,
                              strata_error *err);

#endif
