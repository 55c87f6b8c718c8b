#!/usr/bin/python3
"""Send the whole Fashion-MNIST test set to a running resattn server as PNG images.

    /usr/bin/python3 tools/eval_http.py [--url http://127.0.0.1:8080] [--model NAME]
        [--concurrency 4] [--form raw|multipart|base64] [--limit N] [--predictions-out P.npy]

Each test image is encoded as a 28x28 grayscale PNG (PIL) and POSTed to /predict (or
/predict/NAME) with top_k=1, over one keep-alive connection per worker thread. Prints the
top-1 accuracy, requests/s, and the PyTorch accuracy recorded in models/default.metrics.json
for comparison; --predictions-out saves the predicted class of every image (int64 .npy, in
test-set order) to compare two servers (tests/bench/accuracy_bf16.py). Exits 1 if any request
fails. Standard library plus numpy and PIL.
"""
import argparse
import base64
import gzip
import http.client
import io
import json
import os
import sys
import threading
import time
import urllib.parse

import numpy as np
from PIL import Image

DATA = "/usr/share/datasets/fashion-mnist"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def load_test():
    with gzip.open(os.path.join(DATA, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return x, y


def png(a):
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return b.getvalue()


def request(form, data):
    """(body, headers) for one image in the chosen input form."""
    if form == "raw":
        return data, {"Content-Type": "image/png"}
    if form == "base64":
        body = json.dumps({"image": base64.b64encode(data).decode(), "top_k": 1}).encode()
        return body, {"Content-Type": "application/json"}
    boundary = "resattn-eval-boundary"
    body = (b"--" + boundary.encode() + b"\r\n"
            b'Content-Disposition: form-data; name="image"; filename="x.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--" + boundary.encode() + b"--\r\n")
    return body, {"Content-Type": "multipart/form-data; boundary=" + boundary}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", default=None, help="model name (default: POST /predict)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--form", choices=["raw", "multipart", "base64"], default="raw")
    ap.add_argument("--limit", type=int, default=0, help="only the first N test images")
    ap.add_argument("--predictions-out", default=None, help="save the predicted classes (.npy)")
    args = ap.parse_args()

    x, y = load_test()
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    bodies = [request(args.form, png(a)) for a in x]
    u = urllib.parse.urlsplit(args.url)
    path = "/predict" + ("/" + urllib.parse.quote(args.model) if args.model else "") + "?top_k=1"
    pred = np.full(len(y), -1, np.int64)
    errors = []
    next_i = [0]
    lock = threading.Lock()

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= len(y):
                break
            body, headers = bodies[i]
            try:
                conn.request("POST", path, body=body, headers=headers)
                r = conn.getresponse()
                text = r.read()
                if r.status != 200:
                    errors.append("image %d: HTTP %d %s" % (i, r.status, text[:200]))
                    continue
                pred[i] = json.loads(text)["predictions"][0]["index"]
            except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
                errors.append("image %d: %s" % (i, e))
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0

    if args.predictions_out:
        np.save(args.predictions_out, pred)
    acc = float(np.mean(pred == y))
    print("images: %d (%s PNG bodies to %s%s), concurrency %d"
          % (len(y), args.form, args.url, path, args.concurrency))
    print("accuracy through HTTP: %.2f%% (%d/%d)" % (100 * acc, int(np.sum(pred == y)), len(y)))
    print("throughput: %.0f requests/s (%.1f s)" % (len(y) / dt, dt))
    metrics = os.path.join(ROOT, "models", "default.metrics.json")
    if os.path.exists(metrics) and not args.model and not args.limit:
        ref = json.load(open(metrics))["test_accuracy"]
        print("PyTorch test accuracy (models/default.metrics.json): %.2f%%, difference %+.2f pp"
              % (100 * ref, 100 * (acc - ref)))
    if errors:
        print("%d requests failed, first: %s" % (len(errors), errors[0]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
