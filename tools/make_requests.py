#!/usr/bin/env python3
"""Make example request files for resattn's tensor APIs from one picture.

The picture (an 8-bit PNG) is preprocessed as the model's config says -- colour conversion,
/scale, inversion, (x - mean) / std, in float32 like the server -- and written as:

  req.json   Open Inference Protocol (v2) JSON request: the FP32 tensor [1, C, H, W],
             asking for the logits and probabilities; its "id" is the picture's file name
  req.bin    v2 binary tensor extension: a JSON header, then the tensor's raw
             little-endian float32 bytes; the header's length (the value of the
             Inference-Header-Content-Length header) is printed
  x.npy      the tensor as a NumPy file, float32 [1, C, H, W]
  tfs.json   TensorFlow Serving REST request {"instances": [tensor [C, H, W]]}

Only the Python standard library is needed. The picture must already have the model's input
size (resizing is left to the server's image endpoints, which accept the picture itself).

  python3 tools/make_requests.py                       # models/examples/6_coat.png, built-in model
  python3 tools/make_requests.py --model my.safetensors --out /tmp/req picture.png
"""

import argparse
import json
import os
import struct
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_IMAGE = os.path.join(ROOT, "models", "examples", "6_coat.png")
DEFAULT_MODEL = os.path.join(ROOT, "models", "default.safetensors")


class RequestError(Exception):
    pass


def f32(x):
    """x rounded to float32, as the server computes."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f32_text(v):
    """The shortest decimal that reads back as the same float32."""
    for digits in range(1, 10):
        s = "%.*g" % (digits, v)
        if f32(float(s)) == v:
            return s
    return repr(v)


def model_config(path):
    """The resattn.config of a safetensors model file (8-byte header length, JSON header)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise RequestError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise RequestError(f"{path}: not a safetensors file (header length {n})")
        header = json.loads(f.read(n))
    text = header.get("__metadata__", {}).get("resattn.config")
    if not text:
        raise RequestError(f"{path}: no resattn.config in the file's metadata")
    return json.loads(text)


def png_decode(path):
    """(width, height, channels, rows of bytes) of an 8-bit, non-interlaced PNG."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise RequestError(f"{path}: not a PNG file")
    pos, idat, ihdr = 8, b"", None
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if ihdr is None:
        raise RequestError(f"{path}: PNG without IHDR")
    w, h, depth, ctype, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype)
    if depth != 8 or channels is None or interlace:
        raise RequestError(f"{path}: only 8-bit gray, gray+alpha, RGB or RGBA PNGs without "
                           "interlacing are read here (send other pictures to /predict)")
    raw, stride, rows, prev = zlib.decompress(idat), w * channels, [], bytearray(w * channels)
    for y in range(h):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, channels, rows


def preprocess(path, cfg):
    """The picture as the model's input, a flat [C, H, W] list of float32 values."""
    w, h, channels, rows = png_decode(path)
    inp, pre = cfg["input"], cfg.get("preprocess", {})
    C, H, W = inp["channels"], inp["height"], inp["width"]
    if (w, h) != (W, H):
        raise RequestError(f"{path} is {w}x{h}; the model takes {W}x{H}: resize it first, "
                           "or send the picture itself to /predict or v2 (BYTES input)")
    if pre.get("resize", "direct") == "shorter" and pre.get("resize_size", W) != min(W, H):
        raise RequestError("preprocess \"resize\": \"shorter\" with a crop is left to the server")
    color = pre.get("color", "gray" if C == 1 else "rgb")
    scale = f32(pre.get("scale", 255))
    mean = [f32(m) for m in pre.get("mean", [0.0] * C)]
    std = [f32(s) for s in pre.get("std", [1.0] * C)]
    if len(mean) == 1:
        mean, std = mean * C, std * C
    pixels = []  # [H][W][C] 0..255, as PIL's convert("L") / convert("RGB")
    for row in rows:
        for x in range(w):
            px = row[x * channels:(x + 1) * channels]
            rgb = px[:3] if channels >= 3 else bytes([px[0]] * 3)
            if color == "gray":
                pixels.append([px[0]] if channels < 3 else
                              [(rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16])
            else:
                pixels.append(list(rgb))
    plane = [[f32(p[c] / scale) for p in pixels] for c in range(C)]
    edge = [c_plane[y * W + x] for c_plane in plane for y in range(H) for x in range(W)
            if y in (0, H - 1) or x in (0, W - 1)]
    inv = pre.get("invert", False)
    invert = inv is True or (inv == "auto" and sum(edge) / len(edge) > 0.5)
    return [f32((f32(1.0 - v) if invert else v) - mean[c]) / std[c]
            for c in range(C) for v in plane[c]], [C, H, W]


def nested(values, shape):
    """A flat list as nested lists of the given shape."""
    if len(shape) == 1:
        return values
    step = len(values) // shape[0]
    return [nested(values[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def to_json(obj):
    """JSON with float32 values written shortest-exact."""
    if isinstance(obj, list):
        return "[" + ",".join(to_json(v) for v in obj) + "]"
    if isinstance(obj, float):
        return f32_text(obj)
    return json.dumps(obj)


def write_all(image, model, out):
    cfg = model_config(model)
    values, chw = preprocess(image, cfg)
    values = [f32(v) for v in values]
    shape = [1] + chw
    name = os.path.basename(image)
    os.makedirs(out, exist_ok=True)
    data = to_json(values)
    with open(os.path.join(out, "req.json"), "w") as f:
        f.write('{"id":%s,"inputs":[{"name":"input","shape":%s,"datatype":"FP32","data":%s}],'
                '"outputs":[{"name":"logits"},{"name":"probabilities"}]}\n'
                % (json.dumps(name), json.dumps(shape, separators=(",", ":")), data))
    raw = struct.pack("<%df" % len(values), *values)
    header = json.dumps({"id": name, "inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                                                 "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "logits"}]}, separators=(",", ":")).encode()
    with open(os.path.join(out, "req.bin"), "wb") as f:
        f.write(header + raw)
    desc = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % ", ".join(map(str, shape))
    pad = -(10 + len(desc) + 1) % 64  # the header ends on a multiple of 64 bytes
    with open(os.path.join(out, "x.npy"), "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(desc) + pad + 1))
        f.write((desc + " " * pad + "\n").encode() + raw)
    with open(os.path.join(out, "tfs.json"), "w") as f:
        f.write('{"instances":[%s]}\n' % to_json(nested(values, chw)))
    return len(header)


def main():
    ap = argparse.ArgumentParser(
        description="Make example requests (req.json, req.bin, x.npy, tfs.json) for resattn's "
                    "tensor APIs from one PNG picture, preprocessed as the model's config says.")
    ap.add_argument("image", nargs="?", default=DEFAULT_IMAGE,
                    help="an 8-bit PNG of the model's input size (default models/examples/6_coat.png)")
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help="the model file whose config gives the input and preprocessing "
                         "(default models/default.safetensors, the built-in model)")
    ap.add_argument("--out", help="where to write the files (default: the picture's folder)")
    args = ap.parse_args()
    out = args.out or os.path.dirname(os.path.abspath(args.image))
    try:
        n = write_all(args.image, args.model, out)
    except (RequestError, OSError, ValueError, KeyError) as e:
        print(f"make_requests: {e}", file=sys.stderr)
        return 1
    print(f"wrote req.json, req.bin, x.npy, tfs.json to {out}; "
          f"req.bin: Inference-Header-Content-Length: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
