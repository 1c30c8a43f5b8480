"""Checkpoints: model weights and optimizer state in safetensors, metadata in JSON. No pickle.

A checkpoint at step N is three files in one directory:
  model_N.safetensors  the GPT's state_dict, PyTorch nanochat's names and layouts
  optim_N.safetensors  optimizer moments (arrays), with the rest of their state as JSON metadata
  meta_N.json          step, config, loss, lr, format version, the caller's extras, file hashes
Every file is written to a temporary name and renamed, and meta is written last: a crash
mid-save leaves the previous checkpoint intact, and a step without meta does not count.
"""
import hashlib
import json
import re
from pathlib import Path

import numpy as np

import minigrad
from minigrad import nn
from minigrad.serialization import write_atomic
from nanochat.gpt import GPT, GPTConfig

FORMAT_VERSION = 1
RESERVED_META = ("step", "config", "loss", "lr", "format_version", "files")


def save_checkpoint(directory, model, step, optimizer=None, meta=None, loss=None, lr=None):
    """Write the checkpoint for `step`. `optimizer` is one optimizer or a list of them."""
    meta = dict(meta or {})
    clash = sorted(set(meta) & set(RESERVED_META))
    if clash:
        raise ValueError(f"meta may not set the reserved fields {clash}")
    if not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    files = {"model": f"model_{step:06d}.safetensors"}
    minigrad.save(model.state_dict(), directory / files["model"])
    if optimizer is not None:
        files["optim"] = f"optim_{step:06d}.safetensors"
        arrays, rest = _split_optimizer_state(optimizer)
        minigrad.save(arrays, directory / files["optim"], metadata={"optimizer": json.dumps(rest)})

    record = {"step": int(step), "config": model.config.to_dict(), "loss": loss, "lr": lr,
              "format_version": FORMAT_VERSION,
              "files": {kind: {"name": name, "sha256": _sha256(directory / name)} for kind, name in files.items()},
              **meta}
    write_atomic(directory / f"meta_{step:06d}.json", json.dumps(record, indent=2).encode())
    return directory / f"meta_{step:06d}.json"


def load_checkpoint(directory, step=None):
    """Return (model, meta, optimizer_state) of `step` (the latest when None); optimizer_state is
    None, one optimizer state_dict, or a list of them, as saved. Any problem raises naming the file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    step = latest_step(directory) if step is None else step
    meta_path = directory / f"meta_{step:06d}.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no checkpoint for step {step}: {meta_path} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise ValueError(f"{meta_path}: format version {found!r}, this code reads version {FORMAT_VERSION}")
    try:
        config = GPTConfig.from_dict(meta["config"])
        files = meta["files"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{meta_path}: bad config or file list ({e})") from None

    for kind, entry in files.items():
        path = directory / entry["name"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (listed in {meta_path.name})")
        if _sha256(path) != entry["sha256"]:
            raise ValueError(f"{path} does not match the hash in {meta_path.name}: truncated or modified")

    with nn.skip_init():  # every weight is loaded below (strict), so drawing random ones is wasted time
        model = GPT(config)
    try:
        model.load_state_dict(minigrad.load(directory / files["model"]["name"]), strict=True)
    except ValueError as e:
        raise ValueError(f"{directory / files['model']['name']}: {e}") from None
    optimizer_state = None
    if "optim" in files:
        optim_path = directory / files["optim"]["name"]
        optimizer_state = _join_optimizer_state(minigrad.load(optim_path),
                                                minigrad.serialization.load_metadata(optim_path), optim_path)
    return model, meta, optimizer_state


def latest_step(directory):
    steps = [int(m.group(1)) for p in Path(directory).glob("meta_*.json")
             if (m := re.fullmatch(r"meta_(\d+)\.json", p.name))]
    if not steps:
        raise FileNotFoundError(f"no checkpoint (meta_*.json) in {directory}")
    return max(steps)


# ---- optimizer state: arrays go to safetensors, everything else to its JSON metadata ------------

def _split_optimizer_state(optimizer):
    optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    arrays, rest = {}, {"is_list": isinstance(optimizer, (list, tuple)), "optimizers": []}
    for i, opt in enumerate(optimizers):
        sd = opt.state_dict()
        scalars = {}
        for param, entries in sd["state"].items():
            for name, value in entries.items():
                if isinstance(value, np.ndarray):
                    arrays[f"{i}.{param}.{name}"] = value
                else:
                    scalars.setdefault(str(param), {})[name] = value
        rest["optimizers"].append({"param_groups": sd["param_groups"], "scalars": scalars})
    return arrays, rest


def _join_optimizer_state(arrays, metadata, path):
    try:
        rest = json.loads(metadata["optimizer"])
        states = [{"state": {int(k): dict(v) for k, v in opt["scalars"].items()}, "param_groups": opt["param_groups"]}
                  for opt in rest["optimizers"]]
        for key, value in arrays.items():
            i, param, name = key.split(".", 2)
            states[int(i)]["state"].setdefault(int(param), {})[name] = value
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: malformed optimizer state ({e})") from None
    return states if rest["is_list"] else states[0]


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
