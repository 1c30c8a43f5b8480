"""Importing Hugging Face NanoChat directories written by transformers' save_pretrained."""
import json

import numpy as np
import pytest

import torch
import transformers  # noqa: F401  (the tests need it; dev installs it)

from interop_fixtures import hf_dir, hf_model, our_logits, small_config, small_tokenizer, torch_logits
from nanochat.commands import main
from nanochat.engine import generate
from nanochat.interop import load_any, read_any


@pytest.fixture(scope="module")
def tokenizer():
    return small_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return hf_model(small_config(tokenizer))


def prompt(tokenizer):
    return [tokenizer.bos_token_id] + tokenizer.encode("the quick brown fox jumps over")


def hf_greedy(model, ids, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                             pad_token_id=0, min_new_tokens=n)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("dtype, shard", [(None, None), (None, "100KB"), (torch.bfloat16, None), (torch.bfloat16, "60KB")])
def test_logits_and_greedy_tokens_match_transformers(tmp_path, model, tokenizer, dtype, shard):
    directory = hf_dir(tmp_path / "hf", model, tokenizer, dtype=dtype, max_shard_size=shard)
    assert (directory / "model.safetensors.index.json").is_file() == (shard is not None)
    if dtype is not None:  # the reference is what transformers itself loads from these files, in float32
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ours, _ = load_any(directory)
    ids = prompt(tokenizer)
    assert np.abs(our_logits(ours, ids) - torch_logits(model, ids)).max() < 1e-4
    assert list(generate(ours, ids, 12, temperature=0)) == hf_greedy(model, ids, 12)


def test_config_values_are_honoured(tmp_path, tokenizer):
    config = small_config(tokenizer)
    model = hf_model(config)
    model.config.rms_norm_eps = 1e-3  # large enough to move the logits if it were ignored
    model.config.final_logit_softcapping = 5.0
    model.config.rope_parameters = {"rope_type": "default", "rope_theta": 500.0}
    from transformers import NanoChatForCausalLM
    reloaded_dir = hf_dir(tmp_path / "hf", model, tokenizer)
    model = NanoChatForCausalLM.from_pretrained(reloaded_dir).eval()
    ours, _ = load_any(reloaded_dir)
    assert (ours.config.norm_eps, ours.config.softcap, ours.config.rope_base) == (1e-3, 5.0, 500.0)
    ids = prompt(tokenizer)
    assert np.abs(our_logits(ours, ids) - torch_logits(model, ids)).max() < 1e-4


def test_import_command(tmp_path, model, tokenizer):
    directory = hf_dir(tmp_path / "hf", model, tokenizer, max_shard_size="100KB")
    assert main(["import", str(directory), "--out", str(tmp_path / "ours")]) == 0
    ours, _ = load_any(tmp_path / "ours")
    ids = prompt(tokenizer)
    assert np.abs(our_logits(ours, ids) - torch_logits(model, ids)).max() < 1e-4
    assert main(["chat", "--checkpoint", str(directory), "-p", "hi", "--max-tokens", "4", "--dtype", "bfloat16"]) == 0


def _edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_act="gelu"), "hidden_act is 'gelu'"),
    (dict(intermediate_size=100), "intermediate_size is 100"),
    (dict(attention_bias=True), "attention_bias is True"),
    (dict(final_logit_softcapping=None), "always softcaps"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0}), "rope_type is 'yarn'"),
    (dict(model_type="llama"), "model_type is 'llama'"),
    (dict(head_dim=8), "head_dim is 8"),
])
def test_what_the_model_cannot_run_is_refused(tmp_path, model, tokenizer, changes, message):
    directory = hf_dir(tmp_path / "hf", model, tokenizer)
    _edit_config(directory, **changes)
    with pytest.raises(ValueError, match=message):
        read_any(directory)


def test_unknown_tensors_are_listed(tmp_path, model, tokenizer):
    from safetensors.torch import load_file, save_file
    directory = hf_dir(tmp_path / "hf", model, tokenizer)
    state = load_file(directory / "model.safetensors")
    state["model.layers.0.self_attn.q_norm.weight"] = torch.ones(16)
    save_file(state, directory / "model.safetensors")
    with pytest.raises(ValueError, match=r"1 tensor\(s\) this model does not know.*model.layers.0.self_attn.q_norm.weight"):
        read_any(directory)


def test_missing_shard_and_missing_tokenizer_are_clear_errors(tmp_path, model, tokenizer):
    directory = hf_dir(tmp_path / "hf", model, tokenizer, max_shard_size="100KB")
    sorted(directory.glob("model-*.safetensors"))[0].unlink()
    with pytest.raises(FileNotFoundError, match="lists shards that are missing"):
        read_any(directory)
    directory = hf_dir(tmp_path / "hf2", model, tokenizer)
    (directory / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        read_any(directory)


def test_hf_dir_has_one_model_so_step_is_refused(tmp_path, model, tokenizer):
    directory = hf_dir(tmp_path / "hf", model, tokenizer)
    with pytest.raises(ValueError, match="drop --step"):
        read_any(directory, step=3)


def test_tokenizer_json_listing_special_tokens_in_its_vocab_is_read(tmp_path, tokenizer):
    from nanochat.interop.hf_tokenizer import tokenizer_from_json, tokenizer_json
    doc = tokenizer_json(tokenizer)
    doc["model"]["vocab"].update(tokenizer.special_tokens)
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    assert tokenizer_from_json(tmp_path / "tokenizer.json").encode("hello 日本") == tokenizer.encode("hello 日本")
    doc["added_tokens"] = doc["added_tokens"][:-1]
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not nanochat's special tokens"):
        tokenizer_from_json(tmp_path / "tokenizer.json")
