"""Checkpoints: bit-exact round trips, PyTorch crossover, and every failure mode loading nothing."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import minigrad
from minigrad.optim import AdamW
from nanochat.checkpoint import FORMAT_VERSION, latest_step, load_checkpoint, save_checkpoint, _sha256
from nanochat.gpt import GPT, GPTConfig
from minigrad.optim import Muon
from nanochat.torch_gpt import TorchGPT

CONFIG = GPTConfig(sequence_len=16, vocab_size=40, n_layer=2, n_head=4, n_kv_head=2, n_embd=16)


def trained_model_and_optimizers(steps=3):
    model = GPT(CONFIG, seed=1)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] = rng.normal(0, 0.3, p.shape)
    matrices = [p for n, p in model.named_parameters() if n.startswith("transformer.h.")]
    others = [model.transformer["wte"].weight, model.lm_head.weight]
    optimizers = [AdamW([{"params": others[:1], "lr": 0.01}, {"params": others[1:], "lr": 0.02}]), Muon(matrices, lr=0.02)]
    idx = rng.integers(0, CONFIG.vocab_size, (2, 8))
    for _ in range(steps):
        model.zero_grad()
        model(idx, targets=idx).backward()
        for opt in optimizers:
            opt.step()
    return model, optimizers


def test_round_trip_is_bit_exact(tmp_path):
    model, optimizers = trained_model_and_optimizers()
    save_checkpoint(tmp_path, model, 7, optimizer=optimizers, meta={"note": "x", "loader": {"epoch": 2}}, loss=1.5, lr=0.01)
    loaded, meta, opt_state = load_checkpoint(tmp_path)
    for (name, a), (name2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == name2 and a.dtype == b.dtype and np.array_equal(a, b)
    assert meta["step"] == 7 and meta["loss"] == 1.5 and meta["lr"] == 0.01 and meta["note"] == "x"
    assert meta["loader"] == {"epoch": 2} and meta["config"] == CONFIG.to_dict() and meta["format_version"] == FORMAT_VERSION
    assert isinstance(opt_state, list) and len(opt_state) == 2
    for opt, saved in zip(optimizers, opt_state):
        expected = opt.state_dict()
        assert saved["param_groups"] == json.loads(json.dumps(expected["param_groups"]))
        assert expected["state"].keys() == saved["state"].keys()
        for i, entries in expected["state"].items():
            for name, value in entries.items():
                if isinstance(value, np.ndarray):
                    assert value.dtype == saved["state"][i][name].dtype
                    assert np.array_equal(value, saved["state"][i][name])
                else:
                    assert value == saved["state"][i][name]
    # the restored state continues training exactly like the original
    fresh = [AdamW([{"params": [loaded.transformer["wte"].weight], "lr": 0.01}, {"params": [loaded.lm_head.weight], "lr": 0.02}]),
             Muon([p for n, p in loaded.named_parameters() if n.startswith("transformer.h.")], lr=0.02)]
    for opt, saved in zip(fresh, opt_state):
        opt.load_state_dict(saved)
    idx = np.arange(16).reshape(2, 8) % CONFIG.vocab_size
    for m, opts in ((model, optimizers), (loaded, fresh)):
        m.zero_grad()
        m(idx, targets=idx).backward()
        for opt in opts:
            opt.step()
    for a, b in zip(model.parameters(), loaded.parameters()):
        assert np.array_equal(a.data, b.data)


def test_single_optimizer_and_latest_step(tmp_path):
    model, optimizers = trained_model_and_optimizers(1)
    save_checkpoint(tmp_path, model, 1, optimizer=optimizers[0])
    save_checkpoint(tmp_path, model, 12)
    assert latest_step(tmp_path) == 12
    _, meta, opt_state = load_checkpoint(tmp_path)
    assert meta["step"] == 12 and opt_state is None
    _, _, opt_state = load_checkpoint(tmp_path, step=1)
    assert isinstance(opt_state, dict) and set(opt_state) == {"state", "param_groups"}


def test_model_file_crosses_to_pytorch_and_back(tmp_path):
    model, _ = trained_model_and_optimizers(1)
    save_checkpoint(tmp_path, model, 0)
    torch_model = TorchGPT(CONFIG)
    torch_model.load_state_dict(load_file(str(tmp_path / "model_000000.safetensors")), strict=True)
    idx = np.random.default_rng(3).integers(0, CONFIG.vocab_size, (2, 8))
    expected = torch_model(torch.from_numpy(idx)).detach().numpy()
    np.testing.assert_allclose(model(idx).data, expected, atol=1e-4)

    with torch.no_grad():
        for p in torch_model.parameters():
            p.mul_(0.5)
    save_file(torch_model.state_dict(), str(tmp_path / "from_torch.safetensors"))
    back = GPT(CONFIG)
    back.load_state_dict(minigrad.load(tmp_path / "from_torch.safetensors"), strict=True)
    np.testing.assert_allclose(back(idx).data, torch_model(torch.from_numpy(idx)).detach().numpy(), atol=1e-4)


def test_bfloat16_torch_weights_load_widened(tmp_path):
    torch_model = TorchGPT(CONFIG)
    save_file({k: v.to(torch.bfloat16) for k, v in torch_model.state_dict().items()}, str(tmp_path / "bf16.safetensors"))
    model = GPT(CONFIG)
    model.load_state_dict(minigrad.load(tmp_path / "bf16.safetensors"))
    expected = torch_model.transformer.wte.weight.detach().to(torch.bfloat16).float().numpy()
    assert np.array_equal(model.transformer["wte"].weight.data, expected)


def test_reserved_meta_fields_are_refused(tmp_path):
    model = GPT(CONFIG)
    for key in ("step", "config", "format_version"):
        with pytest.raises(ValueError, match="reserved"):
            save_checkpoint(tmp_path, model, 0, meta={key: 1})
    assert list(tmp_path.iterdir()) == []


def rewrite_model_file(directory, state):
    """Replace the model file with `state` and update its hash, so only the content is wrong."""
    path = directory / "model_000000.safetensors"
    minigrad.save(state, path)
    meta_path = directory / "meta_000000.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["model"]["sha256"] = _sha256(path)
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("lm_head.weight"), "missing: lm_head.weight"),
    (lambda s: s.update({"extra.weight": np.zeros(2, np.float32)}), "unexpected: extra.weight"),
    (lambda s: s.update({"lm_head.weight": np.zeros((3, 3), np.float32)}), "lm_head.weight: expected"),
    (lambda s: s.update({"lm_head.weight": s["lm_head.weight"].astype(np.float64)}), "float64"),
])
def test_bad_model_contents_raise_naming_the_file(tmp_path, damage, message):
    model = GPT(CONFIG)
    save_checkpoint(tmp_path, model, 0)
    state = model.state_dict()
    damage(state)
    rewrite_model_file(tmp_path, state)
    with pytest.raises(ValueError, match="model_000000.safetensors") as info:
        load_checkpoint(tmp_path)
    assert message in str(info.value)


def test_truncated_or_tampered_files_raise(tmp_path):
    model, optimizers = trained_model_and_optimizers(1)
    save_checkpoint(tmp_path, model, 0, optimizer=optimizers)
    for name in ("model_000000.safetensors", "optim_000000.safetensors"):
        path = tmp_path / name
        original = path.read_bytes()
        path.write_bytes(original[: len(original) // 2])
        with pytest.raises(ValueError, match=name):
            load_checkpoint(tmp_path)
        tampered = bytearray(original)
        tampered[-1] ^= 0xFF
        path.write_bytes(bytes(tampered))
        with pytest.raises(ValueError, match=name):
            load_checkpoint(tmp_path)
        path.write_bytes(original)
    load_checkpoint(tmp_path)  # intact again

    # truncation that the hash would not see (hash updated) is still caught by the format check
    path = tmp_path / "model_000000.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    meta = json.loads((tmp_path / "meta_000000.json").read_text())
    meta["files"]["model"]["sha256"] = _sha256(path)
    (tmp_path / "meta_000000.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="model_000000.safetensors"):
        load_checkpoint(tmp_path)


def test_bad_meta_raises(tmp_path):
    model = GPT(CONFIG)
    save_checkpoint(tmp_path, model, 0)
    meta_path = tmp_path / "meta_000000.json"
    good = meta_path.read_text()
    meta_path.write_text(good[:-5])
    with pytest.raises(ValueError, match="meta_000000.json.*JSON"):
        load_checkpoint(tmp_path)
    meta_path.write_text(good.replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 99'))
    with pytest.raises(ValueError, match="format version 99"):
        load_checkpoint(tmp_path)
    meta_path.write_text(good.replace('"n_head": 4', '"n_head": 3'))
    with pytest.raises(ValueError, match="meta_000000.json.*divisible"):
        load_checkpoint(tmp_path)


def test_missing_things_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, GPT(CONFIG), 0)
    with pytest.raises(FileNotFoundError, match="step 5"):
        load_checkpoint(tmp_path, step=5)
    (tmp_path / "model_000000.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model_000000.safetensors"):
        load_checkpoint(tmp_path)


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = GPT(CONFIG)
    save_checkpoint(tmp_path, model, 0)
    before = sorted(p.name for p in tmp_path.iterdir())

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr("nanochat.checkpoint.write_atomic", crash)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, model, 1)
    assert latest_step(tmp_path) == 0  # step 1 has no meta, so it does not count
    load_checkpoint(tmp_path)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert set(before) <= {p.name for p in tmp_path.iterdir()}
