"""`charrnn sample`: stream generated text to stdout."""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..config import SampleConfig
from ..errors import CharRNNError
from .application import app, chosen_checkpoint, stderr
from .beam import BEAM_HELP, LENGTH_PENALTY_HELP, check_beam_options, write_beam
from .copies import CORPUS_HELP, MAX_COPY_HELP, check_max_copy_options, copy_limit, write_capped_samples
from .options import CheckpointArg, default, opt

if TYPE_CHECKING:  # torch comes with these: not for `charrnn --help`
    import torch

    from ..checkpoint import LoadedModel
    from ..copies import CopyLimit

S = SampleConfig

# ----------------------------------------------------------------------------- sample


@app.command()
def sample(
    checkpoint: CheckpointArg = None,
    temperature: Annotated[float, opt(S, "temperature")] = default(S, "temperature"),
    top_k: Annotated[int, opt(S, "top_k")] = default(S, "top_k"),
    top_p: Annotated[float, opt(S, "top_p")] = default(S, "top_p"),
    prime: Annotated[str, typer.Option(help="Text to start from (printed first).")] = "",
    prime_file: Annotated[Optional[Path], typer.Option("--prime-file", help="Read the prime text from a file.")] = None,
    length: Annotated[int, opt(S, "length")] = default(S, "length"),
    num_samples: Annotated[int, opt(S, "num_samples")] = default(S, "num_samples"),
    seed: Annotated[Optional[int], opt(S, "seed")] = default(S, "seed"),
    stop: Annotated[Optional[str], opt(S, "stop")] = default(S, "stop"),
    drop_unknown: Annotated[
        bool, typer.Option("--drop-unknown", help="Leave out prime characters the model never saw.")
    ] = False,
    docs: Annotated[
        Optional[int],
        typer.Option(
            "--docs",
            help="Emit N whole documents (text between blank lines), one blank line apart; --length caps each.",
        ),
    ] = None,
    tunes: Annotated[
        Optional[int],
        typer.Option("--tunes", help="Emit N whole ABC tunes, each from its X: header to its end, renumbered 1..N."),
    ] = None,
    valid_only: Annotated[
        bool,
        typer.Option("--valid-only", help="With --tunes: draw until N tunes pass `abc check` (see --max-attempts)."),
    ] = False,
    max_attempts: Annotated[
        Optional[int],
        typer.Option("--max-attempts", help="With --valid-only: tunes to draw at most [default: 10 per tune asked]."),
    ] = None,
    midi: Annotated[
        Optional[Path], typer.Option("--midi", help="With --tunes: write each tune's MIDI file into this directory.")
    ] = None,
    beam: Annotated[Optional[int], typer.Option("--beam", metavar="K", help=BEAM_HELP)] = None,
    length_penalty: Annotated[
        Optional[float], typer.Option("--length-penalty", metavar="A", help=LENGTH_PENALTY_HELP)
    ] = None,
    max_copy: Annotated[Optional[int], typer.Option("--max-copy", help=MAX_COPY_HELP)] = None,
    corpus: Annotated[Optional[str], typer.Option("--corpus", help=CORPUS_HELP)] = None,
) -> None:
    """Generate text from a trained model; the text alone goes to stdout."""
    from ..data.tokens import read_text_file

    if prime_file is not None:
        if prime:
            raise CharRNNError("give --prime or --prime-file, not both")
        prime = read_text_file(prime_file, "--prime-file")
    if stop is not None and "\\" in stop:
        stop = _unescape(stop)
    cfg = SampleConfig(
        temperature=temperature, top_k=top_k, top_p=top_p, length=length, num_samples=num_samples, seed=seed, stop=stop
    )

    from ..checkpoint import load_model
    from ..sample import check_prime

    drawn = {"--temp": temperature != default(S, "temperature"), "--top-k": top_k != default(S, "top_k")}
    drawn |= {"--top-p": top_p != default(S, "top_p"), "--seed": seed is not None, "--num-samples": num_samples != 1}
    check_beam_options(beam, length_penalty, drawn, docs, valid_only, midi)
    check_max_copy_options(max_copy, beam, corpus)
    if docs is not None or tunes is not None:
        _check_document_options(docs, tunes, prime, stop, num_samples)
    if tunes is None and (valid_only or max_attempts is not None or midi is not None):
        raise CharRNNError("--valid-only, --max-attempts and --midi go with --tunes N")
    if max_attempts is not None and not valid_only:
        raise CharRNNError("--max-attempts bounds the draws of --valid-only; give both")
    if tunes is not None and (valid_only or midi is not None):
        from ..music.tunes import check_max_attempts
        from .music import require_music

        check_max_attempts(tunes, max_attempts)
        require_music()
    loaded = load_model(chosen_checkpoint(checkpoint))
    prime, dropped = check_prime(loaded.tokenizer, prime, drop_unknown)
    if dropped:
        stderr.print(f"note: left out {len(dropped)} unknown prime character(s)", markup=False)
    if beam is not None:
        write_beam(loaded, cfg, prime, beam, length_penalty or 0.0, tunes)
        return
    generator = _generator(cfg)
    limit = copy_limit(loaded, max_copy, corpus)
    if tunes is not None and (valid_only or midi is not None):
        from .music import sample_tunes

        sample_tunes(loaded, cfg, generator, tunes, valid_only, max_attempts, midi, limit)
        return
    if docs is not None or tunes is not None:
        _write_documents(loaded, cfg, generator, docs, tunes, limit)
        return
    if limit is not None:
        write_capped_samples(loaded, cfg, prime, generator, limit)
        return
    _write_samples(loaded, cfg, prime, generator)


def _generator(cfg: SampleConfig) -> torch.Generator:
    """The draws' generator, seeded by --seed or a seed drawn here (said on stderr, to repeat the text)."""
    import torch

    if cfg.seed is None:
        seed = random.randrange(2**31)
        if cfg.temperature > 0:  # greedy text (--temp 0) is the same whatever the seed
            stderr.print(f"seed {seed} (pass --seed {seed} to get this text again)")
    else:
        seed = cfg.seed
    return torch.Generator().manual_seed(seed)


def _write_samples(loaded: LoadedModel, cfg: SampleConfig, prime: str, generator: torch.Generator) -> None:
    """cfg.num_samples samples on stdout, streamed, a blank line apart; each headed on stderr.
    They are drawn at once, as one batch (`generate_samples`): the first streams as it comes."""
    from ..sample import generate_samples

    out = sys.stdout
    current, last = -1, ""
    for index, piece in generate_samples(loaded.model, loaded.tokenizer, cfg, prime=prime, generator=generator):
        if index != current:
            if current >= 0:
                out.write("" if last.endswith("\n") else "\n")
                out.write("\n")  # a blank line between samples (each ends with a newline)
            if cfg.num_samples > 1:  # on a terminal this heads each sample; stdout keeps the text alone
                out.flush()
                stderr.print(f"--- sample {index + 1} of {cfg.num_samples} ---", markup=False)
            current, last = index, ""
        out.write(piece)
        out.flush()
        last = piece or last
    if not last.endswith("\n"):
        out.write("\n")
    out.flush()


def _unescape(text: str) -> str:
    """Backslash escapes (\\n, \\t, \\u00e9) decoded; other characters, non-ASCII ones included, kept."""
    try:
        # backslashreplace turns characters beyond Latin-1 into \\uXXXX, which the codec turns back.
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as exc:
        raise CharRNNError(f"--stop {text!r}: bad backslash escape ({exc.reason})") from None


def _check_document_options(
    docs: int | None, tunes: int | None, prime: str, stop: str | None, num_samples: int
) -> None:
    if docs is not None and tunes is not None:
        raise CharRNNError("give --docs or --tunes, not both")
    name = "--tunes" if tunes is not None else "--docs"
    if (tunes if tunes is not None else docs or 0) < 1:
        raise CharRNNError(f"{name} must be at least 1")
    if prime or stop is not None or num_samples != 1:
        raise CharRNNError(
            f"{name} starts each document at its beginning and ends it at a blank line: "
            "it cannot be combined with --prime, --prime-file, --stop or --num-samples"
        )


def _write_documents(
    loaded: LoadedModel,
    cfg: SampleConfig,
    generator: torch.Generator,
    docs: int | None,
    tunes: int | None,
    limit: CopyLimit | None = None,
) -> None:
    """`--docs N` / `--tunes N`: whole documents on stdout as they come (tunes renumbered X:1..N);
    with `limit` (--max-copy), those copying too much of the training text are redrawn."""
    from ..copies import CappedDraw, keep_capped
    from ..documents import DROPPED_TOO_LONG, generate_documents, renumber_field

    count = tunes if tunes is not None else docs or 0
    what = "tunes" if tunes is not None else "documents"
    dropped = Counter[str]()
    bound = count * 10  # documents drawn at most, the sampler's drops included (generate_documents' default)
    documents = generate_documents(
        loaded.model,
        loaded.tokenizer,
        count if limit is None else bound,
        cfg,
        start="X:" if tunes is not None else "",
        max_chars=cfg.length,
        attempts=10 if limit is None else 1,
        generator=generator,
        on_drop=lambda why: dropped.update([why]),
    )
    draw = CappedDraw(count, limit.max_copy if limit else 0, bound, what)
    kept = documents if limit is None else keep_capped(documents, limit, draw)
    written = 0
    for doc in kept:
        written += 1
        doc = renumber_field(doc, "X:", written) if tunes is not None else doc
        sys.stdout.write(("\n" if written > 1 else "") + doc + "\n")
        sys.stdout.flush()
    if dropped[DROPPED_TOO_LONG]:  # never printed: say so, they are what --length cost
        stderr.print(
            f"note: left out {dropped[DROPPED_TOO_LONG]} unfinished {what[:-1]}(s) (no end within --length {cfg.length})",
            markup=False,
        )
    if limit is not None:
        stderr.print(draw.summary(), markup=False)
    if written < count:
        if draw.redrawn:
            raise CharRNNError(draw.shortfall())
        why = _why_short(loaded, cfg, what, written, dropped)
        raise CharRNNError(f"the model wrote only {written} complete {what} of {count} asked: {why}")


def _why_short(loaded: LoadedModel, cfg: SampleConfig, what: str, written: int, dropped: Counter[str]) -> str:
    """The true cause of too few documents, from the vocabulary and what the sampler dropped."""
    from ..documents import DROPPED_TOO_LONG, DROPPED_WRONG_START

    unfinished, other_start = dropped[DROPPED_TOO_LONG], dropped[DROPPED_WRONG_START]
    corpus = loaded.meta.get("corpus") or "its corpus"
    if what == "tunes" and loaded.tokenizer.unknown_chars("X:"):
        return f"the model never saw 'X:', the header every ABC tune starts with: it was trained on {corpus}"
    if what == "tunes" and written == 0 and other_start:
        return (
            f"none of the {other_start} documents it finished began with an X: header: it was trained on {corpus}, "
            "which seems to hold no ABC tunes (--tunes needs a model trained on ABC tunes, such as folk-abc)"
        )
    if unfinished:
        return (
            f"{unfinished} ran past --length {cfg.length} unfinished and were dropped "
            f"(raise --length if its {what} are long, or train it longer)"
        )
    return f"{other_start} did not begin as asked (train it longer)"
