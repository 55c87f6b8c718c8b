/*
 * The command line as a user meets it, through the real binary ($RESATTN_BIN): `serve`
 * refuses a model whose config could only fail later (exit 2, one line naming the key),
 * serves the built-in model beside a file under names given on the command line
 * (--model builtin, --model NAME=PATH) and takes CMYK JPEGs; a file that is not safetensors
 * says so; option errors name the flag; `inspect` shows the served name and PyTorch's
 * parameter count; `bench` names its model and warns about more threads than usable CPUs; a
 * --model directory stands for the one .safetensors file in it (KServe's /mnt/models).
 */
#include "cli/config.h"
#include "util_http.h"
#include "util_st.h"

#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct run_result {
    int status; /* exit status, or -1 when killed by a signal */
    char out[8192], err[8192];
    int err_lines;
} run_result;

/* Run `$RESATTN_BIN <args>` (a shell fragment) under `timeout 20`, capturing both streams. */
static void run(const char *args, run_result *r) {
    char dir[] = "/tmp/resattn-cli-XXXXXX", cmd[4096], op[64], ep[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(op, sizeof op, "%s/out", dir);
    snprintf(ep, sizeof ep, "%s/err", dir);
    snprintf(cmd, sizeof cmd, "timeout 20 %s %s >%s 2>%s", uh_binary(), args, op, ep);
    int st = system(cmd);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    const char *paths[2] = {op, ep};
    char *dst[2] = {r->out, r->err};
    for (int i = 0; i < 2; i++) {
        size_t len = 0;
        unsigned char *b = ut_read_file(paths[i], &len);
        size_t n = b ? (len < 8191 ? len : 8191) : 0;
        if (n)
            memcpy(dst[i], b, n);
        dst[i][n] = 0;
        free(b);
        unlink(paths[i]);
    }
    rmdir(dir);
    r->err_lines = 0;
    for (const char *p = r->err; *p; p++)
        r->err_lines += *p == '\n';
}

/* A valid 3-channel model file (9x7 input, 5 classes) with `extra` inserted into its config
 * after "num_classes": 5; written to path. */
static void write_model(const char *path, const char *extra) {
    static const int layers[2] = {1, 1}, widths[2] = {4, 8};
    ut_model m;
    ut_model_init(&m, NULL, 3);
    ut_build_resnet(&m, "basic", "cifar", "se", 2, layers, widths, 3, 9, 7, 5);
    char *p = strstr(m.config, "\"num_classes\": 5");
    ck_assert_ptr_nonnull(p);
    p += strlen("\"num_classes\": 5");
    char *cfg = malloc(strlen(m.config) + strlen(extra) + 1);
    sprintf(cfg, "%.*s%s%s", (int)(p - m.config), m.config, extra, p);
    ut_set_config(&m, cfg);
    free(cfg);
    size_t len;
    unsigned char *buf = ut_serialize(&m, &len);
    ck_assert_int_eq(ut_write_file(path, buf, len), 0);
    free(buf);
    ut_model_free(&m);
}

/* serve exits 2 at start-up with one line naming the key and the file; before, it started
 * and answered 422 to every image. */
START_TEST(serve_refuses_bad_config) {
    static const struct {
        const char *extra, *needle;
    } cases[] = {
        {", \"preprocess\": {\"color\": \"rgb\", \"stdev\": [0.2, 0.2, 0.2]}", "\"stdev\""},
        {", \"preprocess\": {\"color\": \"rgb\", \"interpolation\": \"bicubic\"}",
         "\"interpolation\""},
        {", \"preprocess\": {\"color\": \"gray\"}", "input.channels"},
        {", \"preprocess\": {\"mean\": [0.5, 0.5]}", "\"mean\""},
        {", \"labels\": [\"a\", \"b\"]", "labels"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[64], args[256];
        snprintf(path, sizeof path, "/tmp/resattn-cli-bad-%d-%zu.safetensors", (int)getpid(), i);
        write_model(path, cases[i].extra);
        snprintf(args, sizeof args, "serve --host 127.0.0.1 --port 0 --model %s", path);
        run_result r;
        run(args, &r);
        unlink(path);
        ck_assert_msg(r.status == 2, "%s: exit %d, stderr '%s'", cases[i].extra, r.status, r.err);
        ck_assert_msg(r.err_lines == 1, "%s: %d lines: '%s'", cases[i].extra, r.err_lines, r.err);
        ck_assert_msg(strstr(r.err, cases[i].needle) && strstr(r.err, path), "'%s' lacks %s", r.err,
                      cases[i].needle);
    }
}
END_TEST

/* Not safetensors: "not a safetensors file: <path>", for every subcommand. */
START_TEST(not_safetensors_message) {
    const char *cmds[] = {"serve --host 127.0.0.1 --port 0", "inspect", "bench --iters 1",
                          "predict --input models/examples/0_ankle-boot.png"};
    for (int i = 0; i < 4; i++) {
        char args[256];
        snprintf(args, sizeof args, "%s --model models/examples/0_ankle-boot.png", cmds[i]);
        run_result r;
        run(args, &r);
        ck_assert_msg(r.status != 0 && r.status != -1, "%s: exit %d", args, r.status);
        ck_assert_msg(r.err_lines == 1, "%s: '%s'", args, r.err);
        ck_assert_msg(strstr(r.err, "not a safetensors file: models/examples/0_ankle-boot.png"),
                      "%s: '%s'", args, r.err);
    }
}
END_TEST

/* Every option error names the flag (and the bad value), in one line, exit 2. */
START_TEST(option_errors_name_the_flag) {
    static const struct {
        const char *args, *needle1, *needle2;
    } cases[] = {
        {"bench --batch x", "--batch", "'x'"},
        {"bench --threads 0", "--threads", "'0'"},
        {"bench --iters", "--iters", "needs a value"},
        {"bench --model", "--model", "needs a value"},
        {"bench --fast", "--fast", "unknown option"},
        {"inspect --model", "--model", "needs a value"},
        {"inspect --jsn", "--jsn", "unknown option"},
        {"inspect model.safetensors", "model.safetensors", "unexpected argument"},
        {"predict --input", "--input", "needs a value"},
        {"predict --top-k many --input x.npy", "--top-k", "'many'"},
        {"serve --port", "--port", "needs a value"},
        {"serve --workers lots", "--workers", "'lots'"},
        {"serve --max-batch 0", "--max-batch", "'0'"},
        {"serve --modle x.safetensors", "--modle", "unknown option"},
        {"serve --model ''", "--model", "empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_result r;
        run(cases[i].args, &r);
        ck_assert_msg(r.status == 2, "%s: exit %d (%s)", cases[i].args, r.status, r.err);
        ck_assert_msg(r.err_lines == 1, "%s: %d lines '%s'", cases[i].args, r.err_lines, r.err);
        ck_assert_msg(strstr(r.err, cases[i].needle1) && strstr(r.err, cases[i].needle2),
                      "%s: '%s'", cases[i].args, r.err);
    }
}
END_TEST

/* inspect: the name serve would use (config name, NAME=, file stem) and the parameter count
 * as PyTorch's model.parameters() counts it, for every fixture model: the reference numbers
 * come from PyTorch (tests/fixtures/param_counts.json, written by tools/make_fixtures.py). */
START_TEST(inspect_names_and_counts) {
    json_error_t je;
    json_t *ref = json_load_file("tests/fixtures/param_counts.json", 0, &je);
    ck_assert_msg(ref != NULL, "param_counts.json: %s", je.text);
    ck_assert_int_ge(json_object_size(ref), 22);
    const char *name;
    json_t *want;
    json_object_foreach(ref, name, want) {
        char args[256];
        snprintf(args, sizeof args, "inspect --json --model tests/fixtures/%s.safetensors", name);
        run_result r;
        run(args, &r);
        ck_assert_msg(r.status == 0, "%s: %s", name, r.err);
        json_t *got = json_loads(r.out, 0, &je);
        ck_assert_msg(got != NULL, "%s: %s", name, r.out);
        const char *keys[] = {"num_params", "num_bn_stats"};
        for (int k = 0; k < 2; k++)
            ck_assert_msg(json_integer_value(json_object_get(got, keys[k])) ==
                              json_integer_value(json_object_get(want, keys[k])),
                          "%s: %s %lld, PyTorch %lld", name, keys[k],
                          (long long)json_integer_value(json_object_get(got, keys[k])),
                          (long long)json_integer_value(json_object_get(want, keys[k])));
        ck_assert_str_eq(json_string_value(json_object_get(got, "served_name")), name);
        json_decref(got);
    }
    /* the text form */
    run_result r;
    run("inspect --model tests/fixtures/basic_cifar_se.safetensors", &r);
    ck_assert_msg(r.status == 0, "%s", r.err);
    json_t *w = json_object_get(ref, "basic_cifar_se");
    char line[128];
    snprintf(line, sizeof line, "parameters: %lld (+ %lld BatchNorm running statistics)",
             (long long)json_integer_value(json_object_get(w, "num_params")),
             (long long)json_integer_value(json_object_get(w, "num_bn_stats")));
    ck_assert_msg(strstr(r.out, line), "%s", r.out);
    ck_assert_msg(strstr(r.out, "model:      basic_cifar_se (served as /v2/models/basic_cifar_se)"),
                  "%s", r.out);
    json_decref(ref);
    run("inspect --model se=tests/fixtures/basic_cifar_se.safetensors", &r);
    ck_assert_msg(strstr(r.out, "model:      se (served as /v2/models/se)"), "%s", r.out);
    run("inspect --model builtin", &r);
    ck_assert_msg(strstr(r.out, "model:      fashion-se-resnet"), "%s", r.out);
    run("inspect --model mine=builtin --json", &r);
    ck_assert_msg(strstr(r.out, "\"served_name\": \"mine\""), "%s", r.out);
}
END_TEST

/* bench: the model by the name serve would use, and a warning (not an error) for more
 * threads than usable CPUs. */
START_TEST(bench_names_model_and_warns) {
    run_result r;
    run("bench --iters 1 --model fixture=tests/fixtures/basic_cifar_se.safetensors", &r);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, "\"model\":\"fixture\"") &&
                      strstr(r.out, "\"model_file\":\"tests/fixtures/basic_cifar_se.safetensors\""),
                  "%s", r.out);
    ck_assert_msg(r.err[0] == 0, "unexpected stderr '%s'", r.err);
    char args[128];
    int cpus = resattn_usable_cpus();
    snprintf(args, sizeof args, "bench --iters 1 --threads %d", cpus + 1);
    run(args, &r);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, "\"model\":\"fashion-se-resnet\""), "%s", r.out);
    ck_assert_msg(r.err_lines == 1 && strstr(r.err, "warning") && strstr(r.err, "usable CPU"),
                  "'%s'", r.err);
}
END_TEST

/* serve: the built-in model beside a file, under command-line names; all answer. More BLAS
 * threads than usable CPUs is a warning in the log, not an error. */
START_TEST(serve_builtin_beside_file) {
    uh_server s;
    char blas[16];
    snprintf(blas, sizeof blas, "%d", resattn_usable_cpus() + 1); /* one worker: a warning */
    const char *args[] = {"--model",
                          "fashion=builtin",
                          "--model",
                          "tests/fixtures/basic_cifar_se.safetensors",
                          "--model",
                          "se2=tests/fixtures/basic_cifar_se.safetensors",
                          "--workers",
                          "1",
                          "--blas-threads",
                          blas,
                          NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start");
    size_t loglen;
    unsigned char *log = ut_read_file(s.log, &loglen);
    ck_assert_msg(log && memmem(log, loglen, "usable CPU", 10), "no thread warning in the log");
    free(log);
    const char *names[] = {"fashion", "basic_cifar_se", "se2"};
    for (int i = 0; i < 3; i++) {
        char path[128];
        snprintf(path, sizeof path, "/v2/models/%s", names[i]);
        uh_response r;
        ck_assert_int_eq(uh_request(s.port, "GET", path, NULL, NULL, 0, &r), 0);
        ck_assert_msg(r.status == 200, "%s: %ld", path, r.status);
        uh_response_release(&r);
    }
    /* the built-in model takes an example picture under its new name */
    size_t len;
    unsigned char *png = ut_read_file("models/examples/0_ankle-boot.png", &len);
    ck_assert_ptr_nonnull(png);
    const char *h[] = {"Content-Type: image/png", NULL};
    uh_response r;
    ck_assert_int_eq(uh_request(s.port, "POST", "/predict/fashion", h, png, len, &r), 0);
    ck_assert_msg(r.status == 200 && strstr((char *)r.body, "Ankle boot"), "%ld %.*s", r.status,
                  (int)r.len, r.body);
    uh_response_release(&r);
    free(png);
    /* a CMYK JPEG is an image like any other (it was 415); its pixels are checked against
     * PIL's in the image suite */
    unsigned char *jpg = ut_read_file("tests/fixtures/images/cmyk.jpg", &len);
    ck_assert_ptr_nonnull(jpg);
    const char *hj[] = {"Content-Type: image/jpeg", NULL};
    ck_assert_int_eq(uh_request(s.port, "POST", "/predict/fashion", hj, jpg, len, &r), 0);
    ck_assert_msg(r.status == 200, "CMYK JPEG: %ld %.*s", r.status, (int)r.len, r.body);
    uh_response_release(&r);
    free(jpg);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 10000), 0);
    /* the same name twice is refused at start-up */
    run_result rr;
    run("serve --host 127.0.0.1 --port 0 --model builtin --model fashion-se-resnet=tests/fixtures/"
        "basic_cifar_se.safetensors",
        &rr);
    ck_assert_msg(rr.status == 2 && strstr(rr.err, "two models are named 'fashion-se-resnet'"),
                  "exit %d '%s'", rr.status, rr.err);
}
END_TEST

/* --model DIR stands for the one .safetensors file in DIR (hidden names skipped), as KServe's
 * storage initializer leaves a model in /mnt/models; none or several is exit 2, one line. */
START_TEST(model_directory) {
    char dir[] = "/tmp/resattn-cli-dir-XXXXXX", file[128], hidden[128], second[128], arg[160];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    size_t len;
    unsigned char *m = ut_read_file("tests/fixtures/basic_cifar_se.safetensors", &len);
    ck_assert_ptr_nonnull(m);
    snprintf(file, sizeof file, "%s/anyname.safetensors", dir);
    snprintf(hidden, sizeof hidden, "%s/.partial.safetensors", dir);
    snprintf(second, sizeof second, "%s/other.safetensors", dir);
    ck_assert_int_eq(ut_write_file(hidden, m, len), 0);
    run_result rr;
    snprintf(arg, sizeof arg, "serve --host 127.0.0.1 --port 0 --model %s", dir);
    run(arg, &rr); /* only a hidden file: none */
    ck_assert_msg(rr.status == 2 && rr.err_lines == 1 && strstr(rr.err, dir) &&
                      strstr(rr.err, "no .safetensors file"),
                  "exit %d '%s'", rr.status, rr.err);
    ck_assert_int_eq(ut_write_file(file, m, len), 0);
    snprintf(arg, sizeof arg, "isvc=%s", dir);
    uh_server s;
    const char *args[] = {"--model", arg, "--model", dir, NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    const char *names[] = {"/v2/models/isvc", "/v2/models/basic_cifar_se/ready"};
    for (int i = 0; i < 2; i++) {
        uh_response r;
        ck_assert_int_eq(uh_request(s.port, "GET", names[i], NULL, NULL, 0, &r), 0);
        ck_assert_msg(r.status == 200, "%s: %ld", names[i], r.status);
        uh_response_release(&r);
    }
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 10000), 0);
    ck_assert_int_eq(ut_write_file(second, m, len), 0);
    snprintf(arg, sizeof arg, "inspect --model %s", dir);
    run(arg, &rr);
    ck_assert_msg(rr.status != 0 && rr.err_lines == 1 && strstr(rr.err, "2 .safetensors files"),
                  "exit %d '%s'", rr.status, rr.err);
    free(m);
    ut_rm_tree(dir);
}
END_TEST

Suite *cli_suite(void) {
    Suite *s = suite_create("cli");
    TCase *t = tcase_create("cli");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, serve_refuses_bad_config);
    tcase_add_test(t, not_safetensors_message);
    tcase_add_test(t, option_errors_name_the_flag);
    tcase_add_test(t, inspect_names_and_counts);
    tcase_add_test(t, bench_names_model_and_warns);
    tcase_add_test(t, serve_builtin_beside_file);
    tcase_add_test(t, model_directory);
    suite_add_tcase(s, t);
    return s;
}
