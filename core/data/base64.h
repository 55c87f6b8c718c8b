/*
 * Base64 (RFC 4648): decoding for images sent inside JSON, encoding for PNGs sent back. Accepts the
 * standard and the URL-safe alphabets, with or without '=' padding, and ignores ASCII whitespace
 * (line breaks of MIME-style encoders). Anything else — a stray character, padding in the middle,
 * leftover bits that are not zero, a lone final character — is an error naming the offset.
 */
#ifndef RESATTN_BASE64_H
#define RESATTN_BASE64_H

#include <stddef.h>

/* Most bytes decoding `len` characters can produce. */
size_t resattn_base64_decoded_max(size_t len);

/*
 * Decode src[0..len) into dst (capacity at least resattn_base64_decoded_max(len)); the
 * decoded length goes to *out_len. Returns 0, or -1 with err filled.
 */
int resattn_base64_decode(const char *src, size_t len, unsigned char *dst, size_t *out_len,
                          char *err, size_t err_len);

/* Standard base64 (with padding) of data: a new NUL-terminated malloc'ed string, or NULL. */
char *resattn_base64_encode(const unsigned char *data, size_t len);

#endif
