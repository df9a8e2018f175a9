"""Test oracle: does tensorflow_hub's own hub.Module load pretext's export of a TF1 Hub module,
with each graph variant, and compute what pretext computed?

    check_tf1_hub.py --export DIR --original DIR --input IN.bin --shape N,H,W,C [--key default]
                     --expected TAGS=OUT.bin [--expected TAGS=OUT.bin ...]

TAGS is a comma-separated tag set ("" for the untagged variant). Checks, exiting non-zero with a
message on the first failure:
 1. saved_model.pb and tfhub_module.pb of the export are byte-identical to the original's;
 2. the export's checkpoint holds the same keys, dtypes and shapes as the original's;
 3. for each TAGS: hub.Module(export, tags=TAGS) computes OUT.bin (the `default` signature's
    output KEY) on IN.bin, within 1e-5 of the output scale;
 4. the original module computes something else (the export carries the trained weights), and
    the batch-norm moving statistics changed (the UPDATE_OPS ran).
"""
import argparse
import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# tensorflow_hub 0.15 imports tf.estimator, gone from TF >= 2.16 (see make_tf1_hub.py).
sys.modules.setdefault("tensorflow.compat.v1.estimator", types.SimpleNamespace(
    Exporter=object, ModeKeys=types.SimpleNamespace(PREDICT="infer")))
import tensorflow_hub as hub  # noqa: E402

tf1 = tf.compat.v1


def run(path, tags, x, key):
    with tf1.Graph().as_default():
        m = hub.Module(path, tags=tags)
        y = m(tf.constant(x), signature="default", as_dict=True)[key]
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            return s.run(y)


def same_file(a, b, name):
    if open(os.path.join(a, name), "rb").read() != open(os.path.join(b, name), "rb").read():
        sys.exit(f"FAIL: {name} of the export is not byte-identical to the original's")


def main():
    ap = argparse.ArgumentParser()
    for a in ["export", "original", "input", "shape"]:
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--expected", action="append", required=True)
    ap.add_argument("--key", default="default")
    a = ap.parse_args()
    for f in ["saved_model.pb", "tfhub_module.pb"]:
        same_file(a.export, a.original, f)
    ckpt = lambda d: os.path.join(d, "variables", "variables")  # noqa: E731
    new, old = tf.train.load_checkpoint(ckpt(a.export)), tf.train.load_checkpoint(ckpt(a.original))
    keys = lambda r: {k: (r.get_variable_to_dtype_map()[k], tuple(s))  # noqa: E731
                      for k, s in r.get_variable_to_shape_map().items()}
    if keys(new) != keys(old):
        sys.exit(f"FAIL: checkpoint keys differ: {sorted(keys(new))} vs {sorted(keys(old))}")
    print(f"checkpoint: {len(keys(new))} keys, same names, dtypes and shapes")
    moving = [k for k in keys(new) if "moving_" in k]
    changed = [k for k in moving if np.any(new.get_tensor(k) != old.get_tensor(k))]
    print(f"moving statistics changed: {len(changed)} of {len(moving)}")
    if moving and len(changed) != len(moving):
        sys.exit(f"FAIL: moving statistics unchanged: {sorted(set(moving) - set(changed))}")
    shape = [int(s) for s in a.shape.split(",")]
    x = np.fromfile(a.input, dtype="<f4").reshape(shape)
    for spec in a.expected:
        tags_s, path = spec.split("=", 1)
        tags = {t for t in tags_s.split(",") if t}
        want = np.fromfile(path, dtype="<f4")
        got = run(a.export, tags, x, a.key).reshape(-1)
        err = float(np.max(np.abs(got - want)))
        tol = 1e-5 * max(1.0, float(np.max(np.abs(want))))
        print(f"hub.Module(tags={sorted(tags)}): max |python - rust| = {err:.3e} (bound {tol:.1e})")
        if err > tol:
            sys.exit(f"FAIL: hub.Module(tags={sorted(tags)}) differs from pretext by {err}")
        moved = float(np.max(np.abs(run(a.original, tags, x, a.key).reshape(-1) - want)))
        print(f"  original module: max |original - trained| = {moved:.3e}")
        if moved <= 1e-4:
            sys.exit(f"FAIL: tags {sorted(tags)}: the export computes what the original did")
    print("export OK")


if __name__ == "__main__":
    main()
