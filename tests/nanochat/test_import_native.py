"""Importing PyTorch nanochat checkpoints (model_*.pt, meta_*.json, tokenizer.pkl, token_bytes.pt)."""
import json
import os
import pickle

import numpy as np
import pytest
import tiktoken

import torch

from interop_fixtures import (TEXT, native_checkpoint, our_logits, small_config, small_tokenizer, torch_greedy,
                              torch_logits)
from nanochat.commands import main
from nanochat.engine import generate
from nanochat.interop import load_any, read_any
from nanochat.interop.safe_pickle import UnsafePickleError, load_tokenizer_pickle


@pytest.fixture(scope="module")
def tokenizer():
    return small_tokenizer()


@pytest.fixture(scope="module")
def native(tmp_path_factory, tokenizer):
    directory = tmp_path_factory.mktemp("native") / "d2"
    model = native_checkpoint(directory, tokenizer, small_config(tokenizer), prefix="_orig_mod.")
    return directory, model


def prompt(tokenizer):
    return [tokenizer.bos_token_id] + tokenizer.encode("the quick brown fox jumps")


def test_logits_and_greedy_tokens_match_pytorch(native, tokenizer):
    directory, torch_model = native
    model, loaded_tokenizer = load_any(directory)
    ids = prompt(tokenizer)
    assert np.abs(our_logits(model, ids) - torch_logits(torch_model, ids)).max() < 1e-4
    assert list(generate(model, ids, 12, temperature=0)) == torch_greedy(torch_model, ids, 12)
    assert loaded_tokenizer.encode(TEXT) == tokenizer.encode(TEXT)
    assert loaded_tokenizer.special_tokens == tokenizer.special_tokens


def test_bfloat16_weights_in_the_pt_file_are_read(tmp_path, tokenizer):
    torch_model = native_checkpoint(tmp_path, tokenizer, small_config(tokenizer), dtype=torch.bfloat16)
    model, _ = load_any(tmp_path)
    expected = {k: v.to(torch.bfloat16).float().numpy() for k, v in torch_model.state_dict().items()}
    assert all(np.array_equal(p.data, expected[name]) for name, p in model.named_parameters())


def test_import_command_writes_a_checkpoint_sample_and_chat_run(native, tokenizer, tmp_path, capsys):
    directory, torch_model = native
    out = tmp_path / "ours"
    assert main(["import", str(directory), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["meta_000650.json", "model_000650.safetensors",
                                                     "tokenizer.json", "tokenizer.tiktoken"]
    assert json.loads((out / "meta_000650.json").read_text())["source_format"] == "nanochat"
    model, _ = load_any(out)
    ids = prompt(tokenizer)
    assert np.abs(our_logits(model, ids) - torch_logits(torch_model, ids)).max() < 1e-4
    for argv in (["sample", "--checkpoint", str(directory), "--max-tokens", "5", "--seed", "1"],
                 ["chat", "--checkpoint", str(directory), "-p", "hi", "--max-tokens", "5", "--seed", "1"]):
        assert main(argv) == 0


def test_tokenizer_found_in_nanochats_base_dir_layout(tmp_path, tokenizer):
    # ~/.cache/nanochat/tokenizer/ and ~/.cache/nanochat/base_checkpoints/d2/
    checkpoint = tmp_path / "base_checkpoints" / "d2"
    native_checkpoint(checkpoint, tokenizer, small_config(tokenizer))
    (tmp_path / "tokenizer").mkdir()
    for name in ("tokenizer.pkl", "token_bytes.pt"):
        os.replace(checkpoint / name, tmp_path / "tokenizer" / name)
    _, loaded = load_any(checkpoint)
    assert loaded.encode(TEXT) == tokenizer.encode(TEXT)


def test_step_is_chosen_latest_by_default(tmp_path, tokenizer):
    config = small_config(tokenizer)
    native_checkpoint(tmp_path, tokenizer, config, step=100)
    native_checkpoint(tmp_path, tokenizer, config, step=200)
    assert read_any(tmp_path)[2]["step"] == 200
    assert read_any(tmp_path, step=100)[2]["step"] == 100
    with pytest.raises(FileNotFoundError, match="model_000150.pt is missing"):
        read_any(tmp_path, step=150)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tokenizer.pkl").write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os)\.system"):
        load_tokenizer_pickle(tmp_path / "tokenizer.pkl")
    assert not (tmp_path / "pwned").exists()


def test_pickle_hiding_code_inside_the_encoding_state_is_refused(tmp_path, monkeypatch, tokenizer):
    # a genuine tiktoken.core.Encoding whose pickled state hides a call to os.system
    monkeypatch.chdir(tmp_path)
    trap = {"name": "x", "pat_str": _RunsCode(), "mergeable_ranks": {}, "special_tokens": {}}
    monkeypatch.setattr(tiktoken.Encoding, "__getstate__", lambda self: trap)
    data = pickle.dumps(tokenizer.enc)
    assert b"tiktoken.core" in data and b"system" in data
    (tmp_path / "tokenizer.pkl").write_bytes(data)
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os)\.system"):
        load_tokenizer_pickle(tmp_path / "tokenizer.pkl")
    assert not (tmp_path / "pwned").exists()


def test_cli_reports_a_malicious_tokenizer_in_one_line(native, tmp_path, capsys):
    directory = tmp_path / "evil"
    directory.mkdir()
    for p in native[0].iterdir():
        (directory / p.name).write_bytes(p.read_bytes())
    (directory / "tokenizer.pkl").write_bytes(pickle.dumps(_RunsCode()))
    assert main(["import", str(directory), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "refusing to load" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: (d / "tokenizer.pkl").write_bytes(b"\x80\x04garbage"), "not a readable pickle"),
    (lambda d: (d / "tokenizer.pkl").write_bytes(pickle.dumps("cl100k_base")), "not a pickled tiktoken Encoding"),
    (lambda d: (d / "tokenizer.pkl").unlink(), "no tokenizer.pkl"),
    (lambda d: torch.save(torch.zeros(3, dtype=torch.int32), d / "token_bytes.pt"), "does not match"),
    (lambda d: (d / "model_000650.pt").write_bytes(b"not a torch file"), "cannot be read as a weights-only"),
    (lambda d: (d / "meta_000650.json").write_text("{}"), "no readable model_config"),
    (lambda d: (d / "meta_000650.json").unlink(), "meta_000650.json is missing"),
])
def test_bad_inputs_are_clear_errors(native, tmp_path, corrupt, message):
    directory = tmp_path / "copy"
    directory.mkdir()
    for p in native[0].iterdir():
        (directory / p.name).write_bytes(p.read_bytes())
    corrupt(directory)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_any(directory)


def test_torch_pickle_that_runs_code_is_refused(native, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "copy"
    directory.mkdir()
    for p in native[0].iterdir():
        (directory / p.name).write_bytes(p.read_bytes())
    torch.save({"w": _RunsCode()}, directory / "model_000650.pt")
    with pytest.raises(ValueError, match="weights-only"):
        read_any(directory)
    assert not (tmp_path / "pwned").exists()


def test_unknown_tensors_are_listed_not_dropped(tmp_path, tokenizer):
    config = small_config(tokenizer)
    extra = {"mtp_head.weight": torch.ones(2), "transformer.h.0.attn.c_gate.weight": torch.zeros(2, 2),
             "_orig_mod.lm_bias": torch.zeros(3)}
    native_checkpoint(tmp_path / "new", tokenizer, config, extra_tensors=extra)
    with pytest.raises(ValueError, match=r"3 tensor\(s\) this model does not know \(the classic architecture\): "
                                         r"lm_bias, mtp_head\.weight, transformer\.h\.0\.attn\.c_gate\.weight"):
        read_any(tmp_path / "new")
    assert main(["import", str(tmp_path / "new"), "--out", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


def test_unknown_config_field_is_refused(tmp_path, tokenizer):
    native_checkpoint(tmp_path, tokenizer, small_config(tokenizer))
    meta = json.loads((tmp_path / "meta_000650.json").read_text())
    meta["model_config"]["mtp_depth"] = 2
    (tmp_path / "meta_000650.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="config fields this model does not know: mtp_depth"):
        read_any(tmp_path)
    del meta["model_config"]["mtp_depth"], meta["model_config"]["n_head"]
    (tmp_path / "meta_000650.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="model_config lacks n_head"):
        read_any(tmp_path)


def test_missing_tensor_and_wrong_shape_are_refused(tmp_path, tokenizer):
    model = native_checkpoint(tmp_path, tokenizer, small_config(tokenizer))
    state = model.state_dict()
    del state["lm_head.weight"]
    torch.save(state, tmp_path / "model_000650.pt")
    with pytest.raises(ValueError, match=r"1 tensor\(s\) missing: lm_head.weight"):
        read_any(tmp_path)
    state = model.state_dict()
    state["lm_head.weight"] = state["lm_head.weight"][:, :10]
    torch.save(state, tmp_path / "model_000650.pt")
    with pytest.raises(ValueError, match="wrong shape: lm_head.weight"):
        read_any(tmp_path)


def test_import_refuses_a_non_empty_out_and_leaves_it_alone(native, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["import", str(native[0]), "--out", str(out)]) == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp dir left behind


def test_missing_torch_is_a_one_line_error_naming_the_extra(native, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ValueError, match=r"needs PyTorch: pip install 'minigrad-nanochat\[torch\]'"):
        read_any(native[0])


def test_loading_draws_no_random_weights(native, monkeypatch):
    import minigrad
    from minigrad import nn
    from nanochat.gpt import GPT
    before = minigrad.default_generator().bit_generator.state
    with nn.skip_init():
        assert nn.init_skipped()
        nn.Linear(4, 3), nn.Embedding(5, 2)
    assert not nn.init_skipped()
    assert minigrad.default_generator().bit_generator.state == before

    def no_init(self, seed=0):
        raise AssertionError("init_weights ran while loading")
    monkeypatch.setattr(GPT, "init_weights", no_init)
    load_any(native[0])  # builds the GPT under skip_init, then fills every weight in
    with pytest.raises(AssertionError, match="init_weights ran"):
        GPT(load_any(native[0])[0].config)
