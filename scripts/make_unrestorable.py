"""Fixture for a bad-input test: a Keras 3 model wrapped in a tf.Module and saved with
tf.saved_model.save. Every TF1-style loader (TF Serving's, the C API's, Python's
tf.compat.v1.saved_model.load) loads its graph but cannot restore its variables
(FEASIBILITY §2), so pretext must refuse it with a clear error.

    make_unrestorable.py OUTDIR
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


class Wrapper(tf.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32)])
    def __call__(self, x):
        return {"output": self.model(x, training=False)}


def main():
    keras.utils.set_random_seed(5)
    inp = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(4, 3)(inp)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dense(3)(y)
    w = Wrapper(keras.Model(inp, y))
    tf.saved_model.save(w, sys.argv[1], signatures={"serving_default": w.__call__.get_concrete_function()})


if __name__ == "__main__":
    main()
