"""Fused kernels against their NumPy twins, the twins against torch, and the fused Functions
end to end (values and gradients) against torch."""
import hashlib
import importlib
import multiprocessing
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from minigrad import Tensor
from minigrad import kernels as K
from minigrad.kernels import attention as attention_module
from minigrad.kernels import elementwise as elementwise_module
from minigrad.kernels import norm as norm_module
from minigrad.nn import functional as F

matmul_module = importlib.import_module("minigrad.kernels.matmul")  # the package exports a function of that name
SETTINGS = settings(deadline=None, max_examples=30)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- attention

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
    np.testing.assert_allclose(out, ref_out, **_tol(dtype))
    np.testing.assert_allclose(p, ref_p, **_tol(dtype))
    grad = rng.standard_normal(out.shape).astype(dtype)
    got = K.attention_backward(q, k, v, out, p, grad, 0.37, offset, window)
    want = K.attention_backward_reference(q, k, v, ref_out, ref_p, grad, 0.37, offset, window)
    for g, w, x in zip(got, want, (q, k, v)):
        assert g.shape == w.shape == x.shape and g.dtype == dtype
        np.testing.assert_allclose(g, w, **_tol(dtype))


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
    assert tq > attention_module.BLOCK or tk > attention_module.BLOCK
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


def _misaligned(x):
    """x's values in a buffer that starts one byte past an aligned address."""
    raw = np.zeros(x.nbytes + 1, np.uint8)
    y = np.frombuffer(raw.data, x.dtype, x.size, offset=1).reshape(x.shape)
    y[...] = x
    return y


@pytest.mark.parametrize("make", [
    lambda x: np.broadcast_to(x[:, :1], x.shape),  # time stride 0: BLAS rejects a leading dim < D
    lambda x: x[:, ::-1],  # negative time stride
    lambda x: x[:, :1],  # one position: its stride is never stepped
    _misaligned,
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


# ---------------------------------------------------------------- split GEMM

@pytest.fixture
def split_every_product(monkeypatch):
    """Products of any size take the split path over numba's threads (when there are several)."""
    monkeypatch.setattr(matmul_module, "SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(matmul_module, "GEMV_SPLIT_MIN_WORK", 0)


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
    tol = _tol(dtype) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out, K.matmul_reference(a, b), **tol)
    for g, w in zip(got, K.matmul_backward_reference(a, b, grad)):
        np.testing.assert_allclose(g, w, **(tol if dtype == np.float64 else dict(rtol=1e-5, atol=1e-3)))


@pytest.mark.parametrize("shape_a, shape_b", [((1, 0), (0, 300)), ((40, 0), (0, 300))])
def test_split_gemm_with_empty_inner_dimension_is_zero(split_every_product, shape_a, shape_b):
    """k = 0: GEMV returns early without writing y, so the product must not reach it."""
    out = K.matmul(np.zeros(shape_a, np.float32), np.zeros(shape_b, np.float32))
    np.testing.assert_array_equal(out, np.zeros((shape_a[0], shape_b[1]), np.float32))


def test_split_gemm_takes_misaligned_operands(split_every_product):
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((64, 48)).astype(np.float32), rng.standard_normal((48, 200)).astype(np.float32)
    np.testing.assert_allclose(K.matmul(_misaligned(a), _misaligned(b)), a @ b, rtol=1e-5, atol=1e-4)


def test_kernels_fall_back_to_numpy_without_numpys_openblas(monkeypatch):
    """With another BLAS behind numpy (no OpenBLAS addresses), matmul uses np.matmul and attention
    its NumPy twin, with the same results."""
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((2, 70, 2, 8)).astype(np.float32) for _ in range(3))
    a, b = rng.standard_normal((300, 200)).astype(np.float32), rng.standard_normal((200, 90)).astype(np.float32)
    monkeypatch.setattr(matmul_module, "SPLIT_MIN_WORK", 0)  # the split path, had it an address
    fast = K.matmul(a, b), K.attention_forward(q, k, v, 0.3, 0)
    monkeypatch.setattr(importlib.import_module("minigrad.kernels.blas"), "ADDRESS", {})
    slow = K.matmul(a, b), K.attention_forward(q, k, v, 0.3, 0)
    np.testing.assert_allclose(fast[0], slow[0], rtol=1e-5, atol=1e-4)
    for f, s in zip(fast[1], slow[1]):
        np.testing.assert_allclose(f, s, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- rotary, relu²

def _rotary_composite(x, cos, sin):
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], -1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rotary_matches_torch_composite(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 3, 8)).astype(dtype)
    cos, sin = rng.standard_normal((2, 1, 5, 1, 4)).astype(dtype)
    mx = Tensor(x, requires_grad=True)
    y = F.rotary(mx, Tensor(cos), Tensor(sin))
    assert type(y._ctx).__name__ == "Rotary"
    grad = rng.standard_normal(y.shape).astype(dtype)
    y.backward(grad)
    tx = torch.tensor(x, requires_grad=True)
    ty = _rotary_composite(tx, torch.tensor(cos), torch.tensor(sin))
    ty.backward(torch.tensor(grad))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(mx.grad, tx.grad.numpy(), **_tol(dtype))


def test_rotary_rejects_odd_dim():
    with pytest.raises(ValueError, match="even"):
        F.rotary(Tensor(np.ones((1, 3), np.float32)), Tensor(np.ones(1, np.float32)), Tensor(np.ones(1, np.float32)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_squared_matches_torch(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 7)).astype(dtype)
    x[0, :3] = 0  # the kink: gradient 0 there, as torch's relu
    mx = Tensor(x, requires_grad=True)
    y = F.relu_squared(mx)
    grad = rng.standard_normal(y.shape).astype(dtype)
    y.backward(grad)
    tx = torch.tensor(x, requires_grad=True)
    ty = TF.relu(tx).square()
    ty.backward(torch.tensor(grad))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(mx.grad, tx.grad.numpy(), **_tol(dtype))


# ---------------------------------------------------------------- softcapped cross-entropy

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, v", [(6, 11), (300, 1000)])  # the second is big enough for the parallel driver
def test_softcap_cross_entropy_matches_twin(dtype, n, v):
    rng = np.random.default_rng(6)
    logits = (rng.standard_normal((n, v)) * 20).astype(dtype)  # past the cap, where tanh bends
    targets = rng.integers(0, v, n)
    targets[::5] = -1
    losses, lse = K.cross_entropy_forward(logits, targets, -1, softcap=15.0)
    ref_losses, ref_lse = K.cross_entropy_forward_reference(logits, targets, -1, softcap=15.0)
    np.testing.assert_allclose(losses, ref_losses, **_tol(dtype))
    np.testing.assert_allclose(lse, ref_lse, **_tol(dtype))
    grad_losses = rng.standard_normal(n).astype(dtype)
    got = K.cross_entropy_backward(logits, targets, lse, grad_losses, -1, softcap=15.0)
    want = K.cross_entropy_backward_reference(logits, targets, ref_lse, grad_losses, -1, softcap=15.0)
    np.testing.assert_allclose(got, want, **_tol(dtype))
    assert np.all(got[::5] == 0)
    # keeping the capped logits in the forward gives the same loss and a backward without tanh
    capped = np.empty_like(logits)
    kept_losses, kept_lse = K.cross_entropy_forward(logits, targets, -1, softcap=15.0, capped_out=capped)
    np.testing.assert_array_equal(kept_losses, losses)
    np.testing.assert_allclose(capped, dtype(15.0) * np.tanh(logits / dtype(15.0)), **_tol(dtype))
    kept = K.cross_entropy_backward(logits, targets, kept_lse, grad_losses, -1, softcap=15.0, capped=capped)
    np.testing.assert_allclose(kept, want, **_tol(dtype))


def test_capped_array_must_fit():
    logits = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="capped"):
        K.cross_entropy_forward(logits, np.zeros(2, np.int64), softcap=15.0, capped_out=np.empty((3, 2), np.float32))


def test_softcap_cross_entropy_matches_torch_composite():
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((9, 13)) * 20).astype(np.float32)
    targets = rng.integers(0, 13, 9)
    targets[2] = -1
    ml = Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(ml, targets, ignore_index=-1, softcap=15.0)
    loss.backward()
    tl = torch.tensor(logits, requires_grad=True)
    tloss = TF.cross_entropy(15.0 * torch.tanh(tl / 15.0), torch.tensor(targets), ignore_index=-1)
    tloss.backward()
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
    np.testing.assert_allclose(ml.grad, tl.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_softcap_must_be_positive(bad):
    with pytest.raises(ValueError, match="softcap"):
        K.cross_entropy_forward(np.ones((2, 3), np.float32), np.zeros(2, np.int64), softcap=bad)


# ---------------------------------------------------------------- linear

@pytest.mark.parametrize("shape", [(2, 5, 6), (7, 6)])
def test_linear_function_matches_torch(shape):
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    mx, mw = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    y = F.linear(mx, mw)
    assert type(y._ctx).__name__ == "Linear"
    grad = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(grad)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = TF.linear(tx, tw)
    ty.backward(torch.tensor(grad))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mx.grad, tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mw.grad, tw.grad.numpy(), rtol=1e-5, atol=1e-5)
    assert mw.grad.flags.c_contiguous



def test_float32_tanh_in_kernels_matches_numpy():
    from numba import njit

    from minigrad.kernels.cross_entropy import vtanh

    @njit
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = vtanh(x[i])

    x = np.concatenate([np.linspace(-12, 12, 20001), [0.0, -0.0, 0.625, -0.625, 1e-8, 50, -50, 1e30, -np.inf,
                                                      np.inf]]).astype(np.float32)
    out = np.empty_like(x)
    apply(x, out)
    np.testing.assert_allclose(out, np.tanh(x), rtol=4e-7, atol=1e-7)
    nan = np.array([np.nan], np.float32)
    apply(nan, nan)
    assert np.isnan(nan[0])


# ---------------------------------------------------------------- RMSNorm

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5, 16), (600, 384)])
@pytest.mark.parametrize("layout", ["c", "transposed"])
@pytest.mark.parametrize("parallel", [False, True])
def test_rms_norm_matches_twin(dtype, shape, layout, parallel, monkeypatch):
    monkeypatch.setattr(norm_module, "PARALLEL_MIN_ELEMENTS", 0 if parallel else 1 << 62)
    rng = np.random.default_rng(10)
    x = rng.standard_normal(shape).astype(dtype)
    if layout == "transposed":
        x = np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)
    eps = float(np.finfo(dtype).eps)
    out, rstd = K.rms_norm(x, eps)
    ref_out, ref_rstd = K.rms_norm_reference(x, eps)
    np.testing.assert_allclose(out, ref_out, **_tol(dtype))
    np.testing.assert_allclose(rstd, ref_rstd, **_tol(dtype))
    assert out.dtype == rstd.dtype == dtype and rstd.shape == shape[:-1] + (1,)
    grad = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_allclose(K.rms_norm_backward(out, rstd, grad),
                               K.rms_norm_backward_reference(ref_out, ref_rstd, grad), **_tol(dtype))


def test_rms_norm_twin_matches_torch():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 9))
    tx = torch.tensor(x, requires_grad=True)
    ty = TF.rms_norm(tx, (9,))
    grad = rng.standard_normal((4, 9))
    ty.backward(torch.tensor(grad))
    eps = float(np.finfo(np.float64).eps)
    out, rstd = K.rms_norm_reference(x, eps)
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.rms_norm_backward_reference(out, rstd, grad), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- rotary and relu² kernels

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 5, 3, 8), (8, 64, 6, 64)])
@pytest.mark.parametrize("parallel", [False, True])
def test_rotary_kernel_matches_twin(dtype, shape, parallel, monkeypatch):
    monkeypatch.setattr(elementwise_module, "ROTARY_PARALLEL_MIN", 0 if parallel else 1 << 62)
    rng = np.random.default_rng(12)
    x = rng.standard_normal(shape).astype(dtype)
    cos, sin = rng.standard_normal((2, 1, shape[1], 1, shape[3] // 2)).astype(dtype)
    np.testing.assert_allclose(K.rotary(x, cos, sin), K.rotary_reference(x, cos, sin), **_tol(dtype))
    strided = np.swapaxes(np.swapaxes(x, 1, 2).copy(), 1, 2)  # same values, not C-contiguous
    np.testing.assert_allclose(K.rotary(strided, cos, sin), K.rotary_reference(x, cos, sin), **_tol(dtype))


def test_rotary_kernel_other_shapes_take_the_twin():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    cos, sin = rng.standard_normal((2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(K.rotary(x, cos, sin), K.rotary_reference(x, cos, sin), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 9), (300, 1536)])
@pytest.mark.parametrize("parallel", [False, True])
def test_relu_squared_kernel_matches_twin(dtype, shape, parallel, monkeypatch):
    monkeypatch.setattr(elementwise_module, "RELU2_PARALLEL_MIN", 0 if parallel else 1 << 62)
    rng = np.random.default_rng(14)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, :3] = 0
    x = x.T  # not C-contiguous
    grad = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_allclose(K.relu_squared(x), K.relu_squared_reference(x), **_tol(dtype))
    np.testing.assert_allclose(K.relu_squared_backward(x, grad), K.relu_squared_backward_reference(x, grad),
                               **_tol(dtype))


# ---------------------------------------------------------------- optimizer updates

from minigrad.kernels import optim as optim_module  # noqa: E402


@pytest.mark.parametrize("parallel_min", [1 << 40, 1])  # serial and prange drivers
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,step,wd", [((7,), 1, 0.0), ((33, 17), 5, 0.1), ((4, 3, 65), 200, 0.01)])
def test_adamw_update_matches_twin_bitwise(monkeypatch, parallel_min, dtype, shape, step, wd):
    monkeypatch.setattr(optim_module, "ADAMW_PARALLEL_MIN", parallel_min)
    rng = np.random.default_rng(step)
    p, g, m = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(shape)).astype(dtype)
    a, b = [x.copy() for x in (p, g, m, v)], [x.copy() for x in (p, g, m, v)]
    optim_module.adamw_update_reference(*a, step, 3e-3, 0.8, 0.95, 1e-8, wd)
    optim_module.adamw_update(*b, step, 3e-3, 0.8, 0.95, 1e-8, wd)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_adamw_update_twin_matches_torch():
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal((2, 40, 9)).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    tp = torch.tensor(p.copy(), requires_grad=True)
    opt = torch.optim.AdamW([tp], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, foreach=False)
    for step in range(1, 4):
        optim_module.adamw_update(p, g, m, v, step, 1e-2, 0.9, 0.99, 1e-8, 0.1)
        tp.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_adamw_update_odd_layout_takes_twin():
    rng = np.random.default_rng(1)
    p = rng.standard_normal((8, 6)).astype(np.float32)
    g = np.asfortranarray(rng.standard_normal((8, 6)).astype(np.float32))
    a, b = [p.copy(), g, np.zeros_like(p), np.zeros_like(p)], [p.copy(), g, np.zeros_like(p), np.zeros_like(p)]
    optim_module.adamw_update_reference(*a, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    optim_module.adamw_update(*b, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("parallel_min", [1 << 40, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.0, 0.3, 0.85, 0.95])
@pytest.mark.parametrize("nesterov", [True, False])
def test_momentum_update_matches_twin_bitwise(monkeypatch, parallel_min, dtype, momentum, nesterov):
    monkeypatch.setattr(optim_module, "LERP_PARALLEL_MIN", parallel_min)
    rng = np.random.default_rng(2)
    buf, g = (rng.standard_normal((13, 29)).astype(dtype) for _ in range(2))
    g0 = g.copy()
    b1, b2 = buf.copy(), buf.copy()
    u1 = optim_module.momentum_update_reference(b1, g, momentum, nesterov)
    u2 = optim_module.momentum_update(b2, g, momentum, nesterov)
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(u1, u2)
    np.testing.assert_array_equal(g, g0)  # the gradient is left intact
    assert (u2 is b2) == (not nesterov)
    # torch.lerp's form, to rounding (torch's vectorised lerp may fuse its multiply-add)
    tb = torch.tensor(buf).lerp_(torch.tensor(g), 1 - momentum)
    np.testing.assert_allclose(b2, tb.numpy(), rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-7 if dtype == np.float32 else 1e-15)


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
