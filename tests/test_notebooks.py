"""The course notebooks: each runs top to bottom in a fresh kernel (a cell that raises fails the test:
the notebooks assert their own claims), every figure it shows has labelled axes, the outputs committed
for readers match the code (notebooks/render.py stamps them), and every "your turn" exercise is
solvable (notebooks/solutions/) while its check rejects the unwritten stub and typical wrong answers."""
import re
import runpy
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["00_build_the_engine.ipynb", "01_autograd.ipynb", "02_attention.ipynb", "03_train_gpt.ipynb",
         "04_cnn.ipynb", "05_gpt_block.ipynb", "06_bpe.ipynb", "07_sampling.ipynb", "08_optimizers.ipynb",
         "09_sft_chat.ipynb"]
SOLUTION_FILES = sorted((NOTEBOOKS / "solutions").glob("*.py"))

sys.path.insert(0, str(NOTEBOOKS))
import exercises  # noqa: E402  (notebooks/exercises.py, what the notebooks import)
from render import STAMP, source_hash  # noqa: E402

# Run inside the kernel before the notebook: record every figure shown whose visible axes lack a label.
LABEL_WATCH = """
import matplotlib.backend_bases as _backend_bases
_unlabelled, _print_figure = [], _backend_bases.FigureCanvasBase.print_figure
def _watch(canvas, *args, **kwargs):
    for ax in canvas.figure.axes:
        if ax.axison and ax.get_label() != "<colorbar>" and not (ax.get_xlabel() and ax.get_ylabel()):
            _unlabelled.append(ax.get_title() or "untitled axes")
    return _print_figure(canvas, *args, **kwargs)
_backend_bases.FigureCanvasBase.print_figure = _watch
"""


def read(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    return nb


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


def test_every_notebook_has_a_solution_file():
    assert [p.stem for p in SOLUTION_FILES] == [Path(name).stem for name in NAMES]


@pytest.mark.parametrize("name", NAMES)
def test_committed_outputs_come_from_the_committed_code(name):
    # outputs stay in the repository so a reader sees the figures; they must be those of this code,
    # from one top-to-bottom run
    cells = code_cells(read(name))
    stale = [i for i, cell in enumerate(cells) if cell.metadata.get(STAMP) != source_hash(cell)]
    assert not stale, f"{name}: code cells {stale} changed since rendering; run python notebooks/render.py {name}"
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1)), \
        f"{name}: not one top-to-bottom run; run python notebooks/render.py {name}"
    errors = [out for cell in cells for out in cell.outputs if out.output_type == "error"]
    assert not errors
    assert any("image/png" in out.get("data", {}) for cell in cells for out in cell.outputs), \
        f"{name}: no figure in the committed outputs"


def private_names_used(source):
    """What in a notebook's code reaches past the public API: imports of private modules or names, minigrad
    modules other than its public subpackages, and the private attributes of minigrad's Tensor and nanochat's GPT."""
    import minigrad
    from nanochat.gpt import GPT, GPTConfig

    tensor = minigrad.randn(2, requires_grad=True) * 2
    model = GPT(GPTConfig(sequence_len=8, vocab_size=300, n_layer=1, n_head=1, n_kv_head=1, n_embd=8))
    private = {n for obj in (tensor, model) for n in set(dir(obj)) | set(vars(obj))
               if n.startswith("_") and not n.startswith("__")}
    public = r"(?!(nn|optim|kernels|distributed)\b)"  # minigrad's public subpackages
    private_import = re.compile(rf"^(from\s+(minigrad|nanochat)\S*\._|from\s+minigrad\.{public}|import\s+minigrad\.{public}"
                                r"|from\s+(minigrad|nanochat)\S*\s+import\s+.*\b_\w)")
    found = [line.strip() for line in source.splitlines() if private_import.match(line.strip())]
    return found + sorted(name for name in private if re.search(rf"\.{name}\b", source))


@pytest.mark.parametrize("name", NAMES)
def test_notebook_uses_only_the_public_api(name):
    # the packages' private modules and methods may be renamed at any time; a course must not lean on them
    used = private_names_used("\n".join(cell.source for cell in code_cells(read(name))))
    assert not used, f"{name} uses private names: {used}"


def test_private_names_are_caught():
    assert private_names_used("from minigrad.tensor import unbroadcast\norder = e._topological_order()") == \
        ["from minigrad.tensor import unbroadcast", "_topological_order"]
    assert private_names_used("from nanochat.tokenizer import _messages\nx = t._ctx") == \
        ["from nanochat.tokenizer import _messages", "_ctx"]
    assert private_names_used("from minigrad.nn import functional as F\nnode._prev") == []


def execute_watching_labels(nb):
    """Run nb in a fresh kernel between a cell that starts watching the figures shown and one that fails if
    any had an unlabelled axis; raises CellExecutionError at the first cell that fails."""
    nb.cells.insert(0, nbformat.v4.new_code_cell(LABEL_WATCH))
    nb.cells.append(nbformat.v4.new_code_cell("assert not _unlabelled, f'axes without labels: {_unlabelled}'"))
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()


def test_a_figure_without_axis_labels_fails():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.xlabel('step')\nplt.title('no y label')\nplt.show()")])
    with pytest.raises(CellExecutionError, match="no y label"):
        execute_watching_labels(nb)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, monkeypatch):
    # One thread each for OpenBLAS and numba: on a busy runner, thread pools that outnumber the
    # cores slow these small matrices down tenfold. The kernel inherits this environment.
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    nb = read(name)
    execute_watching_labels(nb)
    cells = code_cells(nb)[1:-1]
    assert all(cell.execution_count is not None for cell in cells)
    images = [out for cell in cells for out in cell.outputs if "image/png" in out.get("data", {})]
    assert images, f"{name} drew no figure"
    # the exercise stubs are left for the learner: each check must say "not yet" to them
    exercise_cells = [cell for cell in cells if "exercise" in cell.metadata.get("tags", [])]
    assert exercise_cells, f"{name} has no exercise"
    for cell in exercise_cells:
        printed = "".join(out.get("text", "") for out in cell.outputs)
        assert "✗ Not yet" in printed and "✓" not in printed, f"{name}: an exercise stub passed its check"


def solutions():
    found = {}
    for path in SOLUTION_FILES:
        for check, answer in runpy.run_path(str(path))["SOLUTIONS"].items():
            found[check] = (path.name, answer)
    return found


def test_every_check_has_a_solution_and_wrong_answers():
    assert set(solutions()) == set(exercises.CHECKS) == set(WRONG_ANSWERS)


@pytest.mark.parametrize("check", sorted(exercises.CHECKS))
def test_solution_passes_its_check(check):
    path, answer = solutions()[check]
    assert exercises.CHECKS[check](answer), f"solutions/{path} fails {check}"


def stub(*args):
    raise NotImplementedError


def _square_without_the_2():
    import minigrad

    class BuggySquare(minigrad.Function):
        def forward(self, a):
            self.a = a
            return a * a

        def backward(self, grad):
            return grad * self.a
    return BuggySquare


def _dfs_without_seen(root):
    order = []

    def visit(node):
        for p in node._prev:
            visit(p)
        order.append(node)
    visit(root)
    return order


def _im2col_laid_out(axes, stride_ignored=False, last_position_dropped=False):
    """An im2col whose (C, OH, OW, kh, kw) windows are put in the given axes order before flattening."""
    def im2col(x, kernel, stride):
        step = 1 if stride_ignored else stride
        windows = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=(1, 2))[:, ::step, ::step]
        if last_position_dropped:
            windows = windows[:, :-1, :-1]
        C, OH, OW, kh, kw = windows.shape
        return windows.transpose(axes).reshape(OH * OW, C * kh * kw)
    return im2col


def _softmax(scores):
    w = np.exp(scores - scores.max(-1, keepdims=True))
    return w / w.sum(-1, keepdims=True)


def _merge_overlapping(ids, pair, new_id):
    return [new_id if (a, b) == pair else a for a, b in zip(ids, ids[1:] + [None])
            ] if ids else []


def _adam_without_bias_correction(param, grad, m, v, t, lr, betas, eps, weight_decay):
    m = betas[0] * m + (1 - betas[0]) * grad
    v = betas[1] * v + (1 - betas[1]) * grad ** 2
    return param * (1 - lr * weight_decay) - lr * m / (np.sqrt(v) + eps), m, v


def _top_p_until_reached(probs, p):
    order = np.argsort(-probs)
    keep = order[np.cumsum(probs[order]) <= p]  # drops the token that crosses p
    out = np.zeros_like(probs)
    out[keep] = probs[keep]
    return out / max(out.sum(), 1e-12)


WRONG_ANSWERS = {
    "check_topological_order": [stub, _dfs_without_seen, lambda root: [root]],
    "check_unbroadcast": [stub, lambda g, shape: g, lambda g, shape: g.sum(0)],
    "check_square_function": [stub, _square_without_the_2()],
    "check_causal_attention": [
        stub,
        lambda q, k, v: _softmax(q @ k.T / np.sqrt(q.shape[1])) @ v,  # no mask
        lambda q, k, v: _softmax(np.where(np.tril(np.ones((len(q),) * 2, bool)), q @ k.T, -np.inf)) @ v],  # no 1/sqrt(D)
    "check_next_token_batch": [
        stub,
        lambda tokens, starts, n: (np.stack([tokens[s:s + n] for s in starts]),) * 2],  # y = x: no shift
    "check_im2col": [
        stub,
        _im2col_laid_out((1, 2, 3, 4, 0)),  # channel last within a patch: rows no longer match w.reshape(O, -1)
        _im2col_laid_out((2, 1, 0, 3, 4)),  # output positions column by column
        _im2col_laid_out((1, 2, 0, 3, 4), stride_ignored=True),
        _im2col_laid_out((1, 2, 0, 3, 4), last_position_dropped=True)],  # output size H - kh, not H - kh + 1
    "check_rms_norm": [stub, lambda x: x / np.sqrt((x ** 2).mean(-1, keepdims=True)) * 1.01,
                       lambda x: (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)],  # layer norm
    "check_merge": [stub, _merge_overlapping],
    "check_top_p": [stub, _top_p_until_reached, lambda probs, p: probs],
    "check_adamw_step": [stub, _adam_without_bias_correction],
    "check_sft_targets": [stub, lambda ids, mask: (ids[:-1], np.where(mask[:-1], ids[1:], -1)),  # mask not shifted
                          lambda ids, mask: (ids[:-1], ids[1:])],  # trains on everything
}


@pytest.mark.parametrize("check,index", [(c, i) for c, answers in WRONG_ANSWERS.items() for i in range(len(answers))])
def test_check_rejects_wrong_answer(check, index, capsys):
    assert not exercises.CHECKS[check](WRONG_ANSWERS[check][index])
    assert "✗ Not yet" in capsys.readouterr().out
