"""The RMSNorm kernels (_norm.py) against their NumPy twins, and the twins against torch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from kernel_cases import tol
from minigrad import kernels as K
from minigrad.kernels import _norm


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5, 16), (600, 384)])
@pytest.mark.parametrize("layout", ["c", "transposed"])
@pytest.mark.parametrize("parallel", [False, True])
def test_rms_norm_matches_twin(dtype, shape, layout, parallel, monkeypatch):
    monkeypatch.setattr(_norm, "RMS_NORM_PARALLEL_MIN", 0 if parallel else 1 << 62)
    rng = np.random.default_rng(10)
    x = rng.standard_normal(shape).astype(dtype)
    if layout == "transposed":
        x = np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)
    eps = float(np.finfo(dtype).eps)
    out, rstd = K.rms_norm(x, eps)
    ref_out, ref_rstd = K.rms_norm_reference(x, eps)
    np.testing.assert_allclose(out, ref_out, **tol(dtype))
    np.testing.assert_allclose(rstd, ref_rstd, **tol(dtype))
    assert out.dtype == rstd.dtype == dtype and rstd.shape == shape[:-1] + (1,)
    grad = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_allclose(K.rms_norm_backward(out, rstd, grad),
                               K.rms_norm_backward_reference(ref_out, ref_rstd, grad), **tol(dtype))


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
