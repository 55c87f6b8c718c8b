#!/usr/bin/python3
"""What BF16 inference costs in accuracy, measured through the product itself.

1. The built-in Fashion-MNIST model (models/default.safetensors) on the whole test set
   (10,000 images from Debian's dataset-fashion-mnist) through HTTP: `resattn serve
   --precision fp32` and `--precision bf16` on loopback, each image POSTed as a PNG by
   tools/eval_http.py. Reports each top-1 accuracy, their difference in points and the share
   of images whose predicted class agrees between the two. BF16 runs twice: with the plan
   this CPU picks, and with RESATTN_WINOGRAD=0 (every layer in BF16 products, the plan an AMX
   CPU runs).
2. The parity models (tests/fixtures, PyTorch float64 logits): the relative L2 error
   ||y_bf16 - y_torch|| / ||y_torch|| of `resattn predict --precision bf16` for each, its
   distribution, and the FP32 error beside it; for the same plans, plus the AMX code on
   emulated tiles (RESATTN_BF16_PATH=amx-emulated) as a check of that code's arithmetic.

    /usr/bin/python3 tests/bench/accuracy_bf16.py [--bin build/resattn] [--out FILE|-]

Writes tests/bench/BF16_ACCURACY.md (unless --out -) and prints it.
"""

import argparse
import datetime
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bf16_common import ROOT, Server, cpu_line  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
CASES = (["%s_%s_%s" % (b, s, a) for b in ("basic", "bottleneck") for s in ("cifar", "imagenet")
          for a in ("none", "se", "eca", "cbam", "ca")] + ["basic_cifar_se_f16", "basic_cifar_se_bf16"])
# (label, precision, environment)
PLANS = [
    ("fp32", "fp32", {}),
    ("bf16, this CPU's plan", "bf16", {}),
    ("bf16, every layer BF16 (RESATTN_WINOGRAD=0)", "bf16", {"RESATTN_WINOGRAD": "0"}),
]
EMULATED = ("bf16, AMX code on emulated tiles", "bf16", {"RESATTN_BF16_PATH": "amx-emulated"})


def labels():
    with gzip.open(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")) as f:
        return np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)


def http_predictions(binary, precision, env, tmp):
    """Predicted classes of the test set through a server in this precision, and its log."""
    s = Server(binary, ["--precision", precision], env)
    out = os.path.join(tmp, "pred.npy")
    try:
        subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "eval_http.py"), "--url",
                        s.url, "--predictions-out", out], check=True, stdout=subprocess.DEVNULL)
    finally:
        log = s.stop()
    return np.load(out), log


def model_line(log):
    """'precision bf16 on avx512bf16' from the server's model line."""
    return next((l.split("parameters, ", 1)[1] for l in log.splitlines()
                 if "parameters, precision" in l), "?")


def fixture_errors(binary, precision, env, tmp):
    e = dict(os.environ)
    e.update(env)
    errs = {}
    for c in CASES:
        out = os.path.join(tmp, "y.npy")
        subprocess.run([binary, "predict", "--precision", precision, "--model",
                        os.path.join(FIXTURES, c + ".safetensors"), "--input",
                        os.path.join(FIXTURES, c + ".in.npy"), "--output", out], check=True,
                       env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        y, ref = np.load(out).astype(np.float64), np.load(os.path.join(FIXTURES, c + ".out.npy"))
        errs[c] = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    return errs


def dist(v):
    v = sorted(v)
    q = statistics.quantiles(v, n=10)
    return "%.2e / %.2e / %.2e / %.2e" % (v[0], statistics.median(v), q[8], v[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "resattn"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "bench", "BF16_ACCURACY.md"))
    args = ap.parse_args()
    t0 = time.time()
    y = labels()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        preds, logs = {}, {}
        for label, prec, env in PLANS:
            preds[label], logs[label] = http_predictions(args.bin, prec, env, tmp)
        errs = {label: fixture_errors(args.bin, prec, env, tmp) for label, prec, env in PLANS + [EMULATED]}
    base = preds["fp32"]
    acc0 = float(np.mean(base == y))
    lines.append("# BF16 accuracy\n")
    lines.append("Produced by `/usr/bin/python3 tests/bench/accuracy_bf16.py` on %s UTC, %.0f s."
                 % (datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"), time.time() - t0))
    lines.append("")
    lines.append("CPU: %s." % cpu_line())
    lines.append("")
    lines.append("## Fashion-MNIST test set through HTTP (built-in model)\n")
    lines.append("10,000 test images, each POSTed as a PNG to `resattn serve --precision P` by "
                 "`tools/eval_http.py` (server defaults: batches of up to 8). Agreement: the share "
                 "of images whose top-1 class equals the FP32 server's.\n")
    lines.append("| server | what ran (server log) | top-1 accuracy | vs FP32 | agreement with FP32 |")
    lines.append("|---|---|---:|---:|---:|")
    for label, _, _ in PLANS:
        p = preds[label]
        acc = float(np.mean(p == y))
        lines.append("| %s | %s | %.2f %% | %+.2f pp | %s |" % (
            label, model_line(logs[label]), 100 * acc, 100 * (acc - acc0),
            "—" if label == "fp32" else "%.2f %% (%d differ)" % (100 * np.mean(p == base), int(np.sum(p != base)))))
    lines.append("")
    lines.append("## Parity models: relative L2 error of the logits against PyTorch\n")
    lines.append("`resattn predict --precision P` on each of the %d fixtures of tests/fixtures "
                 "(random weights, non-trivial BatchNorm, 2–3 images of 9×11 to 45×37; PyTorch "
                 "logits computed in float64). Error = ‖y − y_torch‖₂ / ‖y_torch‖₂ over the "
                 "fixture's logits.\n" % len(CASES))
    lines.append("| plan | min / median / 90th pct / max |")
    lines.append("|---|---|")
    for label in errs:
        lines.append("| %s | %s |" % (label, dist(errs[label].values())))
    lines.append("")
    lines.append("| fixture | " + " | ".join(errs) + " |")
    lines.append("|---|" + "---:|" * len(errs))
    for c in CASES:
        lines.append("| %s | %s |" % (c, " | ".join("%.2e" % errs[l][c] for l in errs)))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out != "-":
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
