#!/usr/bin/python3
"""Compare resattn builds (or environment settings) on one model, side by side: each variant
is a tests/bench/resattn_worker process kept loaded; turn after turn each does one untimed and
one timed forward pass, the order reversing every turn. The workers are started afresh for
each of --rounds rounds: a process keeps its own luck (where its buffers fall in the caches)
for its whole life, which moved a variant's ratio by up to 10% between otherwise equal runs.
Prints per variant the median ms and the median and quartiles of its per-turn ratio to the
first variant over all rounds (below 1: faster), and each round's median ratio.

    /usr/bin/python3 tests/bench/ab_resattn.py [--turns N] [--rounds R] [--cpu] MODEL INPUT \\
        BATCH THREADS 'WORKER_A' 'ENV=VALUE WORKER_B' ...

MODEL and INPUT as written by tests/bench/ort_models.py. --cpu times the process's CPU time
instead of wall time (one thread only: steadier when other jobs share the cores, since time
spent waiting for a core is not counted). A variant is a worker path, optionally preceded by
environment settings (e.g. 'RESATTN_WINOGRAD=0 build-bench/resattn_worker').
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ort import Worker, quartiles  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=20, help="turns per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--cpu", action="store_true", help="process CPU time, not wall time")
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("batch")
    ap.add_argument("threads")
    ap.add_argument("variants", nargs="+")
    a = ap.parse_args()
    envs = []
    for spec in a.variants:
        *settings, binary = spec.split()
        env = dict(os.environ)
        env.update(kv.split("=", 1) for kv in settings)
        envs.append((binary, env))
    ms = [[] for _ in a.variants]
    per_round = [[] for _ in a.variants]
    cmd = "run cpu" if a.cpu else "run"
    for _ in range(a.rounds):
        workers = [Worker([b, a.model, a.threads, a.input, a.batch], env=e) for b, e in envs]
        got = [[] for _ in workers]
        for t in range(a.turns):
            order = range(len(workers)) if t % 2 == 0 else reversed(range(len(workers)))
            for i in order:
                got[i].append(float(workers[i].ask(cmd)))
                time.sleep(0.005)
        for w in workers:
            w.close()
        for i in range(len(workers)):
            ms[i] += got[i]
            per_round[i].append(statistics.median([x / y for x, y in zip(got[i], got[0])]))
    for i, spec in enumerate(a.variants):
        q1, med, q3 = quartiles([x / y for x, y in zip(ms[i], ms[0])])
        print("%-50s %8.2f ms  ratio %.3f [%.3f, %.3f]  rounds %s" % (
            spec, statistics.median(ms[i]), med, q1, q3,
            " ".join("%.3f" % r for r in per_round[i])))


if __name__ == "__main__":
    sys.exit(main())
