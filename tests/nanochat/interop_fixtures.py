"""Inputs for the interop tests, built here: a tokenizer, a PyTorch nanochat checkpoint written the way
nanochat writes one, and Hugging Face NanoChat directories from transformers' own save_pretrained."""
import json
import math
import pickle

import numpy as np
import tiktoken

from nanochat.gpt import GPTConfig
from nanochat.tokenizer import SPECIAL_TOKENS, Tokenizer

TEXT = ("The quick brown fox jumps over the lazy dog. Numbers 12345 and 67, punctuation!? "
        "Ünïcödé, 日本語のテキスト, emoji 🙂; code: def f(x): return x**2\n\n") * 20


def small_tokenizer():
    return Tokenizer.train([TEXT], 400)


def small_config(tokenizer, **overrides):
    return GPTConfig(**{**dict(sequence_len=64, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=4, n_kv_head=2,
                               n_embd=64), **overrides})


def randomize(torch_model, seed=0):
    """Weights large enough that logits spread out (init leaves lm_head and projections tiny or zero),
    so greedy decoding has clear winners."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in torch_model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 if p.shape[0] == torch_model.config.vocab_size and
                    p is torch_model.get_input_embeddings().weight else 1.5 / math.sqrt(p.shape[-1])))
    return torch_model


def write_tokenizer_pickle(tokenizer, directory):
    """tokenizer.pkl and token_bytes.pt exactly as nanochat's RustBPETokenizer.save and tok_train write them."""
    import torch
    enc = tiktoken.Encoding(name="rustbpe", pat_str=tokenizer.pattern, mergeable_ranks=tokenizer.mergeable_ranks,
                            special_tokens={name: len(tokenizer.mergeable_ranks) + i for i, name in enumerate(SPECIAL_TOKENS)})
    with open(directory / "tokenizer.pkl", "wb") as f:
        pickle.dump(enc, f)
    torch.save(torch.tensor(tokenizer.token_bytes, dtype=torch.int32), directory / "token_bytes.pt")


def native_checkpoint(directory, tokenizer, config, step=650, prefix="", dtype=None, extra_tensors=None):
    """model_<step>.pt + meta_<step>.json + tokenizer files, as PyTorch nanochat saves them; returns the TorchGPT."""
    import torch
    from nanochat.torch_gpt import TorchGPT
    torch.manual_seed(0)
    model = TorchGPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 1.5 / math.sqrt(p.shape[-1]))
    state = {prefix + k: (v.to(dtype) if dtype else v) for k, v in model.state_dict().items()}
    state.update(extra_tensors or {})
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / f"model_{step:06d}.pt")
    fields = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")
    fields += ("window_pattern",) if config.window_pattern else ()  # nanochat's 2026 GPTConfig adds it
    meta = {"step": step, "val_bpb": 1.0, "model_config": {k: getattr(config, k) for k in fields}}
    (directory / f"meta_{step:06d}.json").write_text(json.dumps(meta))
    write_tokenizer_pickle(tokenizer, directory)
    return model


def hf_model(config, seed=0):
    """A randomly initialised transformers NanoChatForCausalLM of `config`'s shape (float32)."""
    import torch
    from transformers import NanoChatConfig, NanoChatForCausalLM
    hf_config = NanoChatConfig(vocab_size=config.vocab_size, hidden_size=config.n_embd, intermediate_size=4 * config.n_embd,
                               num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
                               num_key_value_heads=config.n_kv_head, max_position_embeddings=config.sequence_len,
                               rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                               final_logit_softcapping=15.0)
    torch.manual_seed(seed)
    model = NanoChatForCausalLM(hf_config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 1.5 / math.sqrt(p.shape[-1]) if p is not model.model.embed_tokens.weight else 1.0)
    return model


def hf_dir(directory, model, tokenizer, dtype=None, max_shard_size=None):
    """save_pretrained (optionally in another dtype, optionally sharded) plus our tokenizer.json."""
    import torch
    from nanochat.interop.hf_tokenizer import tokenizer_json
    to_save = model if dtype is None else type(model)(model.config).to(dtype)
    if dtype is not None:
        to_save.load_state_dict({k: v.to(dtype) for k, v in model.state_dict().items()})
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    to_save.save_pretrained(directory, **kwargs)
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer_json(tokenizer)), encoding="utf-8")
    return directory


def torch_logits(torch_model, ids):
    import torch
    with torch.no_grad():
        out = torch_model(torch.tensor([ids]))
    return (out.logits if hasattr(out, "logits") else out)[0].float().numpy()


def our_logits(model, ids):
    import minigrad
    with minigrad.no_grad():
        return model(np.array([ids])).data[0]


def torch_greedy(model, ids, n):
    """n greedy tokens from a TorchGPT after `ids`, decoded through its KV cache as nanochat's engine does."""
    import torch
    from nanochat.torch_gpt import TorchKVCache
    cache = TorchKVCache(1, model.config.n_kv_head, model.config.head_dim, model.config.n_layer, len(ids) + n)
    out, x = [], torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n):
            next_id = int(model(x, kv_cache=cache)[0, -1].argmax())
            out.append(next_id)
            x = torch.tensor([[next_id]])
    return out
