"""nanochat.train: the non-finite guard in `fit`, `find_nonfinite`, `evaluate` and `config_for_depth`."""
import copy
import json
import math
import os
import signal

import numpy as np
import pytest

import minigrad
from minigrad import Function
from nanochat.checkpoint import latest_step, load_checkpoint
from nanochat.dataloader import DataLoader
from nanochat.gpt import GPT, GPTConfig
from nanochat.train import TrainingError, config_for_depth, evaluate, find_nonfinite, fit, resume

CFG = GPTConfig(sequence_len=16, vocab_size=64, n_layer=1, n_head=2, n_kv_head=2, n_embd=32)


def setup(seed=0):
    model = GPT(CFG, seed=seed)
    tokens = np.random.default_rng(seed).integers(0, CFG.vocab_size, 3000)
    loader = DataLoader(tokens, 4, CFG.sequence_len, seed=seed)
    return model, model.setup_optimizers(), loader


def weights(model):
    return {name: p.data.copy() for name, p in model.named_parameters()}


def optimizer_states(optimizers):
    return [copy.deepcopy(opt.state_dict()["state"]) for opt in optimizers]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            assert_same(a[k], b[k])
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))


def read_log(out):
    def reject(name):
        raise AssertionError(f"non-JSON constant {name} in log.jsonl")
    return [json.loads(line, parse_constant=reject) for line in (out / "log.jsonl").read_text().splitlines()]


class PoisonGrad(Function):
    """Identity forward; NaN gradient backward."""
    def forward(self, a):
        return a.copy()

    def backward(self, grad):
        return np.full_like(grad, np.nan)


class Planted:
    """Wraps model.forward: poisons the training loss (or one parameter's gradient) on chosen
    steps, and records the weights and optimizer state at the start of every step."""

    def __init__(self, model, optimizers, bad_steps, kind="loss", on_first_bad=None, interrupt_at=None):
        self.model, self.optimizers, self.forward = model, optimizers, model.forward
        self.bad_steps, self.kind, self.on_first_bad = bad_steps, kind, on_first_bad
        self.interrupt_at = interrupt_at
        self.step, self.weights_at, self.state_at = 0, {}, {}
        model.forward = self

    def __call__(self, idx, targets=None, **kwargs):
        self.step += 1
        self.weights_at[self.step] = weights(self.model)
        self.state_at[self.step] = optimizer_states(self.optimizers)
        if self.step == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of this step
        loss = self.forward(idx, targets=targets, **kwargs)
        if self.step in self.bad_steps:
            if self.on_first_bad is not None:
                self.on_first_bad()
                self.on_first_bad = None
            if self.kind == "loss":
                return loss * float("nan")
            return loss + (PoisonGrad.apply(self.model.lm_head.weight) * 0.0).sum()
        return loss


# ---- the guard in fit ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind, reason", [("loss", "non-finite loss"),
                                          ("grad", "non-finite gradient of lm_head.weight")])
def test_a_poisoned_step_is_refused_and_training_goes_on(tmp_path, kind, reason):
    model, optimizers, loader = setup()
    planted = Planted(model, optimizers, bad_steps={3}, kind=kind)
    records = fit(model, optimizers, loader, out=tmp_path, steps=6, clip=1.0)

    # the refused step changed neither the weights nor the optimizer state ...
    assert_same(planted.weights_at[4], planted.weights_at[3])
    for before, after in zip(planted.state_at[3], planted.state_at[4]):
        assert_same(before, after)
    # ... while the good steps around it did
    for step in (2, 5):
        assert any(not np.array_equal(planted.weights_at[step + 1][n], planted.weights_at[step][n])
                   for n in planted.weights_at[step])
    final = weights(model)
    assert any(not np.array_equal(final[n], planted.weights_at[6][n]) for n in final)

    log = read_log(tmp_path)
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert log[2]["skipped"] is True and log[2]["reason"] == reason
    if kind == "loss":
        assert log[2]["loss"] is None
    else:
        assert math.isfinite(log[2]["loss"])
    for r in log[:2] + log[3:]:
        assert not r.get("skipped") and "reason" not in r and math.isfinite(r["loss"])
    assert [r["step"] for r in records] == [1, 2, 4, 5, 6]
    assert all(np.isfinite(w).all() for w in final.values())
    _, meta, _ = load_checkpoint(tmp_path)
    assert meta["step"] == 6


def test_consecutive_bad_steps_stop_the_run_and_leave_the_last_good_checkpoint(tmp_path):
    model, optimizers, loader = setup()
    snapshot = {}

    def take_snapshot():  # runs at the first bad step: checkpoint 4 is on disk by then
        snapshot.update({p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "log.jsonl"})

    planted = Planted(model, optimizers, bad_steps=set(range(5, 100)), on_first_bad=take_snapshot)
    with pytest.raises(TrainingError) as info:
        fit(model, optimizers, loader, out=tmp_path, steps=12, save_every=4, max_bad_steps=3)
    message = str(info.value)
    assert "3 consecutive steps" in message and "non-finite loss" in message and str(tmp_path) in message
    assert planted.step == 7  # stopped at the third bad step, not later

    assert {"model_000004.safetensors", "optim_000004.safetensors", "meta_000004.json"} <= snapshot.keys()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "log.jsonl"} == snapshot
    assert latest_step(tmp_path) == 4
    saved, meta, _ = load_checkpoint(tmp_path)
    assert meta["step"] == 4 and math.isfinite(meta["loss"])
    assert_same(weights(saved), weights(model))  # the refused steps left the weights as saved
    log = read_log(tmp_path)
    assert [r["step"] for r in log] == list(range(1, 8))
    assert [r.get("reason") for r in log[4:]] == ["non-finite loss"] * 3


def test_bad_steps_that_are_not_consecutive_do_not_stop_the_run(tmp_path):
    model, optimizers, loader = setup()
    Planted(model, optimizers, bad_steps={2, 4, 6})
    records = fit(model, optimizers, loader, out=tmp_path, steps=7, max_bad_steps=2)
    assert [r["step"] for r in records] == [1, 3, 5, 7]
    assert latest_step(tmp_path) == 7


def test_a_refused_last_step_still_writes_the_final_checkpoint(tmp_path):
    model, optimizers, loader = setup()
    Planted(model, optimizers, bad_steps={5})
    fit(model, optimizers, loader, out=tmp_path, steps=5, save_every=2)
    assert latest_step(tmp_path) == 5
    saved, meta, _ = load_checkpoint(tmp_path)
    assert_same(weights(saved), weights(model))
    assert meta["loader"] == loader.state_dict()


@pytest.mark.parametrize("bad_steps", [set(), {3}])
def test_ctrl_c_stops_at_the_step_boundary_and_saves(tmp_path, capsys, bad_steps):
    model, optimizers, loader = setup()
    handler = signal.getsignal(signal.SIGINT)
    planted = Planted(model, optimizers, bad_steps=bad_steps, interrupt_at=3)
    fit(model, optimizers, loader, out=tmp_path, steps=50, save_every=0)
    assert planted.step == 3  # the interrupted step finished, no later one began
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is restored
    assert f"interrupted: saved a checkpoint at step 3 in {tmp_path}" in capsys.readouterr().out
    assert latest_step(tmp_path) == 3
    saved, meta, _ = load_checkpoint(tmp_path)
    assert_same(weights(saved), weights(model))
    assert meta["loader"] == loader.state_dict() == {"epoch": 0, "position": 3, "seed": 0}
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3]


# ---- find_nonfinite -----------------------------------------------------------------------------

def test_find_nonfinite_names_loss_then_first_bad_gradient():
    model = GPT(CFG)
    assert find_nonfinite(1.5, model) is None  # no gradients at all
    for name, p in model.named_parameters():
        p.grad = np.zeros_like(p.data)
    assert find_nonfinite(1.5, model) is None
    assert find_nonfinite(float("nan"), model) == "loss"
    assert find_nonfinite(float("inf"), model) == "loss"
    params = dict(model.named_parameters())
    params["lm_head.weight"].grad[0, 0] = np.inf
    assert find_nonfinite(1.5, model) == "gradient of lm_head.weight"
    params["transformer.h.0.attn.c_v.weight"].grad[3, 1] = np.nan
    assert find_nonfinite(1.5, model) == "gradient of transformer.h.0.attn.c_v.weight"
    assert find_nonfinite(float("nan"), model) == "loss"  # the loss is checked first
    params["transformer.wte.weight"].grad = None  # parameters without a gradient are skipped
    assert find_nonfinite(1.5, model) == "gradient of transformer.h.0.attn.c_v.weight"


# ---- evaluate -----------------------------------------------------------------------------------

def test_evaluate_uniform_model_by_hand():
    model = GPT(GPTConfig(sequence_len=8, vocab_size=16, n_layer=1, n_head=2, n_kv_head=2, n_embd=32))
    # lm_head starts at zero: every prediction is uniform, ln 16 nats per target
    token_bytes = np.zeros(16, dtype=np.int32)
    token_bytes[3], token_bytes[5] = 2, 1  # token 7 has no bytes (a special token)
    x = np.array([[1, 2, 3, 4]])
    y = np.array([[3, 5, -1, 7]])
    loss, bpb = evaluate(model, [(x, y)], token_bytes)
    assert loss == pytest.approx(math.log(16))  # over the three non-ignored targets
    # bits per byte: targets 3 and 5 only, 2 x ln16 nats over 3 bytes = 8/3 bits per byte
    assert bpb == pytest.approx(2 * math.log(16) / (math.log(2) * 3))
    assert bpb == pytest.approx(8 / 3)


def log_softmax(logits):
    logits = logits.astype(np.float64)
    m = logits.max(-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))


def test_evaluate_matches_hand_computation_over_several_batches():
    rng = np.random.default_rng(1)
    V = 16
    model = GPT(GPTConfig(sequence_len=8, vocab_size=V, n_layer=1, n_head=2, n_kv_head=2, n_embd=32), seed=1)
    model.lm_head.weight.data[...] = rng.normal(0, 0.5, model.lm_head.weight.data.shape)
    token_bytes = rng.integers(1, 5, V).astype(np.int32)
    token_bytes[[0, 9]] = 0
    batches = []
    for b in (2, 3):  # different sizes: totals are per token, not a mean of batch means
        x = rng.integers(0, V, (b, 8))
        y = rng.integers(0, V, (b, 8))
        y[rng.random((b, 8)) < 0.25] = -1
        y[0, 0], y[-1, -1] = 0, 9  # zero-byte targets count in the loss but not in bpb
        batches.append((x, y))

    nats, counted, bpb_nats, nbytes = [], 0, 0.0, 0
    for x, y in batches:
        with minigrad.no_grad():
            logp = log_softmax(model(x).data)
        for (i, t), target in np.ndenumerate(y):
            if target < 0:
                continue
            nat = -logp[i, t, target]
            nats.append(nat)
            if token_bytes[target] > 0:
                bpb_nats += nat
                nbytes += int(token_bytes[target])
    loss, bpb = evaluate(model, batches, token_bytes)
    assert loss == pytest.approx(np.sum(nats) / len(nats), rel=1e-5)
    assert bpb == pytest.approx(bpb_nats / (math.log(2) * nbytes), rel=1e-5)
    # ignored targets really are out: -1 everywhere in one batch leaves the other batch's figures
    loss_one, bpb_one = evaluate(model, batches[:1], token_bytes)
    loss_pad, bpb_pad = evaluate(model, [batches[0], (batches[1][0], np.full_like(batches[1][1], -1))], token_bytes)
    assert (loss_pad, bpb_pad) == pytest.approx((loss_one, bpb_one))


# ---- config_for_depth ---------------------------------------------------------------------------

@pytest.mark.parametrize("depth, width, heads", [(1, 64, 1), (2, 128, 1), (3, 192, 2), (4, 256, 2),
                                                 (6, 384, 3), (12, 768, 6), (20, 1280, 10)])
def test_config_for_depth_follows_nanochat_sizing(depth, width, heads):
    c = config_for_depth(depth, vocab_size=300, sequence_len=64)
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head) == (depth, width, heads, heads)
    assert (c.vocab_size, c.sequence_len) == (300, 64)


def test_config_for_depth_explicit_sizes_win():
    c = config_for_depth(4, 300, 32, n_layer=3, n_embd=32, n_head=2, n_kv_head=1)
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head) == (3, 32, 2, 1)
    c = config_for_depth(1, 300, 32, n_embd=256)  # heads follow the overridden width
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head) == (1, 256, 2, 2)
    c = config_for_depth(2, 300, 32, n_head=4)
    assert (c.n_embd, c.n_head, c.n_kv_head) == (128, 4, 4)
    with pytest.raises(ValueError, match="depth must be positive"):
        config_for_depth(0, 300, 32)


def test_resume_restores_moments_but_keeps_this_runs_learning_rates():
    model, optimizers, _ = setup()
    idx = np.arange(16).reshape(2, 8) % model.config.vocab_size
    model(idx, targets=idx).backward()
    for opt in optimizers:
        opt.step()
    saved = [opt.state_dict() for opt in optimizers]
    fresh_model = GPT(model.config)
    fresh = fresh_model.setup_optimizers(unembedding_lr=0.5, embedding_lr=0.5, matrix_lr=0.5)
    loader = DataLoader(np.arange(200) % model.config.vocab_size, 2, 8, seed=0)
    step = resume(fresh, saved, loader, {"step": 7, "loader": {"epoch": 1, "position": 2, "seed": 0}})
    assert step == 7 and loader.state_dict() == {"epoch": 1, "position": 2, "seed": 0}
    assert fresh[1].param_groups[0]["lr"] == 0.5 and fresh[1].param_groups[0]["initial_lr"] == 0.5
    for opt, state in zip(fresh, saved):
        restored = opt.state_dict()["state"]
        for i, entries in state["state"].items():
            for name, value in entries.items():
                if isinstance(value, np.ndarray):
                    assert np.array_equal(restored[i][name], value)
    with pytest.raises(ValueError, match="no state for this run's optimizers"):
        resume(fresh, None, loader, {"step": 1, "loader": loader.state_dict()})
    with pytest.raises(ValueError, match="no state for this run's optimizers"):
        resume(fresh, saved[:1], loader, {"step": 1, "loader": loader.state_dict()})


def test_a_log_line_cut_short_by_a_killed_run_is_dropped_on_resume(tmp_path):
    from nanochat.train import _truncate_log
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    _truncate_log(log, 2)
    assert log.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
