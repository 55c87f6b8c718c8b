#!/usr/bin/python3
"""Write models/examples/photos/cat.jpg, the colour photo of the README's "Serving your own
model" example: scikit-image's `chelsea` (451x300, CC0, photographer Stefan van der Walt)
as a baseline JPEG of quality 90.

    /usr/bin/python3 tools/make_example_photo.py    # needs python3-skimage, python3-pil
"""
import os

import skimage.data
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "examples",
                   "photos", "cat.jpg")

if __name__ == "__main__":
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    Image.fromarray(skimage.data.chelsea()).save(OUT, quality=90)
    print("wrote", OUT)
