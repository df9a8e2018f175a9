#!/usr/bin/env python3
"""Golden forward outputs and gradients of the fixtures, computed by TensorFlow itself.

    golden.py --fixtures OUTDIR

For every fixture OUTDIR/NAME (metadata OUTDIR/NAME.json, written by make_fixtures.py) this
writes OUTDIR/golden/NAME/:
  input.bin    float32 input of the fixture's test_input_shape, rng(7).uniform(0, 1)
  output.bin   the serving_default signature's output on it
  weights.bin  float32 w of the output's shape, rng(11).standard_normal
  grads.bin    (GRAD_FIXTURES only) d(sum(output * w))/d(var) for every variable the signature
               captures, concatenated in `captured_inputs` order; zeros where TF gives no
               gradient (BatchNorm moving statistics)
  index.json   shapes, output key and, per captured variable, name/shape/trainable/offsets
All .bin files are raw little-endian float32 in C order. Reruns give identical bytes.

It also writes OUTDIR/golden/unstride/ (graph::unstride's oracle): for each Conv2D shape in
UNSTRIDE_CASES, x, W and dy (seeded), y = conv2d(x, W), and TF's gradients of sum(y * dy) with
respect to x and W, computed on the original strided convolution (oneDNN off, as everywhere
here): cases.bin holds them concatenated, index.json their shapes and offsets.

The order of `captured_inputs` is the order of the extra inputs (after the signature inputs)
of the StatefulPartitionedCall node that produces the signature outputs in the saved graph;
index.json records that node and its input names so the Rust side can check.
"""
import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TF 2.21's oneDNN CPU kernels crash (SIGSEGV / heap corruption) in Conv2DBackpropFilter for a
# 1x1 kernel, stride 2, SAME padding, even input size -- fer_emotion's conv2d_3 (60x60 input).
# The reference kernels are fine, and they are deterministic too.
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

FIXTURES = ["tiny_cnn", "mobilenet_v2_035", "keras3_export", "fer_emotion",
            "nsfwjs_mobilenet_v2", "resnet_style", "custom_grads", "cf_cond_const", "cf_case_const"]
GRAD_FIXTURES = {"tiny_cnn", "mobilenet_v2_035", "fer_emotion", "resnet_style", "custom_grads",
                 "cf_cond_const", "cf_case_const"}
SIGNATURE = "serving_default"


def f32le(a):
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def top_level_call(path, output_key):
    """Name of the node producing the signature output and its input names."""
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    mg = sm.meta_graphs[0]
    sig = mg.signature_def[SIGNATURE]
    node_name = sig.outputs[output_key].name.split(":")[0]
    node = next(n for n in mg.graph_def.node if n.name == node_name)
    assert node.op == "StatefulPartitionedCall", node.op
    n_sig_inputs = len(sig.inputs)
    return node_name, list(node.input), n_sig_inputs


def all_variables(obj):
    """Every tf.Variable reachable from a loaded SavedModel object."""
    out = []
    for t in tf.train.TrackableView(obj).descendants():
        if isinstance(t, tf.Variable):
            out.append(t)
    return out


def golden(fixtures, name, grads=None):
    """Writes golden/NAME; gradients too when `grads` (default: NAME in GRAD_FIXTURES)."""
    meta_path = os.path.join(fixtures, name + ".json")
    with open(meta_path) as f:
        meta = json.load(f)
    path = os.path.join(fixtures, name)
    loaded = tf.saved_model.load(path)
    fn = loaded.signatures[SIGNATURE]
    in_key, out_key = meta["input_key"], meta["output_key"]

    x = np.random.default_rng(7).uniform(0, 1, meta["test_input_shape"]).astype(np.float32)
    y = fn(**{in_key: tf.constant(x)})[out_key].numpy().astype(np.float32)
    w = np.random.default_rng(11).standard_normal(y.shape).astype(np.float32)

    node_name, node_inputs, n_sig = top_level_call(path, out_key)
    captured = list(fn.captured_inputs)
    extra_inputs = node_inputs[n_sig:]
    assert len(extra_inputs) == len(captured), (len(extra_inputs), len(captured))

    out_dir = os.path.join(fixtures, "golden", name)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    with open(os.path.join(out_dir, "input.bin"), "wb") as f:
        f.write(f32le(x))
    with open(os.path.join(out_dir, "output.bin"), "wb") as f:
        f.write(f32le(y))
    with open(os.path.join(out_dir, "weights.bin"), "wb") as f:
        f.write(f32le(w))

    index = {
        "name": name,
        "input_key": in_key,
        "input_shape": list(x.shape),
        "output_key": out_key,
        "output_shape": list(y.shape),
        "top_level_call": node_name,
        "num_signature_inputs": n_sig,
        "num_captured": len(captured),
        "loss": "reduce_sum(output * weights)",
    }

    if (name in GRAD_FIXTURES) if grads is None else grads:
        # Map each captured resource handle to its variable, by identity of the handle.
        by_handle = {}
        for v in all_variables(loaded):
            by_handle.setdefault(id(v.handle), v)
        # Captured constants (e.g. a Normalization layer's mean) have no gradient to compare.
        variables, graph_inputs = [], []
        for h, graph_input in zip(captured, extra_inputs):
            if h.dtype != tf.resource:
                continue
            v = by_handle.get(id(h))
            assert v is not None, "captured input %r is not a variable handle" % (h,)
            variables.append(v)
            graph_inputs.append(graph_input)
        extra_inputs = graph_inputs
        assert len({id(v) for v in variables}) == len(variables), "variable captured twice"

        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for v in variables:
                tape.watch(v)
            out = fn(**{in_key: tf.constant(x)})[out_key]
            loss = tf.reduce_sum(out * tf.constant(w))
        grads = tape.gradient(loss, variables)
        # the taped forward pass (TF may run a differently optimised forward+backward variant
        # of the function, so not always bit-identical) must agree with the plain one
        scale = max(1.0, float(np.abs(y).max()))
        assert np.allclose(out.numpy(), y, rtol=1e-4, atol=1e-4 * scale), (
            np.abs(out.numpy() - y).max(), scale)

        chunks, entries, off = [], [], 0
        for v, g, graph_input in zip(variables, grads, extra_inputs):
            shape = v.shape.as_list()
            size = int(np.prod(shape)) if shape else 1
            if isinstance(g, tf.IndexedSlices):
                g = tf.convert_to_tensor(g)
            arr = np.zeros(shape, np.float32) if g is None else g.numpy().astype(np.float32)
            assert list(arr.shape) == shape, (v.name, arr.shape, shape)
            chunks.append(f32le(arr))
            entries.append({
                "name": v.name[:-2] if v.name.endswith(":0") else v.name,
                "graph_input": graph_input,
                "shape": shape,
                "trainable": bool(v.trainable),
                "grad_is_none": g is None,
                "offset": off,
                "size": size,
            })
            off += size
        with open(os.path.join(out_dir, "grads.bin"), "wb") as f:
            f.write(b"".join(chunks))
        index["vars"] = entries
        index["grads_len"] = off
        nnone = sum(e["grad_is_none"] for e in entries)
        print("%-20s out=%s vars=%d (no grad: %d, trainable: %d) grad elems=%d"
              % (name, list(y.shape), len(entries), nnone,
                 sum(e["trainable"] for e in entries), off), flush=True)
    else:
        print("%-20s out=%s captured=%d (forward only)" % (name, list(y.shape), len(captured)),
              flush=True)

    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


# (stride h, stride w, padding, input side, input channels, output channels): the strided 1x1
# shapes oneDNN crashes on or differentiates wrongly (scripts/onednn_conv_probe.py), an odd side,
# and a ResNet-like shortcut with many channels.
UNSTRIDE_CASES = [
    (2, 2, "SAME", 56, 4, 16),
    (2, 2, "VALID", 60, 8, 16),
    (2, 1, "SAME", 16, 4, 16),
    (1, 2, "VALID", 56, 4, 16),
    (4, 4, "SAME", 56, 4, 16),
    (3, 3, "VALID", 57, 3, 16),
    (2, 2, "SAME", 15, 4, 8),
    (2, 2, "SAME", 28, 64, 128),
]


def golden_unstride(fixtures):
    out_dir = os.path.join(fixtures, "golden", "unstride")
    os.makedirs(out_dir, exist_ok=True)
    chunks, cases, off = [], [], 0
    for k, (sh, sw, pad, side, cin, cout) in enumerate(UNSTRIDE_CASES):
        rng = np.random.default_rng(100 + k)
        x = rng.standard_normal((2, side, side, cin)).astype(np.float32)
        w = rng.standard_normal((1, 1, cin, cout)).astype(np.float32)
        xv, wv = tf.Variable(x), tf.Variable(w)
        with tf.GradientTape() as tape:
            y = tf.nn.conv2d(xv, wv, strides=[1, sh, sw, 1], padding=pad)
            dy = rng.standard_normal(y.shape).astype(np.float32)
            loss = tf.reduce_sum(y * dy)
        gx, gw = tape.gradient(loss, [xv, wv])
        entry = dict(strides=[1, sh, sw, 1], padding=pad)
        for key, a in (("x", x), ("w", w), ("dy", dy), ("y", y.numpy()), ("dx", gx.numpy()),
                       ("dw", gw.numpy())):
            chunks.append(f32le(a))
            entry[key] = dict(shape=list(a.shape), offset=off)
            off += a.size
        cases.append(entry)
    with open(os.path.join(out_dir, "cases.bin"), "wb") as f:
        f.write(b"".join(chunks))
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=2)
        f.write("\n")
    print("unstride             %d strided 1x1 convolution cases" % len(cases), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--only", nargs="*", help="only these fixtures")
    a = ap.parse_args()
    tf.config.experimental.enable_op_determinism()
    for name in FIXTURES:
        if a.only and name not in a.only:
            continue
        golden(a.fixtures, name)
    if not a.only:
        golden_unstride(a.fixtures)


if __name__ == "__main__":
    sys.exit(main())
