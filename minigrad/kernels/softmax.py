"""Softmax / log-softmax along the last axis and their backward passes (NumPy twins)."""
import numpy as np


def softmax_reference(x):
    """Numerically stable softmax over the last axis; an all -inf row gives NaN."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward_reference(y, grad):
    """grad_x = y * (grad - sum(grad * y)) given the softmax output y."""
    return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


def log_softmax_reference(x):
    """Numerically stable log-softmax over the last axis."""
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_backward_reference(y, grad):
    """grad_x = grad - exp(y) * sum(grad) given the log-softmax output y."""
    return grad - np.exp(y) * grad.sum(axis=-1, keepdims=True)


# Interim: the fast names point at the twins until the numba kernels are committed.
softmax = softmax_reference
softmax_backward = softmax_backward_reference
log_softmax = log_softmax_reference
log_softmax_backward = log_softmax_backward_reference
