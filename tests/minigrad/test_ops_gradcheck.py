"""Every differentiable op through minigrad.gradcheck in float64, on hypothesis-drawn shapes,
broadcasting pairs and non-contiguous input arrays."""
import numpy as np
from hypothesis import given, settings, strategies as st

import minigrad as mg
from minigrad import Tensor, gradcheck
from minigrad.nn import functional as F

SETTINGS = settings(deadline=None, max_examples=40, derandomize=True)

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)
layouts = st.sampled_from(["contiguous", "transposed", "strided"])


def make(data, shape, kind="normal", layout=None):
    """A float64 array of `shape`, contiguous or not, with values suited to `kind`:
    normal; positive (away from 0); nonzero (|x| >= 0.3); distinct (no ties, gaps >= 0.1)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    layout = layout or data.draw(layouts, label="layout")
    n = int(np.prod(shape))
    if kind == "normal":
        values = rng.standard_normal(n)
    elif kind == "positive":
        values = rng.uniform(0.5, 2.0, n)
    elif kind == "nonzero":
        values = rng.uniform(0.3, 1.5, n) * rng.choice([-1.0, 1.0], n)
    elif kind == "distinct":
        values = (rng.permutation(n) - n / 2) * 0.1 + rng.uniform(0, 0.01, n)
    else:
        raise ValueError(kind)
    values = values.reshape(shape)
    if layout == "transposed":  # same values, reversed strides
        base = np.ascontiguousarray(values.transpose(tuple(reversed(range(len(shape))))))
        out = base.transpose(tuple(reversed(range(len(shape)))))
    elif layout == "strided":  # every other element of a wider array
        base = np.zeros(shape[:-1] + (2 * shape[-1],) if shape else (2,))
        out = base[..., ::2] if shape else base[0]
        out[...] = values
    else:
        out = values.copy()
    assert out.shape == tuple(shape) and np.array_equal(out, values)
    return out


def param(data, shape, kind="normal"):
    return Tensor(make(data, shape, kind), requires_grad=True)


@st.composite
def broadcast_pair(draw):
    """(shape, other): other drops some leading dims of shape and sets some dims to 1; order random."""
    shape = draw(shapes)
    drop = draw(st.integers(0, len(shape) - 1))
    other = [1 if draw(st.booleans()) else n for n in shape[drop:]]
    pair = (shape, tuple(other))
    return pair if draw(st.booleans()) else pair[::-1]


def check(fn, *inputs):
    assert gradcheck(fn, list(inputs))


# ---- gradcheck on the engine's own inputs: the check must see non-contiguous arrays ------------

def test_make_produces_non_contiguous_layouts():
    class D:
        def __init__(self, layout):
            self.layout = layout

        def draw(self, strategy, label=None):
            return self.layout if label == "layout" else 0

    assert not make(D("transposed"), (2, 3)).flags.c_contiguous
    assert not make(D("strided"), (2, 3)).flags.c_contiguous
    x = Tensor(make(D("strided"), (2, 3)), requires_grad=True)
    seen = []
    gradcheck(lambda t: seen.append(t.data.flags.c_contiguous) or t * 2, [x])
    assert seen and not any(seen)


# ---- binary elementwise with broadcasting ------------------------------------------------------

@SETTINGS
@given(st.data(), broadcast_pair(), st.sampled_from(["add", "sub", "mul", "div", "pow"]))
def test_binary_broadcast(data, pair, op):
    sa, sb = pair
    if op == "add":
        check(lambda a, b: a + b, param(data, sa), param(data, sb))
    elif op == "sub":
        check(lambda a, b: a - b, param(data, sa), param(data, sb))
    elif op == "mul":
        check(lambda a, b: a * b, param(data, sa), param(data, sb))
    elif op == "div":
        check(lambda a, b: a / b, param(data, sa), param(data, sb, "nonzero"))
    else:
        check(lambda a, b: a ** b, param(data, sa, "positive"), param(data, sb))


@SETTINGS
@given(st.data(), shapes)
def test_reflected_with_python_scalars(data, shape):
    check(lambda x: 2.5 + x, param(data, shape))
    check(lambda x: 1.5 - x, param(data, shape))
    check(lambda x: x - 1.5, param(data, shape))
    check(lambda x: 3 * x, param(data, shape))
    check(lambda x: 2.0 / x, param(data, shape, "nonzero"))
    check(lambda x: x / 4, param(data, shape))
    check(lambda x: x ** 3, param(data, shape))
    check(lambda x: x ** 0.5, param(data, shape, "positive"))
    check(lambda x: 1.7 ** x, param(data, shape))
    check(lambda x: -x, param(data, shape))


@SETTINGS
@given(st.data(), broadcast_pair())
def test_reflected_with_ndarrays(data, pair):
    sa, sb = pair
    a = make(data, sa)
    check(lambda x: a + x, param(data, sb))
    check(lambda x: a - x, param(data, sb))
    check(lambda x: a * x, param(data, sb))
    check(lambda x: a / x, param(data, sb, "nonzero"))
    pos = make(data, sa, "positive")
    check(lambda x: pos ** x, param(data, sb))


@SETTINGS
@given(st.data(), st.lists(st.integers(1, 3), max_size=2).map(tuple), st.integers(1, 4), st.integers(1, 4),
       st.integers(1, 4), st.sampled_from(["both", "a-broadcast", "b-broadcast", "a-1d", "b-1d", "both-1d"]))
def test_matmul(data, batch, n, k, m, variant):
    ones = tuple(1 for _ in batch)
    sa, sb = {
        "both": (batch + (n, k), batch + (k, m)),
        "a-broadcast": (ones + (n, k), batch + (k, m)),
        "b-broadcast": (batch + (n, k), (k, m)),
        "a-1d": ((k,), batch + (k, m)),
        "b-1d": (batch + (n, k), (k,)),
        "both-1d": ((k,), (k,)),
    }[variant]
    check(lambda a, b: a @ b, param(data, sa), param(data, sb))
    c = make(data, sa)
    check(lambda b: c @ b, param(data, sb))  # reflected: ndarray @ Tensor
    d = Tensor(make(data, sb))
    check(lambda a: a.matmul(d), param(data, sa))


# ---- unary --------------------------------------------------------------------------------------

@SETTINGS
@given(st.data(), shapes)
def test_unary(data, shape):
    check(lambda x: x.exp(), param(data, shape))
    check(lambda x: x.log(), param(data, shape, "positive"))
    check(lambda x: x.sqrt(), param(data, shape, "positive"))
    check(lambda x: x.rsqrt(), param(data, shape, "positive"))
    check(lambda x: x.reciprocal(), param(data, shape, "nonzero"))
    check(lambda x: x.tanh(), param(data, shape))
    check(lambda x: x.sigmoid(), param(data, shape))
    check(lambda x: x.relu(), param(data, shape, "nonzero"))
    check(lambda x: F.relu(x), param(data, shape, "nonzero"))
    check(lambda x: x.square(), param(data, shape))
    check(lambda x: x.abs(), param(data, shape, "nonzero"))


@SETTINGS
@given(st.data(), shapes, st.sampled_from([(-0.2, 0.25), (None, 0.15), (-0.05, None)]))
def test_clamp(data, shape, bounds):
    x = make(data, shape)
    low, high = bounds
    # keep every element at least 0.01 from a bound: clamp is not differentiable there
    for bound in (low, high):
        if bound is not None:
            near = np.abs(x - bound) < 0.01
            x[near] = bound + 0.02
    check(lambda t: t.clamp(min=low, max=high), Tensor(x, requires_grad=True))


def test_sigmoid_extreme_values():
    x = Tensor(np.array([-800.0, -30.0, 0.0, 30.0, 800.0]), requires_grad=True)
    y = x.sigmoid()
    assert np.isfinite(y.data).all()
    np.testing.assert_allclose(y.data[[0, 2, 4]], [0.0, 0.5, 1.0])
    check(lambda t: t.sigmoid(), x)


# ---- reductions ---------------------------------------------------------------------------------

@st.composite
def shape_and_dim(draw):
    shape = draw(shapes)
    nd = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        dim = None
    elif kind == "int":
        dim = draw(st.integers(-nd, nd - 1))
    else:
        axes = draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True))
        dim = tuple(a - nd if draw(st.booleans()) else a for a in axes)
    return shape, dim, draw(st.booleans())


@SETTINGS
@given(st.data(), shape_and_dim())
def test_sum_mean(data, sdk):
    shape, dim, keepdim = sdk
    check(lambda x: x.sum(dim, keepdim), param(data, shape))
    check(lambda x: x.mean(dim, keepdim=keepdim), param(data, shape))


@SETTINGS
@given(st.data(), shape_and_dim())
def test_max(data, sdk):
    shape, dim, keepdim = sdk
    check(lambda x: x.amax(dim, keepdim), param(data, shape, "distinct"))


@SETTINGS
@given(st.data(), shape_and_dim(), st.sampled_from([0, 1]))
def test_var(data, sdk, correction):
    shape, dim, keepdim = sdk
    axes = range(len(shape)) if dim is None else (dim if isinstance(dim, tuple) else (dim,))
    count = int(np.prod([shape[a] for a in axes]))
    if count - correction <= 0:
        correction = 0
    check(lambda x: x.var(dim, keepdim=keepdim, correction=correction), param(data, shape))


# ---- movement ------------------------------------------------------------------------------------

@SETTINGS
@given(st.data(), shapes)
def test_reshape_view_flatten(data, shape):
    check(lambda x: x.reshape(-1), param(data, shape))
    check(lambda x: x.view(tuple(reversed(shape))), param(data, shape))
    check(lambda x: x.reshape(*shape[:-1], 1, shape[-1]) * Tensor(np.arange(shape[-1], dtype=np.float64)),
          param(data, shape))
    check(lambda x: x.flatten(), param(data, shape))
    check(lambda x: x.flatten(0, -2) if len(shape) > 1 else x.flatten(), param(data, shape))


@SETTINGS
@given(st.data(), shapes)
def test_transpose_permute(data, shape):
    nd = len(shape)
    d0 = data.draw(st.integers(-nd, nd - 1))
    d1 = data.draw(st.integers(-nd, nd - 1))
    perm = data.draw(st.permutations(range(nd)))
    check(lambda x: x.transpose(d0, d1), param(data, shape))
    check(lambda x: x.permute(*perm), param(data, shape))
    check(lambda x: x.permute(tuple(perm)), param(data, shape))
    if nd >= 2:
        check(lambda x: x.T, param(data, shape))


@SETTINGS
@given(st.data(), shapes, st.integers(0, 2))
def test_expand(data, shape, lead):
    small = tuple(1 if data.draw(st.booleans()) else n for n in shape)
    big = tuple(data.draw(st.integers(1, 3)) for _ in range(lead)) + \
        tuple(data.draw(st.integers(1, 3)) if n == 1 else n for n in small)
    check(lambda x: x.expand(big), param(data, small))
    check(lambda x: x.expand(*big), param(data, small))
    check(lambda x: x.expand(big[:lead] + (-1,) * len(small)), param(data, small))


@SETTINGS
@given(st.data(), shapes)
def test_squeeze_unsqueeze(data, shape):
    nd = len(shape)
    d = data.draw(st.integers(-(nd + 1), nd))
    check(lambda x: x.unsqueeze(d), param(data, shape))
    check(lambda x: x.squeeze(), param(data, shape))
    s = data.draw(st.integers(-nd, nd - 1))
    check(lambda x: x.squeeze(s), param(data, shape))
    check(lambda x: x.unsqueeze(0).squeeze(0), param(data, shape))


@st.composite
def basic_index(draw, shape):
    """A tuple of slices (any step, incl. negative), ints, None and at most one Ellipsis."""
    index, dims = [], list(shape)
    use_ellipsis = draw(st.booleans()) and len(dims) > 1
    ellipsis_at = draw(st.integers(0, len(dims) - 1)) if use_ellipsis else -1
    i = 0
    while i < len(dims):
        if i == ellipsis_at:
            index.append(Ellipsis)
            skip = draw(st.integers(0, len(dims) - i))
            i += skip
            ellipsis_at = -1
            continue
        if draw(st.integers(0, 4)) == 0:
            index.append(None)
        n = dims[i]
        choice = draw(st.sampled_from(["slice", "int", "full"]))
        if choice == "int":
            index.append(draw(st.integers(-n, n - 1)))
        elif choice == "slice":
            start = draw(st.one_of(st.none(), st.integers(-n, n)))
            stop = draw(st.one_of(st.none(), st.integers(-n, n)))
            step = draw(st.sampled_from([None, 1, 2, -1, -2]))
            index.append(slice(start, stop, step))
        else:
            index.append(slice(None))
        i += 1
    return tuple(index)


@SETTINGS
@given(st.data(), shapes)
def test_getitem_basic(data, shape):
    index = data.draw(basic_index(shape))
    check(lambda x: x[index] * 1.0, param(data, shape))


@SETTINGS
@given(st.data(), shapes)
def test_getitem_integer_arrays_with_repeats(data, shape):
    n = shape[0]
    idx = np.array(data.draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=6)))
    check(lambda x: x[idx], param(data, shape))
    check(lambda x: x[idx.tolist()], param(data, shape))
    check(lambda x: x[Tensor(idx)], param(data, shape))
    check(lambda x: x[np.array([0, 0, 0])], param(data, shape))  # the same row three times
    if len(shape) >= 2:
        m = shape[1]
        cols = np.array(data.draw(st.lists(st.integers(0, m - 1), min_size=len(idx), max_size=len(idx))))
        check(lambda x: x[idx, cols], param(data, shape))
        check(lambda x: x[:, cols], param(data, shape))
        check(lambda x: x[..., np.array([[0, 0], [0, 0]])], param(data, shape))
    if len(shape) >= 3:
        check(lambda x: x[-1, :, [shape[2] - 1, 0, shape[2] - 1]], param(data, shape))
        check(lambda x: x[idx, ..., 0], param(data, shape))


@SETTINGS
@given(st.data(), shapes)
def test_getitem_boolean_mask(data, shape):
    mask = make(data, shape) > 0
    check(lambda x: x[mask], param(data, shape))


@SETTINGS
@given(st.data(), shapes, st.integers(1, 3))
def test_cat_stack(data, shape, count):
    nd = len(shape)
    dim = data.draw(st.integers(-nd, nd - 1))
    pieces = []
    for _ in range(count):
        s = list(shape)
        s[dim] = data.draw(st.integers(1, 3))
        pieces.append(param(data, tuple(s)))
    check(lambda *ts: mg.cat(ts, dim), *pieces)
    sdim = data.draw(st.integers(-(nd + 1), nd))
    check(lambda *ts: mg.stack(ts, sdim), *[param(data, shape) for _ in range(count)])
    fixed = Tensor(make(data, shape))  # inputs that need no grad mixed in
    check(lambda t: mg.cat([fixed, t, fixed], 0), param(data, shape))


@SETTINGS
@given(st.data(), shapes)
def test_split_chunk(data, shape):
    nd = len(shape)
    dim = data.draw(st.integers(-nd, nd - 1))
    n = shape[dim]
    size = data.draw(st.integers(1, n))
    weights = [1.0, -2.0, 3.0, 0.5]

    def combine(parts):
        return mg.cat([p * w for p, w in zip(parts, weights * 4)], dim)

    check(lambda x: combine(x.split(size, dim)), param(data, shape))
    check(lambda x: x.split(size, dim)[-1], param(data, shape))
    chunks = data.draw(st.integers(1, 4))
    check(lambda x: combine(x.chunk(chunks, dim)), param(data, shape))
    sizes = [1, n - 1] if n > 1 else [1]
    check(lambda x: combine(x.split(sizes, dim)), param(data, shape))


@SETTINGS
@given(st.data(), broadcast_pair())
def test_where_masked_fill(data, pair):
    sa, sb = pair
    cond = make(data, sb) > 0
    check(lambda a, b: mg.where(cond, a, b), param(data, sa), param(data, sb))
    check(lambda a: mg.where(cond, a, 0.5), param(data, sa))
    check(lambda b: mg.where(cond, -1.0, b), param(data, sb))
    mask = make(data, sb) > 0
    full = tuple(np.broadcast_shapes(sa, sb))
    check(lambda x: x.masked_fill(mask, 3.0), param(data, full))
    check(lambda x: x.masked_fill(Tensor(mask), -np.inf).exp(), param(data, full))


# ---- softmax family, norms, losses, attention -----------------------------------------------------

@SETTINGS
@given(st.data(), shapes)
def test_softmax_log_softmax(data, shape):
    nd = len(shape)
    dim = data.draw(st.integers(-nd, nd - 1))
    check(lambda x: x.softmax(dim), param(data, shape))
    check(lambda x: x.log_softmax(dim), param(data, shape))
    check(lambda x: F.softmax(x, dim), param(data, shape))
    check(lambda x: F.log_softmax(x, dim), param(data, shape))


@SETTINGS
@given(st.data(), shapes, st.booleans())
def test_rms_norm(data, shape, with_weight):
    if with_weight:
        check(lambda x, w: F.rms_norm(x, weight=w, eps=1e-5), param(data, shape), param(data, shape[-1:]))
    check(lambda x: F.rms_norm(x, (shape[-1],)), param(data, shape))
    check(lambda x: F.rms_norm(x, eps=0.5), param(data, shape))


@SETTINGS
@given(st.data(), st.integers(1, 4), st.integers(1, 4), st.sampled_from(["mean", "sum", "none"]),
       st.sampled_from([-1, -100, 0, 2]))
def test_cross_entropy(data, n, c, reduction, ignore_index):
    if ignore_index == 0:
        c = max(c, 2)  # class 0 is ignored, so at least one other class must exist
    classes = [k for k in range(c) if k != ignore_index]
    targets = np.array(data.draw(st.lists(st.sampled_from(classes), min_size=n, max_size=n)))
    ignored = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    ignored[0] = False  # at least one counted row, so mean is defined
    targets = np.where(ignored, ignore_index, targets)
    check(lambda x: F.cross_entropy(x, targets, ignore_index=ignore_index, reduction=reduction),
          param(data, (n, c)))


@st.composite
def attention_shapes(draw):
    b = draw(st.integers(1, 2))
    hk = draw(st.integers(1, 2))
    group = draw(st.integers(1, 2))
    tq, tk, d = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return (b, hk * group, tq, d), (b, hk, tk, d), group > 1


@SETTINGS
@given(st.data(), attention_shapes(), st.sampled_from(["none", "causal", "bool", "float"]))
def test_scaled_dot_product_attention(data, shapes_, mask_kind):
    sq, skv, gqa = shapes_
    tq, tk = sq[2], skv[2]
    kwargs = {"enable_gqa": gqa}
    if mask_kind == "causal":
        kwargs["is_causal"] = True
    elif mask_kind == "bool":
        mask = make(data, (tq, tk)) > 0
        mask[:, 0] = True  # every query attends to something
        kwargs["attn_mask"] = mask
    elif mask_kind == "float":
        kwargs["attn_mask"] = make(data, (1, tq, tk))
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kwargs),
          param(data, sq), param(data, skv), param(data, skv))
    k, v = Tensor(make(data, skv)), Tensor(make(data, skv))
    check(lambda q: F.scaled_dot_product_attention(q, k, v, scale=0.3, **kwargs), param(data, sq))


# ---- composites -------------------------------------------------------------------------------------

@SETTINGS
@given(st.data(), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))
def test_linear_and_embedding(data, n, i, o):
    check(lambda x, w, b: F.linear(x, w, b), param(data, (n, i)), param(data, (o, i)), param(data, (o,)))
    check(lambda x, w: F.linear(x, w), param(data, (2, n, i)), param(data, (o, i)))
    idx = np.array(data.draw(st.lists(st.integers(0, o - 1), min_size=1, max_size=6)))
    check(lambda w: F.embedding(idx, w), param(data, (o, i)))
    check(lambda w: F.embedding(idx.reshape(1, -1), w), param(data, (o, i)))


@SETTINGS
@given(st.data(), shapes)
def test_casts(data, shape):
    check(lambda x: x.to(np.float64).exp(), param(data, shape))
    check(lambda x: x.double().tanh(), param(data, shape))


# ---- fused ops of the GPT ---------------------------------------------------------------------------

@SETTINGS
@given(st.data(), st.integers(1, 2), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3))
def test_rotary(data, b, t, h, half):
    angles = make(data, (1, t, 1, half), layout="contiguous")
    cos, sin = Tensor(np.cos(angles)), Tensor(np.sin(angles))
    check(lambda x: F.rotary(x, cos, sin), param(data, (b, t, h, 2 * half)))


@SETTINGS
@given(st.data(), shapes)
def test_relu_squared(data, shape):
    check(F.relu_squared, param(data, shape, "nonzero"))


@SETTINGS
@given(st.data(), st.integers(1, 4), st.integers(2, 5), st.sampled_from(["mean", "sum", "none"]),
       st.sampled_from([0.5, 3.0, 15.0]))
def test_cross_entropy_with_softcap(data, n, c, reduction, softcap):
    targets = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    targets[1:] = np.where(np.array(data.draw(st.lists(st.booleans(), min_size=n - 1, max_size=n - 1)), bool),
                           -1, targets[1:])
    check(lambda x: F.cross_entropy(x, targets, reduction=reduction, softcap=softcap), param(data, (n, c)))
