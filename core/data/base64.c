/*
 * Base64 (see base64.h). Decoding: one table lookup per character, four characters make
 * three bytes; padding and whitespace are handled on the way, so the input is read once.
 * Encoding: three bytes make four characters of the standard alphabet, padded.
 */
#include "data/base64.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* 0..63 for alphabet characters (both alphabets), 64 whitespace, 65 '=', 255 invalid. */
static unsigned char value_of(unsigned char c) {
    if (c >= 'A' && c <= 'Z')
        return (unsigned char)(c - 'A');
    if (c >= 'a' && c <= 'z')
        return (unsigned char)(c - 'a' + 26);
    if (c >= '0' && c <= '9')
        return (unsigned char)(c - '0' + 52);
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
        return 64;
    if (c == '=')
        return 65;
    return 255;
}

size_t resattn_base64_decoded_max(size_t len) {
    return len / 4 * 3 + 3;
}

int resattn_base64_decode(const char *src, size_t len, unsigned char *dst, size_t *out_len,
                          char *err, size_t err_len) {
    unsigned acc = 0; /* bits not yet written, `nbits` of them */
    int nbits = 0, quad = 0, pad = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char v = value_of((unsigned char)src[i]);
        if (v == 64)
            continue;
        if (v == 255) {
            snprintf(err, err_len, "base64: invalid character 0x%02x at offset %zu",
                     (unsigned char)src[i], i);
            return -1;
        }
        if (v == 65) { /* '=': only 1 or 2 of them, ending a group of 4 */
            if (quad < 2 || quad + (++pad) > 4) {
                snprintf(err, err_len, "base64: misplaced '=' at offset %zu", i);
                return -1;
            }
            if (quad + pad == 4)
                quad = 0;
            continue;
        }
        if (pad) {
            snprintf(err, err_len, "base64: data after '=' padding at offset %zu", i);
            return -1;
        }
        acc = (acc << 6) | v;
        nbits += 6;
        quad = (quad + 1) & 3;
        if (nbits >= 8) {
            nbits -= 8;
            dst[n++] = (unsigned char)(acc >> nbits);
            acc &= (1u << nbits) - 1;
        }
    }
    if (quad == 1) {
        snprintf(err, err_len, "base64: truncated (a lone final character)");
        return -1;
    }
    if (pad && quad != 0) {
        snprintf(err, err_len, "base64: incomplete padding");
        return -1;
    }
    if (acc) {
        snprintf(err, err_len, "base64: non-zero bits after the last byte");
        return -1;
    }
    *out_len = n;
    return 0;
}

char *resattn_base64_encode(const unsigned char *data, size_t len) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    size_t out_len = (len + 2) / 3 * 4;
    char *out = malloc(out_len + 1), *o = out;
    if (!out)
        return NULL;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *o++ = tab[v >> 18], *o++ = tab[(v >> 12) & 63], *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);
        *o++ = tab[v >> 18], *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}
