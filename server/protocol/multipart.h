/*
 * multipart/form-data (RFC 7578) over a complete body held in memory, for image uploads
 * (`curl -F image=@shoe.png`). Parts point into the body (nothing is copied). The parser
 * never reads outside the buffer, bounds the part count and header sizes, and reports the
 * first problem with the byte offset; it is a fuzzing target.
 */
#ifndef RESATTN_MULTIPART_H
#define RESATTN_MULTIPART_H

#include <stddef.h>

#define RESATTN_MULTIPART_BOUNDARY_MAX 70 /* RFC 2046 */

/* One part; strings are not NUL-terminated and point into the body (NULL when absent). */
typedef struct resattn_multipart_part {
    const char *name; /* Content-Disposition name */
    size_t name_len;
    const char *filename; /* Content-Disposition filename */
    size_t filename_len;
    const char *content_type; /* the part's Content-Type */
    size_t content_type_len;
    const unsigned char *data;
    size_t len;
} resattn_multipart_part;

/*
 * The boundary parameter of a multipart/form-data Content-Type (quoted or not) into
 * boundary[RESATTN_MULTIPART_BOUNDARY_MAX + 1]. Returns 0, or -1 with err filled.
 */
int resattn_multipart_boundary(const char *content_type, char *boundary, char *err, size_t err_len);

/*
 * Split body into parts (at most max_parts; more is an error). Returns 0 with *nparts set,
 * or -1 with err filled.
 */
int resattn_multipart_parse(const unsigned char *body, size_t len, const char *boundary,
                            resattn_multipart_part *parts, int max_parts, int *nparts, char *err,
                            size_t err_len);

#endif
