/*
 * Settings of `resattn serve`. One table in config.c declares every option once (flag,
 * RESATTN_* environment variable, type, default, bounds, help); it serves the command line,
 * the environment and `--help` alike. Flags win over the environment, which wins over the
 * defaults. Thread defaults follow the CPUs this process may really use (affinity mask and
 * the cgroup v2 or v1 CPU quota), so workers x BLAS threads never oversubscribe them.
 */
#ifndef RESATTN_SERVER_CONFIG_H
#define RESATTN_SERVER_CONFIG_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#define RESATTN_MAX_MODELS 16

typedef struct resattn_server_config {
    char *models[RESATTN_MAX_MODELS]; /* model file paths, owned */
    int num_models;
    char *host;         /* listen address, owned */
    int port;           /* 0 = pick a free port */
    int grpc_port;      /* gRPC listener; 0 = none */
    int workers;        /* worker threads (0 in the table = automatic; resolved on parse) */
    int http_threads;   /* libmicrohttpd threads (request parsing and answers) */
    int blas_threads;   /* OpenBLAS threads per GEMM (0 = automatic; resolved on parse) */
    int max_batch;      /* most images in one forward pass */
    int max_delay_ms;   /* longest wait for more requests to fill a batch */
    int queue_capacity; /* requests waiting for a worker before 503 */
    long long max_body_bytes;
    int request_timeout_ms;
    int drain_timeout_ms;
    int drain_delay_ms;  /* serve with readiness 503 this long after the signal, then drain */
    int log_json;        /* access log as JSON lines, else text */
    int allow_nonfinite; /* accept NaN/Inf inputs */
    char *port_file;     /* write the bound port here, or NULL; owned */
    /* security (issue 5) */
    char **api_keys; /* [num_api_keys] accepted Bearer tokens, owned; none = auth off */
    int num_api_keys;
    char *api_key_file; /* read at parse time into api_keys; owned */
    int auth_health;    /* also protect /healthz, /readyz, /v2/health/..., /metrics */
    char *tls_cert;     /* PEM paths; both or neither; owned */
    char *tls_key;
    int max_connections;        /* MHD_OPTION_CONNECTION_LIMIT */
    int connection_timeout_s;   /* MHD_OPTION_CONNECTION_TIMEOUT (idle connections) */
    int max_connections_per_ip; /* 0 = unlimited */
    int max_header_bytes;       /* MHD_OPTION_CONNECTION_MEMORY_LIMIT (431 beyond) */
    int precision;              /* resattn_precision the models are loaded in */
    /* memory (server/runtime/budget.h) */
    long long max_memory_bytes; /* budget for admitted requests; 0 = from the memory limit */
    long long max_image_pixels; /* most pixels of one decoded image; 0 = from the memory limit */
    /* model repository (server/repository/repository.h) */
    char *model_repository;                /* DIR, or NULL; owned */
    int model_control_mode;                /* resattn_control_mode */
    int repository_poll_secs;              /* poll mode: seconds between scans */
    char *load_models[RESATTN_MAX_MODELS]; /* explicit mode: loaded at start; owned */
    int num_load_models;
} resattn_server_config;

/*
 * Fill cfg from defaults, the environment, then argv (argv[0] is the command name).
 * Returns 0 on success, 1 when --help was asked (help printed to out), or 2 on a bad
 * option or value (err names it). cfg must be released in every case.
 */
int resattn_server_config_parse(int argc, char **argv, resattn_server_config *cfg, FILE *out,
                                char *err, size_t err_len);
void resattn_server_config_release(resattn_server_config *cfg);
/* The option table as `--help` text. */
void resattn_server_config_help(FILE *out);
/* CPUs this process may use: affinity mask, capped by the cgroup CPU quota (v2 cpu.max, else
 * v1 cpu.cfs_quota_us / cpu.cfs_period_us). */
int resattn_usable_cpus(void);
/* The CPU limit of the cgroup mounted at root (normally /sys/fs/cgroup): v2 cpu.max, else v1
 * cpu[,cpuacct]/cpu.cfs_quota_us over cpu.cfs_period_us, rounded up. 0 = no quota,
 * -1 = no cgroup CPU files found. */
int resattn_cgroup_cpu_limit(const char *root);
/* The memory limit of this process's cgroup, in bytes: v2 memory.max, else v1
 * memory/memory.limit_in_bytes, of the cgroup named in self_cgroup (normally
 * /proc/self/cgroup) below root (normally /sys/fs/cgroup) and of each of its ancestors (the
 * smallest wins; a path absent under root, as inside a container's cgroup namespace, falls
 * back to root itself). 0 = no limit, -1 = no cgroup memory files found. */
long long resattn_cgroup_memory_limit(const char *root, const char *self_cgroup);
/* Physical memory in bytes (0 if unknown). */
long long resattn_physical_memory(void);
/* Resident memory (VmRSS) of process pid in bytes, 0 meaning this process; 0 if unreadable. */
long long resattn_resident_bytes(pid_t pid);

#endif
