#!/usr/bin/env python3
"""Continuous inference load for deploy/scale-test.sh: CLIENTS threads, each with one
keep-alive connection (http.client) to HOST:PORT, send v2 JSON infer requests for MODEL (one
28x28 image, 784 floats) back to back until the file STOP exists. Every request becomes one
line of OUT: "start_s end_s outcome", where outcome is the HTTP status, or "ERR:<exception>"
when the connection failed (counted as a failure; the thread reconnects and goes on), or
"BAD:<why>" for a 200 whose body is not a v2 answer with 10 logits. Times are
time.monotonic() seconds, the same clock the shell reads through `marks`.

  loadgen.py HOST PORT MODEL CLIENTS STOP OUT
"""
import http.client
import json
import os
import random
import sys
import threading
import time

host, port, model, clients, stop_file, out_path = sys.argv[1:7]
port, clients = int(port), int(clients)
path = f"/v2/models/{model}/infer"
records = []
lock = threading.Lock()


def body(rng):
    data = [round(rng.random(), 4) for _ in range(28 * 28)]
    return json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28],
                                   "datatype": "FP32", "data": data}],
                       "outputs": [{"name": "logits"}]}).encode()


def check(raw):
    try:
        out = json.loads(raw)["outputs"]
        logits = next(o for o in out if o["name"] == "logits")
        return "" if len(logits["data"]) == 10 else "logits"
    except (ValueError, KeyError, StopIteration, TypeError) as e:
        return type(e).__name__


def client(i):
    rng = random.Random(i)
    bodies = [body(rng) for _ in range(16)]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    mine = []
    n = 0
    while not os.path.exists(stop_file):
        t0 = time.monotonic()
        try:
            conn.request("POST", path, bodies[n % len(bodies)],
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            raw = r.read()
            outcome = str(r.status)
            if r.status == 200:
                bad = check(raw)
                if bad:
                    outcome = "BAD:" + bad
        except (OSError, http.client.HTTPException) as e:
            outcome = "ERR:" + type(e).__name__
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)
        mine.append(f"{t0:.6f} {time.monotonic():.6f} {outcome}")
        n += 1
    conn.close()
    with lock:
        records.extend(mine)


threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with open(out_path, "w") as f:
    f.write("\n".join(records) + "\n")
