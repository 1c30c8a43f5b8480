"""The concat kernel (_concat.py) against np.concatenate."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_cases import DTYPES, LAYOUTS, SETTINGS, make_array
from minigrad import kernels as K


@st.composite
def concat_case(draw):
    ndim = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 5)) for _ in range(ndim)]
    axis = draw(st.integers(-ndim, ndim - 1))
    lengths = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
    layouts = [draw(LAYOUTS) for _ in lengths]
    return shape, axis, lengths, layouts, draw(DTYPES), draw(st.integers(0, 2**32 - 1))


@SETTINGS
@given(concat_case())
def test_concat_places_every_input(case):
    shape, axis, lengths, layouts, dtype, seed = case
    rng = np.random.default_rng(seed)
    arrays = []
    for n, layout in zip(lengths, layouts):
        s = list(shape)
        s[axis] = n
        arrays.append(make_array(rng, tuple(s), dtype, layout))
    out = K.concat(arrays, axis)
    assert out.dtype == dtype and out.shape[axis] == sum(lengths)
    np.testing.assert_array_equal(out, K.concat_reference(arrays, axis))
    offset = 0
    for a in arrays:
        np.testing.assert_array_equal(np.take(out, np.arange(offset, offset + a.shape[axis]), axis=axis), a)
        offset += a.shape[axis]


def test_concat_kv_cache_shape():
    rng = np.random.default_rng(4)
    cache, new = rng.standard_normal((1, 6, 7, 64)), rng.standard_normal((1, 6, 1, 64))
    out = K.concat([cache, new], axis=2)
    assert out.shape == (1, 6, 8, 64)
    np.testing.assert_array_equal(out[:, :, :7], cache)
    np.testing.assert_array_equal(out[:, :, 7], new[:, :, 0])


def test_concat_mixed_dtypes_raise():
    with pytest.raises(ValueError, match="share a dtype"):
        K.concat([np.ones(2, np.float32), np.ones(2, np.float64)], 0)
