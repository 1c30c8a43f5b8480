"""The `nanochat` command: one module per subcommand, each with `register(subparsers)` and
`cmd_<name>(args)`; this package's parser gathers them and `main` turns every bad input into a
one-line error with exit status 1, never a traceback.

The commands import the library below them (nanochat.train, checkpoint, engine, ...), never each
other's parsers, and nothing in the library imports a command."""
import argparse
import errno
import os
import sys

from nanochat import parallel
from nanochat.commands import chat, convert, sample, serve, sft, train
from nanochat.train import TrainingError

COMMANDS = (train, sample, sft, chat, serve, convert)  # in the order `nanochat --help` lists them


def build_parser():
    # allow_abbrev=False: a mistyped --step must not silently mean --steps
    parser = argparse.ArgumentParser(prog="nanochat", allow_abbrev=False,
                                     description="Train, sample from and chat with a nanochat GPT on minigrad.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    name = f"nanochat {args.command}"
    if sys.stdout is None:  # started with stdout closed (>&-)
        print(f"{name}: error: standard output is closed", file=sys.stderr)
        return 1
    try:
        status = args.run(args)
        sys.stdout.flush()  # a full disk or a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as Unix tools do
        _discard_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe
    except (ValueError, OSError, RecursionError, TrainingError) as e:
        return parallel.report_error(f"{name}: error: {_one_line(e)}")
    except KeyboardInterrupt:
        return parallel.report_error("\ninterrupted", 130)


def _one_line(e):
    if isinstance(e, OSError) and e.strerror:
        if e.filename:
            return f"{e.filename}: {e.strerror}"
        # every file this package writes names itself in its errors, so a nameless write error is stdout's
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EBADF, errno.EIO):
            _discard_stdout()
            return f"cannot write to standard output: {e.strerror}"
        return e.strerror
    if isinstance(e, RecursionError):
        return "input nested too deeply"
    return " ".join(str(e).split())  # one line, however the message was wrapped


def _discard_stdout():
    """Point stdout at /dev/null so the interpreter's last flush of what is still buffered cannot
    fail again with a traceback."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's StringIO)
        pass

