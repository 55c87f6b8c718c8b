#!/bin/bash
# resattn FP32 against ONNX Runtime FP32 (npm onnxruntime-node, CPU provider) on the same
# PyTorch models: builds the resattn worker (tests/bench/resattn_worker.c on
# $BUILD/libresattn.a), installs onnxruntime-node from tests/bench/package-lock.json when
# missing (--ignore-scripts: its install script fetches GPU parts; the CPU library is in the
# package), exports the models (tests/bench/ort_models.py) into a temporary directory and
# runs the interleaved comparison (tests/bench/bench_ort.py; its options pass through).
#
#   tests/bench/bench_ort.sh [--threads 1,2] [--seconds 20] [--only SUBSTR] ...
#
# Environment: BUILD (default build-bench), OUT (default tests/bench/ORT_RESULTS.md; "-"
# prints only), JSON (also write every turn's ratio there). Needs node and npm, and
# /usr/bin/python3 with Debian's python3-torch.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build-bench}
OUT=${OUT:-tests/bench/ORT_RESULTS.md}
PY=/usr/bin/python3
ONLY=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    [ "${args[$i]}" = --only ] && ONLY=${args[$((i + 1))]:-}
done
if ! command -v npm >/dev/null 2>&1; then
    echo "bench_ort.sh: needs node and npm (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "bench_ort.sh: needs Debian's python3-torch for $PY" >&2
    exit 1
fi
if [ ! -d "$HERE/node_modules/onnxruntime-node" ]; then
    (cd "$HERE" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
make -s BUILD="$BUILD" "$BUILD/libresattn.a"
# shellcheck disable=SC2046 # pkg-config flags are meant to split
cc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -pthread -Iinclude \
    -o "$BUILD/resattn_worker" tests/bench/resattn_worker.c "$BUILD/libresattn.a" \
    $(pkg-config --libs jansson openblas) -lm
WORK=$(mktemp -d /tmp/resattn-bench-ort.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$PY" tests/bench/ort_models.py "$WORK" --only "$ONLY" >/dev/null
extra=()
[ -n "${JSON:-}" ] && extra=(--json "$JSON")
"$PY" tests/bench/bench_ort.py --models "$WORK" --worker "$BUILD/resattn_worker" --out "$OUT" \
    --command "tests/bench/bench_ort.sh${*:+ $*}" "${extra[@]}" "$@"
