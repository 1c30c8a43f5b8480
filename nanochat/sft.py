"""Supervised fine-tuning's data: the JSONL reader, conversations rendered with their training
mask, the masked, padded batch loader and the synthetic train/held-out split.

Each conversation is rendered with its training mask; targets are -1 wherever the mask is 0
(what the assistant is given) or the row is padding, so only the assistant's own tokens carry
loss. The command is nanochat.commands.sft; training itself is nanochat.train.fit.
"""
import json
from pathlib import Path

import numpy as np

from nanochat import tasks
from nanochat.dataloader import EpochOrder


def read_jsonl(path):
    """[(line number, conversation)] from a JSONL file, one {"messages": [...]} per line; blank
    lines are skipped, anything else malformed raises naming the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    conversations = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path} line {lineno}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                conversation = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None
            except RecursionError:
                raise ValueError(f"{path} line {lineno}: JSON nested too deeply") from None
            if not isinstance(conversation, dict) or not isinstance(conversation.get("messages"), list):
                raise ValueError(f'{path} line {lineno}: expected an object with a "messages" list')
            if not conversation["messages"]:
                raise ValueError(f"{path} line {lineno}: empty conversation")
            conversations.append((lineno, conversation))
    if not conversations:
        raise ValueError(f"{path} holds no conversations")
    return conversations


def render_rows(tokenizer, conversations, max_tokens):
    """[(ids, mask)] for [(name, conversation)], each cut to max_tokens; a conversation that
    breaks the chat layout or leaves nothing to learn raises with its name."""
    rows = []
    for name, conversation in conversations:
        try:
            ids, mask = tokenizer.render_conversation(conversation, max_tokens=max_tokens)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        if not any(m["role"] == "assistant" for m in conversation["messages"] if isinstance(m, dict)):
            raise ValueError(f"{name}: no assistant message to learn from")
        if not any(mask[1:]):
            raise ValueError(f"{name}: no assistant token within the first {max_tokens} tokens (the model's context)")
        rows.append((np.array(ids, dtype=np.int64), np.array(mask, dtype=bool)))
    return rows


def collate(rows, pad_id):
    """Rows of (ids, mask) -> x, y of shape (B, longest - 1); y is -1 where masked or padded."""
    T = max(len(ids) for ids, _ in rows) - 1
    x = np.full((len(rows), T), pad_id, dtype=np.int64)
    y = np.full((len(rows), T), -1, dtype=np.int64)
    for i, (ids, mask) in enumerate(rows):
        n = len(ids) - 1
        x[i, :n] = ids[:-1]
        y[i, :n] = np.where(mask[1:], ids[1:], -1)
    return x, y


class SFTLoader:
    """Endless padded batches of conversations in a seeded order per epoch, resumable from state_dict()."""

    def __init__(self, rows, batch_size, pad_id, seed=0):
        if not rows:
            raise ValueError("no conversations to train on")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.rows, self.batch_size, self.pad_id = rows, batch_size, pad_id
        # with fewer conversations than a batch, every batch holds all of them
        self.order = EpochOrder(len(rows), batch_size, max(1, len(rows) // batch_size), seed)

    def next_batch(self):
        return collate([self.rows[i] for i in self.order.next_indices()], self.pad_id)

    def state_dict(self):
        return {**self.order.state_dict(), "conversations": len(self.rows)}

    def load_state_dict(self, state):
        if not isinstance(state, dict) or "conversations" not in state:
            raise ValueError(f"SFT loader state must hold epoch, position, seed and conversations, got {state!r}")
        n = state["conversations"]
        if n != len(self.rows):
            raise ValueError(f"the checkpoint was trained on {n} conversations, this data has {len(self.rows)}; "
                             f"resume with the same data")
        self.order.load_state_dict(state)


def synthetic_data(task_names, train_items, eval_items, seed):
    """Train items from `seed`, held-out items from another seed; the two never share a question."""
    train = tasks.generate(train_items, seed=[seed, 0], tasks=task_names)
    held_out = tasks.generate(eval_items, seed=[seed, 1], tasks=task_names, held_out=True)
    return train, held_out
