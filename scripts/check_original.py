"""Test oracle for the crash trials: does TensorFlow load each model directory and compute the
original model's golden output?

    check_original.py --golden .cache/fixtures/golden/tiny_cnn MODEL_DIR...

Prints one JSON line: {"MODEL_DIR": max |output - golden| or "error: ...", ...}.
"""
import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", required=True)
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    idx = json.load(open(os.path.join(a.golden, "index.json")))
    x = np.fromfile(os.path.join(a.golden, "input.bin"), dtype="<f4").reshape(idx["input_shape"])
    want = np.fromfile(os.path.join(a.golden, "output.bin"), dtype="<f4")
    out = {}
    for m in a.models:
        try:
            sig = tf.saved_model.load(m).signatures["serving_default"]
            y = sig(**{idx["input_key"]: tf.constant(x)})[idx["output_key"]].numpy().reshape(-1)
            out[m] = float(np.max(np.abs(y - want)))
        except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
            out[m] = f"error: {type(e).__name__}: {e}"[:300]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
