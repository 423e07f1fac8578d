"""What `charrnn bench` measures (dataclasses, JSON-able with `asdict`) and how much of it (`BenchPlan`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Machine:
    torch: str
    python: str
    cpu: str
    threads: int
    device: str
    cpu_flags: str = ""  # the ones speed depends on: avx2, avx512f, avx512_bf16, amx_bf16, ...
    auto_precision: str = ""  # what --precision auto picks here for the bench's shape (measured)
    auto_reason: str = ""


@dataclass
class TrainSpeed:
    precision: str
    charrnn_chars_per_sec: float
    reference_chars_per_sec: float
    ratio: float  # charrnn / reference: the target is >= 0.95
    flops_per_sec: float  # charrnn's achieved training FLOP/s
    utilization: float | None  # flops_per_sec / the matmul peak of that precision


@dataclass
class PrecisionShape:
    """charrnn's training step in fp32 and in bf16 at one batch/sequence shape."""

    batch_size: int
    seq_len: int
    fp32_chars_per_sec: float
    bf16_chars_per_sec: float
    speedup: float  # bf16 / fp32


@dataclass
class PrecisionProbe:
    """What `--precision auto` measures for the bench's training shape, probed afresh."""

    candidate: str  # bf16, or fp16 on a GPU without bf16
    fp32_step_seconds: float
    candidate_step_seconds: float
    speedup: float  # fp32 time over the candidate's
    loss_ratio: float  # the candidate's loss over fp32's, same weights and batch
    choice: str
    reason: str


@dataclass
class PrecisionQuality:
    """Validation loss after the same steps from the same start in fp32 and in bf16."""

    steps: int
    fp32_val_loss: float | None = None  # nats per token
    bf16_val_loss: float | None = None
    relative_difference: float | None = None  # (bf16 - fp32) / fp32; the target is within 1%
    skipped: str | None = None


@dataclass
class SampleSpeed:
    cell: str
    hidden: int
    layers: int
    streams: int
    chars_per_sec: float
    threads: int  # threads of the backend it ran on
    weight_bytes: int  # bytes of weights read per step (all streams share one read)
    limit_chars_per_sec: float  # streams * bandwidth / weight_bytes: the memory-bound ceiling
    # fp32 matmul peak / (2 FLOPs per weight per character): the ceiling once many streams share a read
    compute_limit_chars_per_sec: float | None = None
    backend: str = "torch"  # where the step ran: torch, or numpy's BLAS (measured fastest)


@dataclass
class SamplingFloor:
    """One stream through `sample.generate` next to the step's matmuls alone (its floor)."""

    cell: str
    hidden: int
    layers: int
    # "torch, 1 thread", "numpy, 2 threads", ... -> the step's matmuls per second on that backend and count
    floor_steps_per_sec: dict[str, float]
    sampler_chars_per_sec: float  # sample.generate, start-up excluded, on the backend and threads it measured
    ratio: float  # sampler over the best floor: the target is >= 0.8
    sampler_choice: str = ""  # the backend and thread count sample.generate measured fastest ("numpy, 2 threads")
    # --num-samples N through sample.generate_samples (N rows of one batch): chars/s in all, and the
    # process's CPU seconds per wall second meanwhile (how many cores it kept busy)
    many_samples: int = 0
    many_chars_per_sec: float = 0.0
    many_cores_busy: float = 0.0
    many_choice: str = ""


@dataclass
class TrainingThreads:
    """charrnn's training step on each thread layout its probe weighs, in alternating rounds."""

    precision: str
    hidden: int
    layers: int
    batch_size: int
    seq_len: int
    # "1 thread", "2 threads", "2 workers of one thread" (split by rows) -> steps/s, median round
    steps_per_sec: dict[str, float] = field(default_factory=dict)


@dataclass
class BusyNeighbour:
    """A --time-budget run's steps alone and beside a program busy on every core."""

    seconds: float  # each run's --time-budget
    neighbour_threads: int
    quiet_steps: int
    busy_steps: int
    kept: float  # busy over quiet: the target is >= 0.5 (a fair share of the cores)


@dataclass
class DataPath:
    corpus_mb: float
    encode_seconds: float  # decode + fit + encode + cache write, first run
    peak_rss_mb: float  # whole process, torch included
    baseline_rss_mb: float  # the same process after imports, before reading the corpus
    ids_dtype: str
    second_run_load_seconds: float  # read + hash the corpus, memory-map the cached ids
    second_run_ready_seconds: float  # ... + model and optimiser built: training starts
    second_run_first_step_seconds: float  # ... and the first training step done (default 2x512 model)
    cached: bool  # the second run really read the cache
    source: str = "generated"  # python-stdlib (repeated, files shuffled) or generated words
    first_run_ready_seconds: float = 0.0  # first run: encoded, model and optimiser built
    budget_seconds: float = 0.0  # the --time-budget run (0: not run)
    budget_wall_seconds: float = 0.0  # its launch to exit
    budget_eval_seconds: float = 0.0  # validating, all evaluations together
    budget_eval_share: float = 0.0  # of the wall time
    budget_steps: int = 0
    budget_val_tokens: int = 0  # tokens each validation scored (--val-tokens)
    budget_whole_scored: bool = False  # whether the whole split was scored at the end


@dataclass
class QualityRow:
    """Validation after `budget_seconds` of training on one corpus; `ratio` = val_bpc over the
    reference loop's at the same budget in the same run (lower is better)."""

    corpus: str
    label: str  # what trained: "reference loop", "charrnn defaults", "lstm 2x512", "mingru 2x512"
    cell: str = ""
    hidden_size: int = 0
    num_layers: int = 0
    budget_seconds: float = 0.0
    steps: int = 0
    chars_per_sec: float = 0.0  # training characters per second over the budget
    parameters: int = 0
    val_bpc: float = 0.0
    ratio: float | None = None
    note: str = ""  # e.g. why charrnn picked this size
    grid_size: bool = False  # a no-flags row whose size is also in the grid: that size is trained once
    grid_ratio: float | None = None  # val_bpc over the best fixed size's of the same run, when the grid ran
    skipped: str | None = None


@dataclass
class BenchReport:
    quick: bool
    machine: Machine
    config: dict[str, Any]
    matmul_peak: dict[str, float] = field(default_factory=dict)  # precision -> FLOP/s
    read_bandwidth: float = 0.0  # bytes/s
    cpu_matmul_peak: float = 0.0  # fp32 FLOP/s on the CPU, where sampling runs
    training: list[TrainSpeed] = field(default_factory=list)
    precision_probe: PrecisionProbe | None = None
    bf16_shapes: list[PrecisionShape] = field(default_factory=list)
    sampling: list[SampleSpeed] = field(default_factory=list)
    sampling_floor: SamplingFloor | None = None
    training_threads: list[TrainingThreads] = field(default_factory=list)
    busy_neighbour: BusyNeighbour | None = None
    data: DataPath | None = None
    quality_rows: list[QualityRow] = field(default_factory=list)
    precision_quality: PrecisionQuality | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BenchPlan:
    """How much of each measurement to run: `full()` for the README figures, `quick()` ~1 minute."""

    hidden: int = 512
    layers: int = 2
    seq_len: int = 64
    batch_size: int = 32
    precisions: tuple[str, ...] = ("fp32", "bf16")
    train_rounds: int = 5
    train_steps_per_round: int = 4
    # Where does bf16 pay off? (batch, seq_len) shapes timed in fp32 and bf16.
    bf16_shapes: tuple[tuple[int, int], ...] = ((32, 64), (32, 128), (64, 64), (128, 64), (128, 128))
    precision_steps: int = 300  # fp32 vs bf16 validation loss at equal steps; 0 skips
    sample_models: tuple[tuple[str, int], ...] = (("lstm", 256), ("lstm", 512), ("gru", 256), ("gru", 512))
    sample_streams: tuple[int, ...] = (1, 32)
    # Each (model, streams) on one thread and on all (else: on the count the sampler measures fastest).
    sample_each_thread_count: bool = True
    sample_seconds: float = 2.0
    floor_model: tuple[str, int, int] | None = ("lstm", 512, 2)  # sample.generate against its matmuls
    # `--only neighbour`: a --time-budget run alone and beside a matmul loop on every core
    neighbour_seconds: float = 60.0
    neighbour_hidden: int = 256
    data_mb: float = 100.0
    data_hidden: int = 512  # the second run's model: the default 2x512 LSTM
    data_source: str = "python-stdlib"  # or "generated"
    data_budget_seconds: float = 180.0  # a --time-budget run on the data corpus; 0 skips
    # `--only quality`: validation after each budget on each corpus, next to the reference loop
    quality_budgets: tuple[float, ...] = (60.0, 300.0)
    quality_corpora: tuple[str, ...] = ("tinyshakespeare", "python-stdlib")
    quality_val_chars: int = 50_000  # validation split of the quality rows, at most (a big model's eval is slow)
    # `--only grid`: the fixed sizes (hidden, layers) the budget-aware size is judged against
    grid_sizes: tuple[tuple[int, int], ...] = tuple((h, n) for n in (2, 3) for h in (256, 384, 512, 768))
    grid_budgets: tuple[float, ...] = (60.0,)
    # `--only grid --batches ... --windows ...`: the size rule's choice at each batch x window, per seed
    grid_batches: tuple[int, ...] = ()
    grid_windows: tuple[int, ...] = ()
    grid_seeds: int = 3
    grid_precision: str = "auto"  # the grid's --precision: auto (measured) or forced, e.g. fp32
    grid_scale_lr: bool = True
    # `--only scan`: (cell, hidden, layers) of the parallel-scan cells next to the LSTM (bench/scan_cell.py)
    scan_models: tuple[tuple[str, int, int], ...] = (("mingru", 512, 3), ("minlstm", 512, 3))
    scan_budgets: tuple[float, ...] = (60.0, 300.0)

    @classmethod
    def full(cls) -> "BenchPlan":
        return cls()

    def fixed_seconds(self, sections: tuple[str, ...], threads: int) -> dict[str, float]:
        """Seconds each section spends in fixed budgets (training for a set time, sampling for a
        set time): a lower bound on how long it takes, known before anything runs."""
        corpora = len(self.quality_corpora)
        shared_defaults = "quality" in sections and self.grid_budgets == self.quality_budgets
        runs = {
            "quality": corpora * sum(self.quality_budgets) * 2,  # the reference loop and charrnn's defaults
            # the grid's no-flags row comes from the quality rows when those ran at its budgets
            "grid": corpora * sum(self.grid_budgets) * (self.grid_runs() + 2 - shared_defaults),
            "scan": corpora * sum(self.scan_budgets) * (len(self.scan_models) + 2),
            "data": self.data_budget_seconds,
            "neighbour": 2 * self.neighbour_seconds,
        }
        counts = 2 if self.sample_each_thread_count and threads > 1 else 1
        per_model = len(self.sample_streams) * counts
        floor = 2 * self.sample_seconds if self.floor_model else 0.0
        runs["sampling"] = len(self.sample_models) * per_model * self.sample_seconds + floor
        return {name: seconds for name, seconds in runs.items() if name in sections and seconds > 0}

    def grid_runs(self) -> int:
        """Trainings per corpus and budget of the grid, besides the reference and no-flags rows."""
        if self.grid_batches or self.grid_windows:
            return max(len(self.grid_batches), 1) * max(len(self.grid_windows), 1) * self.grid_seeds
        return len(self.grid_sizes)

    @classmethod
    def quick(cls) -> "BenchPlan":
        return cls(
            train_rounds=3,
            train_steps_per_round=2,
            sample_models=(("lstm", 256), ("lstm", 512)),
            sample_seconds=0.7,
            data_mb=20.0,
            data_budget_seconds=0.0,
            quality_budgets=(15.0,),
            quality_corpora=("tinyshakespeare",),
            grid_sizes=((256, 2), (512, 2)),
            grid_budgets=(15.0,),
            scan_budgets=(15.0,),
            neighbour_seconds=15.0,
            bf16_shapes=(),
            precision_steps=0,
        )
