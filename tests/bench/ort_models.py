#!/usr/bin/python3
"""The models of tests/bench/bench_ort.sh: one PyTorch network per case (random weights with
non-trivial BatchNorm, tools/resattn_torch.py), written twice from the same weights: as a
resattn model file (tools/export_pytorch.py) and as ONNX (torch.onnx.export, opset 13, a
fixed batch per file, so ONNX Runtime sees static shapes). Also one input per (model, batch)
as raw little-endian float32 [n, 3, H, W] and PyTorch's logits for it, as raw float32.

    /usr/bin/python3 tests/bench/ort_models.py OUTDIR [--only SUBSTR]

Prints the case list as JSON (also written to OUTDIR/cases.json): name, threads-independent
file paths, batch. Needs only Debian's python3-torch (no onnx package).
"""

import argparse
import json
import os
import sys
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))
import export_pytorch  # noqa: E402
import resattn_torch  # noqa: E402

R18, R50 = [2, 2, 2, 2], [3, 4, 6, 3]


def models():
    """(key, display name, block, layers, stem, attention, input size, classes, batches)."""
    out = []
    for att in ("none", "se", "eca", "cbam", "ca"):
        out.append(("r18_%s" % att, "ResNet-18 %s 224" % att, "basic", R18, "imagenet", att, 224,
                    1000, (1, 8)))
    out.append(("r50_se", "ResNet-50 se 224", "bottleneck", R50, "imagenet", "se", 224, 1000, (1,)))
    out.append(("cifar_se", "CIFAR ResNet-18 se 32", "basic", R18, "cifar", "se", 32, 10, (1, 64)))
    return out


def build(spec, seed=0):
    key, name, block, layers, stem, att, size, classes, _ = spec
    config = {"name": name, "block": block, "layers": layers, "stem": stem, "attention": att,
              "num_classes": classes, "input": {"channels": 3, "height": size, "width": size}}
    torch.manual_seed(seed)
    model = resattn_torch.build_model(config)
    resattn_torch.randomize(model, seed=seed)
    for m in model.modules():  # the mask-recording hooks are a test aid, not inference
        m._forward_hooks.clear()
    return model.eval(), config


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--only", default="", help="only models whose name contains this")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")  # tracer notices about shapes used as Python ints
    torch.set_num_threads(2)
    os.makedirs(a.outdir, exist_ok=True)
    cases = []
    for spec in models():
        key, name, size, batches = spec[0], spec[1], spec[6], spec[8]
        if a.only and not any(a.only in "%s b%d" % (name, b) for b in batches):
            continue
        model, config = build(spec)
        st = os.path.join(a.outdir, key + ".safetensors")
        export_pytorch.export(model, config, st)
        for b in batches:
            if a.only and a.only not in "%s b%d" % (name, b):
                continue
            x = torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(1))
            base = os.path.join(a.outdir, "%s_b%d" % (key, b))
            with torch.no_grad():
                torch.onnx.export(model, x, base + ".onnx", opset_version=13,
                                  input_names=["input"], output_names=["logits"],
                                  do_constant_folding=True)
                y = model(x)
            x.numpy().astype("<f4").tofile(base + ".input")
            y.numpy().astype("<f4").tofile(base + ".torch")
            cases.append({"name": "%s b%d" % (name, b), "batch": b, "model": st,
                          "onnx": base + ".onnx", "input": base + ".input",
                          "torch_logits": base + ".torch", "classes": spec[7]})
    text = json.dumps(cases, indent=1)
    with open(os.path.join(a.outdir, "cases.json"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
