#!/usr/bin/python3
"""Models for tests/bench/bench_server.sh: random-weight Pattern-1 SE-ResNet-18s written with
tools/resattn_torch.py + tools/export_pytorch.py, plus the same network saved as a PyTorch
state dict for tests/bench/fastapi_server.py.

    /usr/bin/python3 tests/bench/bench_server_models.py OUTDIR

Writes OUTDIR/cifar_se.safetensors (CIFAR stem, 3x32x32, 10 classes), OUTDIR/cifar_se.pt,
OUTDIR/cifar_se.json (its config) and OUTDIR/imagenet_se.safetensors (ImageNet stem,
3x224x224, 1000 classes: the 224x224 overhead measurement).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))

import torch  # noqa: E402

import export_pytorch  # noqa: E402
import resattn_torch  # noqa: E402


def config(name, stem, size, classes):
    return {"name": name, "block": "basic", "layers": [2, 2, 2, 2], "stem": stem,
            "attention": "se", "num_classes": classes,
            "input": {"channels": 3, "height": size, "width": size}}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, stem, size, classes in (("cifar_se", "cifar", 32, 10),
                                      ("imagenet_se", "imagenet", 224, 1000)):
        cfg = config(name, stem, size, classes)
        torch.manual_seed(0)
        model = resattn_torch.build_model(cfg)
        resattn_torch.randomize(model, seed=0)
        for m in model.modules():
            m._forward_hooks.clear()
        model.eval()
        export_pytorch.export(model, cfg, os.path.join(out, name + ".safetensors"))
        if name == "cifar_se":
            torch.save(model.state_dict(), os.path.join(out, name + ".pt"))
            with open(os.path.join(out, name + ".json"), "w") as f:
                json.dump(cfg, f)
    print(out)


if __name__ == "__main__":
    main()
