"""bfloat16 inference weights: swap a model's Linear and Embedding layers for ones that keep their
weight as raw bfloat16 patterns (uint16) and compute in float32 (minigrad.kernels._bfloat16).

Only the weights shrink; activations, the KV cache and the logits stay float32. The converted
layers hold no Parameters, so a converted model is for inference: training or saving it needs
the float32 model.
"""
import numpy as np

from minigrad import Tensor, is_grad_enabled, nn
from minigrad.kernels._bfloat16 import embedding_bf16, float32_to_bfloat16, linear_bf16

DTYPES = ("float32", "bfloat16")


class Bfloat16Linear(nn.Module):
    """x @ weight.T with the weight (out, in) kept as bfloat16 patterns; no bias."""

    def __init__(self, weight_bits):
        self.weight_bits = weight_bits

    def forward(self, x):
        _check_inference(x)
        return Tensor(linear_bf16(x.data, self.weight_bits))


class Bfloat16Embedding(nn.Module):
    def __init__(self, weight_bits):
        self.weight_bits = weight_bits

    def forward(self, idx):
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self.weight_bits.shape[0]):
            raise IndexError(f"embedding index out of range: indices span [{idx.min()}, {idx.max()}] "
                             f"but the table has {self.weight_bits.shape[0]} rows")
        return Tensor(embedding_bf16(idx, self.weight_bits))


def _check_inference(x):
    if is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad:
        raise RuntimeError("bfloat16 weights are for inference: run under minigrad.no_grad(), or train the float32 model")


def cast_to_bfloat16(model):
    """Convert `model` in place (every bias-free Linear and every Embedding) and return it. Each
    float32 weight is dropped as soon as its bfloat16 copy exists, so memory falls as it goes."""
    _convert_attributes(model)
    return model


def _convert(value):
    if isinstance(value, nn.Linear) and value.bias is None:
        return Bfloat16Linear(_narrow(value))
    if isinstance(value, nn.Embedding):
        return Bfloat16Embedding(_narrow(value))
    if isinstance(value, nn.Module):
        _convert_attributes(value)
    elif isinstance(value, list):
        value[:] = [_convert(v) for v in value]
    elif isinstance(value, dict):
        value.update({k: _convert(v) for k, v in value.items()})
    return value


def _convert_attributes(module):
    attributes = vars(module)
    for name, value in list(attributes.items()):
        attributes[name] = _convert(value)


def _narrow(layer):
    bits = float32_to_bfloat16(layer.weight.data)
    layer.weight.data = None  # release the float32 array now, not when the whole model is done
    return bits


def check_dtype(dtype):
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
