"""matmul's few-rows paths (a @ W.T with up to STREAMED_ROWS rows streams W through
rows_by_weight_t; with fewer than FEW_ROWS it runs as (W @ a.T).T) agree with the NumPy twin and
return a C-contiguous array, for every layout of the operands."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigrad.kernels import _matmul as mm


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, mm.FEW_ROWS + 2), k=st.integers(1, 96), n=st.integers(1, 700),
       dtype=st.sampled_from([np.float32, np.float64]), transposed=st.booleans(), seed=st.integers(0, 99))
def test_few_rows_agree_with_the_twin(m, k, n, dtype, transposed, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k)).astype(dtype).T if transposed else rng.standard_normal((k, n)).astype(dtype)
    out = mm.matmul(a, b)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out, mm.matmul_reference(a, b), rtol=tol, atol=tol)
    assert out.shape == (m, n) and out.dtype == dtype
    if 1 < m < mm.FEW_ROWS <= n and transposed:  # the turned-around path hands back C order
        assert out.flags.c_contiguous


@pytest.mark.parametrize("lead", [(8, 1), (3, 5)])
def test_a_batch_of_decoding_rows_through_a_linear_weight(lead):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(lead + (384,)).astype(np.float32)
    w = rng.standard_normal((1536, 384)).astype(np.float32)
    np.testing.assert_allclose(mm.matmul(x, w.T), x @ w.T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("parts", [1, 3])
@pytest.mark.parametrize("m", [1, 3, 4, 5, 9, 16])
def test_rows_by_weight_t_agrees_with_float64_for_every_block_and_band_shape(m, parts):
    rng = np.random.default_rng(m)
    x, w = rng.standard_normal((m, 37)).astype(np.float32), rng.standard_normal((101, 37)).astype(np.float32)
    out = np.full((m, 101), np.nan, np.float32)  # every entry must be written
    mm.rows_by_weight_t(x, w, out, parts)
    np.testing.assert_allclose(out, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_rows_by_weight_t_propagates_nan_and_inf():
    x = np.ones((5, 4), np.float32)
    w = np.array([[1, 1, 1, np.nan], [1, np.inf, 1, 1], [1, 1, 1, 1]], np.float32)
    out = np.empty((5, 3), np.float32)
    mm.rows_by_weight_t(x, w, out, 2)
    assert np.isnan(out[:, 0]).all() and np.isposinf(out[:, 1]).all() and (out[:, 2] == 4).all()
