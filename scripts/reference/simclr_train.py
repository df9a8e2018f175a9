"""Reference SimCLR (or denoising-autoencoder, `--head dae`) trainer in plain TF2 Python, written
independently of pretext: retrains a SavedModel's own variables without labels and measures kNN
top-1 before and after.

Reproduce (the Fashion-MNIST benchmark; data first, then a 15-minute run at 96 px):

    .venv/bin/python scripts/make_labeled.py --out .cache/fmnist10k --train 10000 --test 10000 \\
        --unlabeled .cache/fmnist_unl50k --unlabeled-count 50000
    .venv/bin/python scripts/reference/simclr_train.py \\
        --model .cache/fixtures/nsfwjs_mobilenet_v2 --images .cache/fmnist_unl50k \\
        --labeled .cache/fmnist10k --size 96 --batch 64 --lr 1e-4 --temperature 0.2 \\
        --minutes 15 --seed 0 --out results.json

`--steps 0` only evaluates (baseline kNN and embedding time). Without `--labeled` nothing is
evaluated (no embedding passes): a pure training-throughput run, as `make bench` does
(scripts/bench.py). `--images` may be given several times; each folder is searched recursively
for *.png / *.jpg / *.jpeg (any case), decoded to RGB (grayscale replicated).

Timing keys of the result JSON (--out), shared with `pretext train --json`: "engine",
"steps", "batch", "size", "images_per_second" (steady state: the steps after the first
`--warmup-steps`), "first_step_unix" (time.time() when the first train step finished),
"peak_rss_mb" (this process's ru_maxrss).

Model: `tf.saved_model.load(MODEL)`; the forward pass is the signature `--signature` (its input
is the single image tensor, NHWC float32 in [0, 1]; its first output the embedding). Trained
variables: `loaded.trainable_variables` if the loaded object exposes them, else the trainable
variables the signature function captures. The signature's batch norm runs in inference mode
(frozen statistics); `--bn train_all` instead calls a restored Keras `__call__` that has a
`training=True` trace (found on the loaded object or one of its attributes), which normalises
with batch statistics everywhere and updates the moving statistics as a side effect. `--bn
train` (pretext's `bn: train`: batch statistics only in the layers that train) rebuilds the
model as `keras.applications.MobileNetV2` (alpha found from the variable shapes), copies every
variable by name, checks the rebuilt forward pass against the signature (max |diff| < 1e-3),
marks the layers without a `--train-vars` match non-trainable (Keras then runs their batch norm
in inference mode), trains with momentum `--bn-momentum`, and writes the trained values back
into the loaded variables before the evaluation, which uses the signature as before.

Head (`--head simclr`, the default): projection MLP Dense(512) -> BatchNorm (batch statistics)
-> ReLU -> Dense(128); NT-Xent over both views, embedded in one batched forward pass; Adam
(epsilon 1e-7). `--head dae` (pretext's `head: {kind: dae, decoder: dense}`): one view per
image, Gaussian noise of std `--noise-level` added and clipped to [0, 1], the embedding decoded by
Dense(`--hidden`, ReLU) -> Dense(T*T*C, sigmoid) and compared (mean squared error) with the clean
view area-resized to TxT (`--target-size`).

Views (each a pure function of (seed, sample index, view), via stateless random ops): random
resized crop of the decoded image (area fraction in --crop-area, aspect ratio log-uniform in
3/4..4/3, up to 10 draws then the whole image), resized to SxS (bilinear/triangle); horizontal
flip p; colour jitter (brightness/contrast/saturation 0.8*s, hue 0.2*s, random order) with
p 0.8; grayscale p; Gaussian blur p with sigma drawn from --blur-sigma in pixels of a 224-px
side, scaled to S.

kNN protocol: images -> RGB -> SxS bilinear (triangle filter) -> /255 -> signature -> L2
normalise; bank = LABELED/train, queries = LABELED/test; cosine similarity; the k = 20 most
similar bank entries vote with weight exp(sim / 0.07); prediction = argmax of summed votes.
"""
import argparse
import json
import math
import os
import re
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

T0 = time.time()


# ----------------------------------------------------------------------------- data

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def image_files(root):
    """Every *.png / *.jpg / *.jpeg (any case) under root, recursively, sorted."""
    out = []
    for d, _, names in os.walk(root, followlinks=True):
        out += [os.path.join(d, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(out)


def decode_rgb(path):
    """PNG or JPEG -> HxWx3 float32 in [0, 1] (grayscale replicated to RGB)."""
    img = tf.io.decode_image(tf.io.read_file(path), channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.cast(img, tf.float32) / 255.0


def to_model_channels(img, channels):
    """RGB views -> the model's input channels (luma for a 1-channel input)."""
    return tf.image.rgb_to_grayscale(img) if channels == 1 else img


def load_resized(path, size, channels=3):
    img = tf.image.resize(decode_rgb(path), [size, size], method="bilinear", antialias=True)
    return to_model_channels(img, channels)


def labeled_split(root):
    classes = sorted(os.listdir(os.path.join(root, "train")))
    files, labels = {}, {}
    for split in ("train", "test"):
        f = [(p, c) for c, name in enumerate(classes)
             for p in image_files(os.path.join(root, split, name))]
        files[split] = [p for p, _ in f]
        labels[split] = np.array([c for _, c in f], np.int32)
    return classes, files, labels


def embed(files, forward, size, batch=250, channels=3):
    ds = (tf.data.Dataset.from_tensor_slices(files)
          .map(lambda p: load_resized(p, size, channels), num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch).prefetch(2))
    return np.concatenate([forward(x).numpy() for x in ds])


def knn_top1(bank, bank_y, query, query_y, n_classes, k=20, tau=0.07):
    bank = tf.math.l2_normalize(bank, 1)
    query = tf.math.l2_normalize(query, 1)
    correct = 0
    for i in range(0, len(query_y), 1000):
        sim, idx = tf.math.top_k(tf.matmul(query[i:i + 1000], bank, transpose_b=True), k)
        votes = tf.one_hot(tf.gather(bank_y, idx), n_classes) * tf.exp(sim / tau)[..., None]
        pred = tf.argmax(tf.reduce_sum(votes, 1), 1, output_type=tf.int32)
        correct += int(tf.reduce_sum(tf.cast(pred == query_y[i:i + 1000], tf.int32)))
    return correct / len(query_y)


def evaluate(forward, files, labels, n_classes, size, channels=3):
    t = time.time()
    bank = embed(files["train"], forward, size, channels=channels)
    query = embed(files["test"], forward, size, channels=channels)
    secs = time.time() - t
    return knn_top1(bank, labels["train"], query, labels["test"], n_classes), secs


# ----------------------------------------------------------------------------- augmentation

def uniform(seed, lo, hi, shape=()):
    return tf.random.stateless_uniform(shape, seed, lo, hi)


def crop_box(seed, h, w, area_range):
    """Crop (y, x, ch, cw) in whole pixels: up to 10 (area, ratio) draws, first that fits wins."""
    s = tf.random.experimental.stateless_split(seed, 4)
    area = tf.cast(h * w, tf.float32) * uniform(s[0], area_range[0], area_range[1], [10])
    ratio = tf.exp(uniform(s[1], math.log(3 / 4), math.log(4 / 3), [10]))
    cw = tf.cast(tf.round(tf.sqrt(area * ratio)), tf.int32)
    ch = tf.cast(tf.round(tf.sqrt(area / ratio)), tf.int32)
    fits = (cw >= 1) & (ch >= 1) & (cw <= w) & (ch <= h)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    any_fit = tf.reduce_any(fits)
    side = tf.minimum(h, w)
    cw = tf.where(any_fit, cw[first], side)
    ch = tf.where(any_fit, ch[first], side)
    y = tf.where(any_fit, tf.random.stateless_uniform([], s[2], 0, h - ch + 1, tf.int32), (h - side) // 2)
    x = tf.where(any_fit, tf.random.stateless_uniform([], s[3], 0, w - cw + 1, tf.int32), (w - side) // 2)
    return y, x, ch, cw


def colour_jitter(img, seed, s):
    b, c, sat, hue = 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s
    seeds = tf.random.experimental.stateless_split(seed, 5)
    ops = [lambda x: x * uniform(seeds[0], max(0.0, 1 - b), 1 + b),
           lambda x: tf.image.adjust_contrast(x, uniform(seeds[1], max(0.0, 1 - c), 1 + c)),
           lambda x: tf.image.adjust_saturation(x, uniform(seeds[2], max(0.0, 1 - sat), 1 + sat)),
           lambda x: tf.image.adjust_hue(x, uniform(seeds[3], -hue, hue)) if hue > 0 else x]
    order = tf.argsort(uniform(seeds[4], 0.0, 1.0, [4]))  # a random permutation of the four
    for k in range(4):
        img = tf.clip_by_value(tf.switch_case(order[k], [lambda f=f: f(img) for f in ops]), 0.0, 1.0)
    return img


def gaussian_blur(img, sigma, radius):
    r = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-r * r / (2.0 * sigma * sigma))
    k /= tf.reduce_sum(k)
    x = tf.pad(img[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "SYMMETRIC")
    kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1])
    ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1])
    x = tf.nn.depthwise_conv2d(x, kx, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(x, ky, [1, 1, 1, 1], "VALID")[0]


def augment(img, seed, a):
    """One SimCLR view of a decoded float image in [0, 1] (HxWx3) as SxSx3."""
    s = tf.random.experimental.stateless_split(seed, 9)
    shape = tf.shape(img)
    y, x, ch, cw = crop_box(s[0], shape[0], shape[1], a.crop_area)
    img = tf.image.crop_to_bounding_box(img, y, x, ch, cw)
    img = tf.image.resize(img, [a.size, a.size], method="bilinear", antialias=True)
    coin = lambda i, p: uniform(s[i], 0.0, 1.0) < p  # noqa: E731
    img = tf.cond(coin(1, a.flip), lambda: tf.image.flip_left_right(img), lambda: img)
    if a.jitter > 0:
        img = tf.cond(coin(2, 0.8), lambda: colour_jitter(img, s[3], a.jitter), lambda: img)
    img = tf.cond(coin(4, a.gray), lambda: tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(img)),
                  lambda: img)
    scale = a.size / 224.0
    radius = max(1, math.ceil(3 * a.blur_sigma[1] * scale))
    sigma = tf.maximum(uniform(s[5], a.blur_sigma[0], a.blur_sigma[1]) * scale, 0.05)
    img = tf.cond(coin(6, a.blur), lambda: gaussian_blur(img, sigma, radius), lambda: img)
    return tf.clip_by_value(img, 0.0, 1.0)


def view_pairs(a, views=2):
    """Batches of two views per image (or one, `views=1`) from a.images (a folder or a list of
    folders). Views are made in RGB and converted to the model's channels (a.channels, default 3)
    at the end."""
    roots = [a.images] if isinstance(a.images, str) else list(a.images)
    files = sorted(set(f for r in roots for f in image_files(r)))
    assert files, f"no *.png/*.jpg/*.jpeg under {', '.join(roots)}"
    channels = getattr(a, "channels", 3)

    def two_views(i, path):
        img = decode_rgb(path)
        return tuple(to_model_channels(augment(img, tf.stack([a.seed, 2 * i + v]), a), channels)
                     for v in range(views))

    ds = (tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=a.seed).repeat()
          .enumerate().map(two_views, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(a.batch, drop_remainder=True).prefetch(2))
    return ds, len(files)


# ----------------------------------------------------------------------------- model and loss

def training_call(loaded):
    """A restored Keras __call__ with a training=True trace, on `loaded` or one of its attributes."""
    for name in [None] + [n for n in dir(loaded) if not n.startswith("_") and n != "signatures"]:
        obj = loaded if name is None else getattr(loaded, name, None)
        cfs = getattr(getattr(obj, "__call__", None), "concrete_functions", None) or []
        if any(any(arg is True for arg in cf.structured_input_signature[0][1:]) for cf in cfs):
            return name or "<loaded>", obj
    return None, None


def keras_rebuild(variables, size, pattern, momentum):
    """The loaded MobileNetV2 (its signature's `variables`) as a Keras model with the same
    values (see the module doc); returns the model and its (Keras weight, loaded variable) pairs."""
    import keras
    by_name = {v.name.split(":")[0]: v for v in variables}
    for alpha in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
        m = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, include_top=False,
                                           weights=None, pooling="avg")
        # Keras 3 names a depthwise kernel "kernel", Keras 2 "depthwise_kernel"
        pairs = [(w, by_name.get(w.path, by_name.get(w.path.replace("/kernel", "/depthwise_kernel"))))
                 for w in m.weights]
        if all(v is not None and tuple(v.shape) == tuple(w.shape) for w, v in pairs):
            break
    else:
        raise SystemExit("--bn train: the model is not a keras.applications.MobileNetV2 "
                         "(no alpha matches its variable names and shapes)")
    for w, v in pairs:
        w.assign(v)
    loaded_name = {id(w): v.name.split(":")[0] for w, v in pairs}
    for layer in m.layers:
        if layer.weights:  # trainable if one of its variables matches (by the loaded name)
            layer.trainable = any(pattern is None or pattern.search(loaded_name[id(w)])
                                  for w in layer.weights)
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return m, pairs


class Projector(tf.Module):
    def __init__(self, d_in, seed, hidden=512, d_out=128):
        super().__init__()

        def glorot(shape, s):
            lim = math.sqrt(6.0 / sum(shape))
            return tf.Variable(tf.random.stateless_uniform(shape, [seed, s], -lim, lim))

        self.w1, self.b1 = glorot([d_in, hidden], 1), tf.Variable(tf.zeros([hidden]))
        self.gamma, self.beta = tf.Variable(tf.ones([hidden])), tf.Variable(tf.zeros([hidden]))
        self.w2, self.b2 = glorot([hidden, d_out], 2), tf.Variable(tf.zeros([d_out]))

    def __call__(self, h):
        x = tf.matmul(h, self.w1) + self.b1
        mean, var = tf.nn.moments(x, [0])
        x = tf.nn.relu(tf.nn.batch_normalization(x, mean, var, self.beta, self.gamma, 1e-3))
        return tf.matmul(x, self.w2) + self.b2


class DenseDecoder(tf.Module):
    """The DAE's dense decoder: embedding -> Dense(hidden, ReLU) -> Dense(t*t*c, sigmoid)."""

    def __init__(self, d_in, seed, hidden, t, c):
        super().__init__()
        self.t, self.c = t, c

        def glorot(shape, s):
            lim = math.sqrt(6.0 / sum(shape))
            return tf.Variable(tf.random.stateless_uniform(shape, [seed, s], -lim, lim))

        self.w1, self.b1 = glorot([d_in, hidden], 3), tf.Variable(tf.zeros([hidden]))
        self.w2, self.b2 = glorot([hidden, t * t * c], 4), tf.Variable(tf.zeros([t * t * c]))

    def __call__(self, h):
        x = tf.nn.relu(tf.matmul(h, self.w1) + self.b1)
        return tf.reshape(tf.sigmoid(tf.matmul(x, self.w2) + self.b2), [-1, self.t, self.t, self.c])


def dae_loss(forward, decoder, x, level, seed):
    """Denoising reconstruction: MSE between the decoded embedding of x + N(0, level) (clipped to
    [0, 1]) and x area-resized to the decoder's side."""
    noisy = tf.clip_by_value(x + level * tf.random.stateless_normal(tf.shape(x), seed), 0.0, 1.0)
    target = tf.image.resize(x, [decoder.t, decoder.t], method="area")
    return tf.reduce_mean(tf.math.squared_difference(decoder(forward(noisy)), target))


def nt_xent(z, n, tau):
    """z: 2n projections, view 1 rows then view 2 rows; the partner of row i is row (i + n) mod 2n."""
    z = tf.math.l2_normalize(z, 1)
    sim = tf.matmul(z, z, transpose_b=True) / tau
    sim = tf.where(tf.eye(2 * n, dtype=tf.bool), -1e9 * tf.ones_like(sim), sim)
    labels = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], 0)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, sim))


# ----------------------------------------------------------------------------- main

def pair(text):
    lo, hi = (float(v) for v in text.split(","))
    return lo, hi


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--signature", default="serving_default")
    ap.add_argument("--images", required=True, action="append",
                    help="folder of unlabeled *.png/*.jpg/*.jpeg (searched recursively; repeatable)")
    ap.add_argument("--labeled", help="DIR with train/<class>/*.png, test/<class>/*.png; "
                    "without it nothing is evaluated (throughput runs)")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--head", choices=["simclr", "dae"], default="simclr")
    ap.add_argument("--temperature", type=float, default=0.2, help="simclr")
    ap.add_argument("--noise-level", type=float, default=0.1, help="dae: Gaussian noise std")
    ap.add_argument("--hidden", type=int, default=512, help="dae: decoder hidden units")
    ap.add_argument("--target-size", type=int, default=24, help="dae: reconstructed side")
    ap.add_argument("--minutes", type=float, default=15.0, help="training time budget")
    ap.add_argument("--steps", type=int, default=10**9, help="step cap (0: evaluate only)")
    ap.add_argument("--warmup-steps", type=int, default=2,
                    help="images_per_second is measured over the steps after the first K")
    ap.add_argument("--crop-area", type=pair, default=(0.08, 1.0))
    ap.add_argument("--flip", type=float, default=0.5)
    ap.add_argument("--jitter", type=float, default=1.0, help="colour jitter strength s (p 0.8)")
    ap.add_argument("--gray", type=float, default=0.2)
    ap.add_argument("--blur", type=float, default=0.5)
    ap.add_argument("--blur-sigma", type=pair, default=(0.1, 2.0), help="px at a 224-px side")
    ap.add_argument("--bn", choices=["frozen", "train", "train_all"], default="frozen")
    ap.add_argument("--bn-momentum", type=float, default=0.99, help="with --bn train")
    ap.add_argument("--train-vars", default=None, metavar="REGEX",
                    help="train only the variables whose names match (re.search), as pretext's "
                         "model.train_vars {regex: ...}; default: all")
    ap.add_argument("--head-warmup", type=int, default=0, metavar="N",
                    help="the first N steps train the projection alone (own Adam, constant lr)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    a = ap.parse_args()
    tf.random.set_seed(a.seed)

    loaded = tf.saved_model.load(a.model)
    sig = loaded.signatures[a.signature]
    in_key = list(sig.structured_input_signature[1])[0]
    in_shape = sig.structured_input_signature[1][in_key].shape
    a.channels = int(in_shape[-1]) if in_shape.rank and in_shape[-1] is not None else 3
    out_key = sorted(sig.structured_outputs)[0]
    embed_fn = lambda x: sig(**{in_key: x})[out_key]  # noqa: E731
    if getattr(loaded, "trainable_variables", None):
        train_vars, var_source = list(loaded.trainable_variables), "loaded.trainable_variables"
    else:
        train_vars, var_source = list(sig.trainable_variables), f"signatures['{a.signature}'].trainable_variables"
    if a.train_vars:
        pattern = re.compile(a.train_vars)
        train_vars = [v for v in train_vars if pattern.search(v.name.split(":")[0])]
        assert train_vars, f"--train-vars {a.train_vars!r} selects no variable"
    call_name, call_obj = training_call(loaded)
    write_back = []
    if a.bn == "train_all":
        assert call_obj is not None, "the loaded object exposes no training=True call"
        forward = lambda x: call_obj(x, training=True)  # noqa: E731
    elif a.bn == "train":
        kmodel, write_back = keras_rebuild(sig.variables, a.size, re.compile(a.train_vars) if a.train_vars
                                           else None, a.bn_momentum)
        x = tf.random.stateless_uniform([4, a.size, a.size, a.channels], [a.seed, 9])
        diff = float(tf.reduce_max(tf.abs(kmodel(x, training=False) - embed_fn(x))))
        assert diff < 1e-3, f"the rebuilt Keras model differs from the signature by {diff}"
        print(f"rebuilt as Keras MobileNetV2: max |diff| vs the signature {diff:.2e}; "
              f"{len(kmodel.trainable_variables)} trainable variables", flush=True)
        train_vars, var_source = list(kmodel.trainable_variables), "keras rebuild, trainable layers"
        forward = lambda x: kmodel(x, training=True)  # noqa: E731
    else:
        forward = embed_fn

    if a.labeled:
        classes, files, labels = labeled_split(a.labeled)
        knn_before, embed_before = evaluate(embed_fn, files, labels, len(classes), a.size, a.channels)
        print(f"kNN top-1 before: {knn_before:.4f}  (embedding {len(files['train']) + len(files['test'])} "
              f"images at {a.size}px: {embed_before:.1f}s)", flush=True)
    else:
        classes, files, labels = [], {"train": [], "test": []}, {}
        knn_before, embed_before = None, 0.0

    ds, n_images = view_pairs(a, 1 if a.head == "dae" else 2)
    d_emb = int(sig.structured_outputs[out_key].shape[-1])
    if a.head == "dae":
        proj = DenseDecoder(d_emb, a.seed, a.hidden, a.target_size, a.channels)
    else:
        proj = Projector(d_emb, a.seed)
    all_vars = train_vars + list(proj.trainable_variables)
    opt = tf.keras.optimizers.Adam(a.lr, epsilon=1e-7)
    step_seed = tf.Variable(0, dtype=tf.int64)

    def loss_of(views):
        if a.head == "dae":
            step_seed.assign_add(1)
            return dae_loss(forward, proj, views[0], a.noise_level, tf.stack([a.seed, step_seed]))
        z = proj(forward(tf.concat(views, 0)))  # both views in one batched pass
        return nt_xent(z, a.batch, a.temperature)

    @tf.function
    def train_step(*views):
        with tf.GradientTape() as tape:
            loss = loss_of(views)
        opt.apply_gradients(zip(tape.gradient(loss, all_vars), all_vars))
        return loss

    head_vars = list(proj.trainable_variables)
    opt_head = tf.keras.optimizers.Adam(a.lr, epsilon=1e-7)

    @tf.function
    def head_step(*views):  # --head-warmup: the backbone's output is a constant here
        with tf.GradientTape() as tape:
            loss = loss_of(views)
        opt_head.apply_gradients(zip(tape.gradient(loss, head_vars), head_vars))
        return loss

    steps, losses, first_step, first_step_unix, t_train = 0, [], None, None, time.time()
    step_end = []  # time.time() when each step finished (the loss fetched)
    it = iter(ds)
    while steps < a.steps and time.time() - t_train < 60 * a.minutes:
        views = next(it)
        views = views if isinstance(views, tuple) else (views,)
        step_fn = head_step if steps < a.head_warmup else train_step
        losses.append(float(step_fn(*views)))
        steps += 1
        step_end.append(time.time())
        if first_step is None:
            first_step_unix = step_end[0]
            first_step = first_step_unix - t_train
        if steps % 20 == 0:
            print(f"step {steps}  loss {np.mean(losses[-20:]):.4f}  {time.time() - t_train:.0f}s", flush=True)
    train_secs = time.time() - t_train
    for w, v in write_back:  # --bn train: the Keras copy trained; the signature evaluates
        v.assign(w)
    k = max(0, a.warmup_steps)
    if steps > k:  # steady state: the steps after the first k (all of them for k = 0)
        t_from = step_end[k - 1] if k else t_train
        steady = round((steps - k) * a.batch / (step_end[-1] - t_from), 2)
    else:
        steady = None

    if a.labeled and steps:
        knn_after, embed_after = evaluate(embed_fn, files, labels, len(classes), a.size, a.channels)
    else:
        knn_after, embed_after = knn_before, 0.0
    result = {
        "engine": "python",
        "model": a.model, "signature": a.signature, "size": a.size, "batch": a.batch, "lr": a.lr,
        "head": a.head, "temperature": a.temperature,
        "dae": {"noise_level": a.noise_level, "hidden": a.hidden, "target_size": a.target_size,
                "decoder": "dense"} if a.head == "dae" else None, "seed": a.seed, "head_warmup": a.head_warmup, "bn": a.bn, "unlabeled_images": n_images,
        "augment": {"crop_area": a.crop_area, "flip": a.flip, "jitter": a.jitter, "gray": a.gray,
                    "blur": a.blur, "blur_sigma": a.blur_sigma},
        "knn_top1_before": knn_before, "knn_top1_after": knn_after,
        "bank": len(files["train"]), "queries": len(files["test"]),
        "steps": steps, "train_seconds": round(train_secs, 1),
        "warmup_steps": k,
        "images_per_second": steady,
        "images_per_second_overall": round(steps * a.batch / train_secs, 2) if steps else None,
        "images_per_second_after_first_step":
            round((steps - 1) * a.batch / (train_secs - first_step), 2) if steps > 1 else None,
        "time_to_first_step_seconds": round(first_step, 1) if first_step else None,
        "first_step_unix": first_step_unix,
        "loss_first": losses[0] if losses else None,
        "loss_last20_mean": float(np.mean(losses[-20:])) if losses else None,
        "embed_seconds_before": round(embed_before, 1), "embed_seconds_after": round(embed_after, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_seconds": round(time.time() - T0, 1),
        "trainable_variables": len(train_vars), "trainable_params": int(sum(np.prod(v.shape) for v in train_vars)),
        "trainable_variables_from": var_source, "train_vars_regex": a.train_vars,
        "backbone_bn": {"train_all": "batch statistics, moving statistics updated (training=True "
                                     f"call on {call_name})",
                        "train": "batch statistics in the trained layers (Keras rebuild), "
                                 f"momentum {a.bn_momentum}; frozen layers in inference mode",
                        "frozen": "frozen: the serving signature's inference-mode batch norm"}[a.bn],
        "training_call_available": call_name,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
    }
    print(json.dumps(result, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
