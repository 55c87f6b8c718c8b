/*
 * Test helper: run `resattn serve` as a child process on a free loopback port and talk to it
 * with a real HTTP client (libcurl). The binary is $RESATTN_BIN (set by `make unit`), else
 * build/resattn.
 */
#ifndef RESATTN_TEST_UTIL_HTTP_H
#define RESATTN_TEST_UTIL_HTTP_H

#include <stddef.h>
#include <sys/types.h>

typedef struct uh_server {
    pid_t pid;
    int port;
    char dir[64];  /* private temporary directory (port file, log) */
    char log[128]; /* the server's stdout + stderr */
} uh_server;

/* Start the server with extra arguments (NULL-terminated; --host/--port/--port-file are
 * added) and wait until /readyz answers 200. 0 on success. */
int uh_server_start(uh_server *s, const char *const *args);
/* Send sig, wait up to timeout_ms for exit; the exit status, or -1 if it had to be killed
 * or died by a signal. Removes the temporary directory. */
int uh_server_stop(uh_server *s, int sig, int timeout_ms);
/* The path of the resattn binary under test. */
const char *uh_binary(void);

typedef struct uh_response {
    long status;    /* 0 when the transfer failed */
    int curl_error; /* CURLcode */
    unsigned char *body;
    size_t len;
    char content_type[128];
    char request_id[96];
    char retry_after[16];
    char allow[64];
    char connection[32];
    char www_authenticate[64];
    long long header_len;     /* Inference-Header-Content-Length, -1 when absent */
    long long content_length; /* Content-Length, -1 when absent */
} uh_response;

typedef struct uh_client uh_client; /* one keep-alive connection (a curl easy handle) */

uh_client *uh_client_new(int port);
void uh_client_free(uh_client *c);
/* headers: NULL-terminated "Name: value" strings, or NULL. body may be NULL for GET. HEAD is
 * sent as a real HEAD request (libcurl's CURLOPT_NOBODY: no body is expected or read). */
int uh_client_request(uh_client *c, const char *method, const char *path,
                      const char *const *headers, const void *body, size_t len, uh_response *out);
/* One request on a fresh client. */
int uh_request(int port, const char *method, const char *path, const char *const *headers,
               const void *body, size_t len, uh_response *out);
void uh_response_release(uh_response *r);
/* GET path every 10 ms until it answers want, or answers nothing (0: the connection or the
 * server is gone), for up to timeout_ms; on c's kept-alive connection, or fresh ones when c
 * is NULL. Returns the last status. */
long uh_wait_status(uh_client *c, int port, const char *path, long want, int timeout_ms);

/* Process-wide client settings (tests fork, so each test sets its own): ca_file != NULL makes
 * every request https:// with that CA bundle (NULL: back to http); headers (NULL-terminated,
 * kept by reference) go with the readiness probe of uh_server_start, e.g. an API key. */
void uh_set_https(const char *ca_file);
void uh_set_ready_headers(const char *const *headers);

/* The value of the /metrics exposition line that starts with `prefix` (series name and
 * labels, then a space, e.g. `name{a="b"} `), or -1 when there is no such line. */
double uh_metric(const char *text, const char *prefix);
/* `promtool check metrics` on text[len]: 1 when it passes, else 0 with its output (or why it
 * could not run) in out. */
int uh_promtool_ok(const char *text, size_t len, char *out, size_t out_len);

/* Monotonic seconds, and a sleep in milliseconds, for the tests' waits. */
double uh_now_s(void);
void uh_sleep_ms(int ms);

#endif
