"""`nanochat train`: train a GPT from scratch (or --resume): tokenizer, data, model, nanochat.train.fit,
then the loss curve and a sample."""
import argparse
from pathlib import Path

import numpy as np

from minigrad import kernels
from nanochat import parallel
from nanochat.checkpoint import check_vocab, latest_step, saved_steps
from nanochat.commands.options import (Hyperparameters, add_checkpoint_args, check_checkpoint_args, check_option_types,
                                       resume_checkpoint, resume_state)
from nanochat.commands.sample import stream_sample
from nanochat.dataloader import DataLoader, load_text, split_train_val
from nanochat.gpt import GPT
from nanochat.sizing import check_fits_in_memory
from nanochat.tokenizer import Tokenizer
from nanochat.train import config_for_depth, fit, plot_losses

TRAIN_DEFAULTS = dict(
    data=None, arch="classic", depth=2, n_layer=None, n_embd=None, n_head=None, n_kv_head=None, vocab_size=2048,
    batch_size=16, seq_len=128, steps=200, grad_accum=1, matrix_lr=0.02, embedding_lr=0.2,
    unembedding_lr=0.004, weight_decay=0.0, warmup_ratio=0.0, warmdown_ratio=0.2, final_lr_frac=0.0,
    clip=1.0, seed=0, val_fraction=0.1, eval_every=50, eval_batches=8, save_every=100,
)


# what fixes the model and the data stream: a resumed run must keep them
FIXED_ON_RESUME = ("data", "arch", "depth", "n_layer", "n_embd", "n_head", "n_kv_head", "vocab_size", "batch_size",
                   "seq_len", "seed", "val_fraction")
_INT_OPTIONS = ("depth", "n_layer", "n_embd", "n_head", "n_kv_head", "vocab_size", "batch_size", "seq_len", "steps",
               "grad_accum", "seed", "eval_every", "eval_batches", "save_every")


def _check_train_args(hp):
    """Every option, before anything is written to disk."""
    check_option_types(hp, _INT_OPTIONS, texts=("data", "arch"), nullable=("n_layer", "n_embd", "n_head", "n_kv_head"))
    if hp["arch"] not in ("classic", "2026"):  # an edited meta on --resume
        raise ValueError(f"--arch must be classic or 2026, got {hp['arch']!r}")
    for name in ("steps", "batch_size", "seq_len", "grad_accum", "vocab_size", "depth", "eval_batches"):
        if hp[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {hp[name]}")
    for name in ("eval_every", "save_every", "seed", "clip", "weight_decay", "matrix_lr", "embedding_lr",
                 "unembedding_lr"):
        if not hp[name] >= 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {hp[name]}")
    for name in ("warmup_ratio", "warmdown_ratio", "final_lr_frac"):
        if not 0 <= hp[name] <= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {hp[name]}")
    if hp["warmup_ratio"] + hp["warmdown_ratio"] > 1:
        raise ValueError(f"--warmup-ratio + --warmdown-ratio must be at most 1, got "
                         f"{hp['warmup_ratio'] + hp['warmdown_ratio']}")
    if not 0 < hp["val_fraction"] < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {hp['val_fraction']}")


TRAIN_HP = Hyperparameters(TRAIN_DEFAULTS, FIXED_ON_RESUME, _check_train_args)


def register(sub):
    p = sub.add_parser("train", help="train a GPT from scratch (or --resume)", allow_abbrev=False)
    S = argparse.SUPPRESS  # absent options stay absent, so resume can tell given from default
    d = TRAIN_DEFAULTS
    p.add_argument("--data", default=S, help="a text file or a folder of .txt files (default: CPython's bundled docs)")
    p.add_argument("--out", default="runs/base", help="output directory for tokenizer, checkpoints, logs (default: %(default)s)")
    p.add_argument("--arch", choices=("classic", "2026"), default=S,
                   help="classic: nanochat's first model; 2026: nanochat's current one (default classic)")
    p.add_argument("--depth", type=int, default=S, help=f"model size as in nanochat: width 64*depth (default {d['depth']})")
    for name in ("n_layer", "n_embd", "n_head", "n_kv_head"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=S,
                       help="override the size from --depth (default: from --depth)")
    p.add_argument("--vocab-size", type=int, default=S, help=f"tokenizer vocabulary (default {d['vocab_size']})")
    p.add_argument("--batch-size", type=int, default=S, help=f"sequences per micro-batch (default {d['batch_size']})")
    p.add_argument("--seq-len", type=int, default=S, help=f"tokens per sequence (default {d['seq_len']})")
    p.add_argument("--steps", type=int, default=S, help=f"optimizer steps (default {d['steps']})")
    p.add_argument("--grad-accum", type=int, default=S, help="micro-batches per step (default 1)")
    p.add_argument("--matrix-lr", type=float, default=S, help=f"Muon lr for block matrices (default {d['matrix_lr']})")
    p.add_argument("--embedding-lr", type=float, default=S, help=f"AdamW lr for wte (default {d['embedding_lr']})")
    p.add_argument("--unembedding-lr", type=float, default=S, help=f"AdamW lr for lm_head (default {d['unembedding_lr']})")
    p.add_argument("--weight-decay", type=float, default=S, help="AdamW weight decay (default 0)")
    p.add_argument("--warmup-ratio", type=float, default=S, help="fraction of steps warming up (default 0)")
    p.add_argument("--warmdown-ratio", type=float, default=S, help="fraction of steps warming down (default 0.2)")
    p.add_argument("--final-lr-frac", type=float, default=S, help="lr multiplier at the end (default 0)")
    p.add_argument("--clip", type=float, default=S, help=f"max gradient norm, 0 for none (default {d['clip']})")
    parallel.add_shard_option(p)
    p.add_argument("--seed", type=int, default=S, help="seed for weights and batch order (default 0)")
    p.add_argument("--val-fraction", type=float, default=S, help="tail of the data held out (default 0.1)")
    p.add_argument("--eval-every", type=int, default=S, help=f"steps between validations (default {d['eval_every']})")
    p.add_argument("--eval-batches", type=int, default=S, help=f"validation batches (default {d['eval_batches']})")
    p.add_argument("--save-every", type=int, default=S, help=f"steps between checkpoints (default {d['save_every']})")
    add_checkpoint_args(p)
    p.add_argument("--sample-tokens", type=int, default=120, help="tokens to sample at the end (default %(default)s)")
    p.set_defaults(run=cmd_train)


def val_batches(tokens, batch_size, seq_len, max_batches):
    """Fixed validation batches: consecutive windows from the start of the held-out tokens."""
    n_windows = min((len(tokens) - 1) // seq_len, batch_size * max_batches)
    if n_windows < 1:
        raise ValueError(f"the validation split has {len(tokens)} tokens, fewer than one sequence of "
                         f"{seq_len + 1}; use more data, a shorter --seq-len or a larger --val-fraction")
    starts = np.arange(n_windows) * seq_len
    windows = tokens[starts[:, None] + np.arange(seq_len + 1)]
    return [(windows[i:i + batch_size, :-1], windows[i:i + batch_size, 1:]) for i in range(0, n_windows, batch_size)]


def cmd_train(args):
    out, given = Path(args.out), TRAIN_HP.given(args)
    hp = TRAIN_HP.resolve(given)  # every option checked before anything is read or written
    check_checkpoint_args(args, out)
    if args.sample_tokens < 0:
        raise ValueError(f"--sample-tokens must not be negative, got {args.sample_tokens}")
    if not args.resume:
        check_fits_in_memory(_config(hp, hp["vocab_size"]), training=True)
    with parallel.run_lock(out):
        return _train(args, out, given)


def _train(args, out, given):
    world = parallel.world()
    if world.is_main:  # an empty numba cache: compile on a second core too
        kernels.compile_in_background()
    hp, model, meta, optimizer_state = _start(args, out, given)
    text = load_text(hp["data"])
    tokenizer = world.broadcast_object(_tokenizer(out, text, hp, args.resume) if world.is_main else None)
    tokens = np.asarray(tokenizer.encode(text, prepend="<|bos|>"), dtype=np.int64)
    train_tokens, val_tokens = split_train_val(tokens, hp["val_fraction"])
    loader = parallel.shard_loader(DataLoader(train_tokens, hp["batch_size"], hp["seq_len"], seed=hp["seed"]), world)
    val = val_batches(val_tokens, hp["batch_size"], hp["seq_len"], hp["eval_batches"])
    if model is None:
        model = GPT(_config(hp, tokenizer.vocab_size), seed=hp["seed"])
    check_vocab(tokenizer, model.config)
    optimizers = model.setup_optimizers(hp["unembedding_lr"], hp["embedding_lr"], hp["matrix_lr"], hp["weight_decay"])
    start_step = resume_state(optimizers, optimizer_state, loader, meta, world)
    if meta is None and world.is_main:  # saved only once the data has proved usable
        tokenizer.save(out)
    c = model.config
    print(f"model: {hp['arch']}, {c.n_layer} layers, width {c.n_embd}, {c.n_head} heads ({c.n_kv_head} kv), "
          f"{model.num_parameters():,} parameters; {len(train_tokens):,} train / {len(val_tokens):,} val tokens")
    print(parallel.describe_global_batch(world, hp["batch_size"] * hp["seq_len"], hp["grad_accum"], "tokens"))

    try:
        records = fit(model, optimizers, loader, out=out, steps=hp["steps"], start_step=start_step,
            grad_accum=hp["grad_accum"], clip=hp["clip"] or None, eval_every=hp["eval_every"],
            save_every=hp["save_every"], val_batches=val, token_bytes=tokenizer.token_bytes,
            warmup_ratio=hp["warmup_ratio"], warmdown_ratio=hp["warmdown_ratio"], final_lr_frac=hp["final_lr_frac"],
            meta={"train_args": hp, "unigram_loss": unigram_loss(train_tokens, val_tokens)}, keep_last=args.keep_last,
            ddp=parallel.data_parallel(model, optimizers, world, args.shard_optimizer))
    except BaseException:
        if world.is_main and meta is None and not saved_steps(out):  # nothing saved: never reuse this tokenizer
            for p in out.glob("tokenizer.*"):
                p.unlink()
        raise
    if world.is_main and not (records and records[-1]["step"] < hp["steps"]):  # not after a Ctrl-C stop
        _report(out, model, tokenizer, args.sample_tokens, hp["seed"])
    return 0


def _start(args, out, given):
    """(hyperparameters, model, meta, optimizer state): a resumed run's from its checkpoint, a new
    run's with no model yet (it needs the tokenizer's vocabulary)."""
    if args.resume:
        model, meta, optimizer_state = resume_checkpoint(out, args.resume_step, "train_args", "sft")
        return TRAIN_HP.resolve(given, saved=meta.get("train_args", {})), model, meta, optimizer_state
    if saved_steps(out):
        raise ValueError(f"{out} already holds checkpoints (latest step {latest_step(out)}); pass --resume "
                         "to continue them, or choose another --out")
    return TRAIN_HP.resolve(given), None, None, None


def _config(hp, vocab_size):
    return config_for_depth(hp["depth"], vocab_size, hp["seq_len"], hp["n_layer"], hp["n_embd"], hp["n_head"],
                            hp["n_kv_head"], hp["arch"])


def _tokenizer(out, text, hp, resuming):
    """The run's tokenizer: the checkpoint's own on resume, else a new one trained on the text (a
    tokenizer without checkpoints is a failed run's leftover, perhaps from other data: never reused)."""
    if resuming:
        tokenizer = Tokenizer.load(out)
        print(f"tokenizer: reusing {out} ({tokenizer.vocab_size} tokens)")
        return tokenizer
    print(f"tokenizer: training a {hp['vocab_size']}-token BPE on {len(text):,} characters")
    return Tokenizer.train([text], hp["vocab_size"])


def _report(out, model, tokenizer, sample_tokens, seed):
    """After a finished run: the loss curve and a sample."""
    if plot_losses(out / "log.jsonl", out / "loss.png"):
        print(f"loss curve: {out / 'loss.png'}")
    else:
        print("loss curve: skipped, matplotlib is not installed (pip install matplotlib)")
    if sample_tokens:
        print("sample:")
        # after <|bos|>, the model has rotary_seq_len - 1 positions left to generate into
        sample_tokens = min(sample_tokens, model.rotary_seq_len - 1)
        stream_sample(model, tokenizer, [tokenizer.bos_token_id], sample_tokens, temperature=0.8, top_k=40, seed=seed)


def unigram_loss(train_tokens, val_tokens):
    """Cross-entropy of the validation tokens under the training split's token frequencies (add-one
    smoothed): the baseline a model must beat to have learned anything beyond token counts."""
    vocab = int(max(train_tokens.max(), val_tokens.max())) + 1
    counts = np.bincount(train_tokens, minlength=vocab) + 1.0
    return float(-np.log(counts[val_tokens] / counts.sum()).mean())
