#!/usr/bin/env python3
"""Which Conv2D shapes does TF's oneDNN fail to differentiate? (the sweep behind graph::unstride)

    onednn_conv_probe.py [--quick] [--isa DEFAULT AVX2 ...] [--out DIR]

For each convolution shape (kernel, stride, padding, input side, input channels) it computes the
gradients of sum(y * sin(y)), y = conv2d(x, W), with respect to W (Conv2DBackpropFilter) and x
(Conv2DBackpropInput) in a tf.function, once with oneDNN off (the reference) and once with it on
for each oneDNN ISA cap asked (ONEDNN_MAX_CPU_ISA: DEFAULT is the machine's own; AVX2 shows what
an AVX2-only CPU gets). Runs with oneDNN on use glibc's malloc checks (libc_malloc_debug), so
heap corruption aborts instead of passing silently. A shape that kills the process is reported
as CRASH with the signal; one whose gradients differ from the reference by more than 1e-4
(relative to the largest) as WRONG. Each shape runs in a child process, restarted after a crash.

`--rewrite` applies pretext's rewrite (1x1 stride-s convolution -> strided slice + stride-1
convolution) to every 1x1 strided shape first: every row must then pass.
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile

MALLOC_DEBUG = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"


def shapes(quick):
    kernels = [(1, 1), (3, 3), (1, 3), (3, 1), (2, 2), (5, 5), (7, 7)]
    strides = [(1, 1), (2, 2), (2, 1), (1, 2), (3, 3), (4, 4)]
    sides = [15, 16, 56, 57] if not quick else [16, 56]
    out = []
    for (kh, kw), (sh, sw), pad, h, cin in itertools.product(
            kernels, strides, ["SAME", "VALID"], sides, [3, 4, 8, 16, 24, 64]):
        if (kh, kw) != (1, 1) and (cin not in (3, 16) or h not in (16, 57)):
            continue
        if quick and ((kh, kw) not in ((1, 1), (3, 3)) or cin not in (4, 8, 64)):
            continue
        out.append(dict(n=2, h=h, w=h, cin=cin, cout=16, kh=kh, kw=kw, sh=sh, sw=sw, pad=pad))
    return out


def child(cfg_path, start, out, rewrite):
    """Runs shapes from index `start`, printing START/OK lines; saves gradients as .npz."""
    import numpy as np
    import tensorflow as tf
    cfgs = json.load(open(cfg_path))
    for i in range(start, len(cfgs)):
        c = cfgs[i]
        print("START", i, flush=True)
        rng = np.random.default_rng(i)
        x = tf.Variable(rng.standard_normal((c["n"], c["h"], c["w"], c["cin"])).astype(np.float32))
        f = tf.Variable(rng.standard_normal((c["kh"], c["kw"], c["cin"], c["cout"])).astype(np.float32))
        strides = [1, c["sh"], c["sw"], 1]
        unstride = rewrite and (c["kh"], c["kw"]) == (1, 1) and strides != [1, 1, 1, 1]

        @tf.function
        def grads():
            with tf.GradientTape() as t:
                if unstride:
                    y = tf.nn.conv2d(x[:, ::c["sh"], ::c["sw"], :], f, 1, "VALID")
                else:
                    y = tf.nn.conv2d(x, f, strides=strides, padding=c["pad"])
                loss = tf.reduce_sum(y * tf.sin(y))
            return t.gradient(loss, [f, x])

        for _ in range(2):
            gf, gx = grads()
        np.savez(os.path.join(out, "%d.npz" % i), gf=gf.numpy(), gx=gx.numpy())
        print("OK", i, flush=True)


def sweep(cfg_path, n, out, env, rewrite):
    """Runs every shape in children (restarting after each crash); shape index -> outcome."""
    os.makedirs(out, exist_ok=True)
    res, i = {}, 0
    while i < n:
        args = [sys.executable, __file__, "--child", cfg_path, str(i), out]
        if rewrite:
            args.append("--rewrite")
        p = subprocess.run(args, env=env, capture_output=True, text=True)
        cur = None
        for line in p.stdout.splitlines():
            tag, k = line.split()[:2]
            cur = int(k) if tag == "START" else None
            if tag == "OK":
                res[int(k)] = "ok"
        if p.returncode == 0:
            break
        if cur is None:
            sys.exit("child failed outside a shape (%d): %s" % (p.returncode, p.stderr[-2000:]))
        lines = [l for l in p.stderr.splitlines() if l.strip() and "port.cc" not in l]
        res[cur] = "CRASH (%s) %s" % (p.returncode, lines[-1][:80] if lines else "")
        i = cur + 1
    return res


def compare(a, b):
    import numpy as np
    x, y = np.load(a), np.load(b)
    rel = lambda k: float(np.abs(x[k] - y[k]).max() / (np.abs(y[k]).max() + 1e-30))
    return max(rel("gf"), rel("gx"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="1x1 and 3x3 kernels, 4/8/64 channels")
    ap.add_argument("--isa", nargs="+", default=["DEFAULT", "AVX2"])
    ap.add_argument("--rewrite", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.child:
        return child(a.child[0], int(a.child[1]), a.child[2], a.rewrite)
    out = a.out or tempfile.mkdtemp(prefix="onednn_probe_")
    cfgs = shapes(a.quick)
    cfg_path = os.path.join(out, "shapes.json")
    os.makedirs(out, exist_ok=True)
    json.dump(cfgs, open(cfg_path, "w"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "ONEDNN_"))}
    base["TF_CPP_MIN_LOG_LEVEL"] = "2"
    ref = sweep(cfg_path, len(cfgs), os.path.join(out, "off"), dict(base, TF_ENABLE_ONEDNN_OPTS="0"),
                a.rewrite)
    runs = {}
    for isa in a.isa:
        env = dict(base, TF_ENABLE_ONEDNN_OPTS="1", ONEDNN_MAX_CPU_ISA=isa)
        if os.path.exists(MALLOC_DEBUG):
            env.update(LD_PRELOAD=MALLOC_DEBUG, MALLOC_CHECK_="3")
        runs[isa] = sweep(cfg_path, len(cfgs), os.path.join(out, isa), env, a.rewrite)
    bad = 0
    print("| kernel | stride | padding | input | channels | " + " | ".join(a.isa) + " |")
    print("|---|---|---|---|---|" + "---|" * len(a.isa))
    for i, c in enumerate(cfgs):
        cells = []
        for isa in a.isa:
            r = runs[isa].get(i, "?")
            if r == "ok" and ref.get(i) == "ok":
                e = compare(os.path.join(out, isa, "%d.npz" % i), os.path.join(out, "off", "%d.npz" % i))
                r = "ok %.0e" % e if e <= 1e-4 else "WRONG %.1e" % e
            cells.append(r)
        if any(not x.startswith("ok") for x in cells):
            bad += 1
        print("| %dx%d | %dx%d | %s | %dx%d | %d | %s |" % (
            c["kh"], c["kw"], c["sh"], c["sw"], c["pad"], c["h"], c["w"], c["cin"], " | ".join(cells)))
    print("\n%d of %d shapes fail under some ISA (outputs in %s)" % (bad, len(cfgs), out))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
