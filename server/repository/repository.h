/*
 * The model repository: which models and versions the server serves, and their lifecycle.
 *
 * Layout (Triton's and TensorFlow Serving's): DIR/<model>/<version>/model.safetensors, where
 * <model> is one plain folder name (letters, digits, '.', '_', '-'; not starting with '.')
 * and <version> a positive integer without leading zeros; an optional DIR/<model>/config.json
 * holds that model's serving settings:
 *
 *     {"version_policy": {"latest": 2}, "max_batch": 8, "max_delay_ms": 2}
 *
 * version_policy is {"latest": N} (default N = 1), {"all": true} or {"specific": [1, 3]}
 * (Triton's spellings {"latest": {"num_versions": N}} and {"specific": {"versions": [..]}}
 * are read too); max_batch, max_delay_ms and precision ("fp32" or "bf16") override the
 * server's for this model.
 *
 * Versions go through TensorFlow Serving's states: LOADING (read, validated, packed and
 * warmed up on the repository's own thread, never on a request's), AVAILABLE, UNLOADING
 * (no longer routed to; requests that hold it finish on it) and END (freed, or failed to
 * load: the reason is kept). A loaded version is a reference-counted resattn_model_version: a
 * request acquires it when it is routed and releases it when its answer is done, so a
 * replaced version is freed when its last request is done. Once a new version is ready it
 * becomes the one unversioned requests get, in one step under the repository's lock. A
 * version that fails to load never replaces a good one: the good one keeps serving and the
 * failure is logged (one line), counted and shown in the index with its reason; the version
 * is tried again when its file changes (seen by the next poll) or on an explicit rescan or
 * load.
 *
 * Control modes (Triton's --model-control-mode): none loads every model of DIR at start;
 * poll does the same and rescans DIR every poll_secs seconds (new versions load, removed
 * ones unload, changed files reload); explicit loads only the models named at start or by
 * resattn_repository_post(LOAD) and unloads on UNLOAD. A rescan (SIGHUP) works in every mode.
 * All changes happen on one manager thread, in order; readers take a short mutex.
 *
 * Models given by file (--model) join as "fixed" models: version 1, always available, never
 * unloaded. A name, from the file system or from the API, is checked by
 * resattn_repository_name_check, and every path is resolved and must stay inside DIR, so
 * `..`, separators, hidden folders and symlinks that lead elsewhere are refused.
 */
#ifndef RESATTN_REPOSITORY_H
#define RESATTN_REPOSITORY_H

#include "runtime/metrics.h"
#include "runtime/pool.h"
#include <jansson.h>
#include <resattn/resattn.h>
#include <stdio.h>

typedef enum resattn_control_mode {
    RESATTN_CONTROL_NONE = 0,
    RESATTN_CONTROL_POLL,
    RESATTN_CONTROL_EXPLICIT,
} resattn_control_mode;

typedef enum resattn_version_state {
    RESATTN_VERSION_LOADING = 0,
    RESATTN_VERSION_AVAILABLE,
    RESATTN_VERSION_UNLOADING,
    RESATTN_VERSION_END,
} resattn_version_state;

/* "none", "poll", "explicit" into *mode; -1 for anything else. */
int resattn_control_mode_parse(const char *s, resattn_control_mode *mode);
const char *resattn_control_mode_name(resattn_control_mode mode);
/* TensorFlow Serving's names: "LOADING", "AVAILABLE", "UNLOADING", "END". */
const char *resattn_version_state_name(resattn_version_state s);

/* One line for the server's log: level "info", "warn" or "error". */
typedef void (*resattn_repository_log_fn)(void *user, const char *level, const char *msg);

typedef struct resattn_repository_options {
    const char *root; /* DIR, or NULL when only fixed models are served */
    resattn_control_mode mode;
    int poll_secs; /* poll mode: seconds between two scans (>= 1) */
    /* explicit mode: the models loaded at start */
    const char *const *load_models;
    int num_load_models;
    /* the precision versions load in unless their model's config.json names one */
    resattn_precision precision;
    resattn_repository_log_fn log; /* may be NULL */
    void *log_user;
    /* each model gets the per-model series of these metrics when its first version loads
     * (resattn_metrics_register_model); NULL: none */
    resattn_metrics *metrics;
} resattn_repository_options;

typedef struct resattn_repository resattn_repository;
typedef struct resattn_model_version resattn_model_version;

/*
 * Check that name[0..len) is one plain folder name: 1 to 128 characters of letters, digits,
 * '.', '_' and '-', not starting with '.'. Returns 0, or -1 with err saying what is wrong.
 */
int resattn_repository_name_check(const char *name, size_t len, char *err, size_t err_len);

/* A repository over opt->root (which must be a directory when given); versions are run by
 * `pool` (which must outlive the repository). Nothing is loaded before _start. */
resattn_status resattn_repository_new(const resattn_repository_options *opt, resattn_pool *pool,
                                      resattn_repository **out, char *err, size_t err_len);
/* Before _start: serve `pm` (owned by the caller, e.g. resattn_pool_fixed) as model `name`,
 * version 1. Names must be unique. */
resattn_status resattn_repository_add_fixed(resattn_repository *r, const char *name,
                                            resattn_pool_model *pm, char *err, size_t err_len);
/* Load what the mode asks for (waiting for it), then start the manager thread (and its
 * polling). Returns the number of models that should be served but have no ready version
 * (their reasons are logged and in the index), or -1 with err when the thread cannot start. */
int resattn_repository_start(resattn_repository *r, char *err, size_t err_len);
/* Stop the manager thread and free every version. No version may still be acquired (stop
 * the HTTP server first). NULL is accepted. */
void resattn_repository_free(resattn_repository *r);

/* ---- routing: one acquire and one release per request ----------------------------------- */

/*
 * The version of model name[0..len) that a request uses: `version` (len vlen) when given,
 * else (version NULL or vlen 0) the version that unversioned requests use. The model name
 * "default" means the first model when no model has that name. Returns an acquired
 * version, or NULL with *status (400 bad name, 404 unknown model or version, 503 model
 * without a ready version) and err filled.
 */
resattn_model_version *resattn_repository_acquire(resattn_repository *r, const char *name,
                                                  size_t len, const char *version, size_t vlen,
                                                  int *status, char *err, size_t err_len);
/* Give a version back; its last release hands it to the manager thread to be freed. */
void resattn_model_version_release(resattn_model_version *v);
/* Another reference to an acquired version (released separately). */
void resattn_model_version_retain(resattn_model_version *v);

const char *resattn_model_version_name(const resattn_model_version *v);  /* the model's name */
const char *resattn_model_version_label(const resattn_model_version *v); /* the version, e.g. "2" */
long long resattn_model_version_number(const resattn_model_version *v);
const resattn_model *resattn_model_version_model(const resattn_model_version *v);
resattn_pool_model *resattn_model_version_pool_model(const resattn_model_version *v);

/* ---- lifecycle: everything runs on the manager thread, in order ------------------------ */

typedef enum resattn_repository_op {
    RESATTN_REPO_RESCAN = 0, /* none/poll: the whole repository; explicit: the loaded models */
    RESATTN_REPO_LOAD,       /* explicit mode: load (or reload) model `name` */
    RESATTN_REPO_UNLOAD,     /* explicit mode: unload model `name` */
} resattn_repository_op;

/* Outcome of an operation: status 0, or an HTTP status (400, 404, 503) with msg. */
typedef void (*resattn_repository_done_fn)(void *user, int status, const char *msg);

/* Queue op (name for LOAD and UNLOAD); done (may be NULL) runs on the manager thread when it
 * is finished. A RESCAN while one is queued is merged into it. 0, or -1 when stopping. */
int resattn_repository_post(resattn_repository *r, resattn_repository_op op, const char *name,
                            resattn_repository_done_fn done, void *user);
/* The same, waiting for the outcome: 0, or an HTTP status with err filled. */
int resattn_repository_run(resattn_repository *r, resattn_repository_op op, const char *name,
                           char *err, size_t err_len);
/* A rescan (for SIGHUP): resattn_repository_post without a callback. */
void resattn_repository_rescan(resattn_repository *r);

resattn_control_mode resattn_repository_mode(const resattn_repository *r);

/* ---- views ----------------------------------------------------------------------------- */

/* Whether every model that should be served has a ready version. A model should be served
 * when it was given by file, or is in DIR with at least one version folder (none and poll
 * modes), or was loaded (explicit mode). */
int resattn_repository_ready(resattn_repository *r);
/* State and reason of one version, for tests and logs: 0, or -1 when the repository does
 * not know it. */
int resattn_repository_version_state(resattn_repository *r, const char *name, long long version,
                                     resattn_version_state *state, char *reason, size_t reason_len);
/* Triton's repository index: [{"name", "version", "state", "reason"}...] for every model in
 * DIR (and every fixed model); only ready versions when ready_only. NULL on no memory. */
json_t *resattn_repository_index(resattn_repository *r, int ready_only);
/* TensorFlow Serving's {"model_version_status": [...]} for model name[0..len), every
 * version it knows (or only `version` when vlen > 0). NULL with *status and err when the
 * model or version is unknown. */
json_t *resattn_repository_version_status(resattn_repository *r, const char *name, size_t len,
                                          const char *version, size_t vlen, int *status, char *err,
                                          size_t err_len);
/* The ready versions of model name[0..len) as a JSON array of strings, highest first (empty
 * when none or unknown). */
json_t *resattn_repository_ready_versions(resattn_repository *r, const char *name, size_t len);
/* Triton's {"model_stats": [...]}: every ready version of every model (name NULL), of one
 * model, or one version. NULL with *status and err when unknown. */
json_t *resattn_repository_stats(resattn_repository *r, const char *name, size_t len,
                                 const char *version, size_t vlen, int *status, char *err,
                                 size_t err_len);
/* Prometheus lines: load outcomes per model, loaded versions, the version unversioned
 * requests use, and per-version request counts from the statistics. */
void resattn_repository_render_metrics(resattn_repository *r, FILE *f);

#endif
