"""`charrnn abc check|calibrate`: ABC tunes checked with music21 (the optional [music] extra)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..music.check import DEFAULT_ALLOWANCE
from .application import app, stderr, stdout

if TYPE_CHECKING:
    import torch

    from ..checkpoint import LoadedModel
    from ..config import SampleConfig
    from ..copies import CopyLimit
    from ..music.check import CheckSummary, TuneCheck

abc_app = typer.Typer(
    help="Check ABC tunes, write their MIDI files, calibrate the checker (needs charrnn[music]).", no_args_is_help=True
)
app.add_typer(abc_app, name="abc")


@abc_app.command("check")
def abc_check(
    file: Annotated[Path, typer.Argument(help="An ABC file of tunes separated by blank lines.")],
    midi: Annotated[
        Optional[Path],
        typer.Option("--midi", help="Write a .mid file for each tune (valid or not) into this directory."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of one line per tune.")] = False,
    max_misfit_bars: Annotated[
        int, typer.Option("--max-misfit-bars", help="Bars per tune allowed not to fit the meter...")
    ] = DEFAULT_ALLOWANCE.bars,
    max_misfit_share: Annotated[
        float, typer.Option("--max-misfit-share", help="...or this share of its bars, where that is more.")
    ] = DEFAULT_ALLOWANCE.share,
) -> None:
    """For each tune: does it parse, has it a title, meter, key and notes, is it finished (not cut
    off), do its bars fit its meter? One line per tune, then the share valid. With --midi, a MIDI
    file for every tune music21 can render, valid or not."""
    from ..music.check import MisfitAllowance, check_abc_file

    summary = check_abc_file(file, midi, MisfitAllowance(max_misfit_bars, max_misfit_share))
    if as_json:
        stdout.print_json(json.dumps(summary.to_dict()))
    else:
        _print_verdicts(summary, midi)
    if summary.valid < summary.tunes:  # a verdict, like a linter's: a bad one fails
        raise typer.Exit(1)


def _print_verdicts(summary: CheckSummary, midi: Optional[Path]) -> None:
    for r in summary.results:
        stdout.print(verdict_line(r), markup=False)
    low, high = summary.valid_interval
    unfinished = f", {summary.unfinished} unfinished" if summary.unfinished else ""
    stdout.print(
        f"{summary.valid} of {summary.tunes} tunes valid ({summary.valid_share:.0%}; 95% interval {low:.0%}-{high:.0%})"
        + unfinished,
        markup=False,
    )
    if midi is not None:
        _say_midi(summary.midi_files, [r for r in summary.results if not r.midi], midi)


LINE_WIDTH = 79  # one line per tune in an 80-column terminal or a log


def verdict_line(r: TuneCheck) -> str:
    """'   2  invalid     First and Second          misfit bars: 3, 5' (at most LINE_WIDTH): the
    verdict is valid, invalid or unfinished; what is wrong is shortened to fit, never cut mid-word."""
    verdict = "valid" if r.valid else "unfinished" if r.unfinished else "invalid"
    head = f"{r.index:>4}  {verdict:<10}  {r.title[:24] or '(no title)':<24}"
    problems = [
        _EXCEPTION_NAME.sub("", p).replace("bars that do not fit the meter", "misfit bars") for p in r.problems()
    ]
    if r.unfinished:
        problems[0] = "cut off before its end"
    return f"{head}  {fit_problems(problems, LINE_WIDTH - len(head) - 2)}".rstrip()


# "does not parse: ABCHandlerException: ..." -> "does not parse: ...": the class is for --json.
_EXCEPTION_NAME = re.compile(r"(?<=: )\w+(?:Exception|Error): ")


def fit_problems(problems: list[str], width: int) -> str:
    """The problems joined with '; ' in at most `width` characters: those that fit whole, the
    next one shortened at a word boundary with '...', then '(+N more)' for any left out."""
    out = ""
    for i, problem in enumerate(problems):
        joined = f"{out}; {problem}" if out else problem
        rest = len(problems) - i - 1
        more = f" (+{rest} more)" if rest else ""
        if len(joined) + len(more) <= width:
            out = joined
            continue
        room = width - len(out) - (2 if out else 0) - len(more) - 3
        cut = problem[: room + 1].rsplit(" ", 1)[0] if room > 10 else ""
        if cut:
            return f"{out}{'; ' if out else ''}{cut.rstrip(' :;,')}...{more}"
        return f"{out} (+{rest + 1} more)" if out else problem[: width - 3] + "..."
    return out


def _say_midi(written: int, missing: list[TuneCheck], folder: Path) -> None:
    """'wrote 5 MIDI files to DIR/', and why the others got none."""
    line = f"wrote {written} MIDI file{'s' * (written != 1)} to {folder}/"
    failed = [r for r in missing if r.midi_error]
    if len(missing) > len(failed):
        line += f"; none for {len(missing) - len(failed)} tune(s) without notes or that do not parse"
    if failed:
        line += (
            f"; none for {len(failed)} tune(s) music21 cannot render (#{failed[0].index}: {failed[0].midi_error[:60]})"
        )
    stderr.print(line, markup=False)


def require_music() -> None:
    """Stop with the install hint before a long job that would need music21 at its end."""
    from ..music.folk import require_music21

    require_music21()


def sample_tunes(
    loaded: LoadedModel,
    cfg: SampleConfig,
    generator: torch.Generator,
    count: int,
    valid_only: bool,
    max_attempts: int | None,
    midi: Optional[Path],
    limit: CopyLimit | None = None,
) -> None:
    """`sample --tunes N` with --valid-only and/or --midi: tunes to stdout as they pass, how the
    draw went on stderr, MIDI files into `midi`. With `limit` (--max-copy), a tune copying more
    of the training text is rejected like an invalid one."""
    import sys

    from ..documents import DROPPED_TOO_LONG, DROPPED_WRONG_START, generate_documents
    from ..errors import CharRNNError
    from ..music.check import tune_file_name, write_midi
    from ..music.tunes import ATTEMPTS_PER_TUNE, TuneDraw, check_max_attempts, draw_tunes

    bound = check_max_attempts(count, max_attempts) if valid_only else ATTEMPTS_PER_TUNE * count
    draw = TuneDraw(count, bound, kept_as="valid" if valid_only else "kept")
    # A tune the sampler cut off at --length is unfinished, and the note says so.
    drops = {DROPPED_TOO_LONG: f"unfinished (no end within --length {cfg.length})", DROPPED_WRONG_START: "no X: header"}
    documents = generate_documents(
        loaded.model,
        loaded.tokenizer,
        bound,
        cfg,
        start="X:",
        max_chars=cfg.length,
        attempts=1,
        generator=generator,
        on_drop=lambda why: draw.reject(drops[why]),
    )
    if limit is not None:
        copied = f"copied more than {limit.max_copy} characters of the training text"
        documents = limit.filtered(documents, lambda _: draw.reject(copied))
    missing: list[TuneCheck] = []
    for tune in draw_tunes(documents, draw, valid_only=valid_only, render_midi=midi is not None):
        sys.stdout.write(("\n" if len(draw.kept) > 1 else "") + tune.text + "\n")
        sys.stdout.flush()
        if midi is not None and tune.midi is not None:
            write_midi(midi / tune_file_name(len(draw.kept), tune.check.title), tune.midi)
        elif midi is not None:
            missing.append(tune.check)
    if valid_only or limit is not None:
        stderr.print(draw.summary(), markup=False)
    if midi is not None:
        _say_midi(len(draw.kept) - len(missing), missing, midi)
    if not draw.complete:
        what = "tunes passed the checker" if valid_only else "complete tunes came out"
        raise CharRNNError(
            f"only {len(draw.kept)} of {count} {what} in {draw.drawn} drawn "
            f"({'raise --max-attempts, ' if valid_only else ''}{'raise --max-copy, ' if limit else ''}"
            f"train longer, or raise --length above {cfg.length})"
        )


@abc_app.command("calibrate")
def abc_calibrate(
    corpus: Annotated[str, typer.Argument(help="An ABC file, or the name of a ready corpus.")] = "folk-abc",
    sample: Annotated[int, typer.Option(help="How many real tunes to draw (each is also damaged 5 ways).")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed of the draw and the corruptions.")] = 0,
) -> None:
    """Share of real tunes the checker passes and of corrupted copies it rejects, for several
    allowances of misfit bars, the default among them (JSON on stdout)."""
    from ..data.corpora import get_corpus
    from ..music.calibrate import calibrate
    from ..music.folk import split_documents

    path = Path(corpus) if Path(corpus).exists() else get_corpus(corpus, log=lambda m: stderr.print(m, markup=False))
    tunes = split_documents(path.read_text(encoding="utf-8"))
    result = calibrate(tunes, sample, seed, progress=lambda m: stderr.print(m, markup=False))
    stdout.print_json(json.dumps(result))
