/*
 * What the subcommands share: the --model argument and the name a model is served under,
 * loading it (a file or the built-in model), and reading option values with messages that
 * name the flag.
 *
 * A --model argument is PATH, NAME=PATH, `builtin` or NAME=builtin. `builtin` is the model
 * linked into the binary (a file of that name is ./builtin). The text before the first '='
 * is a name when it is a valid model name (no '/', so dir/a=b.safetensors stays a path).
 * The served name is, first found: NAME=, the config's "name", the file stem, "default".
 * A PATH that is a directory means the single .safetensors file in it (KServe's /mnt/models).
 * Models load in the precision of --precision / RESATTN_PRECISION (resattn_cli_precision).
 */
#include "cli/commands.h"
#include "cli/default_model.h"
#include "model/config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BUILTIN "builtin"
#define SUFFIX ".safetensors"

/* A directory given as --model: count its visible *.safetensors entries and keep the first
 * one's path in spec->file (used only when it is the only one). */
static void find_model_file(const char *dir, resattn_cli_model_spec *spec) {
    DIR *d = opendir(dir);
    spec->dir_files = 0;
    if (!d)
        return;
    size_t sl = strlen(SUFFIX);
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || n <= sl || strcmp(e->d_name + n - sl, SUFFIX))
            continue;
        if (spec->dir_files++ == 0)
            snprintf(spec->file, sizeof spec->file, "%s/%s", dir, e->d_name);
    }
    closedir(d);
}

int resattn_cli_model_arg(const char *arg, resattn_cli_model_spec *spec) {
    memset(spec, 0, sizeof *spec);
    const char *eq = strchr(arg, '=');
    const char *path = arg;
    if (eq && eq > arg && (size_t)(eq - arg) < sizeof spec->name) {
        char name[sizeof spec->name];
        memcpy(name, arg, (size_t)(eq - arg));
        name[eq - arg] = 0;
        if (resattn_model_name_ok(name)) {
            memcpy(spec->name, name, sizeof name);
            path = eq + 1;
        }
    }
    if (!*path)
        return -1;
    spec->path = path;
    spec->builtin = !strcmp(path, BUILTIN);
    spec->dir_files = -1;
    struct stat st;
    if (!spec->builtin && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        find_model_file(path, spec);
        if (spec->dir_files == 1)
            spec->path = spec->file;
    }
    return 0;
}

/* "models/se-cifar.safetensors" -> "se-cifar" (into out[len]). */
static void file_stem(const char *path, char *out, size_t len) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *dot = strrchr(b, '.');
    int n = (int)(dot && dot != b ? (size_t)(dot - b) : strlen(b));
    snprintf(out, len, "%.*s", n, b);
}

void resattn_cli_model_name(const resattn_cli_model_spec *spec, const resattn_model_info *info,
                            char *out, size_t len) {
    if (spec->name[0])
        snprintf(out, len, "%s", spec->name);
    else if (info->name && *info->name)
        snprintf(out, len, "%s", info->name);
    else if (spec->builtin)
        snprintf(out, len, "default");
    else
        file_stem(spec->path, out, len);
}

resattn_status resattn_cli_model_open(const resattn_cli_model_spec *spec, resattn_model **out,
                                      char *err, size_t err_len) {
    resattn_model_options opts = {.precision = spec->precision};
    if (spec->dir_files == 0 || spec->dir_files > 1) {
        if (spec->dir_files)
            snprintf(err, err_len, "%s is a directory with %d .safetensors files; give the file",
                     spec->path, spec->dir_files);
        else
            snprintf(err, err_len, "%s is a directory with no .safetensors file", spec->path);
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    if (!spec->builtin)
        return resattn_model_load_file_opts(spec->path, &opts, out, err, err_len);
    if (resattn_default_model_size == 0) {
        snprintf(err, err_len,
                 "this build has no built-in model (models/default.safetensors was empty); "
                 "pass --model FILE");
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    char msg[RESATTN_ERR_LEN];
    resattn_status s = resattn_model_load_buffer_opts(resattn_default_model_data,
                                                      (size_t)resattn_default_model_size, &opts,
                                                      out, msg, sizeof msg);
    if (s)
        snprintf(err, err_len, "built-in model: %s", msg);
    return s;
}

int resattn_cli_precision(const char *cmd, const char *value, resattn_precision *out) {
    const char *env = getenv("RESATTN_PRECISION");
    *out = RESATTN_PRECISION_FP32;
    if (env && *env && resattn_precision_parse(env, out)) {
        fprintf(stderr, "resattn %s: RESATTN_PRECISION '%s' is not fp32 or bf16\n", cmd, env);
        return 2;
    }
    if (value && resattn_precision_parse(value, out)) {
        fprintf(stderr, "resattn %s: --precision '%s' is not fp32 or bf16\n", cmd, value);
        return 2;
    }
    return 0;
}

int resattn_cli_load_model(const char *cmd, const char *arg, resattn_precision precision,
                           resattn_model **out, char *name, size_t name_len) {
    resattn_cli_model_spec spec;
    if (resattn_cli_model_arg(arg ? arg : BUILTIN, &spec)) {
        fprintf(stderr, "resattn %s: --model '%s' names no file\n", cmd, arg);
        return 2;
    }
    spec.precision = precision;
    char err[RESATTN_ERR_LEN];
    if (resattn_cli_model_open(&spec, out, err, sizeof err)) {
        fprintf(stderr, "resattn %s: %s\n", cmd, err);
        return spec.builtin ? 2 : 1;
    }
    const resattn_model_info *in = resattn_model_get_info(*out);
    if (in->precision != in->precision_requested)
        fprintf(stderr, "resattn %s: %s\n", cmd, RESATTN_BF16_FALLBACK_WARNING);
    if (name)
        resattn_cli_model_name(&spec, resattn_model_get_info(*out), name, name_len);
    return 0;
}

const char *resattn_cli_value(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "resattn %s: option %s needs a value (see --help)\n", cmd, argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int resattn_cli_int(const char *cmd, const char *flag, const char *value, int lo, int hi,
                    int *out) {
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < lo || v > hi) {
        fprintf(stderr, "resattn %s: %s: '%s' is not an integer in [%d, %d]\n", cmd, flag, value,
                lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

void resattn_cli_unknown_option(const char *cmd, const char *arg) {
    if (strncmp(arg, "--", 2))
        fprintf(stderr,
                "resattn %s: unexpected argument '%s' (options start with --; see --help)\n", cmd,
                arg);
    else
        fprintf(stderr, "resattn %s: unknown option '%s' (see --help)\n", cmd, arg);
}
