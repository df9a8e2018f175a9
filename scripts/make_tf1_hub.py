"""Fixture maker: a module in the TF1 Hub format, built by tensorflow_hub's own TF1 builder.

    make_tf1_hub.py --out DIR [--name tf1_hub] [--size 32]

Writes DIR/NAME (the module: saved_model.pb with two graph variants, tfhub_module.pb,
variables/), DIR/NAME.json (what the tests need to know) and DIR/golden/NAME/ (input.bin and,
per variant, the `default` signature's outputs computed by hub.Module in a TF1 graph).

The module is built the way TF-Hub's TF1 image modules were (TF-Slim style): ref variables
(`VariableV2`, `use_resource=False`), fused batch norm, and two graph variants made from one
module function:
  tags {}        batch norm in inference mode (moving statistics),
  tags {"train"} batch norm on batch statistics; the moving averages are `AssignSub` ops in the
                 UPDATE_OPS collection, as slim's batch_norm adds them.
Signatures: `default` (outputs `default`: pooled features, `spatial`: the last feature map) and
`image_feature_vector` (output `default`), both taking `images` in [0, 1].

tensorflow_hub 0.15 is the last release with the TF1 builder; it imports tf.estimator at import
time, which TF >= 2.16 no longer ships, so a placeholder module stands in for it (the builder never
uses it).
"""
import argparse
import json
import os
import shutil
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.modules.setdefault("tensorflow.compat.v1.estimator", types.SimpleNamespace(
    Exporter=object, ModeKeys=types.SimpleNamespace(PREDICT="infer")))
import tensorflow_hub as hub  # noqa: E402

tf1 = tf.compat.v1
SEED = 20261201
DECAY = 0.9
EPS = 1e-3


def module_fn(is_training, size):
    x = tf1.placeholder(tf.float32, [None, size, size, 3], name="images")
    with ref_variables():
        _module_body(x, is_training)


def _module_body(x, is_training):

    def var(name, shape, init, trainable=True):
        return tf1.get_variable(name, shape, initializer=init, trainable=trainable)

    def conv(h, name, cin, cout, stride, bias):
        with tf1.variable_scope(name):
            w = var("weights", [3, 3, cin, cout], tf1.glorot_uniform_initializer())
            h = tf.nn.conv2d(h, w, [1, stride, stride, 1], "SAME")
            if bias:
                h = tf.nn.bias_add(h, var("biases", [cout], tf1.zeros_initializer()))
        return h

    def batch_norm(h, name, c):
        with tf1.variable_scope(name):
            gamma = var("gamma", [c], tf1.ones_initializer())
            beta = var("beta", [c], tf1.zeros_initializer())
            mean = var("moving_mean", [c], tf1.zeros_initializer(), trainable=False)
            variance = var("moving_variance", [c], tf1.ones_initializer(), trainable=False)
            if is_training:
                y, m, v = tf1.nn.fused_batch_norm(h, gamma, beta, epsilon=EPS, is_training=True)
                for moving, batch in ((mean, m), (variance, v)):
                    upd = tf1.assign_sub(moving, (moving - batch) * (1 - DECAY))
                    tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, upd)
            else:
                y, _, _ = tf1.nn.fused_batch_norm(h, gamma, beta, mean=mean, variance=variance,
                                                  epsilon=EPS, is_training=False)
        return y

    h = tf.nn.relu(batch_norm(conv(x, "conv1", 3, 8, 2, False), "bn1", 8))
    h = tf.nn.relu6(batch_norm(conv(h, "conv2", 8, 16, 2, True), "bn2", 16))
    feat = tf.reduce_mean(h, axis=[1, 2])
    hub.add_signature(inputs={"images": x}, outputs={"default": feat, "spatial": h})
    hub.add_signature("image_feature_vector", inputs={"images": x}, outputs={"default": feat})


def run_module(path, tags, x, keys=("default", "spatial")):
    """The `default` signature of the module at `path` with graph variant `tags`, on `x`."""
    with tf1.Graph().as_default():
        m = hub.Module(path, tags=tags)
        out = m(tf.constant(x), signature="default", as_dict=True)
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            return {k: s.run(out[k]) for k in keys}


def ref_variables():
    """A variable creator scope that makes ref variables (`VariableV2`), as TF1 code did (TF2's
    default is resource variables, even in TF1-style graphs)."""
    def creator(next_creator, **kw):
        kw["use_resource"] = False
        return next_creator(**kw)
    return tf.variable_creator_scope(creator)


def export(path, module_fn, drop_collections=(), init=None):
    """Builds `module_fn(is_training)` as a module with variants {} (False) and {train} (True)
    and exports it to `path` after `init(session)`; returns {variable name: shape}."""
    if os.path.exists(path):
        shutil.rmtree(path)
    def seeded(is_training):  # graph-level seed: initializers stay deterministic
        tf1.set_random_seed(SEED)
        return module_fn(is_training)

    spec = hub.create_module_spec(
        seeded, tags_and_args=[(set(), {"is_training": False}), ({"train"}, {"is_training": True})],
        drop_collections=list(drop_collections))
    with tf1.Graph().as_default():
        tf1.set_random_seed(SEED)
        m = hub.Module(spec, trainable=True)
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            if init:
                init(s)
            m.export(path, s)
            refs = sorted({v.op.type for v in tf1.global_variables()})
            variables = {v.op.name: v.shape.as_list() for v in tf1.global_variables()}
    assert refs == ["VariableV2"], refs
    return variables


def conformance_golden(path, gold, x, rng):
    """scripts/golden.py's layout (tests/conformance.rs reads it) from hub.Module's `train`
    variant: input.bin, output.bin (signature `default`, output `default`), weights.bin, and
    grads.bin: d(sum(output * weights))/d(var) by tf.compat.v1.gradients for every trainable
    variable, indexed in index.json by its name in the module (its node and checkpoint key)."""
    os.makedirs(gold, exist_ok=True)
    with tf1.Graph().as_default():
        m = hub.Module(path, tags={"train"}, trainable=True)
        y = m(tf.constant(x), signature="default")
        w = rng.normal(0, 1, [x.shape[0], int(y.shape[1])]).astype(np.float32)
        vs = tf1.trainable_variables()
        gs = tf1.gradients(tf.reduce_sum(y * w), vs)
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            out, got = s.run([y, gs])
    entries, flat, off = [], [], 0
    for v, g in zip(vs, got):
        name = v.op.name.split("/", 1)[1]  # hub.Module's scope ("module/") left out
        entries.append(dict(name=name, graph_input=name, shape=list(g.shape), trainable=True,
                            grad_is_none=False, offset=off, size=int(g.size)))
        flat.append(g.reshape(-1))
        off += int(g.size)
    for fname, arr in (("input.bin", x), ("output.bin", out), ("weights.bin", w),
                       ("grads.bin", np.concatenate(flat))):
        arr.astype("<f4").tofile(os.path.join(gold, fname))
    index = dict(name=os.path.basename(path), input_key="images", input_shape=list(x.shape),
                 output_key="default", output_shape=list(out.shape), vars=entries,
                 grads_len=off, loss="reduce_sum(output * weights)", variant="train")
    with open(os.path.join(gold, "index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return index


def make(out, name, size):
    path = os.path.join(out, name)
    rng = np.random.default_rng(SEED)

    def init(s):
        # Non-trivial inference batch norm: moving statistics and gamma/beta away from 1/0.
        for v in tf1.global_variables():
            n, shape = v.op.name, v.shape.as_list()
            if n.endswith("moving_variance"):
                v.load(rng.uniform(0.5, 2.0, shape).astype(np.float32), s)
            elif n.endswith("moving_mean") or n.endswith("beta"):
                v.load(rng.normal(0, 0.2, shape).astype(np.float32), s)
            elif n.endswith("gamma"):
                v.load(rng.uniform(0.8, 1.2, shape).astype(np.float32), s)

    variables = export(path, lambda is_training: module_fn(is_training, size), init=init)
    gold = os.path.join(out, "golden", name)
    x = rng.uniform(0, 1, [4, size, size, 3]).astype(np.float32)
    conformance_golden(path, gold, x, rng)
    outputs = {}
    for label, tags in (("serve", set()), ("train", {"train"})):
        got = run_module(path, tags, x)
        for k, v in got.items():
            v.astype("<f4").tofile(os.path.join(gold, f"{label}_{k}.bin"))
            outputs[f"{label}_{k}"] = list(v.shape)
    meta = dict(
        name=name, input_key="images", input_shape=[None, size, size, 3],
        test_input_shape=list(x.shape), outputs=outputs, variables=variables,
        variable_op="VariableV2", update_decay=DECAY,
        description="TF1 Hub format module (tensorflow_hub %s builder): ref variables, fused "
                    "batch norm, variants {} and {train} (UPDATE_OPS)." % hub.__version__,
        provenance="Generated by scripts/make_tf1_hub.py (TensorFlow %s, seed %d)."
                   % (tf.__version__, SEED),
        license="Apache-2.0 (generated by this project's scripts; random weights)",
    )
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    print("%-20s variants {} and {train}, %d ref variables" % (name, len(variables)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default="tf1_hub")
    ap.add_argument("--size", type=int, default=32)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    make(a.out, a.name, a.size)


if __name__ == "__main__":
    sys.exit(main())
