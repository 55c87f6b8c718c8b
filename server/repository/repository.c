/*
 * The model repository (see repository.h). Three kinds of records:
 *   rmodel  one model name (fixed, or a folder of DIR): its config, its versions, the
 *           version unversioned requests use (`serving`) and its load counts;
 *   vrec    one version the repository knows: state, failure reason, the file last tried,
 *           and while it is routed to, its loaded handle;
 *   resattn_model_version  a loaded version (weights, pool handle, statistics), reference counted:
 *           the vrec holds one reference while it is routed to, each request one more.
 * Only the manager thread changes records; it does so under `mu`, which the request threads
 * take for the few instructions of an acquire and the views take to copy what they show.
 * Loading (reading, parsing, packing, warm-up) runs on the manager thread without the lock.
 * A release that drops the last reference queues the version on `retired`; the manager frees
 * it, so a request thread never pays for freeing a model.
 */
#include "repository/repository.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NAME_MAX_LEN 128
#define REASON_LEN 400
#define MAX_SPECIFIC 64
#define CONFIG_MAX_BYTES 65536
#define MODEL_FILE "model.safetensors"
#define CONFIG_FILE "config.json"

/* What identifies one state of a file: a rewrite, rename or chmod changes it. */
typedef struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    long long mtime_ns, ctime_ns;
} file_id;

typedef enum policy_kind { POLICY_LATEST = 0, POLICY_ALL, POLICY_SPECIFIC } policy_kind;

typedef struct model_config {
    policy_kind policy;
    int latest;
    long long specific[MAX_SPECIFIC];
    int num_specific;
    int max_batch;    /* 0 = the server's */
    int max_delay_ms; /* -1 = the server's */
    int precision;    /* resattn_precision, or -1 = the server's (--precision) */
} model_config;

typedef struct vrec vrec;
typedef struct rmodel rmodel;

struct resattn_model_version {
    atomic_int refs;
    resattn_repository *repo;
    rmodel *owner;
    vrec *rec; /* NULL for a fixed model */
    long long number;
    char label[24];
    const resattn_model *model;
    resattn_pool_model *pm;
    resattn_model *owned_model; /* freed with the version (NULL for a fixed model) */
    resattn_pool_model *owned_pm;
    resattn_model_version *next_retired;
};

struct vrec {
    long long number;
    resattn_version_state state;
    char reason[REASON_LEN];       /* why the last load failed, or "" */
    int failed;                    /* the last attempt, on file `tried`, failed */
    file_id tried, loaded;         /* the file of the last attempt / of `handle` */
    int cfg_batch, cfg_delay;      /* the model config's batching when `handle` was loaded */
    int cfg_precision;             /* and its precision */
    resattn_model_version *handle; /* routed to; the repository's reference */
    int live;                      /* handles of this record not yet freed */
    int keep, tried_now;           /* marks of the manager's current pass (only it reads them) */
    vrec *next;                    /* descending number */
};

struct rmodel {
    char *name;
    int fixed;
    int wanted;              /* should be served (counts for readiness) */
    char reason[REASON_LEN]; /* a problem of the model as a whole, or "" */
    model_config cfg;
    int have_cfg_id;
    file_id cfg_id; /* config.json as last read (have_cfg_id: it existed) */
    int cfg_failed;
    vrec *versions;
    resattn_model_version *serving;
    unsigned long long loads_ok, loads_failed;
    int metrics_index; /* its per-model metrics series, or -1 (none yet) */
    unsigned scan_gen; /* the last scan of DIR that saw its folder */
    rmodel *next;
};

typedef struct op {
    resattn_repository_op kind;
    char *name;
    resattn_repository_done_fn done;
    void *user;
    struct op *next;
} op;

struct resattn_repository {
    resattn_repository_options opt;
    char *root_arg; /* opt.root as given, or NULL (no repository) */
    char *root;     /* its real path at the last scan: [PATH_MAX], written under mu by the
                     * manager (a root that is a symlink may be swapped to a new tree) */
    char **load_models;
    int num_load_models;
    resattn_pool *pool;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rmodel *models, **models_tail;
    op *ops, **ops_tail;
    resattn_model_version *retired;
    int stop, started;
    pthread_t thread;
    double next_poll;
    unsigned scan_gen;
};

/* ---- small helpers ----------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void say(resattn_repository *r, const char *level, const char *fmt, ...) {
    if (!r->opt.log)
        return;
    char msg[REASON_LEN + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->opt.log(r->opt.log_user, level, msg);
}

int resattn_control_mode_parse(const char *s, resattn_control_mode *mode) {
    static const char *names[] = {"none", "poll", "explicit"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, names[i])) {
            *mode = (resattn_control_mode)i;
            return 0;
        }
    return -1;
}

const char *resattn_control_mode_name(resattn_control_mode mode) {
    return mode == RESATTN_CONTROL_POLL       ? "poll"
           : mode == RESATTN_CONTROL_EXPLICIT ? "explicit"
                                              : "none";
}

const char *resattn_version_state_name(resattn_version_state s) {
    static const char *names[] = {"LOADING", "AVAILABLE", "UNLOADING", "END"};
    return s >= 0 && s <= RESATTN_VERSION_END ? names[s] : "END";
}

/* Triton's names of the same states. */
static const char *triton_state(resattn_version_state s) {
    static const char *names[] = {"LOADING", "READY", "UNLOADING", "UNAVAILABLE"};
    return s >= 0 && s <= RESATTN_VERSION_END ? names[s] : "UNAVAILABLE";
}

int resattn_repository_name_check(const char *name, size_t len, char *err, size_t err_len) {
    if (len == 0) {
        snprintf(err, err_len, "a model name must not be empty");
        return -1;
    }
    if (len > NAME_MAX_LEN) {
        snprintf(err, err_len, "model name '%.32s...' is longer than %d characters", name,
                 NAME_MAX_LEN);
        return -1;
    }
    if (name[0] == '.') {
        snprintf(err, err_len,
                 "model name '%.*s' starts with '.' (hidden or relative folders are not models)",
                 (int)len, name);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '_' || c == '-')
            continue;
        const char *what = c == '/' || c == '\\' ? "a path separator"
                           : c == '%'            ? "a percent escape"
                                                 : "not allowed";
        if (c >= 0x20 && c < 0x7f)
            snprintf(err, err_len,
                     "model name '%.*s': character '%c' is %s (a model name is one folder name "
                     "of letters, digits, '.', '_' and '-')",
                     (int)(len < 64 ? len : 64), name, c, what);
        else
            snprintf(err, err_len,
                     "model name: byte 0x%02x is not allowed (a model name is one folder name of "
                     "letters, digits, '.', '_' and '-')",
                     c);
        return -1;
    }
    return 0;
}

/* A canonical positive version number ("1", "42"; not "01", "+1" or "1.0"), or -1. */
static long long parse_version(const char *s, size_t len) {
    if (len == 0 || len > 18 || s[0] == '0')
        return -1;
    long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static void id_of(const struct stat *st, file_id *id) {
    id->dev = st->st_dev;
    id->ino = st->st_ino;
    id->size = st->st_size;
    id->mtime_ns = (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
    id->ctime_ns = (long long)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
}

static int same_id(const file_id *a, const file_id *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

/*
 * The real path of DIR/rel into real (PATH_MAX bytes); 0 when it exists and lies inside
 * DIR, 1 when it does not exist, -1 (err filled) when it leads outside DIR or cannot be
 * resolved.
 */
static int resolve(const resattn_repository *r, const char *rel, char *real, char *err,
                   size_t err_len) {
    char path[PATH_MAX + 256];
    snprintf(path, sizeof path, "%s/%s", r->root, rel);
    if (!realpath(path, real)) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 1;
        snprintf(err, err_len, "%s: %s", rel, strerror(errno));
        return -1;
    }
    size_t n = strlen(r->root);
    if (strncmp(real, r->root, n) || real[n] != '/') {
        snprintf(err, err_len, "%s leads outside the model repository (to %.200s): refused", rel,
                 real);
        return -1;
    }
    return 0;
}

/*
 * Read a whole regular file at real path `real` (no symlink followed at the last step) into
 * a malloc'ed buffer; *id from the file as read. 0, or -1 with err.
 */
static int read_whole(const char *real, const char *what, size_t max, unsigned char **out,
                      size_t *len, file_id *id, char *err, size_t err_len) {
    *out = NULL;
    *len = 0;
    int fd = open(real, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_len, "%s: cannot open: %s", what, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        snprintf(err, err_len, "%s is not a regular file", what);
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    unsigned char *buf = malloc(cap);
    for (ssize_t got = 1; buf && got > 0;) {
        if (n == cap) {
            unsigned char *b = cap < max ? realloc(buf, cap * 2) : NULL;
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
        got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            got = 1;
        else if (got > 0)
            n += (size_t)got;
        else if (got < 0) {
            snprintf(err, err_len, "%s: read error: %s", what, strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
    }
    if (!buf || n > max) {
        snprintf(err, err_len, "%s: %s", what, buf ? "too large" : "out of memory or too large");
        free(buf);
        close(fd);
        return -1;
    }
    fstat(fd, &st); /* a writer may have changed it while we read: remember the newest */
    id_of(&st, id);
    close(fd);
    *out = buf;
    *len = n;
    return 0;
}

/* ---- model config.json --------------------------------------------------------------- */

static int cfg_fail(char *err, size_t err_len, const char *fmt, const char *arg) {
    char m[REASON_LEN];
    snprintf(m, sizeof m, fmt, arg);
    snprintf(err, err_len, "config.json: %.360s", m);
    return -1;
}

static int read_int(json_t *v, int lo, int hi, int *out) {
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return -1;
    *out = (int)json_integer_value(v);
    return 0;
}

/* version_policy: {"latest": N | {"num_versions": N}} | {"all": true | {}} |
 * {"specific": [..] | {"versions": [..]}} */
static int parse_policy(json_t *p, model_config *c, char *err, size_t err_len) {
    const char *key;
    json_t *v;
    if (!json_is_object(p) || json_object_size(p) != 1)
        return cfg_fail(err, err_len, "%s must be an object with one of latest, all, specific",
                        "version_policy");
    json_object_foreach(p, key, v) {
        if (!strcmp(key, "latest")) {
            c->policy = POLICY_LATEST;
            json_t *n = json_is_object(v) ? json_object_get(v, "num_versions") : v;
            if (read_int(n, 1, 1000000, &c->latest))
                return cfg_fail(err, err_len, "%s must be a positive integer",
                                "version_policy.latest");
        } else if (!strcmp(key, "all")) {
            c->policy = POLICY_ALL;
            if (!json_is_true(v) && !(json_is_object(v) && !json_object_size(v)))
                return cfg_fail(err, err_len, "%s must be true", "version_policy.all");
        } else if (!strcmp(key, "specific")) {
            c->policy = POLICY_SPECIFIC;
            json_t *a = json_is_object(v) ? json_object_get(v, "versions") : v;
            if (!json_is_array(a) || !json_array_size(a) || json_array_size(a) > MAX_SPECIFIC)
                return cfg_fail(err, err_len, "%s must list 1 to 64 version numbers",
                                "version_policy.specific");
            c->num_specific = 0;
            size_t i;
            json_t *e;
            json_array_foreach(a, i, e) {
                if (!json_is_integer(e) || json_integer_value(e) < 1)
                    return cfg_fail(err, err_len, "%s holds a value that is not a version number",
                                    "version_policy.specific");
                c->specific[c->num_specific++] = json_integer_value(e);
            }
        } else {
            return cfg_fail(err, err_len,
                            "version_policy '%.64s' is not one of latest, all, specific", key);
        }
    }
    return 0;
}

static int parse_config(const unsigned char *text, size_t len, model_config *c, char *err,
                        size_t err_len) {
    json_error_t je;
    json_t *root = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, err_len, "config.json: invalid JSON at line %d column %d: %s", je.line,
                 je.column, je.text);
        return -1;
    }
    int rc = 0;
    const char *key;
    json_t *v;
    if (!json_is_object(root))
        rc = cfg_fail(err, err_len, "%s", "must be a JSON object");
    json_object_foreach(root, key, v) {
        if (rc)
            break;
        if (!strcmp(key, "version_policy"))
            rc = parse_policy(v, c, err, err_len);
        else if (!strcmp(key, "max_batch") || !strcmp(key, "max_batch_size")) {
            if (read_int(v, 1, RESATTN_POOL_MAX_BATCH, &c->max_batch))
                rc = cfg_fail(err, err_len, "%s must be an integer in [1, 1024]", key);
        } else if (!strcmp(key, "max_delay_ms")) {
            if (read_int(v, 0, 10000, &c->max_delay_ms))
                rc = cfg_fail(err, err_len, "%s must be an integer in [0, 10000]", key);
        } else if (!strcmp(key, "precision")) {
            resattn_precision p;
            if (!json_is_string(v) || resattn_precision_parse(json_string_value(v), &p))
                rc = cfg_fail(err, err_len, "%s", "precision must be \"fp32\" or \"bf16\"");
            else
                c->precision = (int)p;
        } else if (strcmp(key, "name")) { /* "name", when given, is informative only */
            rc = cfg_fail(err, err_len,
                          "unknown key '%.64s' (known: version_policy, max_batch, max_delay_ms, "
                          "precision)",
                          key);
        }
    }
    json_decref(root);
    return rc;
}

static const model_config default_config = {POLICY_LATEST, 1, {0}, 0, 0, -1, -1};

/*
 * The model's config.json into *c (defaults when there is none). 0 when unchanged since the
 * last read, 1 when read anew, -1 with err when it cannot be used.
 */
static int load_config(resattn_repository *r, rmodel *m, model_config *c, char *err,
                       size_t err_len) {
    char rel[NAME_MAX_LEN + 32], real[PATH_MAX];
    snprintf(rel, sizeof rel, "%s/" CONFIG_FILE, m->name);
    int rc = resolve(r, rel, real, err, err_len);
    if (rc < 0)
        return -1;
    if (rc == 1) { /* no config.json: defaults */
        *c = default_config;
        int changed = m->have_cfg_id;
        m->have_cfg_id = 0;
        return changed;
    }
    unsigned char *text;
    size_t len;
    file_id id;
    if (read_whole(real, "config.json", CONFIG_MAX_BYTES, &text, &len, &id, err, err_len))
        return -1;
    int changed = !m->have_cfg_id || !same_id(&id, &m->cfg_id);
    *c = default_config;
    rc = parse_config(text, len, c, err, err_len);
    free(text);
    m->cfg_id = id;
    m->have_cfg_id = 1;
    return rc ? -1 : changed;
}

/* ---- versions: creation and release ------------------------------------------------------ */

void resattn_model_version_retain(resattn_model_version *v) {
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

void resattn_model_version_release(resattn_model_version *v) {
    if (!v || atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
        return;
    resattn_repository *r = v->repo;
    pthread_mutex_lock(&r->mu);
    v->next_retired = r->retired;
    r->retired = v;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

const char *resattn_model_version_name(const resattn_model_version *v) {
    return v->owner->name;
}

const char *resattn_model_version_label(const resattn_model_version *v) {
    return v->label;
}

long long resattn_model_version_number(const resattn_model_version *v) {
    return v->number;
}

const resattn_model *resattn_model_version_model(const resattn_model_version *v) {
    return v->model;
}

resattn_pool_model *resattn_model_version_pool_model(const resattn_model_version *v) {
    return v->pm;
}

static resattn_model_version *version_new(resattn_repository *r, rmodel *m, vrec *rec,
                                          long long number, const resattn_model *model,
                                          resattn_pool_model *pm) {
    resattn_model_version *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    atomic_init(&v->refs, 1);
    v->repo = r;
    v->owner = m;
    v->rec = rec;
    v->number = number;
    snprintf(v->label, sizeof v->label, "%lld", number);
    v->model = model;
    v->pm = pm;
    return v;
}

/* Free a version whose last reference is gone (manager thread, or teardown). */
static void version_free(resattn_repository *r, resattn_model_version *v) {
    resattn_pool_model_free(v->owned_pm);
    resattn_model_free(v->owned_model);
    if (v->rec) {
        pthread_mutex_lock(&r->mu);
        vrec *rec = v->rec;
        if (--rec->live == 0 && !rec->handle && rec->state == RESATTN_VERSION_UNLOADING)
            rec->state = RESATTN_VERSION_END;
        pthread_mutex_unlock(&r->mu);
    }
    free(v);
}

/* Read, validate, pack and warm up one version file. */
static resattn_model_version *version_load(resattn_repository *r, rmodel *m, vrec *rec,
                                           const char *real, file_id *id, char *err,
                                           size_t err_len) {
    unsigned char *buf;
    size_t len;
    if (read_whole(real, MODEL_FILE, (size_t)1 << 40, &buf, &len, id, err, err_len))
        return NULL;
    char msg[RESATTN_ERR_LEN];
    resattn_model *model = NULL;
    resattn_model_options mo = {.precision = m->cfg.precision >= 0
                                                 ? (resattn_precision)m->cfg.precision
                                                 : r->opt.precision};
    resattn_status st = resattn_model_load_buffer_opts(buf, len, &mo, &model, msg, sizeof msg);
    free(buf);
    if (st != RESATTN_OK) {
        snprintf(err, err_len, MODEL_FILE ": %s", msg);
        return NULL;
    }
    if (m->metrics_index < 0 && r->opt.metrics) /* the model's first version */
        m->metrics_index =
            resattn_metrics_register_model(r->opt.metrics, m->name, resattn_model_get_info(model));
    resattn_pool_model *pm = NULL;
    st = resattn_pool_model_new(r->pool, model, m->metrics_index, m->cfg.max_batch,
                                m->cfg.max_delay_ms, 1, &pm, msg, sizeof msg);
    resattn_model_version *v =
        st == RESATTN_OK ? version_new(r, m, rec, rec->number, model, pm) : NULL;
    if (!v) {
        snprintf(err, err_len, "warm-up: %s", st == RESATTN_OK ? "out of memory" : msg);
        resattn_pool_model_free(pm);
        resattn_model_free(model);
        return NULL;
    }
    v->owned_model = model;
    v->owned_pm = pm;
    return v;
}

/* ---- records ------------------------------------------------------------------------- */

static rmodel *find_model(resattn_repository *r, const char *name, size_t len) {
    for (rmodel *m = r->models; m; m = m->next)
        if (strlen(m->name) == len && !memcmp(m->name, name, len))
            return m;
    return NULL;
}

/* Caller holds mu. */
static rmodel *add_model(resattn_repository *r, const char *name) {
    rmodel *m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(name))) {
        free(m);
        return NULL;
    }
    m->cfg = default_config;
    m->metrics_index = -1;
    *r->models_tail = m;
    r->models_tail = &m->next;
    return m;
}

static vrec *find_rec(rmodel *m, long long number) {
    for (vrec *v = m->versions; v; v = v->next)
        if (v->number == number)
            return v;
    return NULL;
}

/* A record for `number`, kept in descending order. Caller holds mu. */
static vrec *get_rec(rmodel *m, long long number) {
    vrec **p = &m->versions;
    while (*p && (*p)->number > number)
        p = &(*p)->next;
    if (*p && (*p)->number == number)
        return *p;
    vrec *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->number = number;
    v->state = RESATTN_VERSION_END;
    v->next = *p;
    *p = v;
    return v;
}

/* ---- scanning ------------------------------------------------------------------------ */

/* A version folder with its model file. */
typedef struct disk_version {
    long long number;
} disk_version;

static int cmp_desc(const void *a, const void *b) {
    long long x = ((const disk_version *)a)->number, y = ((const disk_version *)b)->number;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The version folders of m that hold a model file, highest first (malloc'ed; *n of them).
 * -1 with err when the model's folder cannot be read. */
static int list_versions(resattn_repository *r, rmodel *m, disk_version **out, int *n, char *err,
                         size_t err_len) {
    char real[PATH_MAX];
    *out = NULL;
    *n = 0;
    int rc = resolve(r, m->name, real, err, err_len);
    if (rc) {
        if (rc == 1)
            snprintf(err, err_len, "the folder %s is gone from the repository", m->name);
        return -1;
    }
    DIR *d = opendir(real);
    if (!d) {
        snprintf(err, err_len, "%s: %s", m->name, strerror(errno));
        return -1;
    }
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long num = parse_version(e->d_name, strlen(e->d_name));
        if (num < 0)
            continue; /* not a version folder: "config.json", ".tmp", "2.partial" ... */
        char rel[NAME_MAX_LEN + 64], file[PATH_MAX], why[REASON_LEN];
        snprintf(rel, sizeof rel, "%s/%lld/" MODEL_FILE, m->name, num);
        /* a folder without its file is not a version yet; one leading outside still counts
         * (its load fails with the reason) */
        if (resolve(r, rel, file, why, sizeof why) == 1)
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            disk_version *b = realloc(*out, sizeof *b * (size_t)cap);
            if (!b)
                break;
            *out = b;
        }
        (*out)[(*n)++].number = num;
    }
    closedir(d);
    if (*n)
        qsort(*out, (size_t)*n, sizeof **out, cmp_desc);
    return 0;
}

static int in_specific(const model_config *c, long long number) {
    for (int i = 0; i < c->num_specific; i++)
        if (c->specific[i] == number)
            return 1;
    return 0;
}

/* Record a failed attempt at rec (file id, or NULL when it could not be read). */
static void note_failure(resattn_repository *r, rmodel *m, vrec *rec, const file_id *id,
                         const char *why, int log) {
    pthread_mutex_lock(&r->mu);
    rec->failed = 1;
    if (id)
        rec->tried = *id;
    else
        memset(&rec->tried, 0, sizeof rec->tried);
    snprintf(rec->reason, sizeof rec->reason, "%s", why);
    if (!rec->handle)
        rec->state = RESATTN_VERSION_END;
    m->loads_failed++;
    pthread_mutex_unlock(&r->mu);
    if (log)
        say(r, "error", "model '%s' version %lld: load failed%s: %s", m->name, rec->number,
            rec->handle ? " (the loaded copy keeps serving)" : "", why);
}

/* Load (or reload) the version of rec when needed. Returns 0 when it is loaded and current,
 * 1 when its new file failed but the copy loaded before keeps serving, -1 when it cannot
 * serve (the reason is in rec). force: retry a failure even when the file did not change. */
static int sync_version(resattn_repository *r, rmodel *m, vrec *rec, int force) {
    char rel[NAME_MAX_LEN + 64], real[PATH_MAX], why[REASON_LEN];
    snprintf(rel, sizeof rel, "%s/%lld/" MODEL_FILE, m->name, rec->number);
    int rc = resolve(r, rel, real, why, sizeof why);
    struct stat st;
    if (rc == 0 && stat(real, &st)) {
        snprintf(why, sizeof why, "%s: %s", rel, strerror(errno));
        rc = -1;
    }
    if (rc) {
        if (rc == 1)
            snprintf(why, sizeof why, "%s disappeared", rel);
        int same = rec->failed && !strcmp(rec->reason, why);
        if (!same || force)
            note_failure(r, m, rec, NULL, why, !same);
        return rec->handle ? 1 : -1;
    }
    file_id id;
    id_of(&st, &id);
    int settings_same = rec->cfg_batch == m->cfg.max_batch &&
                        rec->cfg_delay == m->cfg.max_delay_ms &&
                        rec->cfg_precision == m->cfg.precision;
    if (rec->handle && same_id(&id, &rec->loaded) && settings_same)
        return 0;
    if (rec->failed && same_id(&id, &rec->tried) && !force)
        return rec->handle ? 1 : -1; /* the same file failed before: wait for it to change */
    pthread_mutex_lock(&r->mu);
    if (!rec->handle)
        rec->state = RESATTN_VERSION_LOADING;
    pthread_mutex_unlock(&r->mu);
    double t0 = now_s();
    resattn_model_version *v = version_load(r, m, rec, real, &id, why, sizeof why);
    if (!v) {
        note_failure(r, m, rec, &id, why, 1);
        return rec->handle ? 1 : -1;
    }
    pthread_mutex_lock(&r->mu);
    resattn_model_version *old = rec->handle;
    rec->handle = v;
    rec->live++;
    rec->state = RESATTN_VERSION_AVAILABLE;
    rec->failed = 0;
    rec->reason[0] = 0;
    rec->loaded = rec->tried = id;
    rec->cfg_batch = m->cfg.max_batch;
    rec->cfg_delay = m->cfg.max_delay_ms;
    rec->cfg_precision = m->cfg.precision;
    if (m->serving == old && old)
        m->serving = v; /* a reload of the version in use: the new copy takes over at once */
    m->loads_ok++;
    pthread_mutex_unlock(&r->mu);
    const resattn_model_info *info = resattn_model_get_info(v->model);
    say(r, "info", "model '%s' version %lld: %s in %.0f ms (%d classes, input [%d, %d, %d])",
        m->name, rec->number, old ? "reloaded" : "loaded", (now_s() - t0) * 1e3, info->num_classes,
        info->in_channels, info->in_height, info->in_width);
    resattn_model_version_release(old);
    return 0;
}

/*
 * Apply the marks of a pass: versions marked `keep` stay routed (the highest serves
 * unversioned requests), the others unload; records neither kept, tried in this pass nor
 * still in use are forgotten. Dropped references are released after the lock.
 */
static void settle(resattn_repository *r, rmodel *m, const char *unload_why) {
    resattn_model_version *drop[64];
    int ndrop = 0;
    pthread_mutex_lock(&r->mu);
    resattn_model_version *serving = NULL;
    for (vrec *v = m->versions; v; v = v->next) {
        if (!v->handle)
            continue;
        if (v->keep) {
            if (!serving)
                serving = v->handle; /* versions are in descending order */
            continue;
        }
        if (ndrop == (int)(sizeof drop / sizeof drop[0]))
            continue; /* next pass */
        drop[ndrop++] = v->handle;
        v->handle = NULL;
        v->state = RESATTN_VERSION_UNLOADING;
    }
    m->serving = serving;
    for (vrec **p = &m->versions; *p;) {
        vrec *v = *p;
        if (!v->handle && !v->live && !v->keep && !v->tried_now &&
            v->state != RESATTN_VERSION_LOADING) {
            *p = v->next;
            free(v);
        } else {
            p = &v->next;
        }
    }
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < ndrop; i++) {
        say(r, "info", "model '%s' version %s: unloading (%s)", m->name, drop[i]->label,
            unload_why);
        resattn_model_version_release(drop[i]);
    }
}

static void clear_marks(rmodel *m) {
    for (vrec *v = m->versions; v; v = v->next)
        v->keep = v->tried_now = 0;
}

/* Unload every version of m. */
static void unload_all(resattn_repository *r, rmodel *m, const char *why) {
    clear_marks(m);
    settle(r, m, why);
}

static void set_model_reason(resattn_repository *r, rmodel *m, const char *why) {
    pthread_mutex_lock(&r->mu);
    snprintf(m->reason, sizeof m->reason, "%s", why ? why : "");
    pthread_mutex_unlock(&r->mu);
}

/*
 * Bring model m in line with its folder: config, versions per the policy, loads, unloads.
 * "latest N" keeps the N newest versions that load, so a newest version that fails leaves
 * the one before it serving (also at start). Returns the number of versions that failed;
 * *first_err gets the first reason. *has_versions: the folder holds at least one version.
 */
static int sync_model(resattn_repository *r, rmodel *m, int force, int *has_versions,
                      char *first_err, size_t err_len) {
    char why[REASON_LEN], real[PATH_MAX];
    *has_versions = 0;
    first_err[0] = 0;
    if (resolve(r, m->name, real, why, sizeof why) < 0) { /* a symlink leading elsewhere */
        if (strcmp(m->reason, why))
            say(r, "error", "model folder %s", why);
        set_model_reason(r, m, why);
        unload_all(r, m, why);
        snprintf(first_err, err_len, "%s", why);
        return 1;
    }
    model_config c;
    if (load_config(r, m, &c, why, sizeof why) < 0) { /* keep what is loaded, as it is */
        int again = m->cfg_failed && !strcmp(m->reason, why);
        set_model_reason(r, m, why);
        if (!again || force) {
            pthread_mutex_lock(&r->mu);
            m->loads_failed++;
            pthread_mutex_unlock(&r->mu);
            say(r, "error", "model '%s': %s", m->name, why);
        }
        m->cfg_failed = 1;
        snprintf(first_err, err_len, "%s", why);
        disk_version *dv;
        int n;
        if (list_versions(r, m, &dv, &n, why, sizeof why) == 0)
            *has_versions = n > 0;
        free(dv);
        return 1;
    }
    m->cfg_failed = 0;
    pthread_mutex_lock(&r->mu);
    m->cfg = c;
    pthread_mutex_unlock(&r->mu);
    disk_version *dv = NULL;
    int n = 0, failed = 0, ok = 0;
    if (list_versions(r, m, &dv, &n, why, sizeof why)) {
        set_model_reason(r, m, why);
        unload_all(r, m, why);
        snprintf(first_err, err_len, "%s", why);
        return 1;
    }
    *has_versions = n > 0;
    set_model_reason(r, m, n ? NULL : "no version folder with a " MODEL_FILE " yet");
    clear_marks(m);
    for (int i = 0; i < n; i++) {
        if (m->cfg.policy == POLICY_LATEST && ok >= m->cfg.latest)
            break;
        if (m->cfg.policy == POLICY_SPECIFIC && !in_specific(&m->cfg, dv[i].number))
            continue;
        pthread_mutex_lock(&r->mu);
        vrec *rec = get_rec(m, dv[i].number);
        pthread_mutex_unlock(&r->mu);
        int rc = rec ? sync_version(r, m, rec, force) : -1;
        if (rec) {
            rec->tried_now = 1;
            rec->keep = rc >= 0;
        }
        ok += rc >= 0;
        if (rc && !failed++)
            snprintf(first_err, err_len, "version %lld: %.360s", dv[i].number,
                     rec ? rec->reason : "out of memory");
    }
    for (int i = 0; m->cfg.policy == POLICY_SPECIFIC && i < m->cfg.num_specific; i++) {
        int found = 0;
        for (int j = 0; j < n && !found; j++)
            found = dv[j].number == m->cfg.specific[i];
        if (!found && !failed++)
            snprintf(first_err, err_len,
                     "version %lld (version_policy.specific) is not in the repository",
                     m->cfg.specific[i]);
    }
    long long top = 0;
    for (vrec *v = m->versions; v && !top; v = v->next)
        top = v->keep && v->handle ? v->number : 0;
    char unload_why[96];
    snprintf(unload_why, sizeof unload_why,
             top ? "not among the versions to serve; version %lld serves now"
                 : "not among the versions to serve",
             top);
    settle(r, m, unload_why);
    free(dv);
    return failed;
}

/* Model names of the folder root (sorted, plain names of folders only); malloc'ed array, *n
 * of them. */
static char **list_root(const char *root, int *n) {
    struct dirent **ents = NULL;
    int k = scandir(root, &ents, NULL, alphasort);
    char **names = k > 0 ? calloc((size_t)k, sizeof *names) : NULL;
    *n = 0;
    for (int i = 0; i < k; i++) {
        const char *name = ents[i]->d_name;
        char why[REASON_LEN];
        struct stat st;
        char path[PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", root, name);
        if (names && !resattn_repository_name_check(name, strlen(name), why, sizeof why) &&
            !stat(path, &st) && S_ISDIR(st.st_mode))
            names[(*n)++] = strdup(name);
        free(ents[i]);
    }
    free(ents);
    return names;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* none/poll: every folder of DIR is a model that should be served; explicit: refresh the
 * loaded models only. */
static void scan(resattn_repository *r, int force) {
    if (!r->root)
        return;
    char real[PATH_MAX];
    if (realpath(r->root_arg, real) && strcmp(real, r->root)) {
        say(r, "info", "model repository %s now leads to %s", r->root_arg, real);
        pthread_mutex_lock(&r->mu);
        snprintf(r->root, PATH_MAX, "%s", real);
        pthread_mutex_unlock(&r->mu);
    }
    char first[REASON_LEN];
    int has;
    if (r->opt.mode == RESATTN_CONTROL_EXPLICIT) {
        for (rmodel *m = r->models; m; m = m->next)
            if (!m->fixed && m->wanted) {
                sync_model(r, m, force, &has, first, sizeof first);
                if (!m->serving && !has) {
                    pthread_mutex_lock(&r->mu);
                    m->wanted = 0;
                    pthread_mutex_unlock(&r->mu);
                }
            }
        return;
    }
    int n;
    char **names = list_root(r->root, &n);
    unsigned gen = ++r->scan_gen;
    for (int i = 0; i < n; i++) {
        if (!names[i])
            continue;
        pthread_mutex_lock(&r->mu);
        rmodel *m = find_model(r, names[i], strlen(names[i]));
        if (!m)
            m = add_model(r, names[i]);
        pthread_mutex_unlock(&r->mu);
        if (!m)
            continue;
        m->scan_gen = gen;
        if (m->fixed) {
            if (!m->reason[0])
                say(r, "warn", "repository folder '%s' is ignored: a --model has that name",
                    m->name);
            set_model_reason(r, m, "a model given with --model has this name");
            continue;
        }
        sync_model(r, m, force, &has, first, sizeof first);
        pthread_mutex_lock(&r->mu);
        m->wanted = has; /* a model folder without versions yet does not hold readiness */
        pthread_mutex_unlock(&r->mu);
    }
    free_names(names, n);
    for (rmodel *m = r->models; m; m = m->next)
        if (!m->fixed && m->scan_gen != gen && (m->wanted || m->serving || m->versions)) {
            pthread_mutex_lock(&r->mu);
            m->wanted = 0;
            pthread_mutex_unlock(&r->mu);
            set_model_reason(r, m, "removed from the repository");
            unload_all(r, m, "removed from the repository");
        }
}

/* ---- operations ---------------------------------------------------------------------- */

static int op_check(resattn_repository *r, const char *name, rmodel **mp, char *msg,
                    size_t msg_len) {
    *mp = NULL;
    if (r->opt.mode != RESATTN_CONTROL_EXPLICIT) {
        snprintf(msg, msg_len,
                 "loading and unloading models needs --model-control-mode explicit (this server "
                 "runs in mode %s)",
                 resattn_control_mode_name(r->opt.mode));
        return 400;
    }
    if (!name || resattn_repository_name_check(name, strlen(name), msg, msg_len))
        return 400;
    pthread_mutex_lock(&r->mu);
    rmodel *m = find_model(r, name, strlen(name));
    pthread_mutex_unlock(&r->mu);
    if (m && m->fixed) {
        snprintf(msg, msg_len, "model '%s' was given with --model: it is not in the repository",
                 name);
        return 400;
    }
    char real[PATH_MAX], why[REASON_LEN];
    int rc = r->root ? resolve(r, name, real, why, sizeof why) : 1;
    struct stat st;
    if (rc == 0 && (stat(real, &st) || !S_ISDIR(st.st_mode)))
        rc = 1;
    if (rc < 0) {
        snprintf(msg, msg_len, "%s", why);
        return 400;
    }
    if (rc == 1 && !(m && (m->wanted || m->serving))) {
        snprintf(msg, msg_len, "no model '%s' in the repository", name);
        return 404;
    }
    *mp = m;
    return 0;
}

static int op_load(resattn_repository *r, const char *name, char *msg, size_t msg_len) {
    rmodel *m;
    int st = op_check(r, name, &m, msg, msg_len);
    if (st)
        return st;
    if (!m) {
        pthread_mutex_lock(&r->mu);
        m = add_model(r, name);
        pthread_mutex_unlock(&r->mu);
        if (!m) {
            snprintf(msg, msg_len, "out of memory");
            return 503;
        }
    }
    char first[REASON_LEN];
    int has, failed = sync_model(r, m, 1, &has, first, sizeof first);
    pthread_mutex_lock(&r->mu);
    m->wanted = m->serving != NULL;
    pthread_mutex_unlock(&r->mu);
    if (!has && !failed)
        snprintf(first, sizeof first, "no version folder with a " MODEL_FILE);
    if (failed || !m->serving) {
        char serves[64] = "";
        if (m->serving)
            snprintf(serves, sizeof serves, " (version %lld serves)", m->serving->number);
        snprintf(msg, msg_len, "failed to load model '%s': %s%s", name, first, serves);
        return 400;
    }
    return 0;
}

static int op_unload(resattn_repository *r, const char *name, char *msg, size_t msg_len) {
    rmodel *m;
    int st = op_check(r, name, &m, msg, msg_len);
    if (st || !m)
        return st; /* a model that was never loaded is unloaded already */
    pthread_mutex_lock(&r->mu);
    m->wanted = 0;
    pthread_mutex_unlock(&r->mu);
    unload_all(r, m, "unload requested");
    return 0;
}

static void run_op(resattn_repository *r, op *o) {
    char msg[REASON_LEN + 128] = "";
    int st = 0;
    switch (o->kind) {
    case RESATTN_REPO_RESCAN:
        scan(r, 1);
        break;
    case RESATTN_REPO_LOAD:
        st = op_load(r, o->name, msg, sizeof msg);
        break;
    case RESATTN_REPO_UNLOAD:
        st = op_unload(r, o->name, msg, sizeof msg);
        break;
    }
    if (o->done)
        o->done(o->user, st, msg);
}

/* ---- the manager thread -------------------------------------------------------------- */

static struct timespec realtime_after(double seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = ts.tv_nsec * 1e-9 + seconds;
    ts.tv_sec += (time_t)t;
    ts.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
    return ts;
}

/* Niceness of the repository's thread: a load (parse, pack, warm-up) yields the CPUs to the
 * workers, so that requests slow down less while a version loads on a busy server. */
#define MANAGER_NICE 10

static void *manager_main(void *arg) {
    resattn_repository *r = arg;
    /* per thread on Linux: the thread's own id as the "process" */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), MANAGER_NICE);
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (r->retired) { /* free what the last requests gave back */
            resattn_model_version *list = r->retired;
            r->retired = NULL;
            pthread_mutex_unlock(&r->mu);
            while (list) {
                resattn_model_version *next = list->next_retired;
                version_free(r, list);
                list = next;
            }
            /* glibc keeps freed blocks above its (self-raising) mmap threshold in the heap;
             * give the pages of a freed version back, so that swaps do not grow the process */
            malloc_trim(0);
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (r->ops) {
            op *o = r->ops;
            r->ops = o->next;
            if (!r->ops)
                r->ops_tail = &r->ops;
            int stopping = r->stop;
            pthread_mutex_unlock(&r->mu);
            if (stopping) {
                if (o->done)
                    o->done(o->user, 503, "the server is stopping");
            } else {
                run_op(r, o);
                if (o->kind == RESATTN_REPO_RESCAN)
                    r->next_poll = now_s() + r->opt.poll_secs;
            }
            free(o->name);
            free(o);
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (r->stop)
            break;
        if (r->opt.mode == RESATTN_CONTROL_POLL && r->root) {
            double wait = r->next_poll - now_s();
            if (wait <= 0) {
                pthread_mutex_unlock(&r->mu);
                scan(r, 0);
                r->next_poll = now_s() + r->opt.poll_secs;
                pthread_mutex_lock(&r->mu);
                continue;
            }
            struct timespec until = realtime_after(wait);
            pthread_cond_timedwait(&r->cv, &r->mu, &until);
        } else {
            pthread_cond_wait(&r->cv, &r->mu);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int resattn_repository_post(resattn_repository *r, resattn_repository_op kind, const char *name,
                            resattn_repository_done_fn done, void *user) {
    pthread_mutex_lock(&r->mu);
    if (r->stop || !r->started) {
        pthread_mutex_unlock(&r->mu);
        return -1;
    }
    if (kind == RESATTN_REPO_RESCAN && !done)
        for (op *q = r->ops; q; q = q->next)
            if (q->kind == RESATTN_REPO_RESCAN) { /* one queued rescan covers both */
                pthread_mutex_unlock(&r->mu);
                return 0;
            }
    op *o = calloc(1, sizeof *o);
    if (!o || (name && !(o->name = strdup(name)))) {
        free(o);
        pthread_mutex_unlock(&r->mu);
        return -1;
    }
    o->kind = kind;
    o->done = done;
    o->user = user;
    *r->ops_tail = o;
    r->ops_tail = &o->next;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished, status;
    char *msg;
    size_t msg_len;
} waiter;

static void waiter_done(void *user, int status, const char *msg) {
    waiter *w = user;
    pthread_mutex_lock(&w->mu);
    w->status = status;
    if (w->msg && w->msg_len)
        snprintf(w->msg, w->msg_len, "%s", msg ? msg : "");
    w->finished = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int resattn_repository_run(resattn_repository *r, resattn_repository_op op_kind, const char *name,
                           char *err, size_t err_len) {
    waiter w = {.msg = err, .msg_len = err_len};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int st;
    if (resattn_repository_post(r, op_kind, name, waiter_done, &w)) {
        snprintf(err, err_len, "the model repository is stopping");
        st = 503;
    } else {
        pthread_mutex_lock(&w.mu);
        while (!w.finished)
            pthread_cond_wait(&w.cv, &w.mu);
        st = w.status;
        pthread_mutex_unlock(&w.mu);
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return st;
}

void resattn_repository_rescan(resattn_repository *r) {
    resattn_repository_post(r, RESATTN_REPO_RESCAN, NULL, NULL, NULL);
}

resattn_control_mode resattn_repository_mode(const resattn_repository *r) {
    return r->opt.mode;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

resattn_status resattn_repository_new(const resattn_repository_options *opt, resattn_pool *pool,
                                      resattn_repository **out, char *err, size_t err_len) {
    *out = NULL;
    resattn_repository *r = calloc(1, sizeof *r);
    if (!r)
        return RESATTN_ERR_NOMEM;
    r->opt = *opt;
    r->opt.root = NULL;
    r->opt.load_models = NULL;
    if (r->opt.poll_secs < 1)
        r->opt.poll_secs = 1;
    r->pool = pool;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->models_tail = &r->models;
    r->ops_tail = &r->ops;
    resattn_status st = RESATTN_OK;
    if (opt->root) {
        char real[PATH_MAX];
        struct stat sb;
        if (!realpath(opt->root, real) || stat(real, &sb) || !S_ISDIR(sb.st_mode)) {
            snprintf(err, err_len, "--model-repository %s: %s", opt->root,
                     errno ? strerror(errno) : "not a directory");
            st = RESATTN_ERR_IO;
        } else if (!(r->root = malloc(PATH_MAX)) || !(r->root_arg = strdup(opt->root))) {
            st = RESATTN_ERR_NOMEM;
        } else {
            snprintf(r->root, PATH_MAX, "%s", real);
        }
    }
    if (!st && opt->num_load_models > 0) {
        r->load_models = calloc((size_t)opt->num_load_models, sizeof *r->load_models);
        for (int i = 0; r->load_models && i < opt->num_load_models; i++)
            if ((r->load_models[i] = strdup(opt->load_models[i])))
                r->num_load_models++;
        if (!r->load_models || r->num_load_models < opt->num_load_models)
            st = RESATTN_ERR_NOMEM;
    }
    if (st) {
        resattn_repository_free(r);
        return st;
    }
    *out = r;
    return RESATTN_OK;
}

resattn_status resattn_repository_add_fixed(resattn_repository *r, const char *name,
                                            resattn_pool_model *pm, char *err, size_t err_len) {
    if (find_model(r, name, strlen(name))) {
        snprintf(err, err_len, "two models are named '%s'; model names must be unique", name);
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    rmodel *m = add_model(r, name);
    resattn_model_version *v =
        m ? version_new(r, m, NULL, 1, resattn_pool_model_model(pm), pm) : NULL;
    if (!v) {
        snprintf(err, err_len, "out of memory");
        return RESATTN_ERR_NOMEM;
    }
    m->fixed = m->wanted = 1;
    m->metrics_index = resattn_pool_model_metrics_index(pm);
    m->serving = v;
    m->loads_ok = 1;
    return RESATTN_OK;
}

int resattn_repository_start(resattn_repository *r, char *err, size_t err_len) {
    r->next_poll = now_s() + r->opt.poll_secs;
    if (pthread_create(&r->thread, NULL, manager_main, r)) {
        snprintf(err, err_len, "cannot start the model repository's thread");
        return -1;
    }
    pthread_mutex_lock(&r->mu);
    r->started = 1;
    pthread_mutex_unlock(&r->mu);
    if (!r->root)
        return 0;
    int failed = 0;
    char msg[REASON_LEN + 128];
    if (r->opt.mode == RESATTN_CONTROL_EXPLICIT) {
        for (int i = 0; i < r->num_load_models; i++)
            if (resattn_repository_run(r, RESATTN_REPO_LOAD, r->load_models[i], msg, sizeof msg))
                say(r, "error", "--load-model %s: %s", r->load_models[i], msg);
        /* the models named at start should be served: one that has no version yet holds
         * readiness (a rescan or a load tries again), as a present model does in poll mode */
        pthread_mutex_lock(&r->mu);
        for (int i = 0; i < r->num_load_models; i++) {
            const char *n = r->load_models[i];
            rmodel *m = find_model(r, n, strlen(n));
            if (m && !m->fixed && !m->serving) {
                m->wanted = 1;
                failed++;
            }
        }
        pthread_mutex_unlock(&r->mu);
        return failed;
    }
    resattn_repository_run(r, RESATTN_REPO_RESCAN, NULL, msg, sizeof msg);
    pthread_mutex_lock(&r->mu);
    for (rmodel *m = r->models; m; m = m->next)
        failed += m->wanted && !m->serving;
    pthread_mutex_unlock(&r->mu);
    return failed;
}

void resattn_repository_free(resattn_repository *r) {
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->started)
        pthread_join(r->thread, NULL);
    for (op *o = r->ops; o;) { /* only when the thread never started */
        op *next = o->next;
        free(o->name);
        free(o);
        o = next;
    }
    /* the repository's own references; with no request left, they are the last ones */
    for (rmodel *m = r->models; m; m = m->next) {
        if (m->fixed && m->serving && atomic_fetch_sub(&m->serving->refs, 1) == 1)
            version_free(r, m->serving);
        for (vrec *v = m->versions; v; v = v->next)
            if (v->handle && atomic_fetch_sub(&v->handle->refs, 1) == 1)
                version_free(r, v->handle);
    }
    for (resattn_model_version *v = r->retired; v;) {
        resattn_model_version *next = v->next_retired;
        version_free(r, v);
        v = next;
    }
    for (rmodel *m = r->models; m;) {
        rmodel *next = m->next;
        for (vrec *v = m->versions; v;) {
            vrec *vn = v->next;
            free(v);
            v = vn;
        }
        free(m->name);
        free(m);
        m = next;
    }
    for (int i = 0; i < r->num_load_models; i++)
        free(r->load_models[i]);
    free(r->load_models);
    free(r->root);
    free(r->root_arg);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* ---- routing ------------------------------------------------------------------------- */

/* The model for a request's name (mu held): "default" is the first served model unless one
 * has that name. */
static rmodel *route_model(resattn_repository *r, const char *name, size_t len) {
    rmodel *m = find_model(r, name, len);
    if (!m && len == 7 && !memcmp(name, "default", 7))
        for (rmodel *c = r->models; c && !m; c = c->next)
            if (c->fixed || c->wanted)
                m = c;
    return m;
}

/* Why model m (mu held) has no ready version to route to, into err. */
static void no_version_reason(const rmodel *m, char *err, size_t err_len) {
    const vrec *first = m->versions;
    const char *why = m->reason[0] ? m->reason : first ? first->reason : "";
    if (first && first->state == RESATTN_VERSION_LOADING)
        snprintf(err, err_len, "model '%s' has no ready version yet (loading)", m->name);
    else
        snprintf(err, err_len, "model '%s' has no ready version%s%s", m->name, why[0] ? ": " : "",
                 why);
}

resattn_model_version *resattn_repository_acquire(resattn_repository *r, const char *name,
                                                  size_t len, const char *version, size_t vlen,
                                                  int *status, char *err, size_t err_len) {
    long long num = version && vlen ? parse_version(version, vlen) : 0;
    int shown = (int)(len < 128 ? len : 128);
    if (num < 0) {
        *status = 404;
        snprintf(err, err_len,
                 "model '%.*s' has no version '%.*s' (versions are positive integers)", shown, name,
                 (int)(vlen < 32 ? vlen : 32), version);
        return NULL;
    }
    /* names are only compared with the models in memory: no path is built from them here */
    pthread_mutex_lock(&r->mu);
    rmodel *m = route_model(r, name, len);
    resattn_model_version *v = NULL;
    *status = 404;
    if (!m) {
        snprintf(err, err_len, "model '%.*s' not found", shown, name);
    } else if (!num) {
        v = m->serving;
        if (!v && (m->fixed || m->wanted)) {
            *status = 503;
            no_version_reason(m, err, err_len);
        } else if (!v) {
            snprintf(err, err_len, "model '%.*s' is not loaded", shown, name);
        }
    } else if (m->fixed) {
        v = num == 1 ? m->serving : NULL;
        if (!v)
            snprintf(err, err_len, "model '%.*s' has no version '%lld' (only '1')", shown, name,
                     num);
    } else {
        vrec *rec = find_rec(m, num);
        v = rec ? rec->handle : NULL;
        if (!v && rec && rec->state == RESATTN_VERSION_LOADING) {
            *status = 503;
            snprintf(err, err_len, "model '%.*s' version %lld is loading", shown, name, num);
        } else if (!v) {
            snprintf(err, err_len, "model '%.*s' has no version %lld ready%s%s", shown, name, num,
                     rec && rec->reason[0] ? ": " : "", rec ? rec->reason : "");
        }
    }
    if (v) {
        *status = 0;
        atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&r->mu);
    return v;
}

/* ---- views --------------------------------------------------------------------------- */

int resattn_repository_ready(resattn_repository *r) {
    pthread_mutex_lock(&r->mu);
    int ready = r->started;
    for (rmodel *m = r->models; m && ready; m = m->next)
        ready = !(m->fixed || m->wanted) || m->serving;
    pthread_mutex_unlock(&r->mu);
    return ready;
}

int resattn_repository_version_state(resattn_repository *r, const char *name, long long version,
                                     resattn_version_state *state, char *reason,
                                     size_t reason_len) {
    pthread_mutex_lock(&r->mu);
    rmodel *m = find_model(r, name, strlen(name));
    vrec *v = m ? find_rec(m, version) : NULL;
    int rc = -1;
    if (m && m->fixed && version == 1) {
        *state = RESATTN_VERSION_AVAILABLE;
        if (reason && reason_len)
            reason[0] = 0;
        rc = 0;
    } else if (v) {
        *state = v->state;
        if (reason && reason_len)
            snprintf(reason, reason_len, "%s", v->reason);
        rc = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* Index entries of one known model (mu held). */
static void index_model(json_t *a, const rmodel *m, int ready_only) {
    if (m->fixed) {
        json_array_append_new(
            a, json_pack("{s:s, s:s, s:s}", "name", m->name, "version", "1", "state", "READY"));
        return;
    }
    int any = 0;
    for (const vrec *v = m->versions; v; v = v->next) {
        if (ready_only && !v->handle)
            continue;
        char label[24];
        snprintf(label, sizeof label, "%lld", v->number);
        const char *reason = v->reason[0]                      ? v->reason
                             : v->state == RESATTN_VERSION_END ? "unloaded"
                                                               : "";
        json_t *e = json_pack("{s:s, s:s, s:s}", "name", m->name, "version", label, "state",
                              v->handle ? "READY" : triton_state(v->state));
        if (e && reason[0]) /* as Triton: a reason only where there is one */
            json_object_set_new(e, "reason", json_string(reason));
        json_array_append_new(a, e);
        any = 1;
    }
    if (!any && !ready_only)
        json_array_append_new(a,
                              json_pack("{s:s, s:s, s:s}", "name", m->name, "state", "UNAVAILABLE",
                                        "reason", m->reason[0] ? m->reason : "not loaded"));
}

json_t *resattn_repository_index(resattn_repository *r, int ready_only) {
    int n = 0;
    char root[PATH_MAX];
    pthread_mutex_lock(&r->mu);
    snprintf(root, sizeof root, "%s", r->root ? r->root : "");
    pthread_mutex_unlock(&r->mu);
    char **names = root[0] ? list_root(root, &n) : NULL;
    json_t *a = json_array();
    pthread_mutex_lock(&r->mu);
    for (const rmodel *m = r->models; a && m; m = m->next)
        index_model(a, m, ready_only);
    for (int i = 0; a && !ready_only && i < n; i++)
        if (names[i] && !find_model(r, names[i], strlen(names[i])))
            json_array_append_new(a, json_pack("{s:s}", "name", names[i]));
    pthread_mutex_unlock(&r->mu);
    free_names(names, n);
    return a;
}

json_t *resattn_repository_version_status(resattn_repository *r, const char *name, size_t len,
                                          const char *version, size_t vlen, int *status, char *err,
                                          size_t err_len) {
    long long num = version && vlen ? parse_version(version, vlen) : 0;
    json_t *a = json_array();
    pthread_mutex_lock(&r->mu);
    rmodel *m = route_model(r, name, len);
    if (m && !m->fixed && !m->wanted && !m->versions)
        m = NULL;
    if (m && m->fixed && (!num || num == 1))
        json_array_append_new(a, json_pack("{s:s, s:s, s:{s:s, s:s}}", "version", "1", "state",
                                           "AVAILABLE", "status", "error_code", "OK",
                                           "error_message", ""));
    for (const vrec *v = m && !m->fixed ? m->versions : NULL; v && a; v = v->next) {
        if (num && v->number != num)
            continue;
        char label[24];
        snprintf(label, sizeof label, "%lld", v->number);
        int failed = v->failed && !v->handle;
        json_array_append_new(a, json_pack("{s:s, s:s, s:{s:s, s:s}}", "version", label, "state",
                                           resattn_version_state_name(v->state), "status",
                                           "error_code", failed ? "UNKNOWN" : "OK", "error_message",
                                           failed ? v->reason : ""));
    }
    pthread_mutex_unlock(&r->mu);
    if (!m || (num < 0) || (a && !json_array_size(a))) {
        *status = 404;
        if (!m)
            snprintf(err, err_len, "model '%.*s' not found", (int)len, name);
        else
            snprintf(err, err_len, "model '%.*s' has no version '%.*s'", (int)len, name, (int)vlen,
                     version);
        json_decref(a);
        return NULL;
    }
    return a ? json_pack("{s:o}", "model_version_status", a) : NULL;
}

json_t *resattn_repository_ready_versions(resattn_repository *r, const char *name, size_t len) {
    json_t *a = json_array();
    pthread_mutex_lock(&r->mu);
    rmodel *m = route_model(r, name, len);
    if (m && m->fixed)
        json_array_append_new(a, json_string("1"));
    for (const vrec *v = m && !m->fixed ? m->versions : NULL; a && v; v = v->next)
        if (v->handle) {
            char label[24];
            snprintf(label, sizeof label, "%lld", v->number);
            json_array_append_new(a, json_string(label));
        }
    pthread_mutex_unlock(&r->mu);
    return a;
}

/* Stats entries of the ready versions of m (mu held); only `num` when non-zero. */
static int stats_model(json_t *a, const rmodel *m, long long num) {
    int found = 0;
    if (m->fixed) {
        if (!num || num == 1) {
            json_array_append_new(a, resattn_model_stats_json(
                                         resattn_pool_model_stats(m->serving->pm), m->name, "1"));
            found = 1;
        }
        return found;
    }
    for (const vrec *v = m->versions; v; v = v->next)
        if (v->handle && (!num || v->number == num)) {
            json_array_append_new(a,
                                  resattn_model_stats_json(resattn_pool_model_stats(v->handle->pm),
                                                           m->name, v->handle->label));
            found = 1;
        }
    return found;
}

json_t *resattn_repository_stats(resattn_repository *r, const char *name, size_t len,
                                 const char *version, size_t vlen, int *status, char *err,
                                 size_t err_len) {
    long long num = version && vlen ? parse_version(version, vlen) : 0;
    json_t *a = json_array();
    pthread_mutex_lock(&r->mu);
    rmodel *m = name ? route_model(r, name, len) : NULL;
    int found = 1;
    if (!name)
        for (const rmodel *c = r->models; a && c; c = c->next)
            stats_model(a, c, 0);
    else
        found = m && num >= 0 && a && stats_model(a, m, num);
    pthread_mutex_unlock(&r->mu);
    if (!found) {
        *status = 404;
        if (!m || (!m->fixed && !m->wanted && !m->serving))
            snprintf(err, err_len, "model '%.*s' not found", (int)len, name);
        else
            snprintf(err, err_len, "model '%.*s' has no ready version '%.*s'", (int)len, name,
                     (int)vlen, version);
        json_decref(a);
        return NULL;
    }
    return a ? json_pack("{s:o}", "model_stats", a) : NULL;
}

/* One line per routed version of every model: name{model,version<extra>} value(stats). */
typedef unsigned long long (*stat_fn)(const resattn_model_stats *s);

static unsigned long long st_success(const resattn_model_stats *s) {
    return atomic_load_explicit(&((resattn_model_stats *)s)->success.count, memory_order_relaxed);
}
static unsigned long long st_fail(const resattn_model_stats *s) {
    return atomic_load_explicit(&((resattn_model_stats *)s)->fail.count, memory_order_relaxed);
}
static unsigned long long st_images(const resattn_model_stats *s) {
    return atomic_load_explicit(&((resattn_model_stats *)s)->inference_count, memory_order_relaxed);
}
static unsigned long long st_exec(const resattn_model_stats *s) {
    return atomic_load_explicit(&((resattn_model_stats *)s)->execution_count, memory_order_relaxed);
}

static void version_line(FILE *f, const char *metric, const char *model,
                         const resattn_model_version *h, const char *extra, stat_fn fn) {
    fprintf(f, "%s{model=\"", metric);
    resattn_metrics_put_label(f, model);
    fprintf(f, "\",version=\"%s\"%s} %llu\n", h->label, extra, fn(resattn_pool_model_stats(h->pm)));
}

/* One line per routed version of every model (mu held). */
static void version_lines(FILE *f, resattn_repository *r, const char *metric, const char *extra,
                          stat_fn fn) {
    for (const rmodel *m = r->models; m; m = m->next) {
        if (m->fixed && m->serving)
            version_line(f, metric, m->name, m->serving, extra, fn);
        for (const vrec *v = m->fixed ? NULL : m->versions; v; v = v->next)
            if (v->handle)
                version_line(f, metric, m->name, v->handle, extra, fn);
    }
}

void resattn_repository_render_metrics(resattn_repository *r, FILE *f) {
    pthread_mutex_lock(&r->mu);
    resattn_metrics_put_head(
        f, "resattn_model_loads_total", "counter",
        "Model version loads by outcome (a failed config.json counts as a failure).");
    for (const rmodel *m = r->models; m; m = m->next)
        for (int ok = 1; ok >= 0; ok--) {
            fputs("resattn_model_loads_total{model=\"", f);
            resattn_metrics_put_label(f, m->name);
            fprintf(f, "\",result=\"%s\"} %llu\n", ok ? "success" : "failure",
                    ok ? m->loads_ok : m->loads_failed);
        }
    resattn_metrics_put_head(f, "resattn_model_versions_loaded", "gauge",
                             "Versions of a model that are loaded and routed to.");
    for (const rmodel *m = r->models; m; m = m->next) {
        int n = m->fixed && m->serving;
        for (const vrec *v = m->versions; v; v = v->next)
            n += v->handle != NULL;
        fputs("resattn_model_versions_loaded{model=\"", f);
        resattn_metrics_put_label(f, m->name);
        fprintf(f, "\"} %d\n", n);
    }
    resattn_metrics_put_head(
        f, "resattn_model_serving_version", "gauge",
        "The version of a model that unversioned requests use (0: none ready).");
    for (const rmodel *m = r->models; m; m = m->next) {
        fputs("resattn_model_serving_version{model=\"", f);
        resattn_metrics_put_label(f, m->name);
        fprintf(f, "\"} %lld\n", m->serving ? m->serving->number : 0);
    }
    resattn_metrics_put_head(f, "resattn_model_requests_total", "counter",
                             "Inference requests routed to a loaded model version, by result.");
    version_lines(f, r, "resattn_model_requests_total", ",result=\"success\"", st_success);
    version_lines(f, r, "resattn_model_requests_total", ",result=\"failure\"", st_fail);
    resattn_metrics_put_head(f, "resattn_model_inferences_total", "counter",
                             "Images inferred by a model version in successful requests.");
    version_lines(f, r, "resattn_model_inferences_total", "", st_images);
    resattn_metrics_put_head(f, "resattn_model_executions_total", "counter",
                             "Forward passes of a model version.");
    version_lines(f, r, "resattn_model_executions_total", "", st_exec);
    pthread_mutex_unlock(&r->mu);
}
