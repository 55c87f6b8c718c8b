/* The subcommands of the `resattn` executable; each returns the process exit status. */
#ifndef RESATTN_COMMANDS_H
#define RESATTN_COMMANDS_H

int resattn_cmd_serve(int argc, char **argv);   /* server/cmd_serve.c */
int resattn_cmd_inspect(int argc, char **argv); /* server/cmd_inspect.c */
int resattn_cmd_predict(int argc, char **argv); /* server/cmd_predict.c */
int resattn_cmd_bench(int argc, char **argv);   /* server/cmd_bench.c */

#endif
