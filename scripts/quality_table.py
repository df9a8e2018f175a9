"""Prints the quality-benchmark table (markdown) from pretext run reports and the Python
reference's result files.

    quality_table.py --pretext RUN_DIR... --python RESULT.json...
"""
import argparse
import json
import os


def trained(sel):
    """pretext's model.train_vars as a table cell: all, regex `P` or last N layers."""
    if isinstance(sel, dict) and "regex" in sel:
        return f"regex `{sel['regex']}`".replace("|", "\\|")
    if isinstance(sel, dict) and "last_layers" in sel:
        return f"last {sel['last_layers']} layers"
    return str(sel)


def head_cell(kind, decoder=None):
    """A head kind, with the DAE's decoder when it says one."""
    return f"{kind} ({decoder} decoder)" if decoder else kind


def retain_cell(cfg):
    """pretext's retain term as a table cell: kind and weight, or none."""
    if not cfg or cfg.get("kind", "none") == "none":
        return "none"
    return f"{cfg['kind']} {cfg['weight']:g}"


def off_domain(r):
    """Each off-domain set's kNN change, after minus before (points), and the kept step."""
    before = {x["set"]: x["knn_top1"] for x in r["eval_before"].get("retain", [])}
    cells = [f"{os.path.basename(x['set'])} {100 * (x['knn_top1'] - before[x['set']]):+.1f}"
             for x in r["eval_after"].get("retain", []) if x["set"] in before]
    kept = f" (kept step {r['kept_step']})" if r.get("kept_step") is not None else ""
    return (", ".join(cells) or "–") + kept


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretext", nargs="*", default=[])
    ap.add_argument("--python", nargs="*", default=[])
    a = ap.parse_args()
    print("| engine | head | size | batch | BN | variables trained | retain | kNN before | kNN after | "
          "linear probe after | off-domain kNN change | minutes | steps | images/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d in a.pretext:
        r = json.load(open(os.path.join(d, "report.json")))
        c = r["config"]
        print(f"| pretext | {head_cell(c['head']['kind'], c['head'].get('decoder'))} | {c['model']['size']} | {c['train']['batch']} | "
              f"{c['model']['bn']} | {trained(c['model'].get('train_vars', 'all'))} | "
              f"{retain_cell(c.get('retain'))} | "
              f"{r['eval_before']['knn_top1']:.4f} | {r['eval_after']['knn_top1']:.4f} | "
              f"{r['eval_after']['linear_probe']:.4f} | {off_domain(r)} | {r['train_seconds'] / 60:.1f} | {r['steps']} | "
              f"{r['steps'] * c['train']['batch'] / r['train_seconds']:.1f} |")
    for p in a.python:
        r = json.load(open(p))
        regex = r.get("train_vars_regex")
        print(f"| Python TF reference | {head_cell(r.get('head', 'simclr'), (r.get('dae') or {}).get('decoder'))} | {r['size']} | {r['batch']} | {r['bn']} | "
              f"{trained({'regex': regex} if regex else 'all')} | none | "
              f"{r['knn_top1_before']:.4f} | {r['knn_top1_after']:.4f} | – | – | "
              f"{r['train_seconds'] / 60:.1f} | {r['steps']} | {r['images_per_second_overall']:.1f} |")


if __name__ == "__main__":
    main()
