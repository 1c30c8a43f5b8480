"""Save and load named arrays as safetensors files (no pickle).

Writing goes through ``safetensors.numpy`` into a temporary file in the target directory
followed by ``os.replace``, so a reader never sees a half-written checkpoint. Loading
validates the header first so that truncated or corrupt files fail with a message naming
the path. bfloat16 entries (e.g. from ``safetensors.torch.save_file``) are widened to
float32 by hand because NumPy has no bfloat16 dtype.
"""
from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

# Element sizes of the safetensors dtypes, used to check each entry's byte range.
_DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
# what load() can turn into NumPy arrays (NumPy has no float8; BF16 is widened by hand)
_LOADABLE = set(_DTYPE_SIZES) - {"F8_E5M2", "F8_E4M3"}
# The format caps the JSON header at 100 MB; a larger length field means a corrupt file.
_MAX_HEADER = 100_000_000


def _as_array(value) -> np.ndarray:
    data = value if isinstance(value, np.ndarray) else getattr(value, "data", None)
    if not isinstance(data, np.ndarray):
        raise TypeError(f"expected an np.ndarray or Tensor, got {type(value).__name__}")
    # safetensors writes the raw buffer, so views (transposes, slices) must be made contiguous.
    # (np.ascontiguousarray would turn 0-d arrays into shape (1,)).
    return data if data.flags.c_contiguous else data.copy(order="C")


def save(state: dict, path, metadata: dict[str, str] | None = None) -> None:
    """Atomically write ``state`` (name -> ndarray or Tensor) to ``path`` with optional string metadata."""
    path = Path(path)
    if not all(isinstance(k, str) for k in state):
        raise TypeError("state keys must be strings")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("metadata must map strings to strings")
    arrays = {name: _as_array(value) for name, value in state.items()}
    write_atomic(path, safetensors.numpy.save(arrays, metadata=metadata))


def write_atomic(path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old file or the new one.
    The file gets the mode the umask allows (as open() would give it), and an error (a full disk, a
    read-only directory) names `path` and leaves neither the temporary file nor a partial `path`."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_directory(path.parent)  # the rename itself survives a power cut
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_header(path: Path) -> tuple[dict, int]:
    """Return (header dict, byte offset of the data section), validating sizes against the file."""
    if not path.is_file():
        raise FileNotFoundError(f"no safetensors file at {path}")
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: not a safetensors file (only {file_size} bytes)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_HEADER, file_size - 8):
            raise ValueError(f"{path}: header length {header_len} exceeds file size {file_size}; truncated or corrupt")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: header is not valid JSON ({e}); corrupt file") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object; corrupt file")
    data_start = 8 + header_len
    data_size = file_size - data_start
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            if not all(type(n) is int and n >= 0 for n in (*shape, begin, end)):
                raise TypeError
            expected = math.prod(shape) * _DTYPE_SIZES[dtype]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: malformed header entry for {name!r}") from None
        if dtype not in _LOADABLE:
            raise ValueError(f"{path}: entry {name!r} has dtype {dtype}, which minigrad cannot load "
                             f"(it reads {', '.join(sorted(_LOADABLE))})")
        if end - begin != expected or not 0 <= begin <= end:
            raise ValueError(f"{path}: entry {name!r} has data_offsets {begin}..{end}, expected {expected} bytes")
        if end > data_size:
            raise ValueError(f"{path}: entry {name!r} ends at byte {end} but data section has {data_size}; truncated")
    return header, data_start


def load(path) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file into writable NumPy arrays (bfloat16 -> float32)."""
    path = Path(path)
    header, data_start = _read_header(path)
    out: dict[str, np.ndarray] = {}
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            for name in f.keys():
                if header[name]["dtype"] != "BF16":
                    out[name] = np.array(f.get_tensor(name), copy=True)
    except safetensors.SafetensorError as e:
        raise ValueError(f"{path}: cannot read safetensors file ({e})") from None
    with open(path, "rb") as fh:
        for name, info in header.items():
            if name == "__metadata__" or info["dtype"] != "BF16":
                continue
            begin, end = info["data_offsets"]
            fh.seek(data_start + begin)
            bits = np.frombuffer(fh.read(end - begin), dtype="<u2")
            # bfloat16 is the top half of a float32: shift the bits up and reinterpret.
            out[name] = (bits.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])
    return out


def load_header(path) -> dict:
    """The validated header: {name: {"dtype", "shape", "data_offsets"}} (and "__metadata__" if any),
    read without touching the data, so sizes can be checked before anything is allocated."""
    return _read_header(Path(path))[0]


def load_metadata(path) -> dict[str, str]:
    """Return the header's ``__metadata__`` string map ({} when the file has none)."""
    header, _ = _read_header(Path(path))
    return dict(header.get("__metadata__") or {})
