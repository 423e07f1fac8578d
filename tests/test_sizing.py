"""Budget-aware model size: the rule (pure, on synthetic speeds and corpus sizes), the per-machine
speed cache, and the CLI hook (explicit --hidden/--layers always win)."""

from __future__ import annotations

import json

import pytest
import torch

from charrnn import sizing
from charrnn.checkpoint import load_checkpoint
from charrnn.sizing import choose_size, machine_flops_per_sec, parameter_count, speed_key

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


def test_the_pick_is_the_largest_size_that_sees_enough_tokens_per_parameter():
    # 100 GFLOP/s for 60 s on a big corpus: 2x128 sees 17.2 tokens per parameter, 2x192 3.9
    assert pick(1e11, 60, 100 * MB) == (128, 2)
    # 300 s: 2x192 sees 19.4, 2x256 6.6; 1800 s: 2x384 8.3, 2x512 2.7
    assert pick(1e11, 300, 100 * MB) == (192, 2)
    assert pick(1e11, 1800, 100 * MB) == (384, 2)


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


def test_the_speed_is_measured_once_then_read_from_the_cache(tmp_path):
    path = tmp_path / "cache" / "speed.json"
    measure = Counter(4.2e10)
    first = machine_flops_per_sec(torch.device("cpu"), "fp32", path=path, measure=measure)
    second = machine_flops_per_sec(torch.device("cpu"), "fp32", path=path, measure=measure)
    assert first == (4.2e10, False) and second == (4.2e10, True) and measure.calls == 1
    assert json.loads(path.read_text()) == {speed_key(torch.device("cpu"), "fp32"): 4.2e10}
    assert [p.name for p in path.parent.iterdir()] == ["speed.json"]  # no temporary left behind
    # another precision is another entry; the first one stays
    machine_flops_per_sec(torch.device("cpu"), "bf16", path=path, measure=Counter(9e10))
    assert len(json.loads(path.read_text())) == 2


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]", b'{"cpu|x": "fast"}', b"\xff\xfe", b'{"k": -1}'])
def test_a_damaged_cache_file_is_ignored_and_replaced(tmp_path, damage):
    path = tmp_path / "speed.json"
    path.write_bytes(damage)
    measure = Counter(3e10)
    assert machine_flops_per_sec(torch.device("cpu"), "fp32", path=path, measure=measure) == (3e10, False)
    assert json.loads(path.read_text())[speed_key(torch.device("cpu"), "fp32")] == 3e10


def test_the_cache_key_names_what_the_speed_depends_on():
    key = speed_key(torch.device("cpu"), "fp32")
    assert f"threads={torch.get_num_threads()}" in key and torch.__version__ in key and key.endswith("fp32")


def test_the_probe_measures_a_positive_speed():
    assert sizing.measure_flops_per_sec(torch.device("cpu"), "fp32", seconds=0.01, shape=(8, 1, 2, 4)) > 0


def _cached_speed(tmp_path, flops: float) -> None:
    """A speed cache that says this machine trains at `flops`: no probe runs in the test."""
    (tmp_path / ".cache").mkdir(exist_ok=True)
    key = speed_key(torch.device("cpu"), "fp32")
    (tmp_path / ".cache" / "speed.json").write_text(json.dumps({key: flops}))


def _trained_shape(run: str) -> tuple[int, int]:
    _, meta = load_checkpoint(__import__("pathlib").Path(run) / "last.safetensors")
    return meta["model"]["hidden_size"], meta["model"]["num_layers"]


FAST = ["--embed", "16", "--seq-len", "16", "--batch-size", "4", "--precision", "fp32", "--device", "cpu"]


def test_train_with_a_budget_and_no_size_flags_says_what_it_picked(cli, tiny_corpus, tmp_path):
    _cached_speed(tmp_path, 1e9)
    result = cli("train", tiny_corpus, "--time-budget", "0.3s", "--out", "run", *FAST)
    assert result.exit_code == 0, result.output
    assert "2x64 LSTM" in result.output and "measured earlier" in result.output
    assert _trained_shape("run") == (64, 2)


def test_explicit_size_flags_always_win(cli, tiny_corpus, tmp_path):
    _cached_speed(tmp_path, 1e9)
    result = cli("train", tiny_corpus, "--time-budget", "0.3s", "--hidden", "24", "--out", "a", *FAST)
    assert result.exit_code == 0, result.output
    assert _trained_shape("a") == (24, 2) and "size:" not in result.output
    result = cli("train", tiny_corpus, "--time-budget", "0.3s", "--layers", "1", "--out", "b", *FAST)
    assert _trained_shape("b") == (512, 1)


def test_without_a_budget_the_default_size_stays(cli, tiny_corpus, tmp_path):
    _cached_speed(tmp_path, 1e9)
    result = cli("train", tiny_corpus, "--steps", "1", "--out", "run", *FAST)
    assert result.exit_code == 0, result.output
    assert _trained_shape("run") == (512, 2) and "size:" not in result.output
