"""NaN/Inf/overflow/underflow helpers on Tensors and ndarrays."""
import numpy as np
import pytest

from minigrad import Tensor
from minigrad.stability import (check_overflow, check_underflow, first_nonfinite, has_inf, has_nan,
                                validate_tensor)

WRAPPERS = [np.asarray, Tensor]
IDS = ["ndarray", "Tensor"]


@pytest.mark.parametrize("wrap", WRAPPERS, ids=IDS)
def test_has_nan(wrap):
    assert has_nan(wrap(np.array([1.0, np.nan], np.float32)))
    assert not has_nan(wrap(np.array([1.0, np.inf, -np.inf])))
    assert not has_nan(np.arange(4))  # integer arrays cannot hold NaN


@pytest.mark.parametrize("wrap", WRAPPERS, ids=IDS)
def test_has_inf(wrap):
    assert has_inf(wrap(np.array([[0.0, -np.inf]], np.float32)))
    assert not has_inf(wrap(np.array([1.0, np.nan])))
    assert not has_inf(np.array([True, False]))


@pytest.mark.parametrize("wrap", WRAPPERS, ids=IDS)
def test_check_overflow(wrap):
    x = wrap(np.array([1.0, -70000.0, 3.0], np.float32))
    assert check_overflow(x, 65504.0)
    assert not check_overflow(x, 70000.0)  # strictly greater only
    assert check_overflow(wrap(np.array([np.inf])), 1e30)
    assert not check_overflow(wrap(np.array([np.nan, 1.0])), 2.0)
    with pytest.raises(ValueError):
        check_overflow(x, -1.0)


@pytest.mark.parametrize("wrap", WRAPPERS, ids=IDS)
def test_check_underflow(wrap):
    assert check_underflow(wrap(np.array([0.0, 1.0, -1e-9], np.float32)), 6e-8)
    assert not check_underflow(wrap(np.array([0.0, 1.0, -1e-3], np.float32)), 6e-8)  # zeros are not underflow
    assert not check_underflow(wrap(np.zeros(5)), 1e-3)
    with pytest.raises(ValueError):
        check_underflow(wrap(np.zeros(1)), float("nan"))


@pytest.mark.parametrize("wrap", WRAPPERS, ids=IDS)
def test_validate_tensor(wrap):
    assert validate_tensor(wrap(np.ones((2, 2))), "ok") is None
    bad = wrap(np.array([np.nan, np.nan, np.inf, 1.0], np.float32))
    with pytest.raises(ValueError, match=r"'layer0.weight'.*2 NaN and 1 Inf"):
        validate_tensor(bad, "layer0.weight")
    with pytest.raises(ValueError, match=r"'g'.*0 NaN and 1 Inf"):
        validate_tensor(wrap(np.array([-np.inf])), "g")


@pytest.mark.parametrize("wrap", WRAPPERS, ids=IDS)
def test_first_nonfinite(wrap):
    finite = [("a", wrap(np.ones(3))), ("b", np.arange(3))]
    assert first_nonfinite(finite) is None
    assert first_nonfinite([]) is None
    named = finite + [("c", wrap(np.array([1.0, np.inf]))), ("d", wrap(np.array([np.nan])))]
    assert first_nonfinite(named) == "c"
    assert first_nonfinite(iter(named[3:])) == "d"
