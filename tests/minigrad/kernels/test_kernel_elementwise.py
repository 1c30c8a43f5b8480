"""The rotary and relu² kernels (_elementwise.py) against their NumPy twins, serial and parallel."""
import numpy as np
import pytest

from kernel_cases import tol
from minigrad import kernels as K
from minigrad.kernels import _elementwise


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 5, 3, 8), (8, 64, 6, 64)])
@pytest.mark.parametrize("parallel", [False, True])
def test_rotary_kernel_matches_twin(dtype, shape, parallel, monkeypatch):
    monkeypatch.setattr(_elementwise, "ROTARY_PARALLEL_MIN", 0 if parallel else 1 << 62)
    rng = np.random.default_rng(12)
    x = rng.standard_normal(shape).astype(dtype)
    cos, sin = rng.standard_normal((2, 1, shape[1], 1, shape[3] // 2)).astype(dtype)
    np.testing.assert_allclose(K.rotary(x, cos, sin), K.rotary_reference(x, cos, sin), **tol(dtype))
    strided = np.swapaxes(np.swapaxes(x, 1, 2).copy(), 1, 2)  # same values, not C-contiguous
    np.testing.assert_allclose(K.rotary(strided, cos, sin), K.rotary_reference(x, cos, sin), **tol(dtype))


def test_rotary_kernel_other_shapes_take_the_twin():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    cos, sin = rng.standard_normal((2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(K.rotary(x, cos, sin), K.rotary_reference(x, cos, sin), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 9), (300, 1536)])
@pytest.mark.parametrize("parallel", [False, True])
def test_relu_squared_kernel_matches_twin(dtype, shape, parallel, monkeypatch):
    monkeypatch.setattr(_elementwise, "RELU2_PARALLEL_MIN", 0 if parallel else 1 << 62)
    rng = np.random.default_rng(14)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, :3] = 0
    x = x.T  # not C-contiguous
    grad = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_allclose(K.relu_squared(x), K.relu_squared_reference(x), **tol(dtype))
    np.testing.assert_allclose(K.relu_squared_backward(x, grad), K.relu_squared_backward_reference(x, grad),
                               **tol(dtype))
