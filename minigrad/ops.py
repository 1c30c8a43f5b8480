"""Every differentiable op, one Function each: forward and backward side by side.

forward receives ndarrays and returns the output ndarray; backward receives the output's
gradient and returns one gradient per input (None where the input needs none). A gradient
may keep the broadcast shape: the engine sums it back to the input's shape (tensor.unbroadcast).
"""
import numpy as np

from minigrad import kernels
from minigrad.tensor import Function

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
        grad_a = grad * self.b * self.a ** (self.b - 1)
        grad_b = None
        if self.parents[1].requires_grad:  # d(a^b)/db = a^b ln a, only defined for a > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                grad_b = grad * self.out * np.log(self.a)
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
        self.positive = a > 0
        return np.where(self.positive, a, np.zeros((), a.dtype))

    def backward(self, grad): return grad * self.positive


class ReluSquared(Function):
    """relu(a)², fused: one node and one saved array instead of relu's mask and square's two operands."""

    def forward(self, a):
        self.fused = a.dtype in (np.float32, np.float64)  # the kernels' dtypes; others take the twin
        self.a = a
        return (kernels.relu_squared if self.fused else kernels.relu_squared_reference)(a)

    def backward(self, grad):
        return (kernels.relu_squared_backward if self.fused else kernels.relu_squared_backward_reference)(
            self.a, grad)


class Abs(Function):
    def forward(self, a):
        self.sign = np.sign(a)
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
        is_max = self.a == self.out
        share = is_max / is_max.sum(axis=self.axis, keepdims=True)
        return share * grad.reshape(_keepdim_shape(self.a.shape, self.axis))


class RMSNorm(Function):
    """x / sqrt(mean(x², last dim) + eps), fused: one node instead of six."""

    def forward(self, a, eps):
        self.fused = a.dtype in (np.float32, np.float64)  # the kernels' dtypes; others take the twin
        self.out, self.rstd = (kernels.rms_norm if self.fused else kernels.rms_norm_reference)(a, eps)
        return self.out

    def backward(self, grad):
        grad = grad.astype(self.out.dtype, copy=False)
        return (kernels.rms_norm_backward if self.fused else kernels.rms_norm_backward_reference)(
            self.out, self.rstd, grad)


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
