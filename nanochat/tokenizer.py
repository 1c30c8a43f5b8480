"""Byte-level BPE tokenizer and chat rendering, as in nanochat.

Training runs in Rust (`rustbpe`), encoding and decoding in `tiktoken`. The
vocabulary is laid out as nanochat lays it out: the 256 single bytes, then the
merges in the order they were learned, then the nine special tokens. On disk a
tokenizer is a tiktoken rank file plus a small JSON file; nothing is pickled.
"""

import base64
import binascii
import codecs
import copy
import json
import os
from pathlib import Path

import numpy as np
import rustbpe
import tiktoken

from minigrad.serialization import write_atomic

SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)

SPECIAL_TOKENS = [
    "<|bos|>",
    "<|user_start|>", "<|user_end|>",
    "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>", "<|python_end|>",
    "<|output_start|>", "<|output_end|>",
]

RANKS_FILE = "tokenizer.tiktoken"
CONFIG_FILE = "tokenizer.json"

MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


class Tokenizer:
    """A tiktoken encoding with nanochat's special tokens and chat layout."""

    def __init__(self, mergeable_ranks, pattern=SPLIT_PATTERN):
        _check_ranks(mergeable_ranks, "mergeable_ranks")
        offset = len(mergeable_ranks)
        self.special_tokens = {name: offset + i for i, name in enumerate(SPECIAL_TOKENS)}
        self.pattern = pattern
        self.mergeable_ranks = dict(mergeable_ranks)
        self.enc = tiktoken.Encoding(
            name="nanochat",
            pat_str=pattern,
            mergeable_ranks=mergeable_ranks,
            special_tokens=self.special_tokens,
        )
        self._byte_ids = [mergeable_ranks[bytes([b])] for b in range(256)]
        self.token_bytes = np.zeros(offset + len(SPECIAL_TOKENS), dtype=np.int32)
        for token, rank in mergeable_ranks.items():
            self.token_bytes[rank] = len(token)

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, texts, vocab_size):
        """Learn merges from an iterable of strings.

        vocab_size counts the 256 bytes, the merges and the special tokens. A
        corpus with too few distinct pairs stops early, leaving a smaller vocab.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be an iterable of str, not a single string")
        if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        if vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size must be at least {MIN_VOCAB_SIZE} "
                f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens), got {vocab_size}"
            )
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(iter(texts), int(vocab_size) - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
        ranks = {bytes(token): rank for token, rank in trainer.get_mergeable_ranks()}
        return cls(ranks, trainer.get_pattern())

    # ------------------------------------------------------------------ basics

    @property
    def vocab_size(self):
        return self.enc.n_vocab

    @property
    def bos_token_id(self):
        return self.special_tokens["<|bos|>"]

    def encode_special(self, name):
        if name not in self.special_tokens:
            raise ValueError(f"unknown special token {name!r}; known: {', '.join(SPECIAL_TOKENS)}")
        return self.special_tokens[name]

    def _token_id(self, token):
        if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
            if not 0 <= token < self.vocab_size:
                raise ValueError(f"token id {token} is outside the vocabulary [0, {self.vocab_size})")
            return int(token)
        if isinstance(token, str):
            return self.encode_special(token)
        raise TypeError(f"prepend/append must be a special token name or an int id, got {type(token).__name__}")

    def _wrap(self, ids, prepend, append):
        if prepend is not None:
            ids.insert(0, self._token_id(prepend))
        if append is not None:
            ids.append(self._token_id(append))
        return ids

    def encode(self, text, prepend=None, append=None):
        """Encode a string; special-token strings in it are ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return self._wrap(self.enc.encode_ordinary(text), prepend, append)

    def encode_batch(self, texts, prepend=None, append=None, num_threads=None):
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"encode_batch expects strs, got {type(text).__name__}")
        threads = num_threads or os.cpu_count() or 1
        return [self._wrap(ids, prepend, append) for ids in self.enc.encode_ordinary_batch(texts, num_threads=threads)]

    def encode_bytes(self, data):
        """Encode arbitrary bytes: valid UTF-8 runs as text, stray bytes as byte tokens."""
        data = bytes(data)
        ids = []
        pos = 0
        while pos < len(data):
            try:
                ids += self.enc.encode_ordinary(data[pos:].decode("utf-8"))
                break
            except UnicodeDecodeError as err:
                bad_start, bad_end = pos + err.start, pos + err.end
                ids += self.enc.encode_ordinary(data[pos:bad_start].decode("utf-8"))
                ids += [self._byte_ids[b] for b in data[bad_start:bad_end]]
                pos = bad_end
        return ids

    def decode_bytes(self, ids):
        return self.enc.decode_bytes([int(i) for i in ids])

    def decode(self, ids):
        """Decode to text; a partial UTF-8 sequence becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_stream(self, ids):
        """Yield text as the ids arrive (from a generator, say); the bytes of a character split
        across tokens wait for the rest, so the pieces join to exactly decode(ids)."""
        decoder = self.stream_decoder()
        for token in ids:
            piece = decoder.push(token)
            if piece:
                yield piece
        tail = decoder.flush()
        if tail:
            yield tail

    def stream_decoder(self):
        """A StreamDecoder: decode_stream for ids that are pushed one at a time (by a server, say)."""
        return StreamDecoder(self)

    def id_to_token(self, token_id):
        return self.enc.decode_single_token_bytes(int(token_id))

    # ------------------------------------------------------------------ chat

    def render_conversation(self, conversation, max_tokens=None):
        """Token ids and a 0/1 training mask for one conversation.

        The mask is 1 on what the assistant says (its text, its python calls and
        <|assistant_end|>) and 0 on everything it is given.
        """
        messages = _messages(conversation)
        ids, mask = [], []

        def add(token_ids, mask_val):
            if isinstance(token_ids, int):
                token_ids = [token_ids]
            ids.extend(token_ids)
            mask.extend([mask_val] * len(token_ids))

        sp = self.special_tokens
        add(self.bos_token_id, 0)
        for message in messages:
            content = message["content"]
            if message["role"] == "user":
                add(sp["<|user_start|>"], 0)
                add(self.encode(content), 0)
                add(sp["<|user_end|>"], 0)
                continue
            add(sp["<|assistant_start|>"], 0)
            if isinstance(content, str):
                add(self.encode(content), 1)
            else:
                for part in content:
                    value_ids = self.encode(part["text"])
                    if part["type"] == "text":
                        add(value_ids, 1)
                    elif part["type"] == "python":
                        add(sp["<|python_start|>"], 1)
                        add(value_ids, 1)
                        add(sp["<|python_end|>"], 1)
                    else:
                        # tool output comes from the interpreter at inference, so it is not learned
                        add(sp["<|output_start|>"], 0)
                        add(value_ids, 0)
                        add(sp["<|output_end|>"], 0)
            add(sp["<|assistant_end|>"], 1)

        if max_tokens is not None:
            if not isinstance(max_tokens, int) or max_tokens < 0:
                raise ValueError(f"max_tokens must be a non-negative int or None, got {max_tokens!r}")
            ids, mask = ids[:max_tokens], mask[:max_tokens]
        return ids, mask

    def render_for_completion(self, conversation):
        """Ids that prime the model to write the next assistant turn."""
        messages = _message_list(conversation)
        if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            messages = messages[:-1]
        ids, _ = self.render_conversation({"messages": messages})
        ids.append(self.special_tokens["<|assistant_start|>"])
        return ids

    # ------------------------------------------------------------------ persistence

    def save(self, directory):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ranks = sorted(self.mergeable_ranks.items(), key=lambda kv: kv[1])
        lines = "".join(f"{base64.b64encode(token).decode('ascii')} {rank}\n" for token, rank in ranks)
        config = {"pattern": self.pattern, "special_tokens": self.special_tokens}
        # ranks first, config last: load reads the config's presence as "a tokenizer is here"
        write_atomic(directory / RANKS_FILE, lines.encode("ascii"))
        write_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2).encode("utf-8"))

    @classmethod
    def load(cls, directory):
        directory = Path(directory)
        ranks_path, config_path = directory / RANKS_FILE, directory / CONFIG_FILE
        for path in (ranks_path, config_path):
            if not path.is_file():
                raise FileNotFoundError(f"tokenizer file not found: {path}")
        ranks = _read_ranks(ranks_path)
        try:
            _check_ranks(ranks, str(ranks_path))
        except ValueError as err:
            raise ValueError(f"corrupt tokenizer rank file: {err}") from None
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            pattern, specials = config["pattern"], config["special_tokens"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"corrupt tokenizer config {config_path}: {err}") from None
        expected = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
        if not isinstance(pattern, str) or specials != expected:
            raise ValueError(f"corrupt tokenizer config {config_path}: pattern or special tokens do not match")
        return cls(ranks, pattern)


class StreamDecoder:
    """Text of token ids pushed one by one, whole UTF-8 characters only: push(id) returns the text
    completed so far ("" while a character's bytes are split across tokens), flush() the rest."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token):
        return self.decoder.decode(self.tokenizer.decode_bytes([token]))

    def flush(self):
        return self.decoder.decode(b"", final=True)


def _check_ranks(ranks, where):
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{where}: ranks must be exactly 0..{len(ranks) - 1}")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"{where}: missing single-byte tokens, e.g. {missing[0]}")


def _read_ranks(path):
    ranks = {}
    with open(path, encoding="ascii", errors="strict") as f:
        try:
            lines = f.read().splitlines()
        except UnicodeDecodeError:
            raise ValueError(f"corrupt tokenizer rank file {path}: not ASCII") from None
    for lineno, line in enumerate(lines, 1):
        try:
            token_b64, rank = line.split(" ")
            token = base64.b64decode(token_b64, validate=True)
            ranks[token] = int(rank)
        except (ValueError, binascii.Error):
            raise ValueError(f"corrupt tokenizer rank file {path}, line {lineno}: {line[:60]!r}") from None
    if len(ranks) != len(lines):
        raise ValueError(f"corrupt tokenizer rank file {path}: duplicate tokens")
    return ranks


def _message_list(conversation):
    if isinstance(conversation, dict):
        if "messages" not in conversation:
            raise ValueError("conversation dict needs a 'messages' key")
        conversation = conversation["messages"]
    if not isinstance(conversation, list):
        raise ValueError(f"conversation must be a dict with 'messages' or a list, got {type(conversation).__name__}")
    return conversation


def _messages(conversation):
    """Validated messages with a leading system message merged into the first user one."""
    messages = _message_list(conversation)
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content'")
    if messages and messages[0]["role"] == "system":
        if len(messages) < 2 or messages[1]["role"] != "user":
            raise ValueError("a system message must be followed by a user message")
        if not isinstance(messages[0]["content"], str) or not isinstance(messages[1]["content"], str):
            raise ValueError("system and user message content must be strings")
        merged = copy.deepcopy(messages[1])
        merged["content"] = messages[0]["content"] + "\n\n" + messages[1]["content"]
        messages = [merged] + messages[2:]
    if not messages:
        raise ValueError("conversation has no messages")
    for i, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role not in ("user", "assistant"):
            raise ValueError(f"message {i}: unknown role {role!r} (system is allowed only first)")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"message {i}: expected role {expected!r}, got {role!r}; roles must alternate starting with user")
        if role == "user" and not isinstance(content, str):
            raise ValueError(f"message {i}: user content must be a str, got {type(content).__name__}")
        if role == "assistant":
            _check_assistant_content(i, content)
    return messages


def _check_assistant_content(i, content):
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise ValueError(f"message {i}: assistant content must be a str or a list of parts, got {type(content).__name__}")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "python", "python_output"):
            raise ValueError(f"message {i} part {j}: must be a dict with type text, python or python_output")
        if not isinstance(part.get("text"), str):
            raise ValueError(f"message {i} part {j}: 'text' must be a str")
