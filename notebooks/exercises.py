"""Checks for the "your turn" cells of the course notebooks.

Each check_* takes what you wrote, tries it on cases whose answers are known, prints a tick or
what is wrong, and returns True or False. Worked solutions: solutions/<notebook>.py (the tests run
them, and also run every check on wrong answers, so a check cannot wave a mistake through).
"""
import numpy as np

CHECKS = {}


def exercise(trial):
    """Register trial(answer) -> None (right) or a sentence saying what is wrong, as check_<name>."""
    name = trial.__name__.removeprefix("_")

    def check(answer):
        try:
            problem = trial(answer)
        except NotImplementedError:
            problem = "not written yet: replace `raise NotImplementedError` with your code"
        except Exception as err:  # the learner's code may fail in any way; say how, do not crash the notebook
            problem = f"your code raised {type(err).__name__}: {err}"
        print(f"✗ Not yet ({name}): {problem}" if problem else f"✓ Correct ({name})")
        return problem is None

    check.__name__ = check.__qualname__ = f"check_{name}"
    check.__doc__ = trial.__doc__
    CHECKS[check.__name__] = check
    return check


def _differs(got, want, what, atol=1e-6):
    got = np.asarray(got)
    if got.shape != np.shape(want):
        return f"{what}: shape {got.shape}, expected {np.shape(want)}"
    if not np.allclose(got, want, atol=atol, rtol=1e-5, equal_nan=False):
        return f"{what}: got {np.round(got, 4).tolist()}, expected {np.round(want, 4).tolist()}"
    return None


# ---------------------------------------------------------------- 00 build the engine

class _Node:
    def __init__(self, name, *prev):
        self.name, self._prev = name, prev

    def __repr__(self):
        return self.name


@exercise
def _topological_order(topo):
    """topo(root) -> every node reachable from root through ._prev, once each, inputs before users."""
    a = _Node("a")
    b = _Node("b")
    c = _Node("c", a, b)
    d = _Node("d", b, b)        # b used twice by the same node
    e = _Node("e", c, d)
    f = _Node("f", e, c)        # c used by two nodes: a diamond
    order = list(topo(f))
    if sorted(map(repr, order)) != sorted("abcdef"):
        return f"expected each of a..f exactly once, got {order}"
    seen = set()
    for node in order:
        late = [p for p in node._prev if id(p) not in seen]
        if late:
            return f"{node} comes before its input {late[0]} in {order}"
        seen.add(id(node))
    return None


@exercise
def _unbroadcast(unbroadcast):
    """unbroadcast(grad, shape) -> grad summed back to shape, for an input broadcast to grad.shape."""
    rng = np.random.default_rng(0)
    for out_shape, shape in [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 4), (3, 1)), ((2, 3, 4), (1, 4)),
                             ((2, 3, 4), (3, 1)), ((3, 4), ())]:
        grad = rng.standard_normal(out_shape)
        # the gradient of x is d sum(grad * broadcast(x)) / dx: one unit x at a time
        want = np.zeros(shape)
        for index in np.ndindex(*shape):
            unit = np.zeros(shape)
            unit[index] = 1.0
            want[index] = (grad * np.broadcast_to(unit, out_shape)).sum()
        problem = _differs(unbroadcast(grad, shape), want, f"grad {out_shape} -> {shape}")
        if problem:
            return problem
    return None


# ---------------------------------------------------------------- 01 autograd

@exercise
def _square_function(Square):
    """Square: a minigrad.Function with Square.apply(t) == t * t and a backward that gradcheck accepts."""
    import minigrad

    x = minigrad.tensor(np.array([-1.5, 0.3, 2.0, 0.7]), requires_grad=True)
    problem = _differs(Square.apply(x).numpy(), x.numpy() ** 2, "forward")
    if problem:
        return problem
    try:
        minigrad.gradcheck(lambda t: Square.apply(t), [x])
    except minigrad.GradcheckError as err:
        return f"gradcheck rejects the backward: {err}"
    return None


# ---------------------------------------------------------------- 02 attention

@exercise
def _causal_attention(attention):
    """attention(q, k, v) -> (T, D): softmax(q k^T / sqrt(D) with the future masked) v, NumPy arrays."""
    rng = np.random.default_rng(1)
    T, D = 5, 4
    q, k, v = (rng.standard_normal((T, D)) for _ in range(3))
    scores = q @ k.T / np.sqrt(D)
    scores[np.triu_indices(T, 1)] = -np.inf
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return _differs(attention(q, k, v), weights @ v, "attention output")


# ---------------------------------------------------------------- 03 train a GPT

@exercise
def _next_token_batch(make_batch):
    """make_batch(tokens, starts, seq_len) -> x, y of shape (len(starts), seq_len): windows and next tokens."""
    tokens = np.arange(100, 130)
    starts = [0, 7, 19]
    x, y = make_batch(tokens, starts, 5)
    want_x = np.stack([tokens[s:s + 5] for s in starts])
    return _differs(x, want_x, "x") or _differs(y, want_x + 1, "y (the token after each x)")


# ---------------------------------------------------------------- 04 a CNN

@exercise
def _im2col(im2col):
    """im2col(x, kernel, stride) -> (OH*OW, C*kh*kw): one row per output position (row-major), its patch
    flattened in (channel, row, column) order, so im2col(x, k, s) @ w.reshape(O, -1).T is a convolution."""
    rng = np.random.default_rng(5)
    for shape, kernel, stride in [((1, 5, 5), (3, 3), 1), ((2, 6, 7), (3, 2), 1), ((2, 6, 7), (3, 2), 2),
                                  ((3, 8, 8), (3, 3), 3)]:
        x = rng.standard_normal(shape)
        (kh, kw), (H, W) = kernel, shape[1:]
        rows = [x[:, i:i + kh, j:j + kw].ravel() for i in range(0, H - kh + 1, stride)
                for j in range(0, W - kw + 1, stride)]
        what = f"im2col(x of shape {shape}, kernel={kernel}, stride={stride})"
        got, want = np.asarray(im2col(x.copy(), kernel, stride)), np.array(rows)
        if got.shape != want.shape:
            return f"{what}: shape {got.shape}, expected {want.shape} (output positions, C*kh*kw)"
        wrong = np.flatnonzero(~np.isclose(got, want).all(1))
        if len(wrong):
            return _differs(got[wrong[0]], want[wrong[0]], f"{what}, row {wrong[0]}")
    return None


# ---------------------------------------------------------------- 05 the GPT block

@exercise
def _rms_norm(rms_norm):
    """rms_norm(x) -> x divided by the root-mean-square of its last axis (NumPy, eps 1e-6 inside the root)."""
    x = np.random.default_rng(2).standard_normal((3, 8)) * np.array([[0.1], [1.0], [30.0]]) + 0.5
    want = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6)
    return _differs(rms_norm(x), want, "rms_norm(x)", atol=1e-5)


# ---------------------------------------------------------------- 06 BPE

@exercise
def _merge(merge):
    """merge(ids, pair, new_id) -> ids with every non-overlapping occurrence of pair (left to right) replaced."""
    cases = [(([1, 2, 3, 1, 2], (1, 2), 9), [9, 3, 9]),
             (([5, 5, 5], (5, 5), 7), [7, 5]),
             (([5, 5, 5, 5], (5, 5), 7), [7, 7]),
             (([1, 2], (2, 1), 9), [1, 2]),
             (([], (1, 2), 9), [])]
    for args, want in cases:
        got = list(merge(list(args[0]), *args[1:]))
        if got != want:
            return f"merge{args} gave {got}, expected {want}"
    return None


# ---------------------------------------------------------------- 07 sampling

def _nucleus(probs, p):
    order = np.argsort(-probs, kind="stable")
    before = np.cumsum(probs[order]) - probs[order]  # mass of the tokens ranked above each one
    keep = np.zeros(len(probs), bool)
    keep[order[before < p]] = True
    out = np.where(keep, probs, 0.0)
    return out / out.sum()


@exercise
def _top_p(top_p):
    """top_p(probs, p) -> the smallest set of most likely tokens whose mass reaches p, renormalised."""
    rng = np.random.default_rng(3)
    for p in (0.05, 0.5, 0.9, 1.0):
        probs = rng.dirichlet(np.full(12, 0.5))
        problem = _differs(top_p(probs.copy(), p), _nucleus(probs, p), f"top_p(p={p})")
        if problem:
            return problem
    return None


# ---------------------------------------------------------------- 08 optimizers

@exercise
def _adamw_step(adamw_step):
    """adamw_step(param, grad, m, v, t, lr, betas, eps, weight_decay) -> (param, m, v) as minigrad.optim.AdamW."""
    import minigrad

    rng = np.random.default_rng(4)
    hyper = dict(lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    start = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(3)]
    p = minigrad.tensor(start.copy(), requires_grad=True)
    reference = minigrad.optim.AdamW([p], **hyper)
    param, m, v = start.copy(), np.zeros(5), np.zeros(5)
    for t, g in enumerate(grads, 1):
        p.grad = g.copy()
        reference.step()
        param, m, v = adamw_step(param, g, m, v, t, **hyper)
        problem = _differs(param, p.numpy(), f"parameter after step {t}", atol=1e-9)
        if problem:
            return problem
    return None


# ---------------------------------------------------------------- 09 SFT

@exercise
def _sft_targets(sft_targets):
    """sft_targets(ids, mask) -> x, y: inputs and next-token targets, y = -1 where that target is not trained."""
    from nanochat.sft import collate

    ids = np.array([10, 11, 12, 13, 14, 15, 16])
    mask = np.array([0, 0, 0, 1, 1, 0, 1], bool)
    x_want, y_want = collate([(ids, mask)], pad_id=0)
    x, y = sft_targets(ids, mask)
    return _differs(x, x_want[0], "x") or _differs(y, y_want[0], "y")


globals().update(CHECKS)  # check_topological_order, check_unbroadcast, ...: what the notebooks import
