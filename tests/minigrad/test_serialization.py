"""safetensors save/load: bit-exact round trips, bfloat16 widening, metadata, clear errors, atomic writes."""
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file as torch_save_file

from minigrad import Tensor
from minigrad.serialization import load, load_metadata, save


def test_round_trip_is_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    state = {
        "f32": rng.standard_normal((4, 5)).astype(np.float32),
        "f64": rng.standard_normal(7),
        "f16": rng.standard_normal((2, 3, 2)).astype(np.float16),
        "i64": rng.integers(-(2**62), 2**62, size=(3, 3), dtype=np.int64),
        "special": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45], np.float32),
        "scalar": np.array(3.5, np.float64),
    }
    path = tmp_path / "ckpt.safetensors"
    save(state, path)
    out = load(path)
    assert out.keys() == state.keys()
    for name, arr in state.items():
        assert out[name].dtype == arr.dtype and out[name].shape == arr.shape
        assert out[name].tobytes() == arr.tobytes(), name
        assert out[name].flags.writeable


def test_tensors_and_non_contiguous_arrays(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    views = {"t": base.T, "strided": base[:, ::2], "tensor": Tensor(base[1:3])}
    assert not views["t"].flags.c_contiguous and not views["strided"].flags.c_contiguous
    save(views, tmp_path / "v.safetensors")
    out = load(tmp_path / "v.safetensors")
    np.testing.assert_array_equal(out["t"], base.T)
    np.testing.assert_array_equal(out["strided"], base[:, ::2])
    np.testing.assert_array_equal(out["tensor"], base[1:3])


def test_bfloat16_from_torch_widens_to_float32(tmp_path):
    values = torch.tensor([[1.0, -2.5, 3.140625], [1e30, -1e-30, 0.0]], dtype=torch.float32)
    path = tmp_path / "bf16.safetensors"
    torch_save_file({"w": values.to(torch.bfloat16), "b": torch.arange(3, dtype=torch.float32)}, str(path),
                    metadata={"format": "pt"})
    out = load(path)
    assert out["w"].dtype == np.float32 and out["w"].shape == (2, 3)
    np.testing.assert_array_equal(out["w"], values.to(torch.bfloat16).to(torch.float32).numpy())
    assert out["w"][0, 2] == 3.140625  # exactly representable in bf16, so no rounding
    np.testing.assert_array_equal(out["b"], [0.0, 1.0, 2.0])
    assert load_metadata(path) == {"format": "pt"}


def test_metadata_round_trip(tmp_path):
    path = tmp_path / "m.safetensors"
    meta = {"step": "120", "config": '{"n_layer": 2}'}
    save({"x": np.zeros(2, np.float32)}, path, metadata=meta)
    assert load_metadata(path) == meta
    save({"x": np.zeros(2, np.float32)}, path)
    assert load_metadata(path) == {}


def test_overwrite_replaces_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save({"a": np.ones(3, np.float32)}, path)
    save({"b": np.zeros(2, np.float64)}, path)
    assert list(load(path)) == ["b"]
    assert os.listdir(tmp_path) == ["w.safetensors"]


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load(path)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_metadata(path)


def _saved_bytes(tmp_path):
    path = tmp_path / "good.safetensors"
    save({"a": np.arange(10, dtype=np.float32), "b": np.ones((3, 3))}, path)
    return path.read_bytes()


@pytest.mark.parametrize("cut", [0, 5, 8, 20, -1, -40])
def test_truncated_file_raises_naming_path(tmp_path, cut):
    data = _saved_bytes(tmp_path)
    path = tmp_path / "trunc.safetensors"
    path.write_bytes(data[:cut])
    with pytest.raises(ValueError, match="trunc.safetensors"):
        load(path)


@pytest.mark.parametrize("corruption", ["header_json", "huge_length", "offsets", "dtype"])
def test_corrupt_file_raises_naming_path(tmp_path, corruption):
    data = bytearray(_saved_bytes(tmp_path))
    n = int.from_bytes(data[:8], "little")
    header = data[8:8 + n].decode()
    if corruption == "header_json":
        data[8] = ord("#")
    elif corruption == "huge_length":
        data[:8] = (2**40).to_bytes(8, "little")
    elif corruption == "offsets":
        data[8:8 + n] = header.replace("[0,40]", "[0,44]").encode().ljust(n) if "[0,40]" in header else \
            header.replace("[72,112]", "[72,116]").encode().ljust(n)
    elif corruption == "dtype":
        data[8:8 + n] = header.replace('"F32"', '"Q32"').encode()
    assert bytes(data) != _saved_bytes(tmp_path)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad.safetensors"):
        load(path)


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    save({"a": np.ones(3, np.float32)}, path)

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save({"a": np.zeros(3, np.float32)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]
    np.testing.assert_array_equal(load(path)["a"], np.ones(3, np.float32))


def test_rejects_bad_inputs(tmp_path):
    with pytest.raises(TypeError):
        save({"a": [1.0, 2.0]}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError):
        save({"a": np.ones(2)}, tmp_path / "x.safetensors", metadata={"step": 3})
    assert os.listdir(tmp_path) == []
