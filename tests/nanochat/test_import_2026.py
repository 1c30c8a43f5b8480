"""PyTorch nanochat checkpoints of its 2026 architecture (92d63d4): import, load_any, export back."""
import json

import numpy as np
import pytest

import torch

from interop_fixtures import TEXT, native_checkpoint, our_logits, small_tokenizer, torch_greedy, torch_logits
from nanochat.checkpoint import save_checkpoint
from nanochat.commands import main
from nanochat.engine import generate
from nanochat.gpt import GPT, GPTConfig, compute_window_sizes
from nanochat.interop import load_any, read_any
from nanochat.torch_gpt import TorchGPT

NANOCHAT_2026_FIELDS = ["n_embd", "n_head", "n_kv_head", "n_layer", "sequence_len", "vocab_size", "window_pattern"]


@pytest.fixture(scope="module")
def tokenizer():
    return small_tokenizer()


def config_2026(tokenizer, **overrides):
    # sequence_len 512 makes the short window 128, shorter than the prompts below; 4 layers: "SSSL"
    return GPTConfig.nanochat_2026(**{**dict(sequence_len=512, vocab_size=tokenizer.vocab_size, n_layer=4, n_head=4,
                                             n_kv_head=2, n_embd=64), **overrides})


@pytest.fixture(scope="module")
def native(tmp_path_factory, tokenizer):
    directory = tmp_path_factory.mktemp("native2026") / "d4"
    return directory, native_checkpoint(directory, tokenizer, config_2026(tokenizer), prefix="_orig_mod.")


def prompt(tokenizer, n=150):
    return [tokenizer.bos_token_id] + tokenizer.encode(TEXT)[:n]


def test_setup_pads_the_vocabulary_and_windows_are_shorter_than_the_prompt(tokenizer):
    config = config_2026(tokenizer)
    assert config.padded_vocab_size > config.vocab_size  # padded rows are in the checkpoint
    assert compute_window_sizes(config) == [128, 128, 128, 512] and len(prompt(tokenizer)) > 128


def test_logits_and_greedy_tokens_match_pytorch(native, tokenizer):
    directory, torch_model = native
    model, _ = load_any(directory)
    assert model.config == config_2026(tokenizer)
    assert dict(model.named_parameters())["transformer.wte.weight"].shape[0] == model.config.padded_vocab_size
    ids = prompt(tokenizer)
    logits = our_logits(model, ids)
    assert logits.shape == (len(ids), tokenizer.vocab_size)  # padding rows cropped
    assert np.abs(logits - torch_logits(torch_model, ids)).max() < 1e-4
    assert list(generate(model, ids, 12, temperature=0)) == torch_greedy(torch_model, ids, 12)


def test_import_command_and_sample_take_the_directory(native, tokenizer, tmp_path):
    directory, torch_model = native
    out = tmp_path / "ours"
    assert main(["import", str(directory), "--out", str(out)]) == 0
    model, _ = load_any(out)
    assert model.config == config_2026(tokenizer)
    ids = prompt(tokenizer)
    assert np.abs(our_logits(model, ids) - torch_logits(torch_model, ids)).max() < 1e-4
    assert main(["sample", "--checkpoint", str(directory), "--max-tokens", "5", "--seed", "1"]) == 0


def test_export_nanochat_is_what_nanochats_checkpoint_manager_loads(native, tokenizer, tmp_path):
    directory, torch_model = native
    out = tmp_path / "back"
    assert main(["export", "--checkpoint", str(directory), "--format", "nanochat", "--out", str(out)]) == 0
    model_config = json.loads((out / "meta_000650.json").read_text())["model_config"]
    assert sorted(model_config) == NANOCHAT_2026_FIELDS and model_config["window_pattern"] == "SSSL"
    twin = TorchGPT(GPTConfig.nanochat_2026(**model_config))  # nanochat: GPT(GPTConfig(**model_config))
    twin.load_state_dict(torch.load(out / "model_000650.pt", weights_only=True), strict=True)
    ids = prompt(tokenizer)
    assert np.abs(torch_logits(twin, ids) - torch_logits(torch_model, ids)).max() == 0


def test_export_hf_is_refused_in_one_line(native, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(native[0]), "--format", "hf", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "runs nanochat's classic architecture only" in err and "window_pattern='SSSL'" in err
    assert not out.exists()


def test_tensors_alone_say_2026_and_missing_lambdas_are_patched_as_nanochat_does(tmp_path, tokenizer):
    """An early 2026 checkpoint: no window_pattern in the meta (nanochat runs "L") and no resid_lambdas /
    x0_lambdas (nanochat fills in 1 and 0)."""
    config = config_2026(tokenizer, window_pattern="L")
    torch_model = native_checkpoint(tmp_path, tokenizer, config)
    with torch.no_grad():
        torch_model.resid_lambdas.fill_(1.0)
        torch_model.x0_lambdas.fill_(0.0)
    state = {k: v for k, v in torch_model.state_dict().items() if k not in ("resid_lambdas", "x0_lambdas")}
    torch.save(state, tmp_path / "model_000650.pt")
    meta = json.loads((tmp_path / "meta_000650.json").read_text())
    del meta["model_config"]["window_pattern"]
    (tmp_path / "meta_000650.json").write_text(json.dumps(meta))
    model, _ = load_any(tmp_path)
    assert model.config == config
    ids = prompt(tokenizer)
    assert np.abs(our_logits(model, ids) - torch_logits(torch_model, ids)).max() < 1e-4


def test_unknown_and_missing_tensors_are_listed(tmp_path, tokenizer):
    native_checkpoint(tmp_path / "extra", tokenizer, config_2026(tokenizer), extra_tensors={"mtp_head.weight": torch.ones(2)})
    with pytest.raises(ValueError, match=r"1 tensor\(s\) this model does not know \(nanochat's 2026 architecture\): "
                                         r"mtp_head\.weight"):
        read_any(tmp_path / "extra")
    torch_model = native_checkpoint(tmp_path / "missing", tokenizer, config_2026(tokenizer))
    state = torch_model.state_dict()
    del state["value_embeds.1.weight"], state["smear_lambda"]
    torch.save(state, tmp_path / "missing" / "model_000650.pt")
    with pytest.raises(ValueError, match=r"2 tensor\(s\) missing: smear_lambda, value_embeds\.1\.weight"):
        read_any(tmp_path / "missing")


def test_bad_window_pattern_is_refused(tmp_path, tokenizer):
    native_checkpoint(tmp_path, tokenizer, config_2026(tokenizer))
    meta = json.loads((tmp_path / "meta_000650.json").read_text())
    for pattern, message in (("SXL", "cannot be run: window_pattern must hold only S"), ("", "window_pattern is empty")):
        meta["model_config"]["window_pattern"] = pattern
        (tmp_path / "meta_000650.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=message):
            read_any(tmp_path)


def test_export_nanochat_refuses_a_model_neither_architecture_is(tmp_path, tokenizer, capsys):
    config = GPTConfig(sequence_len=64, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                       value_embeds=True)
    save_checkpoint(tmp_path / "ours", GPT(config), 3)
    tokenizer.save(tmp_path / "ours")
    out = tmp_path / "out"
    assert main(["export", "--checkpoint", str(tmp_path / "ours"), "--format", "nanochat", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "classic architecture cannot hold this model: it has value_embeds=True" in err
    assert not out.exists()
