/*
 * Closing a listening TCP socket without resetting connections (for any transport: HTTP now,
 * gRPC later). Closing a listener makes the kernel reset every connection still in its
 * accept queue and forget every handshake in progress, whose client then gets a reset for
 * the request it already sent. So (see listener.c):
 *   1. the transport stops accepting (e.g. MHD_quiesce_daemon) and hands the socket here;
 *   2. resattn_listener_close_gently() accepts every connection that completes and gives
 *      it to the transport (take), until the listener is frozen: its accept queue is full
 *      with one connection of our own, so the kernel drops new SYNs (those clients send
 *      them again about 1 s later and are refused), and no handshake is in progress; then
 *      it stops listening (new connections refused at connect). The descriptor stays open
 *      for a transport thread that may still hold its number: close it after the
 *      transport has stopped. No capability is needed.
 */
#ifndef RESATTN_LISTENER_H
#define RESATTN_LISTENER_H

#include <resattn/resattn.h>
#include <stddef.h>
#include <sys/socket.h>

/* Hand an accepted connection (non-blocking, close-on-exec) to the transport, which owns
 * it from here, also on failure. */
typedef void (*resattn_listener_take_fn)(void *arg, int fd, const struct sockaddr *peer,
                                         socklen_t peer_len);

typedef struct resattn_listener_close_info {
    int taken;      /* connections accepted here and handed to the transport */
    int handshakes; /* handshakes in progress when the close began, -1 if unknown */
    int attempts;   /* tries to freeze the listener */
    int waited_ms;
    int settled; /* 1: frozen, nothing lost; 0: timeout or no way to count (see err) */
} resattn_listener_close_info;

/* Step 2 above on the listening socket fd, which nobody else accepts on any more, within
 * timeout_ms; info may be NULL. Returns RESATTN_OK when the listener was frozen and closed
 * cleanly; otherwise it is closed anyway after the timeout (or at once when the kernel's
 * socket counts are unavailable) and err says why. */
resattn_status resattn_listener_close_gently(int fd, int timeout_ms, resattn_listener_take_fn take,
                                             void *arg, resattn_listener_close_info *info,
                                             char *err, size_t err_len);

#endif
