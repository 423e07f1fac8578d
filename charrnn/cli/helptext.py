"""What `--help` shows a user meeting charrnn for the first time.

Typer renders help texts as Rich markup, which eats anything in square brackets that looks like
a tag: `[default: 200]` and `charrnn[plot]` vanish. Its type column shows `<bool>` beside flags
(as if they took a value) and Python type names (`<str>`, `<int>`) beside options. `tidy` walks
the Click command tree once, before Click parses or prints anything, and fixes all of it in one
place, so every command, including ones added later, gets the same treatment:

- help texts are escaped, so they print as written;
- flags get no metavar; an option gets one that says what it takes (N, X, TEXT, PATH, or the
  choices a|b|c) unless its declaration names one (metavar="GLOB"); an argument shows its name;
- top-level commands are listed in the order a user meets them (`COMMAND_ORDER`); a command
  missing from that list comes after those in it, in the order it was registered.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from rich.markup import escape

# train and sample first: what a new user does; then what they reach for next; bench last.
COMMAND_ORDER = (
    "train",
    "sample",
    "corpus",
    "info",
    "eval",
    "plot",
    "visualize",
    "gradients",
    "copies",
    "abc",
    "export",
    "serve",
    "bench",
)

# Options whose value has the same meaning in every command, named for it rather than its type.
OPTION_METAVARS = {"--time-budget": "DURATION"}

_TIDIED = "_charrnn_help_tidied"


def ordered(names: list[str]) -> list[str]:
    """`names` in COMMAND_ORDER, then the others in their given order."""
    known = [n for n in COMMAND_ORDER if n in names]
    return known + [n for n in names if n not in COMMAND_ORDER]


def tidy(command: Any) -> None:
    """Escape help texts and set readable metavars on `command` and everything under it (once)."""
    if getattr(command, _TIDIED, False):
        return
    setattr(command, _TIDIED, True)
    for attr in ("help", "short_help", "epilog"):
        text = getattr(command, attr, None)
        if text:
            setattr(command, attr, escape(_one_line_summary(text)))
    for param in command.params:
        _tidy_param(param)
    make_help_option = command.get_help_option  # --help is made on first use, outside `params`

    def get_help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)


def _one_line_summary(text: str) -> str:
    """The first paragraph (a command's summary in lists) as one line: Rich mode keeps a
    docstring's line breaks, which cut the summary mid-sentence in the commands panel."""
    first, sep, rest = inspect.cleandoc(text).partition("\n\n")
    return " ".join(first.split()) + sep + rest


def _tidy_param(param: Any) -> None:
    help_text = getattr(param, "help", None)
    if help_text:
        param.help = escape(help_text)
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.metavar = ""  # a flag takes no value: show none
        return
    kind = kind_of(param)
    if param.metavar is None:
        is_argument = param.param_type_name == "argument"
        named = next((OPTION_METAVARS[o] for o in param.opts if o in OPTION_METAVARS), None)
        param.metavar = (param.name or "").upper() if is_argument else named or kind
        if param.nargs != 1 and not is_argument:  # an argument's usage adds its own "..."
            param.metavar += "..."
    if param.param_type_name == "argument":
        # Typer's type column for an argument shows its Python type (<str>) whatever the metavar
        param.display_type_rich = lambda ctx=None: kind


def kind_of(param: Any) -> str:
    """What a value of `param` is, read at a glance: its choices (a|b|c), N for a whole number,
    X for a real one, PATH, or TEXT."""
    desc = getattr(param, "type_descriptor", None)  # Typer's own parameter types (recent Typer)
    if desc is not None:
        choices = desc.choices
        annotation = desc.annotation
        if typing.get_origin(annotation) in (list, tuple) and typing.get_args(annotation):
            annotation = typing.get_args(annotation)[0]
        name = getattr(annotation, "__name__", str(annotation))
    else:  # a Click ParamType (older Typer)
        choices = getattr(param.type, "choices", None)
        name = param.type.name
    if choices:
        return "|".join(str(getattr(c, "value", c)) for c in choices)
    return _KINDS.get(name.lower(), name.upper())


_KINDS = {"int": "N", "integer": "N", "float": "X", "str": "TEXT", "text": "TEXT", "path": "PATH"}
