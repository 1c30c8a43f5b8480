"""`nanochat import` and `nanochat export`: convert between this project's checkpoints, PyTorch
nanochat's and Hugging Face transformers'. The output directory appears only when the whole
conversion has succeeded."""
from nanochat.checkpoint import save_checkpoint
from nanochat.interop.hf import write_hf
from nanochat.interop.load import read_any, write_dir_atomic
from nanochat.interop.native import write_native


def register(sub):
    p = sub.add_parser("import", help="convert a PyTorch nanochat or Hugging Face checkpoint to this project's",
                       allow_abbrev=False)
    p.add_argument("src", help="a PyTorch nanochat dir (model_*.pt, meta_*.json) or a Hugging Face NanoChat dir (required)")
    p.add_argument("--out", required=True, help="new checkpoint directory, which must not exist or be empty (required)")
    p.add_argument("--step", type=int, default=None, help="which step of a nanochat dir (default: the latest)")
    p.add_argument("--tokenizer", default=None, help="folder with tokenizer.pkl (default: found beside SRC)")
    p.set_defaults(run=cmd_import)

    p = sub.add_parser("export", help="write a checkpoint for Hugging Face transformers or PyTorch nanochat",
                       allow_abbrev=False)
    p.add_argument("--checkpoint", required=True, help="any checkpoint directory `import` reads, or ours (required)")
    p.add_argument("--format", required=True, choices=("hf", "nanochat"), help="hf: transformers' NanoChatForCausalLM; "
                   "nanochat: model_*.pt + meta_*.json + tokenizer.pkl for nanochat's checkpoint manager (required)")
    p.add_argument("--out", required=True, help="new output directory, which must not exist or be empty (required)")
    p.add_argument("--step", type=int, default=None, help="which step (default: the latest)")
    p.set_defaults(run=cmd_export)


def cmd_import(args):
    model, tokenizer, info = read_any(args.src, step=args.step, tokenizer_dir=args.tokenizer)

    def write(tmp):
        save_checkpoint(tmp, model, info["step"], meta={"imported_from": str(args.src), "source_format": info["format"]})
        tokenizer.save(tmp)
    write_dir_atomic(args.out, write)
    c = model.config
    print(f"imported {info['format']} checkpoint (step {info['step']}): {c.n_layer} layers, width {c.n_embd}, "
          f"{model.num_parameters():,} parameters -> {args.out}")
    return 0


def cmd_export(args):
    model, tokenizer, info = read_any(args.checkpoint, step=args.step)
    if args.format == "hf":
        write_dir_atomic(args.out, lambda tmp: write_hf(tmp, model, tokenizer))
    else:
        write_dir_atomic(args.out, lambda tmp: write_native(tmp, model, tokenizer, info["step"]))
    print(f"exported {args.checkpoint} ({info['format']}, step {info['step']}) as {args.format} -> {args.out}")
    return 0
