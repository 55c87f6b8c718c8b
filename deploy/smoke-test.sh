#!/usr/bin/env bash
# End-to-end smoke test of the container image with podman (no Docker engine needed):
# builds the Dockerfile and checks the distroless image: size <= 60 MB, USER 10001, its
# filesystem holds only the binary, shared libraries, the loader, /etc/passwd, /etc/group and
# /models (no /bin/sh, apt, dpkg), `--entrypoint /bin/sh` cannot start, the binary works as
# entrypoint for debugging (`inspect`). Then runs the image hardened like the Kubernetes
# manifests (read-only root with no tmpfs at all, no capabilities, no-new-privileges) on a
# free 127.0.0.1 port, and checks /healthz, /readyz, a KServe v2 JSON prediction, an example
# image through POST /predict, /metrics (promtool-clean, with every metric the Grafana
# dashboard reads), the image's HEALTHCHECK (`podman healthcheck run`, i.e. `resattn
# healthcheck`; also exit 1 against a closed port), the UID and capabilities of the server
# process, that the thread defaults follow a --cpus quota, and `podman stop` (SIGTERM) under
# load: exit 0 with every request answered. Prints a summary and "smoke: N passed, N failed";
# exit 1 on any failure.
#
#   deploy/smoke-test.sh            # SMOKE_NO_BUILD=1 reuses an existing resattn:dev
#   SMOKE_CONTEXT=head deploy/smoke-test.sh   # build from the last commit, not the work tree
# Needs podman and the offline base image (../shared/tools/local-base-image.sh, run when the
# image is missing), curl, python3 (JSON handling) and Debian's python3-grpcio (gRPC health).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
IMAGE=${IMAGE:-resattn:dev}
MAX_BYTES=$((60 * 1000 * 1000)) # podman counts MB as 10^6 bytes
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
mb=$(awk -v b="$size" 'BEGIN {printf "%.1f", b / 1e6}')
echo "image $IMAGE: $size bytes = $mb MB (podman image inspect --format '{{.Size}}')"
summary+=("image $IMAGE: $size bytes = $mb MB ($(awk -v b="$size" 'BEGIN {printf "%.1f", b / 1048576}') MiB), budget $((MAX_BYTES / 1000000)) MB")
check "image size $mb MB <= 60 MB" test "$size" -gt 0 -a "$size" -le "$MAX_BYTES"
check "image HEALTHCHECK runs the binary: [\"/usr/local/bin/resattn\", \"healthcheck\"] (docker format)" \
  bash -c "podman image inspect --format '{{json .Config.Healthcheck.Test}}' $IMAGE | grep -qx '\[\"CMD\",\"/usr/local/bin/resattn\",\"healthcheck\"\]'"
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
check "image USER is 10001:10001 ($user)" test "$user" = 10001:10001

# ---- the image's filesystem --------------------------------------------------------------
# Every file of the image, from an export of a created (never started) container.
cid=$(podman create "$IMAGE" 2>/dev/null)
podman export -o "$TMP/rootfs.tar" "$cid" 2>/dev/null
podman rm "$cid" >/dev/null 2>&1
tar --numeric-owner -tvf "$TMP/rootfs.tar" >"$TMP/files.txt"
awk '{print $NF}' "$TMP/files.txt" | sed 's,^\./,,; s,/$,,' | sort >"$TMP/paths.txt"
summary+=("image filesystem: $(grep -c '^-' "$TMP/files.txt") files, $(grep -c '^d' "$TMP/files.txt") directories, $(grep -c '^[lh]' "$TMP/files.txt") links")
check "image filesystem listed ($(wc -l <"$TMP/paths.txt") entries)" test -s "$TMP/paths.txt"
for f in bin/sh bin/bash bin/busybox usr/bin/sh usr/bin/apt usr/bin/apt-get usr/bin/dpkg bin/ls usr/bin/env; do
  check "no /$f in the image" bash -c "! grep -qx '$f' $TMP/paths.txt"
done
# Regular files: the binary, /etc/passwd and /etc/group, shared objects; no links, no devices.
extra=$(grep '^-' "$TMP/files.txt" | awk '{print $NF}' | sed 's,^\./,,' |
  grep -vxE 'usr/local/bin/resattn|etc/passwd|etc/group|(usr/)?lib(64|/x86_64-linux-gnu)?/[^/]+\.so(\.[0-9]+)*' || true)
check "only the binary, shared libraries, passwd and group are files${extra:+ (also: $(echo $extra))}" test -z "$extra"
check "no symlinks, devices or other special files" bash -c "! grep -q '^[^-d]' $TMP/files.txt"
check "/etc/passwd and /etc/group name UID/GID 10001" bash -c "
  tar -xOf $TMP/rootfs.tar etc/passwd | grep -qE '^[a-z_][a-z0-9_-]*:x:10001:10001:' &&
  tar -xOf $TMP/rootfs.tar etc/group | grep -qE '^[a-z_][a-z0-9_-]*:x:10001:'"
check "/models is an empty directory owned by 10001" bash -c "
  grep -qE '^d[rwx-]{9} 10001/10001 .* (\./)?models/?\$' $TMP/files.txt && [ \$(grep -c '^models/' $TMP/paths.txt) = 0 ]"
# No shell to run: `--entrypoint /bin/sh` fails to start; the binary itself debugs.
if podman run --rm --entrypoint /bin/sh "$IMAGE" -c 'echo shell' >"$TMP/sh.out" 2>&1; then
  fail "podman run --entrypoint /bin/sh started a shell: $(head -c 200 "$TMP/sh.out")"
elif grep -q '/bin/sh.*no such file or directory' "$TMP/sh.out"; then
  ok "podman run --entrypoint /bin/sh fails: $(grep -o 'stat /bin/sh: [a-z ]*' "$TMP/sh.out" | head -n1)"
else
  fail "podman run --entrypoint /bin/sh failed, but not for want of /bin/sh: $(tail -n1 "$TMP/sh.out")"
fi
check "podman run --entrypoint /usr/local/bin/resattn IMAGE inspect (debugging without a shell)" \
  bash -c "podman run --rm --entrypoint /usr/local/bin/resattn $IMAGE inspect 2>&1 | grep -qi 'param'"

# ---- run ---------------------------------------------------------------------------------
PORT=$(free_port)
GRPC_PORT=$(free_port)
URL=http://127.0.0.1:$PORT
echo "== podman run $NAME on $URL"
# --read-only-tmpfs=false: podman would otherwise mount writable tmpfs on /tmp, /var/tmp and
# /run; the server needs no writable path at all.
if ! podman run -d --name "$NAME" -p "127.0.0.1:$PORT:8080" -p "127.0.0.1:$GRPC_PORT:8001" --read-only --read-only-tmpfs=false \
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
# gRPC on the image's RESATTN_GRPC_PORT (8001): grpc.health.v1 Check answers SERVING (field 1
# = 1, bytes 08 01), as a Kubernetes grpc: probe sees it. A generic call: no generated code.
check "gRPC Health/Check on port 8001 -> SERVING" /usr/bin/python3 -c '
import grpc, sys
ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[1])
check = ch.unary_unary("/grpc.health.v1.Health/Check")
assert check(b"", timeout=10) == b"\x08\x01"' "$GRPC_PORT"

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
check "podman healthcheck run (HEALTHCHECK: resattn healthcheck, GET /readyz)" podman healthcheck run "$NAME"
check "podman exec NAME resattn healthcheck (as a Kubernetes exec probe) -> 0" \
  podman exec "$NAME" /usr/local/bin/resattn healthcheck
check "resattn healthcheck against a closed port -> 1" bash -c "
  podman exec $NAME /usr/local/bin/resattn healthcheck --port 9 2>&1; [ \$? = 1 ]"
# podman top reads /proc from the host: no ps or id needed in the image.
podman top "$NAME" huser hgroup capeff args >"$TMP/top.txt" 2>&1
summary+=("server process: $(tail -n +2 "$TMP/top.txt" | head -n1 | tr -s ' ')")
check "server process runs as UID/GID 10001 with no capabilities" \
  bash -c "tail -n +2 $TMP/top.txt | grep -qE '^10001 +10001 +none +/usr/local/bin/resattn serve'"
check "container filesystem unchanged by the server (podman diff: only runtime mount points)" \
  bash -c "podman diff $NAME | grep -vxE 'C /etc|A /etc/(hosts|hostname|resolv.conf)|A /(dev|proc|sys|run)' | { ! grep .; }"
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
