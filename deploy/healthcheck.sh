#!/bin/bash
# Container health check for resattn: GET /healthz on the server's own port and succeed only
# on HTTP 200. Uses bash's /dev/tcp, so the runtime image needs no curl or wget. Installed in
# the image as /usr/local/bin/resattn-healthcheck and run by the Dockerfile's HEALTHCHECK
# (`podman healthcheck run NAME` runs it on demand). Exit 0 healthy, 1 unhealthy.
set -u
port=${RESATTN_PORT:-8080}
# The server binds RESATTN_HOST (0.0.0.0 in the image); ask it on loopback.
exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nUser-Agent: resattn-healthcheck\r\n\r\n' "$port" >&3
# Status line: "HTTP/1.1 200 OK".
IFS=' ' read -r -t 2 _proto code _rest <&3 || exit 1
exec 3>&-
[ "$code" = 200 ]
