#!/bin/bash
# Latency during a model swap against latency without one, same load (see bench_swap.c):
# `resattn serve --model-repository` on a CIFAR-size SE-ResNet-18 (3x32x32, 11M parameters,
# random weights), 8 keep-alive clients posting v2 binary requests without pause, and ROUNDS
# swaps to a new version (atomic rename + SIGHUP: the new version is read, packed and warmed
# up while the clients keep going, then takes over; the old one is freed after its last
# request). Writes tests/bench/SWAP_RESULTS.md.
#
#   tests/bench/bench_swap.sh [ROUNDS]        (default 8)
#
# Environment: BUILD (default build-bench), OUT (default tests/bench/SWAP_RESULTS.md; "-"
# prints only), CONNS (default 8). Needs curl and /usr/bin/python3 with torch (the model).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ROUNDS=${1:-8}
CONNS=${CONNS:-8}
BUILD=${BUILD:-build-bench}
OUT=${OUT:-tests/bench/SWAP_RESULTS.md}
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/resattn-bench-swap.XXXXXX)
SPID=
cleanup() {
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

make -s BUILD="$BUILD" "$BUILD/resattn" >/dev/null
# shellcheck disable=SC2046 # pkg-config flags are meant to split
cc -std=c11 -O2 -D_GNU_SOURCE -pthread -o "$WORK/bench_swap" tests/bench/bench_swap.c \
    $(pkg-config --cflags --libs libcurl) -lm
"$PY" tests/bench/bench_server_models.py "$WORK/models" >/dev/null
MODEL=$WORK/models/cifar_se.safetensors
mkdir -p "$WORK/repo/m/1"
cp "$MODEL" "$WORK/repo/m/1/model.safetensors"

# One v2 binary-extension request: JSON header + little-endian FP32 [1,3,32,32].
"$PY" - "$WORK" <<'PYEOF'
import json, sys, numpy as np
out = sys.argv[1]
x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                               "parameters": {"binary_data_size": x.nbytes}}]}).encode()
open(f"{out}/body.bin", "wb").write(head + x.tobytes())
open(f"{out}/body.hlen", "w").write(str(len(head)))
PYEOF

"$BUILD/resattn" serve --model-repository "$WORK/repo" --host 127.0.0.1 --port 0 \
    --port-file "$WORK/port" 2>"$WORK/server.log" >/dev/null &
SPID=$!
for _ in $(seq 1 600); do
    [ -s "$WORK/port" ] && curl -sf -o /dev/null "http://127.0.0.1:$(cat "$WORK/port")/readyz" && break
    sleep 0.1
done
PORT=$(cat "$WORK/port")
TABLE=$("$WORK/bench_swap" "$PORT" "$SPID" "$WORK/repo" "$MODEL" "$WORK/body.bin" \
    "$(cat "$WORK/body.hlen")" "$ROUNDS" "$CONNS" 2>"$WORK/rounds.txt")
LOADS=$(grep -o "version [0-9]*: loaded in [0-9]* ms" "$WORK/server.log" | tail -n +2 |
    sed 's/.*loaded in \([0-9]*\) ms/\1/' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
kill "$SPID"
wait "$SPID" || true
SPID=

REPORT=$(cat <<MD
# Latency during a model swap (tests/bench/bench_swap.sh)

Measured $(date -u +"%Y-%m-%d %H:%M") UTC on $(nproc) CPUs ($(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), shared machine (load average $(cut -d" " -f1-3 /proc/loadavg) at the end).
Model: Pattern-1 SE-ResNet-18 (CIFAR stem, 3x32x32, 10 classes, random weights, $(( $(stat -c %s "$MODEL") / 1000000 )) MB file).
\`resattn serve --model-repository\` with default workers and batching; $CONNS keep-alive clients
posting one-image v2 binary requests without pause; $ROUNDS swaps, each an atomic rename of a
new version folder plus SIGHUP. The swap window runs from the SIGHUP until 0.5 s after the first
answer from the new version (read, parse, pack, warm-up of one context per worker, swap, the old
version drained and freed); the control window has the same length just before the SIGHUP.
Median load time of a version (from the server log): ${LOADS} ms.

$TABLE

Per round:
\`\`\`
$(cat "$WORK/rounds.txt")
\`\`\`
MD
)
if [ "$OUT" = "-" ]; then
    echo "$REPORT"
else
    echo "$REPORT" >"$OUT"
    echo "$REPORT"
    echo "written to $OUT"
fi
