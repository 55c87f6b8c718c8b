/*
 * The memory budget of `resattn serve`: one thread-safe count of the bytes that admitted work
 * holds — request bodies as they are buffered, decoded input tensors, logits, captured
 * attention masks and answers not yet sent — against one limit. It knows nothing of HTTP:
 * a transport keeps one hold per request (resattn_budget_hold), asks for the request's
 * worst case before reading its body (refusal costs nothing), grows it as a body of unknown
 * length arrives, and sets it to the true size once that is known. Only admission can be
 * refused; an admitted request is never failed for memory afterwards (hold_set never fails,
 * it may briefly run the count past the limit, and admission waits until it is back under).
 *
 * Requests larger than 1/16 of the budget may not take its last eighth, so a flood of large
 * uploads leaves room for small requests. Also here: the per-request estimates the
 * transports share, and the arithmetic that derives the default budget from the memory
 * limit (cmd_serve.c gathers the inputs, docs/memory.md states the rule).
 */
#ifndef RESATTN_BUDGET_H
#define RESATTN_BUDGET_H

#include <resattn/resattn.h>
#include <stddef.h>

typedef struct resattn_budget resattn_budget;

/* A budget of `limit` bytes (> 0); NULL when out of memory. */
resattn_budget *resattn_budget_new(long long limit);
/* NULL is accepted. */
void resattn_budget_free(resattn_budget *b);
long long resattn_budget_limit(const resattn_budget *b);
/* Change the limit (e.g. lowered after warm-up measured more resident memory). */
void resattn_budget_set_limit(resattn_budget *b, long long limit);
/* Bytes charged now (may exceed the limit briefly: see hold_set). */
long long resattn_budget_in_use(const resattn_budget *b);

typedef enum resattn_budget_verdict {
    RESATTN_BUDGET_OK = 0, /* charged */
    RESATTN_BUDGET_FULL,   /* not now: fits once other work is done (503 + Retry-After) */
    RESATTN_BUDGET_NEVER   /* more than the budget could ever give one request (413) */
} resattn_budget_verdict;

/* What one request (or stream, or call) holds of the budget. Zero-initialise with the
 * budget set; a NULL budget makes every operation a no-op that admits. */
typedef struct resattn_budget_hold {
    resattn_budget *budget;
    size_t bytes; /* charged by this hold */
} resattn_budget_hold;

/* Admission: add `more` bytes to the hold if the budget has them (all or nothing). The
 * large-request rule applies to the hold's total. */
resattn_budget_verdict resattn_budget_hold_grow(resattn_budget_hold *h, size_t more);
/* The true size is known: charge or release the difference. Never refused. */
void resattn_budget_hold_set(resattn_budget_hold *h, size_t bytes);
/* Release everything the hold charged (completion). */
void resattn_budget_hold_release(resattn_budget_hold *h);

/* ---- estimates shared by the transports ------------------------------------------------ */

/* Bytes an inference request of n images holds once parsed: the input tensor [n, C, H, W]
 * FP32 (when not used in place in the body), the logits and the largest encoded answer
 * (JSON logits and probabilities, or top-k labels). Attention masks are charged when made. */
size_t resattn_budget_infer_bytes(const resattn_model_info *m, int n, int input_in_body);
/* Bytes a request body of len bytes and this Content-Type may take while it is parsed,
 * besides the body and the parsed request: 2 x len for JSON (jansson's copy of its strings,
 * base64-decoded images), 0 for raw images, multipart, binary and .npy bodies. */
size_t resattn_budget_parse_bytes(const char *content_type, size_t len);
/* Bytes decoding one image of `pixels` pixels takes on the parsing thread (RGB decode plus
 * the conversion to `channels`), for the fixed reserve of each HTTP thread. */
long long resattn_budget_decode_bytes(long long pixels, int channels);

/* ---- the default budget ----------------------------------------------------------------- */

typedef struct resattn_memory_plan {
    /* inputs */
    long long limit;       /* memory the process may use: cgroup limit, else physical */
    long long resident;    /* resident bytes after loading the models */
    long long workspaces;  /* worker contexts (allocated at start, resident after warm-up) */
    long long connections; /* max connections x per-connection memory (headers, read buffer) */
    long long parse;       /* HTTP threads x decode reserve of the largest image */
    /* results */
    long long margin; /* safety margin: 10 % of the limit, at least 16 MiB */
    long long fixed;  /* resident + workspaces + connections + parse + margin */
    long long budget; /* limit - fixed; <= 0 when nothing is left for requests */
} resattn_memory_plan;

/* Fill margin, fixed and budget from the inputs. */
void resattn_memory_plan_compute(resattn_memory_plan *p);

#endif
