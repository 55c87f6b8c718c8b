/*
 * Listening sockets shared by the HTTP and gRPC transports (see listen.c); their gentle close
 * at the drain is listener.h.
 */
#ifndef RESATTN_LISTEN_H
#define RESATTN_LISTEN_H

#include <resattn/resattn.h>
#include <stddef.h>

/* Create the listening socket for host:port (a numeric address or a host name; port 0 = any
 * free port), non-blocking, without port sharing: when another socket holds the address this
 * fails with one line naming the host and port asked for and `flag` (the option that chose
 * the port: "--port", "--grpc-port"), and with its own line for "permission denied".
 * RESATTN_ERR_INVALID_ARGUMENT for a host that does not resolve, RESATTN_ERR_IO otherwise. */
resattn_status resattn_listen(const char *host, int port, const char *flag, int *fd, char *err,
                              size_t err_len);
/* The port a socket is bound to, or -1. */
int resattn_bound_port(int fd);
/* "host:port" as asked for, IPv6 literals in brackets. */
void resattn_format_where(char *out, size_t n, const char *host, int port);

#endif
