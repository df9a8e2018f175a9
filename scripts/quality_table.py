"""Prints the quality-benchmark table (markdown) from pretext run reports and the Python
reference's result files.

    quality_table.py --pretext RUN_DIR... --python RESULT.json...
"""
import argparse
import json
import os


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretext", nargs="*", default=[])
    ap.add_argument("--python", nargs="*", default=[])
    a = ap.parse_args()
    print("| engine | head | size | batch | BN | kNN before | kNN after | linear probe after | minutes | steps |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for d in a.pretext:
        r = json.load(open(os.path.join(d, "report.json")))
        c = r["config"]
        print(f"| pretext | {c['head']['kind']} | {c['model']['size']} | {c['train']['batch']} | "
              f"{c['model']['bn']} | {r['eval_before']['knn_top1']:.4f} | {r['eval_after']['knn_top1']:.4f} | "
              f"{r['eval_after']['linear_probe']:.4f} | {r['train_seconds'] / 60:.1f} | {r['steps']} |")
    for p in a.python:
        r = json.load(open(p))
        print(f"| Python TF reference | simclr | {r['size']} | {r['batch']} | {r['bn']} | "
              f"{r['knn_top1_before']:.4f} | {r['knn_top1_after']:.4f} | – | "
              f"{r['train_seconds'] / 60:.1f} | {r['steps']} |")


if __name__ == "__main__":
    main()
