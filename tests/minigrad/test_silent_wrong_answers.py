"""Each of these gave a wrong answer without any error before issue 13; each compares with torch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import minigrad as mg
from minigrad import Tensor
from minigrad.nn import functional as F

NAN = float("nan")


def grads(fn_mg, fn_pt, values, upstream=None):
    """(minigrad output, gradient), (torch output, gradient) of fn on the same float32 values."""
    x, t = Tensor(np.array(values, np.float32), requires_grad=True), torch.tensor(values, requires_grad=True)
    y, u = fn_mg(x), fn_pt(t)
    g = np.ones(y.shape, np.float32) if upstream is None else np.asarray(upstream, np.float32)
    y.backward(g)
    u.backward(torch.tensor(g))
    return (y.data, x.grad), (u.detach().numpy(), t.grad.numpy())


def assert_same(mine, theirs):
    for a, b in zip(mine, theirs):
        np.testing.assert_allclose(a, b, equal_nan=True)


@pytest.mark.parametrize("op", ["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"])
@pytest.mark.parametrize("other", [np.array([[1.0], [3.0]], np.float32), 2.0, 2])
def test_comparisons_are_elementwise_bool_tensors(op, other):
    a = np.array([1.0, 2.0, 3.0], np.float32)
    mine = getattr(Tensor(a), op)(Tensor(other) if isinstance(other, np.ndarray) else other)
    theirs = getattr(torch.tensor(a), op)(torch.tensor(other) if isinstance(other, np.ndarray) else other)
    assert isinstance(mine, Tensor) and mine.dtype == np.bool_
    np.testing.assert_array_equal(mine.data, theirs.numpy())


def test_logical_operators_and_truth_value():
    a, b = Tensor(np.array([True, False, True])), Tensor(np.array([True, True, False]))
    ta, tb = torch.tensor(a.data), torch.tensor(b.data)
    for mine, theirs in [(a & b, ta & tb), (a | b, ta | tb), (a ^ b, ta ^ tb), (~a, ~ta)]:
        np.testing.assert_array_equal(mine.data, theirs.numpy())
    np.testing.assert_array_equal((~Tensor(np.array([3, 0]))).data, (~torch.tensor([3, 0])).numpy())
    with pytest.raises(RuntimeError):
        bool(Tensor(np.zeros(2)))
    assert bool(Tensor(1.0)) and not bool(Tensor([0.0]))
    assert (Tensor(1.0) == None) is False  # noqa: E711 (PyTorch's answer, not an error)
    assert len({Tensor(1.0), Tensor(1.0)}) == 2  # still hashable by identity


def test_max_and_min_with_dim_return_values_and_indices():
    x = np.array([[1.0, 5.0, 5.0], [7.0, 2.0, 3.0]], np.float32)
    for name in ("max", "min"):
        for keepdim in (False, True):
            mine, theirs = getattr(Tensor(x), name)(1, keepdim), getattr(torch.tensor(x), name)(1, keepdim)
            values, indices = mine  # unpacks like torch's named tuple
            assert mine[0] is values and mine.indices is indices
            np.testing.assert_array_equal(values.data, theirs.values.numpy())
            np.testing.assert_array_equal(indices.data, theirs.indices.numpy())
            assert indices.dtype == np.int64 and values.shape == tuple(theirs.values.shape)
    # the old max(dim) returned the values alone, so max(dim=1)[0] silently took row 0
    assert Tensor(x).max(dim=1)[0].shape == (2,)
    # the gradient goes to the returned index, not shared between ties (that is amax)
    assert_same(*grads(lambda t: t.max(1).values, lambda t: t.max(1).values, x, [1.0, 2.0]))
    assert_same(*grads(lambda t: t.amax(1), lambda t: t.amax(1), x, [1.0, 2.0]))


@pytest.mark.parametrize("name", ["relu", "abs", "relu_squared", "max", "max_dim"])
def test_nan_propagates_as_in_torch(name):
    fns = {"relu": (lambda t: t.relu(), torch.relu), "abs": (lambda t: t.abs(), torch.abs),
           "relu_squared": (F.relu_squared, lambda t: TF.relu(t).square()),
           "max": (lambda t: t.max(), lambda t: t.max()),
           "max_dim": (lambda t: t.max(0).values, lambda t: t.max(0).values)}
    mine, theirs = grads(*fns[name], [NAN, 1.0, -1.0, 0.0])
    assert_same(mine, theirs)


def test_relu_squared_kernel_propagates_nan_at_parallel_sizes():
    x = np.full(1 << 17, NAN, np.float32)
    from minigrad import kernels
    assert np.isnan(kernels.relu_squared(x)).all()
    assert np.isnan(kernels.relu_squared_backward(x, np.ones_like(x))).all()


@pytest.mark.parametrize("base,exponent", [([0.0, 0.0, 2.0], [0.0, 2.0, 0.0]), ([0.0, 1.0], [3.0, 0.0])])
def test_pow_gradients_at_zero_base(base, exponent):
    a, b = Tensor(np.array(base, np.float32), requires_grad=True), Tensor(np.array(exponent, np.float32), requires_grad=True)
    ta, tb = torch.tensor(base, requires_grad=True), torch.tensor(exponent, requires_grad=True)
    (a ** b).sum().backward()
    (ta ** tb).sum().backward()
    np.testing.assert_allclose(a.grad, ta.grad.numpy())
    np.testing.assert_allclose(b.grad, tb.grad.numpy())
    assert_same(*grads(lambda t: t ** 0, lambda t: t ** 0, [0.0, 1.0]))
    assert_same(*grads(lambda t: 0.0 ** t, lambda t: 0.0 ** t, [0.0, 2.0]))


def test_attention_float_mask_gets_a_gradient_and_hidden_rows_are_zero():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 3, 4)).astype(np.float32) for _ in range(3))
    mask = rng.standard_normal((3, 3)).astype(np.float32)
    mask[1] = -np.inf  # query 1 may see no key
    mine = [Tensor(a, requires_grad=True) for a in (q, k, v, mask)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v, mask)]
    out = F.scaled_dot_product_attention(*mine[:3], attn_mask=mine[3])
    ref = TF.scaled_dot_product_attention(*theirs[:3], attn_mask=theirs[3])
    np.testing.assert_allclose(out.data, ref.detach().numpy(), atol=1e-5)
    upstream = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(upstream)
    ref.backward(torch.tensor(upstream))
    for m, t in zip(mine, theirs):
        assert m.grad is not None
        np.testing.assert_allclose(m.grad, t.grad.numpy(), atol=1e-5)
    boolean = np.ones((3, 3), bool)
    boolean[2] = False
    out = F.scaled_dot_product_attention(*(Tensor(a) for a in (q, k, v)), attn_mask=boolean)
    ref = TF.scaled_dot_product_attention(*(torch.tensor(a) for a in (q, k, v)), attn_mask=torch.tensor(boolean))
    np.testing.assert_allclose(out.data, ref.numpy(), atol=1e-5)


def test_softmax_of_a_scalar_tensor():
    for dim in (0, -1):
        np.testing.assert_allclose(Tensor(np.float32(3.0)).softmax(dim).data, torch.tensor(3.0).softmax(dim).numpy())
        np.testing.assert_allclose(Tensor(np.float32(3.0)).log_softmax(dim).data,
                                   torch.tensor(3.0).log_softmax(dim).numpy())


@pytest.mark.parametrize("make", [
    lambda lib: lib.full((2,), 4), lambda lib: lib.full((2,), True), lambda lib: lib.full((2,), 4.5),
    lambda lib: lib.zeros(3) + lib.tensor(1.0, dtype=lib.float64),
    lambda lib: lib.tensor([1, 2]) + lib.tensor(1.5, dtype=lib.float64),
    lambda lib: lib.tensor([1, 2], dtype=lib.int32) + lib.tensor(1),
    lambda lib: lib.tensor([1, 2], dtype=lib.int32) + 7,
    lambda lib: lib.tensor([True, False]) + 2, lambda lib: lib.tensor([True, False]) * 1.5,
    lambda lib: lib.tensor(2, dtype=lib.int32) + lib.tensor([1.0], dtype=lib.float64),
    lambda lib: lib.tensor([1, 2]) / lib.tensor([2, 2]),
])
def test_type_promotion_follows_torch(make):
    mine, theirs = make(mg), make(torch)
    assert str(mine.dtype) == str(theirs.dtype).removeprefix("torch."), (mine.dtype, theirs.dtype)
    np.testing.assert_allclose(mine.data, theirs.numpy())


def test_maximum_minimum_and_sort_propagate_nan_like_torch():
    a = np.array([NAN, 1.0, 2.0, 3.0], np.float32)
    b = np.array([0.0, NAN, 2.0, 1.0], np.float32)
    for name in ("maximum", "minimum"):
        np.testing.assert_array_equal(getattr(Tensor(a), name)(Tensor(b)).data,
                                      getattr(torch.tensor(a), name)(torch.tensor(b)).numpy())
    for descending in (False, True):
        mine, theirs = Tensor(a).sort(descending=descending), torch.tensor(a).sort(descending=descending)
        np.testing.assert_array_equal(mine.values.data, theirs.values.numpy())
        np.testing.assert_array_equal(mine.indices.data, theirs.indices.numpy())
