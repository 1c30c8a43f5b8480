"""Read nanochat's tokenizer.pkl (a pickled tiktoken.Encoding) without running code from the file.

pickle.load runs whatever callables a file names, so a downloaded tokenizer.pkl could run
anything. This unpickler admits one global, tiktoken.core.Encoding, and even that is not
constructed: it is replaced by a record that keeps the state the pickle hands it, which is then
checked field by field (types, ranks, special tokens) before a Tokenizer is built from it.
"""
import io
import pickle

from nanochat.tokenizer import SPECIAL_TOKENS, Tokenizer


class UnsafePickleError(ValueError):
    pass


class _EncodingState:
    """Stands in for tiktoken.core.Encoding: pickle's BUILD hands it the encoding's state."""

    def __setstate__(self, state):
        self.state = state


class _TiktokenUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("tiktoken.core", "Encoding"):
            return _EncodingState
        raise UnsafePickleError(f"refusing to load {module}.{name}: a tokenizer.pkl may only reference "
                                f"tiktoken.core.Encoding, so this file is not a nanochat tokenizer (or is malicious)")

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing a pickle with persistent ids: not a nanochat tokenizer")


def load_tokenizer_pickle(path):
    """A Tokenizer from nanochat's tokenizer.pkl; anything but a plain tiktoken Encoding raises."""
    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise FileNotFoundError(f"cannot read {path}: {e.strerror}") from None
    try:
        record = _TiktokenUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except Exception as e:  # a truncated or garbled pickle raises many kinds of errors
        raise ValueError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    state = getattr(record, "state", None) if isinstance(record, _EncodingState) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a pickled tiktoken Encoding with its vocabulary (a registered "
                         f"encoding's bare name, or another object)")
    return tokenizer_from_encoding_state(state, path)


def tokenizer_from_encoding_state(state, where):
    """Check a tiktoken Encoding's state (name, pat_str, mergeable_ranks, special_tokens) and build
    our Tokenizer; the special tokens must be nanochat's, in nanochat's order, after the ranks."""
    ranks, specials, pattern = state.get("mergeable_ranks"), state.get("special_tokens"), state.get("pat_str")
    if not isinstance(pattern, str):
        raise ValueError(f"{where}: the encoding has no string pat_str")
    if not isinstance(ranks, dict) or not all(isinstance(k, bytes) and type(v) is int for k, v in ranks.items()):
        raise ValueError(f"{where}: mergeable_ranks must map bytes to int")
    expected = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
    if specials != expected:
        raise ValueError(f"{where}: special tokens {specials!r} are not nanochat's {expected!r}")
    try:
        return Tokenizer(ranks, pattern)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
