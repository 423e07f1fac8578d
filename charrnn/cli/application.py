"""The Typer application every command registers on, the consoles, and the one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from .. import __version__
from ..errors import CharRNNError, Interrupted
from .extras import missing_extra_message
from .helptext import ordered, tidy

# Messages, progress and tables go to stderr; stdout carries only what a command produces
# (sample text, --json output), so it can be redirected cleanly. Markup and emoji codes are off:
# printed strings carry paths, corpus names and tune titles, where "[/a]" or ":x:" is just text.
# Styling is asked for where it is meant: a rich Text with a style.
stderr = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)
stdout = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)


class OneLineErrors(TyperGroup):
    """Turns every known error, Click's usage errors included, into one line on stderr."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        tidy(self)
        try:
            rv = super().main(
                args, prog_name, complete_var, standalone_mode=False, windows_expand_args=windows_expand_args, **extra
            )
        except Interrupted as exc:  # the user's own stop, not a mistake: say what was kept
            fail(str(exc), exc.exit_code, label="stopped")
        except CharRNNError as exc:
            fail(str(exc), exc.exit_code)
        except typer.Abort:
            fail("aborted", 130)
        except BrokenPipeError:  # `charrnn sample | head`: the reader left, nothing is wrong
            sys.stderr.close()
            sys.exit(0)
        except ImportError as exc:  # an optional extra missing, whenever its import happens
            message = missing_extra_message(exc.name, self._command_of(args))
            if message is None:
                raise
            fail(message, 1)
        except Exception as exc:
            # Click's usage errors (typer vendors Click, so match on the interface, not the class).
            code = getattr(exc, "exit_code", None)
            if hasattr(exc, "format_message") and isinstance(code, int):
                fail(exc.format_message(), code)
            raise
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv

    def _command_of(self, args: Sequence[str] | None) -> str:
        """'charrnn abc check', 'charrnn serve', ... from the command line's first words."""
        words = [w for w in (sys.argv[1:] if args is None else list(args)) if not w.startswith("-")]
        found, group = ["charrnn"], self
        for word in words[:2]:
            command = getattr(group, "commands", {}).get(word)
            if command is None:
                break
            found.append(word)
            group = command
        return " ".join(found)

    def list_commands(self, ctx: Any) -> list[str]:  # ctx: a Context of the Click that Typer vendors
        return ordered(super().list_commands(ctx))


def fail(message: str, code: int, label: str = "error") -> None:
    """One line on stderr ("error: ...", or another `label`), then exit with `code`."""
    one_line = " ".join(str(message).split())
    print(f"{label}: {one_line}", file=sys.stderr)
    sys.exit(code)


def chosen_checkpoint(target: Path | None) -> Path:
    """The checkpoint a command uses (see tensorfile.choose_checkpoint); when charrnn chose it
    (the newest run, a run's best file), stderr says which and why."""
    from ..tensorfile import choose_checkpoint

    choice = choose_checkpoint(target)
    if choice.why:
        stderr.print(f"using {choice.path} ({choice.why})", markup=False)
    return choice.path


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


app = typer.Typer(
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Train character-level or subword RNN language models and sample text from them."""
