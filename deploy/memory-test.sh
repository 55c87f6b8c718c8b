#!/usr/bin/env bash
# Memory admission in a container: runs the image with `--memory 512m` (the limit our compose
# file and Kubernetes Deployment set) and floods it with large uploads held open — 40 clients,
# each announcing a 50 MB body (2 GB in all, 4x the limit) and sending 90 % of it before
# holding (half of them wait for 100 Continue first, as curl does). Checks that the server
# derived its budget from the cgroup limit, that every client gets 200 or 503 + Retry-After
# (refused before sending any body when it waited for 100 Continue, after its body was
# dropped otherwise), that small requests are served during the flood, that the
# budget in use returns to 0, and that the container is not OOM-killed (still running,
# OOMKilled false, then `podman stop` exits 0). Then two controls on the same image: with the
# budget switched off (RESATTN_MAX_MEMORY_BYTES=1 TiB) the same flood must get the container
# OOM-killed — the limit is enforced, and the budget is what saves it — and with --memory 48m
# the built-in model alone does not fit: exit 2 with one line, no OOM kill.
#
#   deploy/memory-test.sh                 # MEMTEST_NO_BUILD=1 reuses an existing $IMAGE
#   IMAGE=resattn:dev MEMTEST_CLIENTS=40 MEMTEST_BODY_MB=50 deploy/memory-test.sh
# Needs podman and the offline base image (../shared/tools/local-base-image.sh), curl, python3.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
IMAGE=${IMAGE:-resattn:dev}
CLIENTS=${MEMTEST_CLIENTS:-40}
BODY_MB=${MEMTEST_BODY_MB:-50}
NAME=resattn-mem-$$
SUITE=memory
# shellcheck source=deploy/lib/container-test.sh
. deploy/lib/container-test.sh

ensure_base_image
if [ "${MEMTEST_NO_BUILD:-0}" != 1 ]; then
  echo "== podman build -t $IMAGE ."
  podman build --format docker --pull=never --network host -t "$IMAGE" . >"$TMP/build.log" 2>&1 ||
    { fail "image build"; tail -n 30 "$TMP/build.log"; finish; }
fi

# run NAME PORT [podman args...]: start the image with --memory 512m, wait for /readyz.
# From $TMP: conmon (runc, cgroup v1) drops its "oom" marker in the directory podman ran in.
run() {
  local name=$1 port=$2
  shift 2
  (cd "$TMP" && podman run -d --name "$name" --memory 512m -p "127.0.0.1:$port:8080" "$@" "$IMAGE") >"$TMP/run.out" 2>&1 ||
    { cat "$TMP/run.out"; return 1; }
  started+=("$name")
  for _ in $(seq 1 120); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null && return 0
    [ "$(podman inspect --format '{{.State.Running}}' "$name")" = true ] || break
    sleep 0.5
  done
  podman logs "$name" 2>&1 | tail -n 20
  return 1
}

state() { podman inspect --format 'running={{.State.Running}} oomkilled={{.State.OOMKilled}} exit={{.State.ExitCode}}' "$1"; }

# The flood: prints one JSON line of counts and the peak resident memory of the server (read
# from the host's /proc) while the uploads are held.
flood() { # flood PORT PID OUT
  python3 - "$1" "$2" "$CLIENTS" "$BODY_MB" models/examples/0_ankle-boot.png >"$3" 2>&1 <<'EOF'
import json, socket, sys, time, urllib.request
port, pid, clients, mb, png_path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
png = open(png_path, "rb").read()
size = mb * 1000 * 1000
pad = bytes(size - len(png))  # the PNG, then zeros: decoders stop at IEND
part = size * 9 // 10
out = {"clients": clients, "body_bytes": size, "statuses": {}, "retry_after_missing": 0,
       "small_ok": 0, "small_other": [], "peak_rss_mib": 0, "errors": []}

def rss():
    try:
        for l in open(f"/proc/{pid}/status"):
            if l.startswith("VmRSS:"):
                return int(l.split()[1]) / 1024
    except OSError:
        pass
    return 0

def answer(s, timeout, data=b""):
    s.settimeout(timeout)
    try:
        while b"\r\n\r\n" not in data:
            c = s.recv(65536)
            if not c:
                break
            data += c
        head, _, body = data.partition(b"\r\n\r\n")
        n = 0
        for l in head.split(b"\r\n")[1:]:
            k, _, v = l.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        while len(body) < n:
            c = s.recv(65536)
            if not c:
                break
            body += c
    except OSError as e:
        return None, {}, repr(e)
    lines = head.split(b"\r\n")
    if not lines or not lines[0].startswith(b"HTTP/1."):
        return None, {}, data[:200]
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(b":") for l in lines[1:])}
    if lines[0].split()[1] == b"100":  # interim: the final answer follows
        return answer(s, timeout, body)
    return int(lines[0].split()[1]), hdrs, body

def count(status, hdrs):
    k = str(status)
    out["statuses"][k] = out["statuses"].get(k, 0) + 1
    if status == 503 and not hdrs.get(b"retry-after"):
        out["retry_after_missing"] += 1

def small():
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", png, {"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            if r.status == 200 and b"predictions" in r.read():
                out["small_ok"] += 1
            else:
                out["small_other"].append(r.status)
    except Exception as e:
        out["small_other"].append(repr(e)[:100])

# Half the clients wait for 100 Continue, as curl does for large bodies: a refusal comes
# instead and they send nothing. The others send at once, like most HTTP libraries: the
# server drops the body of a refused one and answers after it.
socks = []
for i in range(clients):
    s = socket.create_connection(("127.0.0.1", port))
    expect = b"Expect: 100-continue\r\n" if i % 2 == 0 else b""
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n%s\r\n" % (size, expect))
    socks.append((s, bool(expect)))
held = []
out["refused_before_body"] = 0
for s, expect in socks:
    if expect:
        s.settimeout(10)
        first = s.recv(65536)
        if not first.startswith(b"HTTP/1.1 100"):  # refused instead of 100 Continue
            st, h, b = answer(s, 10, first)
            count(st, h)
            out["refused_before_body"] += 1
            s.close()
            continue
        first = first.partition(b"\r\n\r\n")[2]
    try:
        s.sendall(png + pad[:part - len(png)])
        held.append(s)
    except OSError as e:
        out["errors"].append("send: " + repr(e))
        count(None, {})
out["held"] = len(held)
t_end = time.time() + 5  # hold: sample memory, serve small requests
while time.time() < t_end:
    out["peak_rss_mib"] = max(out["peak_rss_mib"], rss())
    small()
    time.sleep(0.2)
try:
    m = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out["in_use_held_mib"] = [float(l.split()[1]) / 2**20 for l in m.splitlines() if l.startswith("resattn_memory_in_use_bytes ")][0]
    out["budget_mib"] = [float(l.split()[1]) / 2**20 for l in m.splitlines() if l.startswith("resattn_memory_budget_bytes ")][0]
except Exception as e:
    out["errors"].append("metrics: " + repr(e))
for s in held:
    try:
        s.sendall(pad[part - len(png):])
        st, h, b = answer(s, 120)
    except OSError as e:
        st, h = None, {}
        out["errors"].append("finish: " + repr(e))
    count(st, h)
    s.close()
print(json.dumps(out))
EOF
}

# ---- the flood against the budget -----------------------------------------------------------
PORT=$(free_port)
echo "== podman run --memory 512m $IMAGE on 127.0.0.1:$PORT; flood of $CLIENTS x $BODY_MB MB"
if ! run "$NAME" "$PORT"; then
  fail "container with --memory 512m did not become ready"
  finish
fi
budget_line=$(podman logs "$NAME" 2>&1 | grep -m1 'memory budget')
summary+=("start-up: ${budget_line#resattn: }")
check "budget derived from the 512 MiB cgroup limit" \
  grep -q 'derived; 512.0 MiB cgroup memory limit' <<<"$budget_line"
pid=$(podman inspect --format '{{.State.Pid}}' "$NAME")
flood "$PORT" "$pid" "$TMP/flood.json"
summary+=("flood: $(cat "$TMP/flood.json")")
check "every upload answered 200 or 503 + Retry-After, small requests served" python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
s = r["statuses"]
assert set(s) <= {"200", "503"} and sum(s.values()) == r["clients"], s
assert s.get("200", 0) >= 1 and s.get("503", 0) >= 1, s
assert r["retry_after_missing"] == 0 and not r["errors"] and r["refused_before_body"] >= 1, r
assert r["small_ok"] >= 5 and not r["small_other"], r' "$TMP/flood.json"
sleep 1
in_use=$(curl -fsS "http://127.0.0.1:$PORT/metrics" | awk '/^resattn_memory_in_use_bytes / {print $2}')
check "budget in use back to 0 after the flood ($in_use)" test "$in_use" = 0
st=$(state "$NAME")
summary+=("after the flood: $st; memory rejections $(curl -fsS "http://127.0.0.1:$PORT/metrics" | awk -F'} ' '/reason="memory"/ {print $2}')")
[ -e "$TMP/oom" ] && st="$st conmon-oom-marker"
check "container not OOM-killed ($st)" test "$st" = "running=true oomkilled=false exit=0"
podman stop -t 30 "$NAME" >/dev/null 2>&1
st=$(state "$NAME")
check "podman stop -> exit 0, not OOM-killed ($st)" test "$st" = "running=false oomkilled=false exit=0"

# ---- control: the same flood without the budget -----------------------------------------------
PORT=$(free_port)
echo "== control: RESATTN_MAX_MEMORY_BYTES=1099511627776 (no effective budget), same flood"
if run "$NAME-nobudget" "$PORT" -e RESATTN_MAX_MEMORY_BYTES=1099511627776; then
  pid=$(podman inspect --format '{{.State.Pid}}' "$NAME-nobudget")
  flood "$PORT" "$pid" "$TMP/control.json"
  sleep 1
  st=$(state "$NAME-nobudget")
  # podman with runc on cgroup v1 may leave OOMKilled false (conmon's marker lands in the
  # working directory): exit 137 (SIGKILL), the marker, and the kernel's "Memory cgroup out
  # of memory" line for the container (when dmesg is readable) tell
  id=$(podman inspect --format '{{.Id}}' "$NAME-nobudget")
  kernel=$(dmesg 2>/dev/null | grep "Memory cgroup out of memory" -B1 | grep -A1 "${id:0:12}" | tail -n1)
  [ -e "$TMP/oom" ] && st="$st conmon-oom-marker"
  summary+=("control without a budget: $st; kernel: ${kernel:-(dmesg not readable)}")
  check "control: without the budget the flood gets the container OOM-killed ($st)" \
    grep -qE 'oomkilled=true|exit=137' <<<"$st"
else
  fail "control container did not become ready"
fi

# ---- models that do not fit ------------------------------------------------------------------
out=$(cd "$TMP" && podman run --rm --memory 48m "$IMAGE" 2>&1 | grep -v '^time=.* level=') # podman's own noise
code=$? # pipefail: podman's status
summary+=("--memory 48m: exit $code: $(echo "$out" | grep -v '^resattn: model ' | tail -n1)")
check "--memory 48m: the model set does not fit -> exit 2, one error line" \
  bash -c '[ "$1" = 2 ] && [ "$(grep -vc "^resattn: model " <<<"$2")" = 1 ] && grep -q "cgroup memory limit" <<<"$2"' _ "$code" "$out"
finish
