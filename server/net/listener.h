/*
 * Closing a listening TCP socket without resetting connections (any transport: HTTP now,
 * gRPC later). Closing a listener makes the kernel reset every connection still in its
 * accept queue and forget every handshake in progress, whose client then gets a reset for
 * the request it has already sent. A transport that stops serving therefore:
 *   1. resattn_listener_settle(): the kernel stops answering new SYNs (a socket filter drops
 *      them; those clients retry their SYN and are refused in step 2), and the call waits
 *      until the handshakes in progress have completed and the transport, which keeps
 *      accepting meanwhile, has emptied the accept queue;
 *   2. the transport stops accepting (e.g. MHD_quiesce_daemon);
 *   3. resattn_listener_unlisten(): no longer listening, so new connections are refused at
 *      connect, while the descriptor stays valid for a transport thread that may still hold
 *      it; it is closed after the transport has stopped.
 */
#ifndef RESATTN_LISTENER_H
#define RESATTN_LISTENER_H

#include <resattn/resattn.h>
#include <stddef.h>

typedef struct resattn_listener_settle_info {
    int handshakes; /* handshakes in progress when the filter went on */
    int queued;     /* connections then waiting in the accept queue */
    int waited_ms;  /* until both were zero, or the timeout */
    int settled;    /* 1: both reached zero; 0: timeout (or the counts were unavailable) */
} resattn_listener_settle_info;

/* Step 1 above on the listening socket fd, waiting at most timeout_ms; info may be NULL.
 * RESATTN_ERR_IO with err filled when the filter cannot be attached (the caller goes on
 * with steps 2 and 3: only the race this closes remains). */
resattn_status resattn_listener_settle(int fd, int timeout_ms, resattn_listener_settle_info *info,
                                       char *err, size_t err_len);
/* Step 3: stop listening on fd (shutdown(SHUT_RD) on a listener); 0 or -1 with errno. */
int resattn_listener_unlisten(int fd);

#endif
