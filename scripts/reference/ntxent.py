"""Reference NT-Xent (SimCLR) loss in TF Python, written independently of pretext's graph.

Run: .venv/bin/python scripts/reference/ntxent.py > tests/golden/ntxent.json
For each case: paired embeddings z1, z2 (N×D) and a temperature; the loss is the mean over the
2N embeddings of the cross entropy of picking the partner among the other 2N − 1 (cosine
similarity / temperature), as in Chen et al. 2020.
"""
import json

import numpy as np
import tensorflow as tf


def nt_xent(z1, z2, tau):
    z = tf.math.l2_normalize(tf.concat([z1, z2], 0), axis=1)
    n = z1.shape[0]
    sim = tf.matmul(z, z, transpose_b=True) / tau
    sim = tf.where(tf.eye(2 * n, dtype=tf.bool), tf.constant(-np.inf, tf.float32), sim)
    labels = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], 0)
    return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, sim)))


def main():
    rng = np.random.default_rng(21)
    cases = []
    for n, d, tau in [(4, 6, 0.2), (8, 16, 0.5), (3, 5, 1.0)]:
        z1 = rng.standard_normal((n, d)).astype(np.float32)
        z2 = (z1 + 0.5 * rng.standard_normal((n, d))).astype(np.float32)
        cases.append({"z1": z1.tolist(), "z2": z2.tolist(), "temperature": tau, "loss": nt_xent(z1, z2, tau)})
    print(json.dumps({"cases": cases}, indent=1))


if __name__ == "__main__":
    main()
