#!/usr/bin/env python3
"""Unlabeled training images for self-supervised runs, cut from scikit-image's sample photos.

    make_images.py --downloads DIR --out OUTDIR --count N [--seed S]
                   [--min-side PX] [--max-side PX] [--format mixed|jpeg]

DIR holds a scikit-image wheel (scikit_image-*.whl, from `pip download --no-deps`). The real
photographs in its skimage/data/ (colour and grayscale; see SOURCES and graphs/README.md for
their licenses) are decoded, and N deterministic random crops are written to OUTDIR as
img_00000.jpg, img_00001.png, ... (even indices JPEG quality 90, odd indices PNG). Each crop:
a random source, a crop whose longer side is 25-100% of the source's shorter side, random
horizontal/vertical flips, resized (bicubic) to a random size with both sides in 64..160 px
(--min-side/--max-side). Colour photos stay RGB, grayscale ones stay grayscale.
`--format jpeg` writes every crop as JPEG quality 90 (img_00000.jpg, img_00001.jpg, ...): the
photo-sized benchmark set of `make bench` is `--count 1000 --min-side 256 --max-side 640
--format jpeg`. Same wheel, options and seed -> identical files.
"""
import argparse
import glob
import io
import os
import sys
import zipfile

import numpy as np
from PIL import Image

# Photos in skimage/data whose docstrings (skimage/data/_fetchers.py) state that they are
# public domain / CC0 / free of copyright restrictions. moon.png and motorcycle_{left,right}.png
# are left out: the wheel states no license for them.
SOURCES = [
    "astronaut.png",          # NASA, public domain
    "chelsea.png",            # CC0, Stefan van der Walt
    "coffee.png",             # CC0, Rachel Michetti
    "rocket.jpg",             # SpaceX, public domain
    "hubble_deep_field.jpg",  # NASA, public domain
    "camera.png",             # CC0, Lav Varshney (grayscale)
    "coins.png",              # Brooklyn Museum, no known copyright restrictions (grayscale)
    "retina.jpg",             # Mikael Haggstrom, CC0
    "brick.png",              # CC0 Textures, CC0 (grayscale)
    "grass.png",              # CC0 (grayscale)
    "gravel.png",             # CC0 Textures, CC0 (grayscale)
]
MIN_SIDE, MAX_SIDE = 64, 160


def find_wheel(downloads):
    wheels = sorted(glob.glob(os.path.join(downloads, "scikit_image-*.whl")))
    if not wheels:
        sys.exit("no scikit_image-*.whl in %s" % downloads)
    return wheels[-1]


def load_sources(wheel):
    out = []
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name in SOURCES:
            member = "skimage/data/" + name
            if member not in names:
                print("note: %s not in %s, skipped" % (member, os.path.basename(wheel)))
                continue
            img = Image.open(io.BytesIO(z.read(member)))
            img.load()
            if img.mode in ("LA", "1") or img.mode.startswith("I"):
                img = img.convert("L")
            elif img.mode not in ("RGB", "L"):  # RGBA, P, CMYK, ...
                img = img.convert("RGB")
            out.append((name, img))
    if not out:
        sys.exit("no source photos found in %s" % wheel)
    return out


def crop_one(img, rng, min_side=MIN_SIDE, max_side=MAX_SIDE):
    W, H = img.size
    short = min(W, H)
    ow = int(rng.integers(min_side, max_side + 1))
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))  # output h / w
    oh = int(np.clip(round(ow * aspect), min_side, max_side))
    longer = rng.uniform(0.25, 1.0) * short  # the crop's longer side
    if ow >= oh:
        cw, ch = longer, longer * oh / ow
    else:
        ch, cw = longer, longer * ow / oh
    x0 = rng.uniform(0, W - cw)
    y0 = rng.uniform(0, H - ch)
    hflip = rng.uniform() < 0.5
    vflip = rng.uniform() < 0.25
    out = img.resize((ow, oh), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    if hflip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    if vflip:
        out = out.transpose(Image.FLIP_TOP_BOTTOM)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--downloads", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-side", type=int, default=MIN_SIDE, help="px, both output sides")
    ap.add_argument("--max-side", type=int, default=MAX_SIDE, help="px, both output sides")
    ap.add_argument("--format", choices=["mixed", "jpeg"], default="mixed",
                    help="mixed: even indices JPEG, odd PNG; jpeg: all JPEG quality 90")
    a = ap.parse_args()
    if not 1 <= a.min_side <= a.max_side:
        sys.exit("need 1 <= --min-side <= --max-side")

    wheel = find_wheel(a.downloads)
    sources = load_sources(wheel)
    os.makedirs(a.out, exist_ok=True)
    for old in glob.glob(os.path.join(a.out, "img_*.*")):
        os.remove(old)

    rng = np.random.default_rng(a.seed)
    used = {}
    for i in range(a.count):
        name, img = sources[int(rng.integers(len(sources)))]
        used[name] = used.get(name, 0) + 1
        out = crop_one(img, rng, a.min_side, a.max_side)
        if i % 2 == 0 or a.format == "jpeg":
            out.save(os.path.join(a.out, "img_%05d.jpg" % i), "JPEG", quality=90)
        else:
            out.save(os.path.join(a.out, "img_%05d.png" % i), "PNG")
    print("%d images from %d photos of %s -> %s (%s)" % (
        a.count, len(sources), os.path.basename(wheel), a.out,
        ", ".join("%s %d" % (k.split(".")[0], v) for k, v in sorted(used.items()))))


if __name__ == "__main__":
    sys.exit(main())
