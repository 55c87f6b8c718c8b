/*
 * API keys, shared by the transports (HTTP and gRPC): an `Authorization: Bearer <key>`
 * header value (gRPC sends it as `authorization` metadata) checked against the configured
 * keys in time that does not depend on how much of a key matched or which key it was.
 */
#ifndef RESATTN_AUTH_H
#define RESATTN_AUTH_H

/* Whether header (the Authorization value, or NULL) is "Bearer <one of keys>"; surrounding
 * spaces around the token are ignored. */
int resattn_auth_bearer_ok(const char *const *keys, int num_keys, const char *header);

#endif
