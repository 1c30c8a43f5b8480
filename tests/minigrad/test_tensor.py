"""The Tensor API: construction, attributes, backward semantics, no_grad, creation functions, gradcheck."""
import sys

import numpy as np
import pytest

import minigrad as mg
from minigrad import Function, Tensor, gradcheck, GradcheckError


# ---- construction and dtypes ------------------------------------------------------------------

def test_python_floats_default_to_float32():
    assert Tensor([1.0, 2.5]).dtype == np.float32
    assert Tensor(3.0).dtype == np.float32
    assert Tensor([[1, 2.0]]).dtype == np.float32
    assert mg.tensor([0.5]).dtype == np.float32


def test_python_ints_stay_integer():
    assert np.issubdtype(Tensor([1, 2, 3]).dtype, np.integer)


def test_float64_arrays_stay_float64():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = Tensor(a)
    assert t.dtype == np.float64
    assert (t.data == a).all()
    assert mg.tensor(a).dtype == np.float64
    assert Tensor(np.float64(2.0)).dtype == np.float64


def test_explicit_dtype_wins():
    assert Tensor([1.0, 2.0], dtype=np.float64).dtype == np.float64
    assert Tensor(np.ones(2, np.float64), dtype=np.float32).dtype == np.float32


def test_int_tensors_cannot_require_grad():
    with pytest.raises(TypeError):
        Tensor([1, 2, 3], requires_grad=True)
    t = Tensor(np.arange(3))
    with pytest.raises(TypeError):
        t.requires_grad_()
    assert t.requires_grad is False


def test_grad_shape_and_dtype_match_the_tensor():
    for dtype in (np.float32, np.float64):
        x = Tensor(np.ones((2, 3), dtype), requires_grad=True)
        (x * 2).sum().backward()
        assert x.grad.shape == (2, 3)
        assert x.grad.dtype == dtype
        np.testing.assert_array_equal(x.grad, np.full((2, 3), 2, dtype))


def test_grad_of_broadcast_operand_has_its_own_shape_and_dtype():
    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    b = Tensor(np.ones((3,), np.float64), requires_grad=True)
    (x * b).sum().backward()
    assert b.grad.shape == (3,) and b.grad.dtype == np.float64
    assert x.grad.shape == (2, 3) and x.grad.dtype == np.float32
    np.testing.assert_array_equal(b.grad, [2, 2, 2])


def test_T_transposes_last_two_dims():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(Tensor(a).T.data, a.T)
    assert Tensor(a).T.shape == (3, 2)
    b = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(Tensor(b).T.data, b.swapaxes(-1, -2))
    v = Tensor([1.0, 2.0])
    assert v.T.shape == (2,)


def test_T_backward():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    w = np.arange(6.0).reshape(3, 2)
    (x.T * Tensor(w)).sum().backward()
    np.testing.assert_array_equal(x.grad, w.T)


def test_numpy_returns_the_data():
    a = np.arange(4, dtype=np.float32)
    t = Tensor(a)
    assert isinstance(t.numpy(), np.ndarray)
    np.testing.assert_array_equal(t.numpy(), a)


def test_item():
    assert Tensor(3.5).item() == 3.5
    assert isinstance(Tensor(3.5).item(), float)
    assert Tensor([[7]]).item() == 7
    with pytest.raises(ValueError, match="one element"):
        Tensor([1.0, 2.0]).item()
    with pytest.raises(ValueError):
        Tensor(np.zeros((0,))).item()


def test_detach_cuts_the_graph_and_shares_data():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    d = y.detach()
    assert d.requires_grad is False and d.is_leaf
    np.testing.assert_array_equal(d.data, [3.0, 6.0])
    z = (d * x).sum()
    z.backward()
    np.testing.assert_array_equal(x.grad, [3.0, 6.0])  # only the direct path, not through d


def test_requires_grad_():
    x = Tensor([1.0, 2.0])
    assert x.requires_grad is False
    assert x.requires_grad_() is x
    assert x.requires_grad is True
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    x.requires_grad_(False)
    assert x.requires_grad is False
    assert (x * x).requires_grad is False


def test_ops_on_tensors_without_grad_record_nothing():
    x = Tensor([1.0, 2.0])
    y = x * 2 + 1
    assert y.requires_grad is False and y.is_leaf
    with pytest.raises(RuntimeError):
        y.sum().backward()


def test_backward_on_non_scalar_without_grad_is_a_clear_error():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="scalar"):
        y.backward()
    assert x.grad is None


def test_backward_with_explicit_grad():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).backward(np.array([1.0, 10.0, 100.0]))
    np.testing.assert_allclose(x.grad, [2.0, 40.0, 600.0])


def test_backward_with_wrong_grad_shape_raises():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match="shape"):
        (x * 2).backward(np.ones(3))


def test_gradients_accumulate_across_backward_calls():
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [2 + 3, 4 + 3])


def test_gradient_of_a_reused_tensor_sums_over_all_uses():
    x = Tensor([2.0, -1.0], requires_grad=True)
    y = x * x * x + x  # x used four times
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 3 * x.data ** 2 + 1)


def test_diamond_graph():
    x = Tensor([0.5, 1.5], requires_grad=True)
    a = x.exp()
    b = a * 2
    c = a * a
    (b + c).sum().backward()
    e = np.exp(x.data)
    np.testing.assert_allclose(x.grad, 2 * e + 2 * e * e, rtol=1e-6)


def test_second_backward_through_released_graph_raises():
    x = Tensor([1.0, 2.0], requires_grad=True)
    loss = (x.exp() * 2).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_second_backward_through_a_shared_released_subgraph_raises():
    x = Tensor([1.0, 2.0], requires_grad=True)
    h = x.exp()
    (h * 2).sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        (h * 3).sum().backward()


def test_long_chain_under_default_recursion_limit():
    assert sys.getrecursionlimit() <= 10_000
    x = Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-3)


def test_long_chain_can_be_freed_without_backward():
    x = Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y + 1.0
    assert y.item() == 10_001
    del y  # freeing a deep graph must not overflow the C stack


# ---- no_grad ----------------------------------------------------------------------------------

def test_no_grad_context_manager():
    x = Tensor([1.0, 2.0], requires_grad=True)
    assert mg.is_grad_enabled()
    with mg.no_grad():
        assert not mg.is_grad_enabled()
        y = x * 2
    assert mg.is_grad_enabled()
    assert y.requires_grad is False and y.is_leaf
    with pytest.raises(RuntimeError):
        y.sum().backward()


def test_no_grad_restores_on_exception_and_nests():
    with pytest.raises(ZeroDivisionError):
        with mg.no_grad():
            1 / 0
    assert mg.is_grad_enabled()
    with mg.no_grad():
        with mg.no_grad():
            pass
        assert not mg.is_grad_enabled()
    assert mg.is_grad_enabled()


def test_no_grad_decorator():
    x = Tensor([1.0, 2.0], requires_grad=True)

    @mg.no_grad()
    def f(t):
        """doc"""
        return t * 2

    y = f(x)
    assert y.requires_grad is False and y.is_leaf
    assert f.__doc__ == "doc" and f.__name__ == "f"
    assert mg.is_grad_enabled()
    assert (x * 2).requires_grad


def test_no_grad_bare_decorator():
    x = Tensor([1.0, 2.0], requires_grad=True)

    @mg.no_grad
    def f(t):
        assert not mg.is_grad_enabled()
        return t * 2

    y = f(x)
    assert y.requires_grad is False and y.is_leaf
    assert f.__name__ == "f"
    assert mg.is_grad_enabled()


# ---- creation -----------------------------------------------------------------------------------

def test_creation_functions():
    assert mg.zeros(2, 3).shape == (2, 3) and mg.zeros(2, 3).dtype == np.float32
    assert mg.zeros((2, 3)).shape == (2, 3)
    assert (mg.zeros(4).data == 0).all()
    assert (mg.ones(2, 2).data == 1).all() and mg.ones(2, 2).dtype == np.float32
    assert mg.ones(3, dtype=np.float64).dtype == np.float64
    f = mg.full((2, 3), 7.5)
    assert f.shape == (2, 3) and (f.data == 7.5).all() and f.dtype == np.float32
    assert mg.full(4, 1.0).shape == (4,)
    np.testing.assert_array_equal(mg.arange(5).data, np.arange(5))
    assert np.issubdtype(mg.arange(5).dtype, np.integer)
    np.testing.assert_array_equal(mg.arange(2, 8, 2).data, [2, 4, 6])
    fa = mg.arange(0, 1, 0.25)
    assert fa.dtype == np.float32
    np.testing.assert_array_equal(fa.data, [0, 0.25, 0.5, 0.75])
    assert mg.tensor([1.0], requires_grad=True).requires_grad
    assert mg.zeros(2, requires_grad=True).requires_grad
    t = Tensor(np.ones((3, 2), np.float64))
    assert mg.zeros_like(t).shape == (3, 2) and mg.zeros_like(t).dtype == np.float64
    assert (mg.zeros_like(t).data == 0).all()
    assert mg.ones_like(t).dtype == np.float64 and (mg.ones_like(t).data == 1).all()
    assert mg.ones_like(t, dtype=np.float32).dtype == np.float32


def test_random_creation_shapes_dtypes_and_ranges():
    mg.manual_seed(0)
    r = mg.randn(200, 50)
    assert r.shape == (200, 50) and r.dtype == np.float32
    assert abs(r.data.mean()) < 0.05 and abs(r.data.std() - 1) < 0.05
    u = mg.rand(1000)
    assert u.dtype == np.float32 and (u.data >= 0).all() and (u.data < 1).all()
    assert mg.randn(2, 2, dtype=np.float64).dtype == np.float64
    assert mg.randn((3, 4)).shape == (3, 4)


def test_manual_seed_reproducibility():
    mg.manual_seed(1234)
    a, b = mg.randn(3, 4), mg.rand(5)
    mg.manual_seed(1234)
    c, d = mg.randn(3, 4), mg.rand(5)
    np.testing.assert_array_equal(a.data, c.data)
    np.testing.assert_array_equal(b.data, d.data)
    mg.manual_seed(4321)
    assert not np.array_equal(mg.randn(3, 4).data, a.data)
    mg.manual_seed(7)
    l1 = mg.nn.Linear(3, 2)
    mg.manual_seed(7)
    l2 = mg.nn.Linear(3, 2)
    np.testing.assert_array_equal(l1.weight.data, l2.weight.data)


# ---- reflected ops -------------------------------------------------------------------------------

def test_reflected_ops_with_python_scalars():
    x = Tensor([1.0, 2.0, 4.0])
    for result, expected in [
        (2 + x, [3, 4, 6]), (x + 2, [3, 4, 6]),
        (2 - x, [1, 0, -2]), (x - 2, [-1, 0, 2]),
        (3 * x, [3, 6, 12]), (x * 3, [3, 6, 12]),
        (8 / x, [8, 4, 2]), (x / 2, [0.5, 1, 2]),
        (2 ** x, [2, 4, 16]), (x ** 2, [1, 4, 16]),
        (-x, [-1, -2, -4]),
    ]:
        assert isinstance(result, Tensor)
        assert result.dtype == np.float32  # a Python number does not promote a float32 tensor
        np.testing.assert_allclose(result.data, expected)


def test_reflected_ops_with_ndarrays():
    x = Tensor(np.array([1.0, 2.0, 4.0], np.float32), requires_grad=True)
    a = np.array([2.0, 3.0, 5.0], np.float32)
    for result, expected in [
        (a + x, a + x.data), (a - x, a - x.data), (a * x, a * x.data),
        (a / x, a / x.data), (a ** x, a ** x.data),
    ]:
        assert isinstance(result, Tensor), type(result)
        assert result.requires_grad
        np.testing.assert_allclose(result.data, expected, rtol=1e-6)
    m = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = m @ x
    assert isinstance(out, Tensor) and out.shape == (2,)
    np.testing.assert_allclose(out.data, m @ x.data)
    (a - x).sum().backward()
    np.testing.assert_array_equal(x.grad, [-1, -1, -1])


def test_reflected_pow_gradient():
    x = Tensor([0.5, 1.0, 2.0], dtype=np.float64, requires_grad=True)
    (3.0 ** x).sum().backward()
    np.testing.assert_allclose(x.grad, np.log(3.0) * 3.0 ** x.data)


def test_rsub_and_rtruediv_gradients():
    x = Tensor([1.0, 2.0], dtype=np.float64, requires_grad=True)
    (5 - x).sum().backward()
    np.testing.assert_array_equal(x.grad, [-1, -1])
    x.grad = None
    (6 / x).sum().backward()
    np.testing.assert_allclose(x.grad, -6 / x.data ** 2)


# ---- gradcheck itself -----------------------------------------------------------------------------

class _WrongSquare(Function):
    """x² whose backward is wrong for one element only."""

    def forward(self, a):
        self.a = a
        return a * a

    def backward(self, grad):
        g = 2 * self.a * grad
        g.flat[3] += 1.0
        return g


class _RightSquare(Function):
    def forward(self, a):
        self.a = a
        return a * a

    def backward(self, grad):
        return 2 * self.a * grad


def test_gradcheck_passes_a_correct_function():
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3)), requires_grad=True)
    assert gradcheck(lambda t: _RightSquare.apply(t), [x]) is True


def test_gradcheck_names_the_wrong_element():
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3)), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"index \(1, 0\)"):
        gradcheck(lambda t: _WrongSquare.apply(t), [x])


def test_gradcheck_names_the_wrong_input():
    a = Tensor(np.random.default_rng(1).standard_normal((2, 3)), requires_grad=True)
    b = Tensor(np.random.default_rng(2).standard_normal((2, 3)), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"input 1 .*index \(1, 0\)"):
        gradcheck(lambda p, q: p * 2 + _WrongSquare.apply(q), [a, b])


def test_gradcheck_catches_a_gradient_that_ignores_the_upstream_gradient():
    class SumLike(Function):
        def forward(self, a):
            return a * 3

        def backward(self, grad):
            return np.full_like(grad, 3.0)  # forgets to multiply by grad

    x = Tensor(np.ones(4), requires_grad=True)
    with pytest.raises(GradcheckError):
        gradcheck(lambda t: SumLike.apply(t), [x])


def test_gradcheck_fails_on_a_nan_gradient():
    class NanGrad(Function):
        def forward(self, a):
            return a * 2

        def backward(self, grad):
            g = grad * 2
            g[1] = np.nan
            return g

    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"index \(1,\)"):
        gradcheck(lambda t: NanGrad.apply(t), [x])


def test_gradcheck_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError):
        gradcheck(lambda t: t * 2, [Tensor(np.ones(2))])


def test_gradcheck_leaves_inputs_unchanged():
    a = np.random.default_rng(3).standard_normal((3, 2))
    before = a.copy()
    gradcheck(lambda t: t.tanh(), [Tensor(a, requires_grad=True)])
    np.testing.assert_array_equal(a, before)


def test_enable_grad_records_inside_no_grad():
    x = mg.ones(2, requires_grad=True)
    with mg.no_grad():
        assert (x * 2)._ctx is None
        with mg.enable_grad():
            y = x * 2
            assert mg.is_grad_enabled() and y.requires_grad
        assert not mg.is_grad_enabled()
    y.sum().backward()
    assert np.array_equal(x.grad, [2.0, 2.0])

    @mg.enable_grad
    def doubled(t):
        return t * 2
    with mg.no_grad():
        assert doubled(x).requires_grad
