"""Optimizer base class with PyTorch-style parameter groups and a checkpointable state dict.

Parameters are minigrad Tensors whose ``.data`` arrays are updated in place (models and
optimizers share those arrays). ``state_dict()`` holds only NumPy arrays and JSON-able
scalars, so a checkpoint can store arrays in safetensors and everything else in JSON.
"""
from __future__ import annotations

import abc
import numbers
from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np


class _ParamState(MutableMapping):
    """Per-parameter state keyed by parameter identity (Tensors need not be hashable)."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Any, dict]] = {}

    def __getitem__(self, param) -> dict:
        return self._entries[id(param)][1]

    def __setitem__(self, param, value: dict) -> None:
        # Holding the parameter keeps its id from being reused by another object.
        self._entries[id(param)] = (param, value)

    def __delitem__(self, param) -> None:
        del self._entries[id(param)]

    def __iter__(self) -> Iterator:
        return (param for param, _ in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


def _is_json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, numbers.Real, str))


def _to_python(value: Any) -> Any:
    """NumPy scalars -> Python scalars so the value survives json.dumps."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return tuple(_to_python(v) for v in value)
    if isinstance(value, list):
        return [_to_python(v) for v in value]
    return value


def _is_json_hyperparam(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_json_scalar(v) for v in value)
    return _is_json_scalar(value)


class Optimizer(abc.ABC):
    """Base class: holds ``param_groups`` and per-parameter ``state``; subclasses implement ``step``."""

    def __init__(self, params, defaults: dict) -> None:
        self.defaults = dict(defaults)
        self.state = _ParamState()
        self.param_groups: list[dict] = []
        if hasattr(params, "data") and isinstance(getattr(params, "data"), np.ndarray):
            raise TypeError("params must be an iterable of Tensors or dicts, got a single Tensor")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group; unspecified hyperparameters take the optimizer's defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        if hasattr(params, "data") and isinstance(getattr(params, "data"), np.ndarray):
            params = [params]
        params = list(params)
        for p in params:
            if not isinstance(getattr(p, "data", None), np.ndarray):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter group contains the same parameter more than once")
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in existing for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        group = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        group["params"] = params
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.fill(0)

    @abc.abstractmethod
    def step(self, closure=None):
        """Update every parameter that has a gradient; returns ``closure()`` if given."""

    def _params(self) -> list:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict:
        """Snapshot with parameters replaced by their index in group order; arrays are copied."""
        index = {id(p): i for i, p in enumerate(self._params())}
        groups = []
        for group in self.param_groups:
            packed = {k: _to_python(v) for k, v in group.items() if k != "params"}
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {}
        for p, entries in self.state.items():
            state[index[id(p)]] = {
                name: value.copy() if isinstance(value, np.ndarray) else _to_python(value)
                for name, value in entries.items()
            }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Validate everything first, then copy in; on any problem raise ValueError, unchanged."""
        problems = self._validate_state_dict(state_dict)
        if problems:
            raise ValueError("cannot load optimizer state:\n  " + "\n  ".join(problems))
        saved_groups = state_dict["param_groups"]
        # Saved indices map onto current parameters by position, as in PyTorch.
        by_saved_index = {}
        for saved, group in zip(saved_groups, self.param_groups):
            for idx, p in zip(saved["params"], group["params"]):
                by_saved_index[int(idx)] = p
        new_state = _ParamState()
        for key, entries in state_dict["state"].items():
            new_state[by_saved_index[int(key)]] = {
                name: np.array(value, copy=True) if isinstance(value, np.ndarray) else value
                for name, value in entries.items()
            }
        for saved, group in zip(saved_groups, self.param_groups):
            for k, v in saved.items():
                if k == "params":
                    continue
                # JSON turns tuples (e.g. betas) into lists; keep the type the group already uses.
                group[k] = tuple(v) if isinstance(group.get(k), tuple) and isinstance(v, list) else v
        self.state = new_state

    def _validate_state_dict(self, state_dict: Any) -> list[str]:
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
            return ["state_dict must be a dict with keys 'state' and 'param_groups'"]
        saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(saved_groups, (list, tuple)) or not isinstance(saved_state, dict):
            return ["'param_groups' must be a list and 'state' a dict"]
        if len(saved_groups) != len(self.param_groups):
            return [f"state_dict has {len(saved_groups)} param groups, optimizer has {len(self.param_groups)}"]
        problems: list[str] = []
        params_of_index: dict[int, Any] = {}
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if not isinstance(saved, dict) or not isinstance(saved.get("params"), (list, tuple)):
                problems.append(f"param group {g} must be a dict with a 'params' list")
                continue
            if len(saved["params"]) != len(group["params"]):
                problems.append(
                    f"param group {g} has {len(saved['params'])} params in state_dict, "
                    f"{len(group['params'])} in optimizer"
                )
                continue
            for idx, p in zip(saved["params"], group["params"]):
                if not isinstance(idx, numbers.Integral) or isinstance(idx, bool):
                    problems.append(f"param group {g} has a non-integer param index {idx!r}")
                elif int(idx) in params_of_index:
                    problems.append(f"param index {idx} appears more than once")
                else:
                    params_of_index[int(idx)] = p
            for k, v in saved.items():
                if k != "params" and not _is_json_hyperparam(v):
                    problems.append(f"param group {g} hyperparameter {k!r} is not a JSON-able scalar")
        for key, entries in saved_state.items():
            try:
                idx = int(key)  # JSON stores int keys as strings
            except (TypeError, ValueError):
                problems.append(f"state key {key!r} is not a parameter index")
                continue
            if idx not in params_of_index:
                problems.append(f"state for param index {idx} which no param group lists")
                continue
            if not isinstance(entries, dict):
                problems.append(f"state for param {idx} must be a dict")
                continue
            p = params_of_index[idx]
            for name, value in entries.items():
                if isinstance(value, np.ndarray):
                    if value.shape != p.data.shape:
                        problems.append(
                            f"state[{idx}][{name!r}] has shape {value.shape}, param has {p.data.shape}"
                        )
                    if value.dtype != p.data.dtype:
                        problems.append(
                            f"state[{idx}][{name!r}] has dtype {value.dtype}, param has {p.data.dtype}"
                        )
                elif not _is_json_scalar(value):
                    problems.append(f"state[{idx}][{name!r}] is a {type(value).__name__}, not an array or scalar")
        return problems
