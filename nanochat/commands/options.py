"""Options and checks shared by several commands: for those that train (`train`, `sft`), their
hyperparameters (defaults, resume, checks), resuming (from the latest or a chosen step), pruning
old checkpoints and option types; for those that run a model (`sample`, `chat`, `serve`), --dtype."""
import math
from dataclasses import dataclass
from typing import Callable

from nanochat import parallel
from nanochat.checkpoint import delete_checkpoint, load_checkpoint, saved_steps
from nanochat.interop.bfloat16 import DTYPES
from nanochat.train import resume


@dataclass(frozen=True)
class Hyperparameters:
    """A training command's hyperparameters: on --resume the checkpoint's values win over the
    defaults, and options given on the command line win over both; `fixed_on_resume` (what fixes
    the model or the data stream) cannot change when a run resumes; `check` refuses a bad set."""
    defaults: dict
    fixed_on_resume: tuple
    check: Callable

    def given(self, args):
        """The options given on the command line (their parser leaves absent ones absent)."""
        return {k: v for k, v in vars(args).items() if k in self.defaults}

    def resolve(self, given, saved=None, base=None):
        """The checked hyperparameters of a run: `given` over `saved` (a resumed run's, None for a
        new run) over `base` (defaults taken from elsewhere) over the defaults."""
        if saved is not None:
            check_unchanged_on_resume(given, saved, self.fixed_on_resume)
        hp = {**self.defaults, **(base or {}), **(saved or {}), **given}
        self.check(hp)
        return hp


def check_unchanged_on_resume(given, saved, names):
    """Options that fix the model or the data stream cannot change when a run resumes."""
    for name in names:
        if name in given and given[name] != saved.get(name):
            raise ValueError(f"--{name.replace('_', '-')} cannot change on --resume (the checkpoint's run used "
                             f"{saved.get(name)!r}); start a new run in another --out instead")


def add_checkpoint_args(p):
    """Resuming and pruning, shared by train and sft."""
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out (default: off)")
    p.add_argument("--resume-step", type=int, default=None, metavar="STEP",
                   help="continue from this step's checkpoint instead (implies --resume; newer checkpoints are "
                        "moved to <out>/superseded) (default: the latest)")
    p.add_argument("--keep-last", type=int, default=0, metavar="N",
                   help="keep only the newest N checkpoints, and any step marked by a file keep_<step> in --out "
                        "(default 0: keep all)")


def check_checkpoint_args(args, out):
    """--keep-last and --resume-step (which implies --resume), before anything is written."""
    if args.keep_last < 0:
        raise ValueError(f"--keep-last must not be negative, got {args.keep_last}")
    if args.resume_step is not None:
        if args.resume_step < 0:
            raise ValueError(f"--resume-step must not be negative, got {args.resume_step}")
        args.resume = True
    if args.resume and not out.is_dir():
        raise FileNotFoundError(f"checkpoint directory {out} does not exist")


def check_option_types(hp, ints, texts=("data",), nullable=()):
    """Integers where integers belong, text (or nothing) in `texts`, finite numbers elsewhere, and
    nothing only where `nullable` allows it: a checkpoint's meta may have been edited, and nan or
    inf would train a poisoned model."""
    for name, value in hp.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            if name not in texts and name not in nullable:
                raise ValueError(f"{flag} must be given, got null")
        elif name in texts:
            if not isinstance(value, str):
                raise ValueError(f"{flag} must be text, got {value!r}")
        elif name in ints:
            if type(value) is not int:
                raise ValueError(f"{flag} must be an integer, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value!r}")


def resume_checkpoint(out, step, args_key, other_command):
    """Load the checkpoint to resume in `out` (the latest, or `step`, moving newer ones aside), refusing
    one written by the other command (its meta lacks `args_key`)."""
    try:
        model, meta, optimizer_state = load_checkpoint(out, step, training=True)
    except ValueError as e:
        failed = saved_steps(out)[-1] if step is None else step
        older = [s for s in saved_steps(out) if s < failed]
        if not older:
            raise
        raise ValueError(f"{e}; --resume-step STEP resumes from an older checkpoint (saved steps: "
                         f"{', '.join(map(str, older))})") from None
    if args_key not in meta:
        raise ValueError(f"{out} holds a checkpoint written by nanochat {other_command} (its meta has no "
                         f"{args_key}); continue it with nanochat {other_command} --resume")
    newer = [s for s in saved_steps(out) if step is not None and s > step]
    for s in newer:
        delete_checkpoint(out, s, into=out / "superseded")
    if newer:
        print(f"moved the checkpoints of steps {', '.join(map(str, newer))} (newer than --resume-step) "
              f"to {out / 'superseded'}")
    return model, meta, optimizer_state


def resume_state(optimizers, optimizer_state, loader, meta, world):
    """The step a run starts from: 0 for a new run (meta None), else the checkpoint's, with the
    optimizers' and the loader's state restored."""
    if meta is None:
        return 0
    start_step = resume(optimizers, optimizer_state, loader, meta)
    print(f"resuming from step {start_step}" + parallel.ranks_changed(meta, world))
    return start_step


def add_model_args(p):
    """--checkpoint, --step and --dtype for the commands that run a model (sample, chat, serve)."""
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint directory: ours (train, sft), PyTorch nanochat's or Hugging Face's (required)")
    p.add_argument("--step", type=int, default=None, help="which step (default: the latest)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="weights in memory: bfloat16 halves them, arithmetic stays float32 (default %(default)s)")
