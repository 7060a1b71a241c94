/* cmd_model.c — info, run, generate (in progress on main). */
#include "cli.h"
int cli_info(int argc, char **argv) { (void)argc; (void)argv; return cli_fail("info", "in progress"); }
int cli_run(int argc, char **argv) { (void)argc; (void)argv; return cli_fail("run", "in progress"); }
int cli_generate(int argc, char **argv) { (void)argc; (void)argv; return cli_fail("generate", "in progress"); }
