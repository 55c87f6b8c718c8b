#!/bin/sh
# A real Prometheus (Debian's) on loopback scrapes `resattn serve` with two models (the built-in
# model's file and a fixture) and evaluates deploy/prometheus/rules.yml on what it stored.
# Passes when: the live /metrics passes `promtool check metrics`; up{job="resattn"} is 1; one
# image sent to the built-in model shows as resattn_inferences_total{model=<it>} 1 while the
# other model stays 0; resattn_request_duration_seconds has the v2_infer/predict endpoint apart
# from the probes; resattn_build_info and resattn_compute_info are stored; and every alert
# rule evaluates without error. Usage:
#   tests/integration/prometheus_scrape.sh [path/to/resattn] [model.safetensors]
set -eu
BIN=${1:-build/resattn}
MODEL=${2:-tests/fixtures/basic_cifar_se.safetensors}
command -v prometheus >/dev/null || { echo "prometheus_scrape: prometheus not installed" >&2; exit 1; }
TMP=$(mktemp -d /tmp/resattn-prom-XXXXXX)
SPID=""
PPID_PROM=""
cleanup() {
    for p in $PPID_PROM $SPID; do
        if kill "$p" 2>/dev/null; then wait "$p" 2>/dev/null || true; fi
    done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

"$BIN" serve --host 127.0.0.1 --port 0 --port-file "$TMP/port" \
    --model models/default.safetensors --model "$MODEL" >"$TMP/server.log" 2>&1 &
SPID=$!
i=0
while [ ! -s "$TMP/port" ]; do
    i=$((i + 1))
    [ $i -gt 300 ] && { echo "prometheus_scrape: server did not start" >&2; cat "$TMP/server.log" >&2; exit 1; }
    sleep 0.1
done
PORT=$(cat "$TMP/port")
i=0
until curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -gt 300 ] && { echo "prometheus_scrape: server not ready" >&2; cat "$TMP/server.log" >&2; exit 1; }
    sleep 0.1
done
BUILTIN=fashion-se-resnet
OTHER=$(curl -fsS "http://127.0.0.1:$PORT/metrics" |
    sed -n 's/^resattn_model_info{model="\([^"]*\)".*/\1/p' | grep -vx "$BUILTIN" | head -n1)
[ -n "$OTHER" ] || { echo "prometheus_scrape: second model not in resattn_model_info" >&2; exit 1; }
curl -fsS "http://127.0.0.1:$PORT/metrics" >"$TMP/metrics.txt"
promtool check metrics <"$TMP/metrics.txt" ||
    { echo "prometheus_scrape: promtool check metrics failed" >&2; exit 1; }
# one image to the built-in model
curl -fsS -H 'Content-Type: image/png' --data-binary @models/examples/0_ankle-boot.png \
    "http://127.0.0.1:$PORT/predict/$BUILTIN" >/dev/null ||
    { echo "prometheus_scrape: /predict failed" >&2; exit 1; }

# A free port for Prometheus: ask the kernel through python3 (bind to port 0, read it back).
PPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$TMP/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $(pwd)/deploy/prometheus/rules.yml
scrape_configs:
  - job_name: resattn
    static_configs:
      - targets: ["127.0.0.1:$PORT"]
YML
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/data" \
    --web.listen-address="127.0.0.1:$PPORT" >"$TMP/prometheus.log" 2>&1 &
PPID_PROM=$!

query() {
    curl -fsS "http://127.0.0.1:$PPORT/api/v1/query" --data-urlencode "query=$1" 2>/dev/null || true
}
# Everything the script checks in Prometheus; 0 once all of it holds.
check_all() {
    UP=$(query 'up{job="resattn"}')
    case "$UP" in *',"1"]'*) ;; *) return 1 ;; esac
    case "$(query "resattn_inferences_total{model=\"$BUILTIN\"}")" in *',"1"]'*) ;; *) return 1 ;; esac
    case "$(query "resattn_inferences_total{model=\"$OTHER\"}")" in *',"0"]'*) ;; *) return 1 ;; esac
    case "$(query 'resattn_request_duration_seconds_count{endpoint="predict"}')" in *',"1"]'*) ;; *) return 1 ;; esac
    case "$(query 'resattn_request_duration_seconds_count{endpoint="readyz"}')" in *'"endpoint":"readyz"'*) ;; *) return 1 ;; esac
    case "$(query 'resattn_build_info')" in *'"version":'*) ;; *) return 1 ;; esac
    case "$(query 'resattn_compute_info')" in *'"gemm":'*'"winograd":'*) ;; *) return 1 ;; esac
    RULES=$(curl -fsS "http://127.0.0.1:$PPORT/api/v1/rules" 2>/dev/null || true)
    case "$RULES" in *'"health":"ok"'*) ;; *) return 1 ;; esac
    case "$RULES" in *'"health":"err"'*|*'"health":"unknown"'*) return 1 ;; esac
    return 0
}
i=0
until check_all; do
    i=$((i + 1))
    if [ $i -gt 60 ]; then
        echo "prometheus_scrape: FAILED; last up: $UP" >&2
        echo "  inferences: $(query 'resattn_inferences_total')" >&2
        echo "  rules: $(curl -fsS "http://127.0.0.1:$PPORT/api/v1/rules" 2>/dev/null | head -c 2000)" >&2
        tail -5 "$TMP/prometheus.log" >&2
        exit 1
    fi
    sleep 0.5
done
echo "prometheus_scrape: up == 1; promtool check metrics ok; resattn_inferences_total counts" \
    "model=\"$BUILTIN\" 1 and model=\"$OTHER\" 0; build/compute info stored; every alert rule" \
    "evaluates (server :$PORT, prometheus :$PPORT)"
