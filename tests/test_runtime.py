"""runtime.py: device and precision resolution."""

from __future__ import annotations

import pytest
import torch

from charrnn import runtime
from charrnn.errors import ConfigError


def test_bf16_is_refused_on_a_cpu_without_bf16_kernels(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_can_run_bf16", lambda: False)
    with pytest.raises(ConfigError, match="no bf16 kernels"):
        runtime.resolve_precision("bf16", torch.device("cpu"))
    assert runtime.resolve_precision("auto", torch.device("cpu"))[0] == "fp32"


def test_auto_is_what_the_measurement_says_and_never_a_feature_flag(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_can_run_bf16", lambda: True)
    cpu = torch.device("cpu")
    assert runtime.resolve_precision("bf16", cpu) == ("bf16", "as asked")
    assert runtime.resolve_precision("auto", cpu) == ("fp32", "not measured for this use: fp32")
    measured = runtime.resolve_precision("auto", cpu, auto=lambda device: ("bf16", f"measured on {device}"))
    assert measured == ("bf16", "measured on cpu")
    placement = runtime.Placement.decide("cpu", "auto", auto=lambda device: ("bf16", "2.0x fp32 here"))
    assert (placement.precision, placement.precision_reason) == ("bf16", "2.0x fp32 here")
    assert runtime.Placement.decide("cpu", "fp32", auto=lambda device: ("bf16", "unused")).precision == "fp32"


def test_fp16_needs_a_gpu():
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        runtime.resolve_precision("fp16", torch.device("cpu"))
