#!/usr/bin/env python3
"""Render docs/MODELS.md from the conformance results (tests/conformance.rs writes them).

    models_table.py RESULTS.json > docs/MODELS.md
"""
import json
import sys


def main():
    rows = json.load(open(sys.argv[1]))
    out = ["# Models pretext is checked on", "",
           "The conformance corpus (`scripts/make_conformance.py`): each architecture built with "
           "random weights (batch norms calibrated), saved as a TF-Hub style SavedModel, a "
           "Keras 3 export or a TF1 Hub format module, then checked by `tests/conformance.rs`: "
           "`inspect` finds every op differentiable; the inlined forward equals the original signature (max error over "
           "the output scale); every variable's gradient of sum(output · w) equals "
           "tf.GradientTape's on the loaded model (worst per-variable max error over that "
           "gradient's scale, or a thousandth of the largest gradient's when TF's value is "
           "rounding noise); three training steps of the default experiment (batch 8) run; "
           "TF Python loads the export and computes what pretext computed. `make test` runs the "
           "fast half (marked ⚡); `make conformance` runs all and writes this page.", "",
           "| model | input | ops | passes (nodes) | forward err | vs TF Python | grad err (vars) "
           "| losses (step 1 → 3) | time: inspect / check / train+export | ok |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        passes = ", ".join("%s %d" % (k, v) for k, v in sorted(r["passes"].items())) or "none"
        losses = ("%.4g → %.4g" % tuple(r["losses"])) if r["losses"] else "failed"
        s = r["seconds"]
        out.append("| %s | %s | %d | %s | %.1e | %.1e | %.1e (%d) | %s | %.0f / %.0f / %.0f s | %s |" % (
            r["name"] + (" ⚡" if r.get("set") == "fast" else ""), "×".join(str(d) for d in r["input"][1:]), r["ops"], passes,
            r["forward_rel_err"], r["forward_vs_python_rel_err"], r["grad_max_rel_err"],
            r["vars_compared"], losses, s["inspect"], s["forward_and_gradients"],
            s["train_3_steps_and_export"], "yes" if r["ok"] else "**no**"))
    out += ["", "What each model is:", ""]
    out += ["- **%s**: %s" % (r["name"], r["description"]) for r in rows]
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
