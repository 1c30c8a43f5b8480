"""Our tiktoken tokenizer as a Hugging Face `tokenizers` tokenizer.json, and back; and nanochat's
chat layout (Tokenizer.render_conversation) as a Jinja chat template.

tokenizer.json is written by hand (no `tokenizers` needed): a byte-level BPE whose merges list every
way to split each multi-byte token into two tokens, ordered by the merged token's rank. tiktoken
merges the adjacent pair whose merged token has the lowest rank; HF merges the pair listed first:
the same order, so both produce the same ids (the tests check this on varied text).
"""
import json

from nanochat.tokenizer import SPECIAL_TOKENS, Tokenizer


def bytes_to_unicode():
    """GPT-2's byte-level alphabet: each byte as a printable character (HF ByteLevel uses the same)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


_BYTE_CHARS = bytes_to_unicode()
_CHAR_BYTES = {c: b for b, c in _BYTE_CHARS.items()}


def _to_str(token):
    return "".join(_BYTE_CHARS[b] for b in token)


def _merges(ranks):
    merges = []
    for token, rank in ranks.items():
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        merges += [(rank, ranks[a], ranks[b], a, b) for a, b in splits]
    merges.sort()
    return [[_to_str(a), _to_str(b)] for _, _, _, a, b in merges]


def tokenizer_json(tokenizer):
    """The tokenizer.json document (a dict) for `tokenizer`."""
    ranks = tokenizer.mergeable_ranks
    added = [{"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for name, i in tokenizer.special_tokens.items()]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tokenizer.pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {_to_str(token): rank for token, rank in ranks.items()}, "merges": _merges(ranks)},
    }


def tokenizer_from_json(path):
    """Our Tokenizer from a tokenizer.json that holds a byte-level BPE with nanochat's special tokens."""
    try:
        doc = json.loads(open(path, encoding="utf-8").read())
        model, pre = doc["model"], doc["pre_tokenizer"]
        pretokenizers = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
        patterns = [p["pattern"]["Regex"] for p in pretokenizers if p.get("type") == "Split"]
        vocab, added = model["vocab"], doc.get("added_tokens") or []
    except OSError as e:
        raise FileNotFoundError(f"cannot read {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a tokenizer.json this code understands ({type(e).__name__}: {e})") from None
    if model.get("type") != "BPE" or len(patterns) != 1 or not any(p.get("type") == "ByteLevel" for p in pretokenizers):
        raise ValueError(f"{path}: only a byte-level BPE with one Split regex (as nanochat's tiktoken "
                         f"tokenizer converts) can be read")
    specials = {t["content"]: t["id"] for t in added}
    try:  # some conversions list the special tokens in the vocabulary too
        ranks = {bytes(_CHAR_BYTES[c] for c in token): rank for token, rank in vocab.items()
                 if rank not in specials.values()}
    except KeyError as e:
        raise ValueError(f"{path}: vocabulary entry with a non byte-level character {e}") from None
    expected = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
    if specials != expected:
        raise ValueError(f"{path}: added tokens {specials} are not nanochat's special tokens {expected}")
    try:
        return Tokenizer(ranks, patterns[0])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


# nanochat's render_conversation in Jinja: a leading system message is merged into the first user
# message; assistant content is a string or a list of text / python / python_output parts.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}"
    "<|bos|>"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] + '\n\n' -%}"
    "{%- elif message['role'] == 'user' -%}"
    "<|user_start|>{{ ns.system }}{{ message['content'] }}<|user_end|>{%- set ns.system = '' -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "<|assistant_start|>"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- elif part['type'] == 'python' -%}<|python_start|>{{ part['text'] }}<|python_end|>"
    "{%- elif part['type'] == 'python_output' -%}<|output_start|>{{ part['text'] }}<|output_end|>"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "<|assistant_end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant_start|>{%- endif -%}"
)


def tokenizer_config(tokenizer, max_length):
    return {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|bos|>", "eos_token": "<|assistant_end|>",
        "pad_token": "<|bos|>", "model_max_length": max_length, "clean_up_tokenization_spaces": False,
        "add_bos_token": False, "add_eos_token": False, "chat_template": CHAT_TEMPLATE,
    }
