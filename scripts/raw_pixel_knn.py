"""kNN top-1 on raw pixels under the quality benchmark's protocol (docs/BENCHMARKS.md): a floor
for what a retrained embedding should beat. Bank = LABELED/train, queries = LABELED/test, images
as grayscale vectors in [0, 1], cosine similarity, k = 20, votes weighted by exp(sim / 0.07).

    .venv/bin/python scripts/raw_pixel_knn.py .cache/fmnist10k
"""
import os
import sys

import numpy as np
from PIL import Image


def load(root, split):
    xs, ys = [], []
    for ci, c in enumerate(sorted(os.listdir(os.path.join(root, split)))):
        d = os.path.join(root, split, c)
        for f in sorted(os.listdir(d)):
            img = Image.open(os.path.join(d, f)).convert("L")
            xs.append(np.asarray(img, dtype=np.float32).ravel() / 255.0)
            ys.append(ci)
    return np.array(xs), np.array(ys)


def knn_top1(bank, bank_y, query, query_y, n_classes, k=20, tau=0.07):
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    query = query / np.linalg.norm(query, axis=1, keepdims=True)
    sim = query @ bank.T
    idx = np.argpartition(-sim, k, axis=1)[:, :k]
    w = np.exp(np.take_along_axis(sim, idx, 1) / tau)
    votes = np.zeros((len(query), n_classes))
    rows = np.arange(len(query))
    for j in range(k):
        np.add.at(votes, (rows, bank_y[idx[:, j]]), w[:, j])
    return float((votes.argmax(1) == query_y).mean())


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else ".cache/fmnist10k"
    xb, yb = load(root, "train")
    xq, yq = load(root, "test")
    n = int(max(yb.max(), yq.max())) + 1
    print(f"raw pixels, cosine: {knn_top1(xb, yb, xq, yq, n):.4f}")
    mean = xb.mean(0)
    print(f"raw pixels minus the bank's mean image: {knn_top1(xb - mean, yb, xq - mean, yq, n):.4f}")


if __name__ == "__main__":
    main()
