#!/bin/bash
# Load and soak test of `resattn serve` with the built-in model (issue 5); not part of the
# quick tests. Steps:
#   1. capacity: wrk closed loop (32 connections, 20 s) on POST /predict with an example PNG;
#      capacity = successful requests per second;
#   2. soak: MINUTES (default 10) of wrk paced at twice that rate (256 connections, more
#      than the queue capacity of 64, so overload turns into 503s; each
#      waiting 256000/(2*capacity) ms between requests: wrk2 is not in Debian), while
#      probe.py times single requests (503 latency) and checks each 200 names the right
#      label, and the server's RSS is sampled every 10 s;
#   3. SIGTERM, expect exit 0.
# Pass/fail: server alive throughout and exit 0; RSS growth after the first minute < 5 %;
# 503 p99 < 10 ms (probe); no socket errors or timeouts; no wrong label.
# Usage: tests/load/soak.sh [MINUTES] [BINARY]   (from the repository root)
set -u
MIN=${1:-10}
BIN=${2:-build/resattn}
DIR=$(mktemp -d /tmp/soak.XXXXXX)
IMG=models/examples/0_ankle-boot.png
LABEL="Ankle boot"
HERE=$(dirname "$0")
export SOAK_IMAGE=$IMG

"$BIN" serve --host 127.0.0.1 --port 0 --port-file "$DIR/port" >"$DIR/server.log" 2>&1 &
SRV=$!
for _ in $(seq 50); do [ -s "$DIR/port" ] && break; sleep 0.2; done
PORT=$(cat "$DIR/port")
URL=http://127.0.0.1:$PORT
until curl -sf "$URL/readyz" >/dev/null; do sleep 0.2; done
rss() { awk '/VmRSS/ {print $2}' /proc/$SRV/status; }

SOAK_DELAY_MS=0 wrk -t2 -c32 -d20s -s "$HERE/post_png.lua" "$URL" >"$DIR/capacity.txt"
CAP=$(awk '/Requests\/sec/ {print int($2)}' "$DIR/capacity.txt")
NON2XX=$(awk '/Non-2xx/ {print $NF}' "$DIR/capacity.txt")
CAP=$((CAP - ${NON2XX:-0} / 20))
CONNS=256
DELAY=$((CONNS * 1000 / (2 * CAP)))
[ "$DELAY" -lt 1 ] && DELAY=1
echo "capacity ${CAP} req/s; soak ${MIN} min at ~$((2 * CAP)) req/s offered ($CONNS conns, ${DELAY} ms pacing)"

SECS=$((MIN * 60))
SOAK_DELAY_MS=$DELAY wrk -t2 -c$CONNS -d${SECS}s --timeout 10s -s "$HERE/post_png.lua" "$URL" \
    >"$DIR/soak.txt" &
WRK=$!
/usr/bin/python3 "$HERE/probe.py" "$PORT" "$IMG" "$LABEL" $((SECS - 5)) >"$DIR/probe.json" &
PROBE=$!
: >"$DIR/rss.txt"
ALIVE=1
for ((t = 0; t <= SECS; t += 10)); do
    if ! kill -0 $SRV 2>/dev/null; then ALIVE=0; break; fi
    echo "$t $(rss)" >>"$DIR/rss.txt"
    sleep 10
done
wait $WRK
wait $PROBE
curl -s "$URL/metrics" | grep -E '^resattn_(http_requests_total|requests_rejected_total)' >"$DIR/metrics.txt"
kill -TERM $SRV
wait $SRV
RC=$?

WARM=$(awk '$1 == 60 {print $2}' "$DIR/rss.txt")
LAST=$(tail -1 "$DIR/rss.txt" | awk '{print $2}')
GROWTH=$(awk -v a="${WARM:-0}" -v b="${LAST:-0}" 'BEGIN {printf "%.2f", a ? (b - a) * 100 / a : 999}')
P99_503=$(/usr/bin/python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["status"]; print(s.get("503",{}).get("p99_ms","n/a"))' "$DIR/probe.json")
echo "--- wrk soak"; sed -n '/Latency/,$p' "$DIR/soak.txt"
echo "--- probe"; cat "$DIR/probe.json"
echo "--- server counters"; cat "$DIR/metrics.txt"
echo "--- RSS (s kB)"; tr '\n' ' ' <"$DIR/rss.txt"; echo
echo "--- summary"
echo "server alive throughout: $ALIVE; exit after SIGTERM: $RC"
echo "RSS at 60 s ${WARM} kB, at end ${LAST} kB, growth ${GROWTH} %"
echo "503 p99 (probe): ${P99_503} ms"
echo "logs in $DIR"
FAIL=0
[ "$ALIVE" = 1 ] && [ "$RC" = 0 ] || FAIL=1
awk -v g="$GROWTH" 'BEGIN {exit !(g < 5)}' || FAIL=1
grep -q 'Socket errors' "$DIR/soak.txt" && FAIL=1
/usr/bin/python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); sys.exit(p["wrong_labels"] or p["socket_errors"])' "$DIR/probe.json" || FAIL=1
[ "$P99_503" = n/a ] || awk -v p="$P99_503" 'BEGIN {exit !(p < 10)}' || FAIL=1
echo "result: $([ $FAIL = 0 ] && echo PASS || echo FAIL)"
exit $FAIL
