/*
 * cli.h — the subcommands of build/strata. Each takes the arguments after its name
 * and returns the process exit status; errors go to stderr.
 */
#ifndef STRATA_TOOLS_CLI_H
#define STRATA_TOOLS_CLI_H

#include "strata.h"

typedef int (*strata_cli_fn)(int argc, char **argv);

int cli_info(int argc, char **argv);
int cli_run(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_detokenize(int argc, char **argv);
int cli_chat_template(int argc, char **argv);
int cli_make_checkpoint(int argc, char **argv);
int cli_bench(int argc, char **argv);

/* Monotonic seconds, for the timings the commands print. */
double cli_now(void);
/* Index of the largest of n values (the first on ties): greedy decoding. */
int32_t cli_argmax(const float *v, int n);

/* *out = s as a decimal int in [lo, hi]; 0 when s is not one. */
int cli_parse_int(const char *s, int lo, int hi, int *out);

/* Print "strata CMD: message" to stderr and return 1. */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_fail_err(const char *cmd, const strata_error *err);

#endif
