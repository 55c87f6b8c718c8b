/*
 * A small, strict JSON scanner for the one part of an inference request that is big: the
 * numeric tensor (`data` of a v2 input, `instances`/`inputs` of TF Serving). jansson costs
 * ~42 bytes and tens of nanoseconds per number, so the codecs cut the tensor's text out of
 * the body (found with resattn_json_member/resattn_json_skip), let jansson parse the small
 * envelope that is left, and convert the tensor here: one pass, no allocation per number,
 * locale-independent number parsing, nesting checked against a rectangular shape. Nothing
 * here reads outside [p, end).
 */
#ifndef RESATTN_JSON_SCAN_H
#define RESATTN_JSON_SCAN_H

#include <stddef.h>
#include <stdint.h>

#define RESATTN_SCAN_MAX_DIMS 16

/* What a tensor element may be, and how it becomes a float32. */
typedef enum resattn_elem_kind {
    RESATTN_ELEM_FLOAT = 0, /* any JSON number; out of float32 range is refused */
    RESATTN_ELEM_INT,       /* integral numbers in [lo, hi] */
    RESATTN_ELEM_BOOL,      /* true / false -> 1 / 0 */
} resattn_elem_kind;

typedef struct resattn_elem_rule {
    resattn_elem_kind kind;
    double lo, hi;       /* RESATTN_ELEM_INT range */
    const char *type;    /* datatype name for messages, e.g. "UINT8" */
    int allow_nonfinite; /* accept NaN, Infinity, -Infinity literals and float overflow */
    int cap_status;      /* status when there are more than cap elements (0: 400) */
} resattn_elem_rule;

/* Shape of a scanned tensor: dims[0..ndim) of the nesting, count = product. */
typedef struct resattn_scan_shape {
    int ndim;
    int64_t dims[RESATTN_SCAN_MAX_DIMS];
    size_t count;
} resattn_scan_shape;

/* First non-whitespace byte at or after p (end when none). */
const char *resattn_json_ws(const char *p, const char *end);

/*
 * End of the JSON value starting at p (after leading whitespace), or NULL when it is not
 * one, is cut off, or nests deeper than max_depth. Lax inside arrays/objects (it tracks
 * strings and brackets only): whatever it skips is validated later by jansson or by
 * resattn_json_scan_tensor.
 */
const char *resattn_json_skip(const char *p, const char *end, int max_depth);

/*
 * In the object starting at obj, the value of member `key` (compared byte for byte, so a
 * key written with escapes is not found): returns its first byte and sets *vend past it
 * (vend NULL: the value is not skipped, for callers that scan it themselves); NULL when
 * absent or when the object is malformed (callers then fall back to jansson).
 */
const char *resattn_json_member(const char *obj, const char *end, const char *key,
                                const char **vend, int max_depth);

/*
 * Parse one JSON number at p (strict grammar, C locale whatever the process locale).
 * Returns 0 and sets *v and *endp, or -1 when p does not start a number.
 */
int resattn_json_number(const char *p, const char *end, double *v, const char **endp);

/* The same for a float32 result, correctly rounded from the decimal (faster for long
   mantissas: only the float rounding has to be right). */
int resattn_json_number_f32(const char *p, const char *end, float *f, const char **endp);

/*
 * Whether float32 tensors take the AVX-512 bulk path (CPUs with AVX-512 F/BW/DQ/VL/VBMI2/VPOPCNTDQ
 * and BMI2, unless RESATTN_JSON_SCAN=portable, read once); both paths give the same results.
 */
int resattn_json_scan_simd(void);

/* Tests: force the portable path (on) or go back to the detected one (off). */
void resattn_json_scan_force_portable(int on);

/*
 * Scan the nested array at [p, end) (leading/trailing whitespace allowed, nothing else),
 * converting elements by `rule` into out[0..cap). Returns 0, or 400 with err naming `what`,
 * the element index and the problem (not an array, ragged nesting, too deep, a non-number,
 * out of range, more than cap elements, trailing bytes).
 */
int resattn_json_scan_tensor(const char *p, const char *end, const resattn_elem_rule *rule,
                             float *out, size_t cap, resattn_scan_shape *shape, const char *what,
                             char *err, size_t err_len);

/* The same, for an array followed by anything: *endp is set past its closing bracket. */
int resattn_json_scan_tensor_prefix(const char *p, const char *end, const resattn_elem_rule *rule,
                                    float *out, size_t cap, resattn_scan_shape *shape,
                                    const char **endp, const char *what, char *err, size_t err_len);

#endif
