/*
 * Tests of memory admission (server/runtime/budget.c and its use in server/http/http.c).
 * In-process: the budget's admission rules (all or nothing, the large-request reserve, never
 * refusing an admitted request's true size), many threads charging at once, and that the
 * per-request estimate covers real encoded answers. On `resattn serve` run as a child on a
 * loopback port, with raw sockets for the uploads: a flood of clients each announcing a large
 * body and holding it part-sent, against a small budget — resident memory stays under the
 * budget plus what the idle server took, every client gets 200 or 503 + Retry-After (the
 * refused ones before sending a byte of body), small requests keep being served, and the
 * budget in use returns to 0; the same flood against an unlimited budget exceeds that bound,
 * so the bound is what the budget buys. Chunked uploads are charged as they arrive and
 * refused (503, or 413 when no budget could hold them) when they cross.
 */
#include "cli/config.h"
#include "cli/default_model.h"
#include "protocol/image_api.h"
#include "runtime/budget.h"
#include "runtime/metrics.h"
#include "util_http.h"
#include <arpa/inet.h>
#include <check.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024LL * 1024)
#define EXAMPLE_PNG "models/examples/0_ankle-boot.png"

/* ---- the budget in-process -------------------------------------------------------------- */

START_TEST(test_budget_admission) {
    resattn_budget *b = resattn_budget_new(1600);
    resattn_budget_hold small = {b, 0}, large = {b, 0}, other = {b, 0};
    /* a request over 1/16 of the budget (100) may not take its last eighth (200) */
    ck_assert_int_eq(resattn_budget_hold_grow(&large, 1300), RESATTN_BUDGET_OK);
    ck_assert_int_eq(resattn_budget_hold_grow(&other, 101), RESATTN_BUDGET_FULL);
    ck_assert_int_eq(resattn_budget_in_use(b), 1300); /* a refusal takes nothing */
    ck_assert_int_eq(resattn_budget_hold_grow(&other, 100), RESATTN_BUDGET_OK);
    ck_assert_int_eq(resattn_budget_hold_grow(&small, 100), RESATTN_BUDGET_OK);
    ck_assert_int_eq(resattn_budget_hold_grow(&small, 100), RESATTN_BUDGET_FULL); /* now large */
    ck_assert_int_eq(resattn_budget_in_use(b), 1500);
    /* more than any request may ever hold: NEVER, whatever is in use */
    resattn_budget_hold huge = {b, 0};
    ck_assert_int_eq(resattn_budget_hold_grow(&huge, 1401), RESATTN_BUDGET_NEVER);
    /* an admitted request's true size is never refused, even past the limit... */
    resattn_budget_hold_set(&large, 1500);
    ck_assert_int_eq(resattn_budget_in_use(b), 1700);
    /* ...and admission waits until the count is back under */
    ck_assert_int_eq(resattn_budget_hold_grow(&huge, 1), RESATTN_BUDGET_FULL);
    resattn_budget_hold_release(&large);
    resattn_budget_hold_release(&other);
    resattn_budget_hold_release(&small);
    ck_assert_int_eq(resattn_budget_in_use(b), 0);
    ck_assert_int_eq(resattn_budget_hold_grow(&huge, 1400), RESATTN_BUDGET_OK);
    resattn_budget_hold_release(&huge);
    /* no budget: everything admits, nothing is counted */
    resattn_budget_hold none = {NULL, 0};
    ck_assert_int_eq(resattn_budget_hold_grow(&none, (size_t)1 << 40), RESATTN_BUDGET_OK);
    resattn_budget_hold_release(&none);
    resattn_budget_free(b);
}
END_TEST

typedef struct hammer {
    resattn_budget *b;
    unsigned seed;
    atomic_llong *peak;
    int admitted;
} hammer;

/* Grow holds by random amounts, sometimes in two steps, and release them. */
static void *hammer_run(void *arg) {
    hammer *h = arg;
    unsigned s = h->seed;
    for (int i = 0; i < 20000; i++) {
        resattn_budget_hold hold = {h->b, 0};
        s = s * 1664525u + 1013904223u;
        if (resattn_budget_hold_grow(&hold, 1 + (s >> 8) % 60) == RESATTN_BUDGET_OK) {
            h->admitted++;
            resattn_budget_hold_grow(&hold, (s >> 20) % 30);
            long long now = resattn_budget_in_use(h->b), p = atomic_load(h->peak);
            while (now > p && !atomic_compare_exchange_weak(h->peak, &p, now))
                ;
            resattn_budget_hold_release(&hold);
        }
    }
    return NULL;
}

START_TEST(test_budget_threads) {
    resattn_budget *b = resattn_budget_new(1000);
    atomic_llong peak = 0;
    hammer h[8];
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        h[i] = (hammer){b, (unsigned)i * 7919u + 1, &peak, 0};
        pthread_create(&t[i], NULL, hammer_run, &h[i]);
    }
    int admitted = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        admitted += h[i].admitted;
    }
    ck_assert_int_eq(resattn_budget_in_use(b), 0);
    ck_assert_int_le(atomic_load(&peak), 1000); /* admission never overshoots */
    ck_assert_int_gt(admitted, 8 * 20000 / 2);
    resattn_budget_free(b);
}
END_TEST

/* The estimate a request holds once parsed covers its real encoded answers, for a full
 * batch of the largest floats, every class as top-k, on the built-in model (with labels). */
START_TEST(test_estimate_covers_answers) {
    resattn_model *m = NULL;
    char err[RESATTN_ERR_LEN];
    ck_assert(resattn_model_load_buffer(resattn_default_model_data,
                                        (size_t)resattn_default_model_size, &m, err,
                                        sizeof err) == RESATTN_OK);
    const resattn_model_info *info = resattn_model_get_info(m);
    int n = 8, k = info->num_classes;
    float *logits = malloc(sizeof(float) * (size_t)(n * k));
    for (int i = 0; i < n * k; i++)
        logits[i] = (i % 2 ? -1.0f : 1.0f) * 1.17549435e-38f * (float)(i + 3) / 7.0f;
    size_t est = resattn_budget_infer_bytes(info, n, 1); /* input in the body: logits, answer */
    /* the default v2 outputs with every class in the top-k: the largest tensor answer */
    resattn_infer_request q = {
        .protocol = RESATTN_PROTO_V2, .n = n, .outputs = RESATTN_OUT_DEFAULT, .top_k = k};
    resattn_response_body body = {0};
    ck_assert_int_eq(resattn_v2_encode(&q, "fashion-se-resnet", info, logits, n, &body), 0);
    ck_assert_msg(body.len + sizeof(float) * n * k <= est, "v2 answer %zu > estimate %zu", body.len,
                  est);
    resattn_response_body_release(&body);
    resattn_infer_request img = {
        .protocol = RESATTN_PROTO_V2, .n = n, .outputs = RESATTN_OUT_DEFAULT, .top_k = k};
    ck_assert_int_eq(resattn_image_api_encode(&img, "fashion-se-resnet", info, logits, n, &body),
                     0);
    ck_assert_msg(body.len + sizeof(float) * n * k <= est, "v2 image answer %zu > estimate %zu",
                  body.len, est);
    resattn_response_body_release(&body);
    img.protocol = RESATTN_PROTO_PREDICT;
    ck_assert_int_eq(resattn_image_api_encode(&img, "fashion-se-resnet", info, logits, n, &body),
                     0);
    ck_assert_msg(body.len + sizeof(float) * n * k <= est, "/predict answer %zu > estimate %zu",
                  body.len, est);
    resattn_response_body_release(&body);
    /* the input tensor is added when it is not used in place */
    ck_assert_uint_eq(resattn_budget_infer_bytes(info, n, 0) - est, sizeof(float) * n * 28 * 28);
    /* parsing JSON may take twice its body besides it; raw and binary bodies nothing */
    ck_assert_uint_eq(resattn_budget_parse_bytes("application/json", 1000), 2000);
    ck_assert_uint_eq(resattn_budget_parse_bytes(NULL, 1000), 2000);
    ck_assert_uint_eq(resattn_budget_parse_bytes("image/png", 1000), 0);
    ck_assert_uint_eq(resattn_budget_parse_bytes("multipart/form-data; boundary=x", 1000), 0);
    free(logits);
    resattn_model_free(m);
}
END_TEST

START_TEST(test_metrics_gauges) {
    resattn_metrics *mt = resattn_metrics_new();
    resattn_budget *b = resattn_budget_new(64 * MIB);
    resattn_budget_hold h = {b, 0};
    resattn_budget_hold_grow(&h, 12345);
    resattn_metrics_set_budget(mt, b);
    resattn_metrics_reject(mt, RESATTN_REJECT_MEMORY);
    size_t len = 0;
    char *text = resattn_metrics_render(mt, &len);
    ck_assert(strstr(text, "\nresattn_memory_budget_bytes 67108864\n"));
    ck_assert(strstr(text, "\nresattn_memory_in_use_bytes 12345\n"));
    ck_assert(strstr(text, "resattn_requests_rejected_total{reason=\"memory\"} 1\n"));
    char path[] = "/tmp/resattn-metrics-XXXXXX";
    int fd = mkstemp(path);
    ck_assert(write(fd, text, len) == (ssize_t)len);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s >/dev/null 2>&1", path);
    ck_assert_msg(system(cmd) == 0, "promtool check metrics failed");
    unlink(path);
    free(text);
    resattn_budget_hold_release(&h);
    resattn_budget_free(b);
    resattn_metrics_free(mt);
}
END_TEST

/* ---- raw HTTP --------------------------------------------------------------------------- */

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

static int send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k <= 0)
            return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

typedef struct raw_answer {
    int status; /* 0: none (timeout, reset) */
    int retry_after;
    char body[512];
} raw_answer;

/* Read one answer (headers, then Content-Length bytes of body) within timeout_ms. */
static raw_answer read_answer(int fd, int timeout_ms) {
    raw_answer a = {0};
    char buf[16384];
    size_t len = 0;
    long want = -1;
    char *body = NULL;
    for (int waited = 0; waited < timeout_ms;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) {
            waited += 100;
            continue;
        }
        ssize_t k = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (k <= 0)
            break;
        len += (size_t)k;
        buf[len] = 0;
        if (!body && (body = strstr(buf, "\r\n\r\n"))) {
            body += 4;
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            want = cl ? atol(cl + 17) : 0;
        }
        if (body && (long)(len - (size_t)(body - buf)) >= want)
            break;
    }
    buf[len] = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &a.status) != 1)
        a.status = 0;
    const char *ra = strcasestr(buf, "\r\nRetry-After:");
    a.retry_after = ra ? atoi(ra + 14) : 0;
    if (body)
        snprintf(a.body, sizeof a.body, "%s", body);
    return a;
}

/* 1 when fd has something to read within timeout_ms (an early answer, or EOF). */
static int readable(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) > 0;
}

/* ---- the server ------------------------------------------------------------------------- */

static long long metric(int port, const char *name) {
    uh_response r;
    uh_request(port, "GET", "/metrics", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 200);
    const char *p = strstr((char *)r.body, name);
    while (p && p != (char *)r.body && p[-1] != '\n')
        p = strstr(p + 1, name);
    long long v = p ? atoll(p + strlen(name)) : -1;
    uh_response_release(&r);
    return v;
}

/* Wait up to 5 s for the budget in use to come back to 0 (completion follows the answer). */
static long long settle_in_use(int port) {
    long long v = -1;
    for (int i = 0; i < 100 && (v = metric(port, "resattn_memory_in_use_bytes ")) != 0; i++)
        nanosleep(&(struct timespec){0, 50000000L}, NULL);
    return v;
}

/* A valid image body of `len` bytes: the example PNG (*png_len bytes), then zeros (decoders
 * stop at IEND). */
static unsigned char *padded_png(size_t len, size_t *png_len) {
    FILE *f = fopen(EXAMPLE_PNG, "rb");
    ck_assert_msg(f, "cannot open %s", EXAMPLE_PNG);
    unsigned char *b = calloc(1, len);
    size_t n = fread(b, 1, len, f);
    fclose(f);
    ck_assert(n > 0 && n < len);
    if (png_len)
        *png_len = n;
    return b;
}

static void small_predict_ok(int port, const unsigned char *png, size_t len) {
    const char *h[] = {"Content-Type: image/png", NULL};
    uh_response r;
    uh_request(port, "POST", "/predict", h, png, len, &r);
    ck_assert_msg(r.status == 200, "small request during the flood: %ld %s", r.status,
                  r.body ? (char *)r.body : "");
    ck_assert(strstr((char *)r.body, "\"Ankle boot\""));
    uh_response_release(&r);
}

typedef struct flood_result {
    int admitted, refused, answered_200;
    long long rss_idle, rss_held, in_use_held;
} flood_result;

#define FLOOD_CLIENTS 40
#define FLOOD_BODY (8 * MIB)

/*
 * FLOOD_CLIENTS connections announce a FLOOD_BODY-byte PNG upload and wait for 100 Continue
 * (as curl does for large bodies). Those refused get 503 + Retry-After instead and never
 * send a byte of body; the others send 90 % of the body and hold it while resident memory
 * is sampled and small requests are made; then they finish and must get 200.
 */
static void flood(const uh_server *s, flood_result *out) {
    memset(out, 0, sizeof *out);
    size_t small_len = 0;
    unsigned char *body = padded_png(FLOOD_BODY, &small_len);
    out->rss_idle = resattn_resident_bytes(s->pid);
    int fds[FLOOD_CLIENTS], admitted[FLOOD_CLIENTS];
    char head[256];
    snprintf(head, sizeof head,
             "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
             "Content-Length: %lld\r\nExpect: 100-continue\r\n\r\n",
             FLOOD_BODY);
    for (int i = 0; i < FLOOD_CLIENTS; i++) {
        fds[i] = tcp_connect(s->port);
        ck_assert_int_ge(fds[i], 0);
        ck_assert_int_eq(send_all(fds[i], head, strlen(head)), 0);
    }
    size_t part = FLOOD_BODY / 10 * 9;
    for (int i = 0; i < FLOOD_CLIENTS; i++) {
        raw_answer a = read_answer(fds[i], 10000); /* 100 Continue, or the refusal */
        admitted[i] = a.status == 100;
        if (!admitted[i]) {
            ck_assert_msg(a.status == 503 && a.retry_after >= 1,
                          "client %d refused with %d (Retry-After %d): %s", i, a.status,
                          a.retry_after, a.body);
            ck_assert_msg(strstr(a.body, "memory budget"), "503 body: %s", a.body);
            out->refused++;
            continue;
        }
        out->admitted++;
        ck_assert_int_eq(send_all(fds[i], body, part), 0);
    }
    /* held: sample resident memory, serve small requests meanwhile */
    for (int t = 0; t < 5; t++) {
        long long rss = resattn_resident_bytes(s->pid);
        out->rss_held = rss > out->rss_held ? rss : out->rss_held;
        small_predict_ok(s->port, body, small_len);
    }
    out->in_use_held = metric(s->port, "resattn_memory_in_use_bytes ");
    for (int i = 0; i < FLOOD_CLIENTS; i++) {
        if (admitted[i]) {
            ck_assert_int_eq(send_all(fds[i], body + part, FLOOD_BODY - part), 0);
            raw_answer a = read_answer(fds[i], 600000); /* valgrind: minutes */
            ck_assert_msg(a.status == 200, "admitted client %d got %d: %s", i, a.status, a.body);
            out->answered_200++;
        }
        close(fds[i]);
    }
    free(body);
}

START_TEST(test_upload_flood) {
    const long long budget = 64 * MIB;
    char budget_arg[32];
    snprintf(budget_arg, sizeof budget_arg, "%lld", budget);
    /* the long request timeout: under valgrind the held requests take minutes, not 504s */
    const char *args[] = {"--max-memory-bytes",
                          budget_arg,
                          "--max-connections",
                          "200",
                          "--max-body-bytes",
                          "16777216",
                          "--request-timeout-ms",
                          "600000",
                          NULL};
    uh_server s;
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    ck_assert_int_eq(metric(s.port, "resattn_memory_budget_bytes "), budget);
    flood_result f;
    flood(&s, &f);
    /* 8 MiB bodies are large requests: they may use 7/8 of the budget, 6 of them */
    ck_assert_int_eq(f.admitted, 6);
    ck_assert_int_eq(f.refused, FLOOD_CLIENTS - 6);
    ck_assert_int_eq(f.answered_200, f.admitted);
    ck_assert_int_ge(f.in_use_held, 6 * FLOOD_BODY);
    ck_assert_int_le(f.in_use_held, budget - budget / 8);
    /* what the flood announced would not fit the bound below; what was admitted does */
    long long bound = f.rss_idle + budget + budget / 4;
    ck_assert_int_gt((long long)FLOOD_CLIENTS * FLOOD_BODY / 10 * 9, bound);
    ck_assert_msg(f.rss_held <= bound, "resident %lld MiB while held > %lld MiB (idle %lld MiB)",
                  f.rss_held / MIB, bound / MIB, f.rss_idle / MIB);
    fprintf(stderr,
            "upload flood, budget %lld MiB: %d admitted, %d refused (503), resident %.1f MiB idle, "
            "%.1f MiB held, budget in use %.1f MiB\n",
            budget / MIB, f.admitted, f.refused, f.rss_idle / (double)MIB, f.rss_held / (double)MIB,
            f.in_use_held / (double)MIB);
    ck_assert_int_eq(metric(s.port, "resattn_requests_rejected_total{reason=\"memory\"} "),
                     f.refused);
    ck_assert_int_eq(settle_in_use(s.port), 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "grep -q 'memory budget 64.0 MiB for requests (--max-memory-bytes' %s", s.log);
    ck_assert_msg(system(cmd) == 0, "start-up log does not state the budget (%s)", s.log);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

/* The same flood with a budget too large to matter: everything is admitted, and resident
 * memory passes the bound the budgeted server stays under. */
START_TEST(test_upload_flood_unbudgeted) {
    const char *args[] = {"--max-memory-bytes",
                          "1099511627776",
                          "--max-connections",
                          "200",
                          "--max-body-bytes",
                          "16777216",
                          "--request-timeout-ms",
                          "600000",
                          NULL};
    uh_server s;
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    flood_result f;
    flood(&s, &f);
    ck_assert_int_eq(f.admitted, FLOOD_CLIENTS);
    ck_assert_int_eq(f.answered_200, FLOOD_CLIENTS);
    long long bound = f.rss_idle + 64 * MIB + 64 * MIB / 4;
    ck_assert_msg(f.rss_held > bound, "resident %lld MiB without a budget, bound %lld MiB",
                  f.rss_held / MIB, bound / MIB);
    fprintf(stderr, "upload flood, no budget: %d admitted, resident %.1f MiB idle, %.1f MiB held\n",
            f.admitted, f.rss_idle / (double)MIB, f.rss_held / (double)MIB);
    ck_assert_int_eq(settle_in_use(s.port), 0);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

/* Send `n` bytes of body as one chunk of chunked transfer encoding. */
static void send_chunk(int fd, const unsigned char *p, size_t n) {
    char size[32];
    snprintf(size, sizeof size, "%zx\r\n", n);
    ck_assert_int_eq(send_all(fd, size, strlen(size)), 0);
    ck_assert_int_eq(send_all(fd, p, n), 0);
    ck_assert_int_eq(send_all(fd, "\r\n", 2), 0);
}

static int chunked_upload(int port) {
    int fd = tcp_connect(port);
    ck_assert_int_ge(fd, 0);
    const char *head = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n";
    ck_assert_int_eq(send_all(fd, head, strlen(head)), 0);
    return fd;
}

static void pause_ms(int ms) {
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL);
}

START_TEST(test_chunked_charged) {
    const long long budget = 32 * MIB;
    const char *args[] = {"--max-memory-bytes", "33554432", "--max-body-bytes", "67108864", NULL};
    uh_server s;
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    unsigned char *body = padded_png(20 * MIB, NULL);
    /* an announced body the whole budget could not hold: 413 instead of 100 Continue,
     * counted as memory */
    int fd = tcp_connect(s.port);
    const char *big = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                      "Content-Length: 31457280\r\nExpect: 100-continue\r\n\r\n";
    ck_assert_int_eq(send_all(fd, big, strlen(big)), 0);
    raw_answer a = read_answer(fd, 5000);
    ck_assert_msg(a.status == 413 && strstr(a.body, "memory budget"), "%d %s", a.status, a.body);
    close(fd);
    /* a holder: 12 MiB announced and admitted, half sent */
    int holder = tcp_connect(s.port);
    const char *hh = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                     "Content-Length: 12582912\r\n\r\n";
    ck_assert_int_eq(send_all(holder, hh, strlen(hh)), 0);
    ck_assert_int_eq(send_all(holder, body, 6 * MIB), 0);
    pause_ms(300);
    ck_assert(!readable(holder, 0));
    long long base = metric(s.port, "resattn_memory_in_use_bytes ");
    ck_assert_int_ge(base, 12 * MIB);
    /* chunked: charged as it arrives, until growing to 16 MiB crosses the budget (503) */
    int c = chunked_upload(s.port);
    size_t sent = 0;
    long long charged = 0, refused_at = 0;
    for (int i = 0; i < 12; i++) {
        send_chunk(c, body + sent, (size_t)MIB);
        sent += (size_t)MIB;
        pause_ms(150);
        long long now = metric(s.port, "resattn_memory_in_use_bytes ") - base;
        if (!refused_at && now < (long long)sent) {
            refused_at = (long long)sent; /* refused: its body was dropped, its charge freed */
            ck_assert_int_lt(now, (long long)MIB);
        } else if (!refused_at) {
            ck_assert_msg(now >= (long long)sent && now <= 2 * (long long)sent + (long long)MIB,
                          "%zu bytes sent, %lld charged", sent, now);
            charged = now;
        }
    }
    ck_assert_msg(refused_at > 8 * MIB && refused_at <= 9 * MIB,
                  "chunked upload refused at %lld bytes (last charge %lld)", refused_at, charged);
    ck_assert_int_eq(metric(s.port, "resattn_requests_rejected_total{reason=\"memory\"} "), 2);
    ck_assert_int_eq(send_all(c, "0\r\n\r\n", 5), 0);
    a = read_answer(c, 10000);
    ck_assert_msg(a.status == 503 && a.retry_after >= 1 && strstr(a.body, "memory budget"),
                  "chunked over the budget: %d (Retry-After %d) %s", a.status, a.retry_after,
                  a.body);
    close(c);
    /* a client that does not wait for 100 Continue: its body is read and dropped (not
     * charged), then the 503 follows, on a connection still open for the next request */
    c = tcp_connect(s.port);
    const char *nh = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                     "Content-Length: 20971520\r\n\r\n";
    ck_assert_int_eq(send_all(c, nh, strlen(nh)), 0);
    ck_assert_int_eq(send_all(c, body, 20 * MIB), 0);
    a = read_answer(c, 10000);
    ck_assert_msg(a.status == 503 && a.retry_after >= 1, "no 100-continue: %d %s", a.status,
                  a.body);
    ck_assert_int_lt(metric(s.port, "resattn_memory_in_use_bytes "), base + (long long)MIB);
    const char *get = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    ck_assert_int_eq(send_all(c, get, strlen(get)), 0);
    a = read_answer(c, 10000);
    ck_assert_int_eq(a.status, 200);
    close(c);
    /* the holder finishes and is answered */
    ck_assert_int_eq(send_all(holder, body + 6 * MIB, 6 * MIB), 0);
    a = read_answer(holder, 30000);
    ck_assert_msg(a.status == 200, "holder: %d %s", a.status, a.body);
    close(holder);
    /* alone, a chunked body that outgrows what one request may hold: 413 */
    c = chunked_upload(s.port);
    for (sent = 0; sent < 17 * (size_t)MIB; sent += (size_t)MIB)
        send_chunk(c, body + sent, (size_t)MIB);
    ck_assert_int_eq(send_all(c, "0\r\n\r\n", 5), 0);
    a = read_answer(c, 10000);
    ck_assert_msg(a.status == 413 && strstr(a.body, "memory budget"), "%d %s", a.status, a.body);
    close(c);
    ck_assert_int_eq(metric(s.port, "resattn_requests_rejected_total{reason=\"memory\"} "), 4);
    /* and a chunked upload that fits is served */
    c = chunked_upload(s.port);
    send_chunk(c, body, 2 * (size_t)MIB);
    ck_assert_int_eq(send_all(c, "0\r\n\r\n", 5), 0);
    a = read_answer(c, 10000);
    ck_assert_msg(a.status == 200, "chunked within the budget: %d %s", a.status, a.body);
    close(c);
    ck_assert_int_eq(settle_in_use(s.port), 0);
    ck_assert_int_eq(metric(s.port, "resattn_memory_budget_bytes "), budget);
    free(body);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

/* --max-image-pixels bounds the decoding on the HTTP thread (part of the fixed reserve). */
START_TEST(test_image_pixel_limit) {
    const char *args[] = {"--max-image-pixels", "783", NULL};
    uh_server s;
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    size_t len = 0;
    unsigned char *png = padded_png(4096, &len); /* 28 x 28 = 784 pixels */
    const char *h[] = {"Content-Type: image/png", NULL};
    uh_response r;
    uh_request(s.port, "POST", "/predict", h, png, len, &r);
    ck_assert_msg(r.status == 413 && strstr((char *)r.body, "783"), "%ld %s", r.status,
                  r.body ? (char *)r.body : "");
    uh_response_release(&r);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    const char *args2[] = {"--max-image-pixels", "784", NULL};
    ck_assert_msg(uh_server_start(&s, args2) == 0, "server did not start (log %s)", s.log);
    small_predict_ok(s.port, png, len);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    free(png);
}
END_TEST

Suite *memory_suite(void) {
    Suite *s = suite_create("memory");
    TCase *tc = tcase_create("budget");
    tcase_add_test(tc, test_budget_admission);
    tcase_add_test(tc, test_budget_threads);
    tcase_add_test(tc, test_estimate_covers_answers);
    tcase_add_test(tc, test_metrics_gauges);
    suite_add_tcase(s, tc);
    TCase *srv = tcase_create("server");
    tcase_set_timeout(srv, 180);
    tcase_add_test(srv, test_upload_flood);
    tcase_add_test(srv, test_upload_flood_unbudgeted);
    tcase_add_test(srv, test_chunked_charged);
    tcase_add_test(srv, test_image_pixel_limit);
    suite_add_tcase(s, srv);
    return s;
}
