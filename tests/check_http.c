/*
 * Tests of the HTTP transport with real processes: binding (a second `resattn serve` on a taken
 * address exits 2 at once with one line naming the host and port, while the first keeps
 * answering every request; a port held by a plain socket; a privileged port as a non-root
 * user) and HEAD on every GET endpoint (same status and headers as GET, no body; 405 answers
 * list HEAD wherever GET is allowed).
 */
#include "util_http.h"
#include <check.h>
#include <curl/curl.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------------------- */

/* A `resattn serve` started by a test itself (not through uh_server_start, which adds
 * --port 0): stdout and stderr go to a file. */
typedef struct child {
    pid_t pid;
    char out[64];
    double started;
} child;

/* Start `resattn serve --host 127.0.0.1 --port <port> [extra...]`; as_nobody drops root to
 * uid/gid 65534 first (for the privileged-port test). */
static void child_start(child *c, int port, const char *const *extra, int as_nobody) {
    snprintf(c->out, sizeof c->out, "/tmp/resattn-http-XXXXXX");
    int fd = mkstemp(c->out);
    ck_assert(fd >= 0);
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    const char *argv[32] = {uh_binary(), "serve", "--host", "127.0.0.1", "--port", p};
    int n = 6;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    c->started = uh_now_s();
    c->pid = fork();
    ck_assert(c->pid >= 0);
    if (c->pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        if (as_nobody && geteuid() == 0 && (setgroups(0, NULL) || setgid(65534) || setuid(65534)))
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fd);
}

/* Wait up to timeout_ms for the child to exit: its exit status, or -1 if it still runs
 * (then *seconds is not set). */
static int child_wait(child *c, int timeout_ms, double *seconds) {
    for (int t = 0; t <= timeout_ms; t += 10) {
        int st;
        if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
            *seconds = uh_now_s() - c->started;
            c->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        uh_sleep_ms(10);
    }
    return -1;
}

/* Kill the child if it still runs; its output into buf (NUL-terminated); remove the file. */
static void child_finish(child *c, char *buf, size_t cap) {
    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
        c->pid = 0;
    }
    FILE *f = fopen(c->out, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = 0;
    if (f)
        fclose(f);
    unlink(c->out);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* A v2 request for the built-in model (FP32 zeros, [1, 1, 28, 28]). */
static char *zeros_request(void) {
    size_t cap = 28 * 28 * 2 + 256;
    char *b = malloc(cap);
    ck_assert(b != NULL);
    int n = snprintf(b, cap,
                     "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,28,28],"
                     "\"datatype\":\"FP32\",\"data\":[");
    for (int i = 0; i < 28 * 28; i++)
        n += snprintf(b + n, cap - (size_t)n, i ? ",0" : "0");
    snprintf(b + n, cap - (size_t)n, "]}]}");
    return b;
}

/* n inference requests, each on a new connection (with SO_REUSEPORT the kernel would spread
 * them over both servers); all must answer 200. */
static void infer_n(int port, const char *body, int n) {
    for (int i = 0; i < n; i++) {
        uh_response r;
        const char *h[] = {"Content-Type: application/json", NULL};
        uh_request(port, "POST", "/v2/models/default/infer", h, body, strlen(body), &r);
        ck_assert_msg(r.status == 200, "request %d: status %ld: %s", i, r.status,
                      r.body ? (char *)r.body : "");
        uh_response_release(&r);
    }
}

/* The v2 infer requests the server on port counted with status 200. */
static double infer_count(int port) {
    uh_response r;
    uh_request(port, "GET", "/metrics", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 200);
    double v = uh_metric((char *)r.body,
                         "resattn_http_requests_total{endpoint=\"v2_infer\",code=\"200\"} ");
    uh_response_release(&r);
    return v < 0 ? 0 : v;
}

/* A second server on the address must exit 2 within 5 s with one line naming the address,
 * and every request must still reach the first. */
static void expect_refused(int port, const char *why, int as_nobody) {
    child c;
    child_start(&c, port, NULL, as_nobody);
    double seconds = 0;
    int rc = child_wait(&c, 5000, &seconds);
    char out[4096];
    child_finish(&c, out, sizeof out);
    char want[128];
    snprintf(want, sizeof want, "resattn: cannot listen on 127.0.0.1:%d: %s", port, why);
    ck_assert_msg(rc == 2, "second server: exit %d (want 2 within 5 s); output: %s", rc, out);
    ck_assert_msg(seconds < 5.0, "exit after %.2f s", seconds);
    ck_assert_msg(strncmp(out, want, strlen(want)) == 0, "output '%s' does not start with '%s'",
                  out, want);
    ck_assert_msg(count_lines(out) == 1, "want one line, got: %s", out);
}

/* ---- binding ---------------------------------------------------------------------------- */

START_TEST(test_second_server_refused) {
    uh_server a;
    ck_assert_msg(uh_server_start(&a, NULL) == 0, "first server did not start (log %s)", a.log);
    char *body = zeros_request();
    infer_n(a.port, body, 5);
    /* the second server on the same port: it must be gone within 5 s; a server that shares
     * the port (the old bug) still runs during the next requests, and takes some of them */
    child c;
    child_start(&c, a.port, NULL, 0);
    double seconds = 0;
    int rc = child_wait(&c, 5000, &seconds);
    infer_n(a.port, body, 10);
    char out[4096];
    child_finish(&c, out, sizeof out);
    infer_n(a.port, body, 5);
    free(body);
    /* every one of the 20 requests reached the first server */
    int counted = (int)infer_count(a.port);
    ck_assert_msg(counted == 20, "the first server answered %d of the 20 requests", counted);
    char want[128];
    snprintf(want, sizeof want, "resattn: cannot listen on 127.0.0.1:%d: address already in use",
             a.port);
    ck_assert_msg(rc == 2, "second server: exit %d (want 2 within 5 s); output: %s", rc, out);
    ck_assert_msg(seconds < 5.0, "exit after %.2f s", seconds);
    ck_assert_msg(strncmp(out, want, strlen(want)) == 0, "output '%s' does not start with '%s'",
                  out, want);
    ck_assert_msg(count_lines(out) == 1, "want one line, got: %s", out);
    ck_assert_int_eq(uh_server_stop(&a, SIGTERM, 30000), 0);
}
END_TEST

/* A plain socket of the test's own: bound (no listen), or bound with SO_REUSEADDR and
 * listening (which SO_REUSEADDR on our side must not get past). */
static int holder_socket(int reuse, int do_listen, int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert(fd >= 0);
    int one = 1;
    if (reuse)
        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    if (do_listen)
        ck_assert_int_eq(listen(fd, 4), 0);
    socklen_t n = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &n), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

START_TEST(test_port_held_by_plain_socket) {
    int port;
    int fd = holder_socket(0, 0, &port);
    expect_refused(port, "address already in use", 0);
    close(fd);
    fd = holder_socket(1, 1, &port);
    expect_refused(port, "address already in use", 0);
    close(fd);
}
END_TEST

/* net.ipv4.ip_unprivileged_port_start: ports below it need privilege (1024 when unreadable). */
static int unprivileged_port_start(void) {
    int start = 1024;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_unprivileged_port_start", "r");
    if (f) {
        if (fscanf(f, "%d", &start) != 1)
            start = 1024;
        fclose(f);
    }
    return start;
}

/* A port below net.ipv4.ip_unprivileged_port_start as a non-root user (root drops to nobody
 * in the child): "permission denied", with its own message. Registered only where such a
 * port exists (http_suite). */
START_TEST(test_privileged_port) {
    expect_refused(unprivileged_port_start() - 1, "permission denied", 1);
}
END_TEST

/* Port 0 still picks a free port, and two servers on port 0 both start. */
START_TEST(test_port_zero) {
    uh_server a, b;
    ck_assert_msg(uh_server_start(&a, NULL) == 0, "log %s", a.log);
    ck_assert_msg(uh_server_start(&b, NULL) == 0, "log %s", b.log);
    ck_assert_int_gt(a.port, 0);
    ck_assert_int_gt(b.port, 0);
    ck_assert_int_ne(a.port, b.port);
    ck_assert_int_eq(uh_server_stop(&a, SIGTERM, 30000), 0);
    ck_assert_int_eq(uh_server_stop(&b, SIGTERM, 30000), 0);
}
END_TEST

/* ---- HEAD ------------------------------------------------------------------------------- */

/* GET and HEAD on path: same status, Content-Type and Content-Length (the GET body's length,
 * unless the body changes between the two requests, as /metrics does), and HEAD has no body. */
static void head_like_get(int port, const char *path, int same_length) {
    uh_response g, h;
    uh_request(port, "GET", path, NULL, NULL, 0, &g);
    uh_request(port, "HEAD", path, NULL, NULL, 0, &h);
    ck_assert_msg(g.status > 0 && h.status == g.status, "%s: GET %ld, HEAD %ld", path, g.status,
                  h.status);
    ck_assert_str_eq(h.content_type, g.content_type);
    ck_assert_msg(g.content_length == (long long)g.len, "%s: GET Content-Length %lld, body %zu",
                  path, g.content_length, g.len);
    ck_assert_msg(h.content_length > 0, "%s: HEAD without Content-Length", path);
    if (same_length)
        ck_assert_msg(h.content_length == g.content_length,
                      "%s: HEAD Content-Length %lld, GET %lld", path, h.content_length,
                      g.content_length);
    ck_assert_msg(h.len == 0, "%s: HEAD answered %zu body bytes", path, h.len);
    ck_assert_msg(h.request_id[0] != 0, "%s: HEAD without X-Request-Id", path);
    uh_response_release(&g);
    uh_response_release(&h);
}

START_TEST(test_head_on_get_endpoints) {
    uh_server s;
    ck_assert_msg(uh_server_start(&s, NULL) == 0, "server did not start (log %s)", s.log);
    static const char *const paths[] = {
        "/healthz",
        "/readyz",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/default",
        "/v2/models/default/ready",
        "/v2/models/default/versions/1",
        "/v2/models/default/versions/1/ready",
        "/v1/models/default",
        "/v1/models/default/versions/1",
        "/",
        "/v2/models/nosuch",             /* 404, same as GET */
        "/v2/models/default/versions/7", /* 404 */
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        head_like_get(s.port, paths[i], 1);
    head_like_get(s.port, "/metrics", 0);
    uh_response r;
    /* HEAD where only POST is allowed: 405 naming POST */
    uh_request(s.port, "HEAD", "/predict", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(r.allow, "POST");
    ck_assert_int_eq((int)r.len, 0);
    uh_response_release(&r);
    /* a 405 on a GET endpoint lists HEAD beside GET */
    static const char *const get_paths[] = {"/healthz", "/metrics", "/v2/models/default", "/"};
    for (size_t i = 0; i < sizeof get_paths / sizeof get_paths[0]; i++) {
        uh_request(s.port, "DELETE", get_paths[i], NULL, NULL, 0, &r);
        ck_assert_int_eq(r.status, 405);
        ck_assert_msg(!strcmp(r.allow, "GET, HEAD"), "%s: Allow '%s'", get_paths[i], r.allow);
        ck_assert_msg(r.body && strstr((char *)r.body, "\"error\""), "%s: no JSON error",
                      get_paths[i]);
        uh_response_release(&r);
    }
    /* HEAD is counted on its endpoint like GET */
    uh_request(s.port, "GET", "/metrics", NULL, NULL, 0, &r);
    ck_assert_msg(uh_metric((char *)r.body,
                            "resattn_http_requests_total{endpoint=\"healthz\",code=\"200\"} ") == 2,
                  "%s", r.body);
    uh_response_release(&r);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

/* Is the IPv6 loopback usable here (a container may have IPv6 off)? */
static int ipv6_loopback(void) {
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* The start-up lines write an IPv6 address in brackets ([::1]:PORT), so that the address
 * and the port can be told apart and the text pastes into a URL. */
START_TEST(test_ipv6_listening_line) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "timeout -s TERM 4 %s serve --host ::1 --port 0 --grpc-port 0 --model "
             "tests/fixtures/basic_cifar_se.safetensors --workers 1 2>&1",
             uh_binary());
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char out[8192] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    pclose(p);
    ck_assert_msg(strstr(out, "listening on [::1]:"), "no bracketed address: %s", out);
    ck_assert_msg(!strstr(out, "listening on ::1:"), "unbracketed address: %s", out);
}
END_TEST

Suite *http_suite(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    Suite *s = suite_create("http");
    TCase *bind = tcase_create("bind");
    tcase_set_timeout(bind, 120);
    tcase_add_test(bind, test_second_server_refused);
    tcase_add_test(bind, test_port_held_by_plain_socket);
    if (unprivileged_port_start() > 1)
        tcase_add_test(bind, test_privileged_port);
    else /* every port is unprivileged here: nothing to refuse */
        fprintf(stderr, "http: test_privileged_port not run (ip_unprivileged_port_start <= 1)\n");
    tcase_add_test(bind, test_port_zero);
    if (ipv6_loopback())
        tcase_add_test(bind, test_ipv6_listening_line);
    else
        fprintf(stderr, "http: test_ipv6_listening_line not run (no IPv6 loopback)\n");
    suite_add_tcase(s, bind);
    TCase *head = tcase_create("head");
    tcase_set_timeout(head, 120);
    tcase_add_test(head, test_head_on_get_endpoints);
    suite_add_tcase(s, head);
    return s;
}
