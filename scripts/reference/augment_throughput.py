"""Throughput of the Python reference's input pipeline alone (tf.data: decode + two SimCLR views
per image with in-graph TF image ops, parallel map, prefetch), for comparison with
`cargo run --release --example data_throughput` (docs/BENCHMARKS.md).

    augment_throughput.py DIR SIZE BATCH BATCHES [fmnist]
"""
import os
import sys
import time
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))
import simclr_train  # noqa: E402


def main():
    d, size, batch, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    fm = len(sys.argv) > 5 and sys.argv[5] == "fmnist"
    a = SimpleNamespace(images=d, size=size, batch=batch, seed=0,
                        crop_area=(0.2, 1.0) if fm else (0.08, 1.0), flip=0.5,
                        jitter=0.5 if fm else 1.0, gray=0.0 if fm else 0.2,
                        blur=0.0 if fm else 0.5, blur_sigma=(0.1, 2.0))
    ds, _ = simclr_train.view_pairs(a)
    it = iter(ds)
    next(it)  # warm-up (tracing, thread pool)
    t0 = time.time()
    for _ in range(n):
        next(it)
    s = time.time() - t0
    print(f"{n * batch} images ({2 * n * batch} views) of {size}px in {s:.2f}s: "
          f"{n * batch / s:.1f} images/s, {2 * n * batch / s:.1f} views/s")


if __name__ == "__main__":
    main()
