#!/bin/sh
# A real Prometheus (Debian's) on loopback scrapes `resattn serve`: passes when the query
# up{job="resattn"} answers 1 and a resattn_ metric is stored. Usage:
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

"$BIN" serve --host 127.0.0.1 --port 0 --port-file "$TMP/port" --model "$MODEL" \
    >"$TMP/server.log" 2>&1 &
SPID=$!
i=0
while [ ! -s "$TMP/port" ]; do
    i=$((i + 1))
    [ $i -gt 300 ] && { echo "prometheus_scrape: server did not start" >&2; cat "$TMP/server.log" >&2; exit 1; }
    sleep 0.1
done
PORT=$(cat "$TMP/port")

# A free port for Prometheus: ask the kernel through python3 (bind to port 0, read it back).
PPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$TMP/prometheus.yml" <<YML
global:
  scrape_interval: 1s
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
i=0
while :; do
    i=$((i + 1))
    UP=$(query 'up{job="resattn"}')
    INFO=$(query 'resattn_model_info')
    case "$UP" in
    *',"1"]'*)
        case "$INFO" in
        *'"model":'*)
            echo "prometheus_scrape: up == 1, resattn_model_info stored (server :$PORT, prometheus :$PPORT)"
            exit 0
            ;;
        esac
        ;;
    esac
    if [ $i -gt 60 ]; then
        echo "prometheus_scrape: FAILED; last answers: $UP / $INFO" >&2
        tail -5 "$TMP/prometheus.log" >&2
        exit 1
    fi
    sleep 0.5
done
