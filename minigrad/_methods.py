"""Tensor methods composed from the primitive Functions in ops.py, each in a line or a few, with
PyTorch's names and semantics. Tensor inherits them from TensorMethods."""
import builtins
import string

import numpy as np

import minigrad._tensor as T  # a cycle: _tensor.py imports this module before it defines Tensor


class TensorMethods:
    # ---- method spellings of the operators, and casts -------------------------------------------
    def add(self, other, alpha=1): return self + (other * alpha if alpha != 1 else other)
    def sub(self, other, alpha=1): return self - (other * alpha if alpha != 1 else other)
    def mul(self, other): return self * other
    def pow(self, other): return self ** other
    def neg(self): return -self

    def div(self, other, rounding_mode=None):
        if rounding_mode is None:
            return self / other
        if rounding_mode not in ("floor", "trunc"):
            raise ValueError(f"rounding_mode must be None, 'floor' or 'trunc', got {rounding_mode!r}")
        a, b = self._pair(other)
        if a.dtype.kind == "f":
            q = a / b
            return q.floor() if rounding_mode == "floor" else q.trunc()
        if not b.data.all():  # integers: exact NumPy division, which would give 0 for x // 0
            raise ZeroDivisionError("integer division by zero")
        if rounding_mode == "floor":
            return T.Tensor(np.floor_divide(a.data, b.data))
        return T.Tensor(np.sign(a.data) * np.sign(b.data) * (np.abs(a.data) // np.abs(b.data)))

    def __floordiv__(self, other): return self.div(other, rounding_mode="floor")
    def __rfloordiv__(self, other): return self._pair(other)[1].div(self, rounding_mode="floor")

    def remainder(self, other):
        """a - floor(a / b) * b: the sign of b, as Python's % and PyTorch's remainder."""
        a, b = self._pair(other)
        return a - a.div(b, rounding_mode="floor").detach() * b

    __mod__ = remainder
    def __rmod__(self, other): return self._pair(other)[1].remainder(self)

    def clip(self, min=None, max=None): return self.clamp(min, max)

    def clamp_(self, min=None, max=None):
        """In place, for tensors outside the graph (PyTorch's in-place rules)."""
        self._check_in_place("clamp_")
        self[...] = self.clamp(min, max).data
        return self

    def contiguous(self): return self if self.data.flags.c_contiguous else T.ops.Contiguous.apply(self)
    def int(self): return self.to(np.int32)
    def long(self): return self.to(np.int64)
    def half(self): return self.to(np.float16)
    def bool(self): return self.to(np.bool_)
    def type_as(self, other): return self.to(other.dtype)

    # ---- elementwise math ---------------------------------------------------------------------
    def sin(self): return T.ops.Pointwise.apply(self, fn=np.sin, derivative=np.cos)
    def cos(self): return T.ops.Pointwise.apply(self, fn=np.cos, derivative=lambda a: -np.sin(a))
    def tan(self): return T.ops.Pointwise.apply(self, fn=np.tan, derivative=lambda a: 1 + np.tan(a) ** 2)
    def asin(self): return T.ops.Pointwise.apply(self, fn=np.arcsin, derivative=lambda a: 1 / np.sqrt(1 - a * a))
    def acos(self): return T.ops.Pointwise.apply(self, fn=np.arccos, derivative=lambda a: -1 / np.sqrt(1 - a * a))
    def atan(self): return T.ops.Pointwise.apply(self, fn=np.arctan, derivative=lambda a: 1 / (1 + a * a))
    def erf(self): return T.ops.Pointwise.apply(self, fn=T.ops.kernels.erf, derivative=_erf_derivative)
    def exp2(self): return (self * float(np.log(2))).exp()
    def log2(self): return self.log() * float(1 / np.log(2))
    def log10(self): return self.log() * float(1 / np.log(10))
    def log1p(self): return (self + 1).log()
    def expm1(self): return self.exp() - 1
    def sinh(self): return (self.exp() - (-self).exp()) / 2
    def cosh(self): return (self.exp() + (-self).exp()) / 2
    def silu(self): return self * self.sigmoid()

    def floor(self): return T.ops.Step.apply(self, fn=np.floor)
    def ceil(self): return T.ops.Step.apply(self, fn=np.ceil)
    def round(self): return T.ops.Step.apply(self, fn=np.round)  # halves to even, as PyTorch
    def trunc(self): return T.ops.Step.apply(self, fn=np.trunc)
    def sign(self): return T.ops.Step.apply(self, fn=np.sign)
    def isnan(self): return T.Tensor(np.isnan(self.data))
    def isinf(self): return T.Tensor(np.isinf(self.data))
    def isfinite(self): return T.Tensor(np.isfinite(self.data))

    def lerp(self, end, weight): return self + (end - self) * weight

    def maximum(self, other):
        """Elementwise max; ties split the gradient in halves and NaN propagates, as in PyTorch."""
        a, b = self._pair(other)
        return T.where(a > b, a, T.where(a < b, b, (a + b) / 2))

    def minimum(self, other):
        a, b = self._pair(other)
        return T.where(a < b, a, T.where(a > b, b, (a + b) / 2))

    def isclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        other = other.data if isinstance(other, T.Tensor) else other
        return T.Tensor(np.isclose(self.data, other, rtol=rtol, atol=atol, equal_nan=equal_nan))

    # ---- reductions ---------------------------------------------------------------------------
    def prod(self, dim=None, keepdim=False, dtype=None):
        x = self.to(dtype) if dtype is not None else self
        if dim is None:
            out = T.ops.Prod.apply(x, axis=None, keepdim=False)
            return out.reshape((1,) * x.ndim) if keepdim else out
        return T.ops.Prod.apply(x, axis=T._dim(dim, x.ndim), keepdim=keepdim) if x.ndim else x * 1

    def std(self, dim=None, keepdim=False, correction=1): return self.var(dim, keepdim, correction).sqrt()

    def any(self, dim=None, keepdim=False):
        return T.Tensor(np.any(self.data, axis=T._axes(dim, self.ndim), keepdims=keepdim))

    def all(self, dim=None, keepdim=False):
        return T.Tensor(np.all(self.data, axis=T._axes(dim, self.ndim), keepdims=keepdim))

    def logsumexp(self, dim, keepdim=False):
        """log(sum(exp(x))) shifted by the (detached) max, so large inputs do not overflow."""
        shift = self.detach().amax(dim, keepdim=True).data
        shift = np.where(np.isfinite(shift), shift, 0).astype(self.dtype)
        out = (self - shift).exp().sum(dim, keepdim=True).log() + shift
        return out if keepdim else out.squeeze(dim)

    def cumsum(self, dim): return T.ops.Cumsum.apply(self, axis=T._dim(dim, self.ndim)) if self.ndim else self * 1
    def cumprod(self, dim): return T.ops.Cumprod.apply(self, axis=T._dim(dim, self.ndim)) if self.ndim else self * 1

    # ---- sorting --------------------------------------------------------------------------------
    def sort(self, dim=-1, descending=False, stable=False):
        """(values, indices); ties keep their order (NaN sorts as the largest, as in PyTorch)."""
        idx = self.argsort(dim, descending)
        return T.values_indices(self.gather(dim, idx) if self.ndim else self * 1, idx)

    def argsort(self, dim=-1, descending=False, stable=False):
        if not self.ndim:
            return T.Tensor(np.zeros((), np.int64))
        axis = T._dim(dim, self.ndim)
        keys = self.data
        if descending:  # flip, sort stably, map back: ties keep their order, NaN comes first
            flipped = np.flip(keys, axis)
            idx = keys.shape[axis] - 1 - np.flip(np.argsort(flipped, axis, kind="stable"), axis)
        else:
            idx = np.argsort(keys, axis, kind="stable")
        return T.Tensor(idx.astype(np.int64))

    def topk(self, k, dim=-1, largest=True, sorted=True):
        axis = T._dim(dim, self.ndim)
        if not 0 <= k <= (self.shape[axis] if self.ndim else 1):
            raise RuntimeError(f"topk: k={k} is out of range for dim {dim} of size {self.shape[axis]}")
        idx = self.argsort(axis, descending=largest)[(slice(None),) * axis + (slice(0, k),)]
        return T.values_indices(self.gather(axis, idx), idx)

    # ---- indexing and building --------------------------------------------------------------------
    def scatter(self, dim, index, src):
        return _scatter(self, dim, index, src, accumulate=False)

    def scatter_add(self, dim, index, src):
        return _scatter(self, dim, index, src, accumulate=True)

    def tril(self, diagonal=0): return _triangle(self, np.tril, diagonal)
    def triu(self, diagonal=0): return _triangle(self, np.triu, diagonal)

    def flip(self, *dims):
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        axes = {T._dim(d, self.ndim) for d in dims}
        return self[tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(self.ndim))]

    def roll(self, shifts, dims=None):
        if dims is None:
            return self.flatten().roll(shifts, 0).reshape(self.shape)
        shifts, dims = (shifts, dims) if isinstance(shifts, (tuple, list)) else ((shifts,), (dims,))
        out = self
        for shift, d in zip(shifts, dims):
            axis = T._dim(d, self.ndim)
            out = out[(slice(None),) * axis + (np.roll(np.arange(self.shape[axis]), shift),)]
        return out

    def repeat(self, *sizes):
        """Tile: (2, 3).repeat(2, 1, 2) is (2, 2, 6), as torch.Tensor.repeat."""
        sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
        if len(sizes) < self.ndim:
            raise RuntimeError(f"repeat needs at least {self.ndim} sizes, got {sizes}")
        shape = (1,) * (len(sizes) - self.ndim) + self.shape
        paired = self.reshape([m for n in shape for m in (1, n)])
        tiled = paired.expand([m for r, n in zip(sizes, shape) for m in (r, n)])
        return tiled.reshape([r * n for r, n in zip(sizes, shape)])

    def repeat_interleave(self, repeats, dim=None):
        if dim is None:
            return self.flatten().repeat_interleave(repeats, 0)
        axis = T._dim(dim, self.ndim)
        counts = np.broadcast_to(np.asarray(repeats.data if isinstance(repeats, T.Tensor) else repeats),
                                 (self.shape[axis],))
        return self[(slice(None),) * axis + (np.repeat(np.arange(self.shape[axis]), counts),)]

    def unflatten(self, dim, sizes):
        axis = T._dim(dim, self.ndim)
        return self.reshape(self.shape[:axis] + tuple(sizes) + self.shape[axis + 1:])

    def diagonal(self, offset=0, dim1=0, dim2=1):
        """The diagonal of dims (dim1, dim2), moved to the last dim, as torch.diagonal."""
        d1, d2 = T._dim(dim1, self.ndim), T._dim(dim2, self.ndim)
        x = self.permute([i for i in range(self.ndim) if i not in (d1, d2)] + [d1, d2])
        rows = np.arange(builtins.max(0, -offset), builtins.min(x.shape[-2], x.shape[-1] - offset))
        return x[..., rows, rows + offset]

    def diag(self, diagonal=0):
        """A 1-D tensor's diagonal matrix, or a 2-D tensor's diagonal."""
        if self.ndim == 2:
            return self.diagonal(diagonal)
        if self.ndim != 1:
            raise RuntimeError(f"diag needs a 1-D or 2-D tensor, got shape {self.shape}")
        n = self.shape[0] + builtins.abs(diagonal)
        rows = np.arange(self.shape[0]) + builtins.max(0, -diagonal)
        index = np.zeros((n, n), np.int64)
        index[rows, rows + diagonal] = np.arange(self.shape[0]) + 1
        return T.cat([T.Tensor(np.zeros(1, self.dtype)), self])[index]  # entry 0 is the zero

    def unfold(self, dimension, size, step):
        """Windows of `size` every `step` along dimension, as a new last dim (a strided view)."""
        axis = T._dim(dimension, self.ndim)
        starts = np.arange(0, self.shape[axis] - size + 1, step)
        index = starts[:, None] + np.arange(size)  # (windows, size)
        out = self[(slice(None),) * axis + (index,)]  # (..., windows, size, ...)
        return out.permute([i for i in range(out.ndim) if i != axis + 1] + [axis + 1])

    def masked_select(self, mask):
        mask = np.broadcast_to(mask.data if isinstance(mask, T.Tensor) else np.asarray(mask), self.shape)
        return self[mask]

    def __setitem__(self, index, value):
        """Writes into a tensor outside the graph (PyTorch also forbids writes into leaves that require grad)."""
        self._check_in_place("item assignment")
        if not self.data.flags.writeable:  # a broadcast view: give the tensor its own memory
            self.data = self.data.copy()
        if isinstance(index, T.Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, T.Tensor) else i for i in index)
        self.data[index] = value.data if isinstance(value, T.Tensor) else value

    def _check_in_place(self, what):
        if self.requires_grad and T.is_grad_enabled():
            raise RuntimeError(f"{what} on a tensor that requires grad would corrupt the graph; "
                               "do it under no_grad() or on a detached tensor")


def _erf_derivative(a): return (2 / np.sqrt(np.pi)) * np.exp(-a * a)


def _scatter(x, dim, index, src, accumulate):
    index = np.asarray(index.data if isinstance(index, T.Tensor) else index)
    if index.ndim != x.ndim:
        raise RuntimeError(f"scatter: index has {index.ndim} dims but the tensor has {x.ndim}")
    if not isinstance(src, T.Tensor):
        src = T.Tensor(np.full(index.shape, src, x.dtype))
    return T.ops.Scatter.apply(x, src.to(x.dtype) if src.dtype != x.dtype else src, index=index,
                               axis=T._dim(dim, x.ndim), accumulate=accumulate)


def _triangle(x, numpy_fn, diagonal):
    if x.ndim < 2:
        raise RuntimeError(f"tril/triu need at least 2 dims, got shape {x.shape}")
    keep = numpy_fn(np.ones(x.shape[-2:], bool), diagonal)
    return T.where(keep, x, T.Tensor(np.zeros((), x.dtype)))


def einsum(equation, *operands):
    """torch.einsum: explicit ('ij,jk->ik') or implicit ('ij,jk') output, '...' for leading dims."""
    operands = operands[0] if len(operands) == 1 and isinstance(operands[0], (tuple, list)) else operands
    equation = equation.replace(" ", "")
    inputs, _, output = equation.partition("->")
    inputs = inputs.split(",")
    if len(inputs) != len(operands):
        raise ValueError(f"einsum: {equation!r} names {len(inputs)} operands, got {len(operands)}")
    spare = iter(c for c in string.ascii_letters if c not in equation)
    def ellipsis_dims(s, t): return t.ndim - len(s.replace("...", ""))
    lead_dims = builtins.max((ellipsis_dims(s, t) for s, t in zip(inputs, operands) if "..." in s), default=0)
    lead = "".join(next(spare) for _ in range(lead_dims))  # right-aligned, as broadcasting aligns dims
    spelled = [s.replace("...", lead[lead_dims - ellipsis_dims(s, t):]) for s, t in zip(inputs, operands)]
    if not _:  # implicit output: the letters seen once, in order, after the ellipsis dims
        counts = "".join(spelled)
        output = lead + "".join(sorted(c for c in set(counts) if counts.count(c) == 1 and c not in lead))
    output = output.replace("...", lead)
    for s, t in zip(spelled, operands):
        if len(s) != t.ndim:
            raise RuntimeError(f"einsum: subscripts {s!r} do not match an operand of shape {t.shape}")
    # operands broadcast over size-1 ellipsis dims: expand them first
    sizes = {}
    for s, t in zip(spelled, operands):
        for c, n in zip(s, t.shape):
            sizes[c] = builtins.max(sizes.get(c, 1), n)
    operands = [t.expand([sizes[c] for c in s]) if any(n != sizes[c] for c, n in zip(s, t.shape)) else t
                for s, t in zip(spelled, operands)]
    return T.ops.Einsum.apply(*operands, inputs=spelled, output=output)


def maximum(a, b): return a.maximum(b)
def minimum(a, b): return a.minimum(b)
