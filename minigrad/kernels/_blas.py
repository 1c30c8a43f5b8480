"""numpy's own OpenBLAS, called from inside numba kernels, and how the kernels share the CPU's threads.

One pool of threads does everything: numba's parallel regions, under numba's TBB threading layer
(the `tbb` dependency; OpenMP where TBB is missing). TBB launches a parallel region in about as
little time as OpenMP and, unlike GNU OpenMP, survives a fork; numba's `workqueue` fallback is two
orders of magnitude slower to launch (benchmarks/RESULTS.md). OpenBLAS runs single-threaded inside
the pool, since its own threads would fight the pool for the same cores: a GEMM big enough to split
is cut into blocks, one per thread, each an independent single-threaded BLAS call.
`gemm` and `gemv` call cblas through an address passed in as an argument: an address baked into
the code would break numba's on-disk cache in the next process.
"""
import ctypes
import glob
import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

NO_TRANS, TRANS = 111, 112  # CBLAS_TRANSPOSE
_ROW_MAJOR = 101


def _openblas():
    """{(routine, dtype): address} of cblas_?gemm and cblas_?gemv in the ILP64 OpenBLAS that numpy's
    wheels bundle, after setting it to one thread; {} when this numpy links another BLAS (matmul then
    uses np.matmul and attention its NumPy twin)."""
    pattern = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas64*")
    for path in glob.glob(pattern):
        try:
            lib = ctypes.CDLL(path)
        except OSError:  # a file we cannot load is not the BLAS numpy uses
            continue
        for blas, ctl in (("scipy_cblas_", "scipy_openblas_"), ("cblas_", "openblas_")):
            names = {(routine, np.dtype(dtype)): f"{blas}{letter}{routine}64_"
                     for routine in ("gemm", "gemv") for letter, dtype in (("s", np.float32), ("d", np.float64))}
            set_threads = getattr(lib, f"{ctl}set_num_threads64_", None)
            if set_threads is not None and all(hasattr(lib, name) for name in names.values()):
                set_threads(1)
                return {key: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for key, name in names.items()}
    return {}


ADDRESS = _openblas()


def _cblas_codegen(kinds):
    """Lowering of a call to the cblas routine whose address is the first argument; `kinds` gives
    the C type of each following argument: e enum (int32), i int64, r real (the element type),
    p pointer (passed as an integer address)."""
    def codegen(context, builder, signature, args):
        real = ir.FloatType() if types.float32 in signature.args else ir.DoubleType()
        c_types = {"e": ir.IntType(32), "i": ir.IntType(64), "r": real, "p": real.as_pointer()}
        fnty = ir.FunctionType(ir.VoidType(), [c_types[kind] for kind in "e" + kinds])
        call_args = [ir.Constant(ir.IntType(32), _ROW_MAJOR)] + [
            builder.inttoptr(value, c_types["p"]) if kind == "p" else value for kind, value in zip(kinds, args[1:])]
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), call_args)
    return codegen


def _signature(kinds, real):
    numba_types = {"e": types.int32, "i": types.int64, "r": real, "p": types.intp}
    return types.void(types.intp, *(numba_types[kind] for kind in kinds))


_GEMM_KINDS, _GEMV_KINDS = "eeiiirpipirpi", "eiirpipirpi"


@intrinsic
def _call_gemm(typingctx, address, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    return _signature(_GEMM_KINDS, alpha), _cblas_codegen(_GEMM_KINDS)


@intrinsic
def _call_gemv(typingctx, address, trans, m, n, alpha, a, lda, x, incx, beta, y, incy):
    return _signature(_GEMV_KINDS, alpha), _cblas_codegen(_GEMV_KINDS)


@njit(cache=True, error_model="numpy", inline="always")
def gemm(address, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """C (m x n, row stride ldc) = alpha op(A) op(B) + beta C, every matrix given by its address."""
    _call_gemm(address, np.int32(trans_a), np.int32(trans_b), np.int64(m), np.int64(n), np.int64(k), alpha,
               a, np.int64(lda), b, np.int64(ldb), beta, c, np.int64(ldc))


@njit(cache=True, error_model="numpy", inline="always")
def gemv(address, trans, m, n, alpha, a, lda, x, incx, beta, y, incy):
    """y = alpha op(A) x + beta y for the m x n row-major A (row stride lda); vectors by address and step."""
    _call_gemv(address, np.int32(trans), np.int64(m), np.int64(n), alpha, a, np.int64(lda), x, np.int64(incx),
               beta, y, np.int64(incy))


def operand(x):
    """(x, trans, ld): x as BLAS reads it, row-major with leading dimension ld (trans NO_TRANS) or
    its transpose (TRANS); copied only when neither stride is the element size, or x is misaligned."""
    rows, cols = x.shape
    item = x.itemsize
    s0, s1 = x.strides
    if x.flags.aligned:
        if (s1 == item or cols == 1) and s0 % item == 0 and s0 // item >= max(1, cols):
            return x, NO_TRANS, s0 // item
        if (s0 == item or rows == 1) and s1 % item == 0 and s1 // item >= max(1, rows):
            return x, TRANS, s1 // item
    return np.array(x, order="C"), NO_TRANS, max(1, cols)  # always a fresh, aligned copy
