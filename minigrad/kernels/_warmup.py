"""A first run's compile on two cores instead of one: a process of its own compiles, in reverse, the
kernels a training run meets last (the optimizer's, decoding's, the backward pass's), while the run
compiles what it meets first.

numba compiles one kernel at a time on one core, and a training run meets its kernels one at a
time, so with an empty cache every other core idles through most of a first run. Both processes
write numba's on-disk cache (each file atomically); when the run reaches a kernel the warm-up has
already compiled, it loads it. The run computes exactly what it would have: the same kernels,
compiled by another process. The warm-up drives the public kernels on tiny float32 inputs twice,
forcing the parallel then the serial driver, so it compiles the signatures a run uses.

Re-measure: python benchmarks/bench_startup.py (cold first run against warm).
"""
import atexit
import contextlib
import os
import subprocess
import sys

import numpy as np

from . import _cross_entropy, _elementwise, _matmul, _norm, _optim, _softmax
from . import (adamw_update, attention_backward, attention_forward, attention_forward_reference, cross_entropy_backward,
               cross_entropy_forward, cross_entropy_forward_reference, matmul, matmul_backward, momentum_update,
               relu_squared, relu_squared_backward, rms_norm, rms_norm_backward, rms_norm_reference, rotary)


def compile_in_background():
    """Start the warm-up when numba's cache has never seen a training run's kernels; it ends when
    this process does. Returns the warm-up's process, or None."""
    try:  # numba's own file for the optimizer's parallel driver, which any training step compiles
        index = _optim._adamw_parallel._cache._cache_file._index_path
    except AttributeError:  # caching off, or another numba
        return None
    if os.path.exists(index) or not os.access(os.path.dirname(index) or ".", os.W_OK):
        return None
    try:
        warmup = subprocess.Popen([sys.executable, "-c", f"import {__name__}; {__name__}.warm_up()"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:  # no process to spare (limits, memory): the run compiles everything itself, as before
        return None
    atexit.register(_stop, warmup)
    return warmup


def _stop(warmup):
    """End the warm-up with its run: what it compiled so far is cached, the rest waits for another run."""
    warmup.kill()
    warmup.wait()


@contextlib.contextmanager
def _forced(parallel):
    """Every kernel takes its parallel (or its serial) driver whatever the input's size."""
    modules = (_cross_entropy, _elementwise, _norm, _optim, _softmax)
    saved = [m.pick for m in modules], _matmul.GEMM_SPLIT_MIN_WORK, _matmul.GEMV_SPLIT_MIN_WORK
    for module in modules:
        module.pick = (lambda serial, par, n, least: par) if parallel else (lambda serial, par, n, least: serial)
    _matmul.GEMM_SPLIT_MIN_WORK = _matmul.GEMV_SPLIT_MIN_WORK = 0 if parallel else 1 << 62
    try:
        yield
    finally:
        for module, pick in zip(modules, saved[0]):
            module.pick = pick
        _matmul.GEMM_SPLIT_MIN_WORK, _matmul.GEMV_SPLIT_MIN_WORK = saved[1:]


def warm_up():
    """Compile, in the reverse of a training run's order: optimizer, decoding, backward, forward (a
    backward's inputs come from the NumPy twins, so no forward kernel compiles early)."""
    rng = np.random.default_rng(0)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    logits, targets, capped, q, k, v, x = r(8, 16), rng.integers(0, 16, 8), r(8, 16), *(r(2, 8, 2, 4) for _ in "qkv"), \
        r(4, 8, 16)
    lse = cross_entropy_forward_reference(logits, targets, -1, 15.0)[1]
    out, p = attention_forward_reference(q, k, v, 0.5, 0)
    y, rstd = rms_norm_reference(x, 1e-6)
    steps = [
        lambda: momentum_update(np.zeros((8, 8), np.float32), r(8, 8), 0.95, True),
        lambda: adamw_update(r(64), r(64), np.zeros(64, np.float32), np.zeros(64, np.float32), 1, 1e-3, 0.9, 0.95,
                             1e-8, 0.0),
        lambda: matmul(r(1, 32), r(64, 32).T),  # a decoding step's row through a weight
        lambda: rms_norm_backward(y, rstd, r(4, 8, 16)),
        lambda: attention_backward(q, k, v, out, p, r(2, 8, 2, 4), 0.5, 0),
        lambda: relu_squared_backward(x, r(4, 8, 16)),
        lambda: matmul_backward(r(64, 16), r(16, 32), r(64, 32)),
        lambda: cross_entropy_backward(logits, targets, lse, np.ones(8, np.float32), -1, 15.0, capped),
        lambda: cross_entropy_forward(logits, targets, -1, 15.0, np.empty((8, 16), np.float32)),
        lambda: matmul(r(64, 16), r(32, 16).T),
        lambda: relu_squared(x),
        lambda: attention_forward(q, k, v, 0.5, 0),
        lambda: rotary(r(2, 8, 2, 4), r(1, 8, 1, 2), r(1, 8, 1, 2)),
        lambda: rms_norm(x, 1e-6),
    ]
    for step in steps:
        for parallel in (True, False):
            with _forced(parallel):
                step()
