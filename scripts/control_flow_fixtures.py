"""Fixtures with functional control flow (If / Case / While nodes in saved_model.pb), made by
scripts/make_fixtures.py (registered in its main()); see graph::control_flow on the Rust side.

  cf_cond_const   tf.cond on a predicate computed from constants only (LogicalNot(Equal(2, 3)))
                  becomes an If; the branch taken holds a convolution and an ELU (not a custom
                  gradient: TF Python cannot differentiate a loaded If around one, so golden.py
                  could not make its gradients)
  cf_cond_custom  tf.cond on tf.constant(True) whose branch taken holds a SiLU (tf.nn.silu: a
                  custom gradient, recorded inside the inlined branch); no golden gradients
  cf_case_const   tf.switch_case on a constant index (a Case), the branch taken holding a nested
                  constant tf.cond
  cf_cond_input   tf.cond on tf.reduce_mean(h) > 0.1 (depends on the input) whose branches read
                  variables: on the gradient path, not differentiable by TF's C API
  cf_while_grad   tf.while_loop whose body reads a variable, its output on the gradient path
  cf_while_free   two tf.while_loops off the gradient path: one preprocessing the input, one over
                  a statistic of the activations whose output only feeds a comparison

Each is a tf.Module whose @tf.function __call__(images [None, 32, 32, 3] float32) returns
{"embedding": [None, 16]}; every op named above is checked to be in saved_model.pb.
"""
import os
import shutil
import types

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

SIGNATURE = "serving_default"
CONTROL_FLOW = ("If", "StatelessIf", "Case", "StatelessCase", "While", "StatelessWhile")


class _Net(tf.Module):
    """A conv stem over `pre(images)`, then `mid(h)`, then a dense embedding."""

    def __init__(self, rng, mid, pre=None):
        super().__init__()

        def var(shape, scale, name):
            return tf.Variable(rng.normal(0, scale, shape).astype(np.float32), name=name)

        self.stem = var([3, 3, 3, 8], 0.4, "stem/kernel")
        self.a = var([3, 3, 8, 8], 0.2, "a/kernel")
        self.b = var([3, 3, 8, 8], 0.2, "b/kernel")
        self.dense = var([8, 16], 0.3, "dense/kernel")
        self._mid, self._pre = mid, pre

    def conv(self, h, w):
        return tf.nn.conv2d(h, w, 1, "SAME")

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
    def __call__(self, images):
        x = images if self._pre is None else self._pre(images)
        h = tf.nn.relu(tf.nn.conv2d(x, self.stem, 2, "SAME"))
        h = self._mid(self, h)
        return {"embedding": tf.matmul(tf.reduce_mean(h, [1, 2]), self.dense)}


def _cond_const(m, h):
    pred = tf.logical_not(tf.equal(tf.constant(2), tf.constant(3)))
    h = tf.cond(pred, lambda: tf.nn.elu(m.conv(h, m.a)), lambda: m.conv(h, m.b))
    return tf.nn.relu(h)


def _cond_custom(m, h):
    h = tf.cond(tf.constant(True), lambda: tf.nn.silu(m.conv(h, m.a)), lambda: m.conv(h, m.b))
    return tf.nn.relu(h)


def _case_const(m, h):
    def branch1():
        inner = tf.cond(tf.constant(False), lambda: h * 3.0, lambda: m.conv(h, m.b))
        return tf.nn.relu(m.conv(h, m.a)) + inner

    return tf.switch_case(tf.constant(1), [lambda: h * 2.0, branch1, lambda: m.conv(h, m.b)])


def _cond_input(m, h):
    h = tf.cond(tf.reduce_mean(h) > 0.1, lambda: m.conv(h, m.a), lambda: m.conv(h, m.b))
    return tf.nn.relu(h)


def _while_grad(m, h):
    _, h = tf.while_loop(lambda i, h: i < 2, lambda i, h: (i + 1, tf.tanh(m.conv(h, m.a))), [0, h])
    return h


def _while_free_pre(x):
    """Preprocessing on the input only: x <- 0.5 x + 0.25, twice."""
    _, x = tf.while_loop(lambda i, x: i < 2, lambda i, x: (i + 1, x * 0.5 + 0.25), [0, x])
    return x


def _while_free(m, h):
    """A loop over a statistic of the activations (so of trainable variables) whose output only
    feeds a comparison: no gradient passes through it."""
    _, s = tf.while_loop(lambda i, s: i < 3, lambda i, s: (i + 1, s * 0.9), [0, tf.reduce_max(h)])
    gate = tf.cast(s > 0.0, tf.float32)
    return tf.nn.relu(m.conv(h, m.a)) * (1.0 + gate)


MIDDLES = {
    "cf_cond_const": (_cond_const, "a tf.cond on LogicalNot(Equal(2, 3)) (If, branch with ELU)"),
    "cf_cond_custom": (_cond_custom, "a tf.cond on tf.constant(True) (If, branch with SiLU)"),
    "cf_case_const": (_case_const, "a tf.switch_case on a constant (Case, nested constant cond)"),
    "cf_cond_input": (_cond_input, "a tf.cond on reduce_mean(h) > 0.1 over variables (If)"),
    "cf_while_grad": (_while_grad, "a tf.while_loop over a convolution (While on the gradient path)"),
    "cf_while_free": ((_while_free, _while_free_pre), "tf.while_loops off the gradient path (input preprocessing, "
                                   "a gate from a comparison)"),
}

# Op types each fixture must hold in some function of its saved_model.pb.
EXPECTED_OPS = {
    "cf_cond_const": {"If", "StatelessIf"},
    "cf_cond_custom": {"If", "StatelessIf"},
    "cf_case_const": {"Case", "StatelessCase"},
    "cf_cond_input": {"If", "StatelessIf"},
    "cf_while_grad": {"While", "StatelessWhile"},
    "cf_while_free": {"While", "StatelessWhile"},
}


def control_flow_ops(path):
    """The control-flow op types in saved_model.pb (every function of its library)."""
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    gd = sm.meta_graphs[0].graph_def
    nodes = list(gd.node) + [n for f in gd.library.function for n in f.node_def]
    return {n.op for n in nodes if n.op in CONTROL_FLOW}


def make(out, name, seed):
    """Saves fixture `name` under `out`; (weights holder, metadata) as make_fixtures.py wants."""
    mid, what = MIDDLES[name]
    mid, pre = mid if isinstance(mid, tuple) else (mid, None)
    module = _Net(np.random.default_rng(seed), mid, pre)
    path = os.path.join(out, name)
    if os.path.exists(path):
        shutil.rmtree(path)
    tf.saved_model.save(module, path,
                        signatures={SIGNATURE: module.__call__.get_concrete_function()})
    found = control_flow_ops(path)
    assert found & EXPECTED_OPS[name], (name, found)
    weights = types.SimpleNamespace(weights=module.variables,
                                    trainable_weights=module.trainable_variables)
    return weights, dict(
        description="A conv net through %s, random init." % what,
        input_key="images",
        output_key="embedding",
        input_shape=[None, 32, 32, 3],
        output_shape=[None, 16],
        output_dim=16,
        test_input_shape=[2, 32, 32, 3],
        control_flow_ops=sorted(found),
        provenance="Generated by scripts/make_fixtures.py (TensorFlow %s, seed %d)."
        % (tf.__version__, seed),
        license="Apache-2.0 (generated by this project's scripts; random weights)",
    )
