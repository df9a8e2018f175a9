#!/usr/bin/env python3
"""Seed corpora for tests/fuzz.rs (committed in tests/fuzz/corpus/; re-run only to refresh).

    make_fuzz_corpus.py --fixtures .cache/fixtures --out tests/fuzz/corpus

  yaml/        the bundled experiments and a few edge forms (flow style, anchors, lists of heads)
  savedmodel/  the small saved_model.pb files: hostile fixtures (nested functions, resources,
               init ops), the Keras 3 export and cf_case_const (a Case and an If on constant
               predicates, folded while inlining)
  tfrecord/    two tf.train.Examples (a JPEG and a PNG under image/encoded, a label), written by TF
  idx/         a 3×5×4 uint8 IDX3 file, raw and gzipped
  image/       small images in every mode pretext decodes (JPEG baseline/progressive/gray/CMYK,
               PNG palette/16-bit/alpha, WebP, BMP, GIF)
Seeds are kept small: the fuzzer mutates them, so a seed's size is what every case reads.
"""
import argparse
import gzip
import io
import os
import shutil
import struct

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

YAML_EDGES = {
    "flow.yaml": "model: {path: m, size: 64}\ndata: {folders: [a, b]}\nhead: {kind: simclr, temperature: 0.2}\ntrain: {steps: 3, batch: 8}\n",
    "anchors.yaml": "model:\n  path: &p m\ndata:\n  folders: [*p]\nhead:\n  kind: multi\n  heads:\n    - {kind: dae, weight: 1.0}\n    - {kind: rotation, weight: 0.5}\n",
    "full.yaml": "model:\n  path: m\n  signature: serving_default\n  range: [-1, 1]\n  bn: train\n  train_vars: {regex: \"block_1\"}\ndata:\n  idx: [x.gz]\n  prefetch: 2\n  max_pixels: 1000\naugment:\n  crop_area: [0.2, 1.0]\nhead:\n  kind: moco\n  queue: 64\noptimizer:\n  kind: sgd\n  momentum: 0.9\n  schedule: {kind: cosine, warmup_steps: 2}\ntrain:\n  epochs: 1.5\ncheckpoint: {every: 2, keep: 1}\neval: {labeled: l, batch: 4}\nexport: {dir: out, version: 3}\n",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    d = lambda *p: os.makedirs(os.path.join(a.out, *p), exist_ok=True) or os.path.join(a.out, *p)

    ydir = d("yaml")
    for f in sorted(os.listdir("experiments")):
        shutil.copy(os.path.join("experiments", f), ydir)
    for name, text in YAML_EDGES.items():
        open(os.path.join(ydir, name), "w").write(text)

    sdir = d("savedmodel")
    for name in ["hostile/writes_in_nested", "hostile/writes_in_init", "keras3_export",
                 "cf_case_const"]:
        src = os.path.join(a.fixtures, name, "saved_model.pb")
        shutil.copy(src, os.path.join(sdir, name.replace("/", "_") + ".pb"))

    odd = os.path.join(a.fixtures, "data", "odd")
    idir = d("image")
    for f in sorted(os.listdir(odd)):
        if os.path.getsize(os.path.join(odd, f)) <= 6000:
            shutil.copy(os.path.join(odd, f), idir)
    rng = np.random.default_rng(0)
    px = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
    for fmt, ext in [("GIF", "gif"), ("JPEG", "jpg"), ("PNG", "png")]:
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, fmt)
        open(os.path.join(idir, f"small.{ext}"), "wb").write(buf.getvalue())

    import tensorflow as tf

    tdir = d("tfrecord")
    with tf.io.TFRecordWriter(os.path.join(tdir, "two.tfrecord")) as w:
        for i, f in enumerate(["small.jpg", "small.png"]):
            enc = open(os.path.join(idir, f), "rb").read()
            ex = tf.train.Example(features=tf.train.Features(feature={
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[enc])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
            }))
            w.write(ex.SerializeToString())

    xdir = d("idx")
    imgs = rng.integers(0, 255, (3, 5, 4), dtype=np.uint8)
    raw = struct.pack(">I", 0x0803) + struct.pack(">III", 3, 5, 4) + imgs.tobytes()
    open(os.path.join(xdir, "three-idx3-ubyte"), "wb").write(raw)
    open(os.path.join(xdir, "three-idx3-ubyte.gz"), "wb").write(gzip.compress(raw, mtime=0))


if __name__ == "__main__":
    main()
