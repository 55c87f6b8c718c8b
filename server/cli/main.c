/*
 * The `resattn` executable: dispatches to a subcommand. Only main() and the subcommands
 * print and exit; the libraries below return errors.
 */
#include "cli/commands.h"
#include <resattn/resattn.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"serve", resattn_cmd_serve, "serve models over HTTP (KServe v2, TF Serving, /predict)"},
    {"inspect", resattn_cmd_inspect, "print a model's architecture, parameters and GFLOPs"},
    {"predict", resattn_cmd_predict, "run a model on a .npy tensor or an image"},
    {"bench", resattn_cmd_bench, "measure a model's speed on this machine (JSON on stdout)"},
    {"healthcheck", resattn_cmd_healthcheck,
     "exit 0 when the configured server is ready (/readyz)"},
};

static void usage(FILE *out) {
    fprintf(out,
            "resattn %s — residual-attention CNN inference\n\nusage: resattn <command> "
            "[options]\n\ncommands:\n",
            resattn_version());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-11s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\n`resattn <command> --help` lists a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("resattn %s\n", resattn_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "resattn: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
