"""How a new user meets the project: CI installs as they do (a fresh venv), the Quick start's plot
is part of the install, the README's commands run in sequence as written, and every option of
every command is documented and matched exactly."""
import argparse
import contextlib
import io
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nanochat.commands import build_parser, main

REPO = Path(__file__).resolve().parents[2]


def test_ci_installs_into_a_fresh_venv_inside_the_clone_and_runs_the_readme_test_command():
    script = (REPO / ".ci" / "run").read_text()
    lines = [line.split("#")[0].strip() for line in script.splitlines()]
    venv = re.search(r'python3 -m venv "?\$?\{?(\w+)', script)
    assert venv, "no `python3 -m venv` in .ci/run"
    venv_dir = re.search(rf"^{venv.group(1)}=(\S+)", script, re.M).group(1)
    # the venv lives inside the clone and git ignores it
    assert not venv_dir.startswith("/")
    assert subprocess.run(["git", "check-ignore", "-q", f"{venv_dir}/bin/python"], cwd=REPO).returncode == 0
    activate = next(i for i, line in enumerate(lines) if "/bin/activate" in line)
    install = next(i for i, line in enumerate(lines) if "pip install" in line and ".[dev]" in line)
    kernel = next(i for i, line in enumerate(lines) if "ipykernel install" in line)
    tests = next(i for i, line in enumerate(lines) if re.fullmatch(r"python -m pytest", line))
    assert activate < install < kernel < tests  # everything with the venv's python
    readme = (REPO / "README.md").read_text()
    assert "python -m pytest" in readme.split("## Tests", 1)[1].split("```")[1]


def test_the_loss_curve_png_is_part_of_the_default_install():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(re.match(r"matplotlib\b", dep) for dep in project["dependencies"])


def test_a_missing_matplotlib_is_one_line_saying_how_to_get_the_plot(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    data = tmp_path / "corpus.txt"
    data.write_text(" ".join(f"word{i % 50} fox dog." for i in range(3000)))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--depth", "1", "--n-embd", "32",
                   "--n-head", "2", "--vocab-size", "300", "--batch-size", "4", "--seq-len", "32", "--steps", "1",
                   "--eval-every", "0", "--sample-tokens", "0"])
    assert rc == 0, err.getvalue()
    assert not (tmp_path / "run" / "loss.png").exists()
    [line] = [line for line in out.getvalue().splitlines() if line.startswith("loss curve")]
    assert "pip install matplotlib" in line


def readme_commands(section):
    text = re.split(rf"^#+ {re.escape(section)}\n", (REPO / "README.md").read_text(), flags=re.M)[1]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_readme_command_sequence_never_trains_twice_into_one_directory():
    """Quick start then "Pretrain, fine-tune, chat", run in order as a reader would: a second
    `nanochat train` into the same --out without --resume would be refused."""
    trained = []
    for line in readme_commands("Quick start") + readme_commands("Pretrain, fine-tune, chat"):
        for command in line.split("&&"):
            words = command.split()
            if words[:2] == ["nanochat", "train"] and "--resume" not in words:
                trained.append(words[words.index("--out") + 1] if "--out" in words else "runs/base")
            if words[:2] == ["nanochat", "sft"]:
                source = words[words.index("--checkpoint") + 1]
                assert source in trained, f"{command}: {source} was never trained"
    assert trained and len(trained) == len(set(trained)), trained


def all_parsers():
    parser = build_parser()
    yield "nanochat", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_option_of_every_command_has_help_naming_its_default():
    for name, parser in all_parsers():
        assert parser.allow_abbrev is False, name
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and re.search(r"\bdefault\b|\brequired\b", action.help), \
                f"nanochat {name} {action.option_strings}: {action.help!r}"


@pytest.mark.parametrize("argv", [
    ["train", "--step", "2"],  # --steps
    ["sample", "--checkpoint", "x", "--max", "5"],  # --max-tokens
    ["chat", "--checkpoint", "x", "--temp", "0"],  # --temperature
    ["sft", "--checkpoint", "x", "--lr", "2"],  # --lr-scale
])
def test_abbreviated_options_are_refused_not_guessed(argv, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
