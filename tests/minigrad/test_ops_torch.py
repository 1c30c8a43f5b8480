"""Forward values and gradients against PyTorch in float32, tinygrad style: the same lambda runs in
both libraries on the same random inputs, with a non-uniform upstream gradient."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import minigrad as mg
from minigrad import Tensor
from minigrad.nn import functional as F

TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
                np.dtype(np.int64): torch.int64, np.dtype(np.int32): torch.int32, np.dtype(np.bool_): torch.bool}


def _inputs(shapes, low, high, seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(low, high, s).astype(np.float32) if isinstance(s, tuple) else s for s in shapes]


def helper_test_op(shapes, mg_fn, torch_fn=None, low=-2.0, high=2.0, atol=1e-5, rtol=1e-4, grad_atol=None,
                   grad_rtol=None, seed=0, arrays=None, forward_only=False):
    """Run mg_fn on minigrad Tensors and torch_fn (default: mg_fn) on torch tensors made from the same
    arrays; compare outputs (value, shape, dtype), then backward a random upstream gradient through
    both and compare every input's gradient (value, shape, dtype)."""
    torch_fn = torch_fn or mg_fn
    arrays = arrays if arrays is not None else _inputs(shapes, low, high, seed)
    mg_in = [Tensor(a.copy(), requires_grad=not forward_only) for a in arrays]
    pt_in = [torch.tensor(a.copy(), requires_grad=not forward_only) for a in arrays]
    mg_out, pt_out = mg_fn(*mg_in), torch_fn(*pt_in)
    assert isinstance(mg_out, Tensor), type(mg_out)
    assert mg_out.shape == tuple(pt_out.shape), (mg_out.shape, tuple(pt_out.shape))
    assert TORCH_DTYPES[mg_out.dtype] == pt_out.dtype, (mg_out.dtype, pt_out.dtype)
    np.testing.assert_allclose(mg_out.data, pt_out.detach().numpy(), atol=atol, rtol=rtol)
    if forward_only:
        return mg_out, pt_out
    upstream = np.random.default_rng(seed + 1).standard_normal(mg_out.shape).astype(mg_out.dtype)
    upstream = upstream * np.linspace(0.5, 2.0, upstream.size, dtype=mg_out.dtype).reshape(upstream.shape)
    mg_out.backward(upstream)
    pt_out.backward(torch.tensor(upstream))
    for i, (m, p) in enumerate(zip(mg_in, pt_in)):
        if p.grad is None:
            assert m.grad is None or not m.grad.any(), f"input {i}: minigrad has a gradient, torch none"
            continue
        assert m.grad is not None, f"input {i}: torch has a gradient, minigrad none"
        assert m.grad.shape == tuple(p.grad.shape) and m.grad.dtype == m.dtype
        np.testing.assert_allclose(m.grad, p.grad.numpy(), atol=grad_atol or atol * 10, rtol=grad_rtol or rtol * 10,
                                   err_msg=f"gradient of input {i}")
    return mg_out, pt_out


def helper_test_raises(shapes, mg_fn, torch_fn=None, exceptions=(Exception,)):
    """Both libraries must reject the same bad input."""
    torch_fn = torch_fn or mg_fn
    arrays = _inputs(shapes, -1, 1, 0)
    with pytest.raises(Exception):
        torch_fn(*[torch.tensor(a) for a in arrays])
    with pytest.raises(exceptions):
        mg_fn(*[Tensor(a) for a in arrays])


# ---- the helper itself must be able to fail --------------------------------------------------------

def test_helper_catches_wrong_forward_grad_shape_and_dtype():
    with pytest.raises(AssertionError):
        helper_test_op([(3,)], lambda x: x * 2, lambda x: x * 2.001)
    with pytest.raises(AssertionError):  # same forward, wrong gradient
        helper_test_op([(3,)], lambda x: x.detach() * 0 + x * 2 - x.detach() + x.detach(),
                       lambda x: x * 3 - x.detach() * 1)
    with pytest.raises(AssertionError):
        helper_test_op([(2, 3)], lambda x: x.sum(1), lambda x: x.sum(1, keepdim=True))
    with pytest.raises(AssertionError):
        helper_test_op([(2,)], lambda x: x.double(), lambda x: x)
    with pytest.raises(pytest.fail.Exception):  # minigrad accepts what torch rejects
        helper_test_raises([(2, 3)], lambda x: x.reshape(3, 2), lambda x: x.reshape(4, 2))


# ---- elementwise -------------------------------------------------------------------------------

BINARY = [
    ("add", lambda x, y: x + y), ("sub", lambda x, y: x - y), ("mul", lambda x, y: x * y),
    ("div", lambda x, y: x / (y.abs() + 0.5)), ("pow", lambda x, y: (x.abs() + 0.5) ** y),
]
SHAPE_PAIRS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((2, 3, 4), (1, 3, 1)), ((), (3,))]


@pytest.mark.parametrize("name,fn", BINARY, ids=[b[0] for b in BINARY])
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
def test_binary(name, fn, shapes):
    helper_test_op(list(shapes), fn)


@pytest.mark.parametrize("fn", [
    lambda x: 2 + x, lambda x: x + 2, lambda x: 2 - x, lambda x: x - 2.5, lambda x: 3 * x, lambda x: x * 0.5,
    lambda x: 2 / (x.abs() + 0.5), lambda x: x / 3, lambda x: x ** 2, lambda x: x ** 3, lambda x: 2 ** x,
    lambda x: (x.abs() + 0.5) ** 0.5, lambda x: (x.abs() + 0.5) ** -1.5, lambda x: -x, lambda x: 1 - x * 2,
])
def test_scalar_and_reflected(fn):
    helper_test_op([(3, 4)], fn)


@pytest.mark.parametrize("fn", [
    lambda x: np.float32(2.0) * x, lambda x: x * np.float32(2.0),
])
def test_numpy_scalars(fn):
    helper_test_op([(3,)], fn)


def test_reflected_ndarray_operands():
    a = np.random.default_rng(5).uniform(0.5, 2, (3, 4)).astype(np.float32)
    for op in (lambda u, v: u + v, lambda u, v: u - v, lambda u, v: u * v, lambda u, v: u / v,
               lambda u, v: u ** v):
        helper_test_op([(3, 4)], lambda x: op(a, x.abs() + 0.5), lambda x: op(torch.tensor(a), x.abs() + 0.5))
    m = np.random.default_rng(6).standard_normal((2, 3)).astype(np.float32)
    helper_test_op([(3, 4)], lambda x: m @ x, lambda x: torch.tensor(m) @ x)


UNARY = [
    ("exp", lambda x: x.exp(), {}), ("log", lambda x: x.log(), {"low": 0.1}), ("sqrt", lambda x: x.sqrt(), {"low": 0.1}),
    ("rsqrt", lambda x: x.rsqrt(), {"low": 0.1}), ("reciprocal", lambda x: x.reciprocal(), {"low": 0.2}),
    ("tanh", lambda x: x.tanh(), {}), ("sigmoid", lambda x: x.sigmoid(), {"low": -20, "high": 20}),
    ("relu", lambda x: x.relu(), {}), ("square", lambda x: x.square(), {}), ("abs", lambda x: x.abs(), {}),
    ("neg", lambda x: -x, {}),
    ("clamp", lambda x: x.clamp(min=-0.5, max=0.7), {}), ("clamp_min", lambda x: x.clamp(min=0.1), {}),
    ("clamp_max", lambda x: x.clamp(max=-0.2), {}),
]


@pytest.mark.parametrize("name,fn,kw", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, fn, kw):
    helper_test_op([(4, 5)], fn, **kw)
    helper_test_op([()], fn, **kw)


def test_relu_abs_clamp_at_their_kinks():
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0], np.float32)
    helper_test_op(None, lambda t: t.relu(), arrays=[x])
    helper_test_op(None, lambda t: t.abs(), arrays=[x])
    helper_test_op(None, lambda t: t.clamp(min=0.0, max=1.0), arrays=[x])


# ---- matmul ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shapes", [
    ((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((1, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)),
    ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)),
], ids=str)
def test_matmul(shapes):
    helper_test_op(list(shapes), lambda x, y: x @ y)
    helper_test_op(list(shapes), lambda x, y: x.matmul(y))


# ---- reductions --------------------------------------------------------------------------------

REDUCE_DIMS = [None, 0, 1, -1, (0, 2), (-1, 0), (0, 1, 2)]


@pytest.mark.parametrize("dim", REDUCE_DIMS, ids=str)
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_mean_var(dim, keepdim):
    helper_test_op([(2, 3, 4)], lambda x: x.sum(dim=dim, keepdim=keepdim))
    helper_test_op([(2, 3, 4)], lambda x: x.mean(dim=dim, keepdim=keepdim))
    helper_test_op([(2, 3, 4)], lambda x: x.var(dim=dim, keepdim=keepdim))
    helper_test_op([(2, 3, 4)], lambda x: x.var(dim=dim, keepdim=keepdim, correction=0))
    if dim is None and not keepdim:
        helper_test_op([(2, 3, 4)], lambda x: x.sum())
        helper_test_op([(2, 3, 4)], lambda x: x.mean())
        helper_test_op([(2, 3, 4)], lambda x: x.var())


@pytest.mark.parametrize("dim", REDUCE_DIMS, ids=str)
@pytest.mark.parametrize("keepdim", [False, True])
def test_max(dim, keepdim):
    kw = {} if dim is None else {"dim": dim}
    if dim is None and not keepdim:
        helper_test_op([(2, 3, 4)], lambda x: x.max(), lambda x: x.max())
    helper_test_op([(2, 3, 4)], lambda x: x.amax(keepdim=keepdim, **kw), lambda x: x.amax(keepdim=keepdim, **kw))


def test_max_ties_share_the_gradient_like_amax():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], np.float32)
    helper_test_op(None, lambda t: t.amax(1), lambda t: t.amax(1), arrays=[x])
    helper_test_op(None, lambda t: t.max(), lambda t: t.amax(), arrays=[x])


def test_reductions_of_scalar_tensors():
    helper_test_op([()], lambda x: x.sum())
    helper_test_op([()], lambda x: x.mean())
    for dim in (0, -1):
        for keepdim in (False, True):
            helper_test_op([()], lambda x: x.sum(dim, keepdim=keepdim))
            helper_test_op([()], lambda x: x.mean(dim, keepdim=keepdim))
            helper_test_op([()], lambda x: x.amax(dim, keepdim=keepdim), lambda x: x.amax(dim, keepdim=keepdim))
            helper_test_op([()], lambda x: x.var(dim, keepdim=keepdim, correction=0))
    helper_test_raises([()], lambda x: x.sum(1))


# ---- movement ----------------------------------------------------------------------------------

MOVEMENT = [
    ("reshape", lambda x: x.reshape(4, 6)), ("reshape_tuple", lambda x: x.reshape((3, -1))),
    ("view", lambda x: x.view(2, 12)), ("view_tuple", lambda x: x.view((24,))),
    ("flatten", lambda x: x.flatten()), ("flatten_1", lambda x: x.flatten(1)), ("flatten_0_1", lambda x: x.flatten(0, 1)),
    ("transpose", lambda x: x.transpose(0, 2)), ("transpose_neg", lambda x: x.transpose(-1, -2)),
    ("permute", lambda x: x.permute(2, 0, 1)), ("permute_tuple", lambda x: x.permute((1, 2, 0))),
    ("permute_neg", lambda x: x.permute(-1, 0, 1)),
    ("expand", lambda x: x[:, :1].expand(2, 5, 4)), ("expand_lead", lambda x: x.expand(3, 2, 3, 4)),
    ("expand_neg", lambda x: x[:1].expand(5, -1, -1)),
    ("unsqueeze", lambda x: x.unsqueeze(1)), ("unsqueeze_neg", lambda x: x.unsqueeze(-1)),
    ("unsqueeze_end", lambda x: x.unsqueeze(3)),
    ("squeeze", lambda x: x[:, :1, None].squeeze()), ("squeeze_dim", lambda x: x[:, :1].squeeze(1)),
    ("squeeze_dim_noop", lambda x: x.squeeze(0)), ("squeeze_neg", lambda x: x[..., :1].squeeze(-1)),
    ("T", lambda x: x[0].T),
    ("split", lambda x: x.split(2, 2)[1]), ("split_uneven", lambda x: x.split(3, 2)[-1]),
    ("split_sizes", lambda x: x.split([1, 2], 1)[1]), ("split_neg", lambda x: x.split(1, -1)[3]),
    ("chunk", lambda x: x.chunk(2, 1)[1]), ("chunk_uneven", lambda x: x.chunk(3, 2)[-1]),
    ("chunk_more", lambda x: x.chunk(3, 0)[-1]),
]


@pytest.mark.parametrize("name,fn", MOVEMENT, ids=[m[0] for m in MOVEMENT])
def test_movement(name, fn):
    helper_test_op([(2, 3, 4)], fn)


def test_split_and_chunk_piece_counts_and_shapes():
    x = np.zeros((7, 5), np.float32)
    for args in [(2, 0), (3, 1), (7, 0), (10, 0), ([3, 4], 0), ([1, 1, 3], 1)]:
        mine, theirs = Tensor(x).split(*args), torch.tensor(x).split(*args)
        assert [p.shape for p in mine] == [tuple(p.shape) for p in theirs], args
    for args in [(3, 0), (2, 1), (7, 0), (4, 0), (6, 0)]:
        mine, theirs = Tensor(x).chunk(*args), torch.tensor(x).chunk(*args)
        assert [p.shape for p in mine] == [tuple(p.shape) for p in theirs], args


INDEX = [
    ("int", lambda x: x[1]), ("neg_int", lambda x: x[-1]), ("slice", lambda x: x[1:, :2]),
    ("step", lambda x: x[:, ::2]), ("step_start", lambda x: x[:, 1::2, 1:3]), ("none", lambda x: x[None, :, None]),
    ("ellipsis", lambda x: x[..., 1]), ("ellipsis_none", lambda x: x[0, ..., None]),
    ("int_array", lambda x: x[[0, 1, 0, 1]]), ("int_array_2d", lambda x: x[:, [2, 2, 0]]),
    ("pair_arrays", lambda x: x[[0, 1, 1], [2, 0, 2]]), ("array_then_slice", lambda x: x[[1, 1], 1:]),
    ("neg_array", lambda x: x[[-1, 0, -1]]), ("int_and_array", lambda x: x[1, [0, 0, 2]]),
    # an integer and an array separated by a slice: PyTorch indexes the integer first (NumPy would
    # move the array's dims to the front)
    ("int_slice_array", lambda x: x[1, :, [0, 3]]), ("array_slice_int", lambda x: x[[1, 0, 1], :, 2]),
    ("int_ellipsis_array", lambda x: x[0, ..., [1, 1]]), ("int_none_slice_array", lambda x: x[-1, None, 1:, [[0], [2]]]),
]


@pytest.mark.parametrize("name,fn", INDEX, ids=[i[0] for i in INDEX])
def test_getitem(name, fn):
    helper_test_op([(2, 3, 4)], fn)


def test_getitem_with_index_tensors():
    idx = np.array([[0, 2], [2, 2]])
    helper_test_op([(3, 4)], lambda x: x[Tensor(idx)], lambda x: x[torch.tensor(idx)])
    mask = np.array([True, False, True])
    helper_test_op([(3, 4)], lambda x: x[mask], lambda x: x[torch.tensor(mask)])


@pytest.mark.parametrize("dim", [0, 1, -1, -2])
def test_cat_stack(dim):
    shapes = [(2, 3), (2, 3), (2, 3)]
    helper_test_op(shapes, lambda *t: mg.cat(t, dim), lambda *t: torch.cat(t, dim))
    helper_test_op(shapes, lambda *t: mg.stack(t, dim), lambda *t: torch.stack(t, dim))
    unequal = [(2, 3), (4, 3)] if dim in (0, -2) else [(2, 3), (2, 1)]
    helper_test_op(unequal, lambda *t: mg.cat(t, dim), lambda *t: torch.cat(t, dim))


def test_stack_new_last_dim():
    helper_test_op([(2, 3), (2, 3)], lambda *t: mg.stack(t, 2), lambda *t: torch.stack(t, 2))
    helper_test_op([(2, 3), (2, 3)], lambda *t: mg.stack(t, -3), lambda *t: torch.stack(t, -3))


def test_where_and_masked_fill():
    cond = np.random.default_rng(3).random((3, 4)) > 0.5
    helper_test_op([(3, 4), (4,)], lambda a, b: mg.where(cond, a, b), lambda a, b: torch.where(torch.tensor(cond), a, b))
    helper_test_op([(3, 1)], lambda a: mg.where(cond, a, 0.5), lambda a: torch.where(torch.tensor(cond), a, 0.5))
    helper_test_op([(3, 4)], lambda a: a.masked_fill(cond, -2.0), lambda a: a.masked_fill(torch.tensor(cond), -2.0))
    row = cond[:1]
    helper_test_op([(3, 4)], lambda a: a.masked_fill(Tensor(row), 0.0), lambda a: a.masked_fill(torch.tensor(row), 0.0))
    helper_test_op([(3, 4)], lambda a: a.masked_fill(cond, float("-inf")).softmax(-1) if cond.any(1).all() else a,
                   lambda a: a.masked_fill(torch.tensor(cond), float("-inf")).softmax(-1) if cond.any(1).all() else a)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_log_softmax(dim):
    helper_test_op([(3, 4, 5)], lambda x: x.softmax(dim), low=-5, high=5)
    helper_test_op([(3, 4, 5)], lambda x: x.log_softmax(dim), low=-5, high=5)
    helper_test_op([(3, 4, 5)], lambda x: F.softmax(x, dim), lambda x: TF.softmax(x, dim))
    helper_test_op([(3, 4, 5)], lambda x: F.log_softmax(x, dim), lambda x: TF.log_softmax(x, dim))


def test_softmax_large_logits_are_stable():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1002.0, -1001.0]], np.float32)
    helper_test_op(None, lambda t: t.softmax(-1), arrays=[x])
    helper_test_op(None, lambda t: t.log_softmax(-1), arrays=[x])


def test_casts():
    helper_test_op([(3,)], lambda x: x.double() * 2, lambda x: x.double() * 2)
    helper_test_op([(3,)], lambda x: x.double().float(), lambda x: x.double().float())
    helper_test_op([(3,)], lambda x: x.to(np.float64), lambda x: x.to(torch.float64))


# ---- dtype promotion ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda lib, a: lib(a.astype(np.float32)) + 1.5,
    lambda lib, a: lib(a.astype(np.float32)) * 2,
    lambda lib, a: lib(a.astype(np.float32)) + lib(a.astype(np.float64)),
    lambda lib, a: lib(a.astype(np.float32)).mean(),
    lambda lib, a: lib(a.astype(np.float32)) / 3,
    lambda lib, a: lib(a.astype(np.int64)) + 1,
    lambda lib, a: lib(a.astype(np.int64)) * 2.5,
    lambda lib, a: lib(a.astype(np.int64)) / 2,
    lambda lib, a: lib(a.astype(np.int64)) + lib(a.astype(np.float32)),
])
def test_result_dtypes_match_torch(make):
    a = np.array([1, 2, 3])
    mine = make(Tensor, a)
    theirs = make(torch.tensor, a)
    assert TORCH_DTYPES[mine.dtype] == theirs.dtype, (mine.dtype, theirs.dtype)
    np.testing.assert_allclose(mine.data, theirs.numpy(), rtol=1e-6)


# ---- the same bad input is rejected by both ------------------------------------------------------

RAISES = [
    ("matmul_inner", [(2, 3), (4, 5)], lambda x, y: x @ y),
    ("matmul_batch", [(2, 2, 3), (3, 3, 4)], lambda x, y: x @ y),
    ("matmul_scalar", [(), (3,)], lambda x, y: x @ y),
    ("add_broadcast", [(2, 3), (4,)], lambda x, y: x + y),
    ("mul_broadcast", [(2, 3), (3, 2)], lambda x, y: x * y),
    ("reshape", [(2, 3)], lambda x: x.reshape(4, 2)),
    ("reshape_two_minus_one", [(2, 3)], lambda x: x.reshape(-1, -1)),
    ("view", [(2, 3)], lambda x: x.view(5)),
    ("sum_dim", [(2, 3)], lambda x: x.sum(2)),
    ("sum_neg_dim", [(2, 3)], lambda x: x.sum(-3)),
    ("mean_dim", [(2, 3)], lambda x: x.mean((0, 5))),
    ("max_dim", [(2, 3)], lambda x: x.amax(3)),
    ("softmax_dim", [(2, 3)], lambda x: x.softmax(2)),
    ("log_softmax_dim", [(2, 3)], lambda x: x.log_softmax(-3)),
    ("transpose_dim", [(2, 3)], lambda x: x.transpose(0, 2)),
    ("permute_short", [(2, 3, 4)], lambda x: x.permute(0, 1)),
    ("permute_repeat", [(2, 3, 4)], lambda x: x.permute(0, 1, 1)),
    ("unsqueeze_dim", [(2, 3)], lambda x: x.unsqueeze(4)),
    ("squeeze_dim", [(2, 3)], lambda x: x.squeeze(2)),
    ("expand_bad", [(2, 3)], lambda x: x.expand(2, 4)),
    ("expand_fewer_dims", [(2, 3)], lambda x: x.expand(3)),
    ("expand_minus_one_in_new_dim", [(2, 3)], lambda x: x.expand(-1, 2, 3)),
    ("index_out_of_range", [(2, 3)], lambda x: x[2]),
    ("index_array_out_of_range", [(2, 3)], lambda x: x[[0, 5]]),
    ("too_many_indices", [(2, 3)], lambda x: x[0, 0, 0]),
    ("split_sizes", [(5, 2)], lambda x: x.split([2, 2], 0)),
    ("flatten_dim", [(2, 3)], lambda x: x.flatten(3)),
    ("item_non_scalar", [(2, 3)], lambda x: x.item()),
    ("clamp_nothing", [(2, 3)], lambda x: x.clamp()),
]


@pytest.mark.parametrize("name,shapes,fn", RAISES, ids=[r[0] for r in RAISES])
def test_raises_like_torch(name, shapes, fn):
    helper_test_raises(shapes, fn)


def test_cat_stack_raise_like_torch():
    helper_test_raises([(2, 3), (2, 4)], lambda *t: mg.cat(t, 0), lambda *t: torch.cat(t, 0))
    helper_test_raises([(2, 3), (2, 3)], lambda *t: mg.cat(t, 2), lambda *t: torch.cat(t, 2))
    helper_test_raises([(2, 3), (3,)], lambda *t: mg.cat(t, 0), lambda *t: torch.cat(t, 0))
    helper_test_raises([(2, 3), (3, 2)], lambda *t: mg.stack(t), lambda *t: torch.stack(t))
    helper_test_raises([(2, 3)], lambda *t: mg.stack(t, 3), lambda *t: torch.stack(t, 3))
    with pytest.raises(Exception):
        torch.cat([])
    with pytest.raises(ValueError):
        mg.cat([])


def test_backward_errors_like_torch():
    helper_test_raises([(2, 3)], lambda x: x.requires_grad_().sum(0).backward())
    helper_test_raises([(2, 3)], lambda x: x.sum().backward())  # nothing requires grad
    with pytest.raises(Exception):
        torch.tensor([1, 2]).requires_grad_()
    with pytest.raises(TypeError):
        Tensor(np.array([1, 2])).requires_grad_()


def test_where_needs_a_boolean_condition():
    cond = np.array([1, 0, 1])
    with pytest.raises(Exception):
        torch.where(torch.tensor(cond), torch.zeros(3), torch.ones(3))
    with pytest.raises(TypeError):
        mg.where(cond, mg.zeros(3), mg.ones(3))
