"""Reference gradient of pretext's feature-distillation term in TF Python, written from its
definition (not from pretext's graph).

Run: .venv/bin/python scripts/reference/retain.py DIR
    (tests/retain/ dumps DIR: `cargo test --release --test retain`, with the PRETEXT_*
    environment of `make test`; PRETEXT_PYTHON picks the interpreter)

DIR/manifest.json names the SavedModel, its output key, the input batch the online tower saw
(raw little-endian float32 `input.bin`), the term's weight and kind (cosine | mse), and for each
model variable pretext perturbed: its handle name (the saved graph's node that the serving call
captures) and the perturbed value (`var_<i>.bin`).

The script loads the SavedModel, embeds the batch with the original weights (z0: the frozen
copy), assigns the perturbed values, embeds it again under a GradientTape (z) and prints one JSON
line: {"term": weight * D(z, z0), "grads": {handle: [...]}}, D = mean_i(1 - cos(z_i, z0_i)) or
mean((z - z0)^2); rank-4 outputs are average-pooled over H, W first, as pretext pools them.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from golden import all_variables, top_level_call  # noqa: E402


def read(d, entry):
    a = np.fromfile(os.path.join(d, entry["file"]), dtype="<f4")
    return a.reshape(entry["shape"])


def main():
    d = sys.argv[1]
    with open(os.path.join(d, "manifest.json")) as f:
        m = json.load(f)
    loaded = tf.saved_model.load(m["model"])
    fn = loaded.signatures["serving_default"]
    in_key = list(fn.structured_input_signature[1].keys())[0]
    out_key = m["output_key"]
    _, node_inputs, n_sig = top_level_call(m["model"], out_key)
    by_handle = {id(v.handle): v for v in all_variables(loaded)}
    by_name = {}
    for h, name in zip(fn.captured_inputs, node_inputs[n_sig:]):
        if h.dtype == tf.resource and id(h) in by_handle:
            by_name[name] = by_handle[id(h)]
    x = tf.constant(read(d, m["input"]))

    def embed():
        z = fn(**{in_key: x})[out_key]
        if len(z.shape) == 4:
            z = tf.reduce_mean(z, axis=[1, 2])
        return tf.cast(z, tf.float64)

    z0 = embed()
    perturbed = []
    for v in m["vars"]:
        var = by_name[v["handle"]]
        var.assign(read(d, v))
        perturbed.append((v["handle"], var))
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        for _, var in perturbed:
            tape.watch(var)
        z = embed()
        if m["loss"] == "cosine":
            def unit(a):
                return a * tf.math.rsqrt(tf.maximum(tf.reduce_sum(a * a, 1, keepdims=True), 1e-12))
            dist = tf.reduce_mean(1.0 - tf.reduce_sum(unit(z) * unit(z0), 1))
        else:
            dist = tf.reduce_mean(tf.square(z - z0))
        term = m["weight"] * dist
    grads = tape.gradient(term, [v for _, v in perturbed])
    out = {"term": float(term.numpy()), "grads": {}}
    for (name, _), g in zip(perturbed, grads):
        out["grads"][name] = [] if g is None else g.numpy().astype(np.float64).ravel().tolist()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
