#!/usr/bin/python3
"""resattn FP32 against ONNX Runtime FP32, side by side (run through tests/bench/bench_ort.sh).

For every case of tests/bench/ort_models.py and every thread count, two worker processes
are started and kept loaded: tests/bench/resattn_worker.c (the public C API) and
tests/bench/ort_worker.mjs (onnxruntime-node, CPU provider). Before any timing both compute
the logits of the same input; they must agree with each other and with PyTorch's within
--tol (relative to the largest logit), else the case is reported as failed and not timed.
Then, turn after turn, each engine does one untimed and one timed pass, the order rotating
every turn, with a pause after each engine's passes (ONNX Runtime's idle pool threads keep
spinning for tens of milliseconds after a run at 2 threads; the pause keeps that off the
next engine's bill). The per-turn ratio is ORT ms / resattn ms (above 1: resattn faster);
the table gives its median and quartiles. The machine's FP32 FMA peak of one core is measured
by the resattn worker before every case, and each engine's GFLOP/s (the model's
direct-convolution FLOPs, from resattn_model_info) is given as a fraction of threads x that
peak (the best measured in the run). Each case runs in --rounds rounds, each with a fresh
pair of workers (logits checked again), and the turns of all rounds are pooled.

    /usr/bin/python3 tests/bench/bench_ort.py --models DIR --worker BIN [--threads 1,2]
        [--seconds S] [--rounds R] [--min-turns N] [--max-turns N] [--only SUBSTR] [--out FILE]
"""

import argparse
import array
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Worker:
    """A loaded engine behind a line protocol: one command, one answer line."""

    def __init__(self, argv, env=None):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=env)
        ready = self.p.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError("%s did not start (said %r)" % (argv[0], ready))

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        answer = self.p.stdout.readline().strip()
        if not answer or answer.startswith("error"):
            raise RuntimeError("%s: %r -> %r" % (self.p.args[0], line, answer))
        return answer

    def cpu_ns(self):
        """CPU time of all the process's threads so far (scheduler statistics, ns)."""
        total = 0
        task = "/proc/%d/task" % self.p.pid
        for t in os.listdir(task):
            try:
                with open(os.path.join(task, t, "schedstat")) as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
        return total

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait(timeout=30)


def read_f32(path):
    a = array.array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    if sys.byteorder != "little":
        a.byteswap()
    return a


def rel_diff(a, b):
    scale = max(max(abs(v) for v in b), 1e-30)
    return max(abs(x - y) for x, y in zip(a, b)) / scale


def quartiles(xs):
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def start(case, threads, a):
    res = Worker([a.worker, case["model"], str(threads), case["input"], str(case["batch"])])
    ort = Worker(["node", os.path.join(HERE, "ort_worker.mjs"), case["onnx"], str(threads),
                  case["input"], str(case["batch"]), "3"])
    return res, ort


def check_logits(case, res, ort, row, a, tmp):
    paths = {}
    for name, w in (("resattn", res), ("ort", ort)):
        paths[name] = os.path.join(tmp, "%s.logits" % name)
        w.ask("logits " + paths[name])
    ref = read_f32(case["torch_logits"])
    y_res, y_ort = read_f32(paths["resattn"]), read_f32(paths["ort"])
    row["diff_ort_res"] = rel_diff(y_ort, y_res)
    row["diff_res_torch"] = rel_diff(y_res, ref)
    row["diff_ort_torch"] = rel_diff(y_ort, ref)
    row["agree"] = max(row["diff_ort_res"], row["diff_res_torch"], row["diff_ort_torch"]) <= a.tol


def turns(res, ort, threads, a, seconds, min_turns, max_turns, out):
    """Alternating passes until both the time and the turn minimum are reached."""
    gap = {"resattn": a.gap_ms[0] / 1e3, "ort": a.gap_ms[threads > 1] / 1e3}
    engines = [("resattn", res), ("ort", ort)]
    t_end = time.monotonic() + seconds
    turn = 0
    while turn < max_turns and (turn < min_turns or time.monotonic() < t_end):
        order = engines if turn % 2 == 0 else engines[::-1]
        got = {}
        for name, w in order:
            got[name] = float(w.ask("run"))
            c0 = w.cpu_ns() if name == "ort" else 0
            time.sleep(gap[name])
            if name == "ort":
                out["idle"].append((w.cpu_ns() - c0) / 1e6)
        for k in ("resattn", "ort"):
            out[k].append(got[k])
        out["ratios"].append(got["ort"] / got["resattn"])
        turn += 1


def run_case(case, threads, a, tmp):
    """Rounds of fresh worker pairs (a process keeps its own cache luck for its life), the
    logits checked in every round, the turns of all rounds pooled."""
    row = {"case": case["name"], "threads": threads, "batch": case["batch"], "agree": True}
    out = {"resattn": [], "ort": [], "ratios": [], "idle": []}
    rounds = []
    for r in range(a.rounds):
        res, ort = start(case, threads, a)
        try:
            check = {}
            check_logits(case, res, ort, check, a, tmp)
            if r == 0:
                row.update(check)
                row["flops"] = float(res.ask("flops"))
                row["peak"] = float(res.ask("peak 300"))
            row["agree"] = row["agree"] and check["agree"]
            if not row["agree"]:
                return row
            n0 = len(out["ratios"])
            turns(res, ort, threads, a, a.seconds / a.rounds, -(-a.min_turns // a.rounds),
                  -(-a.max_turns // a.rounds), out)
            rounds.append(statistics.median(out["ratios"][n0:]))
        finally:
            res.close()
            ort.close()
    row["turns"] = len(out["ratios"])
    row["ratios"] = out["ratios"]
    row["round_ratios"] = rounds
    row["ratio"] = quartiles(out["ratios"])
    row["res_ms"] = statistics.median(out["resattn"])
    row["ort_ms"] = statistics.median(out["ort"])
    row["ort_idle_cpu_ms"] = statistics.median(out["idle"])
    return row


def machine():
    cpu, flags = "unknown", []
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    virt = "under a hypervisor" if "hypervisor" in flags else "bare metal"
    simd = [x for x in flags if x.startswith(("avx", "amx", "fma"))]
    return cpu, os.cpu_count(), virt, simd


def versions():
    pkg = os.path.join(HERE, "node_modules", "onnxruntime-node", "package.json")
    with open(pkg) as f:
        ort = json.load(f)["version"]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return ort, node


def table(rows, peak):
    lines = ["| case | thr | turns | ORT ms | resattn ms | ratio median | quartiles | per round"
             " | resattn GFLOP/s (% of peak) | ORT GFLOP/s (% of peak) | ORT idle CPU ms"
             " | logits rel. diff ORT/resattn/torch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diffs = "%.1e / %.1e / %.1e" % (r["diff_ort_res"], r["diff_res_torch"], r["diff_ort_torch"])
        if not r["agree"]:
            lines.append("| %s | %d | — | — | — | **logits disagree** | | | | | | %s |" % (
                r["case"], r["threads"], diffs))
            continue
        cap = peak * r["threads"]
        gr = r["flops"] * r["batch"] / r["res_ms"] / 1e6
        go = r["flops"] * r["batch"] / r["ort_ms"] / 1e6
        q1, med, q3 = r["ratio"]
        lines.append("| %s | %d | %d | %.2f | %.2f | **%.3f** | %.3f – %.3f | %s | %.1f (%.0f %%) | %.1f (%.0f %%) | %.0f | %s |" % (
            r["case"], r["threads"], r["turns"], r["ort_ms"], r["res_ms"], med, q1, q3,
            " ".join("%.2f" % x for x in r["round_ratios"]),
            gr, 100 * gr / cap, go, 100 * go / cap, r["ort_idle_cpu_ms"], diffs))
    return "\n".join(lines)


def targets(rows):
    timed = [r for r in rows if r["agree"]]
    bad = [r for r in rows if not r["agree"]]
    meds = [r["ratio"][1] for r in timed]
    below = [r for r in timed if r["ratio"][1] < 1.0]
    overall = statistics.median(meds) if meds else float("nan")
    out = ["- Every case at least 1.0× ONNX Runtime: %s" % (
        "met (lowest %.3f, %s at %d thread%s)" % (
            min(meds), *[(r["case"], r["threads"], "s" if r["threads"] > 1 else "")
                         for r in timed if r["ratio"][1] == min(meds)][0])
        if meds and not below and not bad else "**not met**")]
    for r in below:
        out.append("  - %s at %d thread%s: %.3f (%.1f %% short)" % (
            r["case"], r["threads"], "s" if r["threads"] > 1 else "", r["ratio"][1],
            100 * (1 - r["ratio"][1])))
    for r in bad:
        out.append("  - %s at %d threads: logits disagree, not timed" % (r["case"], r["threads"]))
    out.append("- Median over the %d rows at least 1.15×: %.3f, %s" % (
        len(meds), overall, "met" if overall >= 1.15 else "**not met**"))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True, help="directory written by ort_models.py")
    ap.add_argument("--worker", required=True, help="the built resattn_worker")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=24.0, help="per case and thread count")
    ap.add_argument("--rounds", type=int, default=3, help="fresh worker pairs per case")
    ap.add_argument("--min-turns", type=int, default=15)
    ap.add_argument("--max-turns", type=int, default=120)
    ap.add_argument("--gap-ms", default="10,150",
                    help="pause after resattn's passes, after ORT's at 2+ threads (ms)")
    ap.add_argument("--tol", type=float, default=1e-4, help="max logit difference / max |logit|")
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default="-", help="results file to write ('-': print only)")
    ap.add_argument("--json", help="also write the rows (with every turn's ratio) as JSON here")
    ap.add_argument("--command", default="", help="the command line to record in the results")
    a = ap.parse_args()
    a.gap_ms = [float(x) for x in a.gap_ms.split(",")]
    threads = [int(t) for t in a.threads.split(",")]
    with open(os.path.join(a.models, "cases.json")) as f:
        cases = [c for c in json.load(f) if a.only in c["name"]]
    load0, t0 = os.getloadavg(), time.time()
    rows = []
    tmp = os.path.join(a.models, "logits")
    os.makedirs(tmp, exist_ok=True)
    for case in cases:
        for t in threads:
            rows.append(run_case(case, t, a, tmp))
            r = rows[-1]
            print("%-30s %d thr: %s" % (r["case"], t, "ratio %.3f [%.3f, %.3f] over %d turns" % (
                r["ratio"][1], r["ratio"][0], r["ratio"][2], r["turns"])
                if r["agree"] else "logits disagree"), file=sys.stderr, flush=True)
    peaks = [r["peak"] for r in rows]
    peak = max(peaks)
    cpu, ncpu, virt, simd = machine()
    ort_v, node_v = versions()
    text = "\n".join([
        "# resattn FP32 against ONNX Runtime FP32", "",
        "Produced by `%s` on %s UTC in %.0f s." % (
            a.command or "tests/bench/bench_ort.sh", time.strftime("%Y-%m-%d %H:%M", time.gmtime(t0)),
            time.time() - t0), "",
        "Machine: %s, %d logical CPUs, %s; %s. SIMD flags: %s." % (
            cpu, ncpu, virt, platform.platform(), " ".join(simd)), "",
        "ONNX Runtime %s (npm onnxruntime-node, CPU execution provider, FP32; intraOpNumThreads = "
        "threads, interOpNumThreads 1, sequential, graphOptimizationLevel 'all'), Node.js %s. "
        "Models: tests/bench/ort_models.py (random weights, torch.onnx.export opset 13 with a fixed "
        "batch; the same weights in a resattn model file)." % (ort_v, node_v), "",
        "FP32 FMA peak of one core, measured by the resattn worker before every case: best %.1f "
        "GFLOP/s, median %.1f. “%% of peak” = GFLOP/s (direct-convolution FLOPs of the model, "
        "%s) over threads × the best peak." % (
            peak, statistics.median(peaks), "Winograd layers do fewer"), "",
        "Load average (1/5/15 min) at start %.2f/%.2f/%.2f, at end %.2f/%.2f/%.2f." % (
            load0 + os.getloadavg()), "",
        "Ratio = ORT ms / resattn ms of one turn (above 1: resattn faster); median and quartiles "
        "over the turns of all rounds (each round a fresh pair of worker processes: a process "
        "keeps its own cache luck for its life), and each round's median. ms = medians of the "
        "timed passes. “ORT idle CPU ms” = CPU time ONNX "
        "Runtime's process used during the pause after its timed pass (its pool spinning).", "",
        table(rows, peak), "", "## Targets", "", targets(rows), ""])
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"peak": peak, "rows": rows}, f, indent=1)
    if a.out != "-":
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
