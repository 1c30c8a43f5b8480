"""Convolution, pooling, resampling and normalisation, functional, with PyTorch's signatures.

Convolution is im2col onto the matmul kernels: ops.Windows gives every output position's input
patch as a strided view, one reshape lays the patches out as rows (the im2col copy), and one
matmul per group against the flattened weight does the rest."""
import numpy as np

from minigrad import ops
from minigrad.nn.functional import pad
from minigrad._tensor import Tensor, where


def _tuple(value, n, name):
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(value) != n or any(not isinstance(v, (int, np.integer)) for v in value):
        raise ValueError(f"{name} must be an int or {n} ints, got {value}")
    return value


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """input (N, C, H, W) * weight (O, C/groups, kh, kw) -> (N, O, Ho, Wo); padding an int, a pair,
    'valid' or 'same' (stride 1)."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """input (N, C, L) * weight (O, C/groups, k) -> (N, O, Lo)."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 1)


def _conv(x, weight, bias, stride, padding, dilation, groups, n):
    if x.ndim != n + 2 or weight.ndim != n + 2:
        raise RuntimeError(f"conv{n}d needs input (N, C, {n} spatial dims) and a weight with {n + 2} dims, "
                           f"got {x.shape} and {weight.shape}")
    out_channels, group_in, *kernel = weight.shape
    channels = x.shape[1]
    if groups < 1 or channels % groups or out_channels % groups or channels // groups != group_in:
        raise RuntimeError(f"conv{n}d: input has {channels} channels but the weight {weight.shape} with "
                           f"groups={groups} expects {group_in * groups}")
    stride, dilation = _tuple(stride, n, "stride"), _tuple(dilation, n, "dilation")
    if padding == "same":
        if any(s != 1 for s in stride):
            raise ValueError("padding='same' needs stride 1")
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        widths = [(t // 2, t - t // 2) for t in total]
    elif padding == "valid":
        widths = [(0, 0)] * n
    else:
        widths = [(p, p) for p in _tuple(padding, n, "padding")]
    if any(w != (0, 0) for w in widths):
        x = pad(x, tuple(v for lo_hi in reversed(widths) for v in lo_hi))
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if any(L < s for L, s in zip(x.shape[2:], spans)):
        raise RuntimeError(f"conv{n}d: the kernel {tuple(kernel)} (dilation {dilation}) is larger than the "
                           f"padded input {x.shape[2:]}")
    windows = ops.Windows.apply(x, kernel=tuple(kernel), stride=stride, dilation=dilation)  # (N, C, *O, *k)
    batch, outs = x.shape[0], windows.shape[2:2 + n]
    # im2col: rows are output positions, columns (group, C/groups, *k)
    cols = windows.permute(0, *range(2, 2 + n), 1, *range(2 + n, 2 + 2 * n))  # (N, *O, C, *k)
    cols = cols.reshape(-1, groups, group_in * int(np.prod(kernel))).transpose(0, 1)  # (G, N*O, C/G*k)
    w = weight.reshape(groups, out_channels // groups, -1)  # (G, O/G, C/G*k)
    out = cols @ w.transpose(1, 2)  # (G, N*O, O/G)
    out = out.transpose(0, 1).reshape(batch, *outs, out_channels)
    out = out.permute(0, n + 1, *range(1, n + 1))  # (N, O, *outs)
    if bias is not None:
        out = out + bias.reshape((-1,) + (1,) * n)
    return out


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The gradient of conv2d with respect to its input, as a layer: weight (C, O/groups, kh, kw).
    Computed as a stride-1 conv2d of the zero-interleaved input with the flipped, transposed weight."""
    if input.ndim != 4 or weight.ndim != 4:
        raise RuntimeError(f"conv_transpose2d needs input (N, C, H, W) and weight (C, O/groups, kh, kw), "
                           f"got {input.shape} and {weight.shape}")
    stride, padding = _tuple(stride, 2, "stride"), _tuple(padding, 2, "padding")
    output_padding, dilation = _tuple(output_padding, 2, "output_padding"), _tuple(dilation, 2, "dilation")
    channels, group_out, kh, kw = weight.shape
    if input.shape[1] != channels or channels % groups:
        raise RuntimeError(f"conv_transpose2d: input has {input.shape[1]} channels, the weight {weight.shape} "
                           f"expects {channels} (divisible by groups={groups})")
    if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError("output_padding must be smaller than stride or dilation")
    x = _interleave_zeros(input, stride)
    w = weight.reshape(groups, channels // groups, group_out, kh, kw).transpose(1, 2)
    w = w.reshape(groups * group_out, channels // groups, kh, kw).flip(-2, -1)
    edge = [d * (k - 1) - p for k, d, p in zip((kh, kw), dilation, padding)]
    x = pad(x, (edge[1], edge[1] + output_padding[1], edge[0], edge[0] + output_padding[0]))
    return conv2d(x, w, bias, 1, 0, dilation, groups)


def _interleave_zeros(x, stride):
    """(N, C, H, W) -> (N, C, (H-1) sh + 1, (W-1) sw + 1) with s-1 zeros between neighbours."""
    n, c, h, w = x.shape
    sh, sw = stride
    if sh > 1:
        x = pad(x.unsqueeze(3), (0, 0, 0, sh - 1)).reshape(n, c, h * sh, w)[:, :, :(h - 1) * sh + 1]
    if sw > 1:
        x = pad(x.unsqueeze(-1), (0, sw - 1)).reshape(n, c, x.shape[2], w * sw)[..., :(w - 1) * sw + 1]
    return x


def _pool_windows(x, kernel_size, stride, padding, dilation, fill, ceil_mode, name):
    if x.ndim not in (3, 4):
        raise RuntimeError(f"{name} needs (N, C, H, W) or (C, H, W), got {x.shape}")
    if ceil_mode:
        raise NotImplementedError(f"{name}: ceil_mode=True is not supported")
    kernel = _tuple(kernel_size, 2, "kernel_size")
    stride = kernel if stride is None or stride == [] else _tuple(stride, 2, "stride")
    padding, dilation = _tuple(padding, 2, "padding"), _tuple(dilation, 2, "dilation")
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise RuntimeError(f"{name}: padding {padding} must be at most half the kernel {kernel}")
    if any(padding):
        x = pad(x, (padding[1], padding[1], padding[0], padding[0]), value=fill)
    return ops.Windows.apply(x, kernel=kernel, stride=stride, dilation=dilation), kernel, stride, padding


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """The max of each window; the gradient goes to the (first) max, as in PyTorch."""
    if return_indices:
        raise NotImplementedError("max_pool2d: return_indices=True is not supported")
    windows, *_ = _pool_windows(input, kernel_size, stride, padding, dilation, -np.inf, ceil_mode, "max_pool2d")
    return windows.flatten(-2).max(-1).values


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    windows, kernel, stride, padding = _pool_windows(input, kernel_size, stride, padding, 1, 0.0, ceil_mode,
                                                     "avg_pool2d")
    total = windows.sum((-2, -1))
    if divisor_override:
        return total / divisor_override
    if count_include_pad or not any(padding):
        return total / (kernel[0] * kernel[1])
    ones = Tensor(np.ones((1,) * (input.ndim - 2) + input.shape[-2:], input.dtype))
    counts, *_ = _pool_windows(ones, kernel, stride, padding, 1, 0.0, False, "avg_pool2d")
    return total / counts.sum((-2, -1)).data


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Resize the spatial dims of (N, C, *spatial): mode 'nearest' (any number of dims) or 'bilinear'
    (2), each output pixel reading input pixels by index, so gradients flow by the same indices."""
    spatial = input.shape[2:]
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate needs exactly one of size and scale_factor")
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"interpolate mode must be 'nearest' or 'bilinear', got {mode!r}")
    if mode == "bilinear" and len(spatial) != 2:
        raise ValueError(f"bilinear interpolation needs (N, C, H, W), got {input.shape}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("align_corners only applies to bilinear interpolation")
    if size is not None:
        size = _tuple(size, len(spatial), "size")
        scales = [n / m for n, m in zip(spatial, size)]
    else:
        factors = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * len(spatial)
        size = tuple(int(np.floor(n * f)) for n, f in zip(spatial, factors))
        scales = [1 / f for f in factors]  # PyTorch resamples with the given factor, not size / input
    out = input
    for axis, (n, m, scale) in enumerate(zip(spatial, size, scales), start=2):
        lead = (slice(None),) * axis
        if mode == "nearest":
            out = out[lead + (np.minimum(np.floor(np.arange(m) * scale).astype(np.int64), n - 1),)]
            continue
        if align_corners:
            source = np.arange(m) * ((n - 1) / (m - 1) if m > 1 else 0.0)
        else:
            source = np.maximum((np.arange(m) + 0.5) * scale - 0.5, 0)
        low = np.minimum(np.floor(source).astype(np.int64), n - 1)
        high = np.minimum(low + 1, n - 1)
        frac = (source - low).astype(input.dtype).reshape((-1,) + (1,) * (input.ndim - axis - 1))
        out = out[lead + (low,)] * (1 - frac) + out[lead + (high,)] * frac
    return out


# ---- normalisation ------------------------------------------------------------------------------
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalise each channel (dim 1) over the batch and spatial dims. In training the batch's
    statistics are used and the running ones (ndarrays or Tensors, updated in place) move by
    momentum, the variance unbiased as in PyTorch; in eval the running statistics are used."""
    if input.ndim < 2:
        raise RuntimeError(f"batch_norm needs (N, C, ...), got {input.shape}")
    dims = (0,) + tuple(range(2, input.ndim))
    shape = (1, -1) + (1,) * (input.ndim - 2)
    if training:
        count = input.numel() // input.shape[1]
        if count <= 1:
            raise ValueError(f"batch_norm needs more than one value per channel in training, got {input.shape}")
        mean, var = input.mean(dims), input.var(dims, correction=0)
        if running_mean is not None:
            _update(running_mean, mean.data, momentum)
            _update(running_var, var.data * count / (count - 1), momentum)
    else:
        mean, var = _tensor(running_mean), _tensor(running_var)
    out = (input - mean.reshape(shape)) * (var.reshape(shape) + eps).rsqrt()
    return _affine(out, weight, bias, shape)


def _update(running, batch, momentum):
    data = running.data if isinstance(running, Tensor) else running
    data *= 1 - momentum
    data += momentum * batch.astype(data.dtype)


def _tensor(x):
    return x.detach() if isinstance(x, Tensor) else Tensor(x)


def _affine(out, weight, bias, shape):
    if weight is not None:
        out = out * weight.reshape(shape)
    return out + bias.reshape(shape) if bias is not None else out


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing dims normalized_shape (biased variance, as PyTorch)."""
    normalized_shape = _tuple(normalized_shape, 1, "normalized_shape") if isinstance(normalized_shape, int) \
        else tuple(normalized_shape)
    n = len(normalized_shape)
    if input.shape[input.ndim - n:] != normalized_shape:
        raise RuntimeError(f"layer_norm over {normalized_shape} does not match input shape {input.shape}")
    dims = tuple(range(input.ndim - n, input.ndim))
    centered = input - input.mean(dims, keepdim=True)
    out = centered * (centered.square().mean(dims, keepdim=True) + eps).rsqrt()
    return _affine(out, weight, bias, normalized_shape)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise (N, C, ...) over groups of C / num_groups channels and the spatial dims."""
    n, c = input.shape[:2]
    if c % num_groups:
        raise RuntimeError(f"group_norm: {c} channels do not split into {num_groups} groups")
    grouped = input.reshape(n, num_groups, -1)
    centered = grouped - grouped.mean(-1, keepdim=True)
    out = (centered * (centered.square().mean(-1, keepdim=True) + eps).rsqrt()).reshape(input.shape)
    return _affine(out, weight, bias, (1, -1) + (1,) * (input.ndim - 2))
