"""The fused attention kernels (_attention.py) against their NumPy twins, in every layout BLAS may be
handed."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
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


def _check_attention_against_twin(q, k, v, offset, rng, window=None):
    dtype = q.dtype
    out, p = K.attention_forward(q, k, v, 0.37, offset, window)
    ref_out, ref_p = K.attention_forward_reference(q, k, v, 0.37, offset, window)
    np.testing.assert_allclose(out, ref_out, **tol(dtype))
    np.testing.assert_allclose(p, ref_p, **tol(dtype))
    grad = rng.standard_normal(out.shape).astype(dtype)
    got = K.attention_backward(q, k, v, out, p, grad, 0.37, offset, window)
    want = K.attention_backward_reference(q, k, v, ref_out, ref_p, grad, 0.37, offset, window)
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


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 70), st.integers(0, 70), st.integers(0, 80), st.sampled_from([1, 2]),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_attention_sliding_window_matches_twin(b, tq, prefix, window, group, dtype, seed):
    """Bottom-right causal with a window, as training (no prefix), a decode step or a chunked
    prefill on top of a cache (prefix keys) use it; windows wider and narrower than the sequence."""
    rng = np.random.default_rng(seed)
    tk = tq + prefix
    q = rng.standard_normal((b, tq, 2 * group, 8)).astype(dtype)
    k, v = rng.standard_normal((2, b, tk, 2, 8)).astype(dtype)
    _check_attention_against_twin(q, k, v, prefix, rng, window)


@pytest.mark.parametrize("tq, tk, window", [(200, 200, 0), (200, 200, 37), (150, 150, 128), (70, 300, 64), (1, 300, 100)])
def test_attention_window_across_query_blocks(tq, tk, window):
    """Windows across the kernel's query blocks: each block multiplies only the band of keys its rows
    see, and the probabilities outside each row's window are exact zeros."""
    rng = np.random.default_rng(tq + tk + window)
    q = rng.standard_normal((2, tq, 4, 16)).astype(np.float32)
    k, v = rng.standard_normal((2, 2, tk, 2, 16)).astype(np.float32)
    _check_attention_against_twin(q, k, v, tk - tq, rng, window)
    _, p = K.attention_forward(q, k, v, 0.3, tk - tq, window)
    i = np.arange(tq)[:, None] + tk - tq
    j = np.arange(tk)[None, :]
    assert np.all(p[:, :, (j < i - window) | (j > i)] == 0)
    assert np.all(p[:, :, (j >= i - window) & (j <= i)] > 0)


@pytest.mark.parametrize("tq", [1, 64])
def test_attention_window_never_reads_keys_left_of_it(tq):
    """Keys left of every query's window are skipped, not computed and masked: NaNs there (which a
    masked product would carry, 0 * NaN) leave a decode step and a chunked prefill finite."""
    rng = np.random.default_rng(4)
    prefix, window = 300, 50
    q = rng.standard_normal((1, tq, 2, 16)).astype(np.float32)
    k, v = rng.standard_normal((2, 1, prefix + tq, 2, 16)).astype(np.float32)
    k[:, :prefix - window], v[:, :prefix - window] = np.nan, np.nan
    out, p = K.attention_forward(q, k, v, 0.3, prefix, window)
    grads = K.attention_backward(q, k, v, out, p, rng.standard_normal(out.shape).astype(np.float32), 0.3, prefix, window)
    assert np.isfinite(out).all() and all(np.isfinite(g[:, prefix - window:]).all() for g in grads[1:])
    assert np.isfinite(grads[0]).all()
    assert not np.isfinite(K.attention_forward_reference(q, k, v, 0.3, prefix, window)[0]).all()  # the twin masks


def test_attention_window_equals_torch_masked_sdpa():
    """The NumPy twin's window against PyTorch with an explicit band mask (nanochat's SDPA fallback)."""
    rng = np.random.default_rng(3)
    q = rng.standard_normal((1, 9, 2, 4))
    k, v = rng.standard_normal((2, 1, 20, 2, 4))
    out, _ = K.attention_forward_reference(q, k, v, 0.5, 11, 3)
    row = 11 + torch.arange(9)[:, None]
    col = torch.arange(20)[None, :]
    t = lambda x: torch.from_numpy(x).transpose(1, 2)  # noqa: E731
    want = TF.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=(col <= row) & (row - col <= 3), scale=0.5)
    np.testing.assert_allclose(out, want.transpose(1, 2).numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("window, tq, offset, tk", [(-1, 2, 0, 2), (3, 4, 1, 4)])
def test_attention_rejects_bad_windows(window, tq, offset, tk):
    """A negative window, or a window with queries past the last key (whose own key is absent)."""
    q, k = np.ones((1, tq, 1, 4)), np.ones((1, tk, 1, 4))
    for forward in (K.attention_forward, K.attention_forward_reference):
        with pytest.raises(ValueError, match="attention window"):
            forward(q, k, k, 1.0, offset, window)


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
