"""The command line end to end: train then sample, stdout hygiene, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_TRAIN, one_error_line


def test_train_then_sample_writes_only_text_to_stdout(cli, tiny_corpus):
    trained = cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "20", "--eval-every", "10")
    assert trained.exit_code == 0, trained.stderr
    assert trained.stdout == ""  # progress and the summary go to stderr
    assert "best validation" in trained.stderr and "checkpoints/tiny/best.safetensors" in trained.stderr
    sampled = cli("sample", "--length", "120", "--seed", "4", "--prime", "All:")
    assert sampled.exit_code == 0, sampled.stderr
    assert sampled.stdout.startswith("All:") and len(sampled.stdout) == len("All:") + 120 + 1  # + final newline
    again = cli("sample", "checkpoints/tiny", "--length", "120", "--seed", "4", "--prime", "All:")
    assert again.stdout == sampled.stdout  # same checkpoint, same seed -> same text


def test_sample_without_seed_says_which_seed_on_stderr(cli, tiny_corpus):
    assert cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "2").exit_code == 0
    result = cli("sample", "--length", "10")
    assert result.exit_code == 0 and "--seed" in result.stderr and "--seed" not in result.stdout


def test_several_samples_and_stop(cli, tiny_corpus):
    assert cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "2").exit_code == 0
    result = cli("sample", "--prime", "All:", "--length", "300", "--seed", "1", "--num-samples", "3", "--stop", "\\n")
    assert result.exit_code == 0
    samples = result.stdout.split("\n\n")
    assert len(samples) == 3 and all(s.startswith("All:") and s.rstrip("\n").count("\n") == 0 for s in samples)


def test_errors_are_one_line_on_stderr(cli, tiny_corpus):
    for args, code, words in [
        (["sample"], 1, "no checkpoint found"),
        (["train", "missing.txt"], 1, "corpus not found"),
        (["train", tiny_corpus, "--lr", "-1"], 2, "--lr must be a positive number"),
        (["train", tiny_corpus, "--model", "transformer"], 2, "transformer"),
        (["train", tiny_corpus, "--time-budget", "soon"], 2, "cannot read 'soon'"),
        (["sample", "--top-p", "1.5"], 2, "--top-p must be in (0, 1]"),
    ]:
        result = cli(*args)
        assert result.exit_code == code, (args, result.stderr)
        assert words in one_error_line(result, alone=True)
        assert result.stdout == ""


def test_module_entry_point_and_fast_help():
    result = subprocess.run([sys.executable, "-m", "charrnn", "--help"], capture_output=True, text=True, check=True)
    assert "train" in result.stdout and "sample" in result.stdout
    probe = "import sys, charrnn.cli; print('torch' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False"  # --help does not pay for importing torch


def test_rich_markup_in_an_output_path_is_plain_text(cli, tiny_corpus):
    # Paths, corpus names and tune titles are printed through Rich: "[/a]" would be a closing tag.
    out = "x/[/a] :smile:"
    result = cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "2", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert f"run directory {out}" in result.stderr and f"checkpoint: {out}/best.safetensors" in result.stderr


def test_rich_markup_in_a_tune_title_is_plain_text(cli):
    pytest.importorskip("music21", reason="abc check needs the [music] extra (pip install music21)")
    Path("tunes.abc").write_text("X:1\nT:[/a]\nM:2/4\nL:1/8\nK:G\nGABc | d2d2 |]\n", encoding="utf-8")
    result = cli("abc", "check", "tunes.abc")
    assert result.exit_code == 0, result.stderr
    assert " valid       [/a]" in result.stdout and "1 of 1 tunes valid" in result.stdout


def test_sample_says_which_checkpoint_it_picked_and_why(cli, tiny_corpus):
    for name in ("older", "newer"):
        assert cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "2", "--out", f"checkpoints/{name}").exit_code == 0
    result = cli("sample", "--length", "10", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        "using checkpoints/newer/best.safetensors (the best validation of the newest of 2 runs "
        "under ./checkpoints; name a run to choose another)"
    )
    named = cli("sample", "checkpoints/older", "--length", "10", "--seed", "1")
    assert named.exit_code == 0 and "using" not in named.stderr  # the user chose: nothing to say


def test_greedy_sampling_prints_no_seed_and_samples_are_headed_on_stderr(cli, tiny_corpus):
    assert cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "2", "--out", "run").exit_code == 0
    greedy = cli("sample", "run", "--temp", "0", "--length", "10")
    assert greedy.exit_code == 0 and "seed" not in greedy.stderr
    two = cli("sample", "run", "--length", "30", "--seed", "3", "--num-samples", "2")
    assert two.exit_code == 0, two.stderr
    assert [line for line in two.stderr.splitlines() if line.startswith("---")] == [
        "--- sample 1 of 2 ---",
        "--- sample 2 of 2 ---",
    ]
    assert "---" not in two.stdout  # stdout holds the text alone, samples a blank line apart


def test_tunes_from_a_model_that_never_saw_abc_says_so(cli, tiny_corpus):
    assert cli("train", tiny_corpus, *TINY_TRAIN, "--steps", "2", "--out", "run").exit_code == 0
    result = cli("sample", "run", "--tunes", "2", "--length", "200", "--seed", "1")
    line = one_error_line(result)
    assert "the model never saw 'X:', the header every ABC tune starts with: it was trained on tiny" in line
    assert "train it longer" not in line


@pytest.mark.parametrize("argv", [["charrnn", "--help"], ["charrnn", "eval", "no-such-run", "x"]])
def test_the_entry_point_leaves_its_objects_to_the_process_exit(monkeypatch, argv):
    """main() freezes the collector as the command ends, success or error: the interpreter's last
    collections over torch's objects took half a second of every command's exit."""
    import gc

    from charrnn.cli import main

    monkeypatch.setattr(sys, "argv", argv)
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit):
            main()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this test process goes on
