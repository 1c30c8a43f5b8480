"""PyTorch nanochat's own checkpoints: model_<step>.pt (a torch.save'd state_dict), meta_<step>.json
(with `model_config`), and the tokenizer directory (tokenizer.pkl, token_bytes.pt).

A nanochat run keeps the tokenizer in its base directory (~/.cache/nanochat/tokenizer) and the
checkpoints two levels down (base_checkpoints/d20/); published checkpoints put everything in one
folder. Both layouts are found without options; --tokenizer names another folder.
"""
import json
import pickle
import re
from pathlib import Path

import numpy as np

from nanochat.gpt import GPTConfig
from nanochat.interop.safe_pickle import load_tokenizer_pickle

# what PyTorch nanochat's classic GPTConfig holds; ours adds rope_base, softcap and norm_eps, which
# classic nanochat fixes at these values. Its 2026 GPTConfig (92d63d4) adds window_pattern only: every
# other 2026 feature is always on there, so a model_config with window_pattern means the 2026 preset.
NANOCHAT_FIELDS = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")
NANOCHAT_2026_FIELDS = NANOCHAT_FIELDS + ("window_pattern",)
NANOCHAT_FIXED = {"rope_base": 10000.0, "softcap": 15.0, "norm_eps": GPTConfig.norm_eps}
# tensors only nanochat's 2026 architecture has (they also say 2026 when an early meta lacks window_pattern)
TENSORS_2026 = re.compile(r"resid_lambdas|x0_lambdas|smear_gate\.weight|smear_lambda|backout_lambda|"
                          r"value_embeds\.\d+\.weight|transformer\.h\.\d+\.attn\.ve_gate\.weight")


def require_torch(what):
    try:
        import torch
    except ImportError:
        raise ValueError(f"{what} needs PyTorch: pip install 'minigrad-nanochat[torch]'") from None
    return torch


def is_native(directory):
    return any(re.fullmatch(r"model_\d+\.pt", p.name) for p in Path(directory).glob("model_*.pt"))


def read_native(directory, step=None, tokenizer_dir=None):
    """(config dict, state {name: float32 array}, Tokenizer, step) of a nanochat checkpoint."""
    directory = Path(directory)
    steps = sorted(int(m.group(1)) for p in directory.glob("model_*.pt") if (m := re.fullmatch(r"model_(\d+)\.pt", p.name)))
    if not steps:
        raise FileNotFoundError(f"no model_<step>.pt in {directory}")
    step = steps[-1] if step is None else step
    model_path, meta_path = directory / f"model_{step:06d}.pt", directory / f"meta_{step:06d}.json"
    for path in (model_path, meta_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (steps here: {', '.join(map(str, steps))})")
    try:
        config = json.loads(meta_path.read_text(encoding="utf-8"))["model_config"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{meta_path}: no readable model_config ({type(e).__name__}: {e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{meta_path}: model_config is not an object")
    state = read_state(model_path)
    config = config_from_nanochat(config, state, meta_path)
    tokenizer = read_tokenizer(_find_tokenizer(directory, tokenizer_dir))
    return config.to_dict(), state, tokenizer, step


def config_from_nanochat(model_config, state, where):
    """Our GPTConfig for nanochat's model_config: the 2026 preset when the config has window_pattern or a
    tensor is one of the 2026 architecture's, else the classic model. As nanochat's checkpoint manager
    does, a 2026 checkpoint without window_pattern runs "L", and one without resid_lambdas / x0_lambdas
    gets their neutral values (1 and 0) added to `state`."""
    unknown = sorted(set(model_config) - set(NANOCHAT_2026_FIELDS))
    if unknown:
        raise ValueError(f"{where}: model config fields this model does not know: {', '.join(unknown)}")
    absent = [k for k in NANOCHAT_FIELDS if k not in model_config]
    if absent:
        raise ValueError(f"{where}: model_config lacks {', '.join(absent)}")
    is_2026 = "window_pattern" in model_config or any(TENSORS_2026.fullmatch(name) for name in state)
    try:
        config = (GPTConfig.nanochat_2026(**{"window_pattern": "L", **model_config}) if is_2026
                  else GPTConfig(**model_config))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: the model config cannot be run: {e}") from None
    if is_2026:
        if not config.window_pattern:
            raise ValueError(f"{where}: window_pattern is empty (nanochat needs at least one S or L)")
        state.setdefault("resid_lambdas", np.ones(config.n_layer, dtype=np.float32))
        state.setdefault("x0_lambdas", np.zeros(config.n_layer, dtype=np.float32))
    return config


def read_state(model_path):
    """A torch.save'd state_dict as float32 NumPy arrays, read with weights_only=True (no code runs)."""
    torch = require_torch(f"reading {Path(model_path).name}")
    try:
        raw = torch.load(model_path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{model_path}: cannot be read as a weights-only torch file ({message})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{model_path}: holds a {type(raw).__name__}, not a state_dict")
    state = {}
    for name, value in raw.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ValueError(f"{model_path}: entry {name!r} is not a floating-point tensor")
        # torch.compile saves the wrapped module's keys with an _orig_mod. prefix
        state[name.removeprefix("_orig_mod.")] = value.detach().to(torch.float32).contiguous().numpy()
    return state


def _find_tokenizer(directory, tokenizer_dir):
    if tokenizer_dir is not None:
        candidates = [Path(tokenizer_dir)]
    else:
        candidates = [directory, directory / "tokenizer", directory.parent / "tokenizer", directory.parent.parent / "tokenizer"]
    for candidate in candidates:
        if (candidate / "tokenizer.pkl").is_file():
            return candidate
    raise FileNotFoundError(f"no tokenizer.pkl in {', '.join(map(str, candidates))}; pass --tokenizer DIR")


def read_tokenizer(directory):
    """Tokenizer from tokenizer.pkl (restricted unpickling); token_bytes.pt, when present, must agree."""
    tokenizer = load_tokenizer_pickle(directory / "tokenizer.pkl")
    token_bytes_path = directory / "token_bytes.pt"
    if token_bytes_path.is_file():
        torch = require_torch(f"reading {token_bytes_path.name}")
        try:
            token_bytes = torch.load(token_bytes_path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            raise ValueError(f"{token_bytes_path}: cannot be read ({str(e).splitlines()[0]})") from None
        if not isinstance(token_bytes, torch.Tensor) or not np.array_equal(token_bytes.numpy(), tokenizer.token_bytes):
            raise ValueError(f"{token_bytes_path} does not match tokenizer.pkl's vocabulary")
    return tokenizer


def check_classic_config(config, target):
    """Refuse a model with any option beyond nanochat's classic architecture (the 2026 ones), which
    `target` cannot hold; rope_base, softcap and norm_eps may differ (`target` stores them)."""
    classic = GPTConfig(**{k: getattr(config, k) for k in NANOCHAT_FIELDS + tuple(NANOCHAT_FIXED)})
    differs = _differences(config, classic)
    if differs:
        raise ValueError(f"{target} runs nanochat's classic architecture only; this model has {differs} "
                         f"(export --format nanochat keeps it)")


def nanochat_model_config(config):
    """The model_config nanochat's checkpoint manager builds `config` from: the classic fields, or with
    window_pattern for the 2026 architecture. A model neither architecture is (a mix of the 2026 options,
    another rope base, ...) is refused; the training recipe does not matter."""
    sizes = {k: getattr(config, k) for k in NANOCHAT_FIELDS}
    if config.window_pattern:
        name, keys, expected = "2026", NANOCHAT_2026_FIELDS, GPTConfig.nanochat_2026(**sizes, window_pattern=config.window_pattern)
    else:
        name, keys, expected = "classic", NANOCHAT_FIELDS, GPTConfig(**sizes)
    differs = _differences(config, expected)
    if differs:
        raise ValueError(f"PyTorch nanochat's {name} architecture cannot hold this model: it has {differs}, "
                         f"nanochat's has {_differences(expected, config)}")
    return {k: getattr(config, k) for k in keys}


def _differences(config, reference):
    ours, theirs = config.to_dict(), reference.to_dict()
    return ", ".join(f"{k}={v!r}" for k, v in ours.items() if k != "recipe" and v != theirs[k])


def write_native(directory, model, tokenizer, step, meta_extra=None):
    """What PyTorch nanochat's checkpoint manager loads: model_<step>.pt, meta_<step>.json, plus
    tokenizer.pkl and token_bytes.pt (nanochat reads those from <base_dir>/tokenizer)."""
    torch = require_torch("--format nanochat")
    model_config = nanochat_model_config(model.config)
    directory = Path(directory)
    state = {name: torch.from_numpy(np.array(value, dtype=np.float32)) for name, value in model.state_dict().items()}
    torch.save(state, directory / f"model_{step:06d}.pt")
    meta = {"step": step, "model_config": model_config, **(meta_extra or {})}
    (directory / f"meta_{step:06d}.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    with open(directory / "tokenizer.pkl", "wb") as f:
        pickle.dump(tokenizer.enc, f)
    torch.save(torch.from_numpy(tokenizer.token_bytes.astype(np.int32)), directory / "token_bytes.pt")
