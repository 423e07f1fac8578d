"""`charrnn sample --beam K`: the most likely continuation instead of a draw (charrnn.beam)."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

from ..errors import CharRNNError
from .application import stderr

if TYPE_CHECKING:  # torch comes with these: not for `charrnn --help`
    from ..beam import Hypothesis
    from ..checkpoint import LoadedModel
    from ..config import SampleConfig

BEAM_HELP = (
    "Beam search with K hypotheses: print the most likely continuation (K=1 is --temp 0) and its "
    "log-probability on stderr. Not with --temp, --top-k, --top-p, --seed or --num-samples."
)
LENGTH_PENALTY_HELP = (
    "With --beam: rank ended texts by log-probability / ((5 + characters) / 6) ** A (GNMT); "
    "0 = log-probability alone, higher favours longer texts (matters with --stop or --tunes)."
)


def check_beam_options(
    beam: int | None,
    length_penalty: float | None,
    drawn: dict[str, bool],
    docs: int | None,
    valid_only: bool,
    midi: object,
) -> None:
    """One line for options a beam search cannot honour. `drawn`: flag -> True when the
    sampling option was given a value other than its default."""
    if beam is None:
        if length_penalty is not None:
            raise CharRNNError("--length-penalty ranks the texts of a beam search: give it with --beam K")
        return
    from ..beam import check_beam

    check_beam(beam, length_penalty or 0.0)
    given = [name for name, on in drawn.items() if on]
    given += ["--docs"] if docs is not None else []
    given += ["--valid-only"] if valid_only else []
    given += ["--midi"] if midi is not None else []
    if given:
        raise CharRNNError(
            f"--beam searches for the most likely text, it draws nothing: it cannot be combined with {', '.join(given)}"
        )


def write_beam(loaded: LoadedModel, cfg: SampleConfig, prime: str, width: int, alpha: float, tunes: int | None) -> None:
    """The best continuation (or the `tunes` best tunes) on stdout; log-probabilities on stderr."""
    from ..beam import beam_search

    if tunes is not None:
        _write_beam_tunes(loaded, cfg, width, alpha, tunes)
        return
    found = beam_search(
        loaded.model, loaded.tokenizer, width, cfg.length, prime=prime, stop=cfg.stop, length_penalty=alpha
    )
    best = found[0]
    text = prime + best.text
    sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    sys.stdout.flush()
    _report(best, width, alpha)


def _report(best: Hypothesis, width: int, alpha: float) -> None:
    nats = best.logprob
    how = "ended at --stop" if best.stopped else "ended at --length"
    penalty = f"; score {best.score:.4f} with --length-penalty {alpha:g}" if alpha else ""
    stderr.print(
        f"beam {width}: log-probability {nats:.4f} nats ({nats / 0.6931471805599453:.4f} bits) over "
        f"{_count(len(best.text), 'character')}, {_count(len(best.token_ids), 'token')} ({how}){penalty}",
        markup=False,
    )


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def _write_beam_tunes(loaded: LoadedModel, cfg: SampleConfig, width: int, alpha: float, tunes: int) -> None:
    """The `tunes` best distinct complete tunes a beam of `width` finds after a blank line and "X:"."""
    from ..beam import beam_search
    from ..documents import renumber_field

    if tunes > width:
        raise CharRNNError(
            f"--tunes {tunes} with --beam {width}: the beam ends with at most {width} texts; give --beam >= {tunes}"
        )
    if loaded.tokenizer.unknown_chars("\n\nX:"):
        raise CharRNNError("the model never saw 'X:' after a blank line, where every ABC tune starts")
    found = beam_search(
        loaded.model, loaded.tokenizer, width, cfg.length, prime="\n\nX:", stop="\n\n", length_penalty=alpha
    )
    # A complete tune ended at a blank line and has its K: (key) field, which ends an ABC header;
    # each tune once: texts that differ only in their X: number are one tune.
    complete: dict[str, Hypothesis] = {}
    for hyp in found:
        if hyp.stopped and re.search(r"^K:", hyp.text, re.M) and len(complete) < tunes:
            complete.setdefault(renumber_field("X:" + hyp.text.rstrip("\n"), "X:", 0), hyp)
    for n, (tune, hyp) in enumerate(complete.items()):
        sys.stdout.write(("\n" if n else "") + renumber_field(tune, "X:", n + 1) + "\n")
        sys.stdout.flush()
        _report(hyp, width, alpha)
    if len(complete) < tunes:
        raise CharRNNError(
            f"the beam ended only {len(complete)} distinct complete tune(s) (with a K: line) of {tunes} asked within "
            f"--length {cfg.length} (raise --length or --beam; --length-penalty favours longer tunes)"
        )
