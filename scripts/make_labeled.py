"""Writes a labeled image set from Fashion-MNIST (Debian package dataset-fashion-mnist) as
OUT/{train,test}/<class>/<i>.png, the layout `pretext eval --labeled` and `--labeled` read,
and optionally the unlabeled train images as OUT_UNLABELED/<i>.png.

    make_labeled.py --out DIR --train N --test M [--unlabeled DIR --unlabeled-count K]
    make_labeled.py --out DIR --train N --test M --held-out

Images are the first N (train) and M (test) of each split, so every run writes the same files.
With --held-out both come from Fashion-MNIST's test split (train: its first N images, test: the
next M), so a model retrained on the train split's images (`make run`) is scored on images it
never saw, kNN memory bank included.
"""
import argparse
import gzip
import os

import numpy as np
from PIL import Image

SRC = "/usr/share/datasets/fashion-mnist"
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write(images, labels, out, n):
    for i in range(min(n, len(images))):
        d = os.path.join(out, CLASSES[labels[i]])
        os.makedirs(d, exist_ok=True)
        Image.fromarray(images[i]).save(os.path.join(d, f"{i:05d}.png"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, required=True)
    ap.add_argument("--test", type=int, required=True)
    ap.add_argument("--unlabeled")
    ap.add_argument("--unlabeled-count", type=int, default=0)
    ap.add_argument("--held-out", action="store_true", help="both splits from the test split")
    a = ap.parse_args()
    tr_x, tr_y = idx(f"{SRC}/train-images-idx3-ubyte.gz"), idx(f"{SRC}/train-labels-idx1-ubyte.gz")
    te_x, te_y = idx(f"{SRC}/t10k-images-idx3-ubyte.gz"), idx(f"{SRC}/t10k-labels-idx1-ubyte.gz")
    if a.held_out:
        tr_x, tr_y = te_x[:a.train], te_y[:a.train]
        te_x, te_y = te_x[a.train:], te_y[a.train:]
    write(tr_x, tr_y, os.path.join(a.out, "train"), a.train)
    write(te_x, te_y, os.path.join(a.out, "test"), a.test)
    if a.unlabeled:
        os.makedirs(a.unlabeled, exist_ok=True)
        # Unlabeled images come from the END of the train split: disjoint from the kNN memory bank.
        for i in range(a.unlabeled_count):
            Image.fromarray(tr_x[len(tr_x) - 1 - i]).save(os.path.join(a.unlabeled, f"{i:05d}.png"))
    print(f"wrote {a.out}: {a.train} train / {a.test} test images, 10 classes")


if __name__ == "__main__":
    main()
