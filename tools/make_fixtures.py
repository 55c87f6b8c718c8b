#!/usr/bin/python3
"""Write the PyTorch parity fixtures under tests/fixtures/ (consumed by the C tests).

For every block (basic, bottleneck) x stem (cifar, imagenet) x attention (none, se, eca,
cbam, ca) one small network with random weights and non-trivial BatchNorm (gamma and
running_var uniform in [0.5, 2], random beta and running_mean), in eval mode:

    <block>_<stem>_<attention>.safetensors        model in the resattn file format (F32)
    <block>_<stem>_<attention>.in.npy             float32 input [N, C, H, W]
    <block>_<stem>_<attention>.out.npy            float32 logits [N, num_classes]
    <block>_<stem>_<attention>.masks.safetensors  F32 masks named "<block>/<kind>":
        layerS.B/channel [N,C], /spatial [N,H,W], /coord_h [N,C,H], /coord_w [N,C,W]
        (SE, ECA: channel; CBAM: channel + spatial; CA: coord_h + coord_w; none: empty)

plus basic_cifar_se_f16 and basic_cifar_se_bf16, the same kind of model written as F16 /
BF16, whose outputs are computed from the rounded weights. Reference outputs are computed
in float64 (model.double()) and then cast to float32. Everything is seeded, so rerunning
the script reproduces the files byte for byte.

and param_counts.json: for each model, PyTorch's sum(p.numel() for p in
model.parameters()) and the count of its BatchNorm running_mean/running_var entries (what
`resattn inspect` must report).

    /usr/bin/python3 tools/make_fixtures.py [--out tests/fixtures] [--counts-only]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from export_pytorch import export, write_safetensors  # noqa: E402
from resattn_torch import build_model, randomize  # noqa: E402

# Per-attention builder options: small reduction sizes so the attention is not trivial at
# these widths; some cases override the ECA kernel, CBAM kernel and drop CA biases.
OPTS = {
    "none": {},
    "se": {"se_ratio": 4},
    "eca": {},
    "cbam": {"cbam_ratio": 4, "cbam_k": 7},
    "ca": {"ca_ratio": 8, "ca_min_mid": 4},
}

# (block, stem) -> list of variations cycled over the attentions: layers, widths,
# input (channels, height, width), batch, extra config / options.
VARIANTS = {
    ("basic", "cifar"): [
        ([1, 2], (8, 16), (3, 45, 37), 2, {}),
        ([2, 1, 1], (8, 12, 16), (1, 9, 11), 3, {"bn_eps": 1e-3}),
    ],
    ("basic", "imagenet"): [
        ([1, 1, 2], (8, 16, 16), (3, 45, 37), 2, {}),
        ([1, 2, 1, 1], (6, 8, 16, 24), (1, 45, 37), 3, {}),
    ],
    ("bottleneck", "cifar"): [
        ([1, 1], (4, 8), (1, 9, 11), 2, {}),
        ([2, 1, 1], (4, 6, 8), (3, 45, 37), 2, {"bn_eps": 1e-3}),
    ],
    ("bottleneck", "imagenet"): [
        ([1, 2, 1], (4, 8, 8), (3, 45, 37), 3, {}),
        ([2, 1], (6, 8), (1, 9, 11), 2, {}),
    ],
}
ATTS = ["none", "se", "eca", "cbam", "ca"]
# Per-fixture option overrides (beyond OPTS) to cover non-default sizes (stem_width 6:
# a downsample at stride 1 because the channel count changes).
OVERRIDES = {
    "basic_imagenet_eca": {"eca_k": 5},
    "basic_cifar_eca": {"stem_width": 6},
    "bottleneck_cifar_cbam": {"cbam_k": 3},
    "basic_imagenet_ca": {"ca_bias": False},
    "bottleneck_imagenet_ca": {"ca_bias": False},
}


def case_list():
    """[(name, config, widths, opts, batch)] of the 20 parity cases."""
    out, seed_cfg = [], 0
    for (block, stem), variants in VARIANTS.items():
        for i, att in enumerate(ATTS):
            layers, widths, (c, h, w), batch, extra = variants[i % len(variants)]
            name = "%s_%s_%s" % (block, stem, att)
            cfg = {"name": name, "block": block, "layers": layers, "stem": stem,
                   "attention": att, "num_classes": 5 + (seed_cfg % 4),
                   "input": {"channels": c, "height": h, "width": w}}
            cfg.update(extra)
            opts = dict(OPTS[att], **OVERRIDES.get(name, {}))
            out.append((name, cfg, widths, opts, batch))
            seed_cfg += 1
    return out


def round_weights(model, dtype):
    """Round every float parameter and buffer to dtype (and back to float32) in place."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.to(dtype).to(torch.float32))


def make_case(outdir, name, cfg, widths, opts, batch, seed, dtype="f32"):
    torch.manual_seed(seed)
    model = build_model(cfg, widths=widths, **opts)
    randomize(model, seed=seed)
    model.eval()
    if dtype != "f32":
        round_weights(model, {"f16": torch.float16, "bf16": torch.bfloat16}[dtype])
    c, h, w = (cfg["input"][k] for k in ("channels", "height", "width"))
    g = torch.Generator().manual_seed(seed + 1000)
    x = torch.randn(batch, c, h, w, generator=g, dtype=torch.float32)
    base = os.path.join(outdir, name)
    export(model, cfg, base + ".safetensors", dtype=dtype)
    model = model.double()
    model.masks.clear()
    with torch.no_grad():
        y = model(x.double())
    np.save(base + ".in.npy", x.numpy())
    np.save(base + ".out.npy", y.float().numpy())
    masks = {k: v.float() for k, v in model.masks.items()}
    write_safetensors(base + ".masks.safetensors", masks, None)
    return y


def counts(model):
    """PyTorch's parameter count and the BatchNorm running statistics, apart."""
    stats = sum(b.numel() for n, b in model.named_buffers()
                if n.endswith(("running_mean", "running_var")))
    return {"num_params": sum(p.numel() for p in model.parameters()), "num_bn_stats": stats}


def write_counts(outdir):
    """param_counts.json for every fixture model (no weights needed: the counts depend only
    on the architecture)."""
    out = {}
    for name, cfg, widths, opts, _ in case_list():
        out[name] = counts(build_model(cfg, widths=widths, **opts))
    for dt in ("f16", "bf16"):
        cfg = {"block": "basic", "layers": [1, 2], "stem": "cifar", "attention": "se",
               "num_classes": 7, "input": {"channels": 3, "height": 15, "width": 13}}
        out["basic_cifar_se_" + dt] = counts(build_model(cfg, widths=(8, 16), **OPTS["se"]))
    with open(os.path.join(outdir, "param_counts.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures"))
    ap.add_argument("--counts-only", action="store_true",
                    help="only (re)write param_counts.json")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    write_counts(args.out)
    if args.counts_only:
        return
    torch.set_num_threads(1)
    cases = case_list()
    for i, (name, cfg, widths, opts, batch) in enumerate(cases):
        y = make_case(args.out, name, cfg, widths, opts, batch, seed=100 + i)
        print("%-26s layers=%s widths=%s input=%s batch=%d logits|max|=%.3f" %
              (name, cfg["layers"], widths, cfg["input"], batch, y.abs().max().item()))
    for dt in ("f16", "bf16"):
        cfg = {"name": "basic_cifar_se_" + dt, "block": "basic", "layers": [1, 2],
               "stem": "cifar", "attention": "se", "num_classes": 7,
               "input": {"channels": 3, "height": 15, "width": 13}}
        y = make_case(args.out, cfg["name"], cfg, (8, 16), OPTS["se"], 2, seed=900, dtype=dt)
        print("%-26s logits|max|=%.3f" % (cfg["name"], y.abs().max().item()))


if __name__ == "__main__":
    main()
