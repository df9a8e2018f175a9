"""Golden values for pretext's optimizer tests, from TF Python's own (Keras 3) optimizers.

Run: .venv/bin/python scripts/golden_optim.py > tests/golden/optim.json
Three steps of each optimizer on two variables with fixed gradients; the Rust tests in
src/optim/ must reproduce every value to 1e-6 relative.
"""
import json

import numpy as np
import tensorflow as tf

CONFIGS = [
    {"kind": "sgd", "learning_rate": 0.1, "momentum": 0.0, "weight_decay": 0.0},
    {"kind": "sgd", "learning_rate": 0.05, "momentum": 0.9, "weight_decay": 0.0},
    {"kind": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    {"kind": "adam", "learning_rate": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-7, "weight_decay": 0.0},
    {"kind": "adamw", "learning_rate": 0.01, "beta1": 0.8, "beta2": 0.99, "epsilon": 1e-6, "weight_decay": 0.05},
    {"kind": "lars", "learning_rate": 0.5, "momentum": 0.9, "weight_decay": 1e-3, "trust_coefficient": 0.001},
]


def lars_steps(cfg, init, grads):
    """LARS as SimCLR publishes it (You et al. 2017; SimCLR's lars_optimizer.py): L2 weight decay
    added to the gradient, trust ratio eta·‖w‖/‖g‖, heavy-ball momentum; variables of rank ≤ 1
    (biases, batch-norm scale and offset) are excluded from both decay and adaptation."""
    ws = [v.astype(np.float64) for v in init]
    vs = [np.zeros_like(w) for w in ws]
    after = []
    for step in grads:
        for i, g in enumerate(step):
            w, g = ws[i], g.astype(np.float64)
            lr = cfg["learning_rate"]
            if w.ndim > 1:
                g = g + cfg["weight_decay"] * w
                wn, gn = np.linalg.norm(w), np.linalg.norm(g)
                trust = cfg["trust_coefficient"] * wn / gn if wn > 0 and gn > 0 else 1.0
                lr = lr * trust
            vs[i] = cfg["momentum"] * vs[i] + lr * g
            ws[i] = w - vs[i]
        after.append([w.astype(np.float32).tolist() for w in ws])
    return after


def schedule_golden():
    """Warmup + cosine: Keras 3's CosineDecay with linear warmup from 0."""
    cases = []
    for base, warmup, total, alpha in [(0.1, 10, 100, 0.0), (0.3, 5, 40, 0.1)]:
        sched = tf.keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0, decay_steps=total - warmup, alpha=alpha,
            warmup_target=base, warmup_steps=warmup)
        steps = list(range(0, total + 5))
        cases.append({"base": base, "warmup": warmup, "total": total, "alpha": alpha,
                      "lr": [float(sched(s)) for s in steps]})
    return cases


def make(cfg):
    k = cfg["kind"]
    if k == "sgd":
        return tf.keras.optimizers.SGD(learning_rate=cfg["learning_rate"], momentum=cfg["momentum"],
                                       nesterov=cfg.get("nesterov", False),
                                       weight_decay=cfg["weight_decay"] or None)
    if k == "adam":
        return tf.keras.optimizers.Adam(learning_rate=cfg["learning_rate"], beta_1=cfg["beta1"],
                                        beta_2=cfg["beta2"], epsilon=cfg["epsilon"])
    return tf.keras.optimizers.AdamW(learning_rate=cfg["learning_rate"], beta_1=cfg["beta1"],
                                     beta_2=cfg["beta2"], epsilon=cfg["epsilon"],
                                     weight_decay=cfg["weight_decay"])


def main():
    rng = np.random.default_rng(3)
    init = [rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((4,)).astype(np.float32)]
    grads = [[rng.standard_normal(v.shape).astype(np.float32) for v in init] for _ in range(3)]
    out = {"init": [v.tolist() for v in init], "shapes": [list(v.shape) for v in init],
           "grads": [[g.tolist() for g in step] for step in grads], "cases": []}
    for cfg in CONFIGS:
        if cfg["kind"] == "lars":
            out["cases"].append({"config": cfg, "after": lars_steps(cfg, init, grads)})
            continue
        vs = [tf.Variable(v) for v in init]
        opt = make(cfg)
        after = []
        for step in grads:
            opt.apply_gradients([(tf.constant(g), v) for g, v in zip(step, vs)])
            after.append([v.numpy().tolist() for v in vs])
        out["cases"].append({"config": cfg, "after": after})
    out["schedules"] = schedule_golden()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
