"""`charrnn gradients --compare`: the four cells trained alike, then their gradient flow side by side.

rnn (tanh), rnn-relu (identity-initialised ReLU, IRNN), gru and lstm are trained on the same
corpus at the same size for the same wall-clock time, one after the other, each into
OUT_DIR/<cell>; then each one's gradient flow is measured on the corpus's validation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..config import ModelConfig, TrainConfig
from ..errors import ConfigError, TrainingDiverged
from . import DEFAULT_MAX_K, DEFAULT_WINDOWS, RunFlow, run_gradient_flow

if TYPE_CHECKING:
    from ..training.reporting import Reporter

COMPARE_CELLS = ("rnn", "rnn-relu", "gru", "lstm")
COMPARE_DIR = Path("gradients-compare")
COMPARE_HIDDEN = 256
COMPARE_LAYERS = 1


@dataclass
class CompareSettings:
    """What every cell shares in a comparison."""

    time_budget: float = 60.0  # seconds of training per cell
    hidden: int = COMPARE_HIDDEN
    layers: int = COMPARE_LAYERS
    max_k: int = DEFAULT_MAX_K
    windows: int = DEFAULT_WINDOWS
    seed: int = 1337
    device: str = "auto"
    threads: int | None = 1  # CPU threads for training and measuring (one is fastest on busy cores)


def compare_cells(
    corpus: str,
    out_dir: Path = COMPARE_DIR,
    settings: CompareSettings | None = None,
    *,
    force: bool = False,
    reporter_for: Callable[[str], Reporter] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[RunFlow]:
    """Train each of COMPARE_CELLS on `corpus` (a path or a ready corpus name) into out_dir/<cell>,
    then measure each one's gradient flow on the corpus's validation split."""
    from ..checkpoint import BEST
    from ..data.corpora import resolve_corpus
    from ..runtime import set_cpu_threads
    from ..training.run import RunHooks, RunRequest, train

    settings = settings or CompareSettings()
    if settings.max_k < 1:
        raise ConfigError(f"--max-k must be at least 1 (got {settings.max_k})")
    data = resolve_corpus(corpus, log)
    set_cpu_threads(settings.threads)
    runs = []
    for cell in COMPARE_CELLS:
        model_cfg = ModelConfig(cell=cell, hidden_size=settings.hidden, num_layers=settings.layers)
        train_cfg = TrainConfig(time_budget=settings.time_budget, seed=settings.seed, device=settings.device)
        run_dir = out_dir / cell
        log(f"training {cell} ({settings.layers}x{settings.hidden}) for {settings.time_budget:g}s into {run_dir}")
        hooks = RunHooks(reporter=reporter_for(cell)) if reporter_for is not None else None
        try:
            result = train(data, model_cfg, train_cfg, run_dir, RunRequest(force=force), hooks)
            checkpoint = result.best_path
        except TrainingDiverged as exc:  # the lesson includes the cell that blew up: its best point is drawn
            checkpoint = run_dir / BEST
            if not checkpoint.exists():
                raise
            log(f"note: {cell} diverged ({exc}); its best checkpoint is measured")
        runs.append((cell, checkpoint))
    flows = []
    for cell, checkpoint in runs:
        log(f"measuring {cell}: {checkpoint}")
        flows.append(
            run_gradient_flow(
                checkpoint,
                run=cell,
                corpus=corpus,
                max_k=settings.max_k,
                windows=settings.windows,
                threads=settings.threads,
                log=log,
            )
        )
    return flows
