/*
 * Latency during a model swap against latency without one, under the same load (run by
 * tests/bench/bench_swap.sh):
 *
 *     bench_swap PORT SERVER_PID REPO MODEL_FILE BODY_FILE HEADER_LEN [ROUNDS] [CONNS]
 *
 * CONNS keep-alive connections (libcurl, one thread each) post BODY_FILE (a v2 binary-extension
 * request of HEADER_LEN JSON bytes) to /v2/models/m/infer without pause and record each
 * request's start, latency, status and model_version. Each round: a new version folder is
 * prepared under a hidden name (a copy of MODEL_FILE), then renamed to REPO/m/<n> and the
 * server gets SIGHUP (time t_s). The swap window runs from t_s until 0.5 s after the first
 * answer from the new version (load, warm-up, swap, the old version draining and being freed);
 * the control window is the same length just before t_s. Requests are put in a window by
 * their start time. Prints a Markdown table: p50/p99 of the control windows and of the swap
 * windows (all rounds pooled), the median over rounds of the per-round p99 ratio, and the
 * non-200 count.
 */
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 4000000

typedef struct event {
    double start, latency;
    int status, version;
} event;

static event *events;
static atomic_long num_events;
static atomic_int stop, newest_seen;
static double t_base;
static const char *body_data;
static size_t body_len;
static char hlen_header[64];
static int port;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9 - t_base;
}

typedef struct answer {
    char buf[512]; /* the start of the answer: model_version is in its JSON header */
    size_t len;
} answer;

static size_t on_data(char *p, size_t size, size_t n, void *user) {
    answer *a = user;
    size_t k = size * n, room = sizeof a->buf - 1 - a->len;
    memcpy(a->buf + a->len, p, k < room ? k : room);
    a->len += k < room ? k : room;
    a->buf[a->len] = 0;
    return k;
}

static void *client(void *arg) {
    (void)arg;
    CURL *c = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v2/models/m/infer", port);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/octet-stream");
    h = curl_slist_append(h, hlen_header);
    h = curl_slist_append(h, "Expect:");
    answer a;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body_data);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
    while (!atomic_load(&stop)) {
        a.len = 0;
        a.buf[0] = 0;
        double t0 = now_s();
        long status = 0;
        if (curl_easy_perform(c) == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        double t1 = now_s();
        const char *mv = strstr(a.buf, "\"model_version\":\"");
        int v = mv ? atoi(mv + 17) : -1;
        if (v > atomic_load(&newest_seen))
            atomic_store(&newest_seen, v);
        long i = atomic_fetch_add(&num_events, 1);
        if (i < MAX_EVENTS)
            events[i] = (event){t0, t1 - t0, (int)status, v};
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

static void sleep_s(double s) {
    nanosleep(&(struct timespec){(time_t)s, (long)((s - (time_t)s) * 1e9)}, NULL);
}

static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    char buf[1 << 16];
    size_t n;
    int rc = in && out ? 0 : -1;
    while (!rc && (n = fread(buf, 1, sizeof buf, in)) > 0)
        rc = fwrite(buf, 1, n, out) == n ? 0 : -1;
    if (in)
        fclose(in);
    if (out && fclose(out))
        rc = -1;
    return rc;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Quantile q of v[0..n) (sorted in place); NAN when empty. */
static double quantile(double *v, long n, double q) {
    if (n == 0)
        return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    long i = (long)ceil(q * (double)n) - 1;
    return v[i < 0 ? 0 : i];
}

typedef struct window {
    double from, to;
} window;

/* Latencies (ms) of the requests that started in any of the windows; *bad: non-200 there. */
static double *collect(const window *w, int nw, long n, long *count, long *bad) {
    double *lat = malloc(sizeof(double) * (size_t)(n ? n : 1));
    *count = *bad = 0;
    for (long i = 0; i < n; i++)
        for (int k = 0; k < nw; k++)
            if (events[i].start >= w[k].from && events[i].start < w[k].to) {
                if (events[i].status != 200)
                    (*bad)++;
                lat[(*count)++] = events[i].latency * 1e3;
                break;
            }
    return lat;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: bench_swap PORT PID REPO MODEL BODY HEADER_LEN [ROUNDS] [CONNS]\n");
        return 2;
    }
    port = atoi(argv[1]);
    pid_t pid = (pid_t)atoi(argv[2]);
    const char *repo = argv[3], *model = argv[4];
    int rounds = argc > 7 ? atoi(argv[7]) : 8, conns = argc > 8 ? atoi(argv[8]) : 8;
    snprintf(hlen_header, sizeof hlen_header, "Inference-Header-Content-Length: %s", argv[6]);
    FILE *bf = fopen(argv[5], "rb");
    static char body[1 << 22];
    body_len = bf ? fread(body, 1, sizeof body, bf) : 0;
    if (bf)
        fclose(bf);
    body_data = body;
    events = malloc(sizeof(event) * MAX_EVENTS);
    if (!body_len || !events)
        return 1;
    /* new versions are copied in advance, under hidden names: the copy is no part of a swap */
    for (int r = 0; r < rounds; r++) {
        char dir[1024], file[1100];
        snprintf(dir, sizeof dir, "%s/m/.v%d", repo, r + 2);
        mkdir(dir, 0755);
        snprintf(file, sizeof file, "%s/model.safetensors", dir);
        if (copy_file(model, file))
            return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t_base = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    pthread_t t[64];
    conns = conns < 1 ? 1 : conns > 64 ? 64 : conns;
    for (int i = 0; i < conns; i++)
        pthread_create(&t[i], NULL, client, NULL);
    sleep_s(3); /* warm: connections open, batches steady */
    window sw[64], cw[64];
    rounds = rounds > 64 ? 64 : rounds;
    for (int r = 0; r < rounds; r++) {
        sleep_s(2.5);
        int v = r + 2;
        char from[1024], to[1024];
        snprintf(from, sizeof from, "%s/m/.v%d", repo, v);
        snprintf(to, sizeof to, "%s/m/%d", repo, v);
        double ts_swap = now_s();
        if (rename(from, to) || kill(pid, SIGHUP))
            return 1;
        while (atomic_load(&newest_seen) < v && now_s() - ts_swap < 60)
            sleep_s(0.001);
        double t_new = now_s();
        sleep_s(0.5);
        double len = t_new + 0.5 - ts_swap;
        sw[r] = (window){ts_swap, ts_swap + len};
        cw[r] = (window){ts_swap - len, ts_swap};
        fprintf(stderr, "round %d: version %d served %.0f ms after SIGHUP\n", r + 1, v,
                (t_new - ts_swap) * 1e3);
        sleep_s(1.0);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < conns; i++)
        pthread_join(t[i], NULL);
    long n = atomic_load(&num_events);
    n = n < MAX_EVENTS ? n : MAX_EVENTS;
    long cn, cbad, sn, sbad;
    double *cl = collect(cw, rounds, n, &cn, &cbad), *sl = collect(sw, rounds, n, &sn, &sbad);
    double ratios[64];
    for (int r = 0; r < rounds; r++) {
        long a, ab, b, bb;
        double *x = collect(&cw[r], 1, n, &a, &ab), *y = collect(&sw[r], 1, n, &b, &bb);
        ratios[r] = quantile(y, b, 0.99) / quantile(x, a, 0.99);
        free(x);
        free(y);
    }
    double c50 = quantile(cl, cn, 0.5), c99 = quantile(cl, cn, 0.99);
    double s50 = quantile(sl, sn, 0.5), s99 = quantile(sl, sn, 0.99);
    double w = 0, median = quantile(ratios, rounds, 0.5); /* sorts ratios */
    for (int r = 0; r < rounds; r++)
        w += sw[r].to - sw[r].from;
    printf("| windows | requests | requests/s | p50 ms | p99 ms | non-200 |\n");
    printf("|---|---:|---:|---:|---:|---:|\n");
    printf("| before each swap (control) | %ld | %.0f | %.2f | %.2f | %ld |\n", cn, cn / w, c50,
           c99, cbad);
    printf("| during each swap | %ld | %.0f | %.2f | %.2f | %ld |\n", sn, sn / w, s50, s99, sbad);
    printf("\np99 during / before, all rounds pooled: **%.2f**; median of the %d per-round "
           "ratios: **%.2f** (min %.2f, max %.2f); mean window %.2f s.\n",
           s99 / c99, rounds, median, ratios[0], ratios[rounds - 1], w / rounds);
    free(cl);
    free(sl);
    free(events);
    curl_global_cleanup();
    return cbad + sbad ? 3 : 0;
}
