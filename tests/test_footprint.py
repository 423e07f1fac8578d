"""Model sizes from arithmetic alone: the shapes are the model's own, absurd sizes are refused
before anything is allocated."""

from __future__ import annotations

import pytest

from charrnn.errors import ConfigError
from charrnn.footprint import check_fits, human_bytes, parameter_count, parameter_shapes, training_bytes
from charrnn.model import RNNLanguageModel


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn-relu"])
@pytest.mark.parametrize("layers", [1, 3])
def test_shapes_and_count_are_the_models(cell, layers):
    sizes = dict(vocab=11, embed=5, hidden=7, layers=layers)
    model = RNNLanguageModel(cell, 11, 5, 7, layers, 0.0)
    actual = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert dict(parameter_shapes(cell, **sizes)) == actual
    assert parameter_count(cell, **sizes) == sum(p.numel() for p in model.parameters())


def test_absurd_sizes_are_refused_without_allocating():
    # 2**40 layers: a closed form, answered at once (building it would loop for hours).
    need = training_bytes("lstm", 65, 64, 512, 2**40, 32, 128)
    assert need > 10**18
    with pytest.raises(ConfigError, match="needs about .* PB of memory; this machine has .* free"):
        check_fits(need, "training")
    check_fits(training_bytes("lstm", 65, 64, 32, 1, 4, 16), "training")  # a tiny model fits


def test_human_bytes():
    assert human_bytes(999) == "999 bytes"
    assert human_bytes(1_500_000) == "1.5 MB"
    assert human_bytes(4e18) == "4,000.0 PB"
