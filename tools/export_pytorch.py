#!/usr/bin/python3
"""Export a PyTorch residual-attention network to a resattn model file (.safetensors).

    /usr/bin/python3 tools/export_pytorch.py --state-dict model.pt --config cfg.json \\
        [--labels labels.txt] [--dtype f32|f16|bf16] --out model.safetensors

--state-dict is a torch.save'd state_dict (or a whole pickled model, or a checkpoint dict
with a "state_dict" entry); --config is the model's resattn.config as a JSON file (block,
layers, stem, attention, num_classes, input, and optionally name, labels, preprocess,
bn_eps; see the README's model file contract); --labels is a text file with one class name
a line, stored as the config's "labels".

Before anything is written, the whole config is checked as the server's loader checks it
(every key known, each value's type and range, labels count = num_classes, the preprocess
keys and values against input.channels) and the state_dict against the contract's tensor
names (timm / torchvision naming, attention under layer{S}.{B}.se.) and the shapes the
config fixes (fc rows = num_classes, conv1 input channels, stem kernel); the first problem
is a one-line error naming the key or tensor, and the exit status is 1.

The file: an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}, "__metadata__": {"resattn.config": <JSON string>}} padded with spaces so the
data starts 8-byte aligned, then the raw little-endian tensor bytes in header order. Float
tensors are written as F32 (or F16 / BF16 with --dtype); integer tensors such as
BatchNorm's num_batches_tracked as I64 (the loader ignores them). No safetensors package is
needed.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resattn_torch import ATTENTIONS, BLOCKS, STEMS  # noqa: E402

# Keys of resattn.config the contract defines. "widths" (channel widths per stage) is read
# by tools/resattn_torch.py's builder only and dropped from the written config; any other
# key is an error, as in the server's loader (core/model/config.c).
CONFIG_KEYS = ("name", "block", "layers", "stem", "attention", "num_classes", "input",
               "labels", "preprocess", "bn_eps")
BUILDER_KEYS = ("widths",)
PREPROCESS_KEYS = ("color", "resize", "resize_size", "scale", "invert", "mean", "std")
NAME_FORBIDDEN = "/:?#%\"\\"
BN = ("weight", "bias", "running_mean", "running_var")
DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


class ExportError(Exception):
    pass


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_in(obj, key, lo, hi, where=""):
    if key not in obj:
        raise ExportError("config: missing field \"%s%s\"" % (where, key))
    if not _is_int(obj[key]) or not lo <= obj[key] <= hi:
        raise ExportError("config: field \"%s%s\" must be an integer in [%d, %d], not %r"
                          % (where, key, lo, hi, obj[key]))
    return obj[key]


def _one_of(config, key, names):
    if key not in config:
        raise ExportError("config: missing field \"%s\"" % key)
    if config[key] not in names:
        raise ExportError("config: unknown %s %r (expected one of %s)"
                          % (key, config[key], ", ".join(names)))


def _unknown(obj, allowed, where=""):
    for k in obj:
        if k not in allowed:
            raise ExportError("config: unknown field \"%s%s\" (expected %s)"
                              % (where, k, ", ".join(allowed)))


def _vector(pp, key, channels):
    """mean/std: a number, or a list of 1 or `channels` numbers (one applies to all)."""
    v = pp[key]
    vals = [v] if _is_num(v) else v
    if not isinstance(vals, list) or len(vals) not in (1, channels) or \
            not all(_is_num(x) for x in vals):
        raise ExportError("config: preprocess: \"%s\" must be a number or a list of 1 or %d "
                          "numbers (input.channels), not %r" % (key, channels, v))
    return vals


def validate_preprocess(pp, channels):
    """The checks of core/data/preprocess.c: known keys, types and ranges, against the
    input channel count. Raises ExportError naming the key."""
    if not isinstance(pp, dict):
        raise ExportError("config: field \"preprocess\" must be an object")
    for k in pp:
        if k not in PREPROCESS_KEYS:
            raise ExportError("config: preprocess: unknown key \"%s\" (expected %s)"
                              % (k, ", ".join(PREPROCESS_KEYS)))
    if channels not in (1, 3):
        raise ExportError("config: preprocess: images need input.channels 1 or 3, not %d "
                          "(drop \"preprocess\" to serve tensors only)" % channels)
    if "color" in pp:
        want = {"gray": 1, "rgb": 3}.get(pp["color"]) if isinstance(pp["color"], str) else None
        if want is None:
            raise ExportError("config: preprocess: \"color\" must be \"gray\" or \"rgb\", "
                              "not %r" % (pp["color"],))
        if want != channels:
            raise ExportError("config: preprocess: \"color\": \"%s\" needs input.channels %d, "
                              "not %d" % (pp["color"], want, channels))
    shorter = pp.get("resize", "direct") == "shorter"
    if pp.get("resize", "direct") not in ("direct", "shorter"):
        raise ExportError("config: preprocess: \"resize\" must be \"direct\" or \"shorter\", "
                          "not %r" % (pp["resize"],))
    if "resize_size" in pp:
        if not _is_int(pp["resize_size"]) or not 1 <= pp["resize_size"] <= 65536:
            raise ExportError("config: preprocess: \"resize_size\" must be an integer in "
                              "1..65536, not %r" % (pp["resize_size"],))
        if not shorter:
            raise ExportError("config: preprocess: \"resize_size\" needs \"resize\": "
                              "\"shorter\"")
    if "scale" in pp and not (_is_num(pp["scale"]) and pp["scale"] > 0):
        raise ExportError("config: preprocess: \"scale\" must be a positive number, not %r"
                          % (pp["scale"],))
    if "invert" in pp and not (isinstance(pp["invert"], bool) or pp["invert"] == "auto"):
        raise ExportError("config: preprocess: \"invert\" must be true, false or \"auto\", "
                          "not %r" % (pp["invert"],))
    if "mean" in pp:
        _vector(pp, "mean", channels)
    if "std" in pp and any(x == 0 for x in _vector(pp, "std", channels)):
        raise ExportError("config: preprocess: \"std\" must not be zero")


def validate_config(config):
    """Check a resattn.config dict as the server's loader does (core/model/config.c);
    raise ExportError naming the first bad field."""
    if not isinstance(config, dict):
        raise ExportError("config: must be a JSON object")
    _unknown(config, CONFIG_KEYS + BUILDER_KEYS)
    _one_of(config, "block", BLOCKS)
    layers = config.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= 6:
        raise ExportError("config: field \"layers\" must be a list of 1 to 6 integers, not %r"
                          % (layers,))
    for i, n in enumerate(layers):
        if not _is_int(n) or not 1 <= n <= 1000:
            raise ExportError("config: layers[%d] must be an integer in [1, 1000], not %r"
                              % (i, n))
    _one_of(config, "stem", STEMS)
    _one_of(config, "attention", ATTENTIONS)
    classes = _int_in(config, "num_classes", 1, 1 << 20)
    inp = config.get("input")
    if inp is None:
        raise ExportError("config: missing field \"input\"")
    if not isinstance(inp, dict):
        raise ExportError("config: field \"input\" must be an object "
                          "{\"channels\", \"height\", \"width\"}")
    _unknown(inp, ("channels", "height", "width"), "input.")
    channels = _int_in(inp, "channels", 1, 4096, "input.")
    _int_in(inp, "height", 1, 16384, "input.")
    _int_in(inp, "width", 1, 16384, "input.")
    name = config.get("name")
    if name is not None and (not isinstance(name, str) or not name or
                             any(c in NAME_FORBIDDEN or ord(c) <= 32 or ord(c) == 127
                                 for c in name)):
        raise ExportError("config: field \"name\" %r cannot be used in URLs (no spaces, "
                          "control characters, '/', ':', '?', '#', '%%', quotes or backslashes)"
                          % (name,))
    labels = config.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or len(labels) != classes:
            raise ExportError("config: field \"labels\" must be a list of num_classes (%d) "
                              "strings, not %s" % (classes, "%d entries" % len(labels)
                                                   if isinstance(labels, list) else
                                                   type(labels).__name__))
        for i, lab in enumerate(labels):
            if not isinstance(lab, str):
                raise ExportError("config: labels[%d] must be a string, not %r" % (i, lab))
    if config.get("preprocess") is not None:
        validate_preprocess(config["preprocess"], channels)
    eps = config.get("bn_eps")
    if eps is not None and not (_is_num(eps) and 0 < eps < 1):
        raise ExportError("config: field \"bn_eps\" must be a number in (0, 1), not %r"
                          % (eps,))


def read_labels(path):
    """One label a line (a final newline is optional; blank lines are errors)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    labels = [ln.rstrip("\r") for ln in lines]
    for i, lab in enumerate(labels):
        if not lab.strip():
            raise ExportError("labels file %s: line %d is empty" % (path, i + 1))
    return labels


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


def check_shapes(config, sd):
    """The shapes the config fixes (the loader checks the rest against each other)."""
    c = config["input"]["channels"]
    k = 7 if config["stem"] == "imagenet" else 3
    w = sd["conv1.weight"]
    if tuple(w.shape[1:]) != (c, k, k):
        raise ExportError("tensor conv1.weight has shape %s, expected [*, %d, %d, %d] "
                          "(input.channels %d, %s stem)" % (list(w.shape), c, k, k, c,
                                                            config["stem"]))
    fc = sd["fc.weight"]
    if fc.ndim != 2 or fc.shape[0] != config["num_classes"]:
        raise ExportError("tensor fc.weight has shape %s, expected [%d, *] (num_classes)"
                          % (list(fc.shape), config["num_classes"]))


def validate(config, sd):
    """Raise ExportError naming the first bad config field, or missing, unexpected or
    mis-shaped tensor."""
    validate_config(config)
    req, opt = expected_keys(config, sd)
    keys = {k for k in sd if not k.endswith("num_batches_tracked")}
    missing = sorted(req - keys)
    extra = sorted(keys - req - opt)
    if missing:
        raise ExportError("missing tensor %s (%d missing in all)" % (missing[0], len(missing)))
    if extra:
        raise ExportError("unexpected tensor %s (%d unexpected in all)" % (extra[0], len(extra)))
    check_shapes(config, sd)


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
    """Validate and write a model (nn.Module or state_dict) with its resattn.config; nothing
    is written when anything is wrong. Returns the written config dict."""
    sd = model_or_state_dict
    if isinstance(sd, torch.nn.Module):
        sd = sd.state_dict()
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}  # DataParallel
    validate(config, sd)
    cfg = {k: config[k] for k in CONFIG_KEYS if config.get(k) is not None}
    if dtype not in DTYPES:
        raise ExportError("unknown dtype %r (expected f32, f16 or bf16)" % dtype)
    write_safetensors(path, sd, {"resattn.config": json.dumps(cfg)}, DTYPES[dtype])
    return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Export a PyTorch residual-attention network (timm / torchvision naming) "
                    "to a resattn model file, after checking its config and tensors.",
        epilog="Example: %(prog)s --state-dict resnet18.pt --config cfg.json "
               "--labels labels.txt --out resnet18.safetensors")
    ap.add_argument("--state-dict", required=True, metavar="FILE",
                    help="torch.save'd state_dict, whole model, or checkpoint with a "
                         "\"state_dict\" entry")
    ap.add_argument("--config", required=True, metavar="FILE",
                    help="the model's resattn.config as a JSON file")
    ap.add_argument("--labels", metavar="FILE",
                    help="class names, one a line (num_classes lines); stored as \"labels\"")
    ap.add_argument("--out", required=True, metavar="FILE", help="output .safetensors path")
    ap.add_argument("--dtype", default="f32", choices=sorted(DTYPES),
                    help="float tensors as float32 (default), float16 or bfloat16")
    args = ap.parse_args(argv)
    try:
        with open(args.config) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        print("export_pytorch: config %s: %s" % (args.config, e), file=sys.stderr)
        return 1
    try:
        if args.labels:
            if isinstance(config, dict) and config.get("labels") is not None:
                raise ExportError("both --labels and the config's \"labels\" are given; "
                                  "keep one")
            labels = read_labels(args.labels)
            if isinstance(config, dict) and _is_int(config.get("num_classes")) and \
                    len(labels) != config["num_classes"]:
                raise ExportError("labels file %s has %d labels, num_classes is %d"
                                  % (args.labels, len(labels), config["num_classes"]))
            config = dict(config, labels=labels)
        validate_config(config)  # before the (slow) torch.load
    except (OSError, UnicodeDecodeError) as e:
        print("export_pytorch: labels %s: %s" % (args.labels, e), file=sys.stderr)
        return 1
    except ExportError as e:
        print("export_pytorch: %s" % e, file=sys.stderr)
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
