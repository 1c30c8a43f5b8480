"""Check analytic gradients against central finite differences in float64."""
import numpy as np

from minigrad._tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient that disagrees with finite differences."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Compare the gradient of sum(fn(*inputs) * R) for a fixed random R (a non-uniform upstream
    gradient catches more bugs than .sum()) with central differences, for every input that
    requires grad. Returns True, or raises GradcheckError naming the worst element."""
    # float64 inputs keep their own arrays (and strides, so non-contiguous layouts get checked)
    inputs = [Tensor(t.data.astype(np.float64, copy=False), requires_grad=t.requires_grad)
              if isinstance(t, Tensor) else t for t in inputs]
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck needs at least one input with requires_grad=True")

    out = fn(*inputs)
    weights = np.random.default_rng(seed).standard_normal(out.shape)
    (out * Tensor(weights)).sum().backward()

    def objective():
        with no_grad():
            return float(np.sum(fn(*inputs).data * weights))

    for i in checked:
        x = inputs[i]
        analytic = x.grad if x.grad is not None else np.zeros_like(x.data)
        numeric = np.zeros_like(x.data)
        for index in np.ndindex(x.shape):
            original = x.data[index]
            x.data[index] = original + eps
            plus = objective()
            x.data[index] = original - eps
            minus = objective()
            x.data[index] = original
            numeric[index] = (plus - minus) / (2 * eps)
        excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        excess = np.where(np.isnan(excess), np.inf, excess)  # NaN > 0 is False: a NaN gradient would pass
        if excess.size and excess.max() > 0:
            worst = np.unravel_index(np.argmax(excess), excess.shape)
            raise GradcheckError(
                f"gradient of input {i} (shape {x.shape}) is wrong at index {tuple(map(int, worst))}: "
                f"analytic {analytic[worst]:.6g}, numeric {numeric[worst]:.6g}")
    return True
