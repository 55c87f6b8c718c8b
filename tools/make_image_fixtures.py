#!/usr/bin/python3
"""Write the image decoding and preprocessing fixtures of tests/check_image.c.

Run with Debian's python3 (python3-pil, python3-skimage, python3-torchvision or
python3-torch): /usr/bin/python3 tools/make_image_fixtures.py [images] [cmyk] [cases]
(no argument: every step).

Into tests/fixtures/images/ it writes small PNG/JPEG files in every colour layout the
decoder must handle (downscaled copies of scikit-image's CC0 photos), each with the pixels
PIL decodes (`<file>.u8.npy`, uint8 [H, W, C]), a few broken files (truncated, corrupt,
unsupported, zero-sized, decompression bombs), and `cases.json`: preprocessing cases
(image, preprocess config, input shape) with PIL/torchvision's output before normalisation
(`<case>.npy`, float32 [C, H, W]).
"""
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "images")


def photo(name):
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_raw(w, h, depth, color_type, rows):
    """A PNG written by hand (PIL cannot write 16-bit RGB); rows: bytes per row, filter 0."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\0" + r for r in rows))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def save(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def encode(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def decoded(name):
    """What PIL decodes, as uint8 [H, W, C] with alpha dropped (C = 1 or 3)."""
    im = Image.open(os.path.join(OUT, name))
    im.load()
    if im.mode in ("I", "I;16", "I;16B"):  # 16-bit gray: the high byte
        a = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
    elif im.mode in ("L", "LA", "1"):
        a = np.asarray(im.convert("L"))
    else:
        a = np.asarray(im.convert("RGB"))
    if a.ndim == 2:
        a = a[:, :, None]
    np.save(os.path.join(OUT, name + ".u8.npy"), np.ascontiguousarray(a))


def images():
    astro = photo("astronaut").resize((64, 64), Image.BILINEAR)
    cat = photo("chelsea").resize((90, 60), Image.BILINEAR)
    coffee = photo("coffee").resize((80, 53), Image.BILINEAR)
    rocket = photo("rocket").resize((54, 80), Image.BILINEAR)
    camera = photo("camera").resize((70, 70), Image.BILINEAR)
    files = {
        "rgb.png": encode(astro, "PNG"),
        "gray.png": encode(camera, "PNG"),
        "gray_alpha.png": encode(Image.merge("LA", (camera, camera.rotate(90))), "PNG"),
        "rgba.png": encode(Image.merge("RGBA", (*cat.split(), cat.convert("L"))), "PNG"),
        "palette.png": encode(coffee.quantize(64), "PNG"),
        "palette_trns.png": encode(coffee.quantize(16), "PNG", transparency=3),
        "gray1.png": encode(camera.convert("1"), "PNG"),
        "cat.png": encode(cat, "PNG", optimize=True),
        "gray16.png": encode(Image.fromarray((np.asarray(camera).astype(np.uint16) * 257 + 7)
                                             .astype(np.uint16)), "PNG"),
        "color.jpg": encode(rocket, "JPEG", quality=90),
        "progressive.jpg": encode(cat, "JPEG", quality=85, progressive=True),
        "gray.jpg": encode(camera, "JPEG", quality=90),
        "tiny.png": encode(Image.new("RGB", (1, 1), (200, 10, 30)), "PNG"),
    }
    a16 = np.asarray(astro).astype(np.uint16) * 257 + np.arange(64, dtype=np.uint16)[:, None, None]
    files["rgb16.png"] = png_raw(64, 64, 16, 2, [r.astype(">u2").tobytes() for r in a16])
    for name, data in files.items():
        save(name, data)
        decoded(name)
    return files


def broken(files):
    png, jpg = files["rgb.png"], files["color.jpg"]
    save("truncated.png", png[: len(png) // 2])
    save("truncated.jpg", jpg[: len(jpg) // 2])
    bad = bytearray(png)
    idat = bad.index(b"IDAT")
    for i in range(idat + 20, idat + 60):
        bad[i] ^= 0x5A  # the data changes, the chunk CRC no longer matches
    save("corrupt.png", bytes(bad))
    save("corrupt.jpg", jpg[:2] + b"\xff\xc0\x00\x03garbage" * 20)
    save("not_an_image.gif", encode(Image.new("RGB", (8, 8)), "GIF"))
    save("empty.png", b"")
    # an IHDR claiming 100000 x 100000 (10^10 pixels) before a tiny IDAT
    bomb = png_raw(100000, 100000, 8, 0, [b"\0" * 16])
    save("bomb.png", bomb)
    # a valid JPEG whose frame header claims 65000 x 65000
    sof = jpg.index(b"\xff\xc0")
    save("bomb.jpg", jpg[: sof + 5] + struct.pack(">HH", 65000, 65000) + jpg[sof + 9:])
    # zero width in the header (libpng refuses; CRC is valid)
    save("zero.png", png_raw(0, 8, 8, 0, [b""] * 8))
    # JPEG with zero height
    save("zero.jpg", jpg[: sof + 5] + struct.pack(">HH", 0, 54) + jpg[sof + 9:])


def cmyk():
    """CMYK JPEGs (made from cat.png, so this step needs only PIL): cmyk.jpg as PIL writes it
    (Adobe APP14 marker, inverted CMYK) and cmyk_noadobe.jpg without the marker, which PIL
    still reads as inverted CMYK. Their references are PIL's convert("RGB") of the decode."""
    cat = Image.open(os.path.join(OUT, "cat.png")).convert("RGB")
    jpg = encode(cat.convert("CMYK"), "JPEG", quality=90)
    app14 = jpg.index(b"Adobe") - 4  # the APP14 segment: FF EE, 2-byte length, "Adobe"...
    assert jpg[app14:app14 + 2] == b"\xff\xee"
    seg = 2 + struct.unpack(">H", jpg[app14 + 2:app14 + 4])[0]
    for name, data in (("cmyk.jpg", jpg), ("cmyk_noadobe.jpg", jpg[:app14] + jpg[app14 + seg:])):
        save(name, data)
        assert Image.open(os.path.join(OUT, name)).mode == "CMYK"
        decoded(name)


def reference(path, pp, c, h, w):
    """torchvision's pipeline on a PIL image, before normalisation: float32 [C, H, W]."""
    from torchvision import transforms as T

    im = Image.open(path)
    im = im.convert("L" if pp["color"] == "gray" else "RGB")
    if pp["resize"] == "direct":
        tf = [T.Resize((h, w), interpolation=T.InterpolationMode.BILINEAR)]
    else:
        tf = [T.Resize(pp["resize_size"], interpolation=T.InterpolationMode.BILINEAR),
              T.CenterCrop((h, w))]
    x = T.Compose(tf + [T.PILToTensor()])(im).numpy().astype(np.float32) / pp["scale"]
    inv = pp["invert"]
    if inv == "auto":
        border = np.concatenate([x[:, 0, :].ravel(), x[:, -1, :].ravel(),
                                 x[:, 1:-1, 0].ravel(), x[:, 1:-1, -1].ravel()])
        inv = bool(border.mean() > 0.5)
    if inv:
        x = 1.0 - x
    return np.ascontiguousarray(x, dtype=np.float32)


def cases():
    gray28 = {"color": "gray", "resize": "direct", "scale": 255, "invert": "auto",
              "mean": [0.286], "std": [0.353]}
    spec = [
        ("rgb.png", gray28, 1, 28, 28),
        ("rgb.png", dict(gray28, invert=True), 1, 28, 28),
        ("gray.png", dict(gray28, invert=False), 1, 28, 28),
        ("gray_alpha.png", gray28, 1, 28, 28),
        ("rgba.png", gray28, 1, 28, 28),
        ("palette.png", gray28, 1, 28, 28),
        ("color.jpg", gray28, 1, 28, 28),
        ("gray.jpg", gray28, 1, 28, 28),
        ("tiny.png", gray28, 1, 28, 28),
        ("rgb.png", {"color": "rgb", "resize": "direct", "scale": 255, "invert": False,
                     "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}, 3, 45, 37),
        ("rgba.png", {"color": "rgb", "resize": "shorter", "resize_size": 36, "scale": 255,
                      "invert": False, "mean": [0, 0, 0], "std": [1, 1, 1]}, 3, 32, 32),
        ("color.jpg", {"color": "rgb", "resize": "shorter", "resize_size": 40, "scale": 255,
                       "invert": False, "mean": [0, 0, 0], "std": [1, 1, 1]}, 3, 33, 27),
        ("gray.png", {"color": "rgb", "resize": "shorter", "resize_size": 100, "scale": 255,
                      "invert": "auto", "mean": [0, 0, 0], "std": [1, 1, 1]}, 3, 96, 96),
        ("progressive.jpg", {"color": "gray", "resize": "shorter", "resize_size": 17,
                             "scale": 255, "invert": False, "mean": [0], "std": [1]}, 1, 15, 16),
    ]
    out = []
    for i, (img, pp, c, h, w) in enumerate(spec):
        name = "case%02d" % i
        ref = reference(os.path.join(OUT, img), pp, c, h, w)
        assert ref.shape == (c, h, w), (name, ref.shape)
        np.save(os.path.join(OUT, name + ".npy"), ref)
        out.append({"name": name, "image": img, "preprocess": pp, "input": [c, h, w]})
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


def main(argv):
    """All fixtures, or only the named steps (e.g. `cmyk`)."""
    os.makedirs(OUT, exist_ok=True)
    if not argv or "images" in argv:
        broken(images())
    if not argv or "cmyk" in argv:
        cmyk()
    if not argv or "cases" in argv:
        cases()
    print("wrote", OUT)


if __name__ == "__main__":
    main(sys.argv[1:])
