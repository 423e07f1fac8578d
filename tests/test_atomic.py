"""Atomic writes and whole-record appends: a failed write raises WriteError and leaves what was there."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from charrnn.atomic import append_text, make_dirs, write_atomic
from charrnn.errors import CharRNNError, WriteError

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_write_that_fills_the_disk_keeps_the_old_file(tmp_path):
    target = tmp_path / "corpus.txt"
    target.write_bytes(b"old content\n")

    def half_then_full(f):
        f.write(b"new content that does not fit")
        raise ENOSPC

    with pytest.raises(WriteError, match=f"cannot write {target}: No space left on device") as caught:
        write_atomic(target, half_then_full)
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert isinstance(caught.value, CharRNNError)  # the CLI shows it as one line
    assert target.read_bytes() == b"old content\n"
    assert os.listdir(tmp_path) == ["corpus.txt"]  # no temporary file left


def test_a_write_under_a_file_is_a_write_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WriteError, match="afile/out.bin: Not a directory"):
        write_atomic(tmp_path / "afile" / "out.bin", b"data")
    with pytest.raises(WriteError, match="afile/sub: Not a directory"):
        make_dirs(tmp_path / "afile" / "sub")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full (the kernel's always-full device) here")
def test_appending_to_a_full_device(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.symlink_to("/dev/full")  # every write there fails with ENOSPC, from the kernel itself
    with pytest.raises(WriteError, match="metrics.jsonl: No space left on device"):
        append_text(log, '{"step": 1}\n')


def test_a_partly_written_record_is_cut_back_off(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    append_text(log, '{"step": 1}\n')
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 4:
            return real_write(fd, bytes(data[: len(data) // 2]))  # a short write, as on a filling disk
        raise ENOSPC

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(WriteError, match="No space left on device"):
        append_text(log, '{"step": 2, "val_bpc": 3.25}\n')
    monkeypatch.undo()
    assert log.read_text() == '{"step": 1}\n'  # never half a line
    append_text(log, '{"step": 2}\n')
    assert log.read_text().splitlines() == ['{"step": 1}', '{"step": 2}']
