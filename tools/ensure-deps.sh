#!/bin/sh
# Installs the Debian 12 packages resattn needs, when missing; safe to run again (does nothing
# when all are present). One argument picks the set:
#   run   building and serving (`make run`): compiler, pkg-config, the libraries the binary links
#         (nghttp2, protobuf-c and protoc-c for the gRPC service)
#   test  `make test`: run + Check, libcurl, curl, Prometheus (scrape test, promtool), python3,
#         openssl (test certificates), PyTorch (the exporter tests), the gRPC client suite's
#         grpcio, protobuf, protoc and h2. The browser test and the
#         deployment validators install their own
#         extras (chromium, nodejs, npm, docker-compose) in tests/browser/run.sh and
#         deploy/validate.sh.
#   ci    `.ci/run`: test + clang and its runtime (libFuzzer), clang-format, valgrind
# Default: test.
set -eu
RUN="build-essential pkg-config libopenblas-dev libjansson-dev libmicrohttpd-dev libpng-dev
libjpeg62-turbo-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler"
# python3-torch, -torchvision, -pil, -numpy: the export suite (tests/check_export.c) runs
# tools/export_pytorch.py and the README's own-model example against PyTorch.
# python3-grpcio, -protobuf, protobuf-compiler, python3-h2: tests/grpc/test_grpc.py.
TEST="$RUN check libcurl4-openssl-dev curl prometheus python3 openssl python3-torch
python3-torchvision python3-pil python3-numpy python3-grpcio python3-protobuf protobuf-compiler
python3-h2"
CI="$TEST clang libclang-rt-14-dev clang-format valgrind"
case "${1:-test}" in
run) PKGS=$RUN ;;
test) PKGS=$TEST ;;
ci) PKGS=$CI ;;
*)
    echo "usage: $0 [run|test|ci]" >&2
    exit 2
    ;;
esac
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
