"""Issue 13's differentiable operations through minigrad.gradcheck in float64, on hypothesis-drawn
shapes, broadcasting pairs and non-contiguous inputs (the helpers of tests/test_ops_gradcheck.py)."""
import sys
from pathlib import Path

import numpy as np
from hypothesis import given, strategies as st

import minigrad as mg
from minigrad import Tensor
from minigrad.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the helpers' file, in tests/ or here
from test_ops_gradcheck import SETTINGS, broadcast_pair, check, make, param, shapes  # noqa: E402

UNARY = {  # name: (fn, kind of input it needs)
    "sin": (lambda x: x.sin(), "normal"), "cos": (lambda x: x.cos(), "normal"),
    "tan": (lambda x: (x * 0.5).tan(), "normal"), "atan": (lambda x: x.atan(), "normal"),
    "asin": (lambda x: (x * 0.3).asin(), "normal"), "acos": (lambda x: (x * 0.3).acos(), "normal"),
    "sinh": (lambda x: x.sinh(), "normal"), "cosh": (lambda x: x.cosh(), "normal"),
    "erf": (lambda x: x.erf(), "normal"), "exp2": (lambda x: x.exp2(), "normal"),
    "log2": (lambda x: x.log2(), "positive"), "silu": (F.silu, "normal"), "gelu": (F.gelu, "normal"),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), "normal"),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), "nonzero"), "elu": (F.elu, "nonzero"),
    "celu": (lambda x: F.celu(x, 0.7), "nonzero"), "selu": (F.selu, "nonzero"), "softplus": (F.softplus, "normal"),
    "mish": (F.mish, "normal"), "logsigmoid": (F.logsigmoid, "normal"), "softsign": (F.softsign, "nonzero"),
    "hardswish": (lambda x: F.hardswish(x * 2.1), "nonzero"),
    "floor": (lambda x: x.floor() + x, "normal"), "sign": (lambda x: x.sign() * x, "nonzero"),
}


@SETTINGS
@given(st.data(), shapes, st.sampled_from(sorted(UNARY)))
def test_unary(data, shape, name):
    fn, kind = UNARY[name]
    x = make(data, shape, kind)
    if name in ("floor", "sign"):  # keep away from the jumps, where finite differences see a step
        x = np.where(np.abs(x - np.round(x)) < 0.05, x + 0.1, x)
    check(fn, Tensor(x, requires_grad=True))


@SETTINGS
@given(st.data(), broadcast_pair(), st.sampled_from(["maximum", "minimum", "lerp", "remainder"]))
def test_binary_broadcast(data, pair, op):
    a, b = param(data, pair[0], "distinct"), param(data, pair[1], "distinct")
    if op == "maximum":
        check(lambda x, y: x.maximum(y), a, b)
    elif op == "minimum":
        check(lambda x, y: mg.minimum(x, y), a, b)
    elif op == "lerp":
        check(lambda x, y: x.lerp(y, 0.3), a, b)
    else:  # away from the jumps of floor(a / b)
        bb = Tensor(np.abs(b.data) + 1.3, requires_grad=True)
        aa = Tensor(np.round(a.data / 1.3) * 1.3 + 0.4, requires_grad=True)
        check(lambda x, y: x % y, aa, bb)


@SETTINGS
@given(st.data(), shapes, st.integers(0, 3), st.booleans())
def test_reductions_along_a_dim(data, shape, pick, keepdim):
    dim = pick % len(shape)
    check(lambda x: x.prod(dim, keepdim), param(data, shape))
    check(lambda x: x.prod(), param(data, shape))
    check(lambda x: x.cumsum(dim), param(data, shape))
    check(lambda x: x.cumprod(dim), param(data, shape))
    check(lambda x: x.logsumexp(dim, keepdim), param(data, shape))
    check(lambda x: x.max(dim, keepdim).values, param(data, shape, "distinct"))
    check(lambda x: x.min(dim).values, param(data, shape, "distinct"))
    check(lambda x: x.sort(dim, descending=keepdim).values, param(data, shape, "distinct"))
    check(lambda x: x.topk(1, dim).values, param(data, shape, "distinct"))
    if shape[dim] > 1:
        check(lambda x: x.std(dim, keepdim), param(data, shape))


def test_prod_and_cumprod_with_zeros():
    x = Tensor(np.array([[2.0, 0.0, 3.0, 0.5], [0.0, 0.0, 1.5, 2.0], [1.0, 2.0, 3.0, 4.0]]), requires_grad=True)
    check(lambda t: t.prod(1), x)
    check(lambda t: t.prod(0), x)
    check(lambda t: t.cumprod(1), x)


@SETTINGS
@given(st.data(), shapes, st.integers(0, 3))
def test_indexing_and_building(data, shape, pick):
    dim = pick % len(shape)
    rng = np.random.default_rng(pick)
    index = rng.integers(0, shape[dim], shape)
    check(lambda x: x.gather(dim, index), param(data, shape))
    check(lambda x, s: x.scatter_add(dim, index, s), param(data, shape), param(data, shape))
    unique = np.argsort(rng.random(shape), axis=dim)  # a permutation along dim: no position written twice
    check(lambda x, s: x.scatter(dim, unique, s), param(data, shape), param(data, shape))
    check(lambda x: x.flip(dim), param(data, shape))
    check(lambda x: x.roll(pick + 1, dim), param(data, shape))
    check(lambda x: x.repeat(*([2] + [1] * len(shape))), param(data, shape))
    check(lambda x: x.repeat_interleave(2, dim), param(data, shape))
    check(lambda x: F.pad(x, (1, 2) * min(len(shape), 2)), param(data, shape))
    check(lambda x: F.pad(x, (1, 0), mode="replicate"), param(data, shape))
    if len(shape) >= 2:
        check(lambda x: x.tril(pick - 1), param(data, shape))
        check(lambda x: x.triu(), param(data, shape))
        check(lambda x: x.diagonal(pick % 2), param(data, shape))
        check(lambda x: x.unfold(-1, 1, 1), param(data, shape))


@SETTINGS
@given(st.data(), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))
def test_einsum(data, i, j, k):
    check(lambda a, b: mg.einsum("ij,jk->ik", a, b), param(data, (i, j)), param(data, (j, k)))
    check(lambda a, b: mg.einsum("bij,j->bi", a, b), param(data, (k, i, j)), param(data, (j,)))
    check(lambda a: mg.einsum("ii->i", a), param(data, (i, i)))
    check(lambda a, b: mg.einsum("...j,kj", a, b), param(data, (k, i, j)), param(data, (i, j)))


@SETTINGS
@given(st.data(), st.integers(1, 4), st.integers(2, 5), st.floats(0.0, 0.5), st.booleans())
def test_losses(data, n, c, smoothing, spatial):
    shape = (n, c, 2) if spatial else (n, c)
    targets = np.random.default_rng(n * c).integers(0, c, (n, 2) if spatial else (n,))
    check(lambda x: F.cross_entropy(x, targets, label_smoothing=smoothing), param(data, shape))
    check(lambda x: F.nll_loss(x, targets, reduction="sum"), param(data, shape))
    check(lambda x, p: F.cross_entropy(x, p.softmax(1), label_smoothing=smoothing), param(data, shape), param(data, shape))
    prob = Tensor(1 / (1 + np.exp(-make(data, shape))), requires_grad=True)
    t = np.random.default_rng(c).random(shape)
    check(lambda p: F.binary_cross_entropy(p, Tensor(t)), prob)
    check(lambda x: F.binary_cross_entropy_with_logits(x, Tensor(t), pos_weight=Tensor(np.full(shape[-1], 2.0))),
          param(data, shape))
    check(lambda x, y: F.mse_loss(x, y), param(data, shape), param(data, shape))
    check(lambda x, y: F.l1_loss(x, y, reduction="sum"), param(data, shape, "distinct"), Tensor(make(data, shape)))
