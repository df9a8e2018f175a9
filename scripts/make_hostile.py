#!/usr/bin/env python3
"""Make SavedModels that write a file when TensorFlow runs them: the audit's test fixtures.

    make_hostile.py --out OUTDIR

Each writes a canary file named by a *relative* path (so it lands in the directory the loading
process runs in; tests/audit.rs runs pretext in a temporary directory and looks for it):
  writes_in_init     a resource whose initializer (run by __saved_model_init_op at load time)
                     calls tf.io.write_file("pretext_canary_init.txt")
  writes_in_serving  serving_default calls tf.io.write_file("pretext_canary_serving.txt")
  writes_in_nested   serving_default calls a nested tf.function that writes
                     "pretext_canary_nested.txt"
Each also computes a small dense output from a variable, so it is otherwise an ordinary model.
"""
import argparse
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

SPEC = tf.TensorSpec([None, 8, 8, 3], tf.float32)


class Canary(tf.saved_model.experimental.TrackableResource):
    """A resource whose initializer writes the canary file."""

    def _create_resource(self):
        return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="canary_resource")

    def _initialize(self):
        tf.io.write_file("pretext_canary_init.txt", "written at load time")
        return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1.0)


class Base(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(tf.random.stateless_normal([3, 4], seed=[1, 2]), name="w")

    def out(self, x):
        return {"output": tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.w)}


class WritesInInit(Base):
    def __init__(self):
        super().__init__()
        self.canary = Canary()

    @tf.function(input_signature=[SPEC])
    def __call__(self, x):
        return self.out(x)


class WritesInServing(Base):
    @tf.function(input_signature=[SPEC])
    def __call__(self, x):
        tf.io.write_file("pretext_canary_serving.txt", "written by the serving function")
        return self.out(x)


@tf.function
def nested_write(x):
    tf.io.write_file("pretext_canary_nested.txt", "written by a nested function")
    return x


class WritesInNested(Base):
    @tf.function(input_signature=[SPEC])
    def __call__(self, x):
        return self.out(nested_write(x))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cwd = os.getcwd()
    for name, cls in [("writes_in_init", WritesInInit), ("writes_in_serving", WritesInServing),
                      ("writes_in_nested", WritesInNested)]:
        path = os.path.abspath(os.path.join(a.out, name))
        if os.path.exists(path):
            shutil.rmtree(path)
        m = cls()
        # Saving traces the functions (and may run initializers): do it where a stray canary
        # does no harm, then remove it.
        scratch = os.path.join(os.path.abspath(a.out), ".scratch")
        os.makedirs(scratch, exist_ok=True)
        os.chdir(scratch)
        try:
            tf.saved_model.save(m, path, signatures={"serving_default": m.__call__.get_concrete_function()})
        finally:
            os.chdir(cwd)
            shutil.rmtree(scratch, ignore_errors=True)
        print("%-18s %s" % (name, path))


if __name__ == "__main__":
    main()
