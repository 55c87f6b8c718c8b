/* The subcommands of the `resattn` executable; each returns the process exit status. */
#ifndef RESATTN_COMMANDS_H
#define RESATTN_COMMANDS_H

int resattn_cmd_serve(int argc, char **argv);   /* server/cli/cmd_serve.c */
int resattn_cmd_inspect(int argc, char **argv); /* server/cli/cmd_inspect.c */
int resattn_cmd_predict(int argc, char **argv); /* server/cli/cmd_predict.c */
int resattn_cmd_bench(int argc, char **argv);   /* server/cli/cmd_bench.c */

#include <resattn/resattn.h>

/* Shared by the CLI subcommands (server/cli/cmd_inspect.c): load --model, or the built-in model
 * when path is NULL, in the requested precision; prints a one-line error and returns non-zero
 * on failure, and the fallback warning (below) when BF16 was asked and FP32 runs. */
int resattn_cli_load_model(const char *path, resattn_precision precision, resattn_model **out);

/* The precision of a command: RESATTN_PRECISION (when set), then `--precision value` (when
 * value is not NULL); "fp32" or "bf16", anything else prints a one-line error naming it and
 * returns 2. */
int resattn_cli_precision(const char *cmd, const char *value, resattn_precision *out);

/* The one warning line of a BF16 request on a CPU without a BF16 path. */
#define RESATTN_BF16_FALLBACK_WARNING                                                              \
    "warning: precision bf16 asked, but this CPU has neither AMX-BF16 nor AVX512-BF16: running "   \
    "FP32"

#endif
