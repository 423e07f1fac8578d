"""What `--help` shows: every default and extra as written, no `<bool>`, commands in the order a
user meets them, `--version`."""

from __future__ import annotations

import re

import pytest
import typer.main

from charrnn import __version__
from charrnn.cli import app
from charrnn.cli.helptext import COMMAND_ORDER, ordered


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: nothing is cut by wrapping


def _command_paths(command, prefix=()):
    """Every command and group of the CLI, as argument tuples: (), ("train",), ("abc", "check"), ..."""
    yield prefix
    for name, sub in getattr(command, "commands", {}).items():
        yield from _command_paths(sub, (*prefix, name))


def _declared_brackets(command) -> list[str]:
    """The [...] phrases written in a command's help text and its options' help texts."""
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    return [m for text in texts for m in re.findall(r"\[[^\]\s][^\]]*\]", " ".join(text.split()))]


def _lookup(command, path):
    for name in path:
        command = command.commands[name]
    return command


def test_every_bracketed_default_and_extra_is_shown(cli, wide):
    # The tree is built fresh (as `app()` does), so the help texts are still as declared.
    root = typer.main.get_command(app)
    checked = 0
    for path in _command_paths(root):
        shown = " ".join(cli(*path, "--help").stdout.split())
        for phrase in _declared_brackets(_lookup(root, path)):
            assert phrase in shown, f"charrnn {' '.join(path)} --help lost {phrase}"
            checked += 1
    assert checked >= 5  # the train defaults, charrnn[plot], charrnn[music], ...


def test_top_level_help_names_extras_and_lists_train_and_sample_first(cli, wide):
    shown = cli("--help").stdout
    for extra in ("plot", "music", "export", "serve"):
        assert f"charrnn[{extra}]" in shown, extra
    listed = re.findall(r"^│ (\w+) ", shown.split("Commands")[1], flags=re.M)
    assert listed[:2] == ["train", "sample"] and listed[-1] == "bench", listed


def test_train_help_shows_defaults_and_no_bool_metavars(cli, wide):
    shown = cli("train", "--help").stdout
    assert "[default: 200;" in shown and "[default: checkpoints/<corpus name>]" in shown
    assert "charrnn[tensorboard]" in shown
    assert "<bool>" not in shown and "<int>" not in shown
    assert re.search(r"--resume +Continue", shown), "a flag shows no metavar"
    assert re.search(r"--layers +N +Stacked", shown)
    assert re.search(r"--model +lstm\|gru\|rnn\|rnn-relu ", shown)
    assert re.search(r"--time-budget +DURATION ", shown) and re.search(r"--include +GLOB ", shown)


def test_no_help_anywhere_shows_python_type_names(cli, wide):
    root = typer.main.get_command(app)
    for path in _command_paths(root):
        shown = cli(*path, "--help").stdout
        assert not re.search(r"<(bool|int|float|str|path)>", shown), f"charrnn {' '.join(path)} --help"


def test_commands_missing_from_the_order_come_last_in_registration_order():
    assert ordered(["bench", "zeta", "sample", "alpha", "train"]) == ["train", "sample", "bench", "zeta", "alpha"]
    assert COMMAND_ORDER[:2] == ("train", "sample")


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"charrnn {__version__}"
