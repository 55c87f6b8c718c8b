#!/usr/bin/python3
"""Train the built-in default model: a Pattern-1 SE-ResNet on Fashion-MNIST.

Data: Debian's dataset-fashion-mnist (IDX, gzip) under /usr/share/datasets/fashion-mnist.
Model: cifar stem, basic blocks, layers [1,1,1,1], widths 16/32/64/128, SE attention.
Recipe: SGD + Nesterov (momentum 0.9, weight decay 5e-4), cosine LR from
0.1 with a one-epoch linear warm-up, label smoothing 0.1, random crop (pad 2) and
horizontal flip, batch 128. Seeded (torch.manual_seed, a seeded generator for the data
order and augmentation) and single-process with 2 threads, so a rerun on the same
machine repeats the run.

Writes models/default.safetensors (float32, via tools/export_pytorch.py) and
models/default.metrics.json (test accuracy on the 10,000 test images computed in
PyTorch from the exact uint8 pixels /255, normalised, eval mode).

    /usr/bin/python3 tools/train_default.py [--epochs N] [--seed S]
"""

import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from export_pytorch import export  # noqa: E402
from resattn_torch import build_model  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
          "Sneaker", "Bag", "Ankle boot"]
CONFIG = {
    "name": "fashion-se-resnet",
    "block": "basic",
    "layers": [1, 1, 1, 1],
    "stem": "cifar",
    "attention": "se",
    "num_classes": 10,
    "input": {"channels": 1, "height": 28, "width": 28},
    "labels": LABELS,
    "preprocess": {"color": "gray", "resize": "direct", "scale": 255, "invert": "auto",
                   "mean": [MEAN], "std": [STD]},
}
WIDTHS = (16, 32, 64, 128)
SE_RATIO = 4


def read_idx(path):
    """uint8 numpy array of an IDX file (gzip): images [N,28,28] or labels [N]."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(split):
    """(images float32 [N,1,28,28] normalised, labels int64 [N]) of 'train' or 't10k'."""
    x = read_idx("%s/%s-images-idx3-ubyte.gz" % (DATA, split))
    y = read_idx("%s/%s-labels-idx1-ubyte.gz" % (DATA, split))
    xt = (torch.from_numpy(x.astype(np.float32)) / 255.0 - MEAN) / STD
    return xt[:, None], torch.from_numpy(y.astype(np.int64))


def augment(xb, gen, pad=2):
    """Random crop with zero padding in normalised space (pad value = image black) and
    horizontal flip, per sample. xb: [B,1,H,W]."""
    b, _, h, w = xb.shape
    black = (0.0 - MEAN) / STD
    p = F.pad(xb, (pad, pad, pad, pad), value=black)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]  # [B,H,1]
    cols = (ox[:, None] + torch.arange(w))[:, None, :]  # [B,1,W]
    out = p[torch.arange(b)[:, None, None], 0, rows, cols]  # [B,H,W]
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out[:, None].contiguous()


def evaluate(model, x, y, bs=500):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), bs):
            correct += (model(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum().item()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "models", "default.safetensors"))
    ap.add_argument("--metrics", default=os.path.join(HERE, "..", "models", "default.metrics.json"))
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    model = build_model(CONFIG, widths=WIDTHS, se_ratio=SE_RATIO)
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    steps_per_epoch = (len(xtr) + args.batch - 1) // args.batch
    total = steps_per_epoch * args.epochs
    warm = steps_per_epoch

    def lr_at(step):
        if step < warm:
            return args.lr * (step + 1) / warm
        return 0.5 * args.lr * (1 + np.cos(np.pi * (step - warm) / max(1, total - warm)))

    t0 = time.time()
    step = 0
    print("params %d, %d epochs, %d steps/epoch" % (nparams, args.epochs, steps_per_epoch),
          flush=True)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        loss_sum = 0.0
        for i in range(0, len(xtr), args.batch):
            idx = perm[i:i + args.batch]
            xb, yb = augment(xtr[idx], gen), ytr[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            step += 1
        acc = evaluate(model, xte, yte)
        print("epoch %d loss %.4f test_acc %.4f elapsed %.0fs" %
              (epoch + 1, loss_sum / len(xtr), acc, time.time() - t0), flush=True)
    wall = time.time() - t0
    model.eval()
    acc = evaluate(model, xte, yte)
    export(model, CONFIG, args.out)
    metrics = {
        "model": CONFIG["name"],
        "test_accuracy": acc,
        "test_images": len(xte),
        "epochs": args.epochs,
        "seed": args.seed,
        "batch": args.batch,
        "lr": args.lr,
        "wall_time_s": round(wall, 1),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "parameters": nparams,
        "file_bytes": os.path.getsize(args.out),
        "recipe": "SGD nesterov m0.9 wd5e-4, 1 warm-up epoch + cosine LR, label smoothing "
                  "0.1, random crop pad 2 + horizontal flip; widths 16/32/64/128, SE ratio 4",
    }
    with open(args.metrics, "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    print(json.dumps(metrics), flush=True)


if __name__ == "__main__":
    main()
