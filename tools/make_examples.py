#!/usr/bin/python3
"""Write models/examples/<i>_<label>.png: the first Fashion-MNIST test image of each class.

Run with Debian's python3 (python3-pil, python3-numpy) and the dataset-fashion-mnist
package: /usr/bin/python3 tools/make_examples.py
<i> is the image's index in the test set; <label> is the class name of the default model
(lower case, "-" for other characters: "T-shirt/top" -> "t-shirt-top"). The images are the dataset's own 28x28 grayscale pixels (light garment on black), so the
default model's preprocessing ("invert": "auto") leaves them as they are.
"""
import gzip
import os

import numpy as np
from PIL import Image

DATA = "/usr/share/datasets/fashion-mnist"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "examples")
NAMES = ["t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
         "bag", "ankle-boot"]


def load(kind):
    with gzip.open(os.path.join(DATA, "t10k-%s-idx%d-ubyte.gz" % (kind, 3 if kind == "images" else 1))) as f:
        raw = f.read()
    if kind == "images":
        return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
    return np.frombuffer(raw, np.uint8, offset=8)


def main():
    images, labels = load("images"), load("labels")
    os.makedirs(OUT, exist_ok=True)
    for c, name in enumerate(NAMES):
        i = int(np.flatnonzero(labels == c)[0])
        path = os.path.join(OUT, "%d_%s.png" % (i, name))
        Image.fromarray(images[i]).save(path, optimize=True)
        print(path, "test index", i)


if __name__ == "__main__":
    main()
