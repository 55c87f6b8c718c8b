#!/usr/bin/python3
"""Export a PyTorch residual-attention network to the resattn model file.

Writes safetensors directly (no safetensors package needed): an 8-byte little-endian
header length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
{"resattn.config": <JSON string>}} padded with spaces so the data starts 8-byte aligned,
then the raw little-endian tensor bytes in header order. Float tensors are written as F32
(or F16 / BF16 with --dtype, to test the loader's conversions); integer tensors such as
BatchNorm's num_batches_tracked are written as I64 (the loader ignores them).

Before writing, the state_dict is checked against the contract's parameter names
(timm / torchvision naming, attention under layer{S}.{B}.se.) and a missing or
unexpected key is a clear error.

CLI:
    python3 tools/export_pytorch.py --state-dict sd.pt --config cfg.json --out model.safetensors
    (--state-dict may also be a pickled full model; --dtype f32|f16|bf16)
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resattn_torch import check_config  # noqa: E402

# Keys of resattn.config the contract defines; anything else (e.g. builder-only
# "widths") is dropped from the written config.
CONFIG_KEYS = ("name", "block", "layers", "stem", "attention", "num_classes", "input",
               "labels", "preprocess", "bn_eps")
BN = ("weight", "bias", "running_mean", "running_var")
DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


class ExportError(Exception):
    pass


def _bn(prefix):
    return ["%s.%s" % (prefix, k) for k in BN]


def expected_keys(config, sd):
    """(required, optional) key sets of the contract for this config; the presence of
    downsample (channel change at stride 1) is read from the conv weight shapes."""
    req, opt = ["conv1.weight"] + _bn("bn1") + ["fc.weight", "fc.bias"], []
    basic = config["block"] == "basic"
    if "conv1.weight" not in sd:
        raise ExportError("missing tensor conv1.weight")
    cin = sd["conv1.weight"].shape[0]
    for s, n in enumerate(config["layers"]):
        for b in range(n):
            p = "layer%d.%d" % (s + 1, b)
            convs = ["conv1", "conv2"] + ([] if basic else ["conv3"])
            for i, c in enumerate(convs):
                req += ["%s.%s.weight" % (p, c)] + _bn("%s.bn%d" % (p, i + 1))
            last = "%s.%s.weight" % (p, convs[-1])
            if last not in sd:
                raise ExportError("missing tensor %s" % last)
            cout = sd[last].shape[0]
            stride = 2 if (s > 0 and b == 0) else 1
            if stride != 1 or cin != cout:
                req += ["%s.downsample.0.weight" % p] + _bn("%s.downsample.1" % p)
            cin = cout
            a, se = config["attention"], p + ".se."
            if a == "se":
                req += [se + "fc1.weight", se + "fc1.bias", se + "fc2.weight", se + "fc2.bias"]
            elif a == "eca":
                req += [se + "conv.weight"]
            elif a == "cbam":
                req += [se + "channel.fc1.weight", se + "channel.fc2.weight",
                        se + "spatial.conv.conv.weight"] + _bn(se + "spatial.conv.bn")
            elif a == "ca":
                req += [se + "conv1.weight", se + "conv_h.weight", se + "conv_w.weight"]
                req += _bn(se + "bn1")
                opt += [se + "conv1.bias", se + "conv_h.bias", se + "conv_w.bias"]
    return set(req), set(opt)


def validate(config, sd):
    """Raise ExportError naming the first missing or unexpected tensor."""
    try:
        check_config(config)
    except ValueError as e:
        raise ExportError(str(e))
    req, opt = expected_keys(config, sd)
    keys = {k for k in sd if not k.endswith("num_batches_tracked")}
    missing = sorted(req - keys)
    extra = sorted(keys - req - opt)
    if missing:
        raise ExportError("missing tensor %s (%d missing in all)" % (missing[0], len(missing)))
    if extra:
        raise ExportError("unexpected tensor %s (%d unexpected in all)" % (extra[0], len(extra)))


def tensor_bytes(t, dtype):
    """(safetensors dtype, little-endian bytes) of a tensor."""
    t = t.detach().cpu().contiguous()
    if not t.is_floating_point():
        return "I64", t.to(torch.int64).numpy().astype("<i8").tobytes()
    if dtype == "F32":
        return "F32", t.to(torch.float32).numpy().astype("<f4").tobytes()
    if dtype == "F16":
        return "F16", t.to(torch.float16).numpy().astype("<f2").tobytes()
    # BF16: reinterpret the bfloat16 bits as int16 (numpy has no bfloat16).
    return "BF16", t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()


def write_safetensors(path, tensors, metadata, dtype="F32"):
    """Write {name: tensor} with string metadata; tensors in sorted name order."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        dt, data = tensor_bytes(tensors[name], dtype)
        header[name] = {"dtype": dt, "shape": list(tensors[name].shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    if metadata is not None:
        header = {"__metadata__": metadata, **header}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """(tensors as float64/int64 numpy arrays, metadata) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, d in header.items():
        a, b = d["data_offsets"]
        buf = raw[8 + n + a:8 + n + b]
        if d["dtype"] == "BF16":
            bits = np.frombuffer(buf, "<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(buf, {"F32": "<f4", "F16": "<f2", "I64": "<i8"}[d["dtype"]])
        out[name] = arr.reshape(d["shape"])
    return out, meta


def export(model_or_state_dict, config, path, dtype="f32"):
    """Validate and write a model (nn.Module or state_dict) with its resattn.config.
    Returns the written config dict."""
    sd = model_or_state_dict
    if isinstance(sd, torch.nn.Module):
        sd = sd.state_dict()
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}  # DataParallel
    validate(config, sd)
    cfg = {k: config[k] for k in CONFIG_KEYS if k in config}
    if dtype not in DTYPES:
        raise ExportError("unknown dtype %r (expected f32, f16 or bf16)" % dtype)
    write_safetensors(path, sd, {"resattn.config": json.dumps(cfg)}, DTYPES[dtype])
    return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state-dict", required=True, help="torch.save'd state_dict or full model")
    ap.add_argument("--config", required=True, help="resattn.config as a JSON file")
    ap.add_argument("--out", required=True, help="output .safetensors path")
    ap.add_argument("--dtype", default="f32", choices=sorted(DTYPES))
    args = ap.parse_args(argv)
    try:
        with open(args.config) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        print("export_pytorch: config %s: %s" % (args.config, e), file=sys.stderr)
        return 1
    try:
        obj = torch.load(args.state_dict, map_location="cpu")
    except Exception as e:  # torch.load raises many kinds (I/O, pickle, zip)
        print("export_pytorch: cannot load %s: %s" % (args.state_dict, e), file=sys.stderr)
        return 1
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, (dict, torch.nn.Module)):
        print("export_pytorch: %s holds a %s, not a state_dict or nn.Module" %
              (args.state_dict, type(obj).__name__), file=sys.stderr)
        return 1
    try:
        export(obj, config, args.out, args.dtype)
    except ExportError as e:
        print("export_pytorch: %s" % e, file=sys.stderr)
        return 1
    print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
