/*
 * bench/engine.c — `make bench`: the engine benchmark on the 470 M-parameter
 * synthetic Nemotron-H (hidden 1024, 24 layers in the 8B's M / - / * mix, vocab
 * 131072, BF16). The checkpoint is generated on first use outside tracked files
 * ($STRATA_BENCH_MODEL, default build/models/470m), then `strata bench` prints the
 * report: the default compute mode (fp32), then --compute bf16, then int8 weights
 * with --compute int8 where the CPU has AVX512_VNNI. Then the same for an MoE
 * shape, in the bf16 mode: the moe-2b preset (Nemotron 3 Nano's layer mix and
 * routing at hidden 1024; $STRATA_BENCH_MOE_MODEL, default build/models/moe-2b,
 * 4.9 GB). Extra arguments are passed to `strata bench` (e.g. --json; a --compute
 * among them runs that mode alone, on the 470m only).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/q8.h"

/* Run argv[0] with argv; returns its exit status (127 if it could not start). */
static int run(char *const *argv)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return 127;
    if (pid == 0) {
        execv(argv[0], argv);
        perror(argv[0]);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0)
        return 127;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* The preset's checkpoint in dir, generated unless it is there; 0 on success. */
static int ensure_checkpoint(const char *cli, const char *dir, const char *preset)
{
    char config[4096];
    snprintf(config, sizeof config, "%s/config.json", dir);
    if (access(config, R_OK) == 0)
        return 0;
    printf("bench: generating the %s checkpoint in %s (once)\n", preset, dir);
    char *gen[] = {(char *)cli, "make-checkpoint", (char *)dir, "--preset", (char *)preset, "--dtype", "bf16", NULL};
    if (run(gen) == 0)
        return 0;
    fprintf(stderr, "bench: make-checkpoint failed\n");
    return 1;
}

/* `strata bench dir [--compute mode [--weights int8]] extra...` */
static int bench(const char *cli, const char *dir, const char *mode, int argc, char **argv)
{
    char **args = calloc((size_t)argc + 8, sizeof *args);
    if (!args)
        return 1;
    int n = 0;
    args[n++] = (char *)cli;
    args[n++] = "bench";
    args[n++] = (char *)dir;
    if (mode) {
        args[n++] = "--compute";
        args[n++] = (char *)mode;
        if (!strcmp(mode, "int8")) {
            args[n++] = "--weights";
            args[n++] = "int8";
        }
        printf("bench: %s --compute %s%s\n", dir, mode, !strcmp(mode, "int8") ? " --weights int8" : "");
    }
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    int rc = run(args);
    free(args);
    return rc;
}

int main(int argc, char **argv)
{
    const char *cli = getenv("STRATA_CLI") ? getenv("STRATA_CLI") : "build/strata";
    const char *dir = getenv("STRATA_BENCH_MODEL") ? getenv("STRATA_BENCH_MODEL") : "build/models/470m";
    const char *moe = getenv("STRATA_BENCH_MOE_MODEL") ? getenv("STRATA_BENCH_MOE_MODEL") : "build/models/moe-2b";
    if (ensure_checkpoint(cli, dir, "470m"))
        return 1;
    /* the default mode (exact fp32 math), then the opt-in bf16 and int8 modes,
     * unless the caller chose one */
    int chosen = 0;
    for (int i = 1; i < argc; i++)
        chosen |= !strcmp(argv[i], "--compute");
    const char *modes[] = {"fp32", "bf16", "int8"};
    int n_modes = q8_compute_supported() ? 3 : 2;
    if (!chosen && n_modes == 2)
        printf("bench: no AVX512_VNNI here, so no --compute int8 run\n");
    int rc = 0;
    for (int m = 0; rc == 0 && m < (chosen ? 1 : n_modes); m++)
        rc = bench(cli, dir, chosen ? NULL : modes[m], argc, argv);
    if (rc == 0 && !chosen)
        rc = ensure_checkpoint(cli, moe, "moe-2b") || bench(cli, moe, "bf16", argc, argv);
    return rc;
}
