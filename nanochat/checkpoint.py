"""Checkpoints: model weights and optimizer state in safetensors, metadata in JSON. No pickle.

A checkpoint at step N is three files in one directory:
  model_N.safetensors  the GPT's state_dict, PyTorch nanochat's names and layouts
  optim_N.safetensors  optimizer moments (arrays), with the rest of their state as JSON metadata
  meta_N.json          step, config, loss, lr, format version, the caller's extras, file hashes
Every file is written to a temporary name and renamed, and meta is written last: a crash
mid-save leaves the previous checkpoint intact, and a step without meta does not count. A save that
fails (a full disk) removes what it wrote. Loading checks the meta's structure, confines its file
names to the directory, checks the hashes and then the weights' header against the config before
anything is allocated, so an edited or corrupt checkpoint is one ValueError naming the file.
A step is kept by `prune_checkpoints` when a file named keep_<step> marks it.
"""
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

import minigrad
from minigrad import nn
from minigrad.serialization import load_header, write_atomic
from nanochat.gpt import GPT, GPTConfig
from nanochat.sizing import check_fits_in_memory
from nanochat.tokenizer import Tokenizer

FORMAT_VERSION = 1
RESERVED_META = ("step", "config", "loss", "lr", "format_version", "files")
FILE_KINDS = ("model", "optim")


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

    meta_path = directory / f"meta_{step:06d}.json"
    meta_path.unlink(missing_ok=True)  # re-saving a step: it does not count until its new meta is written
    files = {"model": f"model_{step:06d}.safetensors"}
    if optimizer is not None:
        files["optim"] = f"optim_{step:06d}.safetensors"
    try:
        minigrad.save(model.state_dict(), directory / files["model"])
        if optimizer is not None:
            arrays, rest = _split_optimizer_state(optimizer)
            minigrad.save(arrays, directory / files["optim"], metadata={"optimizer": json.dumps(rest)})
        record = {"step": int(step), "config": model.config.to_dict(), "loss": loss, "lr": lr,
                  "format_version": FORMAT_VERSION,
                  "files": {kind: {"name": name, "sha256": _sha256(directory / name)} for kind, name in files.items()},
                  **meta}
        write_atomic(meta_path, json.dumps(record, indent=2).encode())
    except BaseException:
        for name in files.values():  # no weights without meta are left behind
            (directory / name).unlink(missing_ok=True)
        raise
    return meta_path


def load_checkpoint(directory, step=None, training=False):
    """Return (model, meta, optimizer_state) of `step` (the latest when None); optimizer_state is
    None, one optimizer state_dict, or a list of them, as saved. Any problem raises naming the file.
    `training` sizes the memory check for training (gradients and optimizer state too)."""
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
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{meta_path}: bad config ({e})") from None
    paths = _listed_files(directory, meta_path, meta.get("files"))

    for kind, (path, sha256) in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (listed in {meta_path.name})")
        if _sha256(path) != sha256:
            raise ValueError(f"{path} does not match the hash in {meta_path.name}: truncated or modified")
    model_path = paths["model"][0]
    _check_weights_match_config(load_header(model_path), config, model_path)
    check_fits_in_memory(config, training=training)

    with nn.skip_init():  # every weight is loaded below (strict), so drawing random ones is wasted time
        model = GPT(config)
    try:
        model.load_state_dict(minigrad.load(model_path), strict=True)
    except ValueError as e:
        raise ValueError(f"{model_path}: {e}") from None
    optimizer_state = None
    if "optim" in paths:
        optim_path = paths["optim"][0]
        optimizer_state = _join_optimizer_state(minigrad.load(optim_path),
                                                minigrad.serialization.load_metadata(optim_path), optim_path)
    return model, meta, optimizer_state


def _listed_files(directory, meta_path, files):
    """{kind: (path, sha256)} from meta's "files", each name a plain file name inside `directory`."""
    if not isinstance(files, dict) or "model" not in files or not set(files) <= set(FILE_KINDS):
        raise ValueError(f"{meta_path}: \"files\" must be an object listing model (and optionally optim), "
                         f"got {files!r:.100}")
    paths = {}
    for kind, entry in files.items():
        name = entry.get("name") if isinstance(entry, dict) else None
        sha256 = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(sha256, str):
            raise ValueError(f"{meta_path}: files.{kind} needs a name and a sha256, got {entry!r:.100}")
        if name != Path(name).name or name.startswith("."):
            raise ValueError(f"{meta_path}: files.{kind} names {name!r}, outside the checkpoint directory")
        paths[kind] = (directory / name, sha256)
    return paths


def latest_step(directory):
    steps = saved_steps(directory)
    if not steps:
        raise FileNotFoundError(f"no checkpoint (meta_*.json) in {directory}")
    return steps[-1]


def saved_steps(directory):
    """The steps that have a checkpoint (a meta file), in increasing order."""
    return sorted(int(m.group(1)) for p in Path(directory).glob("meta_*.json")
                  if (m := re.fullmatch(r"meta_(\d+)\.json", p.name)))


def prune_checkpoints(directory, keep_last):
    """Delete all but the newest `keep_last` checkpoints, sparing any step marked by a file named
    keep_<step> (e.g. `touch runs/base/keep_100`). Returns the steps deleted."""
    directory = Path(directory)
    marked = {int(m.group(1)) for p in directory.glob("keep_*") if (m := re.fullmatch(r"keep_(\d+)", p.name))}
    doomed = [step for step in saved_steps(directory)[:-keep_last] if step not in marked]
    for step in doomed:
        delete_checkpoint(directory, step)
    return doomed


def delete_checkpoint(directory, step, into=None):
    """Remove (or, with `into`, move there) the files of `step`; meta goes first, so an interruption
    leaves at worst weights without meta, which do not count and the next run's lock removes."""
    directory = Path(directory)
    for name in (f"meta_{step:06d}.json", f"model_{step:06d}.safetensors", f"optim_{step:06d}.safetensors"):
        path = directory / name
        if into is not None and path.exists():
            Path(into).mkdir(exist_ok=True)
            os.replace(path, Path(into) / name)
        else:
            path.unlink(missing_ok=True)


def _check_weights_match_config(header, config, path):
    """The config's sizes against the shapes in the weight file's header, before the model is built
    (a config edited to 10**7 layers must not allocate them). load_state_dict checks the rest."""
    c = config
    layers = {int(m.group(1)) for name in header if (m := re.match(r"transformer\.h\.(\d+)\.", name))}
    if len(layers) != c.n_layer:
        raise ValueError(f"{path} holds {len(layers)} layers but the config says n_layer = {c.n_layer}")
    V = c.padded_vocab_size
    expected = {"transformer.wte.weight": [V, c.n_embd], "lm_head.weight": [V, c.n_embd]}
    if c.n_layer:
        expected["transformer.h.0.attn.c_q.weight"] = [c.n_head * c.head_dim, c.n_embd]
        expected["transformer.h.0.attn.c_k.weight"] = [c.n_kv_head * c.head_dim, c.n_embd]
    for name, shape in expected.items():
        found = header.get(name, {}).get("shape")  # a missing tensor is load_state_dict's to report
        if found is not None and found != shape:
            raise ValueError(f"{path}: {name}: expected shape {shape} for the config ({V} vocabulary rows, "
                             f"n_embd {c.n_embd}, n_head {c.n_head}, n_kv_head {c.n_kv_head}), got {found}")


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
        states = []
        for opt in rest["optimizers"]:
            scalars, groups = opt["scalars"], opt["param_groups"]
            if not isinstance(scalars, dict) or not all(isinstance(v, dict) for v in scalars.values()):
                raise TypeError(f"scalars must map parameter numbers to objects, got {scalars!r:.60}")
            if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
                raise TypeError(f"param_groups must be a list of objects, got {groups!r:.60}")
            states.append({"state": {int(k): dict(v) for k, v in scalars.items()}, "param_groups": groups})
        for key, value in arrays.items():
            i, param, name = key.split(".", 2)
            states[int(i)]["state"].setdefault(int(param), {})[name] = value
        return states if rest["is_list"] is True else states[0]
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"{path}: malformed optimizer state ({e})") from None


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_model_and_tokenizer(directory, step=None):
    """(model, tokenizer, meta) of a checkpoint directory written by `nanochat train` or `sft`."""
    model, meta, _ = load_checkpoint(directory, step)
    tokenizer = Tokenizer.load(directory)
    check_vocab(tokenizer, model.config)
    return model, tokenizer, meta


def check_vocab(tokenizer, config):
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model expects {config.vocab_size}")
