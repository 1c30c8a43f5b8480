"""The matmul kernel (_matmul.py): fast path against its NumPy twin in every layout, split over
threads or not, and the twin against torch."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernel_cases import DTYPES, LAYOUTS, SETTINGS, make_array, misaligned, tol
from minigrad import kernels as K
from minigrad.kernels import _matmul


@st.composite
def matmul_case(draw):
    dims = st.integers(1, 9)
    n, k, m = draw(dims), draw(dims), draw(dims)
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    # each operand keeps a suffix of the batch dims, some of them squeezed to 1
    def own(b):
        b = b[len(b) - draw(st.integers(0, len(b))):]
        return tuple(1 if draw(st.booleans()) else d for d in b)
    return own(batch) + (n, k), own(batch) + (k, m)


@SETTINGS
@given(matmul_case(), DTYPES, LAYOUTS, LAYOUTS, st.integers(0, 2**32 - 1))
def test_matmul_matches_twin(shapes, dtype, layout_a, layout_b, seed):
    rng = np.random.default_rng(seed)
    a = make_array(rng, shapes[0], dtype, layout_a)
    b = make_array(rng, shapes[1], dtype, layout_b)
    out = K.matmul(a, b)
    ref = K.matmul_reference(a, b)
    assert out.shape == ref.shape and out.dtype == dtype
    np.testing.assert_allclose(out, ref, **tol(dtype, np.sqrt(shapes[0][-1])))
    grad = make_array(rng, ref.shape, dtype, "c")
    for got, want, shape in zip(K.matmul_backward(a, b, grad), K.matmul_backward_reference(a, b, grad), shapes):
        assert got.shape == want.shape == shape
        np.testing.assert_allclose(got, want, **tol(dtype, 10.0))


@pytest.mark.parametrize("layout", ["c", "transposed"])
def test_matmul_folded_gpt_like(layout):
    """The 3-D @ 2-D path (batch folded into one GEMM) at a non-trivial size."""
    rng = np.random.default_rng(0)
    a = make_array(rng, (3, 40, 48), np.float32, layout)
    b = make_array(rng, (48, 72), np.float32, "c")
    grad = make_array(rng, (3, 40, 72), np.float32, "c")
    np.testing.assert_allclose(K.matmul(a, b), a @ b, rtol=1e-5, atol=1e-4)
    ga, gb = K.matmul_backward(a, b, grad)
    np.testing.assert_allclose(ga, grad @ b.T, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gb, np.einsum("bnk,bnm->km", a, grad), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape_a, shape_b", [((3, 1, 4, 5), (2, 5, 6)), ((4, 5), (2, 3, 5, 6)), ((2, 7, 3), (3, 4))])
def test_matmul_twin_matches_torch(shape_a, shape_b):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    out = ta @ tb
    grad = rng.standard_normal(tuple(out.shape))
    out.backward(torch.tensor(grad))
    np.testing.assert_allclose(K.matmul_reference(a, b), out.detach().numpy(), rtol=1e-12, atol=1e-12)
    ga, gb = K.matmul_backward_reference(a, b, grad)
    np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [K.matmul, K.matmul_reference])
def test_matmul_inner_mismatch_raises(fn):
    with pytest.raises(ValueError, match="inner dimensions differ"):
        fn(np.ones((2, 3, 4)), np.ones((5, 6)))
    with pytest.raises(ValueError, match="ndim >= 2"):
        fn(np.ones(4), np.ones((4, 6)))


@pytest.mark.parametrize("fn", [K.matmul_backward, K.matmul_backward_reference])
def test_matmul_backward_bad_grad_raises(fn):
    with pytest.raises(ValueError, match="grad has shape"):
        fn(np.ones((2, 3, 4)), np.ones((4, 6)), np.ones((2, 3, 5)))


@pytest.fixture
def split_every_product(monkeypatch):
    """Products of any size take the split path over numba's threads (when there are several)."""
    monkeypatch.setattr(_matmul, "GEMM_SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(_matmul, "GEMV_SPLIT_MIN_WORK", 0)


def _layout(x, how):
    """x with the same values in another memory layout: row-major, column-major with padded columns
    (BLAS reads it as a transpose with a leading dimension past its rows), or strided (copied)."""
    if how == "F":
        padded = np.zeros((x.shape[1], x.shape[0] + 3), x.dtype)
        padded[:, :x.shape[0]] = x.T
        return padded[:, :x.shape[0]].T
    if how == "strided":
        wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x


@pytest.mark.parametrize("shape_a, shape_b", [
    ((3, 100, 48), (48, 1000)),  # batch folded into rows, split by rows
    ((300, 200), (200, 90)),
    ((1, 384), (384, 1536)),  # one row: GEMV, split by columns
    ((3, 64), (64, 1000)),  # few rows: GEMM split by columns
])
@pytest.mark.parametrize("layout_a, layout_b", [("C", "C"), ("F", "F"), ("strided", "C"), ("C", "strided")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_gemm_matches_twin(split_every_product, shape_a, shape_b, layout_a, layout_b, dtype):
    """Big enough that the product is split over numba's threads, with operands BLAS reads directly
    (row- or column-major) and ones it cannot (copied first)."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(shape_a).astype(dtype), rng.standard_normal(shape_b).astype(dtype)
    if len(shape_a) == 2:
        a = _layout(a, layout_a)
    b = _layout(b, layout_b)
    out = K.matmul(a, b)
    grad = rng.standard_normal(out.shape).astype(dtype)
    got = K.matmul_backward(a, b, grad)
    close = tol(dtype) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out, K.matmul_reference(a, b), **close)
    for g, w in zip(got, K.matmul_backward_reference(a, b, grad)):
        np.testing.assert_allclose(g, w, **(close if dtype == np.float64 else dict(rtol=1e-5, atol=1e-3)))


@pytest.mark.parametrize("shape_a, shape_b", [((1, 0), (0, 300)), ((40, 0), (0, 300))])
def test_split_gemm_with_empty_inner_dimension_is_zero(split_every_product, shape_a, shape_b):
    """k = 0: GEMV returns early without writing y, so the product must not reach it."""
    out = K.matmul(np.zeros(shape_a, np.float32), np.zeros(shape_b, np.float32))
    np.testing.assert_array_equal(out, np.zeros((shape_a[0], shape_b[1]), np.float32))


def test_split_gemm_takes_misaligned_operands(split_every_product):
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((64, 48)).astype(np.float32), rng.standard_normal((48, 200)).astype(np.float32)
    np.testing.assert_allclose(K.matmul(misaligned(a), misaligned(b)), a @ b, rtol=1e-5, atol=1e-4)
