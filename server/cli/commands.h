/* The subcommands of the `resattn` executable; each returns the process exit status. */
#ifndef RESATTN_COMMANDS_H
#define RESATTN_COMMANDS_H

int resattn_cmd_serve(int argc, char **argv);   /* server/cli/cmd_serve.c */
int resattn_cmd_inspect(int argc, char **argv); /* server/cli/cmd_inspect.c */
int resattn_cmd_predict(int argc, char **argv); /* server/cli/cmd_predict.c */
int resattn_cmd_bench(int argc, char **argv);   /* server/cli/cmd_bench.c */

/* ---- Shared by the subcommands (server/cli/cli_common.c) ------------------------------ */

#include <resattn/resattn.h>
#include <stddef.h>

/* A --model argument: PATH, NAME=PATH, "builtin" or NAME=builtin. */
typedef struct resattn_cli_model_spec {
    char name[128];   /* NAME= part, or "" */
    const char *path; /* points into the argument */
    int builtin;      /* the model linked into the binary */
} resattn_cli_model_spec;

/* Split a --model argument; -1 when it names no file (empty path). */
int resattn_cli_model_arg(const char *arg, resattn_cli_model_spec *spec);
/* The name `serve` gives the model: NAME=, else the config's "name", else the file stem
 * ("default" for the built-in model). */
void resattn_cli_model_name(const resattn_cli_model_spec *spec, const resattn_model_info *info,
                            char *out, size_t len);
/* Load the model of a spec; err is one line naming the file. Prints nothing. */
resattn_status resattn_cli_model_open(const resattn_cli_model_spec *spec, resattn_model **out,
                                      char *err, size_t err_len);
/* Load --model arg (NULL: the built-in model) for subcommand cmd and, when name is not NULL,
 * the name serve would use; prints one line "resattn <cmd>: ..." and returns non-zero on
 * failure. */
int resattn_cli_load_model(const char *cmd, const char *arg, resattn_model **out, char *name,
                           size_t name_len);

/* The value after flag argv[*i] (advancing *i), or NULL after printing "option --x needs a
 * value". */
const char *resattn_cli_value(const char *cmd, int argc, char **argv, int *i);
/* value as an int in [lo, hi], or -1 after printing "<flag>: 'v' is not an integer in ...". */
int resattn_cli_int(const char *cmd, const char *flag, const char *value, int lo, int hi, int *out);
/* "unknown option '--x'" or "unexpected argument 'x'", naming what was given. */
void resattn_cli_unknown_option(const char *cmd, const char *arg);

#endif
