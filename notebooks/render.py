"""Execute the course notebooks and save them with their outputs, so a reader sees the figures without
running anything. Each code cell is stamped with a hash of its source; tests/test_notebooks.py checks
the stamps, so a cell edited after rendering fails the tests until this script is run again.

    python notebooks/render.py                  # every notebook
    python notebooks/render.py 02_attention     # just one
"""
import hashlib
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
STAMP = "source_sha256"
CELL_TIMEOUT_S = 180


def source_hash(cell):
    return hashlib.sha256(cell.source.encode()).hexdigest()


def execute(nb):
    """Run nb in place in a fresh kernel, one thread per thread pool (as the tests and CI do)."""
    os.environ.update(OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError at the first cell that fails
    return nb


def render(path):
    nb = execute(nbformat.read(path, as_version=4))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.metadata[STAMP] = source_hash(cell)
            cell.metadata.pop("execution", None)  # timestamps: noise in every diff
    nbformat.write(nb, path)


def main(names):
    paths = [NOTEBOOKS / f"{name.removesuffix('.ipynb')}.ipynb" for name in names] or sorted(NOTEBOOKS.glob("*.ipynb"))
    for path in paths:
        print(f"rendering {path.name} ...", flush=True)
        render(path)


if __name__ == "__main__":
    main(sys.argv[1:])
