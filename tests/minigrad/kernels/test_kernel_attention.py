"""The fused attention kernels (_attention.py) against their NumPy twins, in every layout BLAS may be
handed."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_cases import SETTINGS, misaligned, tol
from minigrad import kernels as K
from minigrad.kernels import _attention


@st.composite
def attention_case(draw):
    b, d = draw(st.integers(1, 3)), draw(st.integers(1, 9))
    hk = draw(st.integers(1, 3))
    h = hk * draw(st.integers(1, 3))
    tq = draw(st.integers(1, 9))
    tk = tq if draw(st.booleans()) else draw(st.integers(1, 12))
    offset = draw(st.sampled_from([0, tk, max(tk - tq, 0)]))
    return (b, tq, h, d), (b, tk, hk, d), offset


def _check_attention_against_twin(q, k, v, offset, rng):
    dtype = q.dtype
    out, p = K.attention_forward(q, k, v, 0.37, offset)
    ref_out, ref_p = K.attention_forward_reference(q, k, v, 0.37, offset)
    np.testing.assert_allclose(out, ref_out, **tol(dtype))
    np.testing.assert_allclose(p, ref_p, **tol(dtype))
    grad = rng.standard_normal(out.shape).astype(dtype)
    got = K.attention_backward(q, k, v, out, p, grad, 0.37, offset)
    want = K.attention_backward_reference(q, k, v, ref_out, ref_p, grad, 0.37, offset)
    for g, w, x in zip(got, want, (q, k, v)):
        assert g.shape == w.shape == x.shape and g.dtype == dtype
        np.testing.assert_allclose(g, w, **tol(dtype))


@SETTINGS
@given(attention_case(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_attention_matches_twin(shapes, dtype, seed):
    q_shape, kv_shape, offset = shapes
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in (q_shape, kv_shape, kv_shape))
    _check_attention_against_twin(q, k, v, offset, rng)


@pytest.mark.parametrize("tq, tk, offset", [(150, 150, 0), (150, 150, 150), (70, 200, 130), (1, 200, 199)])
def test_attention_query_blocks_match_twin(tq, tk, offset):
    """Sequences longer than the kernel's query block (a partial last block too), where each block
    multiplies only the keys it sees; with grouped heads and a KV-cache-like offset."""
    assert tq > _attention.ATTENTION_BLOCK or tk > _attention.ATTENTION_BLOCK
    rng = np.random.default_rng(tq + tk + offset)
    q = rng.standard_normal((2, tq, 4, 16)).astype(np.float32)
    k, v = rng.standard_normal((2, 2, tk, 2, 16)).astype(np.float32)
    _check_attention_against_twin(q, k, v, offset, rng)


def test_attention_takes_non_contiguous_inputs():
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 3, 9, 8)).astype(np.float32).transpose(0, 2, 1, 3)[:, ::2] for _ in range(3))
    _check_attention_against_twin(q, k, v, 0, rng)


@pytest.mark.parametrize("make", [
    lambda x: np.broadcast_to(x[:, :1], x.shape),  # time stride 0: BLAS rejects a leading dim < D
    lambda x: x[:, ::-1],  # negative time stride
    lambda x: x[:, :1],  # one position: its stride is never stepped
    misaligned,
])
def test_attention_takes_any_layout_of_keys_and_queries(make):
    """Layouts BLAS cannot read in place are copied first: before, a time stride below D made
    OpenBLAS skip its call and left uninitialised memory in the output."""
    rng = np.random.default_rng(8)
    q, k, v = (make(rng.standard_normal((2, 5, 4, 8)).astype(np.float32)) for _ in range(3))
    _check_attention_against_twin(q, k, v, 0, rng)


def test_attention_ignores_offsets_past_the_keys():
    rng = np.random.default_rng(9)
    q = rng.standard_normal((1, 3, 2, 4)).astype(np.float32)
    _check_attention_against_twin(q, q, q, 2**63 - 1, rng)  # i + offset + 1 would overflow int64


@pytest.mark.parametrize("bad", ["grad dtype", "p dtype", "p shape", "out shape"])
def test_attention_backward_rejects_mismatched_operands(bad):
    """A float32 grad for float64 q (or a P of another shape) once made the kernel read out of
    bounds; it is refused with the operand named."""
    rng = np.random.default_rng(10)
    q = rng.standard_normal((2, 70, 2, 8))
    out, p = K.attention_forward(q, q, q, 0.3, 0)
    grad = rng.standard_normal(out.shape)
    if bad == "grad dtype":
        grad = grad.astype(np.float32)
    elif bad == "p dtype":
        p = p.astype(np.float32)
    elif bad == "p shape":
        p = p[:, :, :8]
    else:
        out = out[:, :8]
    name = bad.split()[0]
    for backward in (K.attention_backward, K.attention_backward_reference):
        with pytest.raises(ValueError, match=f"attention_backward {name} must be"):
            backward(q, q, q, out, p, grad, 0.3, 0)


def test_attention_rejects_negative_offset():
    x = np.ones((1, 2, 1, 4), np.float32)
    with pytest.raises(ValueError, match="offset must be >= 0"):
        K.attention_forward(x, x, x, 1.0, -1)


def test_attention_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes do not fit"):
        K.attention_forward(np.ones((1, 2, 3, 4), np.float32), np.ones((1, 2, 2, 4), np.float32),
                            np.ones((1, 2, 2, 4), np.float32), 1.0, 0)
