"""Compute kernels for minigrad: fast paths plus NumPy twins (`<name>_reference`) with identical semantics.

One rule for every public kernel: it runs its fast path for the dtypes and layouts it is built for
(float32 and float64) and hands any other input to its own NumPy twin, so callers never choose.
The implementation modules are private (`_<name>.py`); this package is the public surface.
Every kernel compiles with `error_model="numpy"`: a division by zero gives inf or NaN, as in the
twins (numba's default raises ZeroDivisionError), and a loop that divides keeps no per-element
check, so LLVM can vectorise it (the softcapped cross-entropy's tanh: 2.5-3x).
"""
from ._threads import load_tbb

load_tbb()  # before any parallel kernel launches

from ._attention import (attention_backward, attention_backward_reference, attention_forward,
                         attention_forward_reference)
from ._concat import concat, concat_reference
from ._cross_entropy import (cross_entropy_backward, cross_entropy_backward_reference, cross_entropy_forward,
                             cross_entropy_forward_reference)
from ._elementwise import (relu_squared, relu_squared_backward, relu_squared_backward_reference,
                           relu_squared_reference, rotary, rotary_reference)
from ._matmul import matmul, matmul_backward, matmul_backward_reference, matmul_reference
from ._special import erf, erf_reference
from ._norm import rms_norm, rms_norm_backward, rms_norm_backward_reference, rms_norm_reference
from ._optim import adamw_update, adamw_update_reference, momentum_update, momentum_update_reference
from ._softmax import (log_softmax, log_softmax_backward, log_softmax_backward_reference, log_softmax_reference,
                       softmax, softmax_backward, softmax_backward_reference, softmax_reference)
from ._warmup import compile_in_background  # noqa: E402  (it drives the kernels above)

__all__ = [
    "attention_forward", "attention_forward_reference", "attention_backward", "attention_backward_reference",
    "concat", "concat_reference", "erf", "erf_reference",
    "cross_entropy_forward", "cross_entropy_forward_reference",
    "cross_entropy_backward", "cross_entropy_backward_reference",
    "rms_norm", "rms_norm_reference", "rms_norm_backward", "rms_norm_backward_reference",
    "rotary", "rotary_reference", "relu_squared", "relu_squared_reference",
    "relu_squared_backward", "relu_squared_backward_reference",
    "matmul", "matmul_reference", "matmul_backward", "matmul_backward_reference",
    "softmax", "softmax_reference", "softmax_backward", "softmax_backward_reference",
    "log_softmax", "log_softmax_reference", "log_softmax_backward", "log_softmax_backward_reference",
    "adamw_update", "adamw_update_reference", "momentum_update", "momentum_update_reference",
    "compile_in_background",
]
