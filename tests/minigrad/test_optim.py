"""SGD, AdamW and clip_grad_norm_ against torch.optim on identical random gradients; state_dict checkpointing."""
import json

import numpy as np
import pytest
import torch

from minigrad.nn import Parameter
from minigrad.nn.utils import clip_grad_norm_
from minigrad.optim import SGD, AdamW

SHAPES = [(5, 3), (7,), (2, 3, 4)]


def make_params(seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ours = [Parameter(a.copy()) for a in arrays]
    theirs = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
    return ours, theirs


def grads_for(step, params, seed=1):
    rng = np.random.default_rng([seed, step])
    return [rng.standard_normal(p.shape).astype(np.float32) for p in params]


def run_both(ours, theirs, opt, topt, steps=20, skip_last=False):
    for step in range(steps):
        gs = grads_for(step, ours)
        for i, (p, tp, g) in enumerate(zip(ours, theirs, gs)):
            # The last param sometimes has no grad: both optimizers must skip it.
            missing = skip_last and i == len(ours) - 1 and step % 3 == 0
            p.grad = None if missing else g.copy()
            tp.grad = None if missing else torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, tp in zip(ours, theirs):
        assert p.data.dtype == np.float32
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True),
    dict(lr=0.05, weight_decay=0.01),
]


@pytest.mark.parametrize("cfg", SGD_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_matches_torch(cfg):
    ours, theirs = make_params()
    run_both(ours, theirs, SGD(ours, **cfg), torch.optim.SGD(theirs, **cfg), skip_last=True)


ADAMW_CONFIGS = [
    dict(lr=1e-2),
    dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
    dict(lr=3e-3, weight_decay=0.0),
    dict(lr=1e-2, eps=0.3),  # eps comparable to sqrt(v): catches eps added in the wrong place
]


@pytest.mark.parametrize("cfg", ADAMW_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_adamw_matches_torch(cfg):
    ours, theirs = make_params()
    run_both(ours, theirs, AdamW(ours, **cfg), torch.optim.AdamW(theirs, **cfg), skip_last=True)


@pytest.mark.parametrize("cls,tcls,kw", [(AdamW, torch.optim.AdamW, dict(weight_decay=0.05)),
                                         (SGD, torch.optim.SGD, dict(momentum=0.9))])
def test_two_param_groups_with_different_lr(cls, tcls, kw):
    ours, theirs = make_params()
    opt = cls([{"params": ours[:2], "lr": 0.02}, {"params": ours[2:]}], lr=0.005, **kw)
    topt = tcls([{"params": theirs[:2], "lr": 0.02}, {"params": theirs[2:]}], lr=0.005, **kw)
    assert [g["lr"] for g in opt.param_groups] == [0.02, 0.005]
    run_both(ours, theirs, opt, topt)


def test_updates_data_in_place():
    p = Parameter(np.ones((3, 3), dtype=np.float32))
    buffer = p.data
    opt = AdamW([p], lr=0.1)
    p.grad = np.ones((3, 3), dtype=np.float32)
    opt.step()
    assert p.data is buffer and not np.allclose(buffer, 1.0)


def test_zero_grad_sets_none_or_zero():
    ours, _ = make_params()
    opt = SGD(ours, lr=0.1)
    for p, g in zip(ours, grads_for(0, ours)):
        p.grad = g
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in ours)
    opt.zero_grad()
    assert all(p.grad is None for p in ours)


def _json_roundtrip(sd):
    """What a checkpoint does: arrays stored apart, the rest through JSON (int keys become strings)."""
    arrays = {}
    state = {}
    for idx, entries in sd["state"].items():
        state[idx] = {}
        for name, value in entries.items():
            if isinstance(value, np.ndarray):
                arrays[f"{idx}.{name}"] = value
                state[idx][name] = {"array": f"{idx}.{name}"}
            else:
                state[idx][name] = value
    loaded = json.loads(json.dumps({"state": state, "param_groups": sd["param_groups"]}))
    for entries in loaded["state"].values():
        for name, value in entries.items():
            if isinstance(value, dict):
                entries[name] = arrays[value["array"]].copy()
    return loaded


@pytest.mark.parametrize("make_opt", [
    lambda ps: AdamW([{"params": ps[:1], "lr": 0.02}, {"params": ps[1:]}], lr=1e-2, weight_decay=0.1),
    lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
], ids=["adamw", "sgd"])
def test_state_dict_round_trip_continues_identically(make_opt):
    steps, split = 12, 5
    ref, _ = make_params()
    ref_opt = make_opt(ref)
    resumed, _ = make_params()
    opt = make_opt(resumed)
    for step in range(steps):
        for p, g in zip(ref, grads_for(step, ref)):
            p.grad = g
        ref_opt.step()
    for step in range(split):
        for p, g in zip(resumed, grads_for(step, resumed)):
            p.grad = g
        opt.step()
    sd = _json_roundtrip(opt.state_dict())
    weights = [p.data.copy() for p in resumed]
    # A fresh model and optimizer restored from the checkpoint.
    fresh = [Parameter(w) for w in weights]
    opt2 = make_opt(fresh)
    opt2.load_state_dict(sd)
    for step in range(split, steps):
        for p, g in zip(fresh, grads_for(step, fresh)):
            p.grad = g
        opt2.step()
    for p, q in zip(ref, fresh):
        np.testing.assert_array_equal(p.data, q.data)


def test_state_dict_is_a_copy_and_loading_copies():
    ours, _ = make_params()
    opt = SGD(ours, lr=0.1, momentum=0.9)
    for p, g in zip(ours, grads_for(0, ours)):
        p.grad = g
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == [0, 1, 2]
    buf = sd["state"][0]["momentum_buffer"]
    assert buf is not opt.state[ours[0]]["momentum_buffer"]
    opt.load_state_dict(sd)
    buf[...] = 123.0
    assert not np.any(opt.state[ours[0]]["momentum_buffer"] == 123.0)


def _trained_adamw():
    ours, _ = make_params()
    opt = AdamW([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.5}], lr=1e-2)
    for p, g in zip(ours, grads_for(0, ours)):
        p.grad = g
    opt.step()
    return ours, opt


def _corrupt(kind):
    _, opt = _trained_adamw()
    sd = opt.state_dict()
    if kind == "group_count":
        sd["param_groups"] = sd["param_groups"][:1]
    elif kind == "param_count":
        sd["param_groups"][1]["params"] = []
    elif kind == "shape":
        sd["state"][1]["exp_avg"] = np.zeros((8,), np.float32)
    elif kind == "dtype":
        sd["state"][0]["exp_avg_sq"] = sd["state"][0]["exp_avg_sq"].astype(np.float64)
    elif kind == "unknown_index":
        sd["state"][99] = {"step": 1}
    elif kind == "bad_value":
        sd["state"][0]["step"] = object()
    elif kind == "missing_keys":
        sd = {"state": {}}
    return sd


@pytest.mark.parametrize("kind", ["group_count", "param_count", "shape", "dtype", "unknown_index",
                                  "bad_value", "missing_keys"])
def test_load_failure_leaves_optimizer_unchanged(kind):
    ours, opt = _trained_adamw()
    # Make the target differ from the source so a partial load would be visible.
    opt.param_groups[0]["lr"] = 0.123
    before = opt.state_dict()
    with pytest.raises(ValueError, match="cannot load optimizer state"):
        opt.load_state_dict(_corrupt(kind))
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert after["state"].keys() == before["state"].keys()
    for idx, entries in before["state"].items():
        for name, value in entries.items():
            np.testing.assert_array_equal(after["state"][idx][name], value)


def test_load_error_lists_every_problem():
    _, opt = _trained_adamw()
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = np.zeros((1,), np.float32)
    sd["state"][2]["exp_avg_sq"] = np.zeros((2, 3, 4), np.float64)
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(sd)
    msg = str(info.value)
    assert "state[0]['exp_avg'] has shape (1,)" in msg and "state[2]['exp_avg_sq'] has dtype float64" in msg


def test_rejects_bad_construction():
    p = Parameter(np.zeros(3, np.float32))
    with pytest.raises(ValueError):
        SGD([], lr=0.1)
    with pytest.raises(ValueError):
        SGD([p, p], lr=0.1)
    with pytest.raises(ValueError):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError):
        AdamW([p], betas=(1.0, 0.999))
    with pytest.raises(TypeError):
        SGD(p, lr=0.1)


@pytest.mark.parametrize("max_norm,norm_type", [(0.5, 2.0), (1e6, 2.0), (0.3, 1.0), (0.1, float("inf")),
                                                (2.0, 3.0)])
def test_clip_grad_norm_matches_torch(max_norm, norm_type):
    ours, theirs = make_params()
    for p, tp, g in zip(ours, theirs, grads_for(0, ours)):
        p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
    total = clip_grad_norm_(ours, max_norm, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(float(ttotal), rel=1e-5)
    clipped = max_norm < total
    for p, tp, g in zip(ours, theirs, grads_for(0, ours)):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-5, atol=1e-7)
        # Grads are scaled in place when clipping, untouched otherwise.
        assert (not np.allclose(p.grad, g)) if clipped else np.array_equal(p.grad, g)


def test_clip_grad_norm_nonfinite_returned_and_grads_untouched():
    p = Parameter(np.zeros(3, np.float32))
    q = Parameter(np.zeros(2, np.float32))
    p.grad = np.array([1.0, np.inf, 2.0], np.float32)
    q.grad = np.array([np.nan, 1.0], np.float32)
    assert np.isnan(clip_grad_norm_([p, q], 1.0))
    assert np.isinf(clip_grad_norm_([p], 1.0, norm_type=float("inf")))
    np.testing.assert_array_equal(p.grad, [1.0, np.inf, 2.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([p, q], 1.0, error_if_nonfinite=True)


def test_clip_grad_norm_skips_missing_grads_and_accepts_single_tensor():
    p = Parameter(np.zeros(2, np.float32))
    q = Parameter(np.zeros(2, np.float32))
    p.grad = np.array([3.0, 4.0], np.float32)
    assert clip_grad_norm_([p, q], 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad, [0.6, 0.8], rtol=1e-5)
    assert clip_grad_norm_(q, 1.0) == 0.0


def test_clip_grad_norm_refuses_a_negative_bound():
    p = Parameter(np.ones(3, np.float32))
    p.grad = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="max_norm must be non-negative"):
        clip_grad_norm_([p], -1.0)
    assert np.array_equal(p.grad, np.ones(3, np.float32))
