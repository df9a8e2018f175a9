#!/usr/bin/env python3
"""Labeled image sets of other domains than Fashion-MNIST, from packaged data only: what a
retrained model should keep doing well on (`eval.retain`, `make bench-quality`).

    make_retain_sets.py --downloads DIR --out OUTDIR

DIR holds the wheels `pip download --no-deps` fetched: scikit_image-*.whl and
scikit_learn-*.whl (read as zip files, not installed). Writes OUTDIR/<set>/{train,test}/<class>/
*.png, the layout `eval.labeled` and `eval.retain` read:

  photos  11 classes: which of scikit-image's sample photographs (the public-domain / CC0 ones
          make_images.py uses) a crop comes from; per class 60 train + 30 test random crops (a
          quarter to all of the photo's shorter side, flips), 64x64, colour or grayscale as the
          photo is. Photographic texture and colour statistics.
  digits  10 classes: scikit-learn's bundled copy of the UCI optical handwritten digits
          (1,797 8x8 images, 16 gray levels; sklearn/datasets/data/digits.csv.gz), upscaled to
          32x32 (bilinear); the first two thirds of each class train, the rest test.

Each test split has 300+ images, so one image is at most a third of a kNN point: the sets can
tell a one-point fall. (scikit-image's lfw_subset, 200 face / non-face patches, was left out:
60 test images, 1.7 points each.)

Same wheels and seed -> identical files.
"""
import argparse
import glob
import gzip
import io
import os
import shutil
import sys
import zipfile

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_images import SOURCES, crop_one  # noqa: E402


def wheel(downloads, prefix):
    found = sorted(glob.glob(os.path.join(downloads, prefix + "-*.whl")))
    if not found:
        sys.exit("no %s-*.whl in %s (pip download --no-deps)" % (prefix, downloads))
    return found[-1]


def save(out, split, cls, i, img):
    d = os.path.join(out, split, cls)
    os.makedirs(d, exist_ok=True)
    img.save(os.path.join(d, "%04d.png" % i))


def photos(skimage_whl, out, rng):
    with zipfile.ZipFile(skimage_whl) as z:
        for name in SOURCES:
            img = Image.open(io.BytesIO(z.read("skimage/data/" + name)))
            img.load()
            img = img.convert("L") if img.mode in ("LA", "1", "L") or img.mode.startswith("I") \
                else img.convert("RGB")
            cls = name.split(".")[0]
            for i in range(90):
                crop = crop_one(img, rng, 64, 64)
                save(out, "train" if i < 60 else "test", cls, i, crop)
    return len(SOURCES)


def digits(sklearn_whl, out):
    with zipfile.ZipFile(sklearn_whl) as z:
        member = next(n for n in z.namelist() if n.endswith("datasets/data/digits.csv.gz"))
        raw = gzip.decompress(z.read(member)).decode()
    rows = np.array([[float(v) for v in line.split(",")] for line in raw.strip().splitlines()])
    x, y = rows[:, :64].reshape(-1, 8, 8), rows[:, 64].astype(int)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        cut = (2 * len(idx)) // 3
        for k, i in enumerate(idx):
            img = Image.fromarray((x[i] * 255.0 / 16.0).round().astype(np.uint8))
            img = img.resize((32, 32), Image.BILINEAR)
            save(out, "train" if k < cut else "test", str(c), k, img)
    return 10


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--downloads", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=22)
    a = ap.parse_args()
    sk, sl = wheel(a.downloads, "scikit_image"), wheel(a.downloads, "scikit_learn")
    rng = np.random.default_rng(a.seed)
    for name, make in [("photos", lambda o: photos(sk, o, rng)), ("digits", lambda o: digits(sl, o))]:
        o = os.path.join(a.out, name)
        if os.path.exists(o):
            shutil.rmtree(o)
        n = make(o)
        count = lambda s: sum(len(f) for _, _, f in os.walk(os.path.join(o, s)))  # noqa: E731
        print("%s: %d classes, %d train / %d test images -> %s" % (name, n, count("train"),
                                                                   count("test"), o))


if __name__ == "__main__":
    sys.exit(main())
