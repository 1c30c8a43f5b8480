"""nanochat/gpt.py: config, state_dict layout, init, FLOPs, parity with the PyTorch reference, errors,
rotary embeddings; and nanochat's 2026 architecture (GPTConfig options and the nanochat_2026 preset)
against the PyTorch twin transcribed from karpathy/nanochat 92d63d4: logits, gradients, KV-cache
decode and chunked prefill with windows shorter than the sequence, checkpoints both ways, init and
optimizer groups."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import minigrad
from minigrad import Tensor, no_grad
from nanochat.checkpoint import load_checkpoint, save_checkpoint
from nanochat.commands import main
from nanochat.engine import KVCache, generate
from nanochat.gpt import GPT, GPTConfig, apply_rotary_emb, compute_window_sizes, precompute_rotary_embeddings
from nanochat.torch_gpt import TorchGPT, TorchKVCache, load_torch_gpt

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
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


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


# ---- nanochat's 2026 architecture ----------------------------------------------------------------

# sequence_len 512 makes the short window 128, so T = 200 crosses it; 4 layers give "SSSL" its long
# last layer, value embeddings on layers 1 and 3 and backout at layer 2; vocab 37 pads to 64
SIZES = dict(sequence_len=512, vocab_size=37, n_layer=4, n_head=4, n_kv_head=2, n_embd=48)
OPTIONS = {
    "pad_vocab_size_to": dict(pad_vocab_size_to=64),
    "window_pattern": dict(window_pattern="SSSL"),
    "rope_base": dict(rope_base=100000.0),
    "qk_scale": dict(qk_scale=1.2),
    "layer_lambdas": dict(layer_lambdas=True),
    "value_embeds": dict(value_embeds=True),
    "smear": dict(smear=True),
    "backout": dict(backout=True),
}
CASES = {**{name: GPTConfig(**SIZES, **kw) for name, kw in OPTIONS.items()}, "preset": GPTConfig.nanochat_2026(**SIZES)}


def twins(cfg, seed=0):
    """Our GPT with random weights (every scalar and gate non-trivial), and the PyTorch twin loaded
    from its state_dict strictly."""
    ours = GPT(cfg)
    rng = np.random.default_rng(seed)
    for _, p in ours.named_parameters():
        p.data[...] = rng.normal(0.0, 0.3, p.shape)
    theirs = TorchGPT(cfg)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()}, strict=True)
    return ours, theirs


def batch(cfg, B=2, T=200, seed=1):
    rng = np.random.default_rng(seed)
    idx, targets = rng.integers(0, cfg.vocab_size, (2, B, T))
    targets[0, :5] = -1
    return idx, targets


def test_preset_is_nanochat_head():
    cfg = GPTConfig.nanochat_2026(sequence_len=2048, vocab_size=32768, n_layer=12, n_head=6, n_kv_head=6, n_embd=768)
    assert (cfg.pad_vocab_size_to, cfg.window_pattern, cfg.rope_base, cfg.qk_scale, cfg.recipe) == (64, "SSSL", 1e5, 1.2, "2026")
    assert cfg.layer_lambdas and cfg.value_embeds and cfg.smear and cfg.backout
    assert compute_window_sizes(cfg) == [512, 512, 512, 2048] * 2 + [512, 512, 512, 2048]
    assert compute_window_sizes(GPTConfig.nanochat_2026(**{**SIZES, "n_layer": 6})) == [128, 128, 128, 512, 128, 512]
    assert compute_window_sizes(GPTConfig(**SIZES)) == [None] * 4  # classic: no windows at all
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_names_and_shapes_equal_the_twins(case):
    cfg = CASES[case]
    ours, theirs = GPT(cfg), TorchGPT(cfg)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


def test_preset_state_dict_has_nanochats_tensors():
    sd = GPT(CASES["preset"]).state_dict()
    assert sd["transformer.wte.weight"].shape == sd["lm_head.weight"].shape == (64, 48)
    assert sd["resid_lambdas"].shape == sd["x0_lambdas"].shape == (4,)
    assert sd["smear_gate.weight"].shape == (1, 24) and sd["smear_lambda"].shape == sd["backout_lambda"].shape == (1,)
    assert sorted(k for k in sd if k.startswith("value_embeds.")) == ["value_embeds.1.weight", "value_embeds.3.weight"]
    assert sd["value_embeds.1.weight"].shape == (64, 2 * 12)
    assert sorted(k for k in sd if "ve_gate" in k) == ["transformer.h.1.attn.ve_gate.weight", "transformer.h.3.attn.ve_gate.weight"]
    assert sd["transformer.h.3.attn.ve_gate.weight"].shape == (2, 12)


@pytest.mark.parametrize("case", list(CASES))
def test_logits_and_gradients_equal_the_twins(case):
    """Each option alone and the preset: logits within 1e-4, every parameter's gradient within 1e-4
    of the twin's largest entry of it."""
    cfg = CASES[case]
    ours, theirs = twins(cfg)
    idx, targets = batch(cfg)
    with no_grad():
        logits = ours(idx).data
    want = theirs(torch.from_numpy(idx)).detach().numpy()
    assert logits.shape == (2, 200, cfg.vocab_size)
    np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0)

    loss = ours(idx, targets=targets)
    loss.backward()
    torch_loss = theirs(torch.from_numpy(idx), targets=torch.from_numpy(targets))
    torch_loss.backward()
    assert abs(loss.item() - torch_loss.item()) < 1e-5
    torch_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        g = torch_params[name].grad.numpy()
        assert np.abs(g).max() > 0 or name == "lm_head.weight", name
        assert rel_err(p.grad, g) < 1e-4, (name, rel_err(p.grad, g))


@pytest.mark.parametrize("case", list(CASES))
def test_every_option_changes_the_output(case):
    """An option that did nothing would pass the twin test if the twin ignored it too."""
    if case == "pad_vocab_size_to":
        return  # padding must not change the logits: checked by the twin test's crop
    cfg = CASES[case]
    ours, _ = twins(cfg)
    classic = GPT(GPTConfig(**SIZES, pad_vocab_size_to=cfg.pad_vocab_size_to))
    classic.load_state_dict({k: v for k, v in ours.state_dict().items() if k in dict(classic.named_parameters())})
    idx, _ = batch(cfg, B=1)
    with no_grad():
        assert rel_err(ours(idx).data, classic(idx).data) > 1e-3


def decode_logits(model, idx, chunks, cache_cls):
    """Logits of idx (1, T) fed to a KV cache in chunks of the given sizes."""
    cfg = model.config
    cache = cache_cls(1, cfg.n_kv_head, cfg.head_dim, cfg.n_layer, idx.shape[1])
    out, t = [], 0
    for n in chunks:
        step = idx[:, t:t + n]
        if isinstance(model, TorchGPT):
            with torch.no_grad():
                out.append(model(torch.from_numpy(step), kv_cache=cache).numpy())
        else:
            with no_grad():
                out.append(model(step, kv_cache=cache).data)
        t += n
    assert t == idx.shape[1]
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("case", ["preset", "window_pattern", "smear"])
def test_kv_cache_decode_equals_the_full_forward(case):
    """Prefill 120 tokens, then decode one at a time to 170: windows of 128 (and the long layer's 512)
    and smear's cached previous embedding give the full forward's logits at every position."""
    ours, theirs = twins(CASES[case])
    idx, _ = batch(CASES[case], B=1, T=170)
    with no_grad():
        full = ours(idx).data
    chunks = [120] + [1] * 50
    np.testing.assert_allclose(decode_logits(ours, idx, chunks, KVCache), full, atol=1e-4, rtol=0)
    np.testing.assert_allclose(decode_logits(theirs, idx, chunks, TorchKVCache), full, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", ["preset", "window_pattern", "smear"])
def test_chunked_prefill_equals_the_full_forward(case):
    ours, _ = twins(CASES[case])
    idx, _ = batch(CASES[case], B=1)
    with no_grad():
        full = ours(idx).data
    np.testing.assert_allclose(decode_logits(ours, idx, [50, 1, 70, 79], KVCache), full, atol=1e-4, rtol=0)


def test_decode_past_sequence_len_keeps_long_layers_windowed():
    """nanochat's long window is sequence_len, not unlimited: past it even L layers slide."""
    cfg = GPTConfig.nanochat_2026(**{**SIZES, "sequence_len": 64})  # short window 128 > 64: all layers 64
    ours, theirs = twins(cfg)
    idx = np.random.default_rng(2).integers(0, cfg.vocab_size, (1, 100))
    chunks = [60] + [1] * 40
    np.testing.assert_allclose(decode_logits(ours, idx, chunks, KVCache), decode_logits(theirs, idx, chunks, TorchKVCache),
                               atol=1e-4, rtol=0)


def test_generate_with_several_samples_carries_smear_state():
    ours, _ = twins(CASES["preset"])
    one = list(generate(ours, [1, 2, 3], 12, temperature=0))
    many = list(generate(ours, [1, 2, 3], 12, temperature=0, num_samples=3))
    assert [row[0] for row in many] == one and all(len(set(row)) == 1 for row in many)


def test_twin_checkpoint_loads_strictly_into_ours_and_back(tmp_path):
    cfg = CASES["preset"]
    theirs = TorchGPT(cfg)
    theirs.init_weights()
    save_file(theirs.state_dict(), str(tmp_path / "twin.safetensors"))
    ours = GPT(cfg, seed=5)
    ours.load_state_dict(minigrad.load(tmp_path / "twin.safetensors"), strict=True)
    idx, _ = batch(cfg, B=1, T=40)
    with no_grad():
        np.testing.assert_allclose(ours(idx).data, theirs(torch.from_numpy(idx)).detach().numpy(), atol=1e-5)
    save_checkpoint(tmp_path / "run", ours, step=3)
    loaded, meta, _ = load_checkpoint(tmp_path / "run")
    assert loaded.config == cfg and meta["config"]["window_pattern"] == "SSSL"
    back = load_torch_gpt(tmp_path / "run" / "model_000003.safetensors", meta["config"])
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], value, rtol=0, atol=0)


def test_classic_checkpoint_does_not_load_into_the_preset():
    classic, preset = GPT(GPTConfig(**SIZES)), GPT(CASES["preset"])
    with pytest.raises(ValueError, match="missing: .*resid_lambdas"):
        preset.load_state_dict(classic.state_dict(), strict=True)


def test_2026_init_matches_nanochats():
    """Our recipe='2026' init against the twin's transcription of nanochat's init_weights: the
    deterministic tensors exactly, the random ones in distribution."""
    cfg = GPTConfig.nanochat_2026(sequence_len=64, vocab_size=4000, n_layer=3, n_head=2, n_kv_head=2, n_embd=256)
    ours = GPT(cfg, seed=0).state_dict()
    torch.manual_seed(0)
    theirs = TorchGPT(cfg)
    theirs.init_weights()
    for name, want in theirs.state_dict().items():
        want, got = want.numpy(), ours[name]
        if want.std() == 0 or want.size <= 3:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=name)
        elif want.size >= 1000:
            assert got.std() == pytest.approx(want.std(), rel=0.05), name
            assert abs(got.mean() - want.mean()) < 5 * want.std() / np.sqrt(want.size), name
        else:  # the small gates: uniform(0, 0.02) in both
            assert 0 <= got.min() and got.max() <= 0.02 and 0 <= want.min() and want.max() <= 0.02, name


def test_optimizer_groups_match_nanochats():
    cfg = CASES["preset"]
    ours, theirs = twins(cfg)
    adamw, muon = ours.setup_optimizers()
    names = {id(p): n for n, p in ours.named_parameters()}
    torch_names = {id(p): n for n, p in theirs.named_parameters()}
    ours_groups = {frozenset(names[id(p)] for p in g["params"]): g for g in adamw.param_groups}
    torch_groups = theirs.optimizer_groups()
    for want in (g for g in torch_groups if g["kind"] == "adamw"):
        got = ours_groups.pop(frozenset(torch_names[id(p)] for p in want["params"]))
        for key in ("lr", "betas", "eps", "weight_decay"):
            assert got[key] == pytest.approx(want[key]), key
    assert not ours_groups
    muon_names = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    assert muon_names == {torch_names[id(p)] for g in torch_groups if g["kind"] == "muon" for p in g["params"]}


def test_preset_trains():
    cfg = GPTConfig.nanochat_2026(sequence_len=32, vocab_size=37, n_layer=2, n_head=2, n_kv_head=2, n_embd=32)
    model = GPT(cfg, seed=0)
    optimizers = model.setup_optimizers()
    idx = np.random.default_rng(0).integers(0, 37, (4, 32))
    losses = []
    for _ in range(30):
        loss = model(idx[:, :-1], targets=idx[:, 1:])
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert model.smear_lambda.data[0] != 0 and not np.allclose(model.x0_lambdas.data, GPT(cfg).x0_lambdas.data)


@pytest.mark.parametrize("kw, fragment", [
    (dict(window_pattern="SXL"), "window_pattern"),
    (dict(recipe="2025"), "recipe"),
    (dict(smear=1), "smear must be True or False"),
    (dict(value_embeds="yes"), "value_embeds must be True or False"),
    (dict(window_pattern=4), "window_pattern must be a string"),
    (dict(pad_vocab_size_to=0), "pad_vocab_size_to"),
    (dict(qk_scale=-1.0), "qk_scale"),
    (dict(smear=True, n_embd=16, n_head=2, n_kv_head=2), "at least"),
])
def test_config_rejects_bad_options(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        GPTConfig(**{**SIZES, **kw})


def run_cli(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def test_train_arch_2026_from_the_command_line(tmp_path):
    """`nanochat train --arch 2026` trains the preset, checkpoints it, resumes it and refuses to
    resume it as another architecture."""
    words = "the quick brown fox jumps over a lazy dog while birds sing in tall green trees".split()
    rng = np.random.default_rng(0)
    data = tmp_path / "corpus.txt"
    data.write_text("\n".join(" ".join(rng.choice(words, 12)) + "." for _ in range(400)))
    args = ["train", "--data", data, "--out", tmp_path / "out", "--depth", "1", "--n-embd", "32", "--n-head", "2",
            "--vocab-size", "300", "--batch-size", "4", "--seq-len", "32", "--eval-every", 5, "--sample-tokens", 5]
    rc, stdout, stderr = run_cli([*args, "--arch", "2026", "--steps", 5])
    assert rc == 0, stderr
    assert "model: 2026" in stdout
    model, meta, _ = load_checkpoint(tmp_path / "out")
    assert model.config == GPTConfig.nanochat_2026(**{k: meta["config"][k] for k in
                                                      ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")})
    assert model.config.vocab_size == 300 and model.transformer["wte"].weight.shape == (320, 32)
    rc, _, stderr = run_cli([*args, "--steps", 8, "--resume"])
    assert rc == 0, stderr
    rc, _, stderr = run_cli([*args, "--steps", 9, "--resume", "--arch", "classic"])
    assert rc == 1 and "--arch cannot change on --resume" in stderr
