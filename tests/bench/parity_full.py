#!/usr/bin/python3
"""Full-size parity of the fast paths: the benchmark's networks (ResNet-18/50 at 224x224,
CIFAR ResNet-18 at 32x32, random weights and BatchNorm) in PyTorch vs `resattn predict`,
with the convolution choice set by RESATTN_WINOGRAD: unset (the engine's own choice),
0 (direct only), 2 or 4 (that Winograd tile size on every 3x3 stride-1 layer). Prints
max |logits - ref| / max |ref| per case; the parity tests' bound is 1e-4.

    /usr/bin/python3 tests/bench/parity_full.py [--build build] [--batch 2]
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, HERE)

import bench_core  # noqa: E402
import export_pytorch  # noqa: E402

PICK = ("ResNet-18 se 224 b1", "ResNet-18 ca 224 b1", "ResNet-50 se 224 b1",
        "CIFAR ResNet-18 cbam 32 b1")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--batch", type=int, default=2)
    a = ap.parse_args()
    binary = os.path.join(ROOT, a.build, "resattn")
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="resattn-parity-") as wd:
        for case in bench_core.cases():
            if case[0] not in PICK:
                continue
            model = bench_core.build_torch(case)
            path = os.path.join(wd, "m.safetensors")
            export_pytorch.export(model, bench_core.config_of(case), path)
            x = torch.randn(a.batch, 3, case[5], case[5], generator=torch.Generator().manual_seed(3))
            with torch.no_grad():
                ref = model(x).double().numpy()
            np.save(os.path.join(wd, "x.npy"), x.numpy())
            for mode in (None, "0", "2", "4"):
                env = dict(os.environ)
                env.pop("RESATTN_WINOGRAD", None)
                if mode is not None:
                    env["RESATTN_WINOGRAD"] = mode
                subprocess.run([binary, "predict", "--model", path, "--input",
                                os.path.join(wd, "x.npy"), "--output", os.path.join(wd, "y.npy")],
                               check=True, env=env, capture_output=True)
                y = np.load(os.path.join(wd, "y.npy")).astype(np.float64)
                rel = np.abs(y - ref).max() / np.abs(ref).max()
                worst = max(worst, rel)
                print("%-28s RESATTN_WINOGRAD=%-5s rel err %.2e %s" % (
                    case[0].replace(" b1", ""), mode or "auto", rel, "ok" if rel <= 1e-4 else "FAIL"),
                    flush=True)
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
