"""nn.Module traversal and state, layers and functional ops against PyTorch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import minigrad as mg
from minigrad import Tensor, nn
from minigrad.nn import functional as F
from test_ops_torch import helper_test_op


# ---- a small GPT-shaped model for traversal tests ------------------------------------------------

class Attention(nn.Module):
    def __init__(self, d):
        self.c_q = nn.Linear(d, d, bias=False)
        self.c_k = nn.Linear(d, d, bias=False)


class Block(nn.Module):
    def __init__(self, d):
        self.attn = Attention(d)
        self.norm = nn.RMSNorm(d)
        self.mlp = [nn.Linear(d, 2 * d), nn.Linear(2 * d, d)]  # a plain list
        self.drop = nn.Dropout(0.1)


class Model(nn.Module):
    def __init__(self, d=4, vocab=7):
        self.wte = nn.Embedding(vocab, d)
        self.h = nn.ModuleList([Block(d), Block(d)])
        self.heads = nn.ModuleDict({"lm": nn.Linear(d, vocab, bias=False)})
        self.extra = {"scale": nn.Parameter(np.ones(d, np.float32)), "blocks": [Attention(d)]}
        self.buffer = Tensor(np.zeros(3, np.float32))  # a plain Tensor is not a parameter
        self.name = "model"


BLOCK_NAMES = ["attn.c_q.weight", "attn.c_k.weight", "norm.weight", "mlp.0.weight", "mlp.0.bias",
               "mlp.1.weight", "mlp.1.bias"]
EXPECTED_NAMES = (["wte.weight"] + [f"h.{i}.{n}" for i in range(2) for n in BLOCK_NAMES]
                  + ["heads.lm.weight", "extra.scale", "extra.blocks.0.c_q.weight", "extra.blocks.0.c_k.weight"])


def model(seed=0):
    mg.manual_seed(seed)
    return Model()


def test_named_parameters_walk_attributes_lists_dicts_modulelists_moduledicts():
    m = model()
    names = [n for n, _ in m.named_parameters()]
    assert names == EXPECTED_NAMES
    assert [n for n, _ in model(1).named_parameters()] == names  # deterministic
    assert all(isinstance(p, nn.Parameter) for _, p in m.named_parameters())
    params = dict(m.named_parameters())
    assert params["h.0.attn.c_q.weight"] is m.h[0].attn.c_q.weight
    assert params["h.1.mlp.1.bias"] is m.h[1].mlp[1].bias
    assert params["heads.lm.weight"] is m.heads["lm"].weight
    assert params["extra.blocks.0.c_k.weight"] is m.extra["blocks"][0].c_k.weight


def test_parameters_match_named_parameters():
    m = model()
    ps = m.parameters()
    assert len(ps) == len(EXPECTED_NAMES)
    assert all(a is b for a, (_, b) in zip(ps, m.named_parameters()))


def test_shared_parameters_and_modules_appear_once():
    class Tied(nn.Module):
        def __init__(self):
            self.emb = nn.Embedding(5, 3)
            self.head = nn.Linear(3, 5, bias=False)
            self.head.weight = self.emb.weight
            self.again = self.emb

    t = Tied()
    assert [n for n, _ in t.named_parameters()] == ["emb.weight"]
    assert t.num_parameters() == 15


def test_named_modules_and_modules():
    m = model()
    names = [n for n, _ in m.named_modules()]
    assert names[:5] == ["", "wte", "h", "h.0", "h.0.attn"]
    assert "h.1.mlp.0" in names and "heads.lm" in names and "extra.blocks.0" in names and "h.0.drop" in names
    assert len(m.modules()) == len(names)


def test_num_parameters():
    m = model()
    d, v = 4, 7
    block = 2 * d * d + d + (d * 2 * d + 2 * d) + (2 * d * d + d)
    assert m.num_parameters() == v * d + 2 * block + d * v + d + 2 * d * d
    assert m.num_parameters() == sum(p.data.size for p in m.parameters())


def test_state_dict_is_an_ordered_copy():
    m = model()
    sd = m.state_dict()
    assert list(sd) == EXPECTED_NAMES
    for name, p in m.named_parameters():
        np.testing.assert_array_equal(sd[name], p.data)
        assert not np.shares_memory(sd[name], p.data)
    sd["wte.weight"][...] = 123.0
    assert not (m.wte.weight.data == 123.0).any()


def test_load_state_dict_round_trip_copies_into_existing_arrays():
    src, dst = model(1), model(2)
    arrays = {n: p.data for n, p in dst.named_parameters()}
    params = {n: p for n, p in dst.named_parameters()}
    result = dst.load_state_dict(src.state_dict())
    missing, unexpected = result
    assert list(missing) == [] and list(unexpected) == []
    for (name, p), (_, q) in zip(dst.named_parameters(), src.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data)
        assert p is params[name] and p.data is arrays[name]  # identity preserved for optimizers
        assert not np.shares_memory(p.data, q.data)


def test_load_state_dict_accepts_tensors():
    src, dst = model(1), model(2)
    dst.load_state_dict({n: Tensor(p.data.copy()) for n, p in src.named_parameters()})
    np.testing.assert_array_equal(dst.wte.weight.data, src.wte.weight.data)


def _snapshot(m):
    return {n: p.data.copy() for n, p in m.named_parameters()}


def _assert_unchanged(m, snap):
    for n, p in m.named_parameters():
        np.testing.assert_array_equal(p.data, snap[n], err_msg=n)


def _bad_states():
    good = model(9).state_dict()
    missing = dict(good)
    del missing["h.1.mlp.0.bias"]
    unexpected = dict(good, **{"h.9.attn.c_q.weight": np.zeros((4, 4), np.float32)})
    shape = dict(good, **{"wte.weight": np.zeros((8, 4), np.float32)})
    dtype = dict(good, **{"heads.lm.weight": good["heads.lm.weight"].astype(np.float64)})
    several = dict(shape, **{"extra.scale": np.zeros(4, np.float16), "bogus": np.zeros(1, np.float32)})
    del several["h.0.norm.weight"]
    return {
        "missing": (missing, ["h.1.mlp.0.bias"]),
        "unexpected": (unexpected, ["h.9.attn.c_q.weight"]),
        "shape": (shape, ["wte.weight"]),
        "dtype": (dtype, ["heads.lm.weight"]),
        "several": (several, ["wte.weight", "extra.scale", "bogus", "h.0.norm.weight"]),
    }


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape", "dtype", "several"])
def test_load_state_dict_failures_change_nothing_and_name_every_problem(case):
    state, names = _bad_states()[case]
    m = model(3)
    snap = _snapshot(m)
    with pytest.raises((ValueError, KeyError, RuntimeError)) as info:
        m.load_state_dict(state)
    for name in names:
        assert name in str(info.value), (name, str(info.value))
    _assert_unchanged(m, snap)


def test_load_state_dict_non_strict_returns_missing_and_unexpected():
    good = model(5).state_dict()
    state = {k: v for k, v in good.items() if k != "wte.weight"}
    state["not.a.param"] = np.zeros(2, np.float32)
    m = model(6)
    before = m.wte.weight.data.copy()
    missing, unexpected = m.load_state_dict(state, strict=False)
    assert list(missing) == ["wte.weight"] and list(unexpected) == ["not.a.param"]
    np.testing.assert_array_equal(m.wte.weight.data, before)
    np.testing.assert_array_equal(m.h[0].attn.c_q.weight.data, good["h.0.attn.c_q.weight"])


def test_load_state_dict_non_strict_still_rejects_wrong_shapes():
    state = model(5).state_dict()
    state["wte.weight"] = np.zeros((1, 1), np.float32)
    m = model(6)
    snap = _snapshot(m)
    with pytest.raises(ValueError, match="wte.weight"):
        m.load_state_dict(state, strict=False)
    _assert_unchanged(m, snap)


def test_train_eval_propagate_everywhere():
    m = model()
    assert m.training and all(sub.training for sub in m.modules())
    assert m.eval() is m
    assert not m.training
    assert all(not sub.training for sub in m.modules())
    assert not m.h[1].drop.training and not m.extra["blocks"][0].training and not m.heads["lm"].training
    m.train()
    assert all(sub.training for sub in m.modules())
    m.train(False)
    assert not m.h[0].mlp[1].training
    fresh = model()
    assert fresh.training  # a mode change on one instance does not leak to others


def test_zero_grad():
    m = model()
    x = np.array([[1, 2, 3]])
    out = m.heads["lm"](m.h[0].mlp[1](m.h[0].mlp[0](m.wte(x)))).sum()
    out.backward()
    assert m.wte.weight.grad is not None and m.h[0].mlp[0].bias.grad is not None
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_module_call_and_repr():
    lin = nn.Linear(3, 2)
    x = Tensor(np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(lin(x).data, lin.forward(x).data)
    text = repr(model())
    assert text.startswith("Model(") and "(h): ModuleList(" in text and "(c_q): Linear()" in text
    assert "(mlp.1): Linear()" in text and "(lm): Linear()" in text


# ---- layers against torch with copied weights -----------------------------------------------------

def run_layer_against_torch(layer, ref, in_shape, out_shape, seed):
    """Forward both on the same input, backward a non-uniform gradient; compare outputs and input
    gradients. Returns the input, for further checks."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(in_shape).astype(np.float32)
    g = rng.standard_normal(out_shape).astype(np.float32)
    xm, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    om, ot = layer(xm), ref(xt)
    np.testing.assert_allclose(om.data, ot.detach().numpy(), atol=1e-5, rtol=1e-4)
    om.backward(g)
    ot.backward(torch.tensor(g))
    np.testing.assert_allclose(xm.grad, xt.grad.numpy(), atol=1e-5, rtol=1e-4)
    return x


@pytest.mark.parametrize("bias", [True, False])
def test_linear_layer_matches_torch(bias):
    mg.manual_seed(0)
    lin = nn.Linear(5, 3, bias=bias)
    assert lin.weight.shape == (3, 5) and lin.weight.dtype == np.float32
    assert (lin.bias is not None) == bias and (not bias or lin.bias.shape == (3,))
    assert np.abs(lin.weight.data).max() <= 1 / np.sqrt(5)
    ref = torch.nn.Linear(5, 3, bias=bias)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(lin.weight.data))
        if bias:
            ref.bias.copy_(torch.tensor(lin.bias.data))
    run_layer_against_torch(lin, ref, (2, 4, 5), (2, 4, 3), seed=0)
    np.testing.assert_allclose(lin.weight.grad, ref.weight.grad.numpy(), atol=1e-4, rtol=1e-4)
    if bias:
        np.testing.assert_allclose(lin.bias.grad, ref.bias.grad.numpy(), atol=1e-4, rtol=1e-4)
    assert [n for n, _ in lin.named_parameters()] == [n for n, _ in ref.named_parameters()]


def test_embedding_layer_matches_torch():
    mg.manual_seed(0)
    emb = nn.Embedding(6, 4)
    assert emb.weight.shape == (6, 4) and emb.weight.dtype == np.float32
    ref = torch.nn.Embedding(6, 4)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(emb.weight.data))
    idx = np.array([[0, 5, 5], [2, 0, 5]])
    g = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    om, ot = emb(idx), ref(torch.tensor(idx))
    np.testing.assert_array_equal(om.data, ot.detach().numpy())
    om.backward(g)
    ot.backward(torch.tensor(g))
    np.testing.assert_allclose(emb.weight.grad, ref.weight.grad.numpy(), atol=1e-6)  # repeats accumulate
    np.testing.assert_array_equal(emb(Tensor(idx)).data, om.data)


def test_rmsnorm_layer_matches_torch():
    norm = nn.RMSNorm(5)
    norm.weight.data[...] = np.linspace(0.5, 1.5, 5, dtype=np.float32)
    ref = torch.nn.RMSNorm(5)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(norm.weight.data))
    x = run_layer_against_torch(norm, ref, (3, 5), (3, 5), seed=3)
    np.testing.assert_allclose(norm.weight.grad, ref.weight.grad.numpy(), atol=1e-5, rtol=1e-4)
    plain = nn.RMSNorm(5, elementwise_affine=False)
    assert plain.parameters() == []
    np.testing.assert_allclose(plain(Tensor(x)).data, TF.rms_norm(torch.tensor(x), (5,)).numpy(), atol=1e-6)
    eps = nn.RMSNorm(5, eps=0.5)
    np.testing.assert_allclose(eps(Tensor(x)).data, torch.nn.RMSNorm(5, eps=0.5)(torch.tensor(x)).detach().numpy(),
                               atol=1e-6)


def test_dropout_layer():
    drop = nn.Dropout(0.25)
    x = Tensor(np.ones((200, 100), np.float32), requires_grad=True)
    mg.manual_seed(0)
    out = drop(x)
    kept = out.data != 0
    assert 0.70 < kept.mean() < 0.80
    np.testing.assert_allclose(out.data[kept], 1 / 0.75)
    assert out.dtype == np.float32
    out.sum().backward()
    np.testing.assert_allclose(x.grad, kept / 0.75)  # gradient flows only where kept, scaled
    mg.manual_seed(0)
    np.testing.assert_array_equal(drop(x).data, out.data)
    drop.eval()
    assert drop(x) is x or np.array_equal(drop(x).data, x.data)
    with pytest.raises(ValueError):
        nn.Dropout(1.5)
    ref = torch.nn.Dropout(0.25).eval()
    np.testing.assert_array_equal(drop(x).data, ref(torch.tensor(x.data)).numpy())


# ---- functional against torch ---------------------------------------------------------------------

def test_functional_linear():
    helper_test_op([(2, 3, 5), (4, 5), (4,)], F.linear, TF.linear)
    helper_test_op([(3, 5), (4, 5)], F.linear, TF.linear)
    helper_test_op([(5,), (4, 5), (4,)], F.linear, TF.linear)


def test_functional_embedding():
    idx = np.array([[1, 3, 1], [0, 0, 2]])
    helper_test_op([(4, 3)], lambda w: F.embedding(idx, w), lambda w: TF.embedding(torch.tensor(idx), w))
    helper_test_op([(4, 3)], lambda w: F.embedding(idx[0], w), lambda w: TF.embedding(torch.tensor(idx[0]), w))
    with pytest.raises(IndexError):
        F.embedding(np.array([4]), Tensor(np.zeros((4, 3), np.float32)))
    with pytest.raises(IndexError):
        F.embedding(np.array([-1]), Tensor(np.zeros((4, 3), np.float32)))
    with pytest.raises(TypeError):
        F.embedding(np.array([0.0]), Tensor(np.zeros((4, 3), np.float32)))


def test_functional_rms_norm_default_eps_is_the_dtype_eps():
    # tiny inputs make eps matter: a wrong default (1e-5, 1e-6, ...) would change the output a lot
    x = (np.random.default_rng(0).standard_normal((3, 4)) * 1e-4).astype(np.float32)
    helper_test_op(None, lambda t: F.rms_norm(t, (4,)), lambda t: TF.rms_norm(t, (4,)), arrays=[x], atol=1e-4)
    helper_test_op(None, lambda t: F.rms_norm(t), lambda t: TF.rms_norm(t, (4,)), arrays=[x], atol=1e-4)
    x64 = x.astype(np.float64) * 1e-4
    out = F.rms_norm(Tensor(x64))
    ref = TF.rms_norm(torch.tensor(x64), (4,))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.data, ref.numpy(), rtol=1e-9)


def test_functional_rms_norm_with_weight_and_eps():
    helper_test_op([(2, 3, 6), (6,)], lambda x, w: F.rms_norm(x, (6,), w, 1e-5),
                   lambda x, w: TF.rms_norm(x, (6,), w, 1e-5))
    helper_test_op([(2, 6), (6,)], lambda x, w: F.rms_norm(x, weight=w), lambda x, w: TF.rms_norm(x, (6,), w))
    with pytest.raises(ValueError):
        F.rms_norm(Tensor(np.ones((2, 6), np.float32)), (5,))


def test_functional_relu_softmax_log_softmax():
    helper_test_op([(3, 4)], F.relu, TF.relu)
    for dim in (0, 1, -1):
        helper_test_op([(3, 4)], lambda x: F.softmax(x, dim), lambda x: TF.softmax(x, dim))
        helper_test_op([(3, 4)], lambda x: F.log_softmax(x, dim), lambda x: TF.log_softmax(x, dim))
    helper_test_op([(3, 4)], F.softmax, lambda x: TF.softmax(x, -1))
    helper_test_op([(3, 4)], F.log_softmax, lambda x: TF.log_softmax(x, -1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [-1, -100, 2])
def test_functional_cross_entropy(reduction, ignore_index):
    targets = np.array([0, 2, ignore_index, 4, 1, ignore_index, 2])
    kw = {"ignore_index": ignore_index, "reduction": reduction}
    helper_test_op([(7, 5)], lambda x: F.cross_entropy(x, targets, **kw),
                   lambda x: TF.cross_entropy(x, torch.tensor(targets), **kw), low=-4, high=4)
    helper_test_op([(7, 5)], lambda x: F.cross_entropy(x, Tensor(targets), **kw),
                   lambda x: TF.cross_entropy(x, torch.tensor(targets), **kw), low=-4, high=4)


def test_functional_cross_entropy_default_ignore_index_is_minus_one():
    targets = np.array([1, -1, 0])
    helper_test_op([(3, 4)], lambda x: F.cross_entropy(x, targets),
                   lambda x: TF.cross_entropy(x, torch.tensor(targets), ignore_index=-1))


def test_functional_cross_entropy_rejects_bad_input():
    logits = Tensor(np.zeros((3, 4), np.float32))
    for targets in (np.array([0, 4, 1]), np.array([0, -2, 1])):
        with pytest.raises(Exception):
            TF.cross_entropy(torch.zeros(3, 4), torch.tensor(targets), ignore_index=-1)
        with pytest.raises((ValueError, IndexError)):
            F.cross_entropy(logits, targets)
    with pytest.raises(ValueError):
        F.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(TypeError):
        F.cross_entropy(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError):
        F.cross_entropy(logits, np.array([0, 1, 2]), reduction="avg")


def test_functional_cross_entropy_large_logits():
    x = np.array([[1000.0, -1000.0, 0.0], [-500.0, 500.0, 499.0]], np.float32)
    helper_test_op(None, lambda t: F.cross_entropy(t, np.array([1, 2])),
                   lambda t: TF.cross_entropy(t, torch.tensor([1, 2])), arrays=[x], atol=1e-3)


def test_functional_dropout():
    x = np.random.default_rng(0).standard_normal((100, 100)).astype(np.float32)
    np.testing.assert_array_equal(F.dropout(Tensor(x), 0.3, training=False).data, x)
    np.testing.assert_array_equal(F.dropout(Tensor(x), 0.0).data, x)
    np.testing.assert_array_equal(F.dropout(Tensor(x), 1.0).data, np.zeros_like(x))
    np.testing.assert_array_equal(TF.dropout(torch.tensor(x), 1.0).numpy(), np.zeros_like(x))
    out = F.dropout(Tensor(x), 0.3, generator=np.random.default_rng(1)).data
    kept = out != 0
    assert 0.65 < kept.mean() < 0.75
    np.testing.assert_allclose(out[kept], x[kept] / 0.7, rtol=1e-6)
    again = F.dropout(Tensor(x), 0.3, generator=np.random.default_rng(1)).data
    np.testing.assert_array_equal(out, again)
    for p in (-0.1, 1.1):
        with pytest.raises(ValueError):
            TF.dropout(torch.tensor(x), p)
        with pytest.raises(ValueError):
            F.dropout(Tensor(x), p)


def _sdpa_case(sq, skv, **kw):
    torch_kw = dict(kw)
    if isinstance(kw.get("attn_mask"), np.ndarray):
        torch_kw["attn_mask"] = torch.tensor(kw["attn_mask"])
    helper_test_op([sq, skv, skv], lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kw),
                   lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, **torch_kw))


@pytest.mark.parametrize("tq,tk", [(4, 4), (3, 5), (5, 3), (1, 4)])
def test_sdpa_plain_and_causal_top_left(tq, tk):
    _sdpa_case((2, 2, tq, 8), (2, 2, tk, 8))
    _sdpa_case((2, 2, tq, 8), (2, 2, tk, 8), is_causal=True)
    _sdpa_case((2, 2, tq, 8), (2, 2, tk, 8), scale=0.2)


def test_sdpa_bool_and_float_masks():
    rng = np.random.default_rng(0)
    mask = rng.random((3, 5)) > 0.4
    mask[:, 1] = True  # every query attends to at least one key
    _sdpa_case((2, 2, 3, 4), (2, 2, 5, 4), attn_mask=mask)  # True = attend
    _sdpa_case((2, 2, 3, 4), (2, 2, 5, 4), attn_mask=mask[None, None])
    head_mask = rng.random((2, 1, 3, 5)) > 0.3
    head_mask[..., 0] = True
    _sdpa_case((2, 2, 3, 4), (2, 2, 5, 4), attn_mask=head_mask)
    additive = rng.standard_normal((3, 5)).astype(np.float32)
    _sdpa_case((2, 2, 3, 4), (2, 2, 5, 4), attn_mask=additive)
    with pytest.raises(ValueError):  # stricter than torch, which lets is_causal silently win or lose
        q = Tensor(np.zeros((1, 1, 2, 2), np.float32))
        F.scaled_dot_product_attention(q, q, q, attn_mask=np.ones((2, 2), bool), is_causal=True)


@pytest.mark.parametrize("hq,hk", [(4, 2), (4, 1), (6, 3)])
def test_sdpa_gqa(hq, hk):
    _sdpa_case((2, hq, 3, 4), (2, hk, 3, 4), enable_gqa=True)
    _sdpa_case((2, hq, 3, 4), (2, hk, 5, 4), enable_gqa=True, is_causal=True)
    q = Tensor(np.zeros((1, hq, 2, 4), np.float32))
    kv = Tensor(np.zeros((1, hk, 2, 4), np.float32))
    if hk > 1:  # without enable_gqa only a single kv head may broadcast, in both libraries
        with pytest.raises(Exception):
            TF.scaled_dot_product_attention(torch.zeros(1, hq, 2, 4), torch.zeros(1, hk, 2, 4), torch.zeros(1, hk, 2, 4))
        with pytest.raises(ValueError):
            F.scaled_dot_product_attention(q, kv, kv)
    else:
        _sdpa_case((2, hq, 3, 4), (2, hk, 5, 4))


def test_sdpa_gqa_needs_divisible_heads():
    q, kv = Tensor(np.zeros((1, 6, 2, 4), np.float32)), Tensor(np.zeros((1, 4, 2, 4), np.float32))
    with pytest.raises(Exception):
        TF.scaled_dot_product_attention(torch.zeros(1, 6, 2, 4), torch.zeros(1, 4, 2, 4), torch.zeros(1, 4, 2, 4),
                                        enable_gqa=True)
    with pytest.raises(ValueError):
        F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)


def test_sdpa_without_head_dims():
    _sdpa_case((3, 4), (5, 4))
    _sdpa_case((3, 4), (5, 4), is_causal=True)


def test_sdpa_value_dim_differs_from_key_dim():
    helper_test_op([(1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 6)], F.scaled_dot_product_attention,
                   TF.scaled_dot_product_attention)


def _torch_causal_attention(q, k, v, window=None, enable_gqa=False):
    """nanochat's SDPA fallback for flash-attention: bottom-right causal, then a band of window + 1 keys."""
    tq, tk = q.size(-2), k.size(-2)
    row, col = (tk - tq) + torch.arange(tq)[:, None], torch.arange(tk)[None, :]
    mask = (col <= row) & ((row - col <= window) if window is not None else True)
    return TF.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=enable_gqa)


@pytest.mark.parametrize("tq, tk, window", [(6, 6, None), (6, 6, 2), (1, 7, 3), (3, 9, 4), (5, 5, 0), (4, 4, 10)])
@pytest.mark.parametrize("hq, hk", [(2, 2), (4, 2)])
def test_causal_attention_bottom_right_with_window(tq, tk, window, hq, hk):
    """The fused path, and the composite one (value width differs from key width), against torch."""
    kw = dict(window=window, enable_gqa=hq != hk)
    helper_test_op([(2, hq, tq, 8), (2, hk, tk, 8), (2, hk, tk, 8)],
                   lambda q, k, v: F.causal_attention(q, k, v, **kw), lambda q, k, v: _torch_causal_attention(q, k, v, **kw))
    helper_test_op([(2, hq, tq, 8), (2, hk, tk, 8), (2, hk, tk, 6)],
                   lambda q, k, v: F.causal_attention(q, k, v, **kw), lambda q, k, v: _torch_causal_attention(q, k, v, **kw))


@pytest.mark.parametrize("tq, tk, window, match", [(3, 2, None, "at least as many keys"), (2, 2, -1, "window must"),
                                                    (2, 2, 1.5, "window must")])
def test_causal_attention_rejects_bad_input(tq, tk, window, match):
    with pytest.raises(ValueError, match=match):
        F.causal_attention(Tensor(np.zeros((1, 1, tq, 4), np.float32)), *[Tensor(np.zeros((1, 1, tk, 4), np.float32))] * 2,
                           window=window)
