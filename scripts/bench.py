#!/usr/bin/env python3
"""`make bench`: SimCLR training throughput of pretext against the Python TF reference.

    bench.py [--quick] [--only python|pretext] [--sections main,flat,growth]
             [--doc docs/BENCHMARKS.md] [--no-doc] [--force-doc] [--pretext-args "..."]

A benchmark, not a test: it times and reports, it asserts nothing (the targets are figures
to compare against). Runs one process at a time, never two concurrently:

  main    for MobileNetV2 alpha 0.35 (the mobilenet_v2_035 fixture, 96 px, batch 32 and 128) and
          the pretrained MobileNetV2 (nsfwjs_mobilenet_v2, 96 px batch 32, 224 px batch 32 and
          128), no TF environment variable set for either engine: `pretext bench` end to
          end, `pretext bench --from-memory` (one batch made once and fed every step: the pure
          session step) and the Python reference (scripts/reference/simclr_train.py), same steps,
          on .cache/bench_images (1000 JPEG crops of photos, 256-640 px sides).
  flat    pretext end to end on 1k vs 70k Fashion-MNIST images: peak RSS ratio.
  growth  pretext --from-memory step time vs batch (8..128) and vs model size / input size.

Measured by this driver the same way for both engines: time to first step = the engine's
"first_step_unix" minus time.time() taken just before the process was launched; peak RSS =
ru_maxrss of the process from os.wait4. images/s = the engine's own steady-state figure (the
steps after the first --untimed-steps; the Python reference calls them --warmup-steps). Raw JSON per run (the engine's, NAME.json, and this
driver's, NAME.run.json) and logs (NAME.log) go to .cache/bench/ (.cache/bench/quick/ for
--quick). The markdown report is printed, saved as report.md there, and written into
docs/BENCHMARKS.md between <!-- bench:start --> and <!-- bench:end --> (only after a complete
run without failures, unless --force-doc; never for --quick or --only unless --force-doc).
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache")
FIX = os.path.join(CACHE, "fixtures")
BENCH_FIX = os.path.join(CACHE, "bench_fixtures")
BENCH_IMAGES = os.path.join(CACHE, "bench_images")
FMNIST_UNL = os.path.join(CACHE, "fmnist_unl50k")
FMNIST10K = os.path.join(CACHE, "fmnist10k")
FMNIST_1K = os.path.join(CACHE, "bench_fmnist1k")  # 1000 symlinks, made by this driver
REFERENCE = os.path.join(ROOT, "scripts", "reference", "simclr_train.py")

# Both engines run in the environment users have: no TF variable set (any set in the caller's
# environment is removed), each engine's own defaults (pretext: oneDNN on, src/runtime.rs).
ENV: dict = {}
UNSET = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "TF_CPU_ALLOCATOR_USE_BFC", "ONEDNN_MAX_CPU_ISA")


def engine_env():
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(ENV)
    return env
COMMON_KEYS = ["engine", "steps", "batch", "size", "images_per_second", "first_step_unix", "peak_rss_mb"]
PRETEXT_KEYS = ["data_seconds", "session_seconds", "wait_seconds", "graph_build_seconds"]
PRETEXT_FLAGS = ["--json", "--from-memory", "--untimed-steps"]
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"
SECTION = "## Throughput: pretext vs Python TF (`make bench`)"
RUN_TIMEOUT = 1800  # seconds per process

# name -> (directory, description, width multiplier)
MODELS = {
    "mobilenet_v2_035": (os.path.join(FIX, "mobilenet_v2_035"), "MobileNetV2 α 0.35 (random init)", 0.35),
    "mobilenet_v2_050": (os.path.join(BENCH_FIX, "mobilenet_v2_050"), "MobileNetV2 α 0.5 (random init)", 0.5),
    "mobilenet_v2_075": (os.path.join(BENCH_FIX, "mobilenet_v2_075"), "MobileNetV2 α 0.75 (random init)", 0.75),
    "mobilenet_v2_100": (os.path.join(BENCH_FIX, "mobilenet_v2_100"), "MobileNetV2 α 1.0 (random init)", 1.0),
    "nsfwjs_mobilenet_v2": (os.path.join(FIX, "nsfwjs_mobilenet_v2"), "MobileNetV2 α 1.0 (pretrained)", 1.0),
}

# Step counts: each measured phase is ~10-120 s on 2 cores; the whole bench ~15-20 min.
MAIN = [("mobilenet_v2_035", 96, {32: 60, 128: 30}),
        ("nsfwjs_mobilenet_v2", 96, {32: 40}),
        ("nsfwjs_mobilenet_v2", 224, {32: 12, 128: 8})]
FLAT = ("mobilenet_v2_035", 96, 32, 60)
# pretext runs these with `--recompute on` (batch norm recomputed in the backward pass). Empty
# since autodiff::relu_mask: 224 px batch 128 needed it before (it went past 23.5 GiB), and now
# peaks at 17.5 GB without it.
RECOMPUTE_ON: set = set()
GROWTH_BATCH = ("mobilenet_v2_035", 96, {8: 60, 16: 60, 32: 60, 64: 40, 128: 30})
GROWTH_MODEL = (96, 32, 60, ["mobilenet_v2_035", "mobilenet_v2_050", "mobilenet_v2_075",
                             "mobilenet_v2_100", "nsfwjs_mobilenet_v2"])
GROWTH_SIZE = ("nsfwjs_mobilenet_v2", 32, {96: 60, 160: 20, 224: 12})


def warmup_for(steps):
    return max(2, steps // 5) if steps > 3 else 1


def rel(path):
    p = os.path.relpath(path, ROOT)
    return path if p.startswith("..") else p


def fmt(x, nd=1, unit=""):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}{unit}"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def verdict(r, target, le):
    if r is None:
        return "–"
    ok = r <= target if le else r >= target
    return "met" if ok else "**not met**"


# ----------------------------------------------------------------------------- running

class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


class Runner:
    def __init__(self, a, out):
        self.a, self.out = a, out
        self.cache, self.failures, self.commands = {}, [], []
        self.extra = shlex.split(a.pretext_args or "")

    def run(self, engine, model, size, batch, steps, images, data, from_memory=False):
        """One process; returns the merged record or None (failure, reported)."""
        warmup = warmup_for(steps)
        key = (engine, model, size, batch, steps, tuple(images), from_memory)
        if key in self.cache:
            return self.cache[key]
        tag = engine + ("-mem" if from_memory else "")
        name = f"{tag}_{model}_{size}px_b{batch}_{data}_{steps}steps"
        jpath = os.path.join(self.out, name + ".json")
        log = os.path.join(self.out, name + ".log")
        saved = os.path.join(self.out, name + ".run.json")
        if self.a.reuse and os.path.exists(saved):
            rec = json.load(open(saved))
            if "json" in rec and "error" not in rec:
                print(f"[reused] {name}: {rec['images_per_second']:.1f} images/s", flush=True)
                self.commands.append(rec["command"] + "   # reused from an earlier pass")
                self.cache[key] = rec
                return rec
        if os.path.exists(jpath):
            os.remove(jpath)
        mdir = rel(MODELS[model][0])
        if engine == "pretext":
            cmd = [rel(self.a.bin), "bench", "--model", mdir]
            for d in images:
                cmd += ["--images", rel(d)]
            cmd += ["--size", str(size), "--batch", str(batch), "--steps", str(steps), "--head", "simclr",
                    "--untimed-steps", str(warmup), "--json", rel(jpath)]
            cmd += ["--from-memory"] if from_memory else []
            cmd += ["--recompute", "on"] if (model, size, batch) in RECOMPUTE_ON else []
            cmd += self.extra
        else:
            assert not from_memory
            cmd = [rel(self.a.python), rel(REFERENCE), "--model", mdir]
            for d in images:
                cmd += ["--images", rel(d)]
            # lr 3e-4: pretext's default (the value does not change the step's cost)
            cmd += ["--size", str(size), "--batch", str(batch), "--steps", str(steps),
                    "--warmup-steps", str(warmup), "--lr", "3e-4", "--minutes", "600", "--out", rel(jpath)]
        shown = " ".join([f"{k}={v}" for k, v in ENV.items()] + [shlex.join(cmd)])
        self.commands.append(shown)
        print(f"\n[{len(self.commands)}] {shown}", flush=True)

        env = engine_env()
        with open(log, "w") as logf:
            t_launch = time.time()
            p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT)
            old = signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(RUN_TIMEOUT)
            timed_out = False
            try:
                _, status, ru = os.wait4(p.pid, 0)
            except (Timeout, KeyboardInterrupt) as e:
                timed_out = isinstance(e, Timeout)
                p.kill()  # the child we launched, by its pid
                _, status, ru = os.wait4(p.pid, 0)
                if not timed_out:
                    p.returncode = os.waitstatus_to_exitcode(status)
                    raise
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, old)
            t_end = time.time()
        rc = p.returncode = os.waitstatus_to_exitcode(status)
        rec = dict(name=name, engine=engine, model=model, size=size, batch=batch, steps=steps,
                   warmup_steps=warmup, from_memory=from_memory, data=data, images=[rel(d) for d in images],
                   command=shown, launch_unix=t_launch, end_unix=t_end, wall_seconds=t_end - t_launch,
                   exit_code=rc, peak_rss_mb=ru.ru_maxrss / 1024.0, json_path=rel(jpath), log=rel(log))

        def fail(why):
            tail = open(log, errors="replace").read().splitlines()[-15:]
            msg = f"{name}: {why}\n  command: {shown}\n  log: {rel(log)}" + "".join("\n  | " + t for t in tail)
            print("error: " + msg, file=sys.stderr, flush=True)
            self.failures.append(f"{name}: {why}")
            rec["error"] = why
            self._save(rec)
            self.cache[key] = None
            return None

        logtext = open(log, errors="replace").read()
        if timed_out:
            return fail(f"killed after {RUN_TIMEOUT} s (timeout)")
        if rc != 0:
            hint = ""
            if "unexpected argument" in logtext or "unrecognized arguments" in logtext:
                hint = " (the program rejected an argument: does this build have " + \
                       ", ".join(PRETEXT_FLAGS if engine == "pretext" else ["--warmup-steps"]) + "?)"
            if rc == -9 and not timed_out:
                hint += " (SIGKILL: here, the kernel's out-of-memory killer)"
            return fail(f"exit code {rc}{hint}")
        if not os.path.exists(jpath):
            return fail(f"exited 0 but wrote no JSON at {rel(jpath)}"
                        + (" (pretext bench must write it for --json)" if engine == "pretext" else ""))
        try:
            j = json.load(open(jpath))
        except ValueError as e:
            return fail(f"unreadable JSON {rel(jpath)}: {e}")
        need = COMMON_KEYS + (PRETEXT_KEYS if engine == "pretext" and not from_memory else [])
        missing = [k for k in need if j.get(k) is None]
        if missing:
            return fail(f"JSON {rel(jpath)} lacks {', '.join(missing)}")
        if j["steps"] != steps or j["batch"] != batch:
            return fail(f"JSON says steps {j['steps']}, batch {j['batch']}; asked {steps}, {batch}")
        rec["json"] = j
        rec["images_per_second"] = float(j["images_per_second"])
        rec["ms_per_step"] = 1000.0 * batch / rec["images_per_second"]
        rec["time_to_first_step_seconds"] = float(j["first_step_unix"]) - t_launch
        self._save(rec)
        self.cache[key] = rec
        print(f"    {rec['images_per_second']:.1f} images/s ({rec['ms_per_step']:.0f} ms/step), first step "
              f"after {rec['time_to_first_step_seconds']:.1f} s, peak RSS {rec['peak_rss_mb']:.0f} MB, "
              f"wall {rec['wall_seconds']:.0f} s", flush=True)
        return rec

    def _save(self, rec):
        with open(os.path.join(self.out, rec["name"] + ".run.json"), "w") as f:
            json.dump(rec, f, indent=1)


def preflight(a, need_pretext, need_python):
    problems = []
    if need_pretext:
        if not os.access(a.bin, os.X_OK):
            problems.append(f"{rel(a.bin)} not found (make build)")
        else:
            h = subprocess.run([a.bin, "bench", "--help"], capture_output=True, text=True, cwd=ROOT,
                               env=engine_env())
            lacking = [f for f in PRETEXT_FLAGS if f not in h.stdout + h.stderr]
            if lacking:
                problems.append(f"{rel(a.bin)} bench lacks {', '.join(lacking)} (the interface this "
                                "benchmark needs: --json OUT writes engine, steps, batch, size, "
                                "images_per_second, first_step_unix, peak_rss_mb, data_seconds, "
                                "session_seconds, wait_seconds, graph_build_seconds)")
    if need_python and not os.path.exists(a.python):
        problems.append(f"{a.python} not found (make setup)")
    return problems


def fmnist_1k():
    """FMNIST_1K: symlinks to the first 1000 (sorted) images of fmnist_unl50k."""
    want = sorted(os.listdir(FMNIST_UNL))[:1000]
    if os.path.isdir(FMNIST_1K) and sorted(os.listdir(FMNIST_1K)) == want:
        return FMNIST_1K
    shutil.rmtree(FMNIST_1K, ignore_errors=True)
    os.makedirs(FMNIST_1K)
    for n in want:
        os.symlink(os.path.join(FMNIST_UNL, n), os.path.join(FMNIST_1K, n))
    return FMNIST_1K


def count_images(dirs):
    n = 0
    for d in dirs:
        for _, _, names in os.walk(d, followlinks=True):
            n += sum(1 for x in names if x.lower().endswith((".png", ".jpg", ".jpeg")))
    return n


# ----------------------------------------------------------------------------- report

def machine():
    info = {"nproc": len(os.sched_getaffinity(0)), "cpu": platform.processor() or platform.machine()}
    try:
        # "AMD EPYC" under KVM names several generations that differ 2-3x in TF's kernels:
        # record family/model and the widest vector extensions too.
        cpu = {}
        for line in open("/proc/cpuinfo"):
            if ":" in line:
                k, v = (x.strip() for x in line.split(":", 1))
                cpu.setdefault(k, v)
            elif cpu:
                break
        if "model name" in cpu:
            flags = set(cpu.get("flags", "").split())
            vec = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
            info["cpu"] = (
                f"{cpu['model name']}, family {cpu.get('cpu family', '?')} model {cpu.get('model', '?')}, "
                + ("/".join(vec) or "no AVX2")
            )
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                info["mem_gib"] = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    info["kernel"] = platform.release()
    info["load"] = os.getloadavg()
    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            info["tf_python"] = f"{dist} {metadata.version(dist)}"
            break
        except metadata.PackageNotFoundError:
            pass
    try:
        for line in open(os.path.join(ROOT, ".tf", "lib", "tensorflow.pc")):
            if line.startswith("Version:"):
                info["tf_c"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT)
        info["git"] = rev.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return info


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def linear_fit(xs, ys):
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def params_of(model):
    try:
        return json.load(open(MODELS[model][0] + ".json"))["num_params"]
    except (OSError, KeyError, ValueError):
        return None


def report(a, runner, res, info, started, finished):
    L = []
    when = datetime.datetime.fromtimestamp(started).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    L.append(f"{when}, {(finished - started) / 60:.1f} min{' (--quick: smoke test, not a measurement)' if a.quick else ''}. "
             f"Machine: {info['nproc']} cores ({info['cpu']}), {info.get('mem_gib', 0):.1f} GiB, Linux "
             f"{info['kernel']}; load average before the run {info['load'][0]:.2f}. TensorFlow: "
             f"{info.get('tf_python', '?')} for the Python reference, the C library {info.get('tf_c', '?')} "
             f"from the same wheel for pretext. Commit {info.get('git', '?')}.")
    L.append("")
    L.append("Both engines run SimCLR on the same SavedModel: two views per image (random resized crop "
             "0.08–1, flip 0.5, colour jitter s = 1 p 0.8, grayscale 0.2, blur p 0.5 σ 0.1–2), one "
             "batched backbone pass, projection 512-BN-ReLU-128, NT-Xent τ 0.2, Adam; backbone batch "
             "norm frozen (pretext folds each frozen batch norm into its convolution, `graph::fold`: the "
             "same values from the same variables, less work; the reference runs Keras's batch-norm "
             "ops as saved); every trainable variable trained. pretext makes the views in Rust; the "
             "reference (`scripts/reference/simclr_train.py`) loads the model with "
             "`tf.saved_model.load`, makes the views in `tf.data` and steps in a `tf.function`. "
             "Environment for both: no TF variable set, each engine's defaults (pretext: oneDNN on; "
             "Python TF: oneDNN on for CPUs with AVX-512 VNNI/BF16 or AMX, else off); one process "
             "at a time. images/s: each engine's steady state (the steps after the warm-up). Time to first "
             "step: from just before the process is launched to the end of its first step (interpreter "
             "or binary start, model load, graph build or tracing, first batch). Peak RSS: the "
             "process's `ru_maxrss` from `wait4`, measured by the driver for both. Data: "
             f"`{rel(a.images)}` ({count_images([a.images]):,} JPEG crops of the scikit-image sample "
             "photos, RGB and grayscale, sides 256–640 px). Targets are figures to compare, not "
             "assertions."
             + ((" pretext runs "
                 + ", ".join(f"{MODELS[m][1]} at {s} px, batch {b}" for m, s, b in sorted(RECOMPUTE_ON))
                 + " with `--recompute on` (batch norm recomputed in the backward pass; `auto` "
                 "leaves it off under oneDNN): keeping every activation it needs more than this "
                 "machine's memory.") if RECOMPUTE_ON else ""))

    main = res.get("main", [])
    if main:
        L += ["", "### Throughput (images/s)", ""]
        rows = []
        for m, s, b, steps, e2e, mem, py in main:
            r = ratio(e2e and e2e["images_per_second"], py and py["images_per_second"])
            rows.append([MODELS[m][1], f"{s} px", b, f"{steps} ({warmup_for(steps)})",
                         fmt(e2e and e2e["images_per_second"]), fmt(py and py["images_per_second"]),
                         fmt(r, 2, "×"), verdict(r, 1.2, False)])
        L += table(["model", "input", "batch", "steps (warm-up)", "pretext", "Python TF", "pretext / Python",
                    "target ≥ 1.2×"], rows)

        L += ["", "### Time to first step (s)", ""]
        rows = []
        for m, s, b, steps, e2e, mem, py in main:
            t1, t2 = e2e and e2e["time_to_first_step_seconds"], py and py["time_to_first_step_seconds"]
            r = ratio(t1, t2)
            rows.append([MODELS[m][1], f"{s} px", b, fmt(t1), fmt(e2e and e2e["json"].get("graph_build_seconds")),
                         fmt(t2), fmt(r, 2, "×"), verdict(r, 0.3, True)])
        L += table(["model", "input", "batch", "pretext", "of which graph build", "Python TF", "pretext / Python",
                    "target ≤ 0.3×"], rows)

        L += ["", "### Peak RSS (MB)", ""]
        rows = []
        for m, s, b, steps, e2e, mem, py in main:
            m1, m2 = e2e and e2e["peak_rss_mb"], py and py["peak_rss_mb"]
            r = ratio(m1, m2)
            rows.append([MODELS[m][1], f"{s} px", b, fmt(m1, 0), fmt(mem and mem["peak_rss_mb"], 0), fmt(m2, 0),
                         fmt(r, 2, "×"), verdict(r, 0.6, True)])
        L += table(["model", "input", "batch", "pretext", "pretext from memory", "Python TF", "pretext / Python",
                    "target ≤ 0.6×"], rows)

        L += ["", "### Engine overhead: end-to-end step vs the same step fed from memory", "",
              "From memory: one batch made once and fed every step (`--from-memory`), the pure session "
              "step. Data / wait / session: seconds over the whole end-to-end run (all steps): making "
              "batches (on worker threads), the step loop waiting for a batch, TF session steps.", ""]
        rows = []
        for m, s, b, steps, e2e, mem, py in main:
            t1, t2 = e2e and e2e["ms_per_step"], mem and mem["ms_per_step"]
            r = ratio(t1, t2)
            j = (e2e or {}).get("json", {})
            rows.append([MODELS[m][1], f"{s} px", b, fmt(t1, 0), fmt(t2, 0), fmt(r, 3, "×"), verdict(r, 1.05, True),
                         fmt(j.get("data_seconds")), fmt(j.get("wait_seconds")), fmt(j.get("session_seconds"))])
        L += table(["model", "input", "batch", "end-to-end ms/step", "from memory ms/step", "ratio", "target ≤ 1.05×",
                    "data s", "wait s", "session s"], rows)

    flat = res.get("flat")
    if flat:
        m, s, b, steps, small, big, n_small, n_big = flat
        L += ["", "### Memory flatness: peak RSS vs dataset size", "",
              f"pretext end to end, {MODELS[m][1]}, {s} px, batch {b}, {steps} steps, on Fashion-MNIST "
              "PNGs (28×28 grayscale): the first 1,000 of `.cache/fmnist_unl50k` (symlinks) vs "
              "`.cache/fmnist_unl50k` + `.cache/fmnist10k/train` + `.cache/fmnist10k/test` as three "
              "`--images` folders.", ""]
        rows = [[f"{n_small:,}", fmt(small and small["peak_rss_mb"], 0), fmt(small and small["images_per_second"])],
                [f"{n_big:,}", fmt(big and big["peak_rss_mb"], 0), fmt(big and big["images_per_second"])]]
        L += table(["images", "peak RSS MB", "images/s"], rows)
        r = ratio(big and big["peak_rss_mb"], small and small["peak_rss_mb"])
        L += ["", f"Peak RSS {n_big // 1000}k / {n_small // 1000}k: {fmt(r, 3, '×')} (target ≤ 1.10×: "
                  f"{verdict(r, 1.10, True)})."]

    gb, gm, gs = res.get("growth_batch"), res.get("growth_model"), res.get("growth_size")
    while L and L[-1] == "":
        L.pop()
    if gb or gm or gs:
        L += ["", "### Cost growth (pretext, step fed from memory)", "",
              "To predict a run: steps × ms/step, plus the time to first step; the end-to-end ratio above "
              "says how much input adds.", ""]
    if gb:
        m, s = gb[0][:2]
        L += [f"Batch size ({MODELS[m][1]}, {s} px):", ""]
        rows = [[b, fmt(r and r["ms_per_step"], 0), fmt(r and r["images_per_second"]),
                 fmt(r and r["ms_per_step"] / b, 2)] for _, _, b, r in gb]
        L += table(["batch", "ms/step", "images/s", "ms/image"], rows)
        pts = [(b, r["ms_per_step"]) for _, _, b, r in gb if r]
        fit = linear_fit([p[0] for p in pts], [p[1] for p in pts])
        if fit:
            L += ["", f"Least-squares fit: ms/step ≈ {fit[0]:.0f} + {fit[1]:.2f} × batch."]
        L.append("")
    if gm:
        s, b = gm[0][1], gm[0][2]
        L += [f"Model size ({s} px, batch {b}):", ""]
        base = next((r["ms_per_step"] for _, _, _, r in gm if r), None)
        rows = [[MODELS[m][1], fmt(params_of(m), 0) if params_of(m) else "–", fmt(r and r["ms_per_step"], 0),
                 fmt(r and r["images_per_second"]), fmt(ratio(r and r["ms_per_step"], base), 2, "×")]
                for m, _, _, r in gm]
        L += table(["model", "parameters", "ms/step", "images/s", "vs first row"], rows)
        L.append("")
    if gs:
        m, b = gs[0][0], gs[0][2]
        L += [f"Input size ({MODELS[m][1]}, batch {b}):", ""]
        base = next((r["ms_per_step"] for _, _, _, r in gs if r), None)
        rows = [[f"{s} px", fmt(r and r["ms_per_step"], 0), fmt(r and r["images_per_second"]),
                 fmt(ratio(r and r["ms_per_step"], base), 2, "×")] for _, s, _, r in gs]
        L += table(["input", "ms/step", "images/s", "vs first row"], rows)
        L.append("")

    while L and L[-1] == "":
        L.pop()
    if runner.failures:
        L += ["", "**Failed runs** (see `.cache/bench/*.log`):", ""] + [f"- {f}" for f in runner.failures]
    driver = shlex.join([rel(a.python), "scripts/bench.py"] + sys.argv[1:])
    L += ["", f"Commands: `{driver}`" + (" (`make bench`)" if not sys.argv[1:] else "") + " ran these, each "
          f"process alone, in this order (raw JSON and logs in `{rel(runner.out)}/`):", "", "```sh"]
    L += runner.commands + ["```"]
    while L and L[-1] == "":
        L.pop()
    return "\n".join(L)


def write_doc(path, body):
    text = open(path).read()
    if MARK_START in text and MARK_END in text and text.index(MARK_START) < text.index(MARK_END):
        i, j = text.index(MARK_START) + len(MARK_START), text.index(MARK_END)
        text = text[:i] + "\n" + body + "\n" + text[j:]
    else:
        lines = text.split("\n")
        k = next((i for i, l in enumerate(lines) if l.startswith("# ")), -1) + 1
        while k < len(lines) and not lines[k].strip():  # blank lines after the title
            k += 1
        while k < len(lines) and lines[k].strip() and not lines[k].startswith("#"):  # the intro paragraph
            k += 1
        lines[k:k] = ["", SECTION, "", MARK_START, body, MARK_END]
        text = "\n".join(lines)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: 3 steps, batch 8 (4 and 8 for growth)")
    ap.add_argument("--only", choices=["python", "pretext"], help="run one engine only")
    ap.add_argument("--sections", default="main,flat,growth", help="comma list of main, flat, growth")
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    ap.add_argument("--no-doc", action="store_true", help="do not write --doc")
    ap.add_argument("--force-doc", action="store_true", help="write --doc even for --quick/--only/failures")
    ap.add_argument("--out", help="raw JSON and logs (default .cache/bench, .cache/bench/quick for --quick)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "pretext"))
    ap.add_argument("--python", default=sys.executable, help="interpreter for the Python reference")
    ap.add_argument("--images", default=BENCH_IMAGES, help="photo folder for the main comparison")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the successful runs recorded in --out (.run.json) instead of running them again")
    ap.add_argument("--pretext-args", default="", help="extra arguments for every pretext run, e.g. '--workers 2'")
    a = ap.parse_args()
    a.bin, a.images = os.path.abspath(a.bin), os.path.abspath(a.images)
    a.python = os.path.abspath(a.python) if os.sep in a.python else a.python
    sections = set(s.strip() for s in a.sections.split(",") if s.strip())
    unknown = sections - {"main", "flat", "growth"}
    if unknown:
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")
    engines = [a.only] if a.only else ["pretext", "python"]
    if "pretext" not in engines:
        sections &= {"main"}  # flat and growth are pretext-only
    out = os.path.abspath(a.out or os.path.join(CACHE, "bench", "quick" if a.quick else ""))
    os.makedirs(out, exist_ok=True)

    problems = preflight(a, "pretext" in engines, "python" in engines)
    need = [(a.images, "make bench-images")] if "main" in sections else []
    if "flat" in sections:
        need += [(FMNIST_UNL, "make fmnist"), (os.path.join(FMNIST10K, "train"), "make fmnist")]
    if "growth" in sections:
        need += [(MODELS[m][0], "make bench-fixtures" if BENCH_FIX in MODELS[m][0] else "make fixtures")
                 for m in GROWTH_MODEL[3]]
    for m, _, _ in MAIN:
        need.append((MODELS[m][0], "make fixtures"))
    problems += [f"{rel(p)} missing ({how})" for p, how in need if not os.path.exists(p)]
    if problems:
        for p in problems:
            print("error: " + p, file=sys.stderr)
        return 2

    q = a.quick
    info = machine()
    runner = Runner(a, out)
    res = {}
    started = time.time()
    if "main" in sections:
        res["main"] = []
        for m, s, steps_by_batch in MAIN:
            for b, steps in ({8: 3} if q else steps_by_batch).items():
                e2e = mem = py = None
                if "pretext" in engines:
                    e2e = runner.run("pretext", m, s, b, steps, [a.images], "photos")
                    mem = runner.run("pretext", m, s, b, steps, [a.images], "photos", from_memory=True)
                if "python" in engines:
                    py = runner.run("python", m, s, b, steps, [a.images], "photos")
                res["main"].append((m, s, b, steps, e2e, mem, py))
    if "flat" in sections:
        m, s, b, steps = FLAT
        b, steps = (8, 3) if q else (b, steps)
        small_dirs = [fmnist_1k()]
        big_dirs = [FMNIST_UNL, os.path.join(FMNIST10K, "train"), os.path.join(FMNIST10K, "test")]
        small = runner.run("pretext", m, s, b, steps, small_dirs, "fmnist1k")
        big = runner.run("pretext", m, s, b, steps, big_dirs, "fmnist70k")
        res["flat"] = (m, s, b, steps, small, big, count_images(small_dirs), count_images(big_dirs))
    if "growth" in sections:
        m, s, steps_by_batch = GROWTH_BATCH
        res["growth_batch"] = [(m, s, b, runner.run("pretext", m, s, b, steps, [a.images], "photos", True))
                               for b, steps in ({4: 3, 8: 3} if q else steps_by_batch).items()]
        s, b, steps, models = GROWTH_MODEL
        b, steps = (8, 3) if q else (b, steps)
        res["growth_model"] = [(m, s, b, runner.run("pretext", m, s, b, steps, [a.images], "photos", True))
                               for m in models]
        m, b, steps_by_size = GROWTH_SIZE
        sizes = {96: 3, 224: 3} if q else steps_by_size
        b = 8 if q else b
        res["growth_size"] = [(m, s, b, runner.run("pretext", m, s, b, steps, [a.images], "photos", True))
                              for s, steps in sizes.items()]
    finished = time.time()

    body = report(a, runner, res, info, started, finished)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(body + "\n")
    print("\n" + SECTION + "\n\n" + body + "\n")
    complete = not q and not a.only and sections == {"main", "flat", "growth"} and not runner.failures
    if a.no_doc:
        pass
    elif complete or a.force_doc:
        write_doc(a.doc, body)
        print(f"written into {rel(a.doc)} (between {MARK_START} and {MARK_END})")
    else:
        why = "--quick" if q else "--only/--sections" if not runner.failures else "runs failed"
        print(f"{rel(a.doc)} not updated ({why}; --force-doc writes it anyway); report in {rel(out)}/report.md")
    if runner.failures:
        print(f"{len(runner.failures)} run(s) failed:\n  " + "\n  ".join(runner.failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
