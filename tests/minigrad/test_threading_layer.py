"""numba's threading layer inside a virtual environment: TBB loads from <venv>/lib without any
LD_LIBRARY_PATH, and when it cannot load, minigrad says so once instead of silently using OpenMP."""
import os
import platform
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
linux_x86 = pytest.mark.skipif(sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"),
                               reason="the tbb wheel (a dependency) exists for Linux x86-64")


def run_python(code):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "NUMBA_THREADING_LAYER")}
    env["PYTHONPATH"] = REPO
    return subprocess.run([sys.executable, "-W", "always", "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=300)


@linux_x86
def test_tbb_threading_layer_loads_in_a_venv_without_loader_path():
    proc = run_python("""
        import numpy as np, numba
        from minigrad import kernels as K
        K.rms_norm(np.ones((4096, 64), np.float32), 1e-6)  # a parallel region
        print(numba.threading_layer())
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["tbb"], proc.stdout + proc.stderr
    assert "RuntimeWarning" not in proc.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="the fork hazard and the warning are Linux's")
def test_missing_tbb_is_reported_once_naming_fork_unsafe_openmp():
    proc = run_python("""
        import sys
        sys.modules["numba.np.ufunc.tbbpool"] = None  # as if libtbb could not be loaded
        import numpy as np, minigrad
        from minigrad import kernels as K
        K.rms_norm(np.ones((4096, 64), np.float32), 1e-6)  # still runs, on another layer
        print("ran")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ran"]
    warnings = [line for line in proc.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warnings) == 1, proc.stderr
    assert "not fork-safe" in warnings[0] and "OpenMP" in warnings[0] and "pip install tbb" in warnings[0]
