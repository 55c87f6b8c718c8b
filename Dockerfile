# resattn as a distroless container image (~53 MB): the binary, the shared libraries it
# loads, the dynamic loader, /etc/passwd and /etc/group, an empty /models; no shell, no
# package manager, no coreutils.
#
# Stage "build" installs the -dev packages, runs `make`, and assembles the final root in
# /image-root with deploy/image-root.sh: the libraries are exactly those `ldd` lists for the
# binary (symlinks resolved, copied under the paths ldd prints; a "not found" fails the
# build), so a new dependency comes along without editing this file. The final stage is
# `FROM scratch` plus that directory. The binary carries the built-in model
# (models/default.safetensors) and the web page in its read-only data, and writes nothing to
# disk: the container runs with a read-only root and no writable mount. The server runs as
# UID/GID 10001, is configured with RESATTN_* variables (see `resattn serve --help`), and
# sizes its workers and OpenBLAS threads from the container's CPU quota (cgroup v2 or v1)
# unless RESATTN_WORKERS / RESATTN_BLAS_THREADS are set. The HEALTHCHECK is the binary itself
# (`resattn healthcheck`: GET /readyz on RESATTN_PORT, exit 0/1). Without a shell, debug with
# the binary as entrypoint (`--entrypoint /usr/local/bin/resattn IMAGE inspect`) or a debug
# container sharing the pod's namespaces.
#
#   podman build --format docker --pull=never --network host -t resattn:dev .
#   podman run --rm -p 127.0.0.1:8080:8080 --read-only --cap-drop ALL resattn:dev
#   podman run --rm -p 127.0.0.1:8080:8080 -v $PWD/my.safetensors:/models/my.safetensors:ro \
#       -e RESATTN_MODEL=/models/my.safetensors resattn:dev
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
# libopenblas-dev brings the pthread OpenBLAS (the serial build is not thread-safe;
# image-root.sh checks), libmicrohttpd-dev brings GnuTLS.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config check libopenblas-dev libjansson-dev libmicrohttpd-dev \
      libpng-dev libjpeg62-turbo-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# -O2 like the default build; debug info is stripped, symbols kept for readable backtraces.
RUN make -j"$(nproc)" BUILD=/out /out/resattn \
 && strip --strip-debug /out/resattn \
 && /out/resattn --version \
 && sh deploy/image-root.sh /out/resattn /image-root

FROM scratch
COPY --from=build /image-root/ /
# OpenBLAS 0.3.21 does not know recent AMD cores and crashes in its AVX-512 kernels there;
# Haswell (AVX2) kernels run on every x86-64 CPU with AVX2. Override at build or run time.
ARG OPENBLAS_CORETYPE=Haswell
ENV OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE} \
    RESATTN_HOST=0.0.0.0 \
    RESATTN_PORT=8080 \
    RESATTN_GRPC_PORT=8001
USER 10001:10001
WORKDIR /models
# HTTP (REST: v2, TF Serving, /predict, metrics) and gRPC (Open Inference Protocol, Health)
EXPOSE 8080 8001
STOPSIGNAL SIGTERM
# Exec form: there is no shell. The check reads the same RESATTN_* variables as the server
# (port, API key with RESATTN_AUTH_HEALTH, TLS) and gives up after 2 s by default.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/resattn", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/resattn", "serve"]
LABEL org.opencontainers.image.title="resattn" \
      org.opencontainers.image.description="Inference server for residual CNNs with attention (SE/ECA/CBAM/CA); distroless: the binary and its shared libraries from Debian 12" \
      org.opencontainers.image.base.name="scratch"
