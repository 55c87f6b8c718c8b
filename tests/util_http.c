/*
 * Test helper (see util_http.h): fork/exec of `resattn serve --port 0 --port-file ...`, a
 * readiness wait, and libcurl requests that keep the headers the tests look at.
 */
#include "util_http.h"
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

struct uh_client {
    CURL *curl;
    int port;
};

static const char *https_ca;             /* uh_set_https */
static const char *const *ready_headers; /* uh_set_ready_headers */

void uh_set_https(const char *ca_file) {
    https_ca = ca_file;
}

void uh_set_ready_headers(const char *const *headers) {
    ready_headers = headers;
}

const char *uh_binary(void) {
    const char *b = getenv("RESATTN_BIN");
    return b && *b ? b : "build/resattn";
}

static void sleep_ms(int ms) {
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL);
}

static int read_port(const char *path) {
    FILE *f = fopen(path, "r");
    int port = 0;
    if (f) {
        if (fscanf(f, "%d", &port) != 1)
            port = 0;
        fclose(f);
    }
    return port;
}

int uh_server_start(uh_server *s, const char *const *args) {
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/resattn-test-XXXXXX");
    if (!mkdtemp(s->dir))
        return -1;
    snprintf(s->log, sizeof s->log, "%s/server.log", s->dir);
    char port_file[128];
    snprintf(port_file, sizeof port_file, "%s/port", s->dir);
    /* RESATTN_TEST_WRAPPER (e.g. "valgrind --error-exitcode=99 ...", set by `make valgrind`)
     * is split on spaces and put in front of the server command line. */
    const char *argv[96];
    int n = 0;
    char wrap[512] = "";
    const char *w = getenv("RESATTN_TEST_WRAPPER");
    if (w && *w) {
        snprintf(wrap, sizeof wrap, "%s", w);
        char *save = NULL;
        for (char *t = strtok_r(wrap, " ", &save); t && n < 24; t = strtok_r(NULL, " ", &save))
            argv[n++] = t;
    }
    const char *base[8] = {uh_binary(), "serve", "--host",      "127.0.0.1",
                           "--port",    "0",     "--port-file", port_file};
    for (int i = 0; i < 8; i++)
        argv[n++] = base[i];
    for (int i = 0; args && args[i] && n < 95; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    s->pid = fork();
    if (s->pid < 0)
        return -1;
    if (s->pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < (wrap[0] ? 1800 : 600); i++) { /* 60 s (180 s wrapped): slow starts */
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return -1;
        }
        if (!s->port)
            s->port = read_port(port_file);
        if (s->port) {
            uh_response r;
            uh_request(s->port, "GET", "/readyz", ready_headers, NULL, 0, &r);
            long status = r.status;
            uh_response_release(&r);
            if (status == 200)
                return 0;
        }
        sleep_ms(100);
    }
    return -1;
}

int uh_server_stop(uh_server *s, int sig, int timeout_ms) {
    int status = -1;
    if (s->pid > 0) {
        const char *w = getenv("RESATTN_TEST_WRAPPER");
        if (w && *w) /* valgrind: exit and leak check take far longer */
            timeout_ms *= 10;
        kill(s->pid, sig);
        int st = 0, done = 0;
        for (int t = 0; t < timeout_ms && !done; t += 10) {
            if (waitpid(s->pid, &st, WNOHANG) == s->pid)
                done = 1;
            else
                sleep_ms(10);
        }
        if (!done) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
        } else if (WIFEXITED(st)) {
            status = WEXITSTATUS(st);
        }
        s->pid = 0;
    }
    if (s->dir[0]) {
        char cmd[160];
        if (getenv("UH_KEEP_LOGS")) {
            fprintf(stderr, "server log kept in %s\n", s->log);
        } else {
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
            if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", s->dir);
        }
    }
    return status;
}

typedef struct sink {
    uh_response *r;
    size_t cap;
} sink;

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg) {
    sink *k = arg;
    size_t n = size * nmemb;
    if (k->r->len + n + 1 > k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 4096;
        while (cap < k->r->len + n + 1)
            cap *= 2;
        unsigned char *b = realloc(k->r->body, cap);
        if (!b)
            return 0;
        k->r->body = b;
        k->cap = cap;
    }
    memcpy(k->r->body + k->r->len, data, n);
    k->r->len += n;
    k->r->body[k->r->len] = 0; /* text bodies can be used as strings */
    return n;
}

static void copy_value(char *dst, size_t cap, const char *v, size_t n) {
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    while (n && *v == ' ') {
        v++;
        n--;
    }
    snprintf(dst, cap, "%.*s", (int)n, v);
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg) {
    uh_response *r = arg;
    size_t n = size * nmemb;
    const char *colon = memchr(data, ':', n);
    if (!colon)
        return n;
    size_t klen = (size_t)(colon - data), vlen = n - klen - 1;
    const char *v = colon + 1;
#define HDR(name, field)                                                                           \
    if (klen == strlen(name) && !strncasecmp(data, name, klen))                                    \
        copy_value(r->field, sizeof r->field, v, vlen);
    HDR("Content-Type", content_type)
    HDR("X-Request-Id", request_id)
    HDR("Retry-After", retry_after)
    HDR("Allow", allow)
    HDR("Connection", connection)
    HDR("WWW-Authenticate", www_authenticate)
#undef HDR
    if (klen == 14 && !strncasecmp(data, "Content-Length", klen)) {
        char tmp[32];
        copy_value(tmp, sizeof tmp, v, vlen);
        r->content_length = atoll(tmp);
    }
    if (klen == 31 && !strncasecmp(data, "Inference-Header-Content-Length", klen)) {
        char tmp[32];
        copy_value(tmp, sizeof tmp, v, vlen);
        r->header_len = atoll(tmp);
    }
    return n;
}

uh_client *uh_client_new(int port) {
    uh_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->curl = curl_easy_init();
    c->port = port;
    if (!c->curl) {
        free(c);
        return NULL;
    }
    return c;
}

void uh_client_free(uh_client *c) {
    if (!c)
        return;
    curl_easy_cleanup(c->curl);
    free(c);
}

int uh_client_request(uh_client *c, const char *method, const char *path,
                      const char *const *headers, const void *body, size_t len, uh_response *out) {
    memset(out, 0, sizeof *out);
    out->header_len = -1;
    out->content_length = -1;
    char url[512];
    snprintf(url, sizeof url, "%s://127.0.0.1:%d%s", https_ca ? "https" : "http", c->port, path);
    CURL *h = c->curl;
    sink k = {out, 0};
    struct curl_slist *hl = curl_slist_append(NULL, "Expect:"); /* no 100-continue round trip */
    for (int i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &k);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
    if (https_ca)
        curl_easy_setopt(h, CURLOPT_CAINFO, https_ca);
    if (!strcmp(method, "HEAD")) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else {
        if (body || strcmp(method, "GET")) {
            curl_easy_setopt(h, CURLOPT_POST, 1L);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        }
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hl);
    out->curl_error = (int)rc;
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    return rc == CURLE_OK ? 0 : -1;
}

int uh_request(int port, const char *method, const char *path, const char *const *headers,
               const void *body, size_t len, uh_response *out) {
    uh_client *c = uh_client_new(port);
    if (!c) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    int rc = uh_client_request(c, method, path, headers, body, len, out);
    uh_client_free(c);
    return rc;
}

void uh_response_release(uh_response *r) {
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

/* ---- metrics and time ------------------------------------------------------------------ */

double uh_metric(const char *text, const char *prefix) {
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, prefix, n))
            return strtod(p + n, NULL);
    return -1;
}

int uh_promtool_ok(const char *text, size_t len, char *out, size_t out_len) {
    char path[] = "/tmp/resattn-metrics-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
        snprintf(out, out_len, "cannot write %s", path);
        if (fd >= 0) {
            close(fd);
            unlink(path);
        }
        return 0;
    }
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(out, out_len, "cannot run promtool");
        unlink(path);
        return 0;
    }
    size_t n = fread(out, 1, out_len - 1, p);
    out[n] = 0;
    int st = pclose(p);
    unlink(path);
    return st == 0;
}

long uh_wait_status(uh_client *c, int port, const char *path, long want, int timeout_ms) {
    double until = uh_now_s() + timeout_ms / 1e3;
    for (;;) {
        uh_response r;
        if (c)
            uh_client_request(c, "GET", path, NULL, NULL, 0, &r);
        else
            uh_request(port, "GET", path, NULL, NULL, 0, &r);
        long status = r.status;
        uh_response_release(&r);
        if (status == want || status == 0 || uh_now_s() > until)
            return status;
        uh_sleep_ms(10);
    }
}

double uh_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void uh_sleep_ms(int ms) {
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL);
}
