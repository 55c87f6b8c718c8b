/* The subcommands of the `resattn` executable; each returns the process exit status. */
#ifndef RESATTN_COMMANDS_H
#define RESATTN_COMMANDS_H

int resattn_cmd_serve(int argc, char **argv);   /* server/cli/cmd_serve.c */
int resattn_cmd_inspect(int argc, char **argv); /* server/cli/cmd_inspect.c */
int resattn_cmd_predict(int argc, char **argv); /* server/cli/cmd_predict.c */
int resattn_cmd_bench(int argc, char **argv);   /* server/cli/cmd_bench.c */

/* GET /readyz of the server the serve options describe; 0 ready, 1 not (cmd_healthcheck.c). */
int resattn_cmd_healthcheck(int argc, char **argv);

/* ---- Shared by the subcommands (server/cli/cli_common.c) ------------------------------ */

#include <resattn/resattn.h>
#include <stddef.h>

/* A --model argument: PATH, NAME=PATH, "builtin" or NAME=builtin, and the precision to load it
 * in (FP32 after resattn_cli_model_arg; the caller sets it from --precision). */
typedef struct resattn_cli_model_spec {
    char name[128];              /* NAME= part, or "" */
    const char *path;            /* points into the argument, or to `file` (do not copy) */
    int builtin;                 /* the model linked into the binary */
    resattn_precision precision; /* requested; resattn_model_info says what runs */
    int dir_files;               /* PATH is a directory: its .safetensors files; else -1 */
    char file[4096];             /* DIR/the-one.safetensors when dir_files == 1 */
} resattn_cli_model_spec;

/* Split a --model argument; -1 when it names no file (empty path). A PATH that is a directory
 * stands for the one .safetensors file in it (hidden names skipped), which is how KServe's
 * storage initializer leaves a model in /mnt/models; with none or several, opening the spec
 * fails with a message saying so. */
int resattn_cli_model_arg(const char *arg, resattn_cli_model_spec *spec);
/* The name `serve` gives the model: NAME=, else the config's "name", else the file stem
 * ("default" for the built-in model). */
void resattn_cli_model_name(const resattn_cli_model_spec *spec, const resattn_model_info *info,
                            char *out, size_t len);
/* Load the model of a spec in spec->precision; err is one line naming the file. Prints
 * nothing (not even the BF16 fallback warning: the caller decides where it goes). */
resattn_status resattn_cli_model_open(const resattn_cli_model_spec *spec, resattn_model **out,
                                      char *err, size_t err_len);
/* Load --model arg (NULL: the built-in model) for subcommand cmd in the requested precision
 * and, when name is not NULL, the name serve would use; prints one line "resattn <cmd>: ..."
 * and returns non-zero on failure, and the fallback warning (below) when BF16 was asked and
 * FP32 runs. */
int resattn_cli_load_model(const char *cmd, const char *arg, resattn_precision precision,
                           resattn_model **out, char *name, size_t name_len);

/* The precision of a command: RESATTN_PRECISION (when set), then `--precision value` (when
 * value is not NULL); "fp32" or "bf16", anything else prints a one-line error naming it and
 * returns 2. */
int resattn_cli_precision(const char *cmd, const char *value, resattn_precision *out);

/* The one warning line of a BF16 request on a CPU without a BF16 path. */
#define RESATTN_BF16_FALLBACK_WARNING                                                              \
    "warning: precision bf16 asked, but this CPU has neither AMX-BF16 nor AVX512-BF16: running "   \
    "FP32"

/* The value after flag argv[*i] (advancing *i), or NULL after printing "option --x needs a
 * value". */
const char *resattn_cli_value(const char *cmd, int argc, char **argv, int *i);
/* value as an int in [lo, hi], or -1 after printing "<flag>: 'v' is not an integer in ...". */
int resattn_cli_int(const char *cmd, const char *flag, const char *value, int lo, int hi, int *out);
/* "unknown option '--x'" or "unexpected argument 'x'", naming what was given. */
void resattn_cli_unknown_option(const char *cmd, const char *arg);

#endif
