# resattn as a small, hardened container image.
#
# Stage "build" installs the -dev packages and runs `make`; the final stage starts again from
# debian:bookworm-slim with only the shared libraries the binary links (checked with ldd at
# build time) plus the binary, which carries the built-in model (models/default.safetensors)
# in its read-only data. The server runs as UID/GID 10001, is configured with RESATTN_*
# variables (see `resattn serve --help`), and sizes its workers and OpenBLAS threads from the
# container's CPU quota (cgroup) unless RESATTN_WORKERS / RESATTN_BLAS_THREADS are set.
#
#   podman build --format docker --pull=never --network host -t resattn:dev .
#   podman run --rm -p 127.0.0.1:8080:8080 resattn:dev
#   podman run --rm -p 127.0.0.1:8080:8080 -v $PWD/my.safetensors:/models/my.safetensors:ro \
#       -e RESATTN_MODEL=/models/my.safetensors resattn:dev
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
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
 && /out/resattn --version

FROM ${DEBIAN_IMAGE}
# OpenBLAS 0.3.21 does not know recent AMD cores and crashes in its AVX-512 kernels there;
# Haswell (AVX2) kernels run on every x86-64 CPU with AVX2. Override at build or run time.
ARG OPENBLAS_CORETYPE=Haswell
# Runtime libraries only: the pthread OpenBLAS (the serial build is not thread-safe),
# jansson, libmicrohttpd (+ GnuTLS, already in the base), libpng, libjpeg-turbo, and for
# gRPC nghttp2 and protobuf-c.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libopenblas0-pthread libjansson4 libmicrohttpd12 libpng16-16 libjpeg62-turbo \
      libnghttp2-14 libprotobuf-c1 \
 && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log \
 && groupadd --system --gid 10001 resattn \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin resattn \
 && find / -xdev -perm /6000 -type f -exec chmod a-s {} + \
 && mkdir -p /models
COPY --from=build /out/resattn /usr/local/bin/resattn
COPY deploy/healthcheck.sh /usr/local/bin/resattn-healthcheck
# Fail the build, not the first start, when a shared library is missing.
RUN if ldd /usr/local/bin/resattn | grep 'not found'; then exit 1; fi \
 && /usr/local/bin/resattn --version

ENV OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE} \
    RESATTN_HOST=0.0.0.0 \
    RESATTN_PORT=8080
USER 10001:10001
WORKDIR /models
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/resattn-healthcheck"]
ENTRYPOINT ["/usr/local/bin/resattn", "serve"]
LABEL org.opencontainers.image.title="resattn" \
      org.opencontainers.image.description="Inference server for residual CNNs with attention (SE/ECA/CBAM/CA)" \
      org.opencontainers.image.base.name="debian:bookworm-slim"
