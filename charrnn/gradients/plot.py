"""The picture of gradient flow: one curve per run, one panel per layer, log scale (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, WriteError
from . import RunFlow

PICTURE = "gradients.png"


def plot_gradient_flow(flows: Sequence[RunFlow], out: Path, title: str | None = None) -> Path:
    """Write a PNG: for each layer a panel of |dloss_t/dh_(t-k)| relative to k = 0 against k,
    log scale, a curve per run. Points where the gradient is exactly 0 (or underflowed) are left out."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'charrnn[plot]'") from None
    layers = max(len(f.layers) for f in flows)
    fig = Figure(figsize=(max(7.5, 5.2 * layers + 1.0), 4.6), dpi=80, layout="constrained")
    axes = fig.subplots(1, layers, sharey=True, squeeze=False)[0]
    for index, ax in enumerate(axes):
        for flow in flows:
            if index >= len(flow.layers):
                continue
            layer = flow.layers[index]
            points = [(k, r) for k, r in zip(layer.k, layer.relative) if r is not None and r > 0]
            label = flow.run if flow.run == flow.cell else f"{flow.run} ({flow.cell})"
            ax.plot([k for k, _ in points], [r for _, r in points], label=label, linewidth=1.6)
        ax.set_yscale("log")
        ax.set_xlabel("k: how many steps back the hidden state is")
        ax.set_title(f"layer {index + 1} of {layers}" if layers > 1 else "")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("gradient size, relative to k = 0 (log scale)")
    axes[0].legend(fontsize=9)
    fig.suptitle(
        title
        or "How far back in time can the loss reach?\n"
        "size of d loss(t) / d h(t-k) for the hidden state k steps earlier, averaged over held-out text",
        fontsize=11,
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    except OSError as exc:
        raise WriteError(out, exc) from None
    return out
