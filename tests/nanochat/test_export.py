"""Exporting to Hugging Face transformers (--format hf) and to PyTorch nanochat (--format nanochat)."""
import json
import pickle

import numpy as np
import pytest

import torch
import transformers

from interop_fixtures import TEXT, our_logits, small_config, small_tokenizer, torch_logits
from nanochat.checkpoint import save_checkpoint
from nanochat.commands import main
from nanochat.engine import generate
from nanochat.gpt import GPT, GPTConfig
from nanochat.interop import load_any
from nanochat.torch_gpt import TorchGPT

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 日本?"}],
    [{"role": "user", "content": "compute 3*7"},
     {"role": "assistant", "content": [{"type": "text", "text": "Let me run it: "},
                                       {"type": "python", "text": "3*7"},
                                       {"type": "python_output", "text": "21"},
                                       {"type": "text", "text": "It is 21."}]}],
]


@pytest.fixture(scope="module")
def tokenizer():
    return small_tokenizer()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """One of our checkpoints with non-trivial weights (GPT's init zeroes lm_head and the projections)."""
    directory = tmp_path_factory.mktemp("ours")
    model = GPT(small_config(tokenizer))
    rng = np.random.default_rng(1)
    for _, p in model.named_parameters():
        p.data[...] = rng.normal(0, 1.5 / np.sqrt(p.shape[-1]), p.shape)
    save_checkpoint(directory, model, 42)
    tokenizer.save(directory)
    return directory, model


@pytest.fixture(scope="module")
def hf_out(tmp_path_factory, checkpoint):
    out = tmp_path_factory.mktemp("export") / "hf"
    assert main(["export", "--checkpoint", str(checkpoint[0]), "--format", "hf", "--out", str(out)]) == 0
    return out


def test_transformers_loads_it_with_no_missing_or_unused_weights(hf_out, checkpoint, tokenizer):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(hf_out, output_loading_info=True)
    assert type(model).__name__ == "NanoChatForCausalLM"
    assert {k: list(v) for k, v in info.items() if v} == {}  # missing, unexpected, mismatched, error messages
    ids = [tokenizer.bos_token_id] + tokenizer.encode("the quick brown fox")
    assert np.abs(torch_logits(model.eval(), ids) - our_logits(checkpoint[1], ids)).max() < 1e-4
    with torch.no_grad():
        hf_tokens = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                                   pad_token_id=0)[0, len(ids):].tolist()
    assert hf_tokens == list(generate(checkpoint[1], ids, 12, temperature=0))


def test_loading_logs_no_warnings(hf_out, caplog):
    transformers.logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            transformers.AutoModelForCausalLM.from_pretrained(hf_out)
            transformers.AutoTokenizer.from_pretrained(hf_out)
    finally:
        transformers.logging.disable_propagation()
    assert [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == []


@pytest.mark.parametrize("text", [TEXT, "", " leading and  double  spaces\t\n\nnew lines  ", "🙂🙂 mixed 日本語 ascii",
                                  "<|bos|>hello<|user_start|>hi<|user_end|><|assistant_start|>ok<|assistant_end|>",
                                  "numbers 1234567 and ’quotes’ café"])
def test_tokenizer_gives_our_ids(hf_out, tokenizer, text):
    hf = transformers.AutoTokenizer.from_pretrained(hf_out)
    expected = tokenizer.enc.encode(text, allowed_special="all")  # special-token text becomes the special id
    assert hf(text, add_special_tokens=True)["input_ids"] == expected
    assert hf.decode(expected) == text


def test_tokenizer_matches_on_random_text(hf_out, tokenizer):
    hf = transformers.AutoTokenizer.from_pretrained(hf_out)
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghij XYZ0123456789.,!?'\n\t-_éü日本🙂") + ["'s", "'ll", "  ", "\r\n"]
    for _ in range(200):
        text = "".join(rng.choice(alphabet, size=rng.integers(0, 40)))
        assert hf(text)["input_ids"] == tokenizer.encode(text), repr(text)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_chat_template_renders_as_render_conversation(hf_out, tokenizer, conversation):
    hf = transformers.AutoTokenizer.from_pretrained(hf_out)
    ids = hf.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
    assert ids == tokenizer.render_conversation(conversation)[0]
    if conversation[-1]["role"] == "user":
        prompt = hf.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        assert prompt == tokenizer.render_for_completion(conversation)


def test_generation_config_stops_at_assistant_end(hf_out, tokenizer):
    generation = json.loads((hf_out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tokenizer.encode_special("<|assistant_end|>"), tokenizer.bos_token_id]
    assert transformers.GenerationConfig.from_pretrained(hf_out).eos_token_id == generation["eos_token_id"]


def test_export_round_trips_through_import(hf_out, checkpoint, tmp_path):
    ours, _ = load_any(hf_out)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(ours.parameters(), checkpoint[1].parameters()))


def test_nanochat_format_loads_as_nanochats_checkpoint_manager_does(checkpoint, tokenizer, tmp_path):
    out = tmp_path / "native"
    assert main(["export", "--checkpoint", str(checkpoint[0]), "--format", "nanochat", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["meta_000042.json", "model_000042.pt", "token_bytes.pt", "tokenizer.pkl"]
    # nanochat's build_model: torch.load, GPTConfig(**meta["model_config"]), load_state_dict(strict=True)
    meta = json.loads((out / "meta_000042.json").read_text())
    assert set(meta["model_config"]) == {"sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd"}
    model = TorchGPT(GPTConfig(**meta["model_config"]))
    model.load_state_dict(torch.load(out / "model_000042.pt", map_location="cpu"), strict=True)
    ids = [tokenizer.bos_token_id] + tokenizer.encode("the quick brown fox")
    assert np.abs(torch_logits(model, ids) - our_logits(checkpoint[1], ids)).max() < 1e-4
    # nanochat's RustBPETokenizer.from_directory: plain pickle.load (we wrote this file ourselves)
    enc = pickle.loads((out / "tokenizer.pkl").read_bytes())
    assert enc.encode(TEXT, allowed_special="all") == tokenizer.enc.encode(TEXT, allowed_special="all")
    assert enc.encode_single_token("<|assistant_end|>") == tokenizer.encode_special("<|assistant_end|>")
    assert torch.load(out / "token_bytes.pt").tolist() == tokenizer.token_bytes.tolist()
    reimported, _ = load_any(out)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(reimported.parameters(), checkpoint[1].parameters()))


def test_nanochat_format_refuses_what_nanochat_fixes(tmp_path, tokenizer):
    model = GPT(small_config(tokenizer, rope_base=500.0))
    save_checkpoint(tmp_path / "ours", model, 1)
    tokenizer.save(tmp_path / "ours")
    assert main(["export", "--checkpoint", str(tmp_path / "ours"), "--format", "nanochat", "--out", str(tmp_path / "o")]) == 1
    assert not (tmp_path / "o").exists()


def test_export_hf_directly_from_a_native_checkpoint(tmp_path, tokenizer):
    from interop_fixtures import native_checkpoint
    torch_model = native_checkpoint(tmp_path / "native", tokenizer, small_config(tokenizer))
    assert main(["export", "--checkpoint", str(tmp_path / "native"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = [tokenizer.bos_token_id] + tokenizer.encode("jumps over")
    assert np.abs(torch_logits(model, ids) - torch_logits(torch_model, ids)).max() < 1e-4


def test_failed_export_leaves_no_output(checkpoint, tmp_path, monkeypatch):
    import nanochat.interop.hf as hf

    def fail(*args, **kwargs):
        raise ValueError("disk full")
    monkeypatch.setattr(hf.minigrad, "save", fail)
    assert main(["export", "--checkpoint", str(checkpoint[0]), "--format", "hf", "--out", str(tmp_path / "out")]) == 1
    assert list(tmp_path.iterdir()) == []


def test_tensors_without_a_place_in_the_target_are_refused(tmp_path, tokenizer):
    from minigrad.nn import Parameter
    from nanochat.interop.hf import write_hf
    from nanochat.interop.native import write_native
    model = GPT(small_config(tokenizer))
    model.resid_lambdas = Parameter(np.ones(2, np.float32))  # as nanochat's 2026 architecture adds
    with pytest.raises(ValueError, match="no place for: resid_lambdas"):
        write_hf(tmp_path, model, tokenizer)
    assert list(tmp_path.iterdir()) == []
    windows_only = GPT(small_config(tokenizer, window_pattern="SSSL"))  # nanochat's 2026 GPT has all or none
    with pytest.raises(ValueError, match=r"nanochat's 2026 architecture cannot hold this model: it has .*pad_vocab_size_to=1"
                                         r".*nanochat's has .*pad_vocab_size_to=64"):
        write_native(tmp_path, windows_only, tokenizer, 1)
