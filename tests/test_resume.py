"""Resume and fine-tune: a stopped-and-resumed run is bit-identical to one that never stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT, TINY_TRAIN, needs_native_bf16

from charrnn.checkpoint import load_checkpoint
from charrnn.config import ModelConfig, TrainConfig
from charrnn.data import CorpusBytes
from charrnn.errors import Interrupted
from charrnn.reporting import Reporter
from charrnn.runtime import StopFlag
from charrnn.train import train

TOTAL, EVAL_EVERY = 16, 5


class Recorder(Reporter):
    """Collects every step's loss and every evaluation; raises the stop flag after step `stop_at`."""

    def __init__(self, stop: StopFlag | None = None, stop_at: int | None = None):
        self.losses: list[float] = []
        self.val_losses: list[float] = []
        self.stop, self.stop_at = stop, stop_at

    def on_step(self, report) -> None:
        self.losses.append(report.loss)
        if self.stop is not None and report.step == self.stop_at:
            self.stop.signum = 2  # what the SIGINT handler does

    def on_eval(self, report) -> None:
        self.val_losses.append(report.val_loss)


def _configs(cell: str, precision: str) -> tuple[ModelConfig, TrainConfig]:
    # Two layers with dropout: the RNG state matters, and so does the carried state of every layer.
    model = ModelConfig(cell=cell, embed_size=8, hidden_size=16, num_layers=2, dropout=0.1)
    cfg = TrainConfig(
        seq_len=8,
        batch_size=4,
        steps=TOTAL,
        eval_every=EVAL_EVERY,
        warmup_steps=3,
        device="cpu",
        precision=precision,
        patience=None,
    )
    return model, cfg


@pytest.mark.parametrize(
    "cell, precision, stop_at",
    [
        ("lstm", "fp32", 7),
        ("gru", "fp32", 7),
        ("rnn", "fp32", 7),
        ("rnn-relu", "fp32", 7),
        pytest.param("lstm", "bf16", 7, marks=needs_native_bf16),
        # One of these two stops right after an evaluation wrote its checkpoints (whether the flag
        # raised during step N's report stops the run at N or N + 1 is the loop's business).
        ("gru", "fp32", EVAL_EVERY * 2 - 1),
        ("gru", "fp32", EVAL_EVERY * 2),
    ],
)
def test_stop_and_resume_is_bit_identical(tmp_path, cell, precision, stop_at):
    corpus = CorpusBytes("tiny", "tiny", TINY_TEXT.encode())
    model_cfg, train_cfg = _configs(cell, precision)

    straight = Recorder()
    train(corpus, model_cfg, train_cfg, tmp_path / "straight", reporter=straight)

    stop = StopFlag()
    first = Recorder(stop, stop_at)
    with pytest.raises(Interrupted) as info:
        train(corpus, model_cfg, train_cfg, tmp_path / "split", reporter=first, stop=stop)
    assert info.value.exit_code == 130
    _, meta = load_checkpoint(tmp_path / "split" / "last.safetensors")
    stopped_at = meta["step"]
    assert stopped_at in (stop_at, stop_at + 1) and f"step {stopped_at}" in str(info.value)
    second = Recorder()
    # The settings given here are ignored on resume (they come from the checkpoint), except limits.
    result = train(
        corpus, ModelConfig(), TrainConfig(), tmp_path / "split", resume=True, reporter=second, limits={"steps": TOTAL}
    )

    assert result.steps == TOTAL
    assert len(first.losses) == stopped_at
    assert first.losses + second.losses == straight.losses  # exact float equality, every step
    assert first.val_losses + second.val_losses == straight.val_losses
    a, meta_a = load_checkpoint(tmp_path / "straight" / "last.safetensors")
    b, meta_b = load_checkpoint(tmp_path / "split" / "last.safetensors")
    assert a.keys() == b.keys()
    for name in a:  # weights, optimizer moments, RNG state, carried hidden state
        assert torch.equal(a[name], b[name]), name
    assert meta_a["step"] == meta_b["step"] == TOTAL
    assert meta_a["optimizer"] == meta_b["optimizer"]
    best_a, _ = load_checkpoint(tmp_path / "straight" / "best.safetensors")
    best_b, _ = load_checkpoint(tmp_path / "split" / "best.safetensors")
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def test_cli_resume_counts_steps_in_total(cli, tiny_corpus):
    out = Path("run")
    first = cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "20", "--eval-every", "10", "--out", out)
    assert first.exit_code == 0, first.stderr
    assert load_checkpoint(out / "last.safetensors")[1]["step"] == 20

    again = cli("train", tiny_corpus, "--steps", "40", "--out", out)  # no --resume: refused, nothing touched
    assert again.exit_code != 0 and "--resume" in again.stderr

    resumed = cli("train", tiny_corpus, "--steps", "40", "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming at step 20" in resumed.stderr
    assert "after 40 steps" in resumed.stderr
    assert load_checkpoint(out / "last.safetensors")[1]["step"] == 40
    steps = [line for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [int(s.split('"step": ')[1].split(",")[0]) for s in steps] == [10, 20, 30, 40]

    before = (out / "last.safetensors").read_bytes()
    finished = cli("train", tiny_corpus, "--out", out, "--resume")  # its own limit, --steps 40, is reached
    assert finished.exit_code == 2 and "is at step 40 and has reached --steps 40" in finished.stderr
    assert (out / "last.safetensors").read_bytes() == before

    other = Path("other.txt")
    other.write_text(TINY_TEXT.replace("a", "A"), encoding="utf-8")
    wrong = cli("train", other, "--steps", "60", "--out", out, "--resume")
    assert wrong.exit_code != 0 and "different corpus" in wrong.stderr


def test_init_from_extends_the_vocabulary(cli, tiny_corpus):
    base = cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "4", "--eval-every", "4", "--out", "base")
    assert base.exit_code == 0, base.stderr
    old, old_meta = load_checkpoint(Path("base/best.safetensors"))
    old_chars = old_meta["tokenizer"]["chars"]

    new_corpus = Path("new.txt")
    new_corpus.write_text(TINY_TEXT + "Zqx! ¿Qué? ZZZ\n" * 10, encoding="utf-8")
    added = sorted(set("Zqx!¿QuéZ") - set(old_chars))
    # An lr so small that one step leaves the weights bit-for-bit as loaded: the copy is observable.
    tuned = cli("train", new_corpus, "--init-from", "base", "--steps", "1", "--lr", "1e-30", "--out", "tuned")
    assert tuned.exit_code == 0, tuned.stderr
    assert f"vocabulary extended by {len(added)} new characters" in tuned.stderr

    new, new_meta = load_checkpoint(Path("tuned/last.safetensors"))
    new_chars = new_meta["tokenizer"]["chars"]
    assert new_chars == old_chars + "".join(added)  # old ids kept, new ones appended
    assert new_meta["model"]["hidden_size"] == old_meta["model"]["hidden_size"] == 32  # the old architecture
    n_old = len(old_chars)
    for name in ("model.embedding.weight", "model.head.weight", "model.head.bias"):
        assert new[name].shape[0] == n_old + len(added)
        assert torch.equal(new[name][:n_old], old[name])
    assert torch.equal(new["model.rnn.weight_hh_l0"], old["model.rnn.weight_hh_l0"])

    same = cli("train", tiny_corpus, "--init-from", "base/best.safetensors", "--steps", "1", "--out", "same")
    assert same.exit_code == 0 and "uses no new characters" in same.stderr

    both = cli("train", tiny_corpus, "--init-from", "base", "--resume", "--out", "base")
    assert both.exit_code != 0 and both.stderr.count("\n") == 1
