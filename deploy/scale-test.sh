#!/usr/bin/env bash
# Rolling restarts behind a real load balancer, under load, with zero failed requests.
# Brings deploy/scale/compose.yml (three resattn replicas behind HAProxy from Debian's package)
# up through podman's Docker-compatible API, as compose-up-test.sh does, drives continuous
# load through HAProxy (SCALE_CLIENTS keep-alive clients, v2 JSON infer on the built-in model;
# deploy/scale/loadgen.py), measures a steady window, then restarts each replica in turn
# (SIGTERM via `docker-compose stop`, wait for the exit and check it is 0, start it again,
# wait until HAProxy has it UP) for SCALE_ROUNDS rounds. Prints requests sent, answers by
# status (connection errors are failures), p50/p99 latency during the restarts vs. the steady
# window, and HAProxy's retry/redispatch counters. Exit 1 on any answer but 200, any failed
# connection, a replica that did not exit 0, or fewer than 3 restarts.
#
#   deploy/scale-test.sh                      # builds resattn:scale-test from this tree
#   RESATTN_IMAGE=resattn:dev deploy/scale-test.sh
# Knobs: SCALE_CLIENTS (8), SCALE_ROUNDS (2: 6 restarts), SCALE_STEADY_S (20),
# SCALE_DRAIN_DELAY_MS (2000; 0 shows what the delay is for).
# Needs: podman, docker-compose (Debian), curl, python3. Everything started is removed again.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
SUITE=scale-test
# shellcheck source=deploy/lib/container-test.sh
. deploy/lib/container-test.sh

CLIENTS=${SCALE_CLIENTS:-8}
ROUNDS=${SCALE_ROUNDS:-2}
STEADY_S=${SCALE_STEADY_S:-20}
MODEL=fashion-se-resnet
SOCK=$TMP/podman.sock
export DOCKER_HOST=unix://$SOCK
export COMPOSE_PROJECT_NAME=resattn-scale-$$
SCALE_HOST_PORT=$(free_port)
SCALE_STATS_PORT=$(free_port)
export SCALE_HOST_PORT SCALE_STATS_PORT
DC=(docker-compose -f deploy/scale/compose.yml)
svc_pid=""
load_pid=""
scale_cleanup() {
  [ -n "$load_pid" ] && touch "$TMP/stop" && wait "$load_pid" 2>/dev/null
  "${DC[@]}" down -v -t 5 >/dev/null 2>&1
  [ -n "$svc_pid" ] && kill "$svc_pid" 2>/dev/null && wait "$svc_pid" 2>/dev/null
  cleanup
}
trap scale_cleanup EXIT
now() { python3 -c 'import time; print(f"{time.monotonic():.6f}")'; }
mark() { echo "$1 $(now)" >>"$TMP/marks"; }

ensure_base_image
if [ -z "${RESATTN_IMAGE:-}" ]; then
  RESATTN_IMAGE=localhost/resattn:scale-test
  echo "== building $RESATTN_IMAGE from this tree"
  podman build --format docker --pull=never --network host -t "$RESATTN_IMAGE" . >"$TMP/build.log" 2>&1 ||
    { fail "build $RESATTN_IMAGE"; tail -n 20 "$TMP/build.log"; finish; }
fi
export RESATTN_IMAGE
podman image exists "$RESATTN_IMAGE" && ok "image $RESATTN_IMAGE" || { fail "no image $RESATTN_IMAGE"; finish; }
check "HAProxy image from Debian's package builds" \
  podman build --format docker --pull=never --network host -t localhost/resattn-haproxy:debian \
  -f deploy/scale/Dockerfile.haproxy deploy/scale

podman system service --time=0 "unix://$SOCK" >"$TMP/service.log" 2>&1 &
svc_pid=$!
for _ in $(seq 1 50); do [ -S "$SOCK" ] && break; sleep 0.2; done
[ -S "$SOCK" ] || { fail "podman system service"; finish; }
"${DC[@]}" up -d --no-build >"$TMP/up.log" 2>&1 && ok "docker-compose up (3 replicas + HAProxy)" ||
  { fail "docker-compose up"; tail -n 30 "$TMP/up.log"; finish; }

STATS=http://127.0.0.1:$SCALE_STATS_PORT/stats\;csv
# server_status NAME -> HAProxy's status of that server (UP, DOWN, MAINT, "UP 1/2", ...)
server_status() {
  curl -fsS "$STATS" 2>/dev/null | python3 -c '
import csv, sys
rows = csv.DictReader(l.lstrip("# ") for l in sys.stdin)
print(next((r["status"] for r in rows if r["pxname"] == "resattn" and r["svname"] == sys.argv[1]), "?"))' "$1"
}
# backend_counter COLUMN -> the resattn backend's value of a stats column (wretr, wredis, ...)
backend_counter() {
  curl -fsS "$STATS" 2>/dev/null | python3 -c '
import csv, sys
rows = csv.DictReader(l.lstrip("# ") for l in sys.stdin)
print(next((r[sys.argv[1]] for r in rows if r["pxname"] == "resattn" and r["svname"] == "BACKEND"), "?"))' "$1"
}
wait_up() { # wait_up NAME TIMEOUT_S: 0 once HAProxy has the server UP
  local until=$((SECONDS + $2))
  while [ $SECONDS -lt "$until" ]; do
    [ "$(server_status "$1")" = UP ] && return 0
    sleep 0.1
  done
  return 1
}
all_up=1
for r in resattn1 resattn2 resattn3; do wait_up "$r" 120 || all_up=0; done
[ "$all_up" = 1 ] && ok "HAProxy has resattn1..3 UP (health checks on /readyz)" ||
  { fail "replicas not UP in HAProxy"; "${DC[@]}" logs --tail 20 >&2; finish; }

echo "== load: $CLIENTS keep-alive clients, v2 JSON infer through HAProxy"
python3 deploy/scale/loadgen.py 127.0.0.1 "$SCALE_HOST_PORT" "$MODEL" "$CLIENTS" "$TMP/stop" "$TMP/records" &
load_pid=$!
sleep 3 # connections open, batches warm
mark steady_start
sleep "$STEADY_S"
mark steady_end

restarts=0
bad_exit=0
for round in $(seq 1 "$ROUNDS"); do
  for r in resattn1 resattn2 resattn3; do
    t0=$(now)
    mark "restart_start"
    "${DC[@]}" stop -t 30 "$r" >"$TMP/stop.log" 2>&1
    t1=$(now)
    code=$(podman inspect --format '{{.State.ExitCode}}' "${COMPOSE_PROJECT_NAME}_${r}_1" 2>/dev/null)
    "${DC[@]}" start "$r" >"$TMP/start.log" 2>&1
    if wait_up "$r" 120; then up=1; else up=0; fi
    t2=$(now)
    mark "restart_end"
    restarts=$((restarts + 1))
    line=$(python3 -c "import sys; a,b,c=map(float,sys.argv[1:]); print(f'stop (SIGTERM to exit, through docker-compose) {b-a:.1f} s, start to UP in HAProxy {c-b:.1f} s')" "$t0" "$t1" "$t2")
    if [ "$code" = 0 ] && [ "$up" = 1 ]; then
      ok "round $round $r: exit 0, $line"
    else
      bad_exit=$((bad_exit + 1))
      fail "round $round $r: exit code '$code', UP again: $up ($line)"
      "${DC[@]}" logs --tail 20 "$r" | sed 's/^/    /'
    fi
  done
done
sleep 3
touch "$TMP/stop"
wait "$load_pid"
load_pid=""
retries=$(backend_counter wretr)
redisp=$(backend_counter wredis)

python3 - "$TMP/records" "$TMP/marks" "$retries" "$redisp" "$CLIENTS" >"$TMP/report" <<'PY'
import collections, sys
recs = [l.split() for l in open(sys.argv[1]) if l.strip()]
marks = [l.split() for l in open(sys.argv[2])]
get = lambda k: [float(t) for n, t in marks if n == k]
steady = (get("steady_start")[0], get("steady_end")[0])
windows = list(zip(get("restart_start"), get("restart_end")))
span = (windows[0][0], windows[-1][1]) if windows else (0, 0)
by = collections.Counter(r[2] for r in recs)
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000 if xs else float("nan")
def stats(lo, hi):
    lat = [float(e) - float(s) for s, e, o in recs if lo <= float(s) < hi]
    return len(lat), len(lat) / (hi - lo), pct(lat, 50), pct(lat, 99), max(lat) * 1000 if lat else 0
in_windows = lambda s: any(a <= s < b for a, b in windows)
rs = [float(e) - float(s) for s, e, o in recs if in_windows(float(s))]
restart_time = sum(b - a for a, b in windows)
n_ok = by.get("200", 0)
print(f"clients {sys.argv[5]}, restarts {len(windows)} ({restart_time:.1f} s with one replica out or rejoining)")
print(f"requests sent {len(recs)}: " + ", ".join(f"{k} x{v}" for k, v in sorted(by.items())))
print(f"failures (non-200, connection errors, bad bodies): {len(recs) - n_ok}")
n, rps, p50, p99, mx = stats(*steady)
print(f"steady   {steady[1]-steady[0]:5.1f} s: {n:6d} requests, {rps:6.1f} req/s, p50 {p50:6.1f} ms, p99 {p99:6.1f} ms, max {mx:6.1f} ms")
print(f"restarts {restart_time:5.1f} s: {len(rs):6d} requests, {len(rs)/restart_time if restart_time else 0:6.1f} req/s, "
      f"p50 {pct(rs,50):6.1f} ms, p99 {pct(rs,99):6.1f} ms, max {max(rs)*1000 if rs else 0:6.1f} ms")
print(f"HAProxy backend retries {sys.argv[3]}, redispatches {sys.argv[4]}")
sys.exit(0 if n_ok == len(recs) and len(recs) > 0 and rs else 1)
PY
rep=$?
cat "$TMP/report"
while read -r l; do summary+=("$l"); done <"$TMP/report"
[ $rep -eq 0 ] && ok "every request answered 200 through $restarts rolling restarts" ||
  { fail "requests failed during the rolling restarts (see above); HAProxy's log of them:"
    "${DC[@]}" logs --no-color haproxy 2>/dev/null | grep -E ' (5[0-9][0-9]|4[0-9][0-9]|-1) [0-9-]+ ' |
      head -n 20 | sed 's/^/    /'; }
[ "$restarts" -ge 3 ] && [ "$bad_exit" -eq 0 ] && ok "$restarts restarts, each exit 0 and UP again" ||
  fail "$restarts restarts, $bad_exit bad"
finish
