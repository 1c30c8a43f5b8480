"""nanochat GPT on minigrad: config, state_dict layout, init, FLOPs, parity with the PyTorch reference, errors."""
import json
import math

import numpy as np
import pytest
import torch

from minigrad import Tensor, no_grad
from nanochat.engine import KVCache
from nanochat.gpt import GPT, GPTConfig, apply_rotary_emb, precompute_rotary_embeddings
from nanochat.torch_gpt import TorchGPT

# GQA (n_kv_head < n_head), and V, C, 4C, n_head*hd, n_kv_head*hd all distinct so layouts can't be confused
TINY = dict(sequence_len=16, vocab_size=37, n_layer=2, n_head=4, n_kv_head=2, n_embd=24)


def randomize(model, seed, std=0.3):
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data[...] = rng.normal(0.0, std, p.shape)
    return model


def expected_layout(cfg):
    C, V, hd = cfg.n_embd, cfg.vocab_size, cfg.head_dim
    layout = {"transformer.wte.weight": (V, C)}
    for i in range(cfg.n_layer):
        layout[f"transformer.h.{i}.attn.c_q.weight"] = (cfg.n_head * hd, C)
        layout[f"transformer.h.{i}.attn.c_k.weight"] = (cfg.n_kv_head * hd, C)
        layout[f"transformer.h.{i}.attn.c_v.weight"] = (cfg.n_kv_head * hd, C)
        layout[f"transformer.h.{i}.attn.c_proj.weight"] = (C, C)
        layout[f"transformer.h.{i}.mlp.c_fc.weight"] = (4 * C, C)
        layout[f"transformer.h.{i}.mlp.c_proj.weight"] = (C, 4 * C)
    layout["lm_head.weight"] = (V, C)
    return layout


# ---- GPTConfig ------------------------------------------------------------------------------------

def test_config_defaults_are_nanochats():
    cfg = GPTConfig()
    assert cfg.to_dict() == dict(sequence_len=1024, vocab_size=50304, n_layer=12, n_head=6, n_kv_head=6,
                                 n_embd=768, rope_base=10000.0, softcap=15.0, norm_eps=float(np.finfo(np.float32).eps),
                                 pad_vocab_size_to=1, window_pattern="", qk_scale=1.0, layer_lambdas=False,
                                 value_embeds=False, smear=False, backout=False, recipe="classic")
    assert cfg.head_dim == 128


@pytest.mark.parametrize("field", ["sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd",
                                   "rope_base", "softcap", "norm_eps"])
@pytest.mark.parametrize("value", [0, -1])
def test_config_rejects_non_positive(field, value):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{**TINY, field: value})


def test_config_rejects_non_integer_sizes():
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(**{**TINY, "n_layer": 2.5})
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig(**{**TINY, "vocab_size": "37"})


def test_config_rejects_n_embd_not_divisible_by_n_head():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(**{**TINY, "n_embd": 30, "n_head": 4, "n_kv_head": 4})


def test_config_rejects_n_head_not_divisible_by_n_kv_head():
    with pytest.raises(ValueError, match="divisible by n_kv_head"):
        GPTConfig(**{**TINY, "n_head": 4, "n_kv_head": 3})


def test_config_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="even"):
        GPTConfig(**{**TINY, "n_embd": 12, "n_head": 4, "n_kv_head": 4})  # head_dim 3


def test_config_round_trips_through_dict_and_json():
    cfg = GPTConfig(**{**TINY, "rope_base": 500.0, "softcap": 30.0})
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    assert GPTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert GPTConfig.from_dict({}) == GPTConfig()


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError, match="n_mlp"):
        GPTConfig.from_dict({**TINY, "n_mlp": 3})


# ---- state_dict -----------------------------------------------------------------------------------

def test_state_dict_names_and_layouts_are_nanochats():
    cfg = GPTConfig(**TINY)
    sd = GPT(cfg).state_dict()
    layout = expected_layout(cfg)
    assert list(sd) == list(layout)
    assert {k: v.shape for k, v in sd.items()} == layout
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in sd.values())
    torch_sd = TorchGPT(cfg).state_dict()  # rotary buffers are non-persistent: not state there either
    assert set(torch_sd) == set(sd)
    assert {k: tuple(v.shape) for k, v in torch_sd.items()} == layout


def test_state_dict_is_a_copy():
    model = GPT(GPTConfig(**TINY))
    sd = model.state_dict()
    sd["transformer.wte.weight"][...] = 7.0
    assert not np.any(model.transformer["wte"].weight.data == 7.0)


# ---- init -----------------------------------------------------------------------------------------

def test_init_is_deterministic_from_seed():
    cfg = GPTConfig(**TINY)
    a, b, c = GPT(cfg, seed=3).state_dict(), GPT(cfg, seed=3).state_dict(), GPT(cfg, seed=4).state_dict()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        if np.any(a[name]):
            assert not np.allclose(a[name], c[name]), name


def test_init_zeroes_lm_head_and_every_c_proj():
    sd = GPT(GPTConfig(**TINY)).state_dict()
    zeroed = [k for k in sd if k == "lm_head.weight" or k.endswith("c_proj.weight")]
    assert len(zeroed) == 1 + 2 * TINY["n_layer"]
    for name, value in sd.items():
        assert (not np.any(value)) == (name in zeroed), name


def test_init_statistics():
    # c_k/c_v have fan_out < fan_in (the min() factor matters), c_fc fan_out > fan_in (it is capped at 1)
    cfg = GPTConfig(sequence_len=8, vocab_size=512, n_layer=2, n_head=4, n_kv_head=1, n_embd=256)
    sd = GPT(cfg, seed=0).state_dict()
    for name, w in sd.items():
        if name == "lm_head.weight" or name.endswith("c_proj.weight"):
            continue
        if name == "transformer.wte.weight":
            std = 1.0
        else:
            fan_out, fan_in = w.shape
            std = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
        assert abs(w.std() / std - 1) < 0.03, (name, w.std(), std)
        assert abs(w.mean()) < 5 * std / math.sqrt(w.size), (name, w.mean())
    assert sd["transformer.h.0.attn.c_k.weight"].std() == pytest.approx(1 / 32, rel=0.03)
    assert sd["transformer.h.0.mlp.c_fc.weight"].std() == pytest.approx(1 / 16, rel=0.03)


@pytest.mark.parametrize("kw", [TINY, dict(sequence_len=64, vocab_size=100, n_layer=3, n_head=8, n_kv_head=8,
                                           n_embd=64)])
def test_estimate_flops_matches_nanochats_formula(kw):
    cfg = GPTConfig(**kw)
    C, V, L, hd, T = cfg.n_embd, cfg.vocab_size, cfg.n_layer, cfg.head_dim, cfg.sequence_len
    per_layer = C * cfg.n_head * hd + 2 * C * cfg.n_kv_head * hd + C * C + 4 * C * C + 4 * C * C
    non_embedding = L * per_layer + V * C  # the lm_head counts, the token embedding doesn't
    expected = 6 * non_embedding + 12 * L * cfg.n_head * hd * T
    assert GPT(cfg).estimate_flops() == expected


# ---- parity with the PyTorch reference ------------------------------------------------------------

def make_batch(cfg, seed=0, B=3, T=11):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, cfg.vocab_size, (B, T))
    targets = rng.integers(0, cfg.vocab_size, (B, T))
    targets[0, :3] = -1
    targets[2, -1] = -1
    targets[1, 5] = -1
    return idx, targets


def paired_models(direction):
    cfg = GPTConfig(**TINY)
    ours, theirs = GPT(cfg), TorchGPT(cfg)
    if direction == "minigrad->torch":
        randomize(ours, seed=11)
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()}, strict=True)
    else:
        torch.manual_seed(11)
        with torch.no_grad():
            for p in theirs.parameters():
                p.normal_(0.0, 0.3)
        ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    for name, p in ours.named_parameters():  # the transfer really happened, and weights are non-trivial
        np.testing.assert_array_equal(p.data, theirs.state_dict()[name].numpy())
        assert p.data.std() > 0.2
    return cfg, ours, theirs


def rel_err(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("direction", ["minigrad->torch", "torch->minigrad"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_parity_with_torch(direction, reduction):
    cfg, ours, theirs = paired_models(direction)
    idx, targets = make_batch(cfg)

    logits = ours(idx).data
    t_logits = theirs(torch.from_numpy(idx)).detach().numpy()
    assert logits.shape == (3, 11, cfg.vocab_size)
    np.testing.assert_allclose(logits, t_logits, rtol=0, atol=1e-4)
    assert logits.std() > 1.0  # non-trivial logits

    loss = ours(idx, targets=targets, loss_reduction=reduction)
    t_loss = theirs(torch.from_numpy(idx), torch.from_numpy(targets), loss_reduction=reduction)
    np.testing.assert_allclose(loss.data, t_loss.detach().numpy(), rtol=1e-5, atol=1e-5)
    if reduction == "none":
        assert loss.shape == (idx.size,)
        assert np.all(loss.data[targets.reshape(-1) == -1] == 0)
        w = np.random.default_rng(5).standard_normal(idx.size).astype(np.float32)
        (loss * Tensor(w)).sum().backward()
        (t_loss * torch.from_numpy(w)).sum().backward()
    else:
        loss.backward()
        t_loss.backward()

    t_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        t_grad = t_params[name].grad.numpy()
        assert p.grad is not None and p.grad.shape == t_grad.shape, name
        assert np.abs(t_grad).max() > 0, name
        assert rel_err(p.grad, t_grad) < 1e-4, (name, rel_err(p.grad, t_grad))


def test_ignored_targets_do_not_contribute():
    cfg, ours, _ = paired_models("minigrad->torch")
    idx, targets = make_batch(cfg)
    per_token = ours(idx, targets=targets, loss_reduction="none").data
    keep = targets.reshape(-1) != -1
    np.testing.assert_allclose(ours(idx, targets=targets).data, per_token[keep].mean(), rtol=1e-5)
    changed = targets.copy()
    changed[0, 0] = 5  # was ignored: now it counts
    assert ours(idx, targets=changed, loss_reduction="sum").data > per_token.sum()


# ---- errors ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    return randomize(GPT(GPTConfig(**{**TINY, "sequence_len": 4})), seed=2)  # rotary table: 40 positions


@pytest.mark.parametrize("bad", [[[0, 1, 37]], [[-1, 2, 3]], [[0, 1, 1000]]])
def test_token_out_of_vocab_raises(tiny_model, bad):
    with pytest.raises(ValueError, match="idx"):
        tiny_model(np.array(bad))


@pytest.mark.parametrize("bad", [[[0, 1, 37]], [[-2, 2, 3]]])
def test_target_out_of_range_raises(tiny_model, bad):
    with pytest.raises(ValueError, match="targets"):
        tiny_model(np.array([[1, 2, 3]]), targets=np.array(bad))


def test_targets_shape_must_equal_idx_shape(tiny_model):
    idx = np.array([[1, 2, 3], [4, 5, 6]])
    for targets in (idx[:1], idx[:, :2], idx.reshape(-1), idx.T):
        with pytest.raises(ValueError):
            tiny_model(idx, targets=targets)


@pytest.mark.parametrize("idx", [np.array([1, 2, 3]), np.zeros((1, 2, 3), dtype=np.int64),
                                 np.array([[1.0, 2.0]]), np.array([[True, False]]), np.array(3)])
def test_idx_must_be_2d_integer(tiny_model, idx):
    with pytest.raises(ValueError, match="idx"):
        tiny_model(idx)


def test_positions_past_rotary_table_raise(tiny_model):
    cfg = tiny_model.config
    assert tiny_model.rotary_seq_len == 10 * cfg.sequence_len == 40
    with pytest.raises(ValueError, match="rotary"):
        tiny_model(np.zeros((1, 41), dtype=np.int64))
    tiny_model(np.zeros((1, 40), dtype=np.int64))  # exactly the table: fine

    cache = KVCache(1, cfg.n_kv_head, cfg.head_dim, cfg.n_layer)
    with no_grad():  # the KV cache is for inference: it refuses to run while grad is recorded
        tiny_model(np.ones((1, 38), dtype=np.int64), kv_cache=cache)
        with pytest.raises(ValueError, match="rotary"):
            tiny_model(np.ones((1, 3), dtype=np.int64), kv_cache=cache)
        assert cache.pos == 38  # a refused forward leaves the cache as it was
        tiny_model(np.ones((1, 2), dtype=np.int64), kv_cache=cache)
        assert cache.pos == 40
        with pytest.raises(ValueError, match="rotary"):
            tiny_model(np.ones((1, 1), dtype=np.int64), kv_cache=cache)


def test_torch_reference_cached_decode_equals_its_full_forward():
    """The PyTorch reference's KV cache (used by the benchmark) follows the same bottom-right mask."""
    import torch
    from nanochat.torch_gpt import TorchGPT, TorchKVCache
    cfg = GPTConfig(sequence_len=8, vocab_size=41, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
    torch.manual_seed(0)
    model = TorchGPT(cfg)
    idx = torch.randint(0, 41, (2, 11))
    with torch.no_grad():
        full = model(idx)
        cache = TorchKVCache(2, cfg.n_kv_head, cfg.head_dim, cfg.n_layer, max_len=11)
        steps = [model(idx[:, :4], kv_cache=cache), model(idx[:, 4:7], kv_cache=cache)]
        steps += [model(idx[:, t:t + 1], kv_cache=cache) for t in range(7, 11)]
    assert cache.pos == 11
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


# ---- rotary embeddings ----------------------------------------------------------------------------

def test_rotary_tables_match_the_formula():
    cos, sin = precompute_rotary_embeddings(50, 8, base=100.0)
    assert cos.shape == sin.shape == (1, 50, 1, 4) and cos.dtype == np.float32
    p, i = np.arange(50)[:, None], np.arange(4)[None, :]
    angle = p * 100.0 ** (-2 * i / 8)
    np.testing.assert_allclose(cos[0, :, 0], np.cos(angle), atol=1e-5)
    np.testing.assert_allclose(sin[0, :, 0], np.sin(angle), atol=1e-5)


def test_rotary_slice_at_position_equals_full_table():
    cos, sin = precompute_rotary_embeddings(40, 8)
    x = np.random.default_rng(0).standard_normal((2, 20, 3, 8)).astype(np.float32)
    full = apply_rotary_emb(Tensor(x), Tensor(cos[:, :20]), Tensor(sin[:, :20])).data
    for p in range(20):
        one = apply_rotary_emb(Tensor(x[:, p:p + 1]), Tensor(cos[:, p:p + 1]), Tensor(sin[:, p:p + 1])).data
        np.testing.assert_allclose(one[:, 0], full[:, p], atol=1e-6)


def test_rotary_scores_depend_only_on_relative_position():
    cos, sin = precompute_rotary_embeddings(40, 8)
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((1, 1, 1, 8)).astype(np.float32), rng.standard_normal((1, 1, 1, 8)).astype(np.float32)

    def rot(x, p):
        return apply_rotary_emb(Tensor(x), Tensor(cos[:, p:p + 1]), Tensor(sin[:, p:p + 1])).data.ravel()

    for offset in (0, 3, 11):
        scores = [rot(q, p + offset) @ rot(k, p) for p in range(0, 25, 4)]
        np.testing.assert_allclose(scores, scores[0], atol=1e-4)
    assert not np.isclose(rot(q, 3) @ rot(k, 0), rot(q, 0) @ rot(k, 0), atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(rot(q, 17)), np.linalg.norm(q), rtol=1e-5)  # a rotation
