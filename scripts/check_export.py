"""Test oracle: does TensorFlow itself load pretext's export and compute what pretext computed?

    check_export.py --export DIR --original DIR --input IN.bin --shape N,H,W,C
                    --expected OUT.bin --key OUTPUT_KEY

Checks, exiting non-zero with a message on the first failure:
 1. tf.saved_model.load(export).signatures["serving_default"] reproduces OUT.bin (≤ 1e-5 of
    the output scale, max(1, max |OUT|): kernels fused differently round differently);
 2. `saved_model_cli run` on the export reproduces it too (same bound);
 3. the original model's output differs (the export carries the trained weights);
 4. saved_model.pb of the export is byte-identical to the original's.
"""
import argparse
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def run(model_dir, x, key):
    sig = tf.saved_model.load(model_dir).signatures["serving_default"]
    in_key = list(sig.structured_input_signature[1].keys())[0]
    return sig(**{in_key: tf.constant(x)})[key].numpy(), in_key


def main():
    ap = argparse.ArgumentParser()
    for a in ["export", "original", "input", "shape", "expected", "key"]:
        ap.add_argument("--" + a, required=True)
    a = ap.parse_args()
    shape = [int(s) for s in a.shape.split(",")]
    x = np.fromfile(a.input, dtype="<f4").reshape(shape)
    expected = np.fromfile(a.expected, dtype="<f4")
    got, in_key = run(a.export, x, a.key)
    err = float(np.max(np.abs(got.reshape(-1) - expected)))
    tol = 1e-5 * max(1.0, float(np.max(np.abs(expected))))
    print(f"tf.saved_model.load: max |python - rust| = {err:.3e} (bound {tol:.1e})")
    if err > tol:
        sys.exit(f"FAIL: tf.saved_model.load output differs from pretext's by {err}")
    with tempfile.TemporaryDirectory() as d:
        np.save(os.path.join(d, "x.npy"), x)
        cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
        subprocess.run([cli, "run", "--dir", a.export, "--tag_set", "serve", "--signature_def",
                        "serving_default", "--inputs", f"{in_key}={os.path.join(d, 'x.npy')}",
                        "--outdir", d], check=True, capture_output=True)
        cli_out = np.load(os.path.join(d, a.key + ".npy"))
    err_cli = float(np.max(np.abs(cli_out.reshape(-1) - expected)))
    print(f"saved_model_cli run: max |cli - rust| = {err_cli:.3e}")
    if err_cli > tol:
        sys.exit(f"FAIL: saved_model_cli output differs from pretext's by {err_cli}")
    orig, _ = run(a.original, x, a.key)
    moved = float(np.max(np.abs(orig.reshape(-1) - expected)))
    print(f"original model: max |original - trained| = {moved:.3e}")
    if moved <= 1e-4:
        sys.exit("FAIL: the export's output equals the original model's: weights did not change")
    same = open(os.path.join(a.export, "saved_model.pb"), "rb").read() == open(
        os.path.join(a.original, "saved_model.pb"), "rb").read()
    if not same:
        sys.exit("FAIL: saved_model.pb of the export is not the original's")
    print("export OK")


if __name__ == "__main__":
    main()
