#!/usr/bin/env python3
"""`make bench-cluster`: the per-step cost of TF's distributed runtime on loopback.

    cluster_bench.py [--model DIR] [--images DIR] [--head simclr] [--batch 24] [--steps 25]
                     [--workers 1,2,3]

A benchmark, not a test: it times and prints, it asserts nothing. For each worker count k it
times the same training step (SimCLR head by default: two augmented views per image; frozen
batch norm; global batch --batch) four ways, side by side in one run, with `pretext bench`
(steady-state s/step after 3 untimed steps, the input pipeline included):

  local    one process, the tower replicated on k CPU devices (`train.devices`);
  chief    the chief and k `pretext worker` processes on loopback, one tower per worker, the
           chief reading every batch (`cluster.input: chief`), the gradients summed on the chief;
  workers  the same cluster, each worker reading its own shard (`cluster.input: workers`, the
           default): the images never reach the chief;
  ring     as workers, the gradients all-reduced among the workers with TF's collective ops
           (`train.gradient_reduce: collective`); the chief receives one sum.

The graphs are the same; what differs is TF's gRPC transport (serialising tensors, the RPCs of
each step), where images are decoded, and k + 1 processes sharing this machine's cores. The
bytes a step moves over the chief's link are counted from the model (variables the towers read,
gradients of the ones that train) and the image shares; docs/DISTRIBUTED.md turns them into
expected times per network.
No TF variable is set for pretext (the environment users have).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "pretext")
UNSET = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG")


def env():
    return {k: v for k, v in os.environ.items() if k not in UNSET}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def variable_bytes(model):
    """(bytes of every variable, bytes of the trainable ones) of a SavedModel, as `pretext
    inspect` counts them (float32 parameters)."""
    r = subprocess.run([BIN, "inspect", model], env=env(), capture_output=True, text=True, check=True)
    line = next(l for l in r.stdout.splitlines() if l.startswith("variables:"))
    # "variables: 260 (2257984 parameters); trainable: 156 (2223872 parameters)"
    nums = [int(w.strip("(")) for w in line.replace(";", " ").split() if w.strip("(").isdigit()]
    return 4 * nums[1], 4 * nums[3]


def bench(args, extra, out):
    cmd = [BIN, "bench", "--model", args.model, "--images", args.images, "--head", args.head,
           "--bn", "frozen", "--batch", str(args.batch), "--steps", str(args.steps),
           "--untimed-steps", "3", "--json", out] + extra
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    with open(out) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, ".cache", "bench_fixtures", "mobilenet_v2_100"))
    ap.add_argument("--images", default=os.path.join(ROOT, ".cache", "images"))
    ap.add_argument("--head", default="simclr")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--workers", default="1,2,3")
    args = ap.parse_args()
    counts = [int(k) for k in args.workers.split(",")]
    tmp = tempfile.mkdtemp(prefix="cluster-bench-")
    total, trainable = variable_bytes(args.model)
    rows = []
    for k in counts:
        local = [f"/device:CPU:{i}" for i in range(k)]
        lo = bench(args, ["--devices", ",".join(local)], os.path.join(tmp, f"local{k}.json"))
        ports = [free_port() for _ in range(k + 1)]
        cluster = {"chief": [f"localhost:{ports[0]}"], "worker": [f"localhost:{p}" for p in ports[1:]]}
        spec = json.dumps(cluster)
        workers = [subprocess.Popen([BIN, "worker", "--cluster", spec, "--task", str(i)], env=env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(k)]
        try:
            on = ["--set", f"cluster={spec}"]
            ch = bench(args, on + ["--set", "cluster.input=chief"], os.path.join(tmp, f"chief{k}.json"))
            cl = bench(args, on, os.path.join(tmp, f"cluster{k}.json"))
            ring = on + ["--set", "train.gradient_reduce=collective"]
            rg = bench(args, ring, os.path.join(tmp, f"ring{k}.json"))
        finally:
            for w in workers:
                w.kill()
                w.wait()
        side = lo.get("size", 96)
        # The images the towers take: one tensor per view (SimCLR: two), float32.
        views = 2 if args.head in ("simclr", "moco", "byol") else 1
        shares = views * args.batch * side * side * 3 * 4
        moved = k * (total + trainable)
        # The ring: variables out to every worker, one all-reduced gradient back.
        moved_ring = k * total + trainable
        rows.append((k, lo, ch, cl, rg, moved + shares, moved, moved_ring))
    print(f"model {os.path.basename(args.model)}: {total / 1e6:.1f} MB of variables, {trainable / 1e6:.1f} MB "
          f"train; {args.head}, global batch {args.batch}, {args.steps} steps (3 untimed); "
          f"{os.cpu_count()} cores shared by every process\n")
    print("| workers | local: s/step (k devices, one process) | chief reads: s/step | workers read: s/step | "
          "workers read / local | workers / chief reads | ring all-reduce: s/step | ring / workers | "
          "MB over the chief's link per step (chief reads / workers read / ring) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, lo, ch, cl, rg, m_ch, moved, moved_ring in rows:
        a, h, b, c = lo["step_seconds"], ch["step_seconds"], cl["step_seconds"], rg["step_seconds"]
        print(f"| {k} | {a:.3f} | {h:.3f} | {b:.3f} | {b / a:.2f} | {b / h:.2f} | {c:.3f} | "
              f"{c / b:.2f} | {m_ch / 1e6:.1f} / {moved / 1e6:.1f} / {moved_ring / 1e6:.1f} |")


if __name__ == "__main__":
    main()
