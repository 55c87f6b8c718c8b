#!/usr/bin/env bash
# Brings deploy/docker-compose.yml up through podman's Docker-compatible API (no Docker engine
# here) and checks that Prometheus scrapes resattn (`up{job="resattn"} == 1`) and sees its
# request counter. Grafana has no image reachable from this machine, so only `resattn` and
# `prometheus` start, the latter built from Debian's package (compose.local.yml). Host ports
# are free 127.0.0.1 ports. Everything started here is stopped again (compose down, service).
# Needs: podman, docker-compose (Debian), curl, python3; resattn:dev is built when missing.
# Prints "compose-up: N passed, N failed"; exit 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")" || exit 2
TMP=$(mktemp -d)
SOCK=$TMP/podman.sock
export DOCKER_HOST=unix://$SOCK
export COMPOSE_PROJECT_NAME=resattn-up-$$
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RESATTN_HOST_PORT=$(free_port)
PROMETHEUS_HOST_PORT=$(free_port)
GRAFANA_HOST_PORT=$(free_port)
RESATTN_GRPC_HOST_PORT=$(free_port)
export RESATTN_HOST_PORT PROMETHEUS_HOST_PORT GRAFANA_HOST_PORT RESATTN_GRPC_HOST_PORT
DC=(docker-compose -f docker-compose.yml -f compose.local.yml)
svc_pid=""
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
cleanup() {
  "${DC[@]}" down -v -t 30 >/dev/null 2>&1
  [ -n "$svc_pid" ] && kill "$svc_pid" 2>/dev/null && wait "$svc_pid" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
finish() {
  echo "compose-up: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

podman image exists localhost/resattn:dev || {
  echo "== building resattn:dev"
  (cd .. && podman build --format docker --pull=never --network host -t resattn:dev . >"$TMP/build.log" 2>&1) ||
    { fail "build resattn:dev"; tail -n 20 "$TMP/build.log"; finish; }
}
# The Prometheus image from Debian's package (host network for apt during the build only).
podman build --format docker --pull=never --network host -t localhost/resattn-prometheus:debian \
  -f prometheus/Dockerfile.debian prometheus >"$TMP/prom-build.log" 2>&1 &&
  ok "Prometheus image from Debian's package builds" ||
  { fail "Prometheus image build"; tail -n 20 "$TMP/prom-build.log"; finish; }

podman system service --time=0 "unix://$SOCK" >"$TMP/service.log" 2>&1 &
svc_pid=$!
for _ in $(seq 1 50); do [ -S "$SOCK" ] && break; sleep 0.2; done
[ -S "$SOCK" ] && ok "podman system service on $SOCK" || { fail "podman system service"; finish; }

if "${DC[@]}" up -d --no-build resattn prometheus >"$TMP/up.log" 2>&1; then
  ok "docker-compose up -d resattn prometheus"
else
  fail "docker-compose up"
  tail -n 30 "$TMP/up.log"
  finish
fi

R=http://127.0.0.1:$RESATTN_HOST_PORT
P=http://127.0.0.1:$PROMETHEUS_HOST_PORT
for _ in $(seq 1 120); do curl -fsS -o /dev/null "$R/readyz" 2>/dev/null && break; sleep 0.5; done
curl -fsS -o /dev/null "$R/readyz" && ok "resattn /readyz through the published port" ||
  { fail "resattn not ready"; "${DC[@]}" logs --tail 20 resattn; finish; }
curl -fsS -o /dev/null "$R/healthz"

query() { # query PROMQL -> first sample value or empty
  curl -fsS --get --data-urlencode "query=$1" "$P/api/v1/query" 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' 2>/dev/null
}
up=""
for _ in $(seq 1 60); do
  up=$(query 'up{job="resattn"}')
  [ "$up" = 1 ] && break
  sleep 1
done
[ "$up" = 1 ] && ok "Prometheus: up{job=\"resattn\"} == 1" ||
  { fail "Prometheus: up{job=\"resattn\"} = '${up}'"; curl -fsS "$P/api/v1/targets" | head -c 1500; echo; }
n=""
for _ in $(seq 1 30); do
  n=$(query 'sum(resattn_http_requests_total{job="resattn"})')
  [ -n "$n" ] && break
  sleep 1
done
[ -n "$n" ] && ok "Prometheus has resattn_http_requests_total (sum $n)" || fail "no resattn_http_requests_total in Prometheus"
# Traffic for a few scrapes, then every Grafana dashboard query must evaluate, and those the
# issue names (requests/s, latency, queue depth, CPU, memory) must return series.
for _ in $(seq 1 15); do
  curl -fsS -o /dev/null "$R/healthz"
  curl -fsS -o /dev/null "$R/v2"
  sleep 1
done
python3 - "$P" ../deploy/grafana/dashboards/resattn.json >"$TMP/dash.txt" 2>&1 <<'PY'
import json, sys, urllib.parse, urllib.request
prom, dash = sys.argv[1], json.load(open(sys.argv[2]))
need_data = ("Requests/s", "latency", "Queue depth", "CPU", "memory")
bad = 0
for p in dash["panels"]:
    for t in p.get("targets", []):
        q = (t["expr"].replace("$__rate_interval", "1m").replace("$job", "resattn")
             .replace("$instance", ".*"))
        url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
        r = json.load(urllib.request.urlopen(url, timeout=10))
        n = len(r["data"]["result"]) if r.get("status") == "success" else -1
        must = any(k.lower() in p["title"].lower() for k in need_data)
        ok = n >= 0 and (n > 0 or not must)
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {p['title']} [{t['refId']}]: {n} series")
sys.exit(1 if bad else 0)
PY
[ $? -eq 0 ] && ok "every dashboard query evaluates in Prometheus (data where expected)" ||
  { fail "dashboard queries"; cat "$TMP/dash.txt"; }
rules=$(curl -fsS "$P/api/v1/rules" | python3 -c 'import json,sys; print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))' 2>/dev/null)
[ "${rules:-0}" -ge 1 ] && ok "Prometheus loaded $rules alert rules" || fail "Prometheus loaded no alert rules"
t0=$(date +%s)
"${DC[@]}" stop -t 30 resattn >/dev/null 2>&1
code=$(podman inspect --format '{{.State.ExitCode}}' "${COMPOSE_PROJECT_NAME}_resattn_1" 2>/dev/null)
[ "$code" = 0 ] && ok "compose stop resattn: exit 0 in $(($(date +%s) - t0)) s" || fail "compose stop resattn: exit code '$code'"
finish
