"""Every differentiable op, one Function each: forward and backward side by side.

forward receives ndarrays and returns the output ndarray; backward receives the output's
gradient and returns one gradient per input (None where the input needs none). A gradient
may keep the broadcast shape: the engine sums it back to the input's shape (_shapes.unbroadcast).
"""
import numpy as np

from minigrad import kernels
from minigrad._tensor import Function

# ---- elementwise, binary ---------------------------------------------------------------------


class Add(Function):
    def forward(self, a, b): return a + b
    def backward(self, grad): return grad, grad


class Sub(Function):
    def forward(self, a, b): return a - b
    def backward(self, grad): return grad, -grad


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad):
        return grad * self.b, grad * self.a


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        grad_a = grad / self.b
        return grad_a, -grad_a * self.a / self.b


class Pow(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, grad):
        # PyTorch's conventions at a zero base: d/da is 0 where b == 0 (so 0 ** 0 has a zero
        # gradient), d/db is 0 where a == 0 and b >= 0 (the limit of a^b ln a)
        zero = np.zeros((), grad.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            grad_a = np.where(self.b == 0, zero, grad * self.b * self.a ** (self.b - 1))
            grad_b = None
            if self.parents[1].requires_grad:  # d(a^b)/db = a^b ln a
                grad_b = np.where((self.a == 0) & (self.b >= 0), zero, grad * self.out * np.log(self.a))
        return grad_a, grad_b


class MatMul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return kernels.matmul(a, b)

    def backward(self, grad):
        return kernels.matmul_backward(self.a, self.b, grad)


class Linear(Function):
    """x (..., in) @ weight (out, in).T, fused: no transposed-weight node, and the weight's gradient
    is computed in the weight's own (out, in) layout."""

    def forward(self, x, weight):
        self.x, self.weight = x, weight
        return kernels.matmul(x, weight.T)

    def backward(self, grad):
        x2, g2 = self.x.reshape(-1, self.x.shape[-1]), grad.reshape(-1, grad.shape[-1])
        return kernels.matmul(grad, self.weight), kernels.matmul(g2.T, x2)


class Where(Function):
    def forward(self, a, b, condition):
        self.condition = condition
        return np.where(condition, a, b)

    def backward(self, grad):
        zero = np.zeros((), grad.dtype)
        return np.where(self.condition, grad, zero), np.where(self.condition, zero, grad)


# ---- elementwise, unary ----------------------------------------------------------------------


class Neg(Function):
    def forward(self, a): return -a
    def backward(self, grad): return -grad


class Exp(Function):
    def forward(self, a):
        self.out = np.exp(a)
        return self.out

    def backward(self, grad): return grad * self.out


class Log(Function):
    def forward(self, a):
        self.a = a
        return np.log(a)

    def backward(self, grad): return grad / self.a


class Sqrt(Function):
    def forward(self, a):
        self.out = np.sqrt(a)
        return self.out

    def backward(self, grad): return grad / (2 * self.out)


class Tanh(Function):
    def forward(self, a):
        self.out = np.tanh(a)
        return self.out

    def backward(self, grad): return grad * (1 - self.out * self.out)


class Sigmoid(Function):
    def forward(self, a):
        # exp of a non-positive number only, so large |a| cannot overflow
        e = np.exp(-np.abs(a))
        self.out = np.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return self.out

    def backward(self, grad): return grad * self.out * (1 - self.out)


class Relu(Function):
    def forward(self, a):
        self.positive = ~(a <= 0)  # NaN passes through with its gradient, as in PyTorch
        return np.where(self.positive, a, np.zeros((), a.dtype))

    def backward(self, grad): return grad * self.positive


class ReluSquared(Function):
    """relu(a)², fused: one node and one saved array instead of relu's mask and square's two operands."""

    def forward(self, a):
        self.a = a
        return kernels.relu_squared(a)

    def backward(self, grad): return kernels.relu_squared_backward(self.a, grad)


class Abs(Function):
    def forward(self, a):
        self.sign = np.nan_to_num(np.sign(a))  # PyTorch's gradient at NaN is 0
        return np.abs(a)

    def backward(self, grad): return grad * self.sign


class Clamp(Function):
    def forward(self, a, low, high):
        out = np.clip(a, low, high)
        self.inside = out == a  # PyTorch passes the gradient where the input was not clipped
        return out

    def backward(self, grad): return grad * self.inside


class Cast(Function):
    def forward(self, a, dtype): return a.astype(dtype)
    def backward(self, grad): return grad  # the engine casts back to the input's dtype


# ---- reductions ------------------------------------------------------------------------------


def _keepdim_shape(shape, axis):
    """The reduced shape with the reduced axes kept as size 1, for broadcasting back."""
    return tuple(1 if axis is None or i in axis else n for i, n in enumerate(shape))


class Sum(Function):
    def forward(self, a, axis, keepdim):
        self.shape, self.axis = a.shape, axis
        return np.sum(a, axis=axis, keepdims=keepdim)

    def backward(self, grad):
        return np.broadcast_to(grad.reshape(_keepdim_shape(self.shape, self.axis)), self.shape)


class Max(Function):
    def forward(self, a, axis, keepdim):
        self.a, self.axis = a, axis
        self.out = np.max(a, axis=axis, keepdims=True)
        return self.out if keepdim else np.squeeze(self.out, axis=axis)

    def backward(self, grad):
        # ties share the gradient equally, as PyTorch's amax does
        # NaN is the max where the input holds one: the NaNs share the gradient, as in PyTorch's max()
        is_max = (self.a == self.out) | (np.isnan(self.a) & np.isnan(self.out))
        share = is_max / is_max.sum(axis=self.axis, keepdims=True)
        return share * grad.reshape(_keepdim_shape(self.a.shape, self.axis))


def _grid(index, axis):
    """Index arrays addressing, for each element of index, its position with index's value along axis."""
    grid = list(np.indices(index.shape, sparse=True))
    grid[axis] = index
    return tuple(grid)


class Gather(Function):
    def forward(self, a, index, axis):
        if index.size and (index.min() < -a.shape[axis] or index.max() >= a.shape[axis]):
            raise IndexError(f"gather index out of range for dim {axis} of size {a.shape[axis]}")
        self.shape, self.grid = a.shape, _grid(index, axis)
        return a[self.grid]

    def backward(self, grad):
        out = np.zeros(self.shape, grad.dtype)
        np.add.at(out, self.grid, grad)  # repeated indices accumulate
        return out


class RMSNorm(Function):
    """x / sqrt(mean(x², last dim) + eps), fused: one node instead of six."""

    def forward(self, a, eps):
        self.out, self.rstd = kernels.rms_norm(a, eps)
        return self.out

    def backward(self, grad):
        return kernels.rms_norm_backward(self.out, self.rstd, grad.astype(self.out.dtype, copy=False))


class Softmax(Function):
    def forward(self, a, axis):
        self.axis = axis
        self.out = np.moveaxis(kernels.softmax(np.moveaxis(a, axis, -1)), -1, axis)
        return self.out

    def backward(self, grad):
        y, g = np.moveaxis(self.out, self.axis, -1), np.moveaxis(grad, self.axis, -1)
        return np.moveaxis(kernels.softmax_backward(y, g), -1, self.axis)


class LogSoftmax(Function):
    def forward(self, a, axis):
        self.axis = axis
        self.out = np.moveaxis(kernels.log_softmax(np.moveaxis(a, axis, -1)), -1, axis)
        return self.out

    def backward(self, grad):
        y, g = np.moveaxis(self.out, self.axis, -1), np.moveaxis(grad, self.axis, -1)
        return np.moveaxis(kernels.log_softmax_backward(y, g), -1, self.axis)


class CrossEntropy(Function):
    """Fused log-softmax + negative log-likelihood over rows of logits (N, V), optionally of the
    softcapped logits softcap * tanh(logits / softcap) (fused too)."""

    def forward(self, logits, targets, ignore_index, reduction, softcap=None):
        # with a softcap, keep the capped logits: backward then needs no second tanh sweep
        self.capped = None if softcap is None else np.empty(logits.shape, logits.dtype)
        losses, self.lse = kernels.cross_entropy_forward(logits, targets, ignore_index, softcap, self.capped)
        self.logits, self.targets, self.ignore_index, self.reduction = logits, targets, ignore_index, reduction
        self.softcap = softcap
        if reduction == "none":
            return losses
        if reduction == "sum":
            return losses.sum(dtype=logits.dtype)
        self.count = int(np.count_nonzero(targets != ignore_index))
        with np.errstate(invalid="ignore", divide="ignore"):  # all ignored: 0/0 = NaN, as PyTorch
            return np.asarray(losses.sum(dtype=logits.dtype) / logits.dtype.type(self.count))

    def backward(self, grad):
        n = len(self.targets)
        if self.reduction == "none":
            row_grad = grad
        elif self.reduction == "sum":
            row_grad = np.full(n, grad, dtype=self.logits.dtype)
        else:
            row_grad = np.full(n, grad / max(self.count, 1), dtype=self.logits.dtype)
        return kernels.cross_entropy_backward(self.logits, self.targets, self.lse, row_grad, self.ignore_index,
                                              self.softcap, self.capped)


class ScaledDotProductAttention(Function):
    """softmax(q kᵀ · scale, keys i + offset - window <= j <= i + offset) v for q (B, H, Tq, D), k and v
    (B, Hk, Tk, D), fused; window None is no lower bound.

    The kernel works in (B, T, H, D), so the usual transposed views of a projection pass without copies."""

    def forward(self, q, k, v, scale, offset, window=None):
        self.q, self.k, self.v = (x.swapaxes(1, 2) for x in (q, k, v))
        self.scale, self.offset, self.window = scale, offset, window
        self.out, self.p = kernels.attention_forward(self.q, self.k, self.v, scale, offset, window)
        return self.out.swapaxes(1, 2)

    def backward(self, grad):
        dq, dk, dv = kernels.attention_backward(self.q, self.k, self.v, self.out, self.p, grad.swapaxes(1, 2),
                                                self.scale, self.offset, self.window)
        return dq.swapaxes(1, 2), dk.swapaxes(1, 2), dv.swapaxes(1, 2)


class Rotary(Function):
    """Rotary embedding of the halves (x1, x2) of the last dim: (x1 cos + x2 sin, x2 cos - x1 sin), fused.

    cos and sin (broadcastable to x's halves) are constants: they get no gradient."""

    def forward(self, x, cos, sin):
        self.cos, self.sin = cos, sin
        return kernels.rotary(x, cos, sin)

    def backward(self, grad):
        # the transpose of a rotation by theta is the rotation by -theta
        return kernels.rotary(grad, self.cos, -self.sin), None, None


# ---- movement --------------------------------------------------------------------------------


class Reshape(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, grad): return grad.reshape(self.shape)


class Permute(Function):
    def forward(self, a, order):
        inverse = [0] * len(order)
        for i, d in enumerate(order):
            inverse[d] = i
        self.inverse = tuple(inverse)
        return a.transpose(order)

    def backward(self, grad): return grad.transpose(self.inverse)


class Expand(Function):
    def forward(self, a, shape): return np.broadcast_to(a, shape)
    def backward(self, grad): return grad  # the engine's unbroadcast sums it back


class Index(Function):
    def forward(self, a, index):
        self.shape, self.index = a.shape, index
        return a[index]

    def backward(self, grad):
        out = np.zeros(self.shape, grad.dtype)
        advanced = any(isinstance(i, (np.ndarray, list)) for i in
                       (self.index if isinstance(self.index, tuple) else (self.index,)))
        if advanced:
            np.add.at(out, self.index, grad)  # repeated indices accumulate instead of overwriting
        else:
            out[self.index] = grad
        return out


class Cat(Function):
    def forward(self, *arrays, axis):
        self.axis = axis
        self.sizes = [a.shape[axis] for a in arrays]
        return kernels.concat(arrays, axis)

    def backward(self, grad):
        bounds = np.cumsum(self.sizes)[:-1]
        return tuple(np.split(grad, bounds, axis=self.axis))


# ---- added for PyTorch's wider op set (issue 13); everything else is composed in methods.py ------


class Pointwise(Function):
    """An elementwise fn whose derivative is a function of the input (sin, erf, atan, ...)."""

    def forward(self, a, fn, derivative):
        self.a, self.derivative = a, derivative
        return fn(a)

    def backward(self, grad):
        with np.errstate(divide="ignore", invalid="ignore"):
            return grad * self.derivative(self.a)


class Step(Function):
    """floor, ceil, round, trunc, sign: piecewise constant, so the gradient is 0, as in PyTorch."""

    def forward(self, a, fn):
        self.shape = a.shape
        return fn(a)

    def backward(self, grad): return np.zeros(self.shape, grad.dtype)


class Contiguous(Function):
    def forward(self, a): return np.ascontiguousarray(a)
    def backward(self, grad): return grad


class Cumsum(Function):
    def forward(self, a, axis):
        self.axis = axis
        return np.cumsum(a, axis=axis, dtype=a.dtype if a.dtype.kind == "f" else np.int64)

    def backward(self, grad):  # each input feeds every later output: a reversed cumulative sum
        return np.flip(np.cumsum(np.flip(grad, self.axis), axis=self.axis), self.axis)


def _product_of_others(a, axis):
    """For each element, the product of the others along axis (exact with zeros: no division)."""
    a = np.moveaxis(a, axis, -1)
    ones = np.ones(a.shape[:-1] + (1,), a.dtype)
    left = np.cumprod(np.concatenate([ones, a[..., :-1]], -1), -1)
    right = np.flip(np.cumprod(np.concatenate([ones, np.flip(a, -1)[..., :-1]], -1), -1), -1)
    return np.moveaxis(left * right, -1, axis)


class Prod(Function):
    def forward(self, a, axis, keepdim):
        self.a, self.axis = a, axis
        return np.prod(a, axis=axis, keepdims=keepdim)

    def backward(self, grad):
        axis = self.axis
        a = self.a.reshape(-1) if axis is None else self.a
        others = _product_of_others(a, 0 if axis is None else axis).reshape(self.a.shape)
        shape = tuple(1 if axis is None or i == axis else n for i, n in enumerate(self.a.shape))
        return others * grad.reshape(shape)


class Cumprod(Function):
    def forward(self, a, axis):
        self.a, self.axis = a, axis
        return np.cumprod(a, axis=axis)

    def backward(self, grad):
        # d out_k / d a_i = prod_{j <= k, j != i} a_j for k >= i: exact at zeros, O(n²) along the axis
        a, g = np.moveaxis(self.a, self.axis, -1), np.moveaxis(grad, self.axis, -1)
        out = np.empty_like(a)
        for i in range(a.shape[-1]):
            without = a[..., i:].copy()
            without[..., 0] = 1
            prefix = np.prod(a[..., :i], -1, keepdims=True)
            out[..., i] = (g[..., i:] * prefix * np.cumprod(without, -1)).sum(-1)
        return np.moveaxis(out, -1, self.axis)


class Scatter(Function):
    """a with src's values written (or added, accumulate=True) at index along axis."""

    def forward(self, a, src, index, axis, accumulate):
        if index.size and (index.min() < -a.shape[axis] or index.max() >= a.shape[axis]):
            raise IndexError(f"scatter index out of range for dim {axis} of size {a.shape[axis]}")
        self.grid, self.accumulate = _grid(index, axis), accumulate
        self.src_part = tuple(slice(0, n) for n in index.shape)
        self.src_shape = src.shape
        out, values = a.copy(), src[self.src_part]
        if accumulate:
            np.add.at(out, self.grid, values)
        else:
            out[self.grid] = values
        return out

    def backward(self, grad):
        grad_a = grad
        if not self.accumulate:  # overwritten positions take nothing from a
            grad_a = grad.copy()
            grad_a[self.grid] = 0
        grad_src = np.zeros(self.src_shape, grad.dtype)
        grad_src[self.src_part] = grad[self.grid]
        return grad_a, grad_src


class Pad(Function):
    """Constant padding; widths are ((before, after), ...) per axis, all >= 0."""

    def forward(self, a, widths, value):
        self.inside = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, a.shape))
        return np.pad(a, widths, constant_values=value)

    def backward(self, grad): return grad[self.inside]


class Einsum(Function):
    """np.einsum over explicit subscripts without ellipsis (the Tensor method spells those out)."""

    def forward(self, *arrays, inputs, output):
        self.arrays, self.inputs, self.output = arrays, inputs, output
        return np.asarray(np.einsum(f"{','.join(inputs)}->{output}", *arrays, optimize=True))

    def backward(self, grad):
        grads = []
        for i, (array, sub) in enumerate(zip(self.arrays, self.inputs)):
            if not self.parents[i].requires_grad:
                grads.append(None)
                continue
            others = [s for j, s in enumerate(self.inputs) if j != i]
            seen = set(self.output).union(*others)
            kept = "".join(c for c in dict.fromkeys(sub) if c in seen)  # letters summed only here broadcast back
            g = np.einsum(",".join([self.output] + others) + "->" + kept, grad,
                          *[a for j, a in enumerate(self.arrays) if j != i], optimize=True)
            if len(set(sub)) != len(sub):  # a repeated letter (a diagonal): write onto it
                full = np.zeros(array.shape, grad.dtype)
                np.einsum(f"{sub}->{''.join(dict.fromkeys(sub))}", full)[...] = _expand_to(g, kept, sub, array.shape)
                grads.append(full)
            else:
                grads.append(_expand_to(g, kept, sub, array.shape))
        return tuple(grads)


def _expand_to(g, kept, sub, shape):
    letters = "".join(dict.fromkeys(sub))
    sizes = dict(zip(sub, shape))
    g = g.reshape([sizes[c] if c in kept else 1 for c in letters])
    return np.broadcast_to(g, [sizes[c] for c in letters])


class Windows(Function):
    """Sliding windows over the last len(kernel) axes, as a strided view (no copy):
    (..., L1, L2) -> (..., O1, O2, k1, k2), Oi = (Li - di (ki - 1) - 1) // si + 1. The im2col of
    convolution and pooling; backward adds each kernel offset's slice back (a loop over the
    kernel's positions, not over pixels)."""

    def forward(self, a, kernel, stride, dilation):
        n = len(kernel)
        span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        view = np.lib.stride_tricks.sliding_window_view(a, span, axis=tuple(range(a.ndim - n, a.ndim)))
        self.shape, self.kernel, self.stride, self.dilation = a.shape, kernel, stride, dilation
        steps = tuple(slice(None, None, s) for s in stride) + tuple(slice(None, None, d) for d in dilation)
        return view[(Ellipsis,) + steps]

    def backward(self, grad):
        out = np.zeros(self.shape, grad.dtype)
        n = len(self.kernel)
        outs = grad.shape[-2 * n:-n]
        for offset in np.ndindex(*self.kernel):
            target = tuple(slice(o * d, o * d + s * (m - 1) + 1, s)
                           for o, d, s, m in zip(offset, self.dilation, self.stride, outs))
            out[(Ellipsis,) + target] += grad[(Ellipsis,) + (slice(None),) * n + offset]
        return out
