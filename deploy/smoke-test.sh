#!/usr/bin/env bash
# End-to-end smoke test of the container image with podman (no Docker engine needed):
# builds the Dockerfile, checks the image size (<= 150 MB), runs the image hardened like the
# Kubernetes manifests (read-only root, no capabilities, no-new-privileges) on a free
# 127.0.0.1 port, and checks /healthz, /readyz, a KServe v2 JSON prediction, an example image
# through POST /predict, /metrics (promtool-clean, with every metric the Grafana dashboard
# reads), the image's HEALTHCHECK (`podman healthcheck run`), the non-root UID of the server
# process, that the thread defaults follow a --cpus quota, and `podman stop` (SIGTERM) under
# load: exit 0 with every request answered. Prints a summary and "smoke: N passed, N failed";
# exit 1 on any failure.
#
#   deploy/smoke-test.sh            # SMOKE_NO_BUILD=1 reuses an existing resattn:dev
#   SMOKE_CONTEXT=head deploy/smoke-test.sh   # build from the last commit, not the work tree
# Needs podman and the offline base image (../shared/tools/local-base-image.sh, run when the
# image is missing), curl and python3 (JSON handling).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
IMAGE=${IMAGE:-resattn:dev}
MAX_BYTES=$((150 * 1000 * 1000))
NAME=resattn-smoke-$$
SUITE=smoke
# shellcheck source=deploy/lib/container-test.sh
. deploy/lib/container-test.sh

ensure_base_image

# ---- build and size ----------------------------------------------------------------------
if [ "${SMOKE_NO_BUILD:-0}" != 1 ]; then
  echo "== podman build -t $IMAGE ."
  ctx=.
  if [ "${SMOKE_CONTEXT:-}" = head ]; then
    ctx=$TMP/context
    mkdir -p "$ctx" && git archive HEAD | tar -x -C "$ctx"
  fi
  t0=$(date +%s)
  if podman build --format docker --pull=never --network host -t "$IMAGE" "$ctx" >"$TMP/build.log" 2>&1; then
    ok "image builds ($(($(date +%s) - t0)) s)"
  else
    fail "image build"
    tail -n 30 "$TMP/build.log" | sed 's/^/    /'
    finish
  fi
fi
size=$(podman image inspect --format '{{.Size}}' "$IMAGE" 2>/dev/null || echo 0)
summary+=("image $IMAGE: $size bytes ($((size / 1000000)) MB), budget $((MAX_BYTES / 1000000)) MB")
check "image size $((size / 1000000)) MB <= 150 MB" test "$size" -gt 0 -a "$size" -le "$MAX_BYTES"
check "image has a HEALTHCHECK (docker format)" \
  bash -c "podman image inspect --format '{{json .Config.Healthcheck}}' $IMAGE | grep -q resattn-healthcheck"
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
check "image USER is non-root ($user)" bash -c "[[ '$user' =~ ^[1-9][0-9]*(:[0-9]+)?$ ]]"

# ---- run ---------------------------------------------------------------------------------
PORT=$(free_port)
URL=http://127.0.0.1:$PORT
echo "== podman run $NAME on $URL"
if ! podman run -d --name "$NAME" -p "127.0.0.1:$PORT:8080" --read-only --tmpfs /tmp:size=16m \
  --cap-drop ALL --security-opt no-new-privileges -e RESATTN_LOG_FORMAT=json \
  -e RESATTN_DRAIN_TIMEOUT_MS=10000 "$IMAGE" >"$TMP/run.out" 2>&1; then
  fail "podman run"
  cat "$TMP/run.out"
  finish
fi
started+=("$NAME")
ready=0
t0=$(date +%s)
for _ in $(seq 1 180); do
  if curl -fsS -o /dev/null "$URL/readyz" 2>/dev/null; then
    ready=1
    break
  fi
  [ "$(podman inspect --format '{{.State.Running}}' "$NAME")" = true ] || break
  sleep 0.5
done
if [ "$ready" = 1 ]; then
  ok "/readyz 200 after $(($(date +%s) - t0)) s"
else
  fail "/readyz never answered 200 (container running: $(podman inspect --format '{{.State.Running}}' "$NAME"))"
  podman logs "$NAME" 2>&1 | tail -n 30 | sed 's/^/    /'
  finish
fi
check "/healthz 200" curl -fsS "$URL/healthz"

# ---- predictions -------------------------------------------------------------------------
# KServe v2 JSON tensor of the model's input shape (always: also the drain load below). The
# model's URL name: "default" when the image endpoints serve it so, else the config name that
# /metrics reports in resattn_model_info.
name=$(curl -fsS "$URL/metrics" | sed -n 's/^resattn_model_info{.*model="\([^"]*\)".*/\1/p' | head -n1)
curl -fsS "$URL/v2/models/default" >"$TMP/meta.json" 2>/dev/null ||
  curl -fsS "$URL/v2/models/$name" >"$TMP/meta.json" 2>/dev/null
python3 - "$TMP/meta.json" "$TMP/req.json" <<'EOF'
import json, math, sys
meta = json.load(open(sys.argv[1]))
shape = [1] + [d for d in meta["inputs"][0]["shape"][1:]]
n = math.prod(shape)
data = [((i * 37) % 255) / 255.0 for i in range(n)]
json.dump({"inputs": [{"name": meta["inputs"][0]["name"], "shape": shape, "datatype": "FP32", "data": data}]},
          open(sys.argv[2], "w"))
EOF
name=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$TMP/meta.json" 2>/dev/null)
INFER=/v2/models/$name/infer
check "POST $INFER (v2 JSON) -> 200 with finite logits" bash -c "
  curl -fsS -H 'Content-Type: application/json' --data-binary @$TMP/req.json '$URL$INFER' |
  python3 -c 'import json,sys,math; r=json.load(sys.stdin); o=r[\"outputs\"][0]; assert o[\"data\"] and all(math.isfinite(x) for x in o[\"data\"]), r; print(o[\"name\"], o[\"shape\"])'"

# An example image through /predict (multipart upload).
example=$(find models/examples -name '*.png' 2>/dev/null | sort | head -n1)
if [ -z "$example" ]; then
  fail "no example image in models/examples/*.png for POST /predict"
else
  code=$(curl -sS -o "$TMP/pred.json" -w '%{http_code}' -F "image=@$example" "$URL/predict")
  check "POST /predict $(basename "$example") (multipart) -> $code with predictions" python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
p = r["predictions"]
assert len(p) >= 1 and all(0 <= x["probability"] <= 1 for x in p), r
print(r["model"], p[0])' "$TMP/pred.json"
  # All examples: the file name carries the true label ("3_dress.png"); informational.
  n=0
  right=0
  for f in models/examples/*.png; do
    n=$((n + 1))
    want=$(basename "$f" .png | cut -d_ -f2- | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9\n' ' ')
    got=$(curl -sS -F "image=@$f" "$URL/predict" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["predictions"][0]["label"])' 2>/dev/null |
      tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9\n' ' ')
    [ -n "$got" ] && [ "$(echo $got)" = "$(echo $want)" ] && right=$((right + 1))
  done
  summary+=("examples: top-1 label matches the file name for $right of $n images in models/examples")
fi

# ---- metrics -----------------------------------------------------------------------------
if curl -fsS "$URL/metrics" >"$TMP/metrics.txt" 2>"$TMP/out"; then
  ok "/metrics 200 ($(wc -l <"$TMP/metrics.txt") lines)"
  check "/metrics counts the prediction (resattn_http_requests_total, predict/infer, code 200)" \
    grep -qE '^resattn_http_requests_total\{endpoint="[a-z0-9_]*(predict|infer)[a-z0-9_]*",code="200"\} [1-9]' "$TMP/metrics.txt"
  # Every metric the Grafana dashboard queries must exist in the real exposition.
  missing=$(python3 - "$TMP/metrics.txt" deploy/grafana/dashboards/resattn.json <<'EOF'
import json, re, sys
have = {l.split("{")[0].split(" ")[0] for l in open(sys.argv[1]) if l and not l.startswith("#")}
d = json.load(open(sys.argv[2]))
want = {m for p in d["panels"] for t in p.get("targets", [])
        for m in re.findall(r"\b(?:resattn|process)_[a-z_]+\b", t["expr"])}
print(" ".join(sorted(want - have)))
EOF
  )
  check "every metric the dashboard reads is exported${missing:+ (missing: $missing)}" test -z "$missing"
  command -v promtool >/dev/null && check "promtool check metrics" bash -c "promtool check metrics <$TMP/metrics.txt"
else
  fail "/metrics"
fi

# ---- health check, user, CPU quota -------------------------------------------------------
check "podman healthcheck run (HEALTHCHECK via /healthz)" podman healthcheck run "$NAME"
uid=$(podman exec "$NAME" id -u 2>/dev/null)
check "podman exec id -u = $uid (non-root)" test -n "$uid" -a "$uid" != 0
pid1=$(podman exec "$NAME" awk '/^Uid:/ {print $2, $3, $4, $5}' /proc/1/status 2>/dev/null)
check "server process (PID 1) runs as UID $pid1" bash -c "[ -n '$pid1' ] && ! echo '$pid1' | grep -qw 0"
rss=$(awk '/^process_resident_memory_bytes/ {printf "%d", $2 / 1048576}' "$TMP/metrics.txt" 2>/dev/null)
[ -n "$rss" ] && summary+=("resident memory after warm-up and the predictions: ${rss} MiB")
# Workers x BLAS threads follow the CPU quota: `resattn serve --help` reports the usable CPUs
# as the server computes them inside the container's cgroup.
host_cpus=$(podman run --rm "$IMAGE" --help 2>&1 | sed -n 's/.*Usable CPUs here: \([0-9]*\).*/\1/p')
one_cpu=$(podman run --rm --cpus 1 "$IMAGE" --help 2>&1 | sed -n 's/.*Usable CPUs here: \([0-9]*\).*/\1/p')
summary+=("usable CPUs seen by the server: $host_cpus without a limit, $one_cpu with --cpus 1 (cgroup $(stat -fc %T /sys/fs/cgroup | sed 's/cgroup2fs/v2/; s/tmpfs/v1/'))")
check "thread defaults follow --cpus 1 (usable CPUs = ${one_cpu:-?})" test "${one_cpu:-x}" = 1

# ---- clean stop under load ---------------------------------------------------------------
# 8 clients post v2 requests (one connection each, so no keep-alive race) while `podman stop`
# sends SIGTERM: every request must get 200 (or 503 while draining) until the port refuses
# connections; a reset or a 5xx other than 503 means a request was dropped.
python3 - 127.0.0.1 "$PORT" "$INFER" "$TMP/req.json" 8 >"$TMP/drain.json" 2>&1 <<'EOF' &
import http.client, json, sys, threading, time
host, port, path, body, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], open(sys.argv[4], "rb").read(), float(sys.argv[5])
counts, lock, end = {}, threading.Lock(), time.time() + seconds
def client():
    while time.time() < end:
        try:
            c = http.client.HTTPConnection(host, port, timeout=15)
            c.request("POST", path, body, {"Content-Type": "application/json", "Connection": "close"})
            k = str(c.getresponse().status)
            c.close()
        except ConnectionRefusedError:
            k = "refused"
            time.sleep(0.05)
        except Exception as e:
            k = type(e).__name__
        with lock:
            counts[k] = counts.get(k, 0) + 1
threads = [threading.Thread(target=client) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(counts))
EOF
load=$!
sleep 2
t0=$(date +%s)
podman stop -t 30 "$NAME" >/dev/null 2>&1
took=$(($(date +%s) - t0))
wait "$load"
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
check "podman stop (SIGTERM) under load -> exit code $exit_code in ${took} s" test "$exit_code" = 0
check "every request during the stop answered: $(cat "$TMP/drain.json")" python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
assert c.get("200", 0) > 0 and set(c) <= {"200", "503", "refused"}, c' "$TMP/drain.json"
podman logs "$NAME" >"$TMP/logs.txt" 2>&1
summary+=("server log: $(wc -l <"$TMP/logs.txt") lines; last: $(tail -n1 "$TMP/logs.txt" | cut -c1-150)")
finish
