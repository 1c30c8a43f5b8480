"""Makes numba's TBB threading layer load inside a virtual environment.

The `tbb` wheel installs libtbb.so.12 into <venv>/lib, which is not on the dynamic loader's path,
so numba cannot find it and falls back to GNU OpenMP, under which a process forked after running
parallel kernels (multiprocessing's default start method on Linux) has its children killed.
Loading the library by its full path, globally, before numba's first parallel launch lets numba's
own `dlopen("libtbb.so.12")` find it already loaded.
"""
import ctypes
import os
import sys
import warnings

TBB_LIBRARY = "libtbb.so.12"


def load_tbb(prefix=sys.prefix):
    """Preload TBB from `prefix`/lib; warn once, naming the consequence, if numba still cannot use it.
    Returns True when numba's TBB layer can load. Does nothing off Linux or when the user chose a
    layer with NUMBA_THREADING_LAYER."""
    if sys.platform != "linux" or os.environ.get("NUMBA_THREADING_LAYER"):
        return False
    path = os.path.join(prefix, "lib", TBB_LIBRARY)
    if os.path.isfile(path):
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:  # a broken or foreign-architecture file: numba's own search may still succeed
            pass
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401  (loads libtbb exactly as numba will)
    except ImportError as e:
        warnings.warn(f"minigrad: numba's TBB threading layer cannot load ({e}); numba falls back to OpenMP, "
                      "which is not fork-safe: a process forked after running parallel kernels (multiprocessing's "
                      "default on Linux) has its children killed. `pip install tbb` fixes it.",
                      RuntimeWarning, stacklevel=2)
        return False
    return True
