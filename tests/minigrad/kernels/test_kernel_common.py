"""The rules of _common.py that every kernel follows: other dtypes take the NumPy twin, and big
inputs the parallel driver."""
import numpy as np
import pytest

from minigrad import kernels as K
from minigrad.kernels import _common

rng = np.random.default_rng(0)
X = rng.standard_normal((4, 6))
Q = rng.standard_normal((1, 3, 2, 4))
TARGETS = np.array([0, 5, -1, 2])


def _cases(dtype):
    """(kernel, twin, arguments) for every public kernel that has a compiled loop."""
    x, q = X.astype(dtype), Q.astype(dtype)
    out, p = K.attention_forward_reference(q, q, q, 0.5, 0)
    lse = K.cross_entropy_forward_reference(x, TARGETS)[1]
    rstd = K.rms_norm_reference(x, 1e-6)[1]
    cos, sin = (np.ones((1, 3, 1, 2), dtype),) * 2
    return [
        (K.softmax, K.softmax_reference, (x,)),
        (K.softmax_backward, K.softmax_backward_reference, (x, x)),
        (K.log_softmax, K.log_softmax_reference, (x,)),
        (K.log_softmax_backward, K.log_softmax_backward_reference, (x, x)),
        (K.cross_entropy_forward, K.cross_entropy_forward_reference, (x, TARGETS, -1, 15.0)),
        (K.cross_entropy_backward, K.cross_entropy_backward_reference, (x, TARGETS, lse, x[:, 0], -1)),
        (K.rms_norm, K.rms_norm_reference, (x, 1e-6)),
        (K.rms_norm_backward, K.rms_norm_backward_reference, (x, rstd, x)),
        (K.relu_squared, K.relu_squared_reference, (x,)),
        (K.relu_squared_backward, K.relu_squared_backward_reference, (x, x)),
        (K.rotary, K.rotary_reference, (q, cos, sin)),
        (K.attention_forward, K.attention_forward_reference, (q, q, q, 0.5, 0)),
        (K.attention_backward, K.attention_backward_reference, (q, q, q, out, p, q, 0.5, 0)),
        (K.matmul, K.matmul_reference, (x, x.T)),
        (K.matmul_backward, K.matmul_backward_reference, (x, x.T, x @ x.T)),
    ]


@pytest.mark.parametrize("index", range(len(_cases(np.float16))))
def test_other_dtypes_take_the_twin(index):
    """float16 is no compiled dtype: each kernel returns exactly what its twin returns."""
    kernel, twin, args = _cases(np.float16)[index]
    got, want = kernel(*args), twin(*args)
    for g, w in zip(*((r if isinstance(r, tuple) else (r,)) for r in (got, want))):
        assert g.dtype == w.dtype == np.float16
        np.testing.assert_array_equal(g, w)


def test_optimizer_updates_take_the_twin_for_other_dtypes():
    p, g = (rng.standard_normal(7).astype(np.float16) for _ in range(2))
    a, b = [p.copy(), g, np.zeros_like(p), np.zeros_like(p)], [p.copy(), g, np.zeros_like(p), np.zeros_like(p)]
    K.adamw_update(*a, 1, 1e-3, 0.9, 0.999, 1e-8, 0.1)
    K.adamw_update_reference(*b, 1, 1e-3, 0.9, 0.999, 1e-8, 0.1)
    np.testing.assert_array_equal(a[0], b[0])
    buf1, buf2 = np.ones(7, np.float16), np.ones(7, np.float16)
    np.testing.assert_array_equal(K.momentum_update(buf1, g, 0.9, True), K.momentum_update_reference(buf2, g, 0.9, True))
    np.testing.assert_array_equal(buf1, buf2)


def test_integer_softmax_takes_the_twin():
    x = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(K.softmax(x), K.softmax_reference(x))


def test_softcapped_fallback_fills_the_capped_logits():
    x = X.astype(np.float16)
    capped = np.empty_like(x)
    K.cross_entropy_forward(x, TARGETS, -1, 15.0, capped_out=capped)
    np.testing.assert_array_equal(capped, np.float16(15.0) * np.tanh(x / np.float16(15.0)))


def test_compiled_dtypes():
    assert _common.compiled(np.ones(2, np.float32), np.ones(2, np.float64))
    assert not _common.compiled(np.ones(2, np.float32), np.ones(2, np.float16))
    assert not _common.compiled(np.ones(2, np.int64))


@pytest.mark.parametrize("threads, n, want", [(2, 99, "serial"), (2, 100, "parallel"), (1, 10**9, "serial")])
def test_pick_takes_the_parallel_driver_from_the_threshold_with_threads(monkeypatch, threads, n, want):
    monkeypatch.setattr(_common.numba, "get_num_threads", lambda: threads)
    assert _common.pick("serial", "parallel", n, 100) == want


def test_ops_never_chooses_a_twin():
    """The fallback lives in the kernels: ops.py calls the public kernel and names no _reference."""
    import inspect

    from minigrad import ops
    assert "_reference" not in inspect.getsource(ops)



_COMPILE_ONCE = """
import numpy as np
from minigrad import kernels as K
from minigrad.kernels import _matmul, _norm
x = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
for threshold in (1 << 62, 0):
    _norm.RMS_NORM_PARALLEL_MIN = threshold
    K.rms_norm(x, 1e-6)
_matmul.GEMM_SPLIT_MIN_WORK = 0
K.matmul(x, x)
print(len(_norm._rms_row.signatures), len(_matmul._gemm_block.signatures))
"""


def test_row_helpers_compile_once_for_serial_and_parallel_drivers(tmp_path):
    """numba types a prange index both uint64 and int64; a helper that takes the index compiles once
    per type unless the parallel drivers pass it as int64, as the serial ones do (a first-run cost).
    Run from an empty numba cache, since helpers of cached drivers never compile."""
    import os
    import subprocess
    import sys
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=root, NUMBA_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", _COMPILE_ONCE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]


def test_every_kernel_divides_as_numpy_does():
    """error_model="numpy" on every kernel: a division by zero gives inf/NaN as in the NumPy twins
    (numba's default raises ZeroDivisionError) and leaves no check in loops that divide, which LLVM
    could then not vectorise."""
    import importlib
    import pkgutil

    from numba.core.registry import CPUDispatcher
    kernels = [obj for info in pkgutil.iter_modules(K.__path__)
               for obj in vars(importlib.import_module(f"minigrad.kernels.{info.name}")).values()
               if isinstance(obj, CPUDispatcher)]
    assert len(kernels) > 40
    assert [k.py_func.__qualname__ for k in kernels if k.targetoptions.get("error_model") != "numpy"] == []


def test_a_kernel_dividing_by_zero_gives_the_twins_inf_and_nan():
    x = np.zeros((2, 4), np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = K.rms_norm_reference(x, 0.0)
    got = K.rms_norm(x, 0.0)  # rstd = 1 / sqrt(0)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
