"""nn.Module: parameters and submodules found by walking attributes, and state_dict loading."""
from collections import OrderedDict

import numpy as np

from minigrad._tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates."""

    def __init__(self, data, requires_grad=True, dtype=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Buffer(Tensor):
    """A Tensor a Module keeps in its state_dict but does not train (BatchNorm's running statistics)."""

    def __init__(self, data, dtype=None):
        super().__init__(data, dtype=dtype)


class Module:
    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- traversal: attributes in definition order, lists and dicts included ------------------
    def _children(self):
        for name, value in vars(self).items():
            yield from _walk(name, value)

    def named_parameters(self, prefix=""):
        seen = set()
        for name, value in self._children():
            full = prefix + name
            if isinstance(value, Buffer):
                continue
            if isinstance(value, Parameter):
                if id(value) not in seen:
                    seen.add(id(value))
                    yield full, value
            else:
                for sub_name, p in value.named_parameters(full + "."):
                    if id(p) not in seen:
                        seen.add(id(p))
                        yield sub_name, p

    def named_buffers(self, prefix=""):
        for name, value in self._children():
            if isinstance(value, Buffer):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_buffers(prefix + name + ".")

    def _named_state(self, prefix="", seen=None):
        """Parameters and buffers, everything a state_dict holds, in attribute order (PyTorch's for the
        usual layers: BatchNorm's weight and bias before its running statistics); shared ones once."""
        seen = set() if seen is None else seen
        for name, value in self._children():
            if isinstance(value, Module):
                yield from value._named_state(prefix + name + ".", seen)
            elif id(value) not in seen:
                seen.add(id(value))
                yield prefix + name, value

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix=""):
        yield prefix.rstrip("."), self
        for name, value in self._children():
            if isinstance(value, Module):
                yield from value.named_modules(prefix + name + ".")

    def modules(self):
        return [m for _, m in self.named_modules()]

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())

    # ---- modes and gradients -------------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self):
        return OrderedDict((name, p.data.copy()) for name, p in self._named_state())

    def load_state_dict(self, state, strict=True):
        """Copy values into the existing parameter arrays (so an optimizer built before stays valid).
        Every key, shape and dtype is checked before anything is written: on error nothing changes."""
        own = dict(self._named_state())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = []
        for name in own.keys() & state.keys():
            value = np.asarray(state[name].data if isinstance(state[name], Tensor) else state[name])
            if value.shape != own[name].shape or value.dtype != own[name].dtype:
                mismatched.append(f"{name}: expected {own[name].shape} {own[name].dtype}, "
                                  f"got {value.shape} {value.dtype}")
        problems = mismatched + ([f"missing: {', '.join(missing)}"] if strict and missing else []) \
            + ([f"unexpected: {', '.join(unexpected)}"] if strict and unexpected else [])
        if problems:
            raise ValueError(f"load_state_dict failed for {type(self).__name__}, nothing was loaded:\n  "
                             + "\n  ".join(problems))
        for name in own.keys() & state.keys():
            own[name].data[...] = state[name].data if isinstance(state[name], Tensor) else state[name]
        return missing, unexpected

    def __repr__(self):
        lines = [f"  ({name}): " + repr(value).replace("\n", "\n  ")
                 for name, value in self._children() if isinstance(value, Module)]
        return f"{type(self).__name__}(" + ("\n" + "\n".join(lines) + "\n" if lines else "") + ")"


def _walk(name, value):
    """(name, Parameter or Module) pairs under one attribute, descending into lists and dicts."""
    if isinstance(value, (Parameter, Buffer, Module)):
        yield name, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk(f"{name}.{i}", item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(f"{name}.{key}", item)


class ModuleList(Module):
    def __init__(self, modules=()):
        self._modules = list(modules)

    def _children(self):
        for i, m in enumerate(self._modules):
            yield str(i), m

    def __getitem__(self, i): return self._modules[i]
    def __len__(self): return len(self._modules)
    def __iter__(self): return iter(self._modules)
    def append(self, module): self._modules.append(module); return self


class ModuleDict(Module):
    def __init__(self, modules=None):
        self._modules = dict(modules or {})

    def _children(self):
        yield from self._modules.items()

    def __getitem__(self, key): return self._modules[key]
    def __setitem__(self, key, module): self._modules[key] = module
    def __contains__(self, key): return key in self._modules
    def __len__(self): return len(self._modules)
    def __iter__(self): return iter(self._modules)
    def keys(self): return self._modules.keys()
    def items(self): return self._modules.items()
    def values(self): return self._modules.values()
