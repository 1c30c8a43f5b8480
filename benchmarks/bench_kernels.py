"""Benchmark minigrad's kernels against their NumPy twins and torch (CPU, same thread count).

    python benchmarks/bench_kernels.py [--dtype float32|float64] [--repeats 15] [--only matmul] [--json PATH]

Contenders run alternately (rotating order each round) after warm-up, so load
from other processes on a shared machine hits all of them alike; each cell is
the median over rounds. Prints a Markdown table.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numba
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minigrad import kernels as K  # noqa: E402


def _calls_per_sample(fn):
    """Enough calls per timed sample that one sample lasts at least ~2 ms."""
    t = time.perf_counter()
    fn()
    return max(1, int(2e-3 / max(time.perf_counter() - t, 1e-7)))


def race(contenders, repeats):
    """Median seconds per call of each contender, timed in alternating rounds."""
    for fn in contenders.values():
        fn()
        fn()
    number = {name: _calls_per_sample(fn) for name, fn in contenders.items()}
    samples = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = contenders[name]
            t = time.perf_counter()
            for _ in range(number[name]):
                fn()
            samples[name].append((time.perf_counter() - t) / number[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def _matmul_cases(rng, dtype):
    shapes = [
        ("matmul x@W", (8, 256, 384), (384, 1536)),
        ("matmul q@k^T", (8, 6, 256, 64), (8, 6, 64, 256)),
        ("matmul att@v", (8, 6, 256, 256), (8, 6, 256, 64)),
    ]
    for name, sa, sb in shapes:
        a = rng.standard_normal(sa).astype(dtype)
        b = rng.standard_normal(sb).astype(dtype)
        grad = rng.standard_normal(np.broadcast_shapes(sa[:-2], sb[:-2]) + (sa[-2], sb[-1])).astype(dtype)
        flops = 2.0 * grad.size * sa[-1]
        ta = torch.from_numpy(a).requires_grad_()
        tb = torch.from_numpy(b).requires_grad_()
        tout = ta @ tb
        tgrad = torch.from_numpy(grad)
        shape = f"{sa}@{sb}"
        yield name + " fwd", shape, flops, {
            "kernel": lambda a=a, b=b: K.matmul(a, b),
            "numpy": lambda a=a, b=b: K.matmul_reference(a, b),
            "torch": lambda ta=ta, tb=tb: torch.matmul(ta.detach(), tb.detach()),
        }
        yield name + " bwd (both grads)", shape, 2 * flops, {
            "kernel": lambda a=a, b=b, g=grad: K.matmul_backward(a, b, g),
            "numpy": lambda a=a, b=b, g=grad: K.matmul_backward_reference(a, b, g),
            "torch": lambda o=tout, ta=ta, tb=tb, g=tgrad: torch.autograd.grad(o, (ta, tb), g, retain_graph=True),
        }


def _softmax_cases(rng, dtype):
    shape = (8, 6, 256, 256)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    y, ly = K.softmax_reference(x), K.log_softmax_reference(x)
    tx, tg, ty, tly = (torch.from_numpy(v) for v in (x, grad, y, ly))
    tdtype = tx.dtype
    yield "softmax fwd", str(shape), None, {
        "kernel": lambda: K.softmax(x), "numpy": lambda: K.softmax_reference(x), "torch": lambda: torch.softmax(tx, -1)}
    yield "softmax bwd", str(shape), None, {
        "kernel": lambda: K.softmax_backward(y, grad),
        "numpy": lambda: K.softmax_backward_reference(y, grad),
        "torch": lambda: torch.ops.aten._softmax_backward_data(tg, ty, -1, tdtype)}
    yield "log_softmax fwd", str(shape), None, {
        "kernel": lambda: K.log_softmax(x), "numpy": lambda: K.log_softmax_reference(x),
        "torch": lambda: torch.log_softmax(tx, -1)}
    yield "log_softmax bwd", str(shape), None, {
        "kernel": lambda: K.log_softmax_backward(ly, grad),
        "numpy": lambda: K.log_softmax_backward_reference(ly, grad),
        "torch": lambda: torch.ops.aten._log_softmax_backward_data(tg, tly, -1, tdtype)}


def _cross_entropy_cases(rng, dtype):
    n, v = 2048, 4096
    logits = (rng.standard_normal((n, v)) * 3).astype(dtype)
    targets = rng.integers(0, v, n)
    targets[::10] = -1
    grad_losses = np.full(n, 1.0 / n, dtype)
    _, lse = K.cross_entropy_forward_reference(logits, targets)
    tl = torch.from_numpy(logits).requires_grad_()
    tt = torch.from_numpy(targets)
    tlosses = F.cross_entropy(tl, tt, ignore_index=-1, reduction="none")
    tgl = torch.from_numpy(grad_losses)
    yield "cross_entropy fwd", f"({n}, {v})", None, {
        "kernel": lambda: K.cross_entropy_forward(logits, targets),
        "numpy": lambda: K.cross_entropy_forward_reference(logits, targets),
        "torch": lambda: F.cross_entropy(tl.detach(), tt, ignore_index=-1, reduction="none")}
    yield "cross_entropy bwd", f"({n}, {v})", None, {
        "kernel": lambda: K.cross_entropy_backward(logits, targets, lse, grad_losses),
        "numpy": lambda: K.cross_entropy_backward_reference(logits, targets, lse, grad_losses),
        "torch": lambda: torch.autograd.grad(tlosses, tl, tgl, retain_graph=True)}


def _concat_cases(rng, dtype):
    for t in (64, 1024):
        cache = rng.standard_normal((1, 6, t, 64)).astype(dtype)
        new = rng.standard_normal((1, 6, 1, 64)).astype(dtype)
        tc, tn = torch.from_numpy(cache), torch.from_numpy(new)
        yield "concat (KV cache)", f"(1, 6, {t}, 64)+(1, 6, 1, 64)", None, {
            "kernel": lambda c=cache, x=new: K.concat([c, x], 2),
            "numpy": lambda c=cache, x=new: K.concat_reference([c, x], 2),
            "torch": lambda c=tc, x=tn: torch.cat([c, x], 2)}


def _conv_cases(rng, dtype):
    """minigrad's conv2d (im2col onto the matmul kernels, in the autograd graph) against torch; the
    NumPy contender is the same im2col with np.tensordot, forward only."""
    import minigrad as mg
    from minigrad.nn import functional as MF
    for n, c, hw, o in ((64, 8, 16, 16), (16, 32, 32, 64)):
        x = rng.standard_normal((n, c, hw, hw)).astype(dtype)
        w = (rng.standard_normal((o, c, 3, 3)) * 0.1).astype(dtype)
        grad = rng.standard_normal((n, o, hw, hw)).astype(dtype)
        flops = 2.0 * n * o * hw * hw * c * 9
        tx, tw, tg = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_(), torch.from_numpy(grad)
        mx, mw = mg.Tensor(x, requires_grad=True), mg.Tensor(w, requires_grad=True)

        def numpy_conv(x=x, w=w):
            padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
            windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # (N, C, H, W, 3, 3)
            return np.tensordot(windows, w, axes=((1, 4, 5), (1, 2, 3))).transpose(0, 3, 1, 2)

        def minigrad_step(mx=mx, mw=mw, g=grad):
            mx.grad = mw.grad = None
            MF.conv2d(mx, mw, padding=1).backward(g)

        def torch_step(tx=tx, tw=tw, g=tg):
            torch.autograd.grad(F.conv2d(tx, tw, padding=1), (tx, tw), g)

        shape = f"({n}, {c}, {hw}, {hw})*({o}, {c}, 3, 3) pad 1"
        yield "conv2d fwd", shape, flops, {
            "kernel": lambda mx=mx, mw=mw: MF.conv2d(mx.detach(), mw.detach(), padding=1),
            "numpy": numpy_conv,
            "torch": lambda tx=tx, tw=tw: F.conv2d(tx.detach(), tw.detach(), padding=1)}
        yield "conv2d fwd+bwd", shape, 3 * flops, {"kernel": minigrad_step, "torch": torch_step}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", metavar="TEXT", default="", help="run only ops whose name contains TEXT")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    rows = []
    for cases in (_matmul_cases, _softmax_cases, _cross_entropy_cases, _concat_cases, _conv_cases):
        for name, shape, flops, contenders in cases(rng, dtype):
            if args.only not in name:
                continue
            t = race(contenders, args.repeats)
            row = {"kernel": name, "shape": shape, "dtype": args.dtype,
                   **{f"{k}_ms": v * 1e3 for k, v in t.items()},
                   "kernel/numpy": t["kernel"] / t["numpy"] if "numpy" in t else None,
                   "kernel/torch": t["kernel"] / t["torch"]}
            if flops:
                row.update({f"{k}_gflops": flops / v / 1e9 for k, v in t.items()})
            rows.append(row)
            print(f"{name} {shape}: done", file=sys.stderr)

    print(f"\n{threads} threads (numba, torch); numpy {np.__version__}, numba {numba.__version__}, "
          f"torch {torch.__version__}, dtype {args.dtype}, median of {args.repeats} alternating rounds\n")
    print("| op | shape | kernel ms | numpy ms | torch ms | kernel/numpy | kernel/torch "
          "| kernel GFLOP/s | numpy GFLOP/s | torch GFLOP/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        gf = [f"{r[k]:.0f}" if k in r else "" for k in ("kernel_gflops", "numpy_gflops", "torch_gflops")]
        numpy_ms, vs_numpy = ((f"{r['numpy_ms']:.3f}", f"{r['kernel/numpy']:.2f}") if "numpy_ms" in r
                              else ("", ""))  # a contender without a NumPy twin (conv2d fwd+bwd)
        print(f"| {r['kernel']} | {r['shape']} | {r['kernel_ms']:.3f} | {numpy_ms} | {r['torch_ms']:.3f} "
              f"| {vs_numpy} | {r['kernel/torch']:.2f} | {' | '.join(gf)} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
