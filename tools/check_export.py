#!/usr/bin/python3
"""Check that exported models give PyTorch's logits through the C binary.

For K random configurations of the model contract (block, stem, attention, 1-6 stages of
1-3 blocks, widths, stem width, reduction sizes, ECA/CBAM kernel sizes, CA with or
without biases, input channels and odd sizes, num_classes, bn_eps, batch, and sometimes
F16/BF16 weights), this builds the network from tools/resattn_torch.py, randomises its
weights and BatchNorm statistics, exports it with tools/export_pytorch.py, runs

    <bin> predict --model M.safetensors --input X.npy --output Y.npy

and compares Y with PyTorch's float64 reference. The error is max|Y - ref| / max|ref|
(relative to the output scale); it prints one line per configuration and exits 1 if any
error exceeds --tol (1e-4) or the binary fails.

    /usr/bin/python3 tools/check_export.py --bin build-tools/resattn [-k 40] [--seed 1]
    /usr/bin/python3 tools/check_export.py --npy FILE     # print an .npy's dtype, shape, range
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from export_pytorch import export  # noqa: E402
from resattn_torch import ATTENTIONS, build_model, randomize  # noqa: E402


def save_npy(path, array):
    """Write a C-contiguous float32 .npy (the format resattn predict reads)."""
    np.save(path, np.ascontiguousarray(array, dtype=np.float32))


def load_npy(path):
    return np.load(path, allow_pickle=False)


def random_case(rng):
    """(config, widths, builder options, batch, dtype) of one random contract configuration."""
    block = rng.choice(["basic", "bottleneck"])
    stem = rng.choice(["cifar", "imagenet"])
    att = rng.choice(ATTENTIONS)
    stages = rng.choice([1, 2, 2, 3, 3, 4, 5, 6])
    layers = [rng.randint(1, 3 if stages <= 3 else 2) for _ in range(stages)]
    hi = 8 if block == "bottleneck" else 24
    widths = [rng.randint(2, hi) for _ in range(stages)]
    size_lo = 12 if stem == "imagenet" else 3
    cfg = {
        "name": "random",
        "block": block,
        "layers": layers,
        "stem": stem,
        "attention": att,
        "num_classes": rng.randint(1, 12),
        "input": {"channels": rng.choice([1, 1, 2, 3, 3, 4]),
                  "height": rng.randint(size_lo, 41), "width": rng.randint(size_lo, 41)},
    }
    if rng.random() < 0.5:
        cfg["bn_eps"] = rng.choice([1e-5, 1e-4, 1e-3, 2e-5])
    opts = {"stem_width": rng.choice([None, rng.randint(2, 16)]),
            "se_ratio": rng.choice([1, 2, 4, 16]),
            "eca_k": rng.choice([None, 1, 3, 5, 7]),
            "cbam_ratio": rng.choice([1, 2, 4, 16]), "cbam_k": rng.choice([1, 3, 5, 7]),
            "ca_ratio": rng.choice([2, 4, 32]), "ca_min_mid": rng.choice([1, 2, 8]),
            "ca_bias": rng.random() < 0.5}
    dtype = rng.choice(["f32"] * 6 + ["f16", "bf16"])
    return cfg, widths, opts, rng.randint(1, 4), dtype


def relevant(opts, attention):
    """The builder options that matter for this attention kind (for the report line)."""
    pre = {"se": "se_", "eca": "eca_", "cbam": "cbam_", "ca": "ca_"}.get(attention, "-")
    return {k: v for k, v in opts.items() if v is not None and (k.startswith(pre) or k == "stem_width")}


def run_case(binary, cfg, widths, opts, batch, dtype, seed, tmp):
    """Max relative error of the C binary against PyTorch (float64) for one case."""
    model = build_model(cfg, widths=widths, **opts)
    randomize(model, seed=seed)
    model.eval()
    if dtype != "f32":
        tdt = torch.float16 if dtype == "f16" else torch.bfloat16
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                if t.is_floating_point():
                    t.copy_(t.to(tdt).to(torch.float32))
    c, h, w = (cfg["input"][k] for k in ("channels", "height", "width"))
    x = torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(seed + 1))
    mpath, xpath, ypath = (os.path.join(tmp, n) for n in ("m.safetensors", "x.npy", "y.npy"))
    export(model, cfg, mpath, dtype=dtype)
    with torch.no_grad():
        ref = model.double()(x.double()).numpy()
    save_npy(xpath, x.numpy())
    if os.path.exists(ypath):
        os.remove(ypath)
    p = subprocess.run([binary, "predict", "--model", mpath, "--input", xpath, "--output", ypath],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        return None, "exit %d: %s" % (p.returncode, (p.stderr or p.stdout).strip()[:300])
    y = load_npy(ypath)
    if y.shape != ref.shape:
        return None, "output shape %s, expected %s" % (y.shape, ref.shape)
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30)), ""


def torchvision_cases():
    """(name, torchvision model, config) for resnet18 and resnet50 with randomised weights:
    checks that the contract's names and block semantics are torchvision's own."""
    import torchvision.models as tvm

    out = []
    for name, block, layers in (("resnet18", "basic", [2, 2, 2, 2]),
                                ("resnet50", "bottleneck", [3, 4, 6, 3])):
        cfg = {"name": name, "block": block, "layers": layers, "stem": "imagenet",
               "attention": "none", "num_classes": 10,
               "input": {"channels": 3, "height": 67, "width": 45}}
        out.append((name, getattr(tvm, name)(num_classes=10), cfg))
    return out


def check_torchvision(binary, tol, tmp):
    """Ours vs torchvision (same weights, float64), then the C binary vs torchvision."""
    fails = 0
    for i, (name, tv, cfg) in enumerate(torchvision_cases()):
        randomize(tv, seed=7 + i)
        tv.eval()
        ours = build_model(cfg, widths=[64, 128, 256, 512]).eval()
        tsd, osd = tv.state_dict(), ours.state_dict()
        same_names = sorted(tsd) == sorted(osd) and all(tsd[k].shape == osd[k].shape for k in tsd)
        ours.load_state_dict(tsd)
        x = torch.randn(2, 3, 67, 45, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            ref = tv.double()(x.double()).numpy()
            mine = ours.double()(x.double()).numpy()
        d_ours = float(np.abs(mine - ref).max() / np.abs(ref).max())
        mpath, xpath, ypath = (os.path.join(tmp, n) for n in ("tv.safetensors", "tx.npy", "ty.npy"))
        export(tv, cfg, mpath)
        save_npy(xpath, x.numpy())
        p = subprocess.run([binary, "predict", "--model", mpath, "--input", xpath, "--output",
                            ypath], capture_output=True, text=True, timeout=600)
        d_c = (float(np.abs(load_npy(ypath) - ref).max() / np.abs(ref).max())
               if p.returncode == 0 else None)
        bad = not same_names or d_ours > 1e-12 or d_c is None or d_c > tol
        fails += bad
        print("torchvision %s: names/shapes %s, ours-vs-torchvision %.1e, C-vs-torchvision %s %s"
              % (name, "identical" if same_names else "DIFFER", d_ours,
                 "%.2e" % d_c if d_c is not None else p.stderr.strip()[:200],
                 "FAIL" if bad else "ok"), flush=True)
    return fails


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "resattn"))
    ap.add_argument("-k", type=int, default=40, help="number of random configurations")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--npy", help="print dtype, shape and range of an .npy file and exit")
    ap.add_argument("--torchvision", action="store_true",
                    help="also check torchvision resnet18/resnet50 (needs python3-torchvision)")
    ap.add_argument("--keep", help="directory to keep failing models and inputs in")
    args = ap.parse_args()
    if args.npy:
        a = load_npy(args.npy)
        print("%s %s min %g max %g" % (a.dtype, a.shape, a.min(), a.max()))
        return 0
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    worst, failures = 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.k):
            cfg, widths, opts, batch, dtype = random_case(rng)
            err, msg = run_case(args.bin, cfg, widths, opts, batch, dtype, args.seed * 1000 + i, tmp)
            desc = "%s/%s/%s layers=%s widths=%s in=%dx%dx%d n=%d cls=%d eps=%g %s opts=%s" % (
                cfg["block"], cfg["stem"], cfg["attention"], cfg["layers"], widths,
                cfg["input"]["channels"], cfg["input"]["height"], cfg["input"]["width"], batch,
                cfg["num_classes"], cfg.get("bn_eps", 1e-5), dtype,
                json.dumps(relevant(opts, cfg["attention"]), sort_keys=True))
            bad = err is None or err > args.tol
            if err is not None:
                worst = max(worst, err)
            print("%3d %-4s err=%s %s %s" % (i, "FAIL" if bad else "ok",
                                            "%.2e" % err if err is not None else "-", desc, msg),
                  flush=True)
            if bad:
                failures += 1
                if args.keep:
                    os.makedirs(args.keep, exist_ok=True)
                    for n in ("m.safetensors", "x.npy"):
                        os.replace(os.path.join(tmp, n), os.path.join(args.keep, "%d_%s" % (i, n)))
        tv_fails = check_torchvision(args.bin, args.tol, tmp) if args.torchvision else 0
    print("%d/%d random configurations within %g (worst %.2e)%s" % (
        args.k - failures, args.k, args.tol, worst,
        "; torchvision: %d failed" % tv_fails if args.torchvision else ""))
    return 1 if failures or tv_fails else 0


if __name__ == "__main__":
    sys.exit(main())
