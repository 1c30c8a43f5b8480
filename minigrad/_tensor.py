"""The Tensor and the engine that differentiates it.

A Tensor wraps an np.ndarray. Every differentiable op is a `Function` (see ops.py): its
`forward` computes the output array and keeps what `backward` will need on the instance,
and `backward` maps the output's gradient to one gradient per input. `Tensor.backward`
orders the graph with an iterative topological sort and walks it in reverse.
"""
import collections
import functools
import sys

import numpy as np

from minigrad._methods import TensorMethods
from minigrad._shapes import unbroadcast

_grad_enabled = True


class no_grad:
    """Context manager and decorator: ops inside it record no graph."""
    enabled = False

    def __new__(cls, fn=None):
        # bare @no_grad hands us the function itself; PyTorch accepts it as well as @no_grad()
        return super().__new__(cls) if fn is None else cls()(fn)

    def __init__(self, fn=None):
        pass

    def __enter__(self):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, self.enabled

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        return wrapper


class enable_grad(no_grad):
    """Records the graph again inside a no_grad region, as torch.enable_grad does."""
    enabled = True


def is_grad_enabled():
    return _grad_enabled


class Function:
    """One differentiable op. The instance is the context: forward stores what backward needs."""

    def __init__(self, *parents):
        self.parents = parents

    @classmethod
    def apply(cls, *inputs, **kwargs):
        fn = cls(*inputs)
        data = fn.forward(*(t.data for t in inputs), **kwargs)
        if type(data) is np.ndarray:  # the usual case: wrap it without Tensor.__init__'s conversions
            out = Tensor.__new__(Tensor)
            out.data, out.grad, out._ctx, out.requires_grad = data, None, None, False
        else:
            out = Tensor(data)
        if _grad_enabled and any(t.requires_grad for t in inputs):
            out.requires_grad = True
            out._ctx = fn
        return out

    def release(self):
        # Drop the saved arrays; the marker lets a second backward fail loudly instead of silently.
        self.__dict__.clear()
        self.released = True


def _as_array(data, dtype):
    if isinstance(data, Tensor):
        data = data.data
    from_python = not isinstance(data, (np.ndarray, np.generic))
    array = np.asarray(data, dtype=dtype)
    if dtype is None and from_python and array.dtype == np.float64:
        array = array.astype(np.float32)  # Python floats default to float32, as in PyTorch
    return array


class Tensor(TensorMethods):
    __array_priority__ = 1000  # ndarray <op> Tensor defers to Tensor's reflected op

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self._ctx = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_()

    # ---- attributes -------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    T = property(lambda self: self.transpose(-2, -1) if self.ndim >= 2 else self)
    is_leaf = property(lambda self: self._ctx is None)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return self.data.size

    def __len__(self):
        return len(self.data)

    def numpy(self):
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self):
        return Tensor(self.data)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and not np.issubdtype(self.dtype, np.floating):
            raise TypeError(f"only floating-point tensors can require gradients, not {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, prefix='Tensor(')}, dtype={self.dtype}{grad})"

    # ---- backward -----------------------------------------------------------------------------
    def _topological_order(self):
        """Tensors that need a gradient, each after every tensor it depends on. Iterative, so a
        chain of any depth works within Python's recursion limit."""
        order, visited, stack = [], set(), [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            if node._ctx is not None:
                if getattr(node._ctx, "released", False):
                    raise RuntimeError(
                        "trying to backward through the graph a second time: its saved arrays were "
                        "released by the first backward; run the forward again")
                stack.extend((p, False) for p in node._ctx.parents if p.requires_grad and id(p) not in visited)
        return order

    def backward(self, grad=None):
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad and has no graph")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar output, got shape {self.shape}; "
                                   "pass grad= with the output's shape")
            grad = np.ones_like(self.data)
        grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"grad has shape {grad.shape} but the tensor has shape {self.shape}")

        grads = {id(self): grad}
        for node in reversed(self._topological_order()):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._ctx is None:  # a leaf: accumulate, as PyTorch does across backward calls
                if node.grad is not None:
                    node.grad = node.grad + g
                elif g.dtype == node.dtype and g.base is None and sys.getrefcount(g) == 2:
                    node.grad = g  # referenced only here (g and getrefcount's argument): no copy needed
                else:
                    node.grad = g.astype(node.dtype, copy=True)
                g = None
                continue
            ctx = node._ctx
            parent_grads = ctx.backward(g)
            if not isinstance(parent_grads, tuple):
                parent_grads = (parent_grads,)
            for parent, pg in zip(ctx.parents, parent_grads):
                if pg is None or not parent.requires_grad:
                    continue
                pg = unbroadcast(np.asarray(pg), parent.shape).astype(parent.dtype, copy=False)
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            g = parent_grads = pg = None  # hold no gradient past its node (the leaf test above counts references)
            ctx.release()
            node._ctx = _ReleasedGraph

    # ---- ops: thin wrappers over ops.py ---------------------------------------------------------
    def _lift(self, other):
        """Turn a Python number or ndarray into a Tensor; numbers take this tensor's float dtype."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (int, float, bool)) and not isinstance(other, np.ndarray):
            floating = self.data.dtype.kind == "f"  # np.floating
            if floating or isinstance(other, (int, bool)):
                return Tensor(np.asarray(other, dtype=self.dtype))
            return Tensor(np.asarray(other, dtype=np.float32))
        return Tensor(other)

    def _pair(self, other, true_divide=False):
        """(self, other lifted), both cast to PyTorch's result dtype (see result_type); true division
        of two integer tensors is float32, not NumPy's float64."""
        if self.data.dtype.kind == "f":  # the common cases, without the general rule's cost
            if isinstance(other, Tensor) and other.data.dtype == self.data.dtype:
                return self, other
            if isinstance(other, (int, float)):  # a Python number never changes a float tensor's dtype
                return self, Tensor(np.asarray(other, self.data.dtype))
        dtype = result_type(self, other)
        if true_divide and dtype.kind != "f":
            dtype = np.dtype(np.float32)
        other = other if isinstance(other, Tensor) else Tensor(np.asarray(other, dtype=dtype))
        return (self if self.dtype == dtype else self.to(dtype)), (other if other.dtype == dtype else other.to(dtype))

    def __add__(self, other): return ops.Add.apply(*self._pair(other))
    def __radd__(self, other): return ops.Add.apply(*self._pair(other)[::-1])
    def __sub__(self, other): return ops.Sub.apply(*self._pair(other))
    def __rsub__(self, other): return ops.Sub.apply(*self._pair(other)[::-1])
    def __mul__(self, other): return ops.Mul.apply(*self._pair(other))
    def __rmul__(self, other): return ops.Mul.apply(*self._pair(other)[::-1])
    def __truediv__(self, other): return ops.Div.apply(*self._pair(other, true_divide=True))
    def __rtruediv__(self, other): return ops.Div.apply(*self._pair(other, true_divide=True)[::-1])
    def __pow__(self, other): return ops.Pow.apply(*self._pair(other))
    def __rpow__(self, other): return ops.Pow.apply(*self._pair(other)[::-1])
    def __matmul__(self, other): return self.matmul(other)
    def __rmatmul__(self, other): return self._lift(other).matmul(self)
    def __neg__(self): return ops.Neg.apply(self)

    def matmul(self, other):
        other = self._lift(other)
        if self.ndim == 0 or other.ndim == 0:
            raise ValueError("matmul needs tensors with at least one dimension; use * for scalars")
        a = self.unsqueeze(0) if self.ndim == 1 else self
        b = other.unsqueeze(-1) if other.ndim == 1 else other
        out = ops.MatMul.apply(a, b)
        if self.ndim == 1:  # (..., 1, m): drop the row dim first, so a 1-D other still finds its -1
            out = out.squeeze(-2)
        if other.ndim == 1:
            out = out.squeeze(-1)
        return out

    def exp(self): return ops.Exp.apply(self)
    def log(self): return ops.Log.apply(self)
    def sqrt(self): return ops.Sqrt.apply(self)
    def rsqrt(self): return ops.Sqrt.apply(self).reciprocal()
    def reciprocal(self): return ops.Div.apply(self._lift(1.0), self)
    def tanh(self): return ops.Tanh.apply(self)
    def sigmoid(self): return ops.Sigmoid.apply(self)
    def relu(self): return ops.Relu.apply(self)
    def abs(self): return ops.Abs.apply(self)
    def square(self): return self * self

    def clamp(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp needs at least one of min and max")
        return ops.Clamp.apply(self, low=min, high=max)

    def sum(self, dim=None, keepdim=False, dtype=None):
        x = self if dtype is None else self.to(dtype)
        return ops.Sum.apply(x, axis=_axes(dim, x.ndim), keepdim=keepdim)

    def mean(self, dim=None, keepdim=False):
        axes = _axes(dim, self.ndim)
        count = self.data.size if axes is None else int(np.prod([self.shape[a] for a in axes]))
        return self.sum(dim, keepdim) / count

    def var(self, dim=None, keepdim=False, correction=1):
        axes = _axes(dim, self.ndim)
        count = self.data.size if axes is None else int(np.prod([self.shape[a] for a in axes]))
        centered = self - self.mean(dim, keepdim=True)
        return (centered * centered).sum(dim, keepdim) / max(count - correction, 0)

    def softmax(self, dim=-1): return _on_1d(self, dim, lambda x: ops.Softmax.apply(x, axis=_dim(dim, x.ndim)))
    def log_softmax(self, dim=-1): return _on_1d(self, dim, lambda x: ops.LogSoftmax.apply(x, axis=_dim(dim, x.ndim)))

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return ops.Reshape.apply(self, shape=tuple(shape))

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        start, end = _dim(start_dim, self.ndim), _dim(end_dim, self.ndim)
        return self.reshape(self.shape[:start] + (-1,) + self.shape[end + 1:])

    def permute(self, *dims):
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        if sorted(d % self.ndim for d in dims) != list(range(self.ndim)):
            raise ValueError(f"permute dims {dims} are not a permutation of {self.ndim} dimensions")
        return ops.Permute.apply(self, order=tuple(d % self.ndim for d in dims))

    def transpose(self, dim0, dim1):
        order = list(range(self.ndim))
        order[dim0], order[dim1] = order[dim1], order[dim0]
        return self.permute(order)

    def expand(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        lead = len(shape) - self.ndim
        if lead < 0:
            raise ValueError(f"expand to {shape} has fewer dimensions than the tensor's {self.shape}")
        if -1 in shape[:lead]:  # a new leading dim has no size to keep; shape[i - lead] would wrap around
            raise ValueError(f"expand to {shape}: -1 is not allowed in a new leading dimension")
        shape = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
        return ops.Expand.apply(self, shape=shape)

    def unsqueeze(self, dim):
        dim = _dim(dim, self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        dims = {_dim(d, self.ndim) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
        return self.reshape(tuple(n for i, n in enumerate(self.shape) if not (i in dims and n == 1)))

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
            if any(_is_int(i) for i in index) and any(isinstance(i, (np.ndarray, list)) for i in index):
                # PyTorch applies integers as basic indexing before the arrays; NumPy counts an integer
                # beside an array as advanced, which moves the broadcast dims to the front
                first, rest = _split_int_index(index, self.ndim)
                return ops.Index.apply(ops.Index.apply(self, index=first), index=rest)
        return ops.Index.apply(self, index=index)

    def split(self, split_size, dim=0):
        """Pieces of split_size along dim (the last may be smaller), or pieces of the listed sizes."""
        length = self.shape[dim]
        sizes = [split_size] * (length // split_size) + ([length % split_size] if length % split_size else []) \
            if isinstance(split_size, int) else list(split_size)
        if sum(sizes) != length:
            raise ValueError(f"split sizes {sizes} do not add up to dimension {dim}'s length {length}")
        starts = np.cumsum([0] + sizes[:-1])
        lead = (slice(None),) * (dim % self.ndim)
        return tuple(self[lead + (slice(s, s + n),)] for s, n in zip(starts, sizes))

    def chunk(self, chunks, dim=0):
        return self.split(-(-self.shape[dim] // chunks), dim)

    def masked_fill(self, mask, value):
        mask = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
        return where(mask, self._lift(value), self)

    def float(self): return ops.Cast.apply(self, dtype=np.float32)
    def double(self): return ops.Cast.apply(self, dtype=np.float64)
    def to(self, dtype): return ops.Cast.apply(self, dtype=np.dtype(dtype))

    # ---- comparisons and logic: elementwise bool tensors, no graph, as in PyTorch -----------------
    __hash__ = object.__hash__  # defining __eq__ would drop it; tensors stay usable as dict keys

    def _compare(self, other, op):
        if not isinstance(other, (Tensor, np.ndarray, np.generic, int, float, bool, list)):
            return NotImplemented  # t == None is False, as in PyTorch
        a, b = self._pair(other)
        return Tensor(op(a.data, b.data))

    def __eq__(self, other): return self._compare(other, np.equal)
    def __ne__(self, other): return self._compare(other, np.not_equal)
    def __lt__(self, other): return self._compare(other, np.less)
    def __le__(self, other): return self._compare(other, np.less_equal)
    def __gt__(self, other): return self._compare(other, np.greater)
    def __ge__(self, other): return self._compare(other, np.greater_equal)
    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__

    def _bitwise(self, other, op):
        a, b = self._pair(other)
        if a.dtype.kind not in "biu":
            raise TypeError(f"{op.__name__} needs bool or integer tensors, got {a.dtype}")
        return Tensor(op(a.data, b.data))

    def __and__(self, other): return self._bitwise(other, np.bitwise_and)
    def __or__(self, other): return self._bitwise(other, np.bitwise_or)
    def __xor__(self, other): return self._bitwise(other, np.bitwise_xor)
    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    def __invert__(self):
        if self.dtype.kind not in "biu":
            raise TypeError(f"~ needs a bool or integer tensor, got {self.dtype}")
        return Tensor(np.invert(self.data))

    def logical_not(self): return Tensor(np.logical_not(self.data))
    def logical_and(self, other): return Tensor(np.logical_and(self.data, self._lift(other).data))
    def logical_or(self, other): return Tensor(np.logical_or(self.data, self._lift(other).data))

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with {self.data.size} elements is ambiguous; "
                               "use .any() or .all()")
        return bool(self.data)

    def __float__(self): return float(self.item())
    def __int__(self): return int(self.item())

    # ---- max/min with a dim: PyTorch's (values, indices), the gradient going to the index ---------
    def amax(self, dim=None, keepdim=False):
        """Max over dim; ties share the gradient equally (PyTorch's amax)."""
        return ops.Max.apply(self, axis=_axes(dim, self.ndim), keepdim=keepdim)

    def amin(self, dim=None, keepdim=False): return -(-self).amax(dim, keepdim)

    def max(self, dim=None, keepdim=False):
        """max() is the whole-tensor max (ties share the gradient); max(dim) is (values, indices)."""
        if dim is None:
            return self.amax(keepdim=keepdim)
        return _extreme(self, dim, keepdim, np.argmax)

    def min(self, dim=None, keepdim=False):
        if dim is None:
            return self.amin(keepdim=keepdim)
        return _extreme(self, dim, keepdim, np.argmin)

    def argmax(self, dim=None, keepdim=False): return _arg_extreme(self, dim, keepdim, np.argmax)
    def argmin(self, dim=None, keepdim=False): return _arg_extreme(self, dim, keepdim, np.argmin)

    def gather(self, dim, index):
        """out[i][j][k] = self[i][index[i][j][k]][k] for dim=1; index has self's rank, any smaller sizes."""
        index = np.asarray(index.data if isinstance(index, Tensor) else index)
        if index.ndim != max(self.ndim, 1) and not (self.ndim == 0 and index.ndim == 0):
            raise RuntimeError(f"gather: index has {index.ndim} dims but the tensor has {self.ndim}")
        return ops.Gather.apply(self, index=index, axis=_dim(dim, self.ndim))


class _ReleasedGraph:
    """Stands in for the Function of a tensor whose graph a backward has already consumed."""
    released = True
    parents = ()


values_indices = collections.namedtuple("values_indices", ["values", "indices"])  # torch.return_types.max etc.


def _extreme(x, dim, keepdim, arg):
    """(values, indices) of the max or min along dim; NaN wins, as in PyTorch."""
    axis = _dim(dim, x.ndim)
    if x.ndim == 0:
        return values_indices(x.reshape(()), Tensor(np.zeros((), np.int64)))
    with np.errstate(invalid="ignore"):
        idx = np.expand_dims(arg(x.data, axis=axis), axis)
    values = x.gather(axis, idx)
    if not keepdim:
        values, idx = values.squeeze(axis), idx.squeeze(axis)
    return values_indices(values, Tensor(idx.astype(np.int64)))


def _arg_extreme(x, dim, keepdim, arg):
    if dim is None:
        out = arg(x.data.reshape(-1))
        return Tensor(np.full((1,) * x.ndim if keepdim else (), out, np.int64))
    axis = _dim(dim, x.ndim)
    if x.ndim == 0:
        return Tensor(np.zeros((), np.int64))
    return Tensor(arg(x.data, axis=axis, keepdims=keepdim).astype(np.int64))


_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}


def promote_types(a, b):
    """PyTorch's promote_types: the higher category (bool < integer < float) wins outright, so
    int64 with float32 is float32 (NumPy would widen to float64); within a category NumPy's rule."""
    a, b = np.dtype(a), np.dtype(b)
    ca, cb = _CATEGORY[a.kind], _CATEGORY[b.kind]
    return np.promote_types(a, b) if ca == cb else (a if ca > cb else b)


def result_type(*operands):
    """The dtype PyTorch gives an op on these operands: dimensioned tensors decide, a 0-d tensor
    only when its category (bool < integer < float) is higher, a Python number likewise, a Python
    float then counting as float32 (so float32 + 0-d float64 stays float32, int64 + 2.5 is float32)."""
    levels = [None, None, None]  # dimensioned tensors, 0-d tensors, Python numbers
    for x in operands:
        if isinstance(x, (bool, np.bool_)):
            level, dtype = 2, np.dtype(np.bool_)
        elif isinstance(x, (int, np.integer)):
            level, dtype = 2, np.dtype(np.int64)
        elif isinstance(x, (float, np.floating)):
            level, dtype = 2, np.dtype(np.float32)
        else:
            dtype = x.dtype if isinstance(x, Tensor) else _as_array(x, None).dtype
            level = 0 if np.ndim(x.data if isinstance(x, Tensor) else x) else 1
        levels[level] = dtype if levels[level] is None else promote_types(levels[level], dtype)

    def combine(higher, lower):
        if higher is None or lower is None:
            return higher if lower is None else lower
        return promote_types(higher, lower) if _CATEGORY[lower.kind] > _CATEGORY[higher.kind] else higher
    return combine(levels[0], combine(levels[1], levels[2]))



def _on_1d(x, dim, fn):
    """fn(x), a 0-d x running as one element (PyTorch accepts dim 0 or -1 there; the kernels need an axis)."""
    if x.ndim:
        return fn(x)
    _dim(dim, 0)
    return fn(x.reshape(1)).reshape(())

def _is_int(i):
    return isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))


def _split_int_index(index, ndim):
    """(first, rest) such that x[first][rest] is x[index] under PyTorch's rules: first holds the
    integers (and full slices elsewhere), rest everything else, with any Ellipsis spelled out."""
    def width(i):  # how many input dims an index entry consumes
        if i is None:
            return 0
        if isinstance(i, (np.ndarray, list)):
            a = np.asarray(i)
            return a.ndim if a.dtype == np.bool_ else 1
        return 1
    explicit = []
    for i in index:
        if i is Ellipsis:
            explicit += [slice(None)] * (ndim - sum(width(j) for j in index if j is not Ellipsis))
        else:
            explicit.append(i)
    first = tuple(j for i in explicit for j in ([i] if _is_int(i) else [slice(None)] * width(i)))
    rest = tuple(i for i in explicit if not _is_int(i))
    return first, rest


def _dim(dim, ndim):
    """One dim as an index in [0, ndim); out of range is an IndexError, not a silent modulo wrap."""
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(f"dim {dim} is out of range for a tensor with {ndim} dimensions")
    return dim % max(ndim, 1)


def _axes(dim, ndim):
    """The dims a reduction runs over as sorted indices, or None for all of them."""
    if dim is None:
        return None
    axes = sorted(_dim(d, ndim) for d in (dim if isinstance(dim, (tuple, list)) else (dim,)))
    if ndim == 0:  # PyTorch lets a scalar reduce over dim 0 or -1; NumPy has no axis 0 to reduce
        return None
    return tuple(axes)


def where(condition, a, b):
    condition = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    if condition.dtype != np.bool_:
        raise TypeError(f"where needs a boolean condition, got {condition.dtype}")
    a = a if isinstance(a, Tensor) else (b._lift(a) if isinstance(b, Tensor) else Tensor(a))
    b = b if isinstance(b, Tensor) else a._lift(b)
    return ops.Where.apply(a, b, condition=condition)


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    ndim = tensors[0].ndim
    if any(t.ndim != ndim for t in tensors) or not -ndim <= dim < ndim:
        raise ValueError(f"cat along dim {dim} needs tensors of equal rank, got shapes {[t.shape for t in tensors]}")
    return ops.Cat.apply(*tensors, axis=dim % ndim)


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors or any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError(f"stack needs tensors of one shape, got {[t.shape for t in tensors]}")
    return cat([t.unsqueeze(dim) for t in tensors], dim)


from minigrad import ops  # noqa: E402  (ops.py subclasses Function, defined above)
