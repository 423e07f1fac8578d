"""TBPTT streams: training windows, in shuffled chunks or straight through; validation windows.

Training cuts the text into streams read window by window, the hidden state carried within a
stream (StreamBatcher); validation scores every id of its text once (validation_windows).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..errors import CorpusError


class StreamBatcher:
    """Cuts token ids into streams and serves consecutive TBPTT windows from them.

    With N ids, S = world_size x batch_size streams and chunks of C = K x T ids (K windows of
    seq_len T), the text is cut into M = (N - 1) // C chunks (each also holds the id after it,
    the last target). With `chunk_windows` 0, K is as large as it can be (M = S): each stream
    is one contiguous run of the text, read in order, as char-rnn reads it:

        ids:       a b c d e f g h i j k l m n o p q r s t u v w x      (N = 24, 4 streams)
        stream 0:  a b c d e f
        stream 1:  g h i j k l
        stream 2:  m n o p q r
        stream 3:  s t u v w x

    With a smaller K, an epoch deals the M chunks out in an order shuffled by `seed` and the
    epoch (the same on every rank, so a resumed run gets the same order), S at a time:

        epoch e:   chunks in order P_e = (9, 2, 14, 5, | 0, 11, ...)    (S = 4)
        stream s:  chunk P_e[s] for K windows, then P_e[S + s], then P_e[2S + s] ...

    An epoch is ceil(M / S) rounds: when S does not divide M, the last round's empty places
    take the first chunks of the deal again, so every chunk is read at least once an epoch and
    fewer than S of them twice.

    Why: a run shorter than an epoch that reads each stream in order sees only the first part
    of each of S stretches of the text, and the same S documents for many steps in a row; its
    training loss then runs well below what held-out text scores. Shuffled chunks spread the
    same steps over the whole text. Within a chunk the next window continues where the last one
    ended (so the hidden state is carried); at the start of a chunk every stream has jumped and
    the state starts from zero (`window_at` says so). Each epoch also shifts the cut points by
    up to the N - 1 - M x C ids that do not fill a chunk. A rank of a data-parallel run owns
    streams [rank*B, (rank+1)*B).
    """

    def __init__(
        self,
        ids: np.ndarray,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        chunk_windows: int = 0,
        seed: int = 0,
    ):
        total_streams = batch_size * world_size
        windows_per_stream = (len(ids) // total_streams - 1) // seq_len if len(ids) >= total_streams else 0
        if windows_per_stream < 1:
            need = total_streams * (seq_len + 1)
            raise CorpusError(
                f"training text too small: {len(ids):,} tokens, but --batch-size {batch_size}"
                + (f" x {world_size} processes" if world_size > 1 else "")
                + f" x (--seq-len {seq_len} + 1) needs at least {need:,}; lower --batch-size or --seq-len"
            )
        self.ids, self.batch_size, self.seq_len, self.seed = ids, batch_size, seq_len, seed
        self.total_streams, self.first_stream = total_streams, rank * batch_size
        self.notes: list[str] = []  # what the caller should tell the user
        self.shuffled = 0 < chunk_windows < windows_per_stream
        if self.shuffled:
            self.chunk_windows = chunk_windows
            self.chunk_len = chunk_windows * seq_len
            self.num_chunks = (len(ids) - 1) // self.chunk_len
            self.windows_per_epoch = -(-self.num_chunks // total_streams) * chunk_windows  # ceil(M / S) rounds
        else:  # one chunk per stream: the text in S contiguous runs, in order
            if chunk_windows:
                self.notes.append(
                    f"each stream reads its {windows_per_stream} windows straight through: the text is "
                    f"too short for jumps every {chunk_windows} (--chunk)"
                )
            self.chunk_windows = self.windows_per_epoch = windows_per_stream
            self.chunk_len = len(ids) // total_streams  # the stream's length; its windows use all but the tail
            self.num_chunks = total_streams
        # (epoch, chunk order, offset), dealt once an epoch; reading straight through, the one order there is
        self._order: tuple[int, np.ndarray, int] | None = None if self.shuffled else (-1, np.arange(self.num_chunks), 0)

    pin_memory = False  # set for CUDA runs: page-locked windows make `.to(device, non_blocking=True)` async

    def window_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs and targets of the run's window number `step` (any step >= 0), each (B, T) int64,
        and whether the streams start afresh there (a new chunk or epoch: the hidden state resets)."""
        epoch, index = divmod(step, self.windows_per_epoch)
        x, y = self.window(index, epoch)
        return x, y, index % self.chunk_windows == 0

    def window(self, index: int, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of window `index` (0 <= index < windows_per_epoch) of `epoch`, each (B, T) int64."""
        round_, within = divmod(index, self.chunk_windows)
        order, offset = self._deal(epoch)
        first = self.first_stream + round_ * self.total_streams  # this rank's streams in this round's deal
        starts = offset + order[first : first + self.batch_size] * self.chunk_len + within * self.seq_len  # (B,)
        rows = starts[:, None] + np.arange(self.seq_len + 1)  # (B, T + 1) positions in the text
        chunk = torch.from_numpy(np.asarray(self.ids[rows], dtype=np.int64))
        x, y = chunk[:, :-1], chunk[:, 1:]
        if self.pin_memory:  # a non-contiguous source would be staged through pageable memory: copy first
            x, y = x.contiguous().pin_memory(), y.contiguous().pin_memory()
        return x, y

    def _deal(self, epoch: int) -> tuple[np.ndarray, int]:
        if self.shuffled and (self._order is None or self._order[0] != epoch):
            rng = np.random.default_rng([self.seed % 2**64, epoch])  # --seed may be negative; numpy's may not
            slack = len(self.ids) - 1 - self.num_chunks * self.chunk_len  # ids no chunk holds this epoch
            order = rng.permutation(self.num_chunks)
            empty = self.windows_per_epoch // self.chunk_windows * self.total_streams - self.num_chunks
            order = np.concatenate([order, order[:empty]])  # the last round's empty places: the first chunks again
            self._order = (epoch, order, int(rng.integers(0, slack + 1)))
        assert self._order is not None
        return self._order[1], self._order[2]


def fit_batch_size(n_tokens: int, batch_size: int, seq_len: int, world_size: int = 1) -> int:
    """The largest batch size <= `batch_size` that the text allows (at least one window), or 0."""
    per_stream = seq_len + 1
    return min(batch_size, n_tokens // (per_stream * world_size))


def validation_windows(
    ids: np.ndarray, context_token: int | None, num_streams: int, seq_len: int, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
    """Every validation id is predicted exactly once, with the hidden state carried.

    The targets (all N ids) are cut into S streams of L; each stream's first input is the id
    just before its first target (for the very first, the last training id), so no target is
    skipped. Yields (inputs, targets, reset) per window; `reset` marks a new set of streams.
    The few ids left over (N mod S) come last, as one stream continuing the last one.
    With world_size > 1 each rank takes a disjoint share of the streams.
    """
    n = len(ids)
    if n == 0:
        return
    prefix = np.empty(n + 1, dtype=np.int64)
    prefix[0] = context_token if context_token is not None else ids[0]
    prefix[1:] = ids
    skip_first = context_token is None  # without context the first id is not a target
    per_rank = max(1, min(num_streams, n // max(1, seq_len)) // world_size)
    streams = per_rank * world_size
    length = n // streams
    if length == 0:  # fewer ids than streams: rank 0 takes it all as one stream
        streams, length = 1, n
        mine = range(1) if rank == 0 else range(0)
    else:
        mine = range(rank * per_rank, (rank + 1) * per_rank)
    if len(mine) == 0:
        return
    block_x = np.stack([prefix[s * length : (s + 1) * length] for s in mine])  # (S, L)
    block_y = np.stack([prefix[s * length + 1 : (s + 1) * length + 1] for s in mine])
    if skip_first and mine[0] == 0:
        block_y[0, 0] = -100  # ignore_index: nothing to predict it from
    first = True
    for start in range(0, length, seq_len):
        x = torch.from_numpy(block_x[:, start : start + seq_len].copy())
        y = torch.from_numpy(block_y[:, start : start + seq_len].copy())
        yield x, y, first
        first = False
    tail_start = streams * length
    if tail_start < n and mine[-1] == streams - 1:
        x = torch.from_numpy(prefix[tail_start:n].copy())[None]
        y = torch.from_numpy(prefix[tail_start + 1 : n + 1].copy())[None]
        yield x, y, False  # continues the last stream: the caller keeps only that stream's state
