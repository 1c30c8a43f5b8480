"""Tests for text loading, the train/val split and the resumable batch loader."""

import json

import numpy as np
import pytest

from nanochat.dataloader import DataLoader, load_text, split_train_val

# distinct values, so a row's content says exactly where in the stream it came from
STREAM = np.arange(1000, 1000 + 203)


def batches(loader, n):
    return [loader.next_batch() for _ in range(n)]


def test_default_corpus():
    from pydoc_data.topics import topics

    text = load_text()
    assert len(text) > 400_000
    first = sorted(topics)[0]
    assert text.startswith(topics[first])


def test_load_file_and_folder(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "skip.md").write_text("ignored")
    assert load_text(tmp_path) == "first\n\nsecond"
    assert load_text(tmp_path / "b.txt") == "second"


@pytest.mark.parametrize("setup", ["missing", "empty_file", "empty_folder", "blank_file"])
def test_load_errors_name_the_path(tmp_path, setup):
    path = tmp_path / "data.txt"
    if setup == "empty_file":
        path.write_text("")
    elif setup == "blank_file":
        path.write_text("  \n")
    elif setup == "empty_folder":
        path = tmp_path / "folder"
        path.mkdir()
    with pytest.raises(ValueError, match=str(path)) as info:
        load_text(path)
    assert "\n" not in str(info.value)


def test_split_train_val_tail_is_val():
    train, val = split_train_val(np.arange(100), val_fraction=0.1)
    assert np.array_equal(train, np.arange(90)) and np.array_equal(val, np.arange(90, 100))
    with pytest.raises(ValueError):
        split_train_val(np.arange(100), val_fraction=1.0)
    with pytest.raises(ValueError, match="empty"):
        split_train_val(np.arange(3), val_fraction=0.01)


def test_shapes_dtype_and_shift():
    x, y = DataLoader(STREAM, batch_size=4, seq_len=8, seed=0).next_batch()
    assert x.shape == y.shape == (4, 8)
    assert x.dtype == y.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])


def test_rows_are_contiguous_windows_at_stride_starts():
    loader = DataLoader(STREAM, batch_size=4, seq_len=8, seed=3)
    for x, y in batches(loader, 2 * loader.batches_per_epoch):
        for row_x, row_y in zip(x, y):
            start = row_x[0] - STREAM[0]
            assert start % 8 == 0
            assert np.array_equal(row_x, STREAM[start:start + 8])
            assert np.array_equal(row_y, STREAM[start + 1:start + 9])


def test_epoch_covers_each_window_once_and_is_shuffled():
    loader = DataLoader(STREAM, batch_size=5, seq_len=8, seed=1)
    # (203 - 1) // 8 = 25 windows -> 5 batches of 5
    assert loader.batches_per_epoch == 5
    firsts = np.concatenate([x[:, 0] for x, _ in batches(loader, 5)]) - STREAM[0]
    assert sorted(firsts) == list(range(0, 200, 8))
    assert list(firsts) != sorted(firsts)


def test_same_seed_same_batches_other_seed_differs():
    a = batches(DataLoader(STREAM, 4, 8, seed=7), 6)
    b = batches(DataLoader(STREAM, 4, 8, seed=7), 6)
    c = batches(DataLoader(STREAM, 4, 8, seed=8), 6)
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c))


def test_epoch_rollover_reshuffles():
    loader = DataLoader(STREAM, batch_size=5, seq_len=8, seed=2)
    first = np.concatenate([x[:, 0] for x, _ in batches(loader, 5)])
    assert loader.state_dict() == {"epoch": 0, "position": 5, "seed": 2}
    second = np.concatenate([x[:, 0] for x, _ in batches(loader, 5)])
    assert loader.state_dict() == {"epoch": 1, "position": 5, "seed": 2}
    assert sorted(first) == sorted(second)
    assert list(first) != list(second)


@pytest.mark.parametrize("stop", [0, 1, 4, 5, 6, 12])
def test_resume_matches_uninterrupted(stop):
    reference = batches(DataLoader(STREAM, 4, 8, seed=11), stop + 8)
    interrupted = DataLoader(STREAM, 4, 8, seed=11)
    batches(interrupted, stop)
    state = json.loads(json.dumps(interrupted.state_dict()))
    resumed = DataLoader(STREAM, 4, 8, seed=0)
    resumed.load_state_dict(state)
    for (rx, ry), (x, y) in zip(reference[stop:], batches(resumed, 8)):
        assert np.array_equal(rx, x) and np.array_equal(ry, y)


def test_iterates():
    loader = DataLoader(STREAM, 4, 8, seed=0)
    x, _ = next(iter(loader))
    assert np.array_equal(x, DataLoader(STREAM, 4, 8, seed=0).next_batch()[0])


def test_too_short_says_needed_and_available():
    with pytest.raises(ValueError, match=r"needs 33 tokens, got 32"):
        DataLoader(np.arange(32), batch_size=4, seq_len=8, seed=0)
    DataLoader(np.arange(33), batch_size=4, seq_len=8, seed=0).next_batch()


@pytest.mark.parametrize("kwargs", [
    {"tokens": np.zeros((4, 50), dtype=np.int64)},
    {"tokens": np.linspace(0, 1, 100)},
    {"batch_size": 0},
    {"seq_len": 0},
    {"seed": -1},
])
def test_constructor_errors(kwargs):
    args = {"tokens": STREAM, "batch_size": 4, "seq_len": 8, "seed": 0, **kwargs}
    with pytest.raises(ValueError):
        DataLoader(**args)


@pytest.mark.parametrize("state", [
    {"epoch": 0, "position": 0},
    {"epoch": -1, "position": 0, "seed": 0},
    {"epoch": 0, "position": 99, "seed": 0},
    {"epoch": 0, "position": 1.5, "seed": 0},
    None,
])
def test_bad_state_dict(state):
    with pytest.raises(ValueError):
        DataLoader(STREAM, 4, 8, seed=0).load_state_dict(state)
