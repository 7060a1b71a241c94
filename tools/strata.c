/*
 * strata.c — the CLI entry point: dispatches to one function per subcommand.
 * The subcommands and their flags are a stable interface that tools and tests call.
 */
#include <errno.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const struct {
    const char *name;
    strata_cli_fn fn;
    const char *usage;
} commands[] = {
    {"info", cli_info, "info MODEL_DIR [--weights native|int8]"},
    {"run", cli_run, "run MODEL_DIR --tokens 1,2,3 [--hooks LIST] [--prefill N] [--compute fp32|bf16|int8] [--weights native|int8] --out OUT.safetensors"},
    {"generate", cli_generate, "generate MODEL_DIR --tokens 1,2,3 [-n 24] [--compute fp32|bf16|int8] [--weights native|int8]"},
    {"tokenize", cli_tokenize, "tokenize PATH [--add-special] [--parse-special]  (text on stdin)"},
    {"detokenize", cli_detokenize, "detokenize PATH [--skip-special]  (JSON array of ids on stdin)"},
    {"chat-template", cli_chat_template, "chat-template PATH < vars.json  (PATH: checkpoint dir or .jinja)"},
    {"bench", cli_bench, "bench MODEL_DIR [--prompt-tokens 512] [--gen-tokens 128] [--sessions 1,4,16] [--session-context 16] [--repeat 3] [--threads N] [--compute fp32|bf16|int8] [--weights native|int8] [--json]"},
    {"make-checkpoint", cli_make_checkpoint,
     "make-checkpoint OUT_DIR [--preset 470m|8b|30b-a3b|moe-2b|tiny] [--hidden N --layers-pattern STR --vocab N ...] "
     "[--experts N --experts-per-token K --moe-intermediate N --moe-latent N ...] [--tied] [--dtype bf16|f16|f32] [--seed S]"},
};

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int32_t cli_argmax(const float *v, int n)
{
    float lane[16], mx = -FLT_MAX;      /* 16 running maxima: no serial dependence */
    for (int k = 0; k < 16; k++)
        lane[k] = -FLT_MAX;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++)
            lane[k] = v[i + k] > lane[k] ? v[i + k] : lane[k];
    for (int k = 0; k < 16; k++)
        mx = lane[k] > mx ? lane[k] : mx;
    for (; i < n; i++)
        mx = v[i] > mx ? v[i] : mx;
    for (i = 0; i < n; i++)
        if (v[i] == mx)
            return i;
    return 0;
}

int cli_parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return 0;
    *out = (int)v;
    return 1;
}

int cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "strata %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int cli_fail_err(const char *cmd, const strata_error *err)
{
    return cli_fail(cmd, "%s (%s)", err->message, strata_status_name(err->status));
}

static void usage(FILE *f)
{
    fprintf(f, "usage: strata COMMAND ...\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  strata %s\n", commands[i].usage);
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "strata: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
