#!/usr/bin/python3
"""Probe for tests/load/soak.sh: while wrk overloads the server, send one /predict request
at a time (about 20/s) on a keep-alive connection, time each one, and check every 200
answer names the known label. Prints a JSON summary: counts per status, p50/p99 latency per
status (ms), wrong labels, socket errors. Usage: probe.py PORT IMAGE LABEL SECONDS"""
import http.client, json, sys, time

port, image, label, seconds = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
body = open(image, "rb").read()
lat, wrong, errors = {}, 0, 0
conn = None
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        t0 = time.perf_counter()
        conn.request("POST", "/predict", body, {"Content-Type": "image/png"})
        r = conn.getresponse()
        data = r.read()
        ms = (time.perf_counter() - t0) * 1000
        lat.setdefault(r.status, []).append(ms)
        if r.status == 200 and json.loads(data)["predictions"][0]["label"] != label:
            wrong += 1
        if r.getheader("Connection", "").lower() == "close":
            conn.close(); conn = None
    except Exception:
        errors += 1
        conn = None
    time.sleep(0.05)


def pct(v, p):
    v = sorted(v)
    return round(v[min(len(v) - 1, int(p * len(v)))], 3)


print(json.dumps({"status": {str(k): {"n": len(v), "p50_ms": pct(v, .5), "p99_ms": pct(v, .99),
                                      "max_ms": round(max(v), 3)} for k, v in lat.items()},
                  "wrong_labels": wrong, "socket_errors": errors}))
