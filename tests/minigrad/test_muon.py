"""Muon (minigrad.optim.muon): against a float32 torch transcription of nanochat's code."""
import json

import numpy as np
import pytest
import torch

from minigrad.nn import Parameter
from minigrad.optim.muon import Muon, zeropower_via_newtonschulz5


def torch_newtonschulz5(G, steps):
    """nanochat's zeropower_via_newtonschulz5 with the bfloat16 cast replaced by float32."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.float()
    if G.size(-2) > G.size(-1):
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(-2) > G.size(-1):
        X = X.mT
    return X


class TorchMuon(torch.optim.Optimizer):
    """nanochat's single-device Muon.step, verbatim apart from the NS dtype."""

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, ns_steps=5):
        super().__init__(list(params), dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.lerp_(g, 1 - group["momentum"])
                g = g.lerp_(buf, group["momentum"]) if group["nesterov"] else buf
                g = torch_newtonschulz5(g, steps=group["ns_steps"])
                p.add_(g, alpha=-group["lr"] * max(1, p.size(-2) / p.size(-1)) ** 0.5)


SHAPES = [(16, 48), (64, 24), (32, 32)]


@pytest.mark.parametrize("shape", SHAPES)
def test_newtonschulz_matches_torch(shape):
    G = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ours = zeropower_via_newtonschulz5(G, steps=5)
    ref = torch_newtonschulz5(torch.from_numpy(G), steps=5).numpy()
    assert ours.dtype == np.float32 and ours.shape == shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("shape", [(16, 48), (64, 24), (128, 128)])
def test_newtonschulz_output_is_nearly_orthogonal(shape):
    rng = np.random.default_rng(1)
    # Well-conditioned input (condition number 10) so every direction lies in the iteration's basin.
    u, _ = np.linalg.qr(rng.standard_normal((shape[0], shape[0])))
    v, _ = np.linalg.qr(rng.standard_normal((shape[1], shape[1])))
    k = min(shape)
    s = np.geomspace(0.1, 1.0, k) * 37.0  # overall scale is removed by the normalisation
    G = (u[:, :k] * s) @ v[:, :k].T
    sv = np.linalg.svd(zeropower_via_newtonschulz5(G.astype(np.float32)), compute_uv=False)
    assert sv.min() > 0.65 and sv.max() < 1.25, (sv.min(), sv.max())
    # Plain input (not orthogonalised) has singular values spread far outside that band.
    assert np.ptp(np.linalg.svd(G, compute_uv=False)) > 30


@pytest.mark.parametrize("nesterov", [True, False])
def test_ten_muon_steps_match_torch(nesterov):
    rng = np.random.default_rng(2)
    inits = [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in SHAPES]
    ours = [Parameter(w.copy()) for w in inits]
    theirs = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in inits]
    opt = Muon(ours, lr=0.02, momentum=0.9, nesterov=nesterov)
    topt = TorchMuon(theirs, lr=0.02, momentum=0.9, nesterov=nesterov)
    for step in range(10):
        for p, tp in zip(ours, theirs):
            g = rng.standard_normal(p.shape).astype(np.float32)
            p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, tp, w in zip(ours, theirs, inits):
        assert p.data.dtype == np.float32
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-4, atol=1e-5)
        assert not np.allclose(p.data, w)


def test_step_leaves_gradient_untouched_and_skips_missing_grads():
    p = Parameter(np.ones((4, 6), np.float32))
    q = Parameter(np.ones((3, 3), np.float32))
    g = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    p.grad = g.copy()
    opt = Muon([p, q], lr=0.1)
    opt.step()
    opt.step()
    # nanochat lerps p.grad in place for Nesterov; here the caller's gradient survives.
    np.testing.assert_array_equal(p.grad, g)
    np.testing.assert_array_equal(q.data, 1.0)
    assert len(opt.state) == 1


def test_only_2d_parameters():
    with pytest.raises(ValueError, match="2-D"):
        Muon([Parameter(np.zeros((2, 2), np.float32)), Parameter(np.zeros(4, np.float32))])
    opt = Muon([Parameter(np.zeros((2, 2), np.float32))])
    with pytest.raises(ValueError, match=r"\(2, 2, 2\)"):
        opt.add_param_group({"params": [Parameter(np.zeros((2, 2, 2), np.float32))]})
    assert len(opt.param_groups) == 1


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(4)
    init = rng.standard_normal((8, 5)).astype(np.float32)
    grads = [rng.standard_normal((8, 5)).astype(np.float32) for _ in range(8)]

    ref = Parameter(init.copy())
    ref_opt = Muon([ref], lr=0.05, momentum=0.9)
    for g in grads:
        ref.grad = g
        ref_opt.step()

    p = Parameter(init.copy())
    opt = Muon([p], lr=0.05, momentum=0.9)
    for g in grads[:3]:
        p.grad = g
        opt.step()
    sd = opt.state_dict()
    buf = sd["state"][0]["momentum_buffer"]
    meta = json.loads(json.dumps({"param_groups": sd["param_groups"]}))
    fresh = Parameter(p.data.copy())
    opt2 = Muon([fresh], lr=0.05, momentum=0.9)
    opt2.load_state_dict({"state": {"0": {"momentum_buffer": buf.copy()}}, **meta})
    for g in grads[3:]:
        fresh.grad = g
        opt2.step()
    np.testing.assert_array_equal(fresh.data, ref.data)

    with pytest.raises(ValueError, match="shape"):
        opt2.load_state_dict({"state": {0: {"momentum_buffer": np.zeros((5, 8), np.float32)}}, **meta})
