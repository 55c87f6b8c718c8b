/*
 * The bad-input corpus (tests/badinput/NAME.req) replayed against a live `resattn serve`. Each
 * file is one request: a first line "<expected status> <METHOD> <path>", header lines, a
 * blank line, then the body bytes to the end of the file. Every case must get exactly its
 * status and a JSON body {"error": "<message>"}; a huge header (made here, not stored) must
 * get 431. Afterwards the server must still answer a good inference, and /metrics must show
 * every refusal counted (resattn_http_errors_total per code, resattn_http_requests_total,
 * resattn_requests_rejected_total). NaN input is refused by default and accepted with
 * --allow-nonfinite.
 */
#include "util_http.h"
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FIXTURE "tests/fixtures/basic_cifar_se.safetensors"
#define CORPUS "tests/badinput"
#define MAX_CASES 128
#define MAX_HEADERS 16

typedef struct bad_case {
    char name[256];
    long status;
    char method[16], path[256];
    char *headers[MAX_HEADERS + 1]; /* NULL-terminated */
    unsigned char *body;
    size_t len;
    unsigned char *file; /* the whole file, owned */
} bad_case;

static int by_name(const void *a, const void *b) {
    return strcmp(((const bad_case *)a)->name, ((const bad_case *)b)->name);
}

/* Split one .req file into its parts (pointers into c->file). */
static void parse_case(bad_case *c, const char *path) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    c->file = malloc((size_t)n + 1);
    ck_assert(fread(c->file, 1, (size_t)n, f) == (size_t)n);
    c->file[n] = 0;
    fclose(f);
    char *p = (char *)c->file, *nl = strchr(p, '\n');
    ck_assert_msg(nl, "%s: no first line", path);
    *nl = 0;
    ck_assert_msg(sscanf(p, "%ld %15s %255s", &c->status, c->method, c->path) == 3,
                  "%s: first line '%s' is not '<status> <METHOD> <path>'", path, p);
    int h = 0;
    for (p = nl + 1; *p && *p != '\n';) {
        nl = strchr(p, '\n');
        ck_assert_msg(nl && h < MAX_HEADERS, "%s: bad header block", path);
        *nl = 0;
        c->headers[h++] = p;
        p = nl + 1;
    }
    ck_assert_msg(*p == '\n', "%s: no blank line before the body", path);
    c->headers[h] = NULL;
    c->body = (unsigned char *)p + 1;
    c->len = (size_t)n - (size_t)(c->body - c->file);
}

static int load_corpus(bad_case *cases) {
    DIR *d = opendir(CORPUS);
    ck_assert_msg(d, "cannot open " CORPUS);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".req"))
            continue;
        ck_assert(n < MAX_CASES);
        char path[300];
        snprintf(path, sizeof path, CORPUS "/%s", e->d_name);
        snprintf(cases[n].name, sizeof cases[n].name, "%s", e->d_name);
        parse_case(&cases[n], path);
        n++;
    }
    closedir(d);
    qsort(cases, (size_t)n, sizeof *cases, by_name);
    return n;
}

/* Sum of the samples whose line starts with prefix (a metric name with a label prefix). */
static long long metric_sum(const char *text, const char *prefix) {
    long long sum = 0;
    size_t pl = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, prefix, pl)) {
            const char *sp = strchr(p, ' ');
            if (sp && (!strchr(p, '\n') || sp < strchr(p, '\n')))
                sum += atoll(sp + 1);
        }
    return sum;
}

static char *get_metrics(int port) {
    uh_response r;
    uh_request(port, "GET", "/metrics", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 200);
    return (char *)r.body; /* NUL-terminated by util_http */
}

static char *good_body(const char *first) {
    char *b = malloc(4096);
    int len =
        snprintf(b, 4096,
                 "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,9,11],\"datatype\":\"FP32\","
                 "\"data\":[%s",
                 first);
    for (int i = 1; i < 99; i++)
        len += snprintf(b + len, 4096 - (size_t)len, ",%.2f", (i % 7) / 7.0);
    snprintf(b + len, 4096 - (size_t)len, "]}]}");
    return b;
}

static const char *JSON_CT[] = {"Content-Type: application/json", NULL};

START_TEST(test_corpus) {
    static bad_case cases[MAX_CASES];
    int n = load_corpus(cases);
    ck_assert_msg(n >= 20, "only %d cases in " CORPUS, n);
    const char *args[] = {"--model", FIXTURE, "--max-body-bytes", "65536", NULL};
    uh_server s;
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    long per_code[600] = {0};
    for (int i = 0; i < n; i++) {
        bad_case *c = &cases[i];
        uh_response r;
        uh_request(s.port, c->method, c->path, (const char *const *)c->headers,
                   strcmp(c->method, "GET") ? c->body : NULL, c->len, &r);
        ck_assert_msg(r.status == c->status, "%s: status %ld, want %ld (%s)", c->name, r.status,
                      c->status, r.body ? (char *)r.body : "");
        json_error_t je;
        json_t *o = json_loadb((const char *)r.body, r.len, 0, &je);
        ck_assert_msg(o && json_is_string(json_object_get(o, "error")) &&
                          json_string_length(json_object_get(o, "error")) > 0,
                      "%s: body is not {\"error\": \"...\"}: %s", c->name,
                      r.body ? (char *)r.body : "");
        ck_assert_msg(!strncmp(r.content_type, "application/json", 16), "%s: Content-Type %s",
                      c->name, r.content_type);
        json_decref(o);
        uh_response_release(&r);
        per_code[c->status]++;
    }
    /* huge headers: libmicrohttpd answers 431 itself (its own HTML body, not counted by us) */
    size_t big = 200000;
    char *hdr = malloc(big + 16);
    memcpy(hdr, "X-Big: ", 7);
    memset(hdr + 7, 'a', big);
    hdr[7 + big] = 0;
    const char *big_headers[] = {hdr, NULL};
    uh_response r;
    uh_request(s.port, "GET", "/healthz", big_headers, NULL, 0, &r);
    ck_assert_msg(r.status == 431, "huge header: status %ld, want 431", r.status);
    uh_response_release(&r);
    free(hdr);
    /* still serving */
    char *body = good_body("0.5");
    uh_request(s.port, "POST", "/v2/models/basic_cifar_se/infer", JSON_CT, body, strlen(body), &r);
    ck_assert_msg(r.status == 200, "good request after the corpus: %ld %s", r.status,
                  r.body ? (char *)r.body : "");
    ck_assert(strstr((char *)r.body, "\"outputs\""));
    uh_response_release(&r);
    free(body);
    /* every refusal counted; the request counter catches up once the last one completed */
    char *m = NULL;
    long long errors4xx = 0;
    for (int t = 0; t < 50; t++) {
        free(m);
        m = get_metrics(s.port);
        long long req4xx = 0;
        for (int code = 400; code < 500; code++) {
            char prefix[96];
            snprintf(prefix, sizeof prefix, "resattn_http_errors_total{code=\"%d\"} ", code);
            ck_assert_msg(metric_sum(m, prefix) == per_code[code],
                          "resattn_http_errors_total{code=\"%d\"} is %lld, want %ld", code,
                          metric_sum(m, prefix), per_code[code]);
            errors4xx += per_code[code];
            for (const char *p = m; (p = strstr(p, "resattn_http_requests_total{")); p++) {
                char want[32];
                snprintf(want, sizeof want, "code=\"%d\"} ", code);
                const char *e = strchr(p, '\n');
                const char *q = strstr(p, want);
                if (q && (!e || q < e))
                    req4xx += atoll(q + strlen(want));
            }
        }
        if (req4xx == errors4xx)
            break;
        ck_assert_msg(t < 49, "resattn_http_requests_total 4xx is %lld, want %lld", req4xx,
                      errors4xx);
        errors4xx = 0;
        nanosleep(&(struct timespec){0, 50000000L}, NULL);
    }
    ck_assert_int_eq(errors4xx, n);
    ck_assert_int_eq(metric_sum(m, "resattn_requests_rejected_total{reason=\"body_too_large\"} "),
                     1);
    free(m);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    for (int i = 0; i < n; i++)
        free(cases[i].file);
}
END_TEST

START_TEST(test_allow_nonfinite) {
    const char *args[] = {"--model", FIXTURE, "--allow-nonfinite", NULL};
    uh_server s;
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    char *body = good_body("NaN");
    uh_response r;
    uh_request(s.port, "POST", "/v2/models/basic_cifar_se/infer", JSON_CT, body, strlen(body), &r);
    ck_assert_msg(r.status == 200, "NaN with --allow-nonfinite: %ld %s", r.status,
                  r.body ? (char *)r.body : "");
    uh_response_release(&r);
    free(body);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

Suite *badinput_suite(void) {
    Suite *s = suite_create("badinput");
    TCase *tc = tcase_create("badinput");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_corpus);
    tcase_add_test(tc, test_allow_nonfinite);
    suite_add_tcase(s, tc);
    return s;
}
