/* The subcommands of the `resattn` executable; each returns the process exit status. */
#ifndef RESATTN_COMMANDS_H
#define RESATTN_COMMANDS_H

int resattn_cmd_serve(int argc, char **argv);   /* server/cli/cmd_serve.c */
int resattn_cmd_inspect(int argc, char **argv); /* server/cli/cmd_inspect.c */
int resattn_cmd_predict(int argc, char **argv); /* server/cli/cmd_predict.c */
int resattn_cmd_bench(int argc, char **argv);   /* server/cli/cmd_bench.c */

/* Shared by the CLI subcommands (server/cli/cmd_inspect.c): load --model, or the built-in model
 * when path is NULL; prints a one-line error and returns non-zero on failure. */
struct resattn_model;
int resattn_cli_load_model(const char *path, struct resattn_model **out);

#endif
