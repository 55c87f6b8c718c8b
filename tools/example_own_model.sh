#!/bin/bash
# Runs the README's "Serving your own model" example exactly as written (the ```sh blocks
# after the "own-model-example" markers, in order), in a scratch directory where build/resattn, tools/
# and models/ point into this checkout, with the port 8081 replaced by a free one. Then
# checks what the example printed: inspect's parameter count equals PyTorch's, /predict
# answered for both models, and both PyTorch comparisons passed (the example's own assert
# fails the run when the logits differ by more than 1e-3 of their scale).
#
#   tools/example_own_model.sh [path/to/resattn]      (default: $RESATTN_BIN or build/resattn)
#
# Needs python3-torch, python3-torchvision and curl. Exit 0 when everything held.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${1:-${RESATTN_BIN:-$ROOT/build/resattn}}")
WORK=$(mktemp -d /tmp/resattn-own-model-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "example_own_model: $*" >&2; exit 1; }

mkdir "$WORK/build"
ln -s "$BIN" "$WORK/build/resattn"
ln -s "$ROOT/tools" "$WORK/tools"
ln -s "$ROOT/models" "$WORK/models"
# every ```sh block right after an "own-model-example" marker, in order
awk '/<!-- own-model-example/ { m = 1; next } m && /^```sh$/ { b = 1; m = 0; next }
     b && /^```$/ { b = 0; next } b' "$ROOT/README.md" > "$WORK/example.sh"
[ "$(grep -c . "$WORK/example.sh")" -gt 10 ] || fail "no example block found in README.md"
PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/127\.0\.0\.1:8081/127.0.0.1:$PORT/g; s/--port 8081/--port $PORT/g" "$WORK/example.sh"
# (8081 as a whole number: the free port may itself contain the digits, e.g. 38081)
[ "$PORT" = 8081 ] || ! grep -qE '(^|[^0-9])8081([^0-9]|$)' "$WORK/example.sh" ||
    fail "port 8081 left in the example after substitution"

cd "$WORK"
# The example's own `kill %1` stops the server; the trap stops it when a command failed.
if ! bash -e -c 'trap "kill \$(jobs -p) 2>/dev/null || true" EXIT; . ./example.sh' \
        > out.log 2>&1; then
    cat out.log >&2
    fail "a command of the example failed (output above)"
fi
cat out.log

ours=$(sed -n 's/^parameters: \([0-9]*\) .*/\1/p' out.log)
theirs=$(sed -n 's/^PyTorch parameters: \([0-9]*\)$/\1/p' out.log)
[ -n "$ours" ] && [ "$ours" = "$theirs" ] || fail "inspect says '$ours' parameters, PyTorch '$theirs'"
grep -q '^model: *resnet18 (served as /v2/models/resnet18)' out.log || fail "inspect's served name"
grep -q '{"model":"resnet18","predictions":\[{"label":' out.log || fail "no /predict answer from resnet18"
grep -q '{"model":"fashion","predictions":\[{"label":"Ankle boot"' out.log ||
    fail "the built-in model did not answer as 'fashion'"
[ "$(grep -c 'max |resattn - PyTorch| = .*same top class: True' out.log)" = 2 ] ||
    fail "the PyTorch comparisons did not both pass"
grep -q '"served_name": "resnet18"' out.log || fail "inspect --json"
grep -q '^1\. .* (class [0-9]*): 0\.' out.log || fail "predict on the JPEG printed no top-k"
grep -q '{"model":"resnet18","model_file":"resnet18.safetensors","batch":8' out.log ||
    fail "bench did not name the model"
echo "example_own_model: the README example ran as written; resattn agrees with PyTorch"
