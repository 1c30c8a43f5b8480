"""How long a new user's first run waits for numba: `nanochat train` with an empty numba cache
against the same command with the cache that the first run left behind, and what each kernel costs
to compile.

    python benchmarks/bench_startup.py [--rounds 3] [--steps 5] [--top 25] [--json PATH]

Each round runs the command twice in fresh processes: once with NUMBA_CACHE_DIR pointing at a new
empty folder (cold: every kernel compiles), then again on that folder (warm: every kernel loads).
Rounds alternate cold and warm, so both see the same load; cells are medians, of wall time and of
the child's CPU time (steadier than wall time on a shared machine). A cold run starts
nanochat's compile warm-up process beside it (minigrad/kernels/_warmup.py), whose CPU seconds
count in the cold run's. The per-kernel table comes from numba's compile events of the cold runs'
own process: a kernel's own seconds (its compile minus the
compiles of the kernels it calls, which nest inside it), median over the rounds, with the argument
types it was compiled for. Output (tokenizer, checkpoint) goes to a temporary folder.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _child(record_path, argv):
    """Run `nanochat <argv>` in this process, recording every numba compile (self seconds per
    kernel and signature) into record_path."""
    sys.path.insert(0, ROOT)
    from numba.core import event

    own = {}
    stack = []  # [name, start, seconds spent in nested compiles]

    class Recorder(event.Listener):
        def on_start(self, ev):
            d = ev.data
            name = f"{d['dispatcher'].py_func.__module__}.{d['dispatcher'].py_func.__qualname__}"
            stack.append([f"{name}{tuple(str(a) for a in d['args'])}", time.perf_counter(), 0.0])

        def on_end(self, ev):
            key, start, nested = stack.pop()
            total = time.perf_counter() - start
            own[key] = own.get(key, 0.0) + total - nested
            if stack:
                stack[-1][2] += total

    event.register("numba:compile", Recorder())
    from nanochat.commands import main
    rc = main(argv)
    with open(record_path, "w") as f:
        json.dump(own, f)
    return rc


def run_once(cache_dir, out_dir, steps, record_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=ROOT)
    argv = ["train", "--steps", str(steps), "--out", out_dir]
    t = time.perf_counter()
    cpu = _children_cpu()
    subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", record_path, "--", *argv], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    cpu = _children_cpu() - cpu
    with open(record_path) as f:
        return wall, cpu, json.load(f)


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=25, help="kernels listed (the dearest first)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--_child", dest="child", default=None, help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.child:
        return _child(args.child, [a for a in rest if a != "--"])

    load_start = os.getloadavg()
    walls = {"cold": [], "warm": []}
    cpus = {"cold": [], "warm": []}
    compiles = {"cold": [], "warm": []}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
            cache = os.path.join(tmp, "numba_cache")
            os.mkdir(cache)
            record = os.path.join(tmp, "compiles.json")
            for kind in ("cold", "warm"):
                wall, cpu, own = run_once(cache, os.path.join(tmp, f"out_{kind}"), args.steps, record)
                walls[kind].append(wall)
                cpus[kind].append(cpu)
                compiles[kind].append(own)
                print(f"round {r + 1} {kind}: {wall:.1f} s wall, {cpu:.1f} s CPU, {sum(own.values()):.1f} s compiling "
                      f"({len(own)} signatures), load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    load_end = os.getloadavg()

    med = {k: statistics.median(v) for k, v in walls.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpus.items()}
    keys = sorted({k for own in compiles["cold"] for k in own})
    per_kernel = {k: statistics.median(own.get(k, 0.0) for own in compiles["cold"]) for k in keys}
    ranked = sorted(per_kernel.items(), key=lambda kv: -kv[1])
    compile_total = statistics.median(sum(own.values()) for own in compiles["cold"])

    print(f"`nanochat train --steps {args.steps}`, {args.rounds} rounds; load average {load_start[0]:.1f} at "
          f"start, {load_end[0]:.1f} at end")
    print()
    print("| run | wall (s, median) | CPU (s, median) | walls |")
    print("|---|---:|---:|---|")
    for k in ("cold", "warm"):
        print(f"| {k} cache | {med[k]:.1f} | {med_cpu[k]:.1f} | {', '.join(f'{w:.1f}' for w in walls[k])} |")
    print(f"| cold / warm | {med['cold'] / med['warm']:.2f} | {med_cpu['cold'] / med_cpu['warm']:.2f} | |")
    print()
    print(f"compiling (cold, median): {compile_total:.1f} s in {len(per_kernel)} signatures; the dearest:")
    print()
    print("| kernel (argument types) | own compile s |")
    print("|---|---:|")
    for name, s in ranked[:args.top]:
        print(f"| `{name.replace('minigrad.kernels.', '')}` | {s:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(steps=args.steps, rounds=args.rounds, load_avg=[load_start, load_end], wall_s=walls,
                           median_s=med, cpu_s=cpus, median_cpu_s=med_cpu, compile_s_cold=compile_total,
                           per_kernel_s=per_kernel), f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
