"""Calling numpy's OpenBLAS from numba (_blas.py): what happens without it, and parallel kernels after a
fork."""
import hashlib
import multiprocessing
import sys

import numpy as np
import pytest

from minigrad import kernels as K
from minigrad.kernels import _blas, _matmul


def test_kernels_fall_back_to_numpy_without_numpys_openblas(monkeypatch):
    """With another BLAS behind numpy (no OpenBLAS addresses), matmul uses np.matmul and attention
    its NumPy twin, with the same results."""
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((2, 70, 2, 8)).astype(np.float32) for _ in range(3))
    a, b = rng.standard_normal((300, 200)).astype(np.float32), rng.standard_normal((200, 90)).astype(np.float32)
    monkeypatch.setattr(_matmul, "GEMM_SPLIT_MIN_WORK", 0)  # the split path, had it an address
    fast = K.matmul(a, b), K.attention_forward(q, k, v, 0.3, 0)
    monkeypatch.setattr(_blas, "ADDRESS", {})
    slow = K.matmul(a, b), K.attention_forward(q, k, v, 0.3, 0)
    np.testing.assert_allclose(fast[0], slow[0], rtol=1e-5, atol=1e-4)
    for f, s in zip(fast[1], slow[1]):
        np.testing.assert_allclose(f, s, rtol=1e-5, atol=1e-6)


def _parallel_kernel_results():
    """Digests of a split GEMM and a parallel RMSNorm (small to send through a pipe)."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((512, 512)).astype(np.float32)
    x = rng.standard_normal((4096, 64)).astype(np.float32)
    return [hashlib.sha256(r.tobytes()).hexdigest() for r in (K.matmul(a, a), K.rms_norm(x, 1e-6)[0])]


def _parallel_kernels_in_child(queue):
    queue.put(_parallel_kernel_results())


@pytest.mark.skipif(sys.platform != "linux", reason="the fork start method is Linux's default")
def test_parallel_kernels_survive_fork():
    """A multiprocessing child forked after the parent ran parallel kernels can run them too (under
    GNU OpenMP, numba terminates such a child; the TBB layer does not)."""
    want = _parallel_kernel_results()  # parallel regions in the parent first
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_parallel_kernels_in_child, args=(queue,))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    assert queue.get(timeout=10) == want
