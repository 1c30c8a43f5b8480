"""The `nanochat` command: train, sample (and the chat commands registered by nanochat.chat_cli).

Bad input ends with a one-line error and exit status 1, never a traceback."""
import argparse
import sys
from pathlib import Path

import numpy as np

from nanochat import chat_cli, sft
from nanochat.chat_cli import print_stream
from nanochat.checkpoint import latest_step, load_checkpoint
from nanochat.gpt import GPT
from nanochat.dataloader import DataLoader, load_text, split_train_val
from nanochat.tokenizer import Tokenizer
from nanochat.train import TrainingError, check_unchanged_on_resume, config_for_depth, fit, plot_losses, resume

# Training hyperparameters: on --resume the checkpoint's values win over these defaults, and
# options given on the command line win over both.
TRAIN_DEFAULTS = dict(
    data=None, arch="classic", depth=2, n_layer=None, n_embd=None, n_head=None, n_kv_head=None, vocab_size=2048,
    batch_size=16, seq_len=128, steps=200, grad_accum=1, matrix_lr=0.02, embedding_lr=0.2,
    unembedding_lr=0.004, weight_decay=0.0, warmup_ratio=0.0, warmdown_ratio=0.2, final_lr_frac=0.0,
    clip=1.0, seed=0, val_fraction=0.1, eval_every=50, eval_batches=8, save_every=100,
)


# what fixes the model and the data stream: a resumed run must keep them
FIXED_ON_RESUME = ("data", "arch", "depth", "n_layer", "n_embd", "n_head", "n_kv_head", "vocab_size", "batch_size",
                   "seq_len", "seed", "val_fraction")


def add_train_args(p):
    S = argparse.SUPPRESS  # absent options stay absent, so resume can tell given from default
    d = TRAIN_DEFAULTS
    p.add_argument("--data", default=S, help="a text file or a folder of .txt files (default: CPython's bundled docs)")
    p.add_argument("--out", default="runs/base", help="output directory for tokenizer, checkpoints, logs (default: %(default)s)")
    p.add_argument("--arch", choices=("classic", "2026"), default=S,
                   help="classic: nanochat's first model; 2026: nanochat's current one (default classic)")
    p.add_argument("--depth", type=int, default=S, help=f"model size as in nanochat: width 64*depth (default {d['depth']})")
    for name in ("n_layer", "n_embd", "n_head", "n_kv_head"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=S, help="override the size from --depth")
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
    p.add_argument("--seed", type=int, default=S, help="seed for weights and batch order (default 0)")
    p.add_argument("--val-fraction", type=float, default=S, help="tail of the data held out (default 0.1)")
    p.add_argument("--eval-every", type=int, default=S, help=f"steps between validations (default {d['eval_every']})")
    p.add_argument("--eval-batches", type=int, default=S, help=f"validation batches (default {d['eval_batches']})")
    p.add_argument("--save-every", type=int, default=S, help=f"steps between checkpoints (default {d['save_every']})")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--sample-tokens", type=int, default=120, help="tokens to sample at the end (default %(default)s)")


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
    out = Path(args.out)
    given = {k: v for k, v in vars(args).items() if k in TRAIN_DEFAULTS}
    model = meta = optimizer_state = None
    if args.resume:
        model, meta, optimizer_state = load_checkpoint(out)  # raises if there is nothing to resume
        check_unchanged_on_resume(given, meta.get("train_args", {}), FIXED_ON_RESUME)
        hp = {**TRAIN_DEFAULTS, **meta.get("train_args", {}), **given}
    else:
        hp = {**TRAIN_DEFAULTS, **given}
        if out.is_dir() and any(out.glob("meta_*.json")):
            raise ValueError(f"{out} already holds checkpoints (latest step {latest_step(out)}); pass --resume "
                             "to continue them, or choose another --out")
    _check_train_args(hp)
    if args.sample_tokens < 0:
        raise ValueError(f"--sample-tokens must not be negative, got {args.sample_tokens}")

    text = load_text(hp["data"])
    reuse_tokenizer = (out / "tokenizer.json").exists()
    if reuse_tokenizer:
        tokenizer = Tokenizer.load(out)
        if "vocab_size" in given and given["vocab_size"] != tokenizer.vocab_size:
            raise ValueError(f"{out} holds a {tokenizer.vocab_size}-token tokenizer but --vocab-size is "
                             f"{given['vocab_size']}; choose another --out for a new vocabulary")
        print(f"tokenizer: reusing {out} ({tokenizer.vocab_size} tokens)")
    else:
        print(f"tokenizer: training a {hp['vocab_size']}-token BPE on {len(text):,} characters")
        tokenizer = Tokenizer.train([text], hp["vocab_size"])
    tokens = np.asarray(tokenizer.encode(text, prepend="<|bos|>"), dtype=np.int64)
    train_tokens, val_tokens = split_train_val(tokens, hp["val_fraction"])
    loader = DataLoader(train_tokens, hp["batch_size"], hp["seq_len"], seed=hp["seed"])
    val = val_batches(val_tokens, hp["batch_size"], hp["seq_len"], hp["eval_batches"])
    if not reuse_tokenizer:  # saved only once the data has proved usable, so a failed run leaves nothing behind
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save(out)

    if model is None:
        config = config_for_depth(hp["depth"], tokenizer.vocab_size, hp["seq_len"], hp["n_layer"],
                                  hp["n_embd"], hp["n_head"], hp["n_kv_head"], hp["arch"])
        model = GPT(config, seed=hp["seed"])
    _check_vocab(tokenizer, model.config)
    optimizers = model.setup_optimizers(hp["unembedding_lr"], hp["embedding_lr"], hp["matrix_lr"], hp["weight_decay"])
    start_step = 0
    if meta is not None:
        start_step = resume(optimizers, optimizer_state, loader, meta)
        print(f"resuming from step {start_step}")
    c = model.config
    print(f"model: {hp['arch']}, {c.n_layer} layers, width {c.n_embd}, {c.n_head} heads ({c.n_kv_head} kv), "
          f"{model.num_parameters():,} parameters; {len(train_tokens):,} train / {len(val_tokens):,} val tokens")

    records = fit(model, optimizers, loader, out=out, steps=hp["steps"], start_step=start_step,
        grad_accum=hp["grad_accum"], clip=hp["clip"] or None, eval_every=hp["eval_every"],
        save_every=hp["save_every"], val_batches=val, token_bytes=tokenizer.token_bytes,
        warmup_ratio=hp["warmup_ratio"], warmdown_ratio=hp["warmdown_ratio"], final_lr_frac=hp["final_lr_frac"],
        meta={"train_args": hp, "unigram_loss": unigram_loss(train_tokens, val_tokens)})
    if records and records[-1]["step"] < hp["steps"]:
        return 0  # interrupted: the checkpoint is saved, skip the plot and the sample
    if plot_losses(out / "log.jsonl", out / "loss.png"):
        print(f"loss curve: {out / 'loss.png'}")
    if args.sample_tokens:
        print("sample:")
        # after <|bos|>, the model has rotary_seq_len - 1 positions left to generate into
        sample_tokens = min(args.sample_tokens, model.rotary_seq_len - 1)
        stream_sample(model, tokenizer, [tokenizer.bos_token_id], sample_tokens, temperature=0.8, top_k=40, seed=hp["seed"])
    return 0


def unigram_loss(train_tokens, val_tokens):
    """Cross-entropy of the validation tokens under the training split's token frequencies (add-one
    smoothed): the baseline a model must beat to have learned anything beyond token counts."""
    vocab = int(max(train_tokens.max(), val_tokens.max())) + 1
    counts = np.bincount(train_tokens, minlength=vocab) + 1.0
    return float(-np.log(counts[val_tokens] / counts.sum()).mean())


def stream_sample(model, tokenizer, prompt_ids, max_tokens, **sampling):
    """Print the continuation as it is generated."""
    print_stream(tokenizer.decode_stream(model.generate(prompt_ids, max_tokens, **sampling)))


def load_model_and_tokenizer(directory, step=None):
    model, meta, _ = load_checkpoint(directory, step)
    tokenizer = Tokenizer.load(directory)
    _check_vocab(tokenizer, model.config)
    return model, tokenizer, meta


def cmd_sample(args):
    model, tokenizer, _ = load_model_and_tokenizer(args.checkpoint, args.step)
    prompt = [tokenizer.bos_token_id] + tokenizer.encode(args.prompt)
    sys.stdout.write(args.prompt)
    stream_sample(model, tokenizer, prompt, args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                  top_p=args.top_p, seed=args.seed)
    return 0


def _check_vocab(tokenizer, config):
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model expects {config.vocab_size}")


def _check_train_args(hp):
    """Every option, before anything is written to disk."""
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


def build_parser():
    parser = argparse.ArgumentParser(prog="nanochat", description="Train, sample from and chat with a nanochat GPT on minigrad.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a GPT from scratch (or --resume)")
    add_train_args(train)
    train.set_defaults(run=cmd_train)

    sample = sub.add_parser("sample", help="stream text from a checkpoint")
    sample.add_argument("--checkpoint", required=True, help="a checkpoint directory (as written by train)")
    sample.add_argument("--step", type=int, default=None, help="which step (default: the latest)")
    sample.add_argument("--prompt", default="", help="text to continue")
    sample.add_argument("--max-tokens", type=int, default=200)
    sample.add_argument("--temperature", type=float, default=0.8)
    sample.add_argument("--top-k", type=int, default=None)
    sample.add_argument("--top-p", type=float, default=None)
    sample.add_argument("--seed", type=int, default=None)
    sample.set_defaults(run=cmd_sample)
    sft.register(sub)
    chat_cli.register(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, TrainingError) as e:
        message = " ".join(str(e).split())  # one line, however the message was wrapped
        print(f"nanochat {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
