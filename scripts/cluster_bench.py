#!/usr/bin/env python3
"""`make bench-cluster`: the per-step cost of TF's distributed runtime on loopback.

    cluster_bench.py [--model DIR] [--images DIR] [--batch 24] [--steps 25] [--workers 1,2,3]

A benchmark, not a test: it times and prints, it asserts nothing. For each worker count k it
times the same training step (DAE head, frozen batch norm, global batch --batch) twice, side by
side in one run, with `pretext bench` (steady-state images/s after 3 untimed steps):

  local    one process, the tower replicated on k CPU devices (`train.devices`);
  cluster  the chief and k `pretext worker` processes on loopback, one tower per worker, the
           gradients summed on the chief (beside the variables);
  ring     the same cluster, the gradients all-reduced among the workers with TF's collective
           ops (`train.gradient_reduce: collective`); the chief receives one sum.

The graphs are the same; what differs is TF's gRPC transport (serialising tensors, the RPCs of
each step) and k + 1 processes sharing this machine's cores. The bytes a step moves over the
chief's link are counted from the model (variables the towers read, gradients of the ones that
train) and the input shares; docs/DISTRIBUTED.md turns them into expected times per network.
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
    cmd = [BIN, "bench", "--model", args.model, "--images", args.images, "--head", "dae",
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
            cl = bench(args, ["--set", f"cluster={spec}"], os.path.join(tmp, f"cluster{k}.json"))
            ring = ["--set", f"cluster={spec}", "--set", "train.gradient_reduce=collective"]
            rg = bench(args, ring, os.path.join(tmp, f"ring{k}.json"))
        finally:
            for w in workers:
                w.kill()
                w.wait()
        side = lo.get("size", 96)
        shares = args.batch * side * side * 3 * 4
        moved = k * (total + trainable) + shares
        # The ring: variables out to every worker, one all-reduced gradient back.
        moved_ring = k * total + trainable + shares
        rows.append((k, lo, cl, rg, moved, moved_ring))
    print(f"model {os.path.basename(args.model)}: {total / 1e6:.1f} MB of variables, {trainable / 1e6:.1f} MB "
          f"train; DAE, global batch {args.batch}, {args.steps} steps (3 untimed); "
          f"{os.cpu_count()} cores shared by every process\n")
    print("| workers | local: s/step (k devices, one process) | cluster: s/step (chief + k workers) | "
          "overhead per step | cluster / local | ring all-reduce: s/step | ring / cluster | "
          "MB over the chief's link per step (summed on the chief / ring) |")
    print("|---|---|---|---|---|---|---|---|")
    for k, lo, cl, rg, moved, moved_ring in rows:
        a, b, c = lo["step_seconds"], cl["step_seconds"], rg["step_seconds"]
        print(f"| {k} | {a:.3f} | {b:.3f} | {1000 * (b - a):+.0f} ms | {b / a:.2f} | {c:.3f} | "
              f"{c / b:.2f} | {moved / 1e6:.1f} / {moved_ring / 1e6:.1f} |")


if __name__ == "__main__":
    main()
