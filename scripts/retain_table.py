"""Prints the retention trade-off table (markdown) of `make bench-quality`: for each run
directory (the same recipe with one retain kind and weight), the target set's kNN top-1 before
and after and each off-domain set's (eval.retain), then every evaluation during training.

    retain_table.py RUN_DIR...
"""
import json
import os
import sys


# The bound: every off-domain kNN within one point of the original model's.
ONE_POINT = 0.01


def name(path):
    return os.path.basename(os.path.normpath(path))


def main():
    runs = [(d, json.load(open(os.path.join(d, "report.json")))) for d in sys.argv[1:]]
    if not runs:
        sys.exit("no run directories given")
    sets = [name(r["set"]) for r in runs[0][1]["eval_before"]["retain"]]
    head = "| retain | weight | steps | minutes | target kNN before | after | gain | " + " | ".join(
        f"{s} before | after | change" for s in sets) + " | every set within 1 point |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for d, r in runs:
        c = r["config"].get("retain", {"kind": "none"})
        b, a = r["eval_before"], r["eval_after"]
        cells = [c["kind"], str(c.get("weight", "–")), str(r["steps"]), f"{r['train_seconds'] / 60:.1f}",
                 f"{b['knn_top1']:.4f}", f"{a['knn_top1']:.4f}", f"{a['knn_top1'] - b['knn_top1']:+.4f}"]
        ok = True
        for rb, ra in zip(b["retain"], a["retain"]):
            delta = ra["knn_top1"] - rb["knn_top1"]
            ok &= delta >= -ONE_POINT - 1e-9
            cells += [f"{rb['knn_top1']:.4f}", f"{ra['knn_top1']:.4f}", f"{delta:+.4f}"]
        cells.append("yes" if ok else "no")
        if r.get("kept_step") is not None:
            cells[2] += f" (kept step {r['kept_step']})"
        print("| " + " | ".join(cells) + " |")
    print()
    print("| retain | weight | step | target kNN | " + " | ".join(f"{s} kNN" for s in sets) + " |")
    print("|" + "---|" * (4 + len(sets)))
    for d, r in runs:
        c = r["config"].get("retain", {"kind": "none"})
        for p in r.get("evaluations", []):
            s = p["scores"]
            print(f"| {c['kind']} | {c.get('weight', '–')} | {p['step']} | {s['knn_top1']:.4f} | "
                  + " | ".join(f"{x['knn_top1']:.4f}" for x in s["retain"]) + " |")


if __name__ == "__main__":
    main()
