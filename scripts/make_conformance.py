#!/usr/bin/env python3
"""Build the conformance corpus: real architectures as TF-Hub style SavedModels, with golden
forward outputs and GradientTape gradients (scripts/golden.py) for tests/conformance.rs.

    make_conformance.py --out DIR [--set fast|all] [--only NAME ...]

Random weights (seeded), batch norms calibrated on smooth random images (a random-init network
with arbitrary moving statistics collapses), inputs as small as each architecture allows, so
the checks are about the graph, not the weights. `fast` is the half CI runs; `all` adds the
large ones (`make conformance`). Writes DIR/NAME/ (SavedModel), DIR/NAME.json (metadata),
DIR/golden/NAME/ and DIR/corpus.json (the list, in order). A TF1 Hub format module (TF-Slim's
resnet_v2_50, tensorflow_hub's TF1 builder; scripts/make_tf1_hub.py) is in `all`.
"""
import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

import golden as goldens  # noqa: E402
import make_fixtures as fx  # noqa: E402

A = tf_keras.applications

# name: (set, constructor, input side, what it stands for)
KERAS2 = {
    "mobilenet_v3_small": ("fast", A.MobileNetV3Small, 96, "hard-swish, SE blocks, rescaling inside"),
    "efficientnet_b0": ("fast", A.EfficientNetB0, 64, "swish (tf.nn.silu custom gradient), SE, residual"),
    "regnet_x002": ("fast", A.RegNetX002, 64, "grouped convolutions"),
    "resnet50_v2": ("all", A.ResNet50V2, 64, "pre-activation residual, 1x1 stride-2 shortcuts"),
    "efficientnet_v2_b0": ("all", A.EfficientNetV2B0, 64, "fused MBConv, swish; its own "
                           "0..255 rescaling left out (include_preprocessing=False)"),
    "densenet121": ("all", A.DenseNet121, 64, "dense concatenations"),
    "convnext_tiny": ("all", A.ConvNeXtTiny, 64, "depthwise 7x7, LayerNorm, GELU, layer scale"),
    "nasnet_mobile": ("all", A.NASNetMobile, 64, "searched cells, separable convolutions"),
    "xception": ("all", A.Xception, 96, "separable convolutions, residual"),
    "inception_resnet_v2": ("all", A.InceptionResNetV2, 96, "inception branches, scaled residuals"),
}


def calibrate(model, side):
    """Moving statistics = batch statistics on images like the golden input (uniform noise,
    and smooth ones), so a deep random-init network stays well conditioned on it."""
    rng = np.random.default_rng(fx.SEED)
    noise = rng.uniform(0, 1, (8, side, side, 3)).astype(np.float32)
    smooth = tf.image.resize(rng.uniform(0, 1, (8, 6, 6, 3)).astype(np.float32), (side, side))
    x = tf.concat([noise, tf.clip_by_value(smooth, 0.0, 1.0)], 0)
    bns = [l for l in model.submodules if type(l).__name__.startswith("BatchNormalization")]
    for layer in bns:
        layer.momentum = 0.0
    model(x, training=True)
    for layer in bns:
        layer.momentum = 0.99


def save_keras2(out, name, ctor, side, note):
    fx.seed_all()
    # EfficientNetV2 rescales 0..255 pixels itself: on the corpus' [0, 1] images its first
    # layer would see a near-constant input, and a few training steps blow the output up by
    # orders of magnitude (the checks would measure amplified rounding, not the graph).
    extra = {"include_preprocessing": False} if ctor is A.EfficientNetV2B0 else {}
    model = ctor(weights=None, include_top=False, pooling="avg", input_shape=(side, side, 3),
                 **extra)
    calibrate(model, side)
    module = fx.HubImageModule(model, tf.TensorSpec([None, side, side, 3], tf.float32),
                               "feature_vector")
    fx.save_hub(module, os.path.join(out, name))
    dim = int(model.output_shape[-1])
    return dict(
        description="tf_keras.applications.%s (include_top=False, avg pooling), random init, "
        "batch norms calibrated; %s." % (ctor.__name__, note),
        input_key="images", output_key="feature_vector",
        input_shape=[None, side, side, 3], output_shape=[None, dim], output_dim=dim,
        test_input_shape=[2, side, side, 3], source="tf_keras %s" % tf_keras.__version__,
    )


def save_keras3_vit(out, name):
    """A small ViT in Keras 3 (patch embedding, 2 pre-norm transformer blocks with
    MultiHeadAttention and GELU MLPs, mean token), exported with model.export()."""
    import keras
    keras.backend.clear_session()
    keras.utils.set_random_seed(fx.SEED)
    L = keras.layers
    side, patch, dim = 32, 8, 32
    inp = keras.Input(shape=(side, side, 3))
    h = L.Conv2D(dim, patch, strides=patch)(inp)
    h = L.Reshape(((side // patch) ** 2, dim))(h)
    h = L.Embedding((side // patch) ** 2, dim)(keras.ops.arange((side // patch) ** 2)) + h
    for _ in range(2):
        a = L.LayerNormalization(epsilon=1e-6)(h)
        h = h + L.MultiHeadAttention(num_heads=4, key_dim=dim // 4)(a, a)
        m = L.LayerNormalization(epsilon=1e-6)(h)
        m = L.Dense(2 * dim, activation="gelu")(m)
        h = h + L.Dense(dim)(m)
    y = L.GlobalAveragePooling1D()(L.LayerNormalization(epsilon=1e-6)(h))
    model = keras.Model(inp, y, name=name)
    path = os.path.join(out, name)
    if os.path.exists(path):
        shutil.rmtree(path)
    model.export(path, format="tf_saved_model", verbose=False)
    sig = tf.saved_model.load(path).signatures[fx.SIGNATURE]
    (input_key, _), = sig.structured_input_signature[1].items()
    (output_key, ospec), = sig.structured_outputs.items()
    return dict(
        description="Small ViT in Keras 3 (8x8 patches, 2 transformer blocks, 4 heads, GELU), "
        "random init; exported with model.export(format='tf_saved_model').",
        input_key=input_key, output_key=output_key,
        input_shape=[None, side, side, 3], output_shape=[None, dim], output_dim=dim,
        test_input_shape=[2, side, side, 3], source="keras %s" % keras.__version__,
    )


def save_slim_tf1_hub(out, name, side=64):
    """TF-Slim's resnet_v2_50 as a TF1 Hub format module (tensorflow_hub's TF1 builder, ref
    variables, variants {} and {train}), as TF-Hub's TF1 `imagenet/resnet_v2_50` modules were
    made; golden values from hub.Module's `train` variant (make_tf1_hub.conformance_golden)."""
    import importlib
    import make_tf1_hub as t1
    # tf_slim reaches Keras' legacy TF1 layers as `tf_keras.legacy_tf_layers`, which tf_keras
    # 2.21 keeps under `tf_keras.src`.
    for m in ["", ".base", ".convolutional", ".core", ".normalization", ".pooling",
              ".variable_scope_shim"]:
        sys.modules.setdefault("tf_keras.legacy_tf_layers" + m,
                               importlib.import_module("tf_keras.src.legacy_tf_layers" + m))
    import tf_slim as slim
    from tf_slim.nets import resnet_v2

    def module_fn(is_training):
        x = tf.compat.v1.placeholder(tf.float32, [None, side, side, 3], name="images")
        with t1.ref_variables(), slim.arg_scope(resnet_v2.resnet_arg_scope()):
            net, _ = resnet_v2.resnet_v2_50(x, num_classes=None, is_training=is_training,
                                            global_pool=True)
        t1.hub.add_signature(inputs={"images": x}, outputs={"default": tf.squeeze(net, [1, 2])})

    path = os.path.join(out, name)
    t1.export(path, module_fn, drop_collections=["resnet_v2_50/_end_points"])
    rng = np.random.default_rng(fx.SEED)
    x = rng.uniform(0, 1, [2, side, side, 3]).astype(np.float32)
    index = t1.conformance_golden(path, os.path.join(out, "golden", name), x, rng)
    return dict(
        description="TF-Slim resnet_v2_50 (pre-activation ResNet, slim batch norm) in the TF1 Hub "
        "format: ref variables, variants {} and {train} with UPDATE_OPS; trains the train variant.",
        input_key="images", output_key="default", input_shape=[None, side, side, 3],
        output_shape=[None, index["output_shape"][1]], format="tf1_hub",
        source="tf_slim %s, tensorflow_hub %s, tf %s" % (
            getattr(slim, "__version__", "1.1.0"), t1.hub.__version__, tf.__version__),
    )


def save_custom(out, name):
    _, meta = fx.make_custom_grads(out)
    if name != "custom_grads":
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)
        os.replace(os.path.join(out, "custom_grads"), os.path.join(out, name))
    meta["source"] = "tf.Module, tf %s" % tf.__version__
    return meta


CORPUS = [(n, s, (lambda out, n=n, c=c, side=side, note=note: save_keras2(out, n, c, side, note)))
          for n, (s, c, side, note) in KERAS2.items()]
CORPUS += [
    ("vit_small_keras3", "fast", lambda out: save_keras3_vit(out, "vit_small_keras3")),
    ("custom_gradients", "fast", lambda out: save_custom(out, "custom_gradients")),
    ("resnet_v2_50_tf1_hub", "all", lambda out: save_slim_tf1_hub(out, "resnet_v2_50_tf1_hub")),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", choices=["fast", "all"], default="fast")
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tf.config.experimental.enable_op_determinism()
    names = []
    for name, which, make in CORPUS:
        if (a.set == "fast" and which != "fast") or (a.only and name not in a.only):
            continue
        t0 = time.time()
        meta = dict(name=name, signature=fx.SIGNATURE, set=which, **make(a.out))
        tf1_hub = meta.get("format") == "tf1_hub"
        if tf1_hub:
            meta["signature"] = "default"
        meta["provenance"] = "Generated by scripts/make_conformance.py (%s, seed %d)." % (
            meta.pop("source"), fx.SEED)
        meta["license"] = "Apache-2.0 (generated by this project's scripts; random weights)"
        if not tf1_hub:  # (a TF1 Hub module's builder checks it and writes its golden values)
            fx.check_saved(os.path.join(a.out, name), meta)
        with open(os.path.join(a.out, name + ".json"), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
            f.write("\n")
        if not tf1_hub:
            goldens.golden(a.out, name, grads=True)
        names.append(name)
        print("%-22s built in %.1fs" % (name, time.time() - t0), flush=True)
    # With --only, the models built before stay listed (in corpus order).
    listed = os.path.join(a.out, "corpus.json")
    if a.only and os.path.exists(listed):
        names = set(names) | set(json.load(open(listed)))
        names = [n for n, _, _ in CORPUS if n in names]
    with open(listed, "w") as f:
        json.dump(names, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
