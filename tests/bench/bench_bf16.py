#!/usr/bin/python3
"""BF16 against FP32: resattn's own forward pass in both precisions, side by side.

For each case (network, input size, batch, threads) the same random-weight model (built in
PyTorch by tools/resattn_torch.py, written by tools/export_pytorch.py) is loaded by two or
three engines, each its own process kept loaded (tests/bench/engine_loop.c, built here):
  fp32       --precision fp32 (the default)
  bf16       --precision bf16 with the plan this CPU gets (AMX: every layer BF16;
             AVX512-BF16: FP32 Winograd layers kept, the rest BF16)
  bf16-all   every layer in BF16 products (RESATTN_WINOGRAD=0), only where that differs
Each turn runs one untimed and one timed pass on every engine, in an order rotated every
turn; the ratio of a turn is fp32 ms / bf16 ms, and the table gives the median of those
ratios with its quartiles (../shared/DEPENDENCIES.md, "Benchmarking on these machines").
In the same run tests/bench/peak_probe.c measures one core's FP32 FMA, AVX512-BF16 and
AMX-BF16 peaks (best of five, at the start and at the end); each case's GFLOP/s (the
model's direct-convolution FLOPs) is given as a fraction of threads x that peak for the
instruction its products use.

    /usr/bin/python3 tests/bench/bench_bf16.py [--turns N] [--only SUBSTR] [--out FILE|-]
        [--build build]

Writes tests/bench/BF16_RESULTS.md (unless --out -) and prints it.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bf16_common import HERE, ROOT, cpu_line  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tools"))

R18, R50 = [2, 2, 2, 2], [3, 4, 6, 3]
# label, block, layers, stem, attention, size, classes, batch, threads, turns factor
CASES = [
    ("ResNet-18 + SE 224², batch 1", "basic", R18, "imagenet", "se", 224, 1000, 1, 2, 1.0),
    ("ResNet-18 + SE 224², batch 8", "basic", R18, "imagenet", "se", 224, 1000, 8, 2, 0.5),
    ("ResNet-18 + SE 224², batch 1", "basic", R18, "imagenet", "se", 224, 1000, 1, 1, 0.5),
    ("ResNet-18 + SE 224², batch 8", "basic", R18, "imagenet", "se", 224, 1000, 8, 1, 0.25),
    ("ResNet-50 + SE 224², batch 1", "bottleneck", R50, "imagenet", "se", 224, 1000, 1, 2, 0.5),
    ("CIFAR ResNet-18 + SE 32², batch 1", "basic", R18, "cifar", "se", 32, 10, 1, 2, 1.0),
    ("CIFAR ResNet-18 + SE 32², batch 64", "basic", R18, "cifar", "se", 32, 10, 64, 2, 0.5),
]
# targets of BF16 (this CPU's plan) over FP32 at 2 threads: (AMX, AVX512-BF16 without AMX)
TARGETS = {("ResNet-18 + SE 224², batch 1", 2): (3.0, 1.5),
           ("ResNet-18 + SE 224², batch 8", 2): (4.0, 1.5)}


def build_tools(build, tmp):
    """engine_loop (against build/libresattn.a) and peak_probe, in tmp."""
    libs = subprocess.run(["pkg-config", "--libs", "openblas", "jansson"], check=True,
                          capture_output=True, text=True).stdout.split()
    engine, probe = os.path.join(tmp, "engine_loop"), os.path.join(tmp, "peak_probe")
    subprocess.run(["cc", "-O2", "-I", os.path.join(ROOT, "include"), "-o", engine,
                    os.path.join(HERE, "engine_loop.c"), os.path.join(ROOT, build, "libresattn.a")]
                   + libs + ["-lm", "-lpthread"], check=True)
    subprocess.run(["cc", "-O2", "-o", probe, os.path.join(HERE, "peak_probe.c")], check=True)
    return engine, probe


def export_model(case, path):
    import torch
    import export_pytorch
    import resattn_torch
    label, block, layers, stem, att, size, classes = case[:7]
    cfg = {"name": "bench", "block": block, "layers": layers, "stem": stem, "attention": att,
           "num_classes": classes, "input": {"channels": 3, "height": size, "width": size}}
    torch.manual_seed(0)
    model = resattn_torch.build_model(cfg)
    resattn_torch.randomize(model, seed=0)
    export_pytorch.export(model, cfg, path)


def peaks(probe):
    """One core's peaks (GFLOP/s), pinned to CPU 0 when taskset exists."""
    cmd = [probe, "0.2"]
    if subprocess.run(["sh", "-c", "command -v taskset"], capture_output=True).returncode == 0:
        cmd = ["taskset", "-c", "0"] + cmd
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


class Engine:
    def __init__(self, engine, model, precision, batch, threads, env=None):
        e = dict(os.environ)
        e.update(env or {})
        self.p = subprocess.Popen([engine, model, precision, str(batch), str(threads)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=e)
        self.info = json.loads(self.p.stdout.readline())
        self.ms = []

    def run(self):
        self.p.stdin.write("pass\n")
        self.p.stdin.flush()
        self.ms.append(float(self.p.stdout.readline()))

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def quartiles(v):
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return q[0], statistics.median(v), q[2]


def run_case(case, engine, tmp, turns):
    label, batch, threads = case[0], case[7], case[8]
    path = os.path.join(tmp, "%s_%s.safetensors" % (case[1], case[5]))
    if not os.path.exists(path):
        export_model(case, path)
    engines = {"fp32": Engine(engine, path, "fp32", batch, threads),
               "bf16": Engine(engine, path, "bf16", batch, threads)}
    if engines["bf16"].info["kernel_path"] == "avx512bf16":
        engines["bf16-all"] = Engine(engine, path, "bf16", batch, threads, {"RESATTN_WINOGRAD": "0"})
    names = list(engines)
    n = max(6, int(turns * case[9]))
    for t in range(n):
        order = names[t % len(names):] + names[:t % len(names)]
        for k in order:
            engines[k].run()
    for e in engines.values():
        e.close()
    out = {"label": label, "batch": batch, "threads": threads, "turns": n,
           "flops": engines["fp32"].info["flops_per_image"] * batch, "engines": {}}
    for k, e in engines.items():
        out["engines"][k] = {"ms": statistics.median(e.ms), "info": e.info}
        if k != "fp32":
            out["engines"][k]["ratio"] = quartiles([a / b for a, b in zip(engines["fp32"].ms, e.ms)])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=30)
    ap.add_argument("--only", default=None)
    ap.add_argument("--build", default="build")
    ap.add_argument("--out", default=os.path.join(HERE, "BF16_RESULTS.md"))
    args = ap.parse_args()
    t0 = time.time()
    load0 = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        engine, probe = build_tools(args.build, tmp)
        p0 = peaks(probe)
        print("peaks at start: %s" % p0, file=sys.stderr)
        for case in CASES:
            if args.only and args.only not in case[0]:
                continue
            r = run_case(case, engine, tmp, args.turns)
            results.append(r)
            print("%s, %d thr: %s" % (r["label"], r["threads"], json.dumps(r["engines"])),
                  file=sys.stderr)
        p1 = peaks(probe)
    peak = {k: max(p0.get(k) or 0, p1.get(k) or 0)
            for k in ("fp32_fma_gflops", "avx512bf16_gflops", "amx_bf16_gflops")}
    text = report(results, p0, p1, peak, load0, os.getloadavg(), time.time() - t0, args)
    print(text)
    if args.out != "-":
        with open(args.out, "w") as f:
            f.write(text)
    return 0


PEAK_OF = {"avx512bf16": "avx512bf16_gflops", "amx": "amx_bf16_gflops"}


def frac(gflops, key, threads, peak):
    p = peak.get(key) or 0 if key else 0
    return "%.0f %%" % (100 * gflops / (threads * p)) if p else "—"


def report(results, p0, p1, peak, load0, load1, secs, args):
    L = []
    L.append("# BF16 against FP32 (resattn, side by side)\n")
    cmd = "/usr/bin/python3 tests/bench/bench_bf16.py --turns %d" % args.turns
    if args.only:
        cmd += " --only '%s'" % args.only
    L.append("Produced by `%s` on %s UTC, %.0f s." % (
        cmd, datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"), secs))
    L.append("")
    L.append("CPU: %s. Load average (1/5/15 min) at start %.2f/%.2f/%.2f, at end %.2f/%.2f/%.2f "
             "(a shared machine: other jobs ran meanwhile, which the interleaving is for)."
             % ((cpu_line(),) + tuple(load0) + tuple(load1)))
    L.append("")
    amx = "%.0f" % peak["amx_bf16_gflops"] if peak["amx_bf16_gflops"] else \
        "not measured (%s)" % p0.get("amx_missing", "no AMX")
    L.append("One core's peak, operands in registers (tests/bench/peak_probe.c, best of five at "
             "the start / end): FP32 FMA %.0f / %.0f GFLOP/s, AVX512-BF16 vdpbf16ps %s / %s, "
             "AMX-BF16 tdpbf16ps %s." % (
                 p0["fp32_fma_gflops"], p1["fp32_fma_gflops"],
                 "%.0f" % p0["avx512bf16_gflops"] if p0["avx512bf16_gflops"] else "—",
                 "%.0f" % p1["avx512bf16_gflops"] if p1["avx512bf16_gflops"] else "—", amx))
    L.append("")
    L.append("Ratio = FP32 ms / BF16 ms of the same turn (above 1: BF16 faster), median and "
             "quartiles over the turns. GFLOP/s count the model's direct-convolution FLOPs "
             "(Winograd layers do fewer, so a share above 100 % is possible); each is given as a "
             "share of threads × the one-core FP32 FMA peak and, for BF16 engines, of the "
             "peak of their BF16 instruction (vdpbf16ps or tdpbf16ps). The bf16 plan on "
             "AVX512-BF16 runs its Winograd layers in FP32.\n")
    L.append("| case | thr | turns | engine | path | ms / batch | GFLOP/s | % of FP32 FMA peak | % of BF16 peak | × FP32 (q1, median, q3) |")
    L.append("|---|---|---|---|---|---:|---:|---:|---:|---|")
    for r in results:
        for k, e in r["engines"].items():
            g = r["flops"] / (e["ms"] / 1e3) / 1e9
            path = e["info"]["kernel_path"]
            ratio = "%.2f, **%.2f**, %.2f" % e["ratio"] if "ratio" in e else "—"
            L.append("| %s | %d | %d | %s | %s | %.2f | %.0f | %s | %s | %s |" % (
                r["label"], r["threads"], r["turns"], k, path, e["ms"], g,
                frac(g, "fp32_fma_gflops", r["threads"], peak),
                frac(g, PEAK_OF.get(path), r["threads"], peak), ratio))
    L.append("")
    L.append("## Targets\n")
    L.append("| case | thr | target | value | met |")
    L.append("|---|---|---|---:|---|")
    for r in results:
        key = (r["label"], r["threads"])
        if key not in TARGETS:
            continue
        e = r["engines"]["bf16"]
        path = e["info"]["kernel_path"]
        if path == "amx":
            need, what = TARGETS[key][0], "BF16 on AMX ≥ %.1f× FP32"
        elif path == "avx512bf16":
            need, what = TARGETS[key][1], "BF16 on AVX512-BF16 (no AMX) ≥ %.1f× FP32"
        else:
            L.append("| %s | %d | BF16 | no BF16 path on this CPU | — |" % key)
            continue
        L.append("| %s | %d | %s | %.2f | %s |" % (r["label"], r["threads"], what % need,
                                                    e["ratio"][1], "yes" if e["ratio"][1] >= need else "**no**"))
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
