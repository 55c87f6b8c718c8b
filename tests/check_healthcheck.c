/*
 * Tests of `resattn healthcheck` (server/cli/cmd_healthcheck.c), the binary's own probe for
 * container HEALTHCHECKs and Kubernetes exec probes, run as a child process against real
 * `resattn serve` processes on loopback: exit 0 on a ready server (port from --port,
 * RESATTN_PORT or --port-file; the wildcard host 0.0.0.0 dials loopback), 1 with one line on
 * stderr when nothing listens, when the server answers but never replies (--timeout-ms), when
 * /readyz is 503 (a repository model without a ready version), once the server drains, on
 * 401 (API keys with --auth-health: the first key is sent, never printed), and over HTTPS
 * (--tls-cert) with and without the TLS options; bad options exit 1, not 2 (which Docker
 * reserves).
 */
#include "util_http.h"
#include "util_st.h"
#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIXTURE "tests/fixtures/basic_cifar_se.safetensors"

typedef struct hc_result {
    int status; /* exit status, -1 when killed by a signal */
    char out[2048], err[2048];
    int err_lines;
    double seconds;
} hc_result;

/* Read path into buf (NUL-terminated, truncated to cap - 1) and remove it. */
static void take_file(const char *path, char *buf, size_t cap) {
    size_t len = 0;
    unsigned char *b = ut_read_file(path, &len);
    size_t n = b ? (len < cap - 1 ? len : cap - 1) : 0;
    if (n)
        memcpy(buf, b, n);
    buf[n] = 0;
    free(b);
    unlink(path);
}

/* Run `$RESATTN_BIN healthcheck <args>` (NULL-terminated) with the current environment. */
static void hc(hc_result *r, const char *const *args) {
    char dir[] = "/tmp/resattn-hc-XXXXXX", op[64], ep[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(op, sizeof op, "%s/out", dir);
    snprintf(ep, sizeof ep, "%s/err", dir);
    const char *argv[32] = {uh_binary(), "healthcheck"};
    int n = 2;
    for (int i = 0; args && args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    double t0 = uh_now_s();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int o = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0)
            _exit(126);
        dup2(o, 1);
        dup2(e, 2);
        alarm(30); /* a hung probe fails the test instead of blocking the run */
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    r->seconds = uh_now_s() - t0;
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    take_file(op, r->out, sizeof r->out);
    take_file(ep, r->err, sizeof r->err);
    rmdir(dir);
    r->err_lines = 0;
    for (const char *p = r->err; *p; p++)
        r->err_lines += *p == '\n';
}

/* The probe failed (exit 1) with one stderr line that contains want. */
static void expect_unhealthy(const hc_result *r, const char *want) {
    ck_assert_msg(r->status == 1, "exit %d, want 1 (stdout '%s', stderr '%s')", r->status, r->out,
                  r->err);
    ck_assert_msg(r->err_lines == 1, "want one line on stderr, got: '%s'", r->err);
    ck_assert_msg(!want || strstr(r->err, want), "stderr '%s' does not say '%s'", r->err, want);
}

static void expect_ready(const hc_result *r) {
    ck_assert_msg(r->status == 0, "exit %d, want 0 (stdout '%s', stderr '%s')", r->status, r->out,
                  r->err);
    ck_assert_msg(strstr(r->out, "200, ready"), "stdout: '%s'", r->out);
}

/* A loopback TCP socket bound to a free port; listening (backlog, never accepted) or not (so
 * connections are refused). Returns the fd, the port in *port. */
static int loopback_socket(int listening, int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ck_assert(fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof a));
    ck_assert(!listening || !listen(fd, 8));
    ck_assert(!getsockname(fd, (struct sockaddr *)&a, &len));
    *port = ntohs(a.sin_port);
    return fd;
}

/* Ready server: --port, RESATTN_PORT, --port-file with --port 0, and --host 0.0.0.0 (the
 * server listens on 127.0.0.1 only, so this passes only if the wildcard dials loopback). */
START_TEST(test_ready) {
    uh_server s;
    const char *args[] = {"--model", FIXTURE, NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    char port[16], port_file[128];
    snprintf(port, sizeof port, "%d", s.port);
    snprintf(port_file, sizeof port_file, "%s/port", s.dir);
    hc_result r;
    hc(&r, (const char *[]){"--port", port, NULL});
    expect_ready(&r);
    ck_assert_msg(!r.err[0], "stderr on success: %s", r.err);
    hc(&r, (const char *[]){"--host", "0.0.0.0", "--port", port, "--timeout-ms", "5000", NULL});
    expect_ready(&r);
    hc(&r, (const char *[]){"--port", "0", "--port-file", port_file, NULL});
    expect_ready(&r);
    setenv("RESATTN_PORT", port, 1);
    setenv("RESATTN_HOST", "0.0.0.0", 1);
    hc(&r, NULL);
    expect_ready(&r);
    /* serve's other options are accepted and ignored */
    hc(&r, (const char *[]){"--workers", "3", "--model", "x.safetensors", NULL});
    expect_ready(&r);
    unsetenv("RESATTN_PORT");
    unsetenv("RESATTN_HOST");
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

/* Nothing listens (a bound socket that does not listen refuses connections); a listener that
 * never answers times out within --timeout-ms. */
START_TEST(test_refused_and_timeout) {
    int port;
    int fd = loopback_socket(0, &port);
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    hc_result r;
    hc(&r, (const char *[]){"--port", p, NULL});
    expect_unhealthy(&r, "Connection refused");
    ck_assert(!r.out[0]);
    close(fd);
    fd = loopback_socket(1, &port);
    snprintf(p, sizeof p, "%d", port);
    hc(&r, (const char *[]){"--port", p, "--timeout-ms", "300", NULL});
    expect_unhealthy(&r, "timed out");
    ck_assert_msg(r.seconds >= 0.25 && r.seconds < 5, "took %.2f s for --timeout-ms 300",
                  r.seconds);
    close(fd);
}
END_TEST

/* Bad or incomplete configuration: exit 1 (Docker reserves 2), one line naming the problem. */
START_TEST(test_bad_options) {
    hc_result r;
    hc(&r, (const char *[]){"--bogus", NULL});
    expect_unhealthy(&r, "unknown option '--bogus'");
    hc(&r, (const char *[]){"--timeout-ms", "0", NULL});
    expect_unhealthy(&r, "--timeout-ms: '0'");
    hc(&r, (const char *[]){"--port", "0", NULL});
    expect_unhealthy(&r, "--port-file");
    hc(&r, (const char *[]){"--port", "70000", NULL});
    expect_unhealthy(&r, "--port");
    hc(&r, (const char *[]){"--tls-cert", "/x.pem", NULL});
    expect_unhealthy(&r, "--tls-key");
    hc(&r, (const char *[]){"--help", NULL});
    ck_assert_int_eq(r.status, 0);
    ck_assert_msg(strstr(r.out, "--timeout-ms"), "%s", r.out);
}
END_TEST

/* /readyz 503: a model of a polled repository has no ready version (its file is not a model),
 * so the server is up and answers, but not ready. */
START_TEST(test_not_ready) {
    char repo[] = "/tmp/resattn-hc-repo-XXXXXX", path[256];
    ck_assert_ptr_nonnull(mkdtemp(repo));
    size_t len;
    unsigned char *model = ut_read_file(FIXTURE, &len);
    ck_assert_ptr_nonnull(model);
    snprintf(path, sizeof path, "%s/m/1", repo);
    ut_mkdirs(path);
    snprintf(path, sizeof path, "%s/m/1/model.safetensors", repo);
    ck_assert_int_eq(ut_write_file(path, model, len), 0);
    free(model);
    uh_server s;
    const char *args[] = {"--model-repository",
                          repo,
                          "--model-control-mode",
                          "poll",
                          "--repository-poll-secs",
                          "1",
                          NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    hc_result r;
    hc(&r, (const char *[]){"--port", port, NULL});
    expect_ready(&r);
    snprintf(path, sizeof path, "%s/n/1", repo);
    ut_mkdirs(path);
    snprintf(path, sizeof path, "%s/n/1/model.safetensors", repo);
    ck_assert_int_eq(ut_write_file(path, "this is not a model", 19), 0);
    /* the next scan, within ~1 s */
    ck_assert_int_eq(uh_wait_status(NULL, s.port, "/readyz", 503, 8000), 503);
    hc(&r, (const char *[]){"--port", port, NULL});
    expect_unhealthy(&r, "answered 503: a model that should be served has no ready version");
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    ut_rm_tree(repo);
}
END_TEST

/* Draining: a request whose body never completes keeps the server in its drain after
 * SIGTERM; readiness is 503 on an open connection and the probe fails (the listener is
 * closed, so it is refused) while the server is still running. */
START_TEST(test_draining) {
    uh_server s;
    const char *args[] = {"--model", FIXTURE, "--drain-timeout-ms", "20000", NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)s.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(fd >= 0 && !connect(fd, (struct sockaddr *)&a, sizeof a));
    const char *partial = "POST /v2/models/basic_cifar_se/infer HTTP/1.1\r\nHost: x\r\n"
                          "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{";
    ck_assert(send(fd, partial, strlen(partial), 0) == (ssize_t)strlen(partial));
    uh_client *probe = uh_client_new(s.port); /* keep-alive, opened before the signal */
    uh_response resp;
    uh_client_request(probe, "GET", "/readyz", NULL, NULL, 0, &resp);
    ck_assert_int_eq(resp.status, 200);
    uh_response_release(&resp);
    uh_sleep_ms(200); /* the partial request has reached the server */
    kill(s.pid, SIGTERM);
    long status = uh_wait_status(probe, s.port, "/readyz", 503, 5000);
    uh_client_free(probe);
    ck_assert_int_eq(status, 503);
    hc_result r;
    hc(&r, (const char *[]){"--port", port, NULL});
    expect_unhealthy(&r, NULL);
    ck_assert_msg(strstr(r.err, "refused") || strstr(r.err, "503"), "%s", r.err);
    int st;
    ck_assert_msg(waitpid(s.pid, &st, WNOHANG) == 0, "the server was no longer draining");
    close(fd); /* the held request ends; the drain finishes */
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

/* API keys with --auth-health: the probe sends the first key (from --api-key, the file or
 * RESATTN_API_KEY) only when --auth-health is configured too, and never prints it. */
START_TEST(test_api_key) {
    char dir[] = "/tmp/resattn-hc-key-XXXXXX", keyfile[96];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(keyfile, sizeof keyfile, "%s/keys", dir);
    const char *keys = "# keys\nsecond-key-2222\n";
    ck_assert_int_eq(ut_write_file(keyfile, keys, strlen(keys)), 0);
    static const char *const ready_headers[] = {"Authorization: Bearer first-key-1111", NULL};
    uh_set_ready_headers(ready_headers);
    uh_server s;
    const char *args[] = {"--model",        FIXTURE, "--api-key",     "first-key-1111",
                          "--api-key-file", keyfile, "--auth-health", NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    hc_result r;
    hc(&r, (const char *[]){"--port", port, NULL});
    expect_unhealthy(&r, "answered 401");
    ck_assert_msg(strstr(r.err, "wants an API key"), "%s", r.err);
    hc(&r, (const char *[]){"--port", port, "--api-key", "first-key-1111", NULL});
    expect_unhealthy(&r, "answered 401"); /* without --auth-health the key is not sent */
    hc(&r, (const char *[]){"--port", port, "--api-key", "first-key-1111", "--auth-health", NULL});
    expect_ready(&r);
    hc(&r, (const char *[]){"--port", port, "--api-key-file", keyfile, "--auth-health", NULL});
    expect_ready(&r);
    hc(&r, (const char *[]){"--port", port, "--api-key", "wrong-key-3333", "--auth-health", NULL});
    expect_unhealthy(&r, "the API key was refused");
    ck_assert_msg(!strstr(r.err, "wrong-key-3333") && !strstr(r.out, "wrong-key-3333"),
                  "the key was printed: %s", r.err);
    setenv("RESATTN_API_KEY", "first-key-1111", 1);
    setenv("RESATTN_AUTH_HEALTH", "1", 1);
    hc(&r, (const char *[]){"--port", port, NULL});
    expect_ready(&r);
    ck_assert_msg(!strstr(r.out, "first-key-1111"), "the key was printed: %s", r.out);
    unsetenv("RESATTN_API_KEY");
    unsetenv("RESATTN_AUTH_HEALTH");
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    uh_set_ready_headers(NULL);
    ut_rm_tree(dir);
}
END_TEST

/* HTTPS (self-signed certificate made by openssl): the probe speaks TLS when --tls-cert is
 * configured, with the key when --auth-health is; without the TLS options it fails, as does
 * TLS against a plain HTTP server. */
START_TEST(test_tls) {
    char dir[] = "/tmp/resattn-hc-tls-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char cert[96], key[96];
    ck_assert_msg(ut_make_cert(dir, cert, key, sizeof cert) == 0,
                  "openssl could not make a certificate in %s", dir);
    static const char *const ready_headers[] = {"Authorization: Bearer tls-key-4444", NULL};
    uh_set_ready_headers(ready_headers);
    uh_set_https(cert);
    uh_server s;
    const char *args[] = {"--model",   FIXTURE,        "--tls-cert",    cert, "--tls-key", key,
                          "--api-key", "tls-key-4444", "--auth-health", NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "HTTPS server did not start (log %s)", s.log);
    uh_set_https(NULL);
    uh_set_ready_headers(NULL);
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    hc_result r;
    hc(&r, (const char *[]){"--port", port, "--tls-cert", cert, "--tls-key", key, "--api-key",
                            "tls-key-4444", "--auth-health", NULL});
    expect_ready(&r);
    ck_assert_msg(strstr(r.out, "https://127.0.0.1:"), "%s", r.out);
    /* RESATTN_TLS_* as the container would set them */
    setenv("RESATTN_TLS_CERT", cert, 1);
    setenv("RESATTN_TLS_KEY", key, 1);
    hc(&r, (const char *[]){"--port", port, "--api-key", "tls-key-4444", "--auth-health", NULL});
    expect_ready(&r);
    hc(&r, (const char *[]){"--port", port, NULL});
    expect_unhealthy(&r, "answered 401");
    unsetenv("RESATTN_TLS_CERT");
    unsetenv("RESATTN_TLS_KEY");
    /* plain HTTP to the TLS port: no HTTP answer */
    hc(&r, (const char *[]){"--port", port, "--api-key", "tls-key-4444", "--auth-health",
                            "--timeout-ms", "3000", NULL});
    expect_unhealthy(&r, NULL);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    /* TLS to a plain HTTP server: the handshake fails */
    const char *plain[] = {"--model", FIXTURE, NULL};
    ck_assert_msg(uh_server_start(&s, plain) == 0, "server did not start (log %s)", s.log);
    snprintf(port, sizeof port, "%d", s.port);
    hc(&r, (const char *[]){"--port", port, "--tls-cert", cert, "--tls-key", key, NULL});
    expect_unhealthy(&r, "TLS handshake failed");
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    ut_rm_tree(dir);
}
END_TEST

Suite *healthcheck_suite(void) {
    Suite *s = suite_create("healthcheck");
    TCase *tc = tcase_create("healthcheck");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_ready);
    tcase_add_test(tc, test_refused_and_timeout);
    tcase_add_test(tc, test_bad_options);
    tcase_add_test(tc, test_not_ready);
    tcase_add_test(tc, test_draining);
    tcase_add_test(tc, test_api_key);
    tcase_add_test(tc, test_tls);
    suite_add_tcase(s, tc);
    return s;
}
