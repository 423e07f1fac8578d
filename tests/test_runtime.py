"""runtime.py: device and precision resolution."""

from __future__ import annotations

import pytest
import torch

from charrnn import runtime
from charrnn.errors import ConfigError


def test_bf16_is_refused_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(ConfigError, match="no native bf16"):
        runtime.resolve_precision("bf16", torch.device("cpu"))
    assert runtime.resolve_precision("auto", torch.device("cpu"))[0] == "fp32"


def test_bf16_is_taken_where_the_cpu_runs_it(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    assert runtime.resolve_precision("bf16", torch.device("cpu")) == ("bf16", "as asked")
    assert runtime.resolve_precision("auto", torch.device("cpu"))[0] == "bf16"


def test_fp16_needs_a_gpu():
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        runtime.resolve_precision("fp16", torch.device("cpu"))
