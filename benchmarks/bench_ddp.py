"""Data-parallel training over MPI against one process, on one machine, CPU, float32.

    python benchmarks/bench_ddp.py [--size small] [--ranks 2] [--steps 5] [--rounds 3] [--json PATH]

Trains nanochat's GPT (bench_gpt.py's configs, random weights, nanochat's Muon + AdamW) on the
same global batch two ways, alternating A/B for --rounds rounds, each a fresh process group:
- A: 1 process with --ranks threads (numba and OpenBLAS),
- B: `mpiexec -n RANKS`, 1 thread per rank, each rank on 1/RANKS of the batch, gradients averaged
  by minigrad.distributed.DataParallel,
- with --zero, C: as B with minigrad.distributed.ShardedOptimizer (each rank keeps and updates the
  optimizer state of its own parameters only); its optimizer-state bytes per rank are reported.
Per step it reports tokens/s (median over the steps after a warm-up step), the bytes each rank
hands to MPI and the seconds spent in MPI calls (waiting for the slower rank included). Then the
on-paper estimate for N machines: with the per-rank batch fixed, a ring all-reduce sends and
receives 2 (N - 1) / N x the gradient bytes per rank per step, so a step takes the measured
compute time plus that over the link's bandwidth.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# bench_gpt.py's configs (importing it would load torch into every rank), and `nanochat train`'s
# default (--depth 2 --vocab-size 2048 --seq-len 128 --batch-size 16)
SIZES = {
    "default": (dict(sequence_len=128, vocab_size=2048, n_layer=2, n_head=1, n_kv_head=1, n_embd=128), 16),
    "tiny": (dict(sequence_len=128, vocab_size=256, n_layer=4, n_head=4, n_kv_head=4, n_embd=128), 8),
    "small": (dict(sequence_len=256, vocab_size=4096, n_layer=6, n_head=6, n_kv_head=6, n_embd=384), 8),
}
LINKS = {"1 Gbit/s Ethernet": 125e6, "10 Gbit/s Ethernet": 1.25e9, "100 Gbit/s InfiniBand": 12.5e9}


def worker(size, steps, result_path, zero=False):
    """One rank (or the only process): time `steps` training steps after one warm-up step."""
    sys.path.insert(0, ROOT)
    import numba
    import numpy as np
    from minigrad import distributed
    from nanochat.gpt import GPT, GPTConfig

    world = distributed.init()
    kw, batch = SIZES[size]
    model = GPT(GPTConfig(**kw), seed=0)
    rng = np.random.default_rng(0)
    for _, p in model.named_parameters():  # the default init zeroes lm_head and c_proj
        p.data[...] = rng.normal(0.0, 0.02, p.shape)
    optimizers = model.setup_optimizers()
    if zero:
        sharded = distributed.ShardedOptimizer(optimizers, world)
        sync, optimizers = (lambda: None), [sharded]
    else:
        sync = distributed.DataParallel(model, world).sync_gradients
    x = rng.integers(0, kw["vocab_size"], (batch, kw["sequence_len"]))
    y = rng.integers(0, kw["vocab_size"], (batch, kw["sequence_len"]))
    x, y = world.shard(x), world.shard(y)
    times, comm_s, comm_bytes = [], [], []
    for step in range(steps + 1):
        t0, c0, b0 = time.perf_counter(), world.seconds_communicating, world.bytes_communicated
        model(x, targets=y).backward()
        sync()
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
        world.barrier()  # the step ends when every rank's step has
        if step:  # the first step compiles and warms caches
            times.append(time.perf_counter() - t0)
            comm_s.append(world.seconds_communicating - c0)
            comm_bytes.append(world.bytes_communicated - b0)
    state_bytes = world.all_gather_object(sum(
        v.nbytes for opt in (sharded.optimizers if zero else optimizers) for entries in opt.state.values()
        for v in entries.values() if isinstance(v, np.ndarray)))
    if world.is_main:
        step_s = statistics.median(times)
        with open(result_path, "w") as f:
            json.dump(dict(ranks=world.size, step_s=step_s, tok_per_s=batch * kw["sequence_len"] / step_s,
                           comm_s=statistics.median(comm_s), comm_bytes=comm_bytes[-1],
                           gradient_bytes=4 * model.num_parameters(), parameters=model.num_parameters(),
                           state_bytes=state_bytes, threading_layer=numba.threading_layer()), f)


def run(size, steps, ranks, threads, result_path, zero=False):
    env = dict(os.environ, PYTHONPATH=ROOT)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    launcher = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(ranks)] if ranks > 1 else []
    subprocess.run([*launcher, sys.executable, os.path.abspath(__file__), "--_worker", "--size", size,
                    "--steps", str(steps), "--_result", result_path, *(["--zero"] if zero else [])],
                   env=env, check=True, timeout=1800)
    with open(result_path) as f:
        return json.load(f)


def estimate(gradient_bytes, step_s, n):
    """(bytes per rank per step, seconds per step per link) of N machines, each with one rank on the
    per-rank batch whose compute took step_s."""
    wire = 2 * (n - 1) / n * gradient_bytes
    return wire, {link: step_s + wire / bandwidth for link, bandwidth in LINKS.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small", choices=sorted(SIZES))
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--zero", action="store_true", help="also time ShardedOptimizer")
    ap.add_argument("--json", default=None)
    ap.add_argument("--_worker", dest="worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_result", dest="result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.size, args.steps, args.result, args.zero)

    sides = ["one", "ddp"] + (["zero"] if args.zero else [])
    results = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "result.json")
        for r in range(args.rounds):
            for side in sides[r % len(sides):] + sides[:r % len(sides)]:
                ranks, threads = (1, args.ranks) if side == "one" else (args.ranks, 1)
                results[side].append(run(args.size, args.steps, ranks, threads, path, zero=side == "zero"))
    one = statistics.median(r["tok_per_s"] for r in results["one"])
    ddp = statistics.median(r["tok_per_s"] for r in results["ddp"])
    last = results["ddp"][-1]
    comm_s = statistics.median(r["comm_s"] for r in results["ddp"])
    step_s = statistics.median(r["step_s"] for r in results["ddp"])
    config, batch = SIZES[args.size]
    print(f"{args.size}: {last['parameters']:,} parameters, global batch {batch} x {config['sequence_len']} tokens; "
          f"numba's {results['one'][-1]['threading_layer']} threading layer; load average {os.getloadavg()[0]:.2f}")
    print()
    print("| setup | tokens/s | ratio |")
    print("|---|---:|---:|")
    print(f"| 1 process x {args.ranks} threads | {one:.0f} | 1.00 |")
    print(f"| {args.ranks} ranks x 1 thread | {ddp:.0f} | {ddp / one:.2f} |")
    if args.zero:
        zero = statistics.median(r["tok_per_s"] for r in results["zero"])
        print(f"| {args.ranks} ranks x 1 thread, sharded optimizer | {zero:.0f} | {zero / one:.2f} |")
        print()
        print(f"optimizer state per rank: {last['state_bytes'][0] / 1e6:.1f} MB with DataParallel, "
              + ", ".join(f"rank {i} {b / 1e6:.1f} MB" for i, b in enumerate(results['zero'][-1]['state_bytes']))
              + " with ShardedOptimizer")
    print()
    print(f"per step and rank: {last['comm_bytes'] / 1e6:.1f} MB handed to MPI (gradients "
          f"{last['gradient_bytes'] / 1e6:.1f} MB, plus one int32 per tensor), {comm_s * 1e3:.0f} ms in MPI calls "
          f"= {comm_s / step_s:.0%} of a {step_s * 1e3:.0f} ms step")
    # the compute time of one rank's share, without the time in MPI
    compute_s = step_s - comm_s
    print()
    print(f"on paper, N machines x 1 rank, each on this rank's batch ({compute_s * 1e3:.0f} ms of compute per step):")
    print("| N | MB per rank per step | " + " | ".join(f"speed-up over 1 machine, {link}" for link in LINKS) + " |")
    print("|---:|---:|" + "---:|" * len(LINKS))
    for n in (2, 4, 8, 16, 64):
        wire, step = estimate(last["gradient_bytes"], compute_s, n)
        print(f"| {n} | {wire / 1e6:.1f} | " + " | ".join(f"{n * compute_s / s:.1f}" for s in step.values()) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
