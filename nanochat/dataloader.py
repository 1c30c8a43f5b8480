"""Text loading, train/val split and a resumable, seeded batch loader.

The loader cuts the token stream into windows of seq_len + 1 tokens whose
starts are seq_len apart (x and y share all but one token, as in nanoGPT), and
visits the windows in a fresh seeded order each epoch. Windows are shuffled,
never the tokens inside them, so every row is a contiguous slice of the text.
"""

from pathlib import Path

import numpy as np


def load_text(path=None):
    """The training text: CPython's bundled docs by default, or a file or folder of .txt files."""
    if path is None:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[key] for key in sorted(topics))
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.is_file())  # a folder named x.txt is no text
        if not files:
            raise ValueError(f"no .txt files in folder {path}")
        text = "\n\n".join(read_utf8(f) for f in files)
    elif path.is_file():
        text = read_utf8(path)
    else:
        raise ValueError(f"text path does not exist: {path}")
    if not text.strip():
        raise ValueError(f"no text in {path}")
    return text


def read_utf8(path):
    """A file's text; bytes that are not UTF-8 raise naming the file and the line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path} line {line}: not UTF-8 text (byte {data[e.start]:#04x})") from None


def split_train_val(tokens, val_fraction=0.1):
    """Split a token stream into (train, val); validation is the tail."""
    tokens = np.asarray(tokens)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = int(round(len(tokens) * val_fraction))
    if n_val < 1 or n_val >= len(tokens):
        raise ValueError(f"cannot split {len(tokens)} tokens with val_fraction={val_fraction}: one side would be empty")
    return tokens[:-n_val], tokens[-n_val:]


class EpochOrder:
    """Which items each batch takes, resumable: the items in a fresh seeded order each epoch, cut into
    batches_per_epoch batches of batch_size (the last items of an epoch may go unused). Its state is
    (epoch, position, seed): seeding with (seed, epoch) makes each epoch's order independent of how
    the run got there, so a resumed run draws exactly the batches an uninterrupted one would."""

    def __init__(self, n_items, batch_size, batches_per_epoch, seed=0):
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.n_items, self.batch_size, self.batches_per_epoch = n_items, batch_size, batches_per_epoch
        self.seed = int(seed)
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def _permutation(self):
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n_items)

    def next_indices(self):
        """The items of the next batch."""
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation()
        B = self.batch_size
        chosen = self._order[self.position * B:(self.position + 1) * B]
        self.position += 1
        return chosen

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state):
        try:
            epoch, position, seed = (state[k] for k in ("epoch", "position", "seed"))
        except (KeyError, TypeError):
            raise ValueError(f"loader state must be a dict with epoch, position and seed, got {state!r}") from None
        if not all(isinstance(v, int) and v >= 0 for v in (epoch, position, seed)):
            raise ValueError(f"epoch, position and seed must be non-negative ints, got {state!r}")
        if position > self.batches_per_epoch:
            raise ValueError(f"position {position} is past the {self.batches_per_epoch} batches of an epoch")
        self.epoch, self.position, self.seed = epoch, position, seed
        self._order = self._permutation()


class DataLoader:
    """Endless (x, y) batches of shape (batch_size, seq_len), resumable from state_dict()."""

    def __init__(self, tokens, batch_size, seq_len, seed=0):
        tokens = np.asarray(tokens)
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens must be a 1-D integer array, got shape {tokens.shape} dtype {tokens.dtype}")
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
        needed = batch_size * seq_len + 1
        if len(tokens) < needed:
            raise ValueError(
                f"not enough tokens for one batch: batch_size={batch_size} x seq_len={seq_len} "
                f"needs {needed} tokens, got {len(tokens)}"
            )
        self.tokens = tokens.astype(np.int64, copy=False)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.starts = np.arange((len(tokens) - 1) // seq_len, dtype=np.int64) * seq_len
        self.batches_per_epoch = len(self.starts) // batch_size
        self.order = EpochOrder(len(self.starts), batch_size, self.batches_per_epoch, seed)

    def next_batch(self):
        starts = self.starts[self.order.next_indices()]
        windows = self.tokens[starts[:, None] + np.arange(self.seq_len + 1)]
        return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])

    def __iter__(self):
        return self

    def __next__(self):
        return self.next_batch()

    def state_dict(self):
        return self.order.state_dict()

    def load_state_dict(self, state):
        self.order.load_state_dict(state)
