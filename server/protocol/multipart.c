/*
 * multipart/form-data parsing (see multipart.h). The body is
 *   [preamble CRLF] "--" B [ws] CRLF headers CRLF CRLF data CRLF "--" B ... "--" B "--" [...]
 * Each part's data runs to the next CRLF "--" B, found with memmem; the headers of a part
 * are lines up to the first empty line, of which Content-Disposition (name, filename) and
 * Content-Type are kept. Everything else is ignored, as RFC 7578 asks.
 */
#include "protocol/multipart.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADER_BYTES 8192 /* headers of one part */

int resattn_multipart_boundary(const char *ct, char *boundary, char *err, size_t err_len) {
    if (!ct || strncasecmp(ct, "multipart/form-data", 19)) {
        snprintf(err, err_len, "Content-Type is not multipart/form-data");
        return -1;
    }
    const char *p = ct + 19;
    while (*p) { /* parameters: ; key=value or ; key="value" */
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        const char *key = p;
        while (*p && *p != '=' && *p != ';')
            p++;
        size_t klen = (size_t)(p - key);
        while (klen && (key[klen - 1] == ' ' || key[klen - 1] == '\t'))
            klen--;
        if (*p != '=')
            continue;
        p++;
        const char *v = p;
        size_t vlen;
        if (*p == '"') {
            v = ++p;
            while (*p && *p != '"')
                p++;
            if (!*p) {
                snprintf(err, err_len, "multipart boundary: unterminated quoted value");
                return -1;
            }
            vlen = (size_t)(p++ - v);
        } else {
            while (*p && *p != ';' && *p != ' ' && *p != '\t')
                p++;
            vlen = (size_t)(p - v);
        }
        if (klen == 8 && !strncasecmp(key, "boundary", 8)) {
            if (vlen == 0 || vlen > RESATTN_MULTIPART_BOUNDARY_MAX) {
                snprintf(err, err_len, "multipart boundary must have 1 to %d characters, not %zu",
                         RESATTN_MULTIPART_BOUNDARY_MAX, vlen);
                return -1;
            }
            memcpy(boundary, v, vlen);
            boundary[vlen] = 0;
            return 0;
        }
    }
    snprintf(err, err_len, "multipart/form-data Content-Type has no boundary parameter");
    return -1;
}

/* Value of parameter `key` in a Content-Disposition value [v, end); 0 if found. */
static int disposition_param(const char *v, const char *end, const char *key, const char **out,
                             size_t *out_len) {
    size_t klen = strlen(key);
    const char *p = v;
    while (p < end && *p != ';') /* skip the disposition type */
        p++;
    while (p < end) {
        while (p < end && (*p == ';' || *p == ' ' || *p == '\t'))
            p++;
        const char *k = p;
        while (p < end && *p != '=' && *p != ';')
            p++;
        size_t n = (size_t)(p - k);
        while (n && (k[n - 1] == ' ' || k[n - 1] == '\t'))
            n--;
        if (p >= end || *p != '=')
            continue;
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *val = p;
        size_t vlen;
        if (p < end && *p == '"') {
            val = ++p;
            while (p < end && *p != '"') /* escaped quotes are not used by browsers */
                p++;
            vlen = (size_t)(p - val);
            if (p < end)
                p++;
        } else {
            while (p < end && *p != ';')
                p++;
            vlen = (size_t)(p - val);
            while (vlen && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t'))
                vlen--;
        }
        if (n == klen && !strncasecmp(k, key, klen)) {
            *out = val;
            *out_len = vlen;
            return 0;
        }
    }
    return -1;
}

/* Parse the header block [h, end) of one part into *part. */
static int parse_headers(const char *h, const char *end, resattn_multipart_part *part, char *err,
                         size_t err_len, size_t offset) {
    while (h < end) {
        const char *eol = memmem(h, (size_t)(end - h), "\r\n", 2);
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(h, ':', (size_t)(line_end - h));
        if (!colon) {
            snprintf(err, err_len, "multipart: header line without ':' near offset %zu", offset);
            return -1;
        }
        const char *v = colon + 1;
        while (v < line_end && (*v == ' ' || *v == '\t'))
            v++;
        size_t n = (size_t)(colon - h);
        if (n == 19 && !strncasecmp(h, "Content-Disposition", 19)) {
            if ((size_t)(line_end - v) < 9 || strncasecmp(v, "form-data", 9)) {
                snprintf(err, err_len,
                         "multipart: Content-Disposition is not form-data near "
                         "offset %zu",
                         offset);
                return -1;
            }
            disposition_param(v, line_end, "name", &part->name, &part->name_len);
            disposition_param(v, line_end, "filename", &part->filename, &part->filename_len);
        } else if (n == 12 && !strncasecmp(h, "Content-Type", 12)) {
            part->content_type = v;
            part->content_type_len = (size_t)(line_end - v);
            while (part->content_type_len && isspace((unsigned char)v[part->content_type_len - 1]))
                part->content_type_len--;
        }
        h = eol ? eol + 2 : end;
    }
    return 0;
}

int resattn_multipart_parse(const unsigned char *body, size_t len, const char *boundary,
                            resattn_multipart_part *parts, int max_parts, int *nparts, char *err,
                            size_t err_len) {
    char delim[RESATTN_MULTIPART_BOUNDARY_MAX + 5] = "\r\n--";
    size_t blen = strlen(boundary);
    if (blen == 0 || blen > RESATTN_MULTIPART_BOUNDARY_MAX) {
        snprintf(err, err_len, "multipart: bad boundary length %zu", blen);
        return -1;
    }
    memcpy(delim + 4, boundary, blen);
    size_t dlen = blen + 4;
    const char *b = (const char *)body, *end = b + len;
    /* the first delimiter may start the body (without its CRLF) or follow a preamble */
    const char *p;
    if (len >= dlen - 2 && !memcmp(b, delim + 2, dlen - 2))
        p = b + dlen - 2;
    else {
        p = len ? memmem(b, len, delim, dlen) : NULL;
        if (!p) {
            snprintf(err, err_len, "multipart: boundary '%s' not found in the body", boundary);
            return -1;
        }
        p += dlen;
    }
    int n = 0;
    for (;;) {
        /* after a delimiter: "--" closes; otherwise optional whitespace then CRLF */
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            break;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
            snprintf(err, err_len, "multipart: expected CRLF after the boundary at offset %zu",
                     (size_t)(p - b));
            return -1;
        }
        p += 2;
        if (n == max_parts) {
            snprintf(err, err_len, "multipart: more than %d parts", max_parts);
            return -1;
        }
        resattn_multipart_part *part = &parts[n];
        memset(part, 0, sizeof *part);
        const char *hend;
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
            hend = p; /* no headers */
        else {
            size_t look = (size_t)(end - p);
            hend = memmem(p, look < MAX_HEADER_BYTES ? look : MAX_HEADER_BYTES, "\r\n\r\n", 4);
            if (!hend) {
                snprintf(err, err_len,
                         "multipart: part %d headers unterminated or over %d bytes at offset %zu",
                         n, MAX_HEADER_BYTES, (size_t)(p - b));
                return -1;
            }
        }
        if (parse_headers(p, hend, part, err, err_len, (size_t)(p - b)))
            return -1;
        p = hend + (hend == p ? 2 : 4);
        const char *next = p <= end ? memmem(p, (size_t)(end - p), delim, dlen) : NULL;
        if (!next) {
            snprintf(err, err_len, "multipart: part %d is not closed by the boundary (truncated?)",
                     n);
            return -1;
        }
        part->data = (const unsigned char *)p;
        part->len = (size_t)(next - p);
        n++;
        p = next + dlen;
    }
    *nparts = n;
    return 0;
}
