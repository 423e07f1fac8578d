"""What the fuzz and bad-input tests share: settings, a fast in-process CLI, the one-line check,
and checkpoints re-signed after their metadata was crafted."""

from __future__ import annotations

import pytest
from conftest import one_error_line
from hypothesis import HealthCheck, settings

# Derandomized: the same examples every run (a failure reproduces). The autouse fixture's working
# directory is shared by all examples of a test: nothing here depends on it being fresh.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module", autouse=True)
def fast_cli():
    """Thousands of in-process invocations: build the Click command once (Typer rebuilds it on
    every invoke, ~50 ms), and one torch thread (tiny models; no thread wake-ups on a busy machine)."""
    import torch
    import typer.testing
    from typer.main import get_command

    from charrnn.cli import app

    command = get_command(app)
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", lambda _app: command)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def check_one_line(result) -> None:
    """No traceback, no uncaught exception; a failure is exactly one `error:` line, at the end."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stderr
    if result.exit_code != 0:
        one_error_line(result)
        assert result.stdout == "", result.stdout


def signed_checkpoint(tensors: dict, meta_json: str) -> bytes:
    """A checkpoint whose checksum matches its (crafted) metadata: it gets past the integrity
    check, so what is tested is how the content itself is read."""
    from safetensors.torch import save

    from charrnn.tensorfile import _checksum

    header = {"format": "charrnn-checkpoint", "format_version": "1", "charrnn": meta_json}
    return save(tensors, metadata={**header, "sha256": _checksum(tensors, meta_json)})
