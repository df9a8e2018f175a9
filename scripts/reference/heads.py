"""Reference losses of pretext's heads in TF Python, written independently of pretext's graph.

Run: .venv/bin/python scripts/reference/heads.py DIR [DIR ...]
    (tests/head_parity.rs dumps the DIRs and runs this once per head family:
    `cargo test --release --test head_parity -- --test-threads=1 --nocapture`, with the
    PRETEXT_* environment of `make test`; PRETEXT_PYTHON picks the interpreter)

Purpose: the test oracle for per-head loss parity. Each DIR holds what pretext dumped for one
head on one batch, without stepping: manifest.json (model dir, output key, pixel range, the head
config as pretext serialises it, pretext's loss, and for each array its .bin file and shape) and
raw little-endian float32 arrays: the fed batches (`feed/...`), the head's named tensors
(`tensor/...`), its variables (`var/...`), momentum copies of them (`momentum/...`).

For each DIR this script loads the SavedModel with tf.saved_model.load, runs its serving
signature on the inputs the head fed its tower (recomputing those from the clean batch where
they are deterministic), recomputes the head's loss in float64 from the signature outputs and
the dumped weights with its own code (below), and prints one JSON line {"dir", "loss", "checks"}.
Only random draws (noise, masks, the MoCo queue) and the conv decoder's input feature map are
taken from the dump, each checked first: noise of the configured kind, masks of the configured
shape, unit queue rows, a feature map whose spatial mean is the signature output. A failed
check exits non-zero with a message.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# Backbone features pretext computed (with oneDNN, its default) against the reference's backbone
# (TF's reference kernels, oneDNN off above): convolutions and reductions sum in another order,
# scaled differences up to 1.1e-5 seen on the fixtures. The losses still agree within 1e-5.
BACKBONE_TOL = 5e-5

# Float64 building blocks, written from their definitions rather than from pretext's graph.


def area_matrix(n_in, n_out):
    """[n_out, n_in]: output cell i averages input pixels over [i, i + 1) · n_in / n_out,
    each weighted by how much of it the cell covers."""
    scale = n_in / n_out
    a = np.zeros((n_out, n_in))
    for i in range(n_out):
        start, end = i * scale, (i + 1) * scale
        for j in range(int(np.floor(start)), min(int(np.ceil(end)), n_in)):
            a[i, j] = max(0.0, min(j + 1.0, end) - max(float(j), start)) / scale
    return a


def bilinear_matrix(n_in, n_out):
    """[n_out, n_in]: linear interpolation between pixel centres (output centre i + 1/2 maps to
    input coordinate (i + 1/2) · n_in / n_out), edges clamped."""
    scale = n_in / n_out
    b = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) * scale - 0.5
        j = int(np.floor(src))
        frac = src - j
        b[i, min(max(j, 0), n_in - 1)] += 1.0 - frac
        b[i, min(max(j + 1, 0), n_in - 1)] += frac
    return b


def resize(x, rows, cols):
    """NHWC `x` resized by row and column interpolation matrices."""
    return np.einsum("yi,nijc,xj->nyxc", rows, x, cols)


def dense(x, w, b):
    return x @ w + b


def batch_norm(x, gamma, beta):
    """Batch statistics over axis 0 (biased variance, eps 1e-3), scale 1 + gamma, offset beta:
    pretext stores gamma as an offset from 1 so that zero-initialised variables start at 1."""
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).mean(axis=0)
    return (x - mean) / np.sqrt(var + 1e-3) * (1.0 + gamma) + beta


def bn_relu_mlp(x, w0, b0, gamma, beta, w1, b1):
    """Linear → batch norm → ReLU → linear."""
    h = np.maximum(batch_norm(dense(x, w0, b0), gamma, beta), 0.0)
    return dense(h, w1, b1)


def unit_rows(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def cosine_loss(p, z):
    """Mean over rows of 2 − 2·cos(p, z) (= squared distance of the unit vectors)."""
    return float(np.mean(np.sum((unit_rows(p) - unit_rows(z)) ** 2, axis=1)))


def softmax_xent(logits, labels):
    """Mean softmax cross entropy of integer `labels`, with TF's sparse op (pretext uses the
    dense one on one-hot labels)."""
    x = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.constant(labels, tf.int64), logits=tf.constant(logits, tf.float64)
    )
    return float(tf.reduce_mean(x))


_models = {}


def fail(msg):
    sys.exit(f"FAIL: {msg}")


class Case:
    """One dumped head: manifest, arrays, and the model's serving signature."""

    def __init__(self, d):
        self.dir = d
        with open(os.path.join(d, "manifest.json")) as f:
            self.m = json.load(f)
        self.head = self.m["head"]
        self.lo, self.hi = self.m["range"]
        self.checks = {}
        if self.m["model"] not in _models:
            _models[self.m["model"]] = tf.saved_model.load(self.m["model"])
        self.sig = _models[self.m["model"]].signatures["serving_default"]
        self.in_key = list(self.sig.structured_input_signature[1].keys())[0]

    def has(self, name):
        return name in self.m["arrays"]

    def a(self, name):
        if not self.has(name):
            fail(f"{self.dir}: no array '{name}' in the dump")
        e = self.m["arrays"][name]
        x = np.fromfile(os.path.join(self.dir, e["file"]), dtype="<f4")
        return x.reshape(e["shape"]).astype(np.float64)

    def backbone(self, x):
        """The signature's output on x (float32 in, float64 out)."""
        out = self.sig(**{self.in_key: tf.constant(x.astype(np.float32))})
        return out[self.m["output_key"]].numpy().astype(np.float64)

    def check(self, name, got, want, tol):
        err = float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))
        self.checks[name] = err
        if not err <= tol:
            fail(f"{self.dir}: {name}: scaled max difference {err:.3e} > {tol}")


def check_noise(c, x, noisy):
    kind, level = c.head["noise"], c.head["noise_level"]
    if kind == "gaussian":
        inside = (noisy > c.lo) & (noisy < c.hi)
        std = float(np.std((noisy - x)[inside]))
        c.checks["noise_std"] = std
        if abs(std - level * (c.hi - c.lo)) > 0.1 * level * (c.hi - c.lo) + 1e-3:
            fail(f"{c.dir}: gaussian noise std {std}, configured {level}")
        if noisy.min() < c.lo or noisy.max() > c.hi:
            fail(f"{c.dir}: noisy input outside the pixel range")
        return
    allowed = np.isclose(noisy, x) | (noisy == c.lo)
    if kind == "salt_pepper":
        allowed |= noisy == c.hi
    if not allowed.all():
        fail(f"{c.dir}: {kind} noise changed values to something other than the range ends")
    changed = float(np.mean(~np.isclose(noisy, x)))
    c.checks["noise_fraction"] = changed
    if abs(changed - level) > 0.05:
        fail(f"{c.dir}: {kind} noise changed {changed:.3f} of the values, configured {level}")


def decode(c, kind, emb, t, channels):
    """The reconstruction from `emb` with the decoder whose weights were dumped."""
    if c.has("var/dae/reduce/kernel"):
        if c.head.get("decoder") == "dense":
            fail(f"{c.dir}: a dense decoder was asked but conv weights were dumped")
        f = c.a(f"tensor/{kind}/feature_map")
        # The map must be what the signature output pools (the fixture ends in a global mean).
        c.check("feature_map_pools_to_output", f.mean(axis=(1, 2)), emb, BACKBONE_TOL)
        conv = lambda x, n: tf.nn.conv2d(x, c.a(f"var/dae/{n}/kernel"), 1, "SAME").numpy() + c.a(
            f"var/dae/{n}/bias"
        )
        h = np.maximum(conv(f, "reduce"), 0.0)
        h = resize(h, bilinear_matrix(h.shape[1], t), bilinear_matrix(h.shape[2], t))
        h = np.maximum(conv(h, "conv1"), 0.0)
        return 1.0 / (1.0 + np.exp(-conv(h, "conv2")))
    if c.head.get("decoder") == "conv":
        fail(f"{c.dir}: a conv decoder was asked but no conv weights were dumped")
    if emb.ndim == 4:
        emb = emb.mean(axis=(1, 2))
    h = np.maximum(dense(emb, c.a("var/dae/decoder1/kernel"), c.a("var/dae/decoder1/bias")), 0.0)
    r = dense(h, c.a("var/dae/decoder2/kernel"), c.a("var/dae/decoder2/bias"))
    return (1.0 / (1.0 + np.exp(-r))).reshape(-1, t, t, channels)


def target(c, x, t):
    small = resize(x, area_matrix(x.shape[1], t), area_matrix(x.shape[2], t))
    return (small - c.lo) / (c.hi - c.lo)


def dae(c):
    x, noisy = c.a("feed/images"), c.a("tensor/dae/noisy")
    check_noise(c, x, noisy)
    t = c.head["target_size"]
    r = decode(c, "dae", c.backbone(noisy), t, x.shape[3])
    return float(np.mean((r - target(c, x, t)) ** 2))


def check_mask(c, m):
    n, h, w, _ = m.shape
    if not np.isin(m, [0.0, 1.0]).all():
        fail(f"{c.dir}: mask values other than 0 and 1")
    ratio = c.head["mask_ratio"]
    if c.head["mask"] == "block":
        sh = min(max(int(np.floor(np.sqrt(ratio) * h + 0.5)), 1), h)
        sw = min(max(int(np.floor(np.sqrt(ratio) * w + 0.5)), 1), w)
        for i in range(n):
            rows, cols = np.nonzero(m[i, :, :, 0])
            y0, x0 = rows.min(), cols.min()
            want = np.zeros((h, w))
            want[y0 : y0 + sh, x0 : x0 + sw] = 1.0
            if not (m[i, :, :, 0] == want).all():
                fail(f"{c.dir}: image {i}'s mask is not one {sh}x{sw} block")
    else:
        p = c.head["patch"]
        if h % p or w % p:
            fail(f"{c.dir}: the reference checks patch masks only for sides divisible by {p}")
        grid = m[:, ::p, ::p, :]
        if not (np.repeat(np.repeat(grid, p, axis=1), p, axis=2) == m).all():
            fail(f"{c.dir}: the mask is not constant on {p}x{p} patches")
        c.checks["patch_fraction"] = float(grid.mean())
        if abs(grid.mean() - ratio) > 0.15:
            fail(f"{c.dir}: {grid.mean():.3f} of the patches hidden, configured {ratio}")


def inpaint(c):
    x, m = c.a("feed/images"), c.a("tensor/inpaint/mask")
    check_mask(c, m)
    masked = x * (1.0 - m) + m * (c.lo + c.hi) / 2.0
    c.check("masked_input", c.a("tensor/inpaint/masked"), masked, 1e-6)
    t = c.head["target_size"]
    r = decode(c, "inpaint", c.backbone(masked), t, x.shape[3])
    wt = resize(m, area_matrix(m.shape[1], t), area_matrix(m.shape[2], t))
    sq = (r - target(c, x, t)) ** 2 * wt
    return float(sq.sum() / (wt.sum() * x.shape[3] + 1e-6))


def rotation(c):
    x = c.a("feed/images")
    rot = np.concatenate([np.rot90(x, k, axes=(1, 2)) for k in range(4)], axis=0)
    c.check("rotated_inputs", c.a("tensor/rotation/rotated"), rot, 0.0)
    e = c.backbone(rot)
    if e.ndim == 4:
        e = e.mean(axis=(1, 2))
    logits = dense(e, c.a("var/rotation/classifier/kernel"), c.a("var/rotation/classifier/bias"))
    labels = np.repeat(np.arange(4), x.shape[0])
    return softmax_xent(logits, labels)


def pooled(e):
    return e.mean(axis=(1, 2)) if e.ndim == 4 else e


def moco(c):
    v0, v1 = c.a("feed/view0"), c.a("feed/view1")
    hq, hk = pooled(c.backbone(v0)), pooled(c.backbone(v1))
    # The key encoder is a momentum copy of the backbone: at initialisation, the SavedModel.
    c.check("momentum_backbone_is_the_model", c.a("tensor/moco/key_features"), hk, BACKBONE_TOL)

    def proj(x, pre):
        h = np.maximum(dense(x, c.a(f"{pre}/moco/proj0/kernel"), c.a(f"{pre}/moco/proj0/bias")), 0)
        return dense(h, c.a(f"{pre}/moco/proj1/kernel"), c.a(f"{pre}/moco/proj1/bias"))

    q, k = unit_rows(proj(hq, "var")), unit_rows(proj(hk, "momentum"))
    queue = c.a("var/moco/queue")
    c.check("queue_rows_are_unit", np.linalg.norm(queue, axis=1), np.ones(len(queue)), 1e-5)
    pos = np.sum(q * k, axis=1, keepdims=True)
    logits = np.concatenate([pos, q @ queue.T], axis=1) / c.head["temperature"]
    return softmax_xent(logits, np.zeros(len(q), dtype=int))


def byol(c):
    v0, v1 = c.a("feed/view0"), c.a("feed/view1")
    x = np.concatenate([v0, v1], axis=0)
    h = pooled(c.backbone(x))
    c.check("momentum_backbone_is_the_model", c.a("tensor/byol/target_features"), h, BACKBONE_TOL)
    names = ["w0", "b0", "gamma", "beta", "w1", "b1"]
    online = [c.a(f"var/byol/projector/{n}") for n in names]
    predictor = [c.a(f"var/byol/predictor/{n}") for n in names]
    copies = [c.a(f"momentum/byol/projector/{n}") for n in names]
    if c.head["momentum"] == 0.0:
        # SimSiam: the target is the online projector itself (its copy is refreshed each step).
        for n, o, t in zip(names, online, copies):
            c.check(f"simsiam_target_{n}_is_online", t, o, 0.0)
        copies = online
    p = bn_relu_mlp(bn_relu_mlp(h, *online), *predictor)
    z = bn_relu_mlp(h, *copies)
    n = len(v0)
    return cosine_loss(p[:n], z[n:]) + cosine_loss(p[n:], z[:n])


HEADS = {"dae": dae, "inpaint": inpaint, "rotation": rotation, "moco": moco, "byol": byol}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for d in sys.argv[1:]:
        c = Case(d)
        kind = c.head["kind"]
        if kind not in HEADS:
            fail(f"{d}: no reference for head kind '{kind}'")
        loss = HEADS[kind](c)
        print(json.dumps({"dir": d, "loss": loss, "checks": c.checks}), flush=True)


if __name__ == "__main__":
    main()
