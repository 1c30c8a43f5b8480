"""`nanochat sft`: fine-tune a checkpoint on conversations.

Without --data the built-in synthetic tasks (nanochat.tasks) are used, and exact-match accuracy on
held-out items is reported for the pretrained and the fine-tuned model.
"""
import argparse
import json
from collections import Counter
from pathlib import Path

from minigrad import kernels
from minigrad.serialization import write_atomic
from nanochat import parallel, tasks
from nanochat.checkpoint import latest_step, load_model_and_tokenizer, saved_steps
from nanochat.commands.options import (Hyperparameters, add_checkpoint_args, check_checkpoint_args, check_option_types,
                                       resume_checkpoint, resume_state)
from nanochat.engine import Engine
from nanochat.sft import SFTLoader, collate, read_jsonl, render_rows, synthetic_data
from nanochat.tokenizer import Tokenizer
from nanochat.train import fit

# The learning rates default to the pretraining run's, times lr_scale.
SFT_DEFAULTS = dict(
    data=None, tasks="all", train_items=10000, eval_items=200, steps=1500, batch_size=16, lr_scale=1.0,
    matrix_lr=None, embedding_lr=None, unembedding_lr=None, weight_decay=0.0, warmdown_ratio=0.2,
    clip=1.0, seed=0, eval_every=500, save_every=500,
)
# what fixes the data stream: a resumed run must keep them
FIXED_ON_RESUME = ("data", "tasks", "train_items", "eval_items", "batch_size", "seed")
BASE_LRS = dict(matrix_lr=0.02, embedding_lr=0.2, unembedding_lr=0.004)


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
    given = SFT_HP.given(args)
    SFT_HP.resolve(given, base=BASE_LRS)  # every option checked before anything is read or written
    check_checkpoint_args(args, out)
    with parallel.run_lock(out):
        return _sft(args, src, out, given)


def _sft(args, src, out, given):
    world = parallel.world()
    if world.is_main:  # an empty numba cache: compile on a second core too
        kernels.compile_in_background()
    model, tokenizer, hp, meta, optimizer_state = _start(args, src, out, given)
    engine = Engine(model, tokenizer)
    rows, val_rows, held_out = _read_data(hp, engine)  # all of it read and checked before any training
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
    start_step = resume_state(optimizers, optimizer_state, loader, meta, world)
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
        _report_accuracy(out, engine, held_out, pretrained, hp["steps"], world)
    return 0


def _start(args, src, out, given):
    """(model, tokenizer, hyperparameters, meta, optimizer state): a resumed run's from its checkpoint
    in `out`, a new run's from the pretrained checkpoint (no meta, no optimizer state)."""
    if args.resume:
        model, meta, optimizer_state = resume_checkpoint(out, args.resume_step, "sft_args", "train")
        tokenizer = Tokenizer.load(out)
        return model, tokenizer, SFT_HP.resolve(given, saved=meta.get("sft_args", {})), meta, optimizer_state
    if saved_steps(out):
        raise ValueError(f"{out} already holds a fine-tuned checkpoint; pass --resume or another --out")
    model, tokenizer, base_meta = load_model_and_tokenizer(src, args.step)
    base_lrs = {k: base_meta.get("train_args", {}).get(k, v) for k, v in BASE_LRS.items()}
    return model, tokenizer, SFT_HP.resolve(given, base=base_lrs), None, None


def _read_data(hp, engine):
    """Training rows, validation rows and the held-out items to score (None with --data)."""
    tokenizer, max_tokens = engine.tokenizer, engine.model.config.sequence_len + 1
    if hp["data"] is not None:
        rows = render_rows(tokenizer, [(f"{hp['data']} line {n}", c) for n, c in read_jsonl(hp["data"])], max_tokens)
        return rows, [], None
    train, held_out = synthetic_data(tasks.parse_tasks(hp["tasks"]), hp["train_items"], hp["eval_items"], hp["seed"])
    rows = render_rows(tokenizer, [(f"synthetic item {i}", c) for i, c in enumerate(train)], max_tokens)
    val_rows = render_rows(tokenizer, [(f"held-out item {i}", c) for i, c in enumerate(held_out)], max_tokens)
    _check_questions_fit(engine, held_out)
    return rows, val_rows, held_out


def _report_accuracy(out, engine, held_out, pretrained, step, world):
    finetuned = _accuracy_record(engine, held_out, world)
    print(f"pretrained model: {_describe(pretrained)}")
    print(f"fine-tuned model: {_describe(finetuned)}")
    report = {"step": step, "items": len(held_out), "pretrained": pretrained, "finetuned": finetuned}
    if world.is_main:
        write_atomic(out / "accuracy.json", (json.dumps(report, indent=2) + "\n").encode())
    print(f"accuracy logged to {out / 'accuracy.json'}")


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


SFT_HP = Hyperparameters(SFT_DEFAULTS, FIXED_ON_RESUME, _check_sft_args)
