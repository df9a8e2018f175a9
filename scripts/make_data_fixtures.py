"""Data-format fixtures for tests/data_formats.rs, written by TensorFlow and Pillow themselves so the
engine's readers are checked against the real producers, with TF's own decoding as the oracle.

    make_data_fixtures.py --images DIR --out DIR

OUT/tfrecords/train-0000{0,1}-of-00002.tfrecord  40 tf.train.Examples (image/encoded = JPEG or PNG
                                                 bytes, image/format, image/class/label), by
                                                 tf.io.TFRecordWriter
OUT/corrupt/damaged.tfrecord   10 records; record 4's data and record 7's length corrupted
OUT/corrupt/nokey.tfrecord     3 Examples whose image is under 'img' (no 'image/encoded')
OUT/odd/*                      odd modes: grayscale/CMYK/progressive JPEG, RGBA/LA/palette/16-bit
                               PNG, WebP, BMP
OUT/expected.json              for every readable image: TF's decode_image(channels=3) as raw
                               RGB bytes in OUT/expected/<name>.rgb, plus record offsets and, for
                               the Fashion-MNIST IDX file if present, pixel sums by index
"""
import argparse
import glob
import gzip
import io
import json
import os
import shutil

import numpy as np
import tensorflow as tf
from PIL import Image

IDX = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def example(img_bytes, fmt, label, key="image/encoded"):
    f = {
        key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[img_bytes])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[fmt.encode()])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()


def encoded(path, i):
    """Bytes of one source image, re-encoded as RGB JPEG (even i) or PNG (odd i)."""
    im = Image.open(path).convert("RGB")
    buf = io.BytesIO()
    fmt = "jpeg" if i % 2 == 0 else "png"
    im.save(buf, format=fmt.upper(), quality=90)
    return buf.getvalue(), fmt


def tf_rgb(data):
    return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False).numpy()


def record_offsets(path):
    offs, off, size = [], 0, os.path.getsize(path)
    with open(path, "rb") as f:
        while off < size:
            f.seek(off)
            n = int.from_bytes(f.read(8), "little")
            offs.append(off)
            off += 16 + n
    return offs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    for d in ["tfrecords", "corrupt", "odd", "expected"]:
        os.makedirs(os.path.join(a.out, d))
    srcs = sorted(glob.glob(os.path.join(a.images, "*.jpg")) + glob.glob(os.path.join(a.images, "*.png")))[:40]
    exp = {"tfrecords": {}, "odd": {}, "corrupt": {}}

    def keep(name, data):
        px = tf_rgb(data)
        px.tofile(os.path.join(a.out, "expected", name + ".rgb"))
        return {"height": int(px.shape[0]), "width": int(px.shape[1])}

    for shard in range(2):
        name = f"train-{shard:05d}-of-00002.tfrecord"
        path = os.path.join(a.out, "tfrecords", name)
        with tf.io.TFRecordWriter(path) as w:
            for i in range(shard * 20, shard * 20 + 20):
                data, fmt = encoded(srcs[i], i)
                w.write(example(data, fmt, i % 10))
                exp["tfrecords"][f"{name}#{i - shard * 20}"] = keep(f"{name}.{i - shard * 20}", data)
        exp["tfrecords"][name] = {"offsets": record_offsets(path)}

    # A damaged file: record 4's data and record 7's length flipped after writing.
    dmg = os.path.join(a.out, "corrupt", "damaged.tfrecord")
    with tf.io.TFRecordWriter(dmg) as w:
        for i in range(10):
            w.write(example(encoded(srcs[i], i)[0], "jpeg", 0))
    offs = record_offsets(dmg)
    raw = bytearray(open(dmg, "rb").read())
    raw[offs[4] + 12 + 30] ^= 0xFF
    raw[offs[7] + 1] ^= 0x01
    open(dmg, "wb").write(bytes(raw))
    exp["corrupt"] = {"offsets": offs, "bad_data": offs[4], "bad_length": offs[7]}
    # TF's own reader agrees the file is damaged (DataLossError), as the engine must report.
    try:
        for _ in tf.data.TFRecordDataset(dmg):
            pass
        exp["corrupt"]["tf_reader"] = "read through"
    except tf.errors.DataLossError as e:
        exp["corrupt"]["tf_reader"] = e.message.splitlines()[0]
    with tf.io.TFRecordWriter(os.path.join(a.out, "corrupt", "nokey.tfrecord")) as w:
        for i in range(3):
            w.write(example(encoded(srcs[i], i)[0], "jpeg", 0, key="img"))

    # Odd modes.
    base = Image.open(srcs[0]).convert("RGB").resize((48, 40))
    arr = np.asarray(base)
    odd = {}
    odd["gray.jpg"] = (base.convert("L"), "JPEG", {})
    odd["cmyk.jpg"] = (base.convert("CMYK"), "JPEG", {"quality": 95})
    odd["progressive.jpg"] = (base, "JPEG", {"progressive": True, "quality": 90})
    odd["rgba.png"] = (Image.fromarray(np.dstack([arr, np.linspace(0, 255, arr.size // 3, dtype=np.uint8).reshape(arr.shape[:2])])), "PNG", {})
    odd["la.png"] = (base.convert("LA"), "PNG", {})
    odd["palette.png"] = (base.convert("P", palette=Image.ADAPTIVE, colors=16), "PNG", {})
    odd["gray16.png"] = (Image.fromarray((np.asarray(base.convert("L")).astype(np.uint16) * 257 + 3)), "PNG", {})
    odd["photo.webp"] = (base, "WEBP", {"lossless": True})
    odd["photo.bmp"] = (base, "BMP", {})
    for name, (im, fmt, kw) in odd.items():
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        data = buf.getvalue()
        open(os.path.join(a.out, "odd", name), "wb").write(data)
        exp["odd"][name] = keep(name, data)
    # 16-bit RGB PNG (Pillow cannot write one; TF can).
    rgb16 = tf.io.encode_png(tf.constant(arr.astype(np.uint16) * 257 + 1)).numpy()
    open(os.path.join(a.out, "odd", "rgb16.png"), "wb").write(rgb16)
    exp["odd"]["rgb16.png"] = keep("rgb16.png", rgb16)

    if os.path.exists(IDX):
        with gzip.open(IDX, "rb") as f:
            d = f.read()
        imgs = np.frombuffer(d, np.uint8, offset=16).reshape(-1, 28, 28)
        exp["idx"] = {"path": IDX, "count": int(len(imgs)),
                      "sums": {str(i): int(imgs[i].astype(np.int64).sum()) for i in [0, 1, 4321, len(imgs) - 1]}}
    with open(os.path.join(a.out, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
    print(f"data fixtures in {a.out}: {len(exp['tfrecords'])} tfrecord entries, {len(exp['odd'])} odd images")


if __name__ == "__main__":
    main()
