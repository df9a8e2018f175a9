"""kNN top-1 on raw pixels under the quality benchmark's protocol (docs/BENCHMARKS.md): a floor
for what a retrained embedding should beat. The labeled split and the kNN are the Python
reference's own (`scripts/reference/simclr_train.py`: bank = LABELED/train, queries =
LABELED/test, cosine, k = 20, votes weighted by exp(sim / 0.07)); images as grayscale vectors in
[0, 1].

    .venv/bin/python scripts/raw_pixel_knn.py .cache/fmnist10k
"""
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
from simclr_train import knn_top1, labeled_split  # noqa: E402


def pixels(paths):
    return np.stack([np.asarray(Image.open(p).convert("L"), np.float32).ravel() / 255.0
                     for p in paths])


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else ".cache/fmnist10k"
    classes, files, labels = labeled_split(root)
    bank, query = pixels(files["train"]), pixels(files["test"])
    n = len(classes)
    print(f"raw pixels, cosine: {knn_top1(bank, labels['train'], query, labels['test'], n):.4f}")
    mean = bank.mean(0)
    print("raw pixels minus the bank's mean image: "
          f"{knn_top1(bank - mean, labels['train'], query - mean, labels['test'], n):.4f}")


if __name__ == "__main__":
    main()
