"""One way in for every checkpoint format: `load_any(src, dtype=...) -> (model, tokenizer)`.

SRC is this project's checkpoint directory (meta_<step>.json + model_<step>.safetensors), a PyTorch
nanochat directory (model_<step>.pt, classic or 2026 architecture) or a Hugging Face NanoChat directory
(config.json). Tensors the model does not know are an error that lists them.
"""
import os
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np

from minigrad import nn
from nanochat.checkpoint import load_checkpoint
from nanochat.gpt import GPT, GPTConfig
from nanochat.interop.bfloat16 import cast_to_bfloat16, check_dtype
from nanochat.interop.hf import is_hf, read_hf
from nanochat.interop.native import is_native, read_native
from nanochat.tokenizer import Tokenizer

FORMATS = ("minigrad", "nanochat", "hf")


def detect_format(src):
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"checkpoint directory {src} does not exist")
    if is_hf(src):
        return "hf"
    if is_native(src):
        return "nanochat"
    if any(src.glob("meta_*.json")):
        return "minigrad"
    raise ValueError(f"{src} holds no checkpoint: expected meta_<step>.json + model_<step>.safetensors (this "
                     f"project), model_<step>.pt (PyTorch nanochat) or config.json (Hugging Face)")


def load_any(src, dtype="float32", step=None, tokenizer_dir=None):
    """(model, tokenizer) from any supported checkpoint directory; dtype "bfloat16" keeps the
    weights as bfloat16 (inference only). `step` picks a step in a step-numbered format."""
    check_dtype(dtype)  # before the slow part
    model, tokenizer, _ = read_any(src, step=step, tokenizer_dir=tokenizer_dir)
    if dtype == "bfloat16":
        cast_to_bfloat16(model)
    return model, tokenizer


def read_any(src, step=None, tokenizer_dir=None):
    """(float32 model, tokenizer, info) where info holds the source's format and step."""
    fmt = detect_format(src)
    if fmt == "minigrad":
        model, meta, _ = load_checkpoint(src, step)
        tokenizer = Tokenizer.load(src)
        step = meta["step"]
    elif fmt == "nanochat":
        config, state, tokenizer, step = read_native(src, step, tokenizer_dir)
        model = build_model(config, state, src)
    else:
        if step is not None:
            raise ValueError(f"{src} is a Hugging Face directory, which holds one model: drop --step")
        config, state, tokenizer = read_hf(src)
        model, step = build_model(config, state, src), 0
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"{src}: the tokenizer has {tokenizer.vocab_size} tokens but the model expects "
                         f"{model.config.vocab_size}")
    return model, tokenizer, {"format": fmt, "step": step}


def build_model(config, state, where):
    """A float32 GPT holding `state`; every tensor must be one the model has, with its shape."""
    known = {f.name for f in fields(GPTConfig)}
    try:
        gpt_config = GPTConfig(**{k: v for k, v in config.items() if k in known})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: the model config cannot be run: {e}") from None
    with nn.skip_init():  # every parameter is checked and replaced below
        model = GPT(gpt_config)
    own = dict(model.named_parameters())
    unknown = sorted(set(state) - set(own))
    if unknown:
        architecture = "nanochat's 2026" if gpt_config.window_pattern else "the classic"
        raise ValueError(f"{where}: {len(unknown)} tensor(s) this model does not know ({architecture} "
                         f"architecture): {_listing(unknown)}")
    extra_fields = sorted(set(config) - known)
    if extra_fields:
        raise ValueError(f"{where}: model config fields this model does not know: {', '.join(extra_fields)}")
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(f"{where}: {len(missing)} tensor(s) missing: {_listing(missing)}")
    wrong = [f"{k} {state[k].shape} (expected {own[k].shape})" for k in own if state[k].shape != own[k].shape]
    if wrong:
        raise ValueError(f"{where}: tensors of the wrong shape: {_listing(wrong)}")
    for name, param in own.items():
        param.data = np.ascontiguousarray(state.pop(name), dtype=np.float32)  # adopt the array, no copy
    return model


def _listing(names, limit=8):
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def write_dir_atomic(out, write):
    """Run write(tmp_dir) in a fresh directory beside `out`, then rename it to `out`: `out` appears
    only once everything in it is written. An existing non-empty `out` is refused."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not empty; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should be an ordinary directory
    try:
        write(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
