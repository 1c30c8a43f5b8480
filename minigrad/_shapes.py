"""Broadcast arithmetic shared by the engine and the kernels."""


def unbroadcast(grad, shape):
    """Sum a gradient of a broadcast result back to the shape of the input that was broadcast."""
    if grad.shape == shape:
        return grad
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad
