/*
 * Tests of the server's access control and transport (issue 5), each against
 * `resattn serve` run as a child on a free loopback port and driven by libcurl: API keys
 * (--api-key, --api-key-file, RESATTN_API_KEY; 401 with WWW-Authenticate, counted as a
 * rejection; health and metrics open unless --auth-health; keys never in the log), and
 * HTTPS with a self-signed certificate made by openssl at test time (--tls-cert/--tls-key;
 * bad or half TLS settings exit 2; plain HTTP to the TLS port gets no answer), and connection
 * limits (many idle and slow-loris connections do not stop others being served; the idle
 * timeout and the per-address limit close connections).
 */
#include "util_http.h"
#include "util_st.h"
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIXTURE "tests/fixtures/basic_cifar_se.safetensors"
#define MODEL_PATH "/v2/models/basic_cifar_se"

/* A v2 JSON request for the fixture (input [1, 1, 9, 11]) with deterministic data. */
static char *infer_body(void) {
    size_t cap = 4096, len = 0;
    char *b = malloc(cap);
    len += (size_t)snprintf(b, cap,
                            "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,9,11],"
                            "\"datatype\":\"FP32\",\"data\":[");
    for (int i = 0; i < 99; i++)
        len += (size_t)snprintf(b + len, cap - len, "%s%.3f", i ? "," : "", (i % 13) / 6.5 - 1);
    snprintf(b + len, cap - len, "]}]}");
    return b;
}

/* One request; asserts the status and returns the response (caller releases). */
static uh_response req(int port, const char *method, const char *path, const char *auth,
                       const char *body, long want) {
    const char *h[3] = {"Content-Type: application/json", auth, NULL};
    uh_response r;
    uh_request(port, method, path, h, body, body ? strlen(body) : 0, &r);
    ck_assert_msg(r.status == want, "%s %s with '%s': status %ld, want %ld (%s)", method, path,
                  auth ? auth : "no Authorization", r.status, want, r.body ? (char *)r.body : "");
    return r;
}

static void expect_401(int port, const char *method, const char *path, const char *auth,
                       const char *body) {
    uh_response r = req(port, method, path, auth, body, 401);
    ck_assert_str_eq(r.www_authenticate, "Bearer realm=\"resattn\"");
    ck_assert_msg(r.body && strstr((char *)r.body, "{\"error\":\""), "401 body: %s",
                  r.body ? (char *)r.body : "");
    uh_response_release(&r);
}

static long long metric(int port, const char *name) {
    uh_response r = req(port, "GET", "/metrics", "X-Pad: 1", NULL, 200);
    const char *p = strstr((char *)r.body, name);
    long long v = p ? atoll(p + strlen(name)) : -1;
    uh_response_release(&r);
    return v;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = calloc(1, (size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n)
        b[0] = 0;
    fclose(f);
    return b;
}

START_TEST(test_api_keys) {
    char dir[] = "/tmp/resattn-sec-XXXXXX";
    ck_assert(mkdtemp(dir));
    char keyfile[96];
    snprintf(keyfile, sizeof keyfile, "%s/keys", dir);
    FILE *f = fopen(keyfile, "w");
    fprintf(f, "# team keys\n\n  file-key-two-7Qx  \n#not-a-key\n");
    fclose(f);
    const char *args[] = {"--model",        FIXTURE, "--api-key", "flag-key-one-3Zp",
                          "--api-key-file", keyfile, NULL};
    uh_server s;
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    int port = s.port;
    char *body = infer_body();
    const char *k1 = "Authorization: Bearer flag-key-one-3Zp";
    const char *k2 = "Authorization: bearer   file-key-two-7Qx";

    /* refused: no header, wrong scheme, wrong key, a prefix, a longer key, a comment line */
    expect_401(port, "GET", MODEL_PATH, NULL, NULL);
    expect_401(port, "GET", MODEL_PATH, "Authorization: Basic ZmxhZy1rZXktb25lLTNacA==", NULL);
    expect_401(port, "GET", MODEL_PATH, "Authorization: Bearer flag-key-one-3Zq", NULL);
    expect_401(port, "GET", MODEL_PATH, "Authorization: Bearer flag-key", NULL);
    expect_401(port, "GET", MODEL_PATH, "Authorization: Bearer flag-key-one-3Zpp", NULL);
    expect_401(port, "GET", MODEL_PATH, "Authorization: Bearer #not-a-key", NULL);
    expect_401(port, "POST", MODEL_PATH "/infer", NULL, body);
    expect_401(port, "POST", "/v1/models/basic_cifar_se:predict", NULL, "{\"instances\":[]}");
    expect_401(port, "GET", "/v2", NULL, NULL);
    expect_401(port, "POST", "/predict", NULL, "x");
    /* accepted: either key, metadata and inference */
    uh_response r = req(port, "GET", MODEL_PATH, k1, NULL, 200);
    uh_response_release(&r);
    r = req(port, "GET", MODEL_PATH, k2, NULL, 200);
    uh_response_release(&r);
    r = req(port, "POST", MODEL_PATH "/infer", k2, body, 200);
    ck_assert(strstr((char *)r.body, "\"outputs\""));
    uh_response_release(&r);
    /* health and metrics stay open */
    r = req(port, "GET", "/healthz", NULL, NULL, 200);
    uh_response_release(&r);
    r = req(port, "GET", "/v2/health/ready", NULL, NULL, 200);
    uh_response_release(&r);
    ck_assert_int_eq(metric(port, "resattn_requests_rejected_total{reason=\"unauthorized\"} "), 10);
    ck_assert_int_eq(
        metric(port, "resattn_http_requests_total{endpoint=\"v2_model\",code=\"401\"} "), 6);

    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    free(body);
    unlink(keyfile);
    rmdir(dir);
}
END_TEST

/* The environment key and --auth-health; the log holds neither key nor Authorization. */
START_TEST(test_auth_health_env) {
    setenv("RESATTN_API_KEY", "env-key-9Lm", 1);
    setenv("UH_KEEP_LOGS", "1", 1);
    const char *ready_auth[] = {"Authorization: Bearer env-key-9Lm", NULL};
    uh_set_ready_headers(ready_auth);
    const char *args[] = {"--model", FIXTURE, "--auth-health", NULL};
    uh_server s;
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    int port = s.port;
    expect_401(port, "GET", "/healthz", NULL, NULL);
    expect_401(port, "GET", "/readyz", NULL, NULL);
    expect_401(port, "GET", "/v2/health/live", NULL, NULL);
    expect_401(port, "GET", "/metrics", "Authorization: Bearer wrong", NULL);
    uh_response r = req(port, "GET", "/healthz", ready_auth[0], NULL, 200);
    uh_response_release(&r);
    r = req(port, "GET", "/metrics", ready_auth[0], NULL, 200);
    ck_assert(strstr((char *)r.body, "resattn_requests_rejected_total{reason=\"unauthorized\"} 4"));
    uh_response_release(&r);
    char log_path[128];
    snprintf(log_path, sizeof log_path, "%s", s.log);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    char *log = slurp(log_path);
    ck_assert_msg(strstr(log, "/healthz"), "access log missing: %s", log);
    ck_assert_msg(!strstr(log, "env-key") && !strstr(log, "Bearer"), "key in the log: %s", log);
    free(log);
    ut_rm_tree(s.dir);
}
END_TEST

/* Run `resattn serve ARGS` to its exit (it must not start); its exit status. */
static int serve_exit(const char *args, const char *want_msg) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s serve --host 127.0.0.1 --port 0 --model %s %s 2>&1", uh_binary(),
             FIXTURE, args);
    FILE *p = popen(cmd, "r");
    char out[4096] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    ck_assert_msg(strstr(out, want_msg), "%s: output lacks '%s': %s", args, want_msg, out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_bad_settings_exit_2) {
    char dir[] = "/tmp/resattn-sec-XXXXXX";
    ck_assert(mkdtemp(dir));
    char junk[96], args[512];
    snprintf(junk, sizeof junk, "%s/junk.pem", dir);
    FILE *f = fopen(junk, "w");
    fprintf(f, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
    fclose(f);
    ck_assert_int_eq(serve_exit("--api-key-file /nonexistent/keys", "--api-key-file"), 2);
    ck_assert_int_eq(serve_exit("--api-key ''", "must not be empty"), 2);
    ck_assert_int_eq(serve_exit("--tls-cert /etc/hostname", "--tls-key go together"), 2);
    ck_assert_int_eq(serve_exit("--tls-cert /nonexistent.pem --tls-key /nonexistent.pem",
                                "--tls-cert /nonexistent.pem: cannot open"),
                     2);
    snprintf(args, sizeof args, "--tls-cert /etc/hostname --tls-key %s", junk);
    ck_assert_int_eq(serve_exit(args, "not a PEM file"), 2);
    snprintf(args, sizeof args, "--tls-cert %s --tls-key %s", junk, junk);
    ck_assert_int_eq(serve_exit(args, "cannot serve HTTPS"), 2);
    unlink(junk);
    rmdir(dir);
}
END_TEST

START_TEST(test_tls) {
    char dir[] = "/tmp/resattn-tls-XXXXXX";
    ck_assert(mkdtemp(dir));
    char cert[96], key[96];
    ck_assert_msg(ut_make_cert(dir, cert, key, sizeof cert) == 0,
                  "openssl could not make a certificate in %s", dir);
    uh_set_https(cert);
    const char *args[] = {"--model", FIXTURE, "--tls-cert", cert, "--tls-key", key, NULL};
    uh_server s;
    ck_assert_msg(uh_server_start(&s, args) == 0, "HTTPS server did not start (log %s)", s.log);
    int port = s.port;
    uh_response r = req(port, "GET", "/healthz", NULL, NULL, 200);
    uh_response_release(&r);
    char *body = infer_body();
    r = req(port, "POST", MODEL_PATH "/infer", NULL, body, 200);
    ck_assert(strstr((char *)r.body, "\"outputs\""));
    uh_response_release(&r);
    free(body);
    /* plain HTTP to the TLS port: no HTTP answer */
    uh_set_https(NULL);
    uh_request(port, "GET", "/healthz", NULL, NULL, 0, &r);
    ck_assert_msg(r.status != 200, "plain HTTP answered %ld on the TLS port", r.status);
    uh_response_release(&r);
    /* the server still serves TLS afterwards */
    uh_set_https(cert);
    r = req(port, "GET", "/healthz", NULL, NULL, 200);
    uh_response_release(&r);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    unlink(cert);
    unlink(key);
    rmdir(dir);
}
END_TEST

/* ---- connection limits -------------------------------------------------------------- */

static int tcp_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* 1 when the server closed fd (EOF or reset) within timeout_ms, 0 if it stayed open. */
static int closed_within(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0)
        return 0;
    char c;
    return recv(fd, &c, 1, 0) <= 0;
}

typedef struct loris {
    int port;
    atomic_int stop;
    int sent; /* bytes trickled, all connections */
} loris;

/* Slow-loris clients: 8 connections, each sending one more header byte per second. */
static void *loris_run(void *arg) {
    loris *l = arg;
    const char *req =
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int fds[8], pos = 0;
    for (int i = 0; i < 8; i++)
        fds[i] = tcp_connect(l->port);
    while (!atomic_load(&l->stop) && req[pos]) {
        for (int i = 0; i < 8; i++)
            if (fds[i] >= 0 && send(fds[i], req + pos, 1, MSG_NOSIGNAL) == 1)
                l->sent++;
        pos++;
        for (int t = 0; t < 10 && !atomic_load(&l->stop); t++)
            nanosleep(&(struct timespec){0, 100000000L}, NULL);
    }
    for (int i = 0; i < 8; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return NULL;
}

START_TEST(test_idle_and_slow_clients) {
    const char *args[] = {"--model", FIXTURE, "--max-connections", "400", NULL};
    uh_server s;
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    int idle[200], opened = 0;
    for (int i = 0; i < 200; i++)
        if ((idle[i] = tcp_connect(s.port)) >= 0)
            opened++;
    ck_assert_int_eq(opened, 200);
    loris l = {.port = s.port};
    pthread_t t;
    pthread_create(&t, NULL, loris_run, &l);
    nanosleep(&(struct timespec){2, 0}, NULL); /* the slow clients are mid-header */
    char *body = infer_body();
    for (int i = 0; i < 3; i++) {
        uh_response r = req(s.port, "GET", "/healthz", NULL, NULL, 200);
        uh_response_release(&r);
        r = req(s.port, "POST", MODEL_PATH "/infer", NULL, body, 200);
        ck_assert(strstr((char *)r.body, "\"outputs\""));
        uh_response_release(&r);
    }
    free(body);
    atomic_store(&l.stop, 1);
    pthread_join(t, NULL);
    ck_assert_msg(l.sent >= 8, "slow clients sent only %d bytes", l.sent);
    for (int i = 0; i < 200; i++)
        close(idle[i]);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

START_TEST(test_timeout_and_per_ip_limit) {
    const char *args[] = {
        "--model", FIXTURE, "--connection-timeout-s", "1", "--max-connections-per-ip", "4", NULL};
    uh_server s;
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    /* an idle connection is closed after about 1 s (allow a few) */
    int fd = tcp_connect(s.port);
    ck_assert(fd >= 0);
    ck_assert_msg(closed_within(fd, 5000), "idle connection still open after 5 s");
    close(fd);
    /* 4 connections from 127.0.0.1 are the limit: a 5th is closed at once */
    int fds[5];
    for (int i = 0; i < 5; i++)
        fds[i] = tcp_connect(s.port);
    ck_assert_msg(closed_within(fds[4], 900), "5th connection from one address was kept");
    ck_assert_msg(!closed_within(fds[0], 100), "a connection within the limit was closed");
    for (int i = 0; i < 5; i++)
        close(fds[i]);
    /* once they are gone, requests are served again */
    nanosleep(&(struct timespec){0, 200000000L}, NULL);
    uh_response r = req(s.port, "GET", "/healthz", NULL, NULL, 200);
    uh_response_release(&r);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

Suite *security_suite(void) {
    Suite *s = suite_create("security");
    TCase *tc = tcase_create("security");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_api_keys);
    tcase_add_test(tc, test_auth_health_env);
    tcase_add_test(tc, test_bad_settings_exit_2);
    tcase_add_test(tc, test_tls);
    tcase_add_test(tc, test_idle_and_slow_clients);
    tcase_add_test(tc, test_timeout_and_per_ip_limit);
    suite_add_tcase(s, tc);
    return s;
}
