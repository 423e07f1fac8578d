"""Budget-aware model size: the rule (pure, on synthetic speeds and corpus sizes), the per-machine
speed cache, and the CLI hook (explicit --hidden/--layers always win)."""

from __future__ import annotations

import json

import pytest
import torch

from charrnn.checkpoint import load_checkpoint
from charrnn.probes.cache import PROBE_MAX_AGE, SETTLED_PROBES
from charrnn.training import sizing
from charrnn.training.sizing import (
    DROPOUT_FREE_EPOCHS,
    SizeChoice,
    choose_size,
    dropout_for_budget,
    forget_busy_probes,
    machine_flops_per_sec,
    parameter_count,
    speed_key,
)

MB = 1_000_000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pick(flops: float, budget: float, chars: int = MB, vocab: int = 65) -> tuple[int, int]:
    choice = choose_size(budget_seconds=budget, flops_per_sec=flops, train_chars=chars, vocab=vocab, embed=64)
    return choice.hidden_size, choice.num_layers


def test_a_longer_budget_or_a_faster_machine_never_picks_a_smaller_model():
    sizes = [pick(flops, budget, 100 * MB) for flops in (1e9, 1e10, 1e11, 1e12) for budget in (60, 300, 1800)]
    by_flops = [pick(flops, 300, 100 * MB)[0] for flops in (1e9, 1e10, 1e11, 1e12)]
    by_budget = [pick(1e11, budget, 100 * MB)[0] for budget in (10, 60, 300, 1800, 7200)]
    assert by_flops == sorted(by_flops) and by_flops[0] < by_flops[-1]
    assert by_budget == sorted(by_budget) and by_budget[0] < by_budget[-1]
    assert len(set(sizes)) > 2


def test_the_pick_is_the_largest_size_that_sees_the_target_tokens_per_parameter():
    # 100 GFLOP/s for 60 s on a big corpus (6 TFLOP, target 4.2): 2x128 sees 17.2 tokens per parameter, 2x192 3.9
    assert pick(1e11, 60, 100 * MB) == (128, 2)
    # 300 s and 1800 s (target 2): 2x256 sees 6.6, 2x384 1.4; 2x512 2.7, 2x768 0.5
    assert pick(1e11, 300, 100 * MB) == (256, 2)
    assert pick(1e11, 1800, 100 * MB) == (512, 2)
    # the grid's cells on one 57 GFLOP/s core: 60 s picks 2x128, 5 minutes 2x256, 30 minutes 2x384
    assert [pick(57e9, budget, 100 * MB) for budget in (60, 300, 1800)] == [(128, 2), (256, 2), (384, 2)]


def test_the_target_falls_with_the_compute_of_the_budget_down_to_its_floor():
    computes = [1e11, 1e12, 1e13, sizing.SMALL_COMPUTE, 1e14, 1e20]
    targets = [sizing.tokens_per_parameter_target(c) for c in computes]
    assert targets == sorted(targets, reverse=True) and len(set(targets)) == 4
    assert targets[3:] == [sizing.MIN_TOKENS_PER_PARAMETER] * 3
    assert targets[1] == pytest.approx(targets[2] * 10**sizing.TARGET_SLOPE)
    assert sizing.tokens_per_parameter_target(0.0) == sizing.tokens_per_parameter_target(1.0)  # no budget: finite


def test_the_reason_names_the_target_and_the_compute():
    choice = choose_size(budget_seconds=60, flops_per_sec=57e9, train_chars=100 * MB, vocab=65, embed=64)
    assert "2x128" in choice.reason and "under 6.1 tokens per parameter" in choice.reason
    assert "3.42 TFLOP of training" in choice.reason
    # The count as the run's header line gives it (0.24M), not rounded to 0.2M beside it.
    assert "2x128 LSTM (0.24M parameters)" in choice.reason


def test_a_small_corpus_caps_the_size_however_fast_the_machine():
    assert pick(1e13, 3600, chars=MB) == (512, 2)  # 2x768 has 7.3M parameters: over 4 per character
    big = pick(1e13, 3600, chars=100 * MB)
    assert big[0] > 512


def test_a_very_slow_machine_gets_the_smallest_size_and_is_told_why():
    choice = choose_size(budget_seconds=5, flops_per_sec=1e8, train_chars=MB, vocab=65, embed=64)
    assert (choice.hidden_size, choice.num_layers) == sizing.CANDIDATES[0]
    assert "smallest" in choice.reason and "2x64" in choice.reason


def test_parameter_count_matches_the_model():
    from charrnn.model import RNNLanguageModel

    for cell in ("lstm", "gru", "rnn"):
        model = RNNLanguageModel(cell, vocab_size=70, embed_size=16, hidden_size=24, num_layers=3, dropout=0.0)
        assert parameter_count(cell, 70, 16, 24, 3) == sum(p.numel() for p in model.parameters())


class Counter:
    def __init__(self, value: float):
        self.value, self.calls = value, 0

    def __call__(self, device, precision) -> float:
        self.calls += 1
        return self.value


def test_the_first_runs_probe_then_the_cache_answers_with_the_fastest_probe(tmp_path):
    path, cpu = tmp_path / "cache" / "speed.json", torch.device("cpu")
    clock = iter(range(1000, 2000, 10))
    speeds = [1.2e10, 9e10, 7e10]  # a busy machine's first probe, then quiet ones

    def probe(device, precision):
        return speeds.pop(0)

    seen = [machine_flops_per_sec(cpu, "fp32", path=path, measure=probe, now=lambda: next(clock)) for _ in range(5)]
    assert [s.flops_per_sec for s in seen] == [1.2e10, 9e10, 9e10, 9e10, 9e10]  # the busy probe does not stick
    assert [s.probed_now for s in seen] == [True, True, True, False, False] and speeds == []
    assert [s.probes for s in seen] == [1, 2, 3, 3, 3]
    assert [p.name for p in path.parent.iterdir()] == ["speed.json"]  # no temporary left behind
    # another precision is another entry; the first one stays
    machine_flops_per_sec(cpu, "bf16", path=path, measure=Counter(9e10))
    assert len(json.loads(path.read_text())) == 2


def test_a_run_forgets_the_probes_it_shows_were_taken_on_a_busy_machine(tmp_path):
    path, cpu = tmp_path / "speed.json", torch.device("cpu")
    key = speed_key(cpu, "bf16")
    assert forget_busy_probes(key, 9e10, path=path) == 0 and not path.exists()  # nothing cached: nothing to do
    for probe in (4e9, 2e9, 6e10):  # two taken beside other work, one quiet
        machine_flops_per_sec(cpu, "bf16", path=path, measure=Counter(probe))
    assert forget_busy_probes(key, 5e9, path=path) == 1  # only the probe under half the run's speed goes (2e9)
    assert forget_busy_probes(key, float("nan"), path=path) == 0
    assert forget_busy_probes(speed_key(cpu, "fp32"), 1e12, path=path) == 0  # another key's probes are its own
    assert forget_busy_probes(key, 9e10, path=path) == 1  # 4e9 goes; 6e10 is within a factor of two
    assert [p["flops"] for p in sizing.speed_cache(path).recent(key)] == [6e10]
    speed = machine_flops_per_sec(cpu, "bf16", path=path, measure=Counter(7e10))
    assert speed.probed_now and speed.flops_per_sec == 7e10  # the next run probes again, at the probe's shape


def test_old_probes_expire_and_are_taken_again(tmp_path):
    path, cpu = tmp_path / "speed.json", torch.device("cpu")
    for _ in range(SETTLED_PROBES):
        machine_flops_per_sec(cpu, "fp32", path=path, measure=Counter(1e10), now=lambda: 0.0)
    later = lambda: PROBE_MAX_AGE + 1.0  # noqa: E731
    fresh = machine_flops_per_sec(cpu, "fp32", path=path, measure=Counter(5e10), now=later)
    assert (fresh.flops_per_sec, fresh.probes, fresh.probed_now) == (5e10, 1, True)


@pytest.mark.parametrize(
    "damage",
    [
        b"{not json",
        b"[1, 2]",
        b'{"cpu|x": "fast"}',
        b"\xff\xfe",
        b'{"k": -1}',
        b'{"KEY": 1.2e10}',  # the old one-number format: stale, probed again
        b'{"KEY": {"probes": [{"flops": -1, "at": 0}, {"flops": "x"}, 3, {"flops": 1e99, "at": 1e99}]}}',
        b'{"KEY": {"probes": "many"}}',
    ],
)
def test_a_damaged_or_old_cache_file_is_ignored_and_replaced(tmp_path, damage):
    path, cpu = tmp_path / "speed.json", torch.device("cpu")
    path.write_bytes(damage.replace(b"KEY", speed_key(cpu, "fp32").encode()))
    speed = machine_flops_per_sec(cpu, "fp32", path=path, measure=Counter(3e10))
    assert (speed.flops_per_sec, speed.probes, speed.probed_now) == (3e10, 1, True)
    assert json.loads(path.read_text())[speed_key(cpu, "fp32")]["probes"][0]["flops"] == 3e10


def test_the_cache_key_names_what_the_speed_depends_on():
    key = speed_key(torch.device("cpu"), "fp32")
    assert f"threads={torch.get_num_threads()}" in key and torch.__version__ in key and key.endswith("fp32")


def test_the_probe_measures_a_positive_speed():
    assert sizing.measure_flops_per_sec(torch.device("cpu"), "fp32", seconds=0.01, shape=(8, 1, 2, 4)) > 0


def _trained_shape(run: str) -> tuple[int, int]:
    _, meta = load_checkpoint(__import__("pathlib").Path(run) / "last.safetensors")
    return meta["model"]["hidden_size"], meta["model"]["num_layers"]


FAST = ["--embed", "16", "--seq-len", "16", "--batch-size", "4", "--precision", "fp32", "--device", "cpu"]


def test_train_with_a_budget_and_no_size_flags_says_what_it_picked(cli, tiny_corpus, cached_speed):
    cached_speed(1e9)
    result = cli("train", tiny_corpus, "--time-budget", "0.3s", "--out", "run", *FAST)
    assert result.exit_code == 0, result.output
    assert "2x64 LSTM" in result.output and "best of 3 probes, measured earlier" in result.output
    assert _trained_shape("run") == (64, 2)


def test_explicit_size_flags_always_win(cli, tiny_corpus, cached_speed):
    cached_speed(1e9)
    result = cli("train", tiny_corpus, "--time-budget", "0.3s", "--hidden", "24", "--out", "a", *FAST)
    assert result.exit_code == 0, result.output
    assert _trained_shape("a") == (24, 2) and "size:" not in result.output
    result = cli("train", tiny_corpus, "--time-budget", "0.3s", "--layers", "1", "--out", "b", *FAST)
    assert _trained_shape("b") == (512, 1)


def test_without_a_budget_the_default_size_stays(cli, tiny_corpus, cached_speed):
    cached_speed(1e9)
    result = cli("train", tiny_corpus, "--steps", "1", "--out", "run", *FAST)
    assert result.exit_code == 0, result.output
    assert _trained_shape("run") == (512, 2) and "size:" not in result.output


def test_a_run_far_faster_than_the_cached_probes_makes_the_next_one_probe_again(
    cli, tiny_corpus, cached_speed, monkeypatch
):
    cached_speed(1.0)  # probes as slow as a machine busy with something else can make them
    monkeypatch.setattr("charrnn.training.meters.SlowRunWatch.RUN_SPEED_SECONDS", 0.0)  # judge a short run
    result = cli("train", tiny_corpus, "--steps", "12", "--hidden", "16", "--out", "run", *FAST)
    assert result.exit_code == 0, result.output
    again = machine_flops_per_sec(torch.device("cpu"), "fp32", measure=Counter(5e10))
    assert again.probed_now and again.flops_per_sec == 5e10 and again.probes == 1  # the busy ones are gone


def test_a_short_budget_trains_without_dropout_and_a_long_one_keeps_it():
    short = dropout_for_budget(SizeChoice(256, 2, "", tokens=3.5e6), train_tokens=1_000_000)
    assert short is not None and short[0] == 0.0 and "about 3.5 times" in short[1] and "--dropout" in short[1]
    assert dropout_for_budget(SizeChoice(256, 2, "", tokens=DROPOUT_FREE_EPOCHS * 1e6 + 1), 1_000_000) is None
    assert choose_size(budget_seconds=60, flops_per_sec=1e11, train_chars=MB, vocab=65, embed=64).tokens > 0


def _trained_dropout(run: str) -> float:
    _, meta = load_checkpoint(__import__("pathlib").Path(run) / "last.safetensors")
    return meta["model"]["dropout"]


def test_a_budget_run_drops_dropout_only_when_nobody_asked_for_it(cli, tiny_corpus, cached_speed):
    cached_speed(1e9)  # 0.3 s of a 2x64 at this speed reads well under one epoch of the tiny text
    result = cli("train", tiny_corpus, "--time-budget", "0.3s", "--out", "short", *FAST)
    assert result.exit_code == 0, result.output
    assert _trained_dropout("short") == 0.0 and "dropout 0: in this budget the run reads its text" in result.output
    asked = cli("train", tiny_corpus, "--time-budget", "0.3s", "--dropout", "0.3", "--out", "asked", *FAST)
    assert asked.exit_code == 0 and _trained_dropout("asked") == 0.3 and "dropout 0" not in asked.output
    sized = cli("train", tiny_corpus, "--time-budget", "0.3s", "--hidden", "24", "--out", "sized", *FAST)
    assert sized.exit_code == 0 and _trained_dropout("sized") == 0.2  # not sized for the budget: the default


def test_a_budget_that_reads_the_text_many_times_keeps_dropout(cli, tiny_corpus, cached_speed):
    cached_speed(1e14)  # a machine that reads the tiny text hundreds of times in the budget
    long = cli("train", tiny_corpus, "--time-budget", "0.3s", "--out", "long", *FAST)
    assert long.exit_code == 0 and _trained_dropout("long") == 0.2 and "dropout 0" not in long.output
