"""`charrnn copies`: how much of a text (or of fresh samples) a run copied from its training text."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..errors import ConfigError
from .application import app, chosen_checkpoint, stderr
from .options import CheckpointArg

if TYPE_CHECKING:  # torch comes with these: not for `charrnn --help`
    import torch

    from ..checkpoint import LoadedModel
    from ..config import SampleConfig
    from ..copies import CopyLimit
    from ..copies.index import TextCopies

DEFAULT_SAMPLES = 20
DEFAULT_LENGTH = 1000


@app.command()
def copies(
    run: CheckpointArg = None,
    texts: Annotated[
        Optional[list[Path]],
        typer.Argument(help="Text files to check ('-': stdin) [default: fresh samples drawn from the run]."),
    ] = None,
    min_span: Annotated[
        int, typer.Option("--min-span", help="Count characters inside copied spans of at least N characters.")
    ] = 20,
    corpus: Annotated[
        Optional[str],
        typer.Option(help="The run's corpus (file, directory or ready corpus name), when not found by name."),
    ] = None,
    samples: Annotated[int, typer.Option(help="Without TEXT: samples to draw.")] = DEFAULT_SAMPLES,
    length: Annotated[int, typer.Option(help="Without TEXT: characters per sample.")] = DEFAULT_LENGTH,
    seed: Annotated[int, typer.Option(help="Without TEXT: seed of the samples.")] = 0,
    temperature: Annotated[float, typer.Option("--temp", help="Without TEXT: temperature of the samples.")] = 0.8,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON on stdout.")] = False,
) -> None:
    """Memorisation: the longest span of each text copied verbatim from the run's training text, and where from.

    Only the training split counts (validation text was held out). Also the share of characters inside copied spans of at least --min-span characters. The index (a suffix array) is built once per corpus and cached.
    """
    from ..checkpoint import load_model
    from ..copies import check_min_span, find_copies, run_index

    check_min_span(min_span)
    if not texts and (samples < 1 or length < 1):
        raise ConfigError("--samples and --length must be at least 1")
    loaded = load_model(chosen_checkpoint(run))
    index = run_index(loaded, corpus, log=lambda m: stderr.print(m, markup=False))
    if texts:
        pieces = [(_read(t), "stdin" if str(t) == "-" else str(t)) for t in texts]
    else:
        stderr.print(
            f"drawing {samples} samples of {length:,} characters (--temp {temperature}, --seed {seed})", markup=False
        )
        drawn = _draw(loaded, samples, length, seed, temperature)
        pieces = [(s, f"sample {k + 1}") for k, s in enumerate(drawn)]
    found = [find_copies(index, text, source=source, min_span=min_span) for text, source in pieces]
    if as_json:
        print(json.dumps({"texts": [f.to_dict() for f in found]}, indent=2))
    else:
        _print_table(found, min_span)


def _read(path: Path) -> str:
    from ..data.tokens import read_text_file

    if str(path) == "-":
        return sys.stdin.read()
    return read_text_file(path, "text")


def _draw(loaded: LoadedModel, count: int, length: int, seed: int, temperature: float) -> list[str]:
    import torch

    from ..config import SampleConfig
    from ..sample import generate

    cfg = SampleConfig(length=length, temperature=temperature)  # checks the values
    generator = torch.Generator().manual_seed(seed)
    return ["".join(generate(loaded.model, loaded.tokenizer, cfg, generator=generator)) for _ in range(count)]


def _where(found: TextCopies) -> str:
    at = found.longest_at
    if at is None:
        return "-"
    if at.file is not None:
        return f"{at.file} line {at.file_line}"
    return f"offset {at.offset:,}, line {at.line:,}"


def _print_table(found: list[TextCopies], min_span: int) -> None:
    width = max(len("text"), *(len(f.source) for f in found))
    print(f"{'text':<{width}} {'chars':>8} {'longest':>8} {f'copied (>={min_span})':>15}  longest from")
    for f in found:
        print(f"{f.source:<{width}} {f.chars:>8,} {f.longest:>8,} {f.copied_share:>15.1%}  {_where(f)}")
    if len(found) > 1:
        longest = max(f.longest for f in found)
        share = sum(f.copied_share * f.chars for f in found) / max(sum(f.chars for f in found), 1)
        print(f"{'all':<{width}} {sum(f.chars for f in found):>8,} {longest:>8,} {share:>15.1%}")


MAX_COPY_HELP = (
    "Redraw any sample, tune (--tunes) or document (--docs) that copies more than N characters verbatim "
    "from the run's training text (at most 10 draws per one asked; stderr says how many were redrawn)."
)


CORPUS_HELP = "With --max-copy: the run's corpus (file, directory or ready corpus name), when not found by name."


def check_max_copy_options(max_copy: int | None, beam: int | None, corpus: str | None) -> None:
    from ..copies import check_max_copy

    if max_copy is None:
        if corpus is not None:
            raise ConfigError("--corpus names the training text that --max-copy checks against; give --max-copy N")
        return
    check_max_copy(max_copy)
    if beam is not None:
        raise ConfigError("--max-copy redraws random samples; --beam draws none (it is deterministic)")


def copy_limit(loaded: LoadedModel, max_copy: int | None, corpus: str | None) -> CopyLimit | None:
    """`--max-copy N`: the run's training-text index (built once, cached) and N; None without it."""
    from ..copies import CopyLimit, run_index

    if max_copy is None:
        return None
    return CopyLimit(run_index(loaded, corpus, log=lambda m: stderr.print(m, markup=False)), max_copy)


def write_capped_samples(
    loaded: LoadedModel, cfg: SampleConfig, prime: str, generator: torch.Generator, limit: CopyLimit
) -> None:
    """`sample --max-copy N`: each sample drawn whole, checked against the training text, printed
    when it copies at most N characters; how many were redrawn, and why, on stderr."""
    from ..copies import CappedDraw, draw_capped
    from ..errors import CharRNNError
    from ..sample import generate

    draw = CappedDraw(cfg.num_samples, limit.max_copy, 10 * cfg.num_samples)
    one = lambda: "".join(generate(loaded.model, loaded.tokenizer, cfg, prime=prime, generator=generator))  # noqa: E731
    for n, text in enumerate(draw_capped(one, limit.index, draw, skip=len(prime))):
        sys.stdout.write(("\n" if n else "") + text + ("" if text.endswith("\n") else "\n"))
        sys.stdout.flush()
    stderr.print(draw.summary(), markup=False)
    if len(draw.kept) < draw.asked:
        raise CharRNNError(draw.shortfall())
