"""`abc calibrate`: how well the checker tells real tunes from damaged copies of them.

A seeded random sample of real tunes is checked as it is and after five kinds of damage
(`music.corrupt_*`): bars swapped with another meter's, notes deleted, a header line removed,
bars written twice over (too long) and bars cut to half their notes (too short). Each
allowance of misfit bars then gives a share of real tunes passed and of damaged ones
rejected, with 95% Wilson intervals. See the README's calibration.
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable

from .check import (
    DEFAULT_ALLOWANCE,
    STRICT,
    UNLIMITED,
    MisfitAllowance,
    check_tune,
    header_fields,
    wilson_interval,
)
from .folk import (
    corrupt_delete_notes,
    corrupt_long_bars,
    corrupt_remove_header,
    corrupt_short_bars,
    corrupt_swap_bars,
)
from .scan import METER_SYMBOLS


def calibrate(
    tunes: list[str],
    sample: int = 500,
    seed: int = 0,
    allowances: tuple[MisfitAllowance, ...] = (
        STRICT,
        MisfitAllowance(1, 0.0),
        DEFAULT_ALLOWANCE,
        MisfitAllowance(2, 0.12),
    ),
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """How often the checker passes real tunes and rejects corrupted copies of them, on a
    seeded random sample, for each allowance of misfit bars: {"max(bars=N, share=S)": {"real":
    share passed, "swap_bars"/"delete_notes"/"remove_header"/"long_bars"/"short_bars": share
    rejected, "corrupted": share of all corrupted copies rejected}}. Each tune is checked once; the allowances only
    change the verdict."""
    rng = random.Random(seed)
    chosen = rng.sample(tunes, min(sample, len(tunes)))

    def bar_and_unit(tune: str) -> tuple[float | None, str | None]:
        fields = header_fields(tune)
        m = fields.get("M", "")
        bar = meter_fraction(METER_SYMBOLS.get(m, m))
        return bar, fields.get("L")

    shape = {id(t): bar_and_unit(t) for t in tunes}

    def donor_for(tune: str) -> str:
        # A tune whose bars are a different length but written in the same unit note length,
        # so that a moved bar keeps the durations it had (else a 2/4 bar in 1/16 units can
        # read as a full 4/4 bar in 1/8 units: a different tune, not a damaged one).
        bar, unit = shape[id(tune)]
        for _ in range(10_000):
            donor = rng.choice(tunes)
            if shape[id(donor)][1] == unit and shape[id(donor)][0] != bar:
                return donor
        return rng.choice(tunes)

    kinds: dict[str, Callable[[str], str]] = {
        "real": lambda t: t,
        "swap_bars": lambda t: corrupt_swap_bars(t, donor_for(t), rng),
        "delete_notes": lambda t: corrupt_delete_notes(t, rng),
        "remove_header": lambda t: corrupt_remove_header(t, rng),
        "long_bars": lambda t: corrupt_long_bars(t, rng),
        "short_bars": lambda t: corrupt_short_bars(t, rng),
    }
    # Per kind, per tune: (misfit bars, bars), or None when something else already fails it.
    misfits: dict[str, list[tuple[int, int] | None]] = {}
    for kind, make in kinds.items():
        results = [check_tune(make(t), allowance=UNLIMITED) for t in chosen]
        misfits[kind] = [(len(r.bad_bars), r.bars) if r.valid else None for r in results]
        progress(f"{kind}: checked {len(chosen)} tunes")
    out: dict[str, Any] = {"sample": len(chosen), "seed": seed}
    n = len(chosen)
    for allowance in allowances:
        passed = {k: sum(m is not None and m[0] <= allowance.limit(m[1]) for m in v) for k, v in misfits.items()}
        real = passed.pop("real")
        rejected = {k: n - count for k, count in passed.items()}
        row = {"real": real / n, **{k: count / n for k, count in rejected.items()}}
        row["corrupted"] = sum(rejected.values()) / (n * len(rejected))
        # 95% Wilson intervals of the two shares the checker is held to.
        row_95 = {
            "real_95": wilson_interval(real, n),
            "corrupted_95": wilson_interval(sum(rejected.values()), n * len(rejected)),
        }
        out[str(allowance)] = {k: round(v, 4) for k, v in row.items()}
        out[str(allowance)].update({k: [round(x, 4) for x in v] for k, v in row_95.items()})
    return out


def meter_fraction(meter: str) -> float | None:
    m = re.fullmatch(r"(\d+)/(\d+)", meter.strip())
    return int(m.group(1)) / int(m.group(2)) if m else None
