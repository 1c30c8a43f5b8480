"""Hugging Face transformers' NanoChat layout (NanoChatForCausalLM, model_type "nanochat"): read and
write config.json, model.safetensors (or shards with model.safetensors.index.json) and the
tokenizer files. Neither needs transformers; its tests use it to check the written files.
"""
import json
import re
from pathlib import Path

import minigrad
from nanochat.interop.native import check_classic_config
from nanochat.interop.hf_tokenizer import tokenizer_config, tokenizer_from_json, tokenizer_json

# ours <-> theirs; {i} is the layer index
_NAMES = [
    ("transformer.wte.weight", "model.embed_tokens.weight"),
    ("lm_head.weight", "lm_head.weight"),
    ("transformer.h.{i}.attn.c_q.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    ("transformer.h.{i}.attn.c_k.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    ("transformer.h.{i}.attn.c_v.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    ("transformer.h.{i}.attn.c_proj.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    ("transformer.h.{i}.mlp.c_fc.weight", "model.layers.{i}.mlp.fc1.weight"),
    ("transformer.h.{i}.mlp.c_proj.weight", "model.layers.{i}.mlp.fc2.weight"),
]


def _renamer(pairs):
    patterns = [(re.compile(re.escape(src).replace(r"\{i\}", r"(\d+)") + "$"), dst) for src, dst in pairs]

    def rename(name):
        for pattern, dst in patterns:
            if m := pattern.match(name):
                return dst.replace("{i}", m.group(1)) if m.groups() else dst
        return name  # unknown names pass through, so the model's strict check lists them
    return rename


to_hf_name = _renamer(_NAMES)
from_hf_name = _renamer([(hf, ours) for ours, hf in _NAMES])


def is_hf(directory):
    return (Path(directory) / "config.json").is_file()


def read_hf(directory):
    """(config dict for GPTConfig, state {our name: float32 array}, Tokenizer) of an HF NanoChat dir."""
    directory = Path(directory)
    config = config_from_hf(_read_json(directory / "config.json"), directory / "config.json")
    state = {}
    for path in _weight_files(directory):
        for name, value in minigrad.load(path).items():  # bfloat16 and float16 come back as float32
            state[from_hf_name(name)] = value
    if config.pop("tie_word_embeddings") and "lm_head.weight" not in state and "transformer.wte.weight" in state:
        state["lm_head.weight"] = state["transformer.wte.weight"].copy()
    return config, state, tokenizer_from_json(directory / "tokenizer.json")


def config_from_hf(hf, where):
    """GPTConfig fields from a NanoChatConfig's JSON (an absent field has NanoChatConfig's default);
    what the model cannot run is refused."""
    if hf.get("model_type") != "nanochat":
        raise ValueError(f"{where}: model_type is {hf.get('model_type')!r}, this code reads 'nanochat'")
    try:
        n_embd, n_head = hf["hidden_size"], hf["num_attention_heads"]
        rope = hf.get("rope_parameters") or {"rope_type": "default", "rope_theta": hf.get("rope_theta", 10000.0)}
        config = dict(sequence_len=hf["max_position_embeddings"], vocab_size=hf["vocab_size"],
                      n_layer=hf["num_hidden_layers"], n_head=n_head,
                      n_kv_head=hf.get("num_key_value_heads") or n_head, n_embd=n_embd,
                      rope_base=float(rope["rope_theta"]), softcap=hf.get("final_logit_softcapping", 15.0),
                      norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                      tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: missing or malformed field ({type(e).__name__}: {e})") from None
    unsupported = {
        "hidden_act": (hf.get("hidden_act", "relu2"), "relu2"),
        "intermediate_size": (hf.get("intermediate_size", 8192), 4 * n_embd),
        "attention_bias": (hf.get("attention_bias", False), False),
        "rope_type": (rope.get("rope_type", rope.get("type", "default")), "default"),
        "head_dim": (hf.get("head_dim") or n_embd // n_head, n_embd // n_head),
    }
    for field, (found, needed) in unsupported.items():
        if found != needed:
            raise ValueError(f"{where}: {field} is {found!r}; this model runs only {needed!r}")
    if not config["softcap"]:
        raise ValueError(f"{where}: final_logit_softcapping is {config['softcap']!r}; this model always softcaps")
    return config


def _read_json(path):
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a JSON object")
    return value


def _weight_files(directory):
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index}: no weight_map")
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (directory / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists shards that are missing: {', '.join(missing)}")
        return [directory / f for f in files]
    single = directory / "model.safetensors"
    if not single.is_file():
        raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {directory}")
    return [single]


def write_hf(directory, model, tokenizer):
    """config.json, generation_config.json, model.safetensors (float32) and the tokenizer files."""
    directory = Path(directory)
    c = model.config
    check_classic_config(c, "transformers' NanoChatForCausalLM")
    state = {to_hf_name(name): value for name, value in model.state_dict().items()}
    unmapped = sorted(name for name in state if not name.startswith(("model.", "lm_head.")))
    if unmapped:  # better refused than dropped
        raise ValueError(f"transformers' NanoChatForCausalLM has no place for: {', '.join(unmapped)}")
    bos, assistant_end = tokenizer.bos_token_id, tokenizer.encode_special("<|assistant_end|>")
    config = {
        "architectures": ["NanoChatForCausalLM"], "model_type": "nanochat", "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd, "intermediate_size": 4 * c.n_embd, "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head,
        "max_position_embeddings": c.sequence_len, "hidden_act": "relu2", "attention_dropout": 0.0,
        "rms_norm_eps": c.norm_eps, "initializer_range": 0.02,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_base}, "use_cache": True,
        "final_logit_softcapping": c.softcap, "attention_bias": False, "bos_token_id": bos,
        "eos_token_id": assistant_end, "pad_token_id": bos, "tie_word_embeddings": False, "dtype": "float32",
    }
    generation = {"bos_token_id": bos, "eos_token_id": [assistant_end, bos], "pad_token_id": bos}
    files = {"config.json": config, "generation_config.json": generation, "tokenizer.json": tokenizer_json(tokenizer),
             "tokenizer_config.json": tokenizer_config(tokenizer, c.sequence_len)}
    for name, doc in files.items():
        (directory / name).write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    minigrad.save(state, directory / "model.safetensors", metadata={"format": "pt"})
