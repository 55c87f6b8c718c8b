/*
 * API key check of both transports (see auth.h). The token is compared with every key
 * without an early exit, so the time taken does not tell how much of a key matched or which
 * key it was (only the token's own length shows).
 */
#include "runtime/auth.h"

#include <string.h>
#include <strings.h>

static int key_matches(const char *const *keys, int num_keys, const char *tok, size_t n) {
    int found = 0;
    for (int k = 0; k < num_keys; k++) {
        const unsigned char *key = (const unsigned char *)keys[k];
        size_t klen = strlen((const char *)key);
        unsigned d = klen != n;
        for (size_t i = 0; i < n; i++)
            d |= (unsigned)((const unsigned char *)tok)[i] ^ key[klen ? i % klen : 0];
        found |= d == 0;
    }
    return found;
}

int resattn_auth_bearer_ok(const char *const *keys, int num_keys, const char *h) {
    if (!h || strncasecmp(h, "Bearer ", 7))
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    while (n && h[n - 1] == ' ')
        n--;
    return n > 0 && key_matches(keys, num_keys, h, n);
}
