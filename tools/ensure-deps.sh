#!/bin/sh
# Installs the Debian 12 packages resattn needs to build, run and test, when missing.
# Called by `make run` and `make test`; safe to run again (does nothing when all are present).
set -eu
PKGS="build-essential pkg-config libopenblas-dev libjansson-dev libmicrohttpd-dev check
libpng-dev libjpeg62-turbo-dev curl libcurl4-openssl-dev prometheus python3 openssl
clang libclang-rt-14-dev valgrind clang-format
python3-torch python3-torchvision python3-pil python3-numpy"
# (python3-torch, -torchvision, -pil, -numpy: the export suite, tests/check_export.c, runs
# tools/export_pytorch.py and the README's own-model example against PyTorch)
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
