"""Re-measure minigrad's tuned kernel constants: each sweep times both sides of one constant's choice
(serial against parallel driver, one thread against a split product, block or chunk sizes) in
alternating rounds and prints where the choice flips, beside the value the code uses now.

    python benchmarks/bench_thresholds.py [NAME ...] [--repeats 5]

NAME is one of the sweeps below (all when none is given). Run it on the machine you tune for, with
the thread count you will use (NUMBA_NUM_THREADS); each sweep takes a few seconds on 2 cores, the
first run longer while numba compiles. Results of earlier runs: benchmarks/RESULTS.md.
"""
import argparse
import os
import sys
from contextlib import contextmanager

import numba
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_kernels import race  # noqa: E402
from minigrad import kernels as K  # noqa: E402
from minigrad.kernels import _attention, _cross_entropy, _elementwise, _matmul, _norm, _optim, _softmax  # noqa: E402
from minigrad.optim import muon  # noqa: E402

NEVER, ALWAYS = 1 << 62, 0  # thresholds that force the serial or the parallel side
rng = np.random.default_rng(0)


@contextmanager
def setting(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _switched(module, name, fn):
    """fn with the constant at NEVER and at ALWAYS: the two sides of a threshold."""
    def at(value):
        def call():
            with setting(module, name, value):
                fn()
        return call
    return {"below": at(NEVER), "above": at(ALWAYS)}


def threshold_sweep(module, name, sizes, make, repeats, unit="elements"):
    """Time both sides of `module.name` at each size (make(size) returns the call) and print the
    smallest size from which the parallel or split side wins at every larger size too."""
    print(f"\n{module.__name__}.{name} = {getattr(module, name)} {unit}")
    print(f"{unit:>12}  one thread (us)  parallel (us)  parallel / one")
    wins = []
    for size in sizes:
        times = race(_switched(module, name, make(size)), repeats)
        ratio = times["above"] / times["below"]
        wins.append(ratio < 1)
        print(f"{size:>12}  {times['below'] * 1e6:>15.1f}  {times['above'] * 1e6:>13.1f}  {ratio:>14.2f}")
    crossover = next((s for i, s in enumerate(sizes) if all(wins[i:])), None)
    print(f"crossover: parallel wins from {crossover} {unit}" if crossover else "crossover: parallel never wins here")


def _powers(lo, hi):
    return [1 << p for p in range(lo, hi + 1)]


def sweep_softmax(repeats):
    def make(n):
        x = rng.standard_normal((max(1, n // 256), 256)).astype(np.float32)
        return lambda: K.softmax(x)
    threshold_sweep(_softmax, "SOFTMAX_PARALLEL_MIN", _powers(10, 18), make, repeats)


def sweep_cross_entropy(repeats):
    def make(n):
        rows = max(1, n // 256)
        logits = rng.standard_normal((rows, 256)).astype(np.float32)
        targets = rng.integers(0, 256, rows)
        def step():
            _, lse = K.cross_entropy_forward(logits, targets)
            K.cross_entropy_backward(logits, targets, lse, np.ones(rows, np.float32))
        return step
    threshold_sweep(_cross_entropy, "CROSS_ENTROPY_PARALLEL_MIN", _powers(10, 18), make, repeats)


def sweep_rms_norm(repeats):
    def make(n):
        x = rng.standard_normal((max(1, n // 128), 128)).astype(np.float32)
        def step():
            out, rstd = K.rms_norm(x, 1e-6)
            K.rms_norm_backward(out, rstd, x)
        return step
    threshold_sweep(_norm, "RMS_NORM_PARALLEL_MIN", _powers(9, 18), make, repeats)


def sweep_rotary(repeats):
    def make(n):
        t = max(1, n // 128)
        x = rng.standard_normal((1, t, 2, 64)).astype(np.float32)
        cos, sin = rng.standard_normal((2, 1, t, 1, 32)).astype(np.float32)
        return lambda: K.rotary(x, cos, sin)
    threshold_sweep(_elementwise, "ROTARY_PARALLEL_MIN", _powers(9, 18), make, repeats)


def sweep_relu_squared(repeats):
    def make(n):
        x = rng.standard_normal(n).astype(np.float32)
        return lambda: K.relu_squared_backward(x, K.relu_squared(x))
    threshold_sweep(_elementwise, "RELU2_PARALLEL_MIN", _powers(14, 22), make, repeats)


def sweep_relu_squared_chunk(repeats):
    x = rng.standard_normal(1 << 21).astype(np.float32)
    print(f"\n_elementwise.RELU2_CHUNK = {_elementwise.RELU2_CHUNK} (relu² forward + backward, 2M elements, parallel)")
    chunks = _powers(11, 18)

    def at(chunk):
        def call():
            with setting(_elementwise, "RELU2_PARALLEL_MIN", ALWAYS), setting(_elementwise, "RELU2_CHUNK", chunk):
                K.relu_squared_backward(x, K.relu_squared(x))
        return call
    times = race({c: at(c) for c in chunks}, repeats)
    base = times[_elementwise.RELU2_CHUNK]
    for c in chunks:
        print(f"{c:>10}  {times[c] * 1e6:>10.1f} us  {times[c] / base:>5.2f} x the current chunk")


def sweep_adamw(repeats):
    def make(n):
        p, g, m, v = (rng.standard_normal(n).astype(np.float32) for _ in range(4))
        v = np.abs(v)
        return lambda: K.adamw_update(p, g, m, v, 10, 1e-9, 0.9, 0.95, 1e-8, 0.0)
    threshold_sweep(_optim, "ADAMW_PARALLEL_MIN", _powers(9, 18), make, repeats)


def sweep_momentum(repeats):
    def make(n):
        buf, g = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
        return lambda: K.momentum_update(buf, g, 0.95, True)
    threshold_sweep(_optim, "MOMENTUM_PARALLEL_MIN", _powers(12, 20), make, repeats)


def sweep_gemm(repeats):
    def make(work):
        s = round(work ** (1 / 3))
        a, b = (rng.standard_normal((s, s)).astype(np.float32) for _ in range(2))
        return lambda: K.matmul(a, b)
    threshold_sweep(_matmul, "GEMM_SPLIT_MIN_WORK", _powers(15, 22), make, repeats, unit="m*n*k")


def sweep_gemv(repeats):
    def make(work):
        k = round(work ** 0.5)
        a, b = rng.standard_normal((1, k)).astype(np.float32), rng.standard_normal((k, k)).astype(np.float32)
        return lambda: K.matmul(a, b)
    print("\n(a warm loop: the weight stays in cache; a decoding step streams it from L3, so check a change"
          " against the decode rows of bench_gpt.py too)")
    threshold_sweep(_matmul, "GEMV_SPLIT_MIN_WORK", _powers(13, 21), make, repeats, unit="n*k")


def sweep_gemm_bands(repeats):
    """Few rows: row bands, column bands or one thread, for m = 1.. 64 rows of a 512 x 512 product."""
    threads = numba.get_num_threads()
    print(f"\n_matmul.GEMM_ROWS_PER_THREAD = {_matmul.GEMM_ROWS_PER_THREAD}, GEMM_COLS_PER_THREAD = "
          f"{_matmul.GEMM_COLS_PER_THREAD} ({threads} threads; (m, 512) @ (512, n))")
    b = rng.standard_normal((512, 512)).astype(np.float32)

    def at(a, rows_per_thread, cols_per_thread, min_work, n):
        def call():
            with setting(_matmul, "GEMM_ROWS_PER_THREAD", rows_per_thread), \
                    setting(_matmul, "GEMM_COLS_PER_THREAD", cols_per_thread), \
                    setting(_matmul, "GEMM_SPLIT_MIN_WORK", min_work):
                K.matmul(a, b[:, :n])
        return call
    print(f"{'m':>4} {'n':>4}  rows split / one thread  columns split / one thread")
    for m, n in [(2, 512), (4, 512), (8, 512), (16, 512), (32, 512), (64, 512), (4, 64), (4, 128), (4, 256)]:
        a = rng.standard_normal((m, 512)).astype(np.float32)
        times = race({"one": at(a, 1, 1, NEVER, n), "rows": at(a, 1, 1, ALWAYS, n),
                      "cols": at(a, NEVER, 1, ALWAYS, n)}, repeats)
        print(f"{m:>4} {n:>4}  {times['rows'] / times['one']:>23.2f}  {times['cols'] / times['one']:>26.2f}")
    print("rule: row bands from the m where they beat column bands (GEMM_ROWS_PER_THREAD = m / threads);"
          " column bands from the n where they beat one thread (GEMM_COLS_PER_THREAD = n / threads)")


def sweep_attention(repeats):
    """ATTENTION_BLOCK: causal forward + backward, 1 x 256 tokens x 6 heads x 64."""
    print(f"\n_attention.ATTENTION_BLOCK = {_attention.ATTENTION_BLOCK} (causal, q k v (1, 256, 6, 64), forward + backward)")
    q, k, v = (rng.standard_normal((1, 256, 6, 64)).astype(np.float32) for _ in range(3))

    def at(block):
        def call():
            with setting(_attention, "ATTENTION_BLOCK", block):
                out, p = K.attention_forward(q, k, v, 0.125, 0)
                K.attention_backward(q, k, v, out, p, out, 0.125, 0)
        return call
    blocks = [16, 32, 64, 128, 256]
    times = race({b: at(b) for b in blocks}, repeats)
    base = times[_attention.ATTENTION_BLOCK]
    for b in blocks:
        print(f"{b:>6}  {times[b] * 1e3:>8.2f} ms  {times[b] / base:>5.2f} x the current block")


def sweep_muon_newton_schulz(repeats):
    """Muon's Newton-Schulz iteration with np.matmul (what it uses) against minigrad's matmul kernel."""
    print("\nminigrad.optim.muon: Newton-Schulz through np.matmul or kernels.matmul (5 steps, float32)")
    print(f"{'shape':>12}  np.matmul (ms)  kernels.matmul (ms)  kernels / np  bit-identical")
    for shape in [(128, 128), (128, 512), (512, 128), (384, 384), (384, 1536)]:
        g = rng.standard_normal(shape).astype(np.float32)
        with setting(muon, "_matmul", K.matmul):
            kernel_result = muon.zeropower_via_newtonschulz5(g)
        same = np.array_equal(kernel_result, muon.zeropower_via_newtonschulz5(g))

        def at(mm):
            def call():
                with setting(muon, "_matmul", mm):
                    muon.zeropower_via_newtonschulz5(g)
            return call
        times = race({"np": at(np.matmul), "kernels": at(K.matmul)}, repeats)
        print(f"{str(shape):>12}  {times['np'] * 1e3:>14.2f}  {times['kernels'] * 1e3:>19.2f}  "
              f"{times['kernels'] / times['np']:>12.2f}  {same}")


SWEEPS = {name[len("sweep_"):]: fn for name, fn in globals().items() if name.startswith("sweep_")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"sweeps to run (default all): {', '.join(SWEEPS)}")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds per cell (default 5)")
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in SWEEPS]
    if unknown:
        parser.error(f"unknown sweep {unknown[0]!r}; choose from {', '.join(SWEEPS)}")
    print(f"numba threads: {numba.get_num_threads()}, threading layer after the first kernel is reported below")
    for name in args.names or SWEEPS:
        SWEEPS[name](args.repeats)
    print(f"\nnumba threading layer: {numba.threading_layer()}")


if __name__ == "__main__":
    main()
