"""Random option values and random prime texts through the CLI: an answer or one clean error
line, never a traceback."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import TINY_TEXT
from fuzzing import FUZZ, check_one_line, fast_cli  # noqa: F401 (fast_cli: autouse)
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charrnn.cli import app


@pytest.fixture
def run_dir(tiny_run) -> Path:
    return tiny_run


def _number(valid) -> st.SearchStrategy[str]:
    """A number as the user might type it: mostly in range (so that the work behind the option
    runs too), sometimes any float (NaN, inf, out of range) or not a number at all."""
    typed = valid.map(str)
    anything = st.floats(allow_nan=True, allow_infinity=True).map(str)
    junk = st.sampled_from(["", "abc", "1e309", "-0", "0x10", "½", str(2**64)])
    return st.one_of(*[typed] * 10, anything, junk)


def _count(valid) -> st.SearchStrategy[str]:
    """Like _number for --length and --num-samples, without huge values: those are honest
    requests for endless output, not errors."""
    return st.one_of(*[valid.map(str)] * 10, st.sampled_from(["", "abc", "-0", "0.5", "½", "-7", "nan"]))


sample_options = st.fixed_dictionaries(
    {},
    optional={
        "--temp": _number(st.floats(0, 3)),
        "--top-k": _number(st.integers(0, 60)),
        "--top-p": _number(st.floats(0, 1)),
        "--length": _count(st.integers(-1, 40)),
        "--num-samples": _count(st.integers(1, 3)),
        "--seed": _number(st.integers(-(2**63), 2**63 - 1)),
        "--stop": st.text(max_size=4),
        "--prime": st.text(max_size=30),
    },
)


@settings(FUZZ, max_examples=150)
# Found by this test: a tiny temperature overflowed the logits (NaN probabilities), and seeds
# beyond 64 bits overflowed inside torch; both were tracebacks.
@example(options={"--temp": "6.6e-199"}, drop_unknown=False, prime="", length=5)
@example(options={"--seed": str(2**64)}, drop_unknown=False, prime="", length=5)
@example(options={"--seed": str(-(2**63))}, drop_unknown=False, prime="", length=5)
@given(
    options=sample_options,
    drop_unknown=st.booleans(),
    prime=st.text(TINY_TEXT, max_size=20),
    length=st.integers(0, 40),
)
def test_sample_never_shows_a_traceback(run_dir, options, drop_unknown, prime, length):
    options.setdefault("--prime", prime)  # mostly known characters, so that text does get generated
    options.setdefault("--length", str(length))  # not the default 1000: keep examples quick
    args = ["sample", str(run_dir), *[x for item in options.items() for x in item]]
    args += ["--drop-unknown"] if drop_unknown else []
    result = CliRunner().invoke(app, args)
    check_one_line(result)
    if result.exit_code == 0:
        length, samples = int(float(options["--length"])), int(float(options.get("--num-samples", 1)))
        assert result.stdout.startswith(options["--prime"] if not drop_unknown else "")
        assert len(result.stdout) <= (len(options["--prime"]) + length + 2) * samples
    else:
        assert result.stdout == ""


train_options = st.fixed_dictionaries(
    {
        "--steps": st.sampled_from(["1", "2", "1", "2", "0", "x"]),
        "--hidden": st.sampled_from(["8", "16", "8", "16", "0"]),
    },
    optional={
        "--model": st.sampled_from(["lstm", "gru", "rnn", "rnn-relu", "transformer"]),
        "--layers": _number(st.integers(1, 2)),
        "--embed": st.sampled_from(["4", "8", "4", "0"]),
        "--seq-len": _number(st.integers(1, 40)),
        "--batch-size": _number(st.integers(1, 64)),
        "--dropout": _number(st.floats(0, 0.99)),
        "--lr": _number(st.floats(1e-6, 1)),
        "--val-frac": _number(st.floats(0.01, 0.9)),
        "--warmup": _number(st.integers(0, 5)),
        "--eval-every": _number(st.integers(1, 3)),
        "--time-budget": st.sampled_from(["90s", "1m", "90s", "1m", "0", "-5s", "soon", "1e400"]),
        "--seed": _number(st.integers(-(2**63), 2**63 - 1)),
    },
)


@settings(FUZZ, max_examples=15)
@given(options=train_options)
def test_train_never_shows_a_traceback(tiny_corpus, options):
    args = ["train", str(tiny_corpus), "--out", "run", "--force", "--precision", "fp32", "--patience", "1"]
    args += [x for item in options.items() for x in item]
    result = CliRunner().invoke(app, args)
    check_one_line(result)
    if result.exit_code == 0:
        assert Path("run/best.safetensors").exists()
        assert not math.isnan(float(options["--steps"]))
