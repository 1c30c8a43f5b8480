"""Supervised fine-tuning: `nanochat sft`, its JSONL reader and its masked, padded batch loader.

Each conversation is rendered with its training mask; targets are -1 wherever the mask is 0
(what the assistant is given) or the row is padding, so only the assistant's own tokens carry
loss. Training itself is nanochat.train.fit, shared with pretraining. Without --data the
built-in synthetic tasks (nanochat.tasks) are used, and exact-match accuracy on held-out items
is reported for the pretrained and the fine-tuned model.
"""
import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from minigrad.serialization import write_atomic
from nanochat import parallel, tasks
from nanochat.checkpoint import latest_step, saved_steps
from nanochat.engine import Engine
from nanochat.run_options import add_checkpoint_args, check_checkpoint_args, check_option_types, resume_checkpoint
from nanochat.tokenizer import Tokenizer
from nanochat.train import check_unchanged_on_resume, fit, resume

# On --resume the checkpoint's values win over these defaults; options given win over both.
# The learning rates default to the pretraining run's, times lr_scale.
SFT_DEFAULTS = dict(
    data=None, tasks="all", train_items=10000, eval_items=200, steps=1500, batch_size=16, lr_scale=1.0,
    matrix_lr=None, embedding_lr=None, unembedding_lr=None, weight_decay=0.0, warmdown_ratio=0.2,
    clip=1.0, seed=0, eval_every=500, save_every=500,
)
# what fixes the data stream: a resumed run must keep them
FIXED_ON_RESUME = ("data", "tasks", "train_items", "eval_items", "batch_size", "seed")
BASE_LRS = dict(matrix_lr=0.02, embedding_lr=0.2, unembedding_lr=0.004)


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
        if batch_size < 1 or int(seed) < 0:
            raise ValueError(f"batch_size must be positive and seed non-negative, got {batch_size} and {seed}")
        self.rows, self.batch_size, self.pad_id, self.seed = rows, batch_size, pad_id, int(seed)
        # with fewer conversations than a batch, every batch holds all of them
        self.batches_per_epoch = max(1, len(rows) // batch_size)
        self.epoch, self.position = 0, 0
        self._order = self._epoch_order()

    def _epoch_order(self):
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.rows))

    def next_batch(self):
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._epoch_order()
        B = self.batch_size
        chosen = self._order[self.position * B:(self.position + 1) * B]
        self.position += 1
        return collate([self.rows[i] for i in chosen], self.pad_id)

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "conversations": len(self.rows)}

    def load_state_dict(self, state):
        try:
            epoch, position, seed, n = (state[k] for k in ("epoch", "position", "seed", "conversations"))
        except (KeyError, TypeError):
            raise ValueError(f"SFT loader state must hold epoch, position, seed and conversations, got {state!r}") from None
        if n != len(self.rows):
            raise ValueError(f"the checkpoint was trained on {n} conversations, this data has {len(self.rows)}; "
                             f"resume with the same data")
        if not all(isinstance(v, int) and v >= 0 for v in (epoch, position, seed)) or position > self.batches_per_epoch:
            raise ValueError(f"bad SFT loader state {state!r}")
        self.epoch, self.position, self.seed = epoch, position, seed
        self._order = self._epoch_order()


def synthetic_data(task_names, train_items, eval_items, seed):
    """Train items from `seed`, held-out items from another seed; the two never share a question."""
    train = tasks.generate(train_items, seed=[seed, 0], tasks=task_names)
    held_out = tasks.generate(eval_items, seed=[seed, 1], tasks=task_names, held_out=True)
    return train, held_out


def register(sub):
    S = argparse.SUPPRESS  # absent options stay absent, so resume can tell given from default
    d = SFT_DEFAULTS
    p = sub.add_parser("sft", help="fine-tune a checkpoint on conversations (built-in synthetic tasks by default)",
                       allow_abbrev=False)
    p.add_argument("--checkpoint", required=True, help="the pretrained checkpoint directory (as written by train) (required)")
    p.add_argument("--step", type=int, default=None, help="which step of --checkpoint (default: the latest)")
    p.add_argument("--out", default=None, help="output directory (default: <checkpoint>_sft)")
    p.add_argument("--data", default=S, help='JSONL, one {"messages": [...]} per line (default: synthetic tasks)')
    p.add_argument("--tasks", default=S, help=f"synthetic tasks, comma-separated from {','.join(tasks.TASK_NAMES)} (default all)")
    p.add_argument("--train-items", type=int, default=S, help=f"synthetic training items (default {d['train_items']})")
    p.add_argument("--eval-items", type=int, default=S, help=f"held-out synthetic items (default {d['eval_items']})")
    p.add_argument("--steps", type=int, default=S, help=f"optimizer steps (default {d['steps']})")
    p.add_argument("--batch-size", type=int, default=S, help=f"conversations per step (default {d['batch_size']})")
    p.add_argument("--lr-scale", type=float, default=S, help="multiplies the learning rates (default 1)")
    for name, value in BASE_LRS.items():
        p.add_argument("--" + name.replace("_", "-"), type=float, default=S,
                       help=f"base lr before --lr-scale (default: the pretraining run's, else {value})")
    p.add_argument("--weight-decay", type=float, default=S, help="AdamW weight decay (default 0)")
    p.add_argument("--warmdown-ratio", type=float, default=S, help="fraction of steps warming down (default 0.2)")
    p.add_argument("--clip", type=float, default=S, help=f"max gradient norm, 0 for none (default {d['clip']})")
    parallel.add_shard_option(p)
    p.add_argument("--seed", type=int, default=S, help="seed for the synthetic items and batch order (default 0)")
    p.add_argument("--eval-every", type=int, default=S, help=f"steps between validations (default {d['eval_every']})")
    p.add_argument("--save-every", type=int, default=S, help=f"steps between checkpoints (default {d['save_every']})")
    add_checkpoint_args(p)
    p.set_defaults(run=cmd_sft)


def cmd_sft(args):
    src = Path(args.checkpoint)
    out = Path(args.out) if args.out else src.with_name(src.name + "_sft")
    if not src.is_dir():
        raise FileNotFoundError(f"checkpoint directory {src} does not exist")
    if out.resolve() == src.resolve():
        raise ValueError("--out must differ from --checkpoint, or fine-tuning would overwrite the pretrained model")
    given = {k: v for k, v in vars(args).items() if k in SFT_DEFAULTS}
    _check_sft_args({**SFT_DEFAULTS, **BASE_LRS, **given})  # before anything is read or written
    check_checkpoint_args(args, out)
    with parallel.run_lock(out):
        return _sft(args, src, out, given)


def _sft(args, src, out, given):
    from nanochat.cli import load_model_and_tokenizer  # cli imports this module to register the command

    world = parallel.world()

    if args.resume:
        model, meta, optimizer_state = resume_checkpoint(out, args.resume_step, "sft_args", "train")
        tokenizer = Tokenizer.load(out)
        check_unchanged_on_resume(given, meta.get("sft_args", {}), FIXED_ON_RESUME)
        hp = {**SFT_DEFAULTS, **meta.get("sft_args", {}), **given}
    else:
        if saved_steps(out):
            raise ValueError(f"{out} already holds a fine-tuned checkpoint; pass --resume or another --out")
        model, tokenizer, base_meta = load_model_and_tokenizer(src, args.step)
        base_lrs = {k: base_meta.get("train_args", {}).get(k, v) for k, v in BASE_LRS.items()}
        hp = {**SFT_DEFAULTS, **base_lrs, **given}
        meta = optimizer_state = None
    _check_sft_args(hp)

    # all data is read and checked before any training
    max_tokens = model.config.sequence_len + 1
    engine = Engine(model, tokenizer)
    held_out = None
    if hp["data"] is None:
        train, held_out = synthetic_data(tasks.parse_tasks(hp["tasks"]), hp["train_items"], hp["eval_items"], hp["seed"])
        rows = render_rows(tokenizer, [(f"synthetic item {i}", c) for i, c in enumerate(train)], max_tokens)
        val_rows = render_rows(tokenizer, [(f"held-out item {i}", c) for i, c in enumerate(held_out)], max_tokens)
        _check_questions_fit(engine, held_out)
    else:
        rows = render_rows(tokenizer, [(f"{hp['data']} line {n}", c) for n, c in read_jsonl(hp["data"])], max_tokens)
        val_rows = []
    pad_id = tokenizer.encode_special("<|assistant_end|>")  # any id will do: padded positions carry no loss
    loader = parallel.shard_loader(SFTLoader(rows, hp["batch_size"], pad_id, seed=hp["seed"]), world)
    val = [collate(val_rows[i:i + hp["batch_size"]], pad_id) for i in range(0, len(val_rows), hp["batch_size"])]

    pretrained = meta.get("pretrained_accuracy") if meta else None
    if held_out is not None and pretrained is None:
        pretrained = _accuracy_record(engine, held_out, world)
        print(f"pretrained model: {_describe(pretrained)}")

    scale = hp["lr_scale"]
    optimizers = model.setup_optimizers(hp["unembedding_lr"] * scale, hp["embedding_lr"] * scale,
                                        hp["matrix_lr"] * scale, hp["weight_decay"])
    start_step = 0
    if meta is not None:
        start_step = resume(optimizers, optimizer_state, loader, meta)
        print(f"resuming from step {start_step}" + parallel.ranks_changed(meta, world))
    if world.is_main and not (out / "tokenizer.json").exists():
        tokenizer.save(out)  # the output directory is a complete, loadable checkpoint on its own
    print(f"sft: {len(rows):,} conversations, {hp['steps']} steps of {hp['batch_size']} -> {out}")
    print(parallel.describe_global_batch(world, hp["batch_size"], 1, "conversations"))

    fit(model, optimizers, loader, out=out, steps=hp["steps"], start_step=start_step, clip=hp["clip"] or None,
        eval_every=hp["eval_every"], save_every=hp["save_every"], val_batches=val,
        token_bytes=tokenizer.token_bytes, warmup_ratio=0.0, warmdown_ratio=hp["warmdown_ratio"],
        final_lr_frac=0.0, meta={"sft_args": hp, "source": str(src), "pretrained_accuracy": pretrained}, desc="sft",
        keep_last=args.keep_last, ddp=parallel.data_parallel(model, optimizers, world, args.shard_optimizer))

    finished = world.broadcast_object(latest_step(out) == hp["steps"] if world.is_main else None)  # rank 0 saved
    if held_out is not None and finished:  # not after a Ctrl-C stop
        finetuned = _accuracy_record(engine, held_out, world)
        print(f"pretrained model: {_describe(pretrained)}")
        print(f"fine-tuned model: {_describe(finetuned)}")
        report = {"step": hp["steps"], "items": len(held_out), "pretrained": pretrained, "finetuned": finetuned}
        if world.is_main:
            write_atomic(out / "accuracy.json", (json.dumps(report, indent=2) + "\n").encode())
        print(f"accuracy logged to {out / 'accuracy.json'}")
    return 0


def _check_questions_fit(engine, items):
    for i, item in enumerate(items):
        try:
            engine.fit_context(item["messages"][:1])
        except ValueError as e:
            raise ValueError(f"held-out item {i} cannot be asked: {e}; use a model with a longer context") from None


def _accuracy_record(engine, items, world):
    """Exact-match accuracy, overall and per task; each rank answers its share of the items."""
    share = world.shard(items)
    _, per_task = tasks.accuracy(engine, share)
    asked = Counter(item["task"] for item in share)
    right, total = Counter(), Counter()
    for rank_right, rank_asked in world.all_gather_object(({t: round(per_task[t] * asked[t]) for t in asked}, asked)):
        right.update(rank_right)
        total.update(rank_asked)
    return {"overall": sum(right.values()) / max(sum(total.values()), 1),
            "per_task": {task: right[task] / total[task] for task in total}}


def _describe(record):
    per_task = ", ".join(f"{task} {acc:.0%}" for task, acc in sorted(record["per_task"].items()))
    return f"exact-match accuracy {record['overall']:.1%} on held-out synthetic items ({per_task})"


def _check_sft_args(hp):
    check_option_types(hp, ("train_items", "eval_items", "steps", "batch_size", "seed", "eval_every", "save_every"),
                       texts=("data", "tasks"))
    for name in ("steps", "batch_size", "train_items", "eval_items"):
        if hp[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {hp[name]}")
    for name in ("eval_every", "save_every", "seed", "weight_decay", "clip"):
        if hp[name] < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {hp[name]}")
    for name in ("lr_scale", *BASE_LRS):
        if not hp[name] > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {hp[name]}")
    if not 0 <= hp["warmdown_ratio"] <= 1:
        raise ValueError(f"--warmdown-ratio must be in [0, 1], got {hp['warmdown_ratio']}")
    tasks.parse_tasks(hp["tasks"])
