"""Shared by the kernel tests: hypothesis settings, arrays in every memory layout, tolerances."""
import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

SETTINGS = settings(deadline=None, max_examples=30)
DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = st.sampled_from(["c", "transposed", "strided", "broadcast"])


def make_array(rng, shape, dtype, layout, scale=1.0):
    """Random array of `shape` whose memory layout is C, transposed, strided or stride-0 broadcast."""
    def draw(s):
        return (rng.standard_normal(s) * scale).astype(dtype)

    if layout == "transposed" and len(shape) >= 2:
        return np.swapaxes(draw(shape[:-2] + (shape[-1], shape[-2])), -1, -2)
    if layout == "strided":
        return draw(tuple(2 * n for n in shape))[tuple(slice(None, None, 2) for _ in shape)]
    if layout == "broadcast" and len(shape) >= 1:
        return np.broadcast_to(draw((1,) + tuple(shape[1:])), shape)
    return draw(shape)


def tol(dtype, scale=1.0):
    if dtype == np.float32:
        return dict(rtol=1e-5, atol=1e-5 * scale)
    return dict(rtol=1e-12, atol=1e-12 * scale)


def misaligned(x):
    """x's values in a buffer that starts one byte past an aligned address."""
    raw = np.zeros(x.nbytes + 1, np.uint8)
    y = np.frombuffer(raw.data, x.dtype, x.size, offset=1).reshape(x.shape)
    y[...] = x
    return y
