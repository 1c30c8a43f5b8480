"""Every notebook runs top to bottom in a fresh kernel; a cell that raises (the notebooks assert
their own results) fails the test. Notebooks are committed without outputs."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01_autograd.ipynb", "02_attention.ipynb", "03_train_gpt.ipynb", "04_cnn.ipynb"]


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{name}: cells {dirty} hold outputs; clear them before committing"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, monkeypatch):
    # One thread each for OpenBLAS and numba: on a busy runner, thread pools that outnumber the
    # cores slow these small matrices down tenfold. The kernel inherits this environment.
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError at the first cell that fails

    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)
    images = [out for cell in code_cells for out in cell.outputs if "image/png" in out.get("data", {})]
    assert images, f"{name} drew no figure"
