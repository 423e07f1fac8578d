"""TBPTT streams: training windows (straight through, or in shuffled chunks) and validation windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn.data.streams import StreamBatcher, validation_windows
from charrnn.errors import CorpusError


def test_batcher_streams_are_contiguous_and_targets_offset_by_one():
    ids = np.arange(103, dtype=np.uint16)
    batcher = StreamBatcher(ids, batch_size=4, seq_len=5)
    assert batcher.chunk_len == 25 and batcher.windows_per_epoch == 4 and not batcher.shuffled
    x0, y0 = batcher.window(0)
    x1, _ = batcher.window(1)
    assert x0.shape == (4, 5) and x0.dtype.is_floating_point is False
    assert (y0 == x0 + 1).all()  # targets are the next id
    assert (x0[:, 0] == np.array([0, 25, 50, 75])).all()  # stream s starts at s * its length
    assert (x1[:, 0] == x0[:, -1] + 1).all()  # window k+1 continues where window k ended


def test_batcher_rank_owns_disjoint_streams():
    ids = np.arange(200)
    first = StreamBatcher(ids, batch_size=2, seq_len=4, rank=0, world_size=2).window(0)[0]
    second = StreamBatcher(ids, batch_size=2, seq_len=4, rank=1, world_size=2).window(0)[0]
    single = StreamBatcher(ids, batch_size=4, seq_len=4).window(0)[0]
    assert (np.concatenate([first, second]) == single.numpy()).all()


def _epoch(batcher: StreamBatcher, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
    per = batcher.windows_per_epoch
    return [batcher.window_at(step) for step in range(epoch * per, (epoch + 1) * per)]


def test_shuffled_chunks_cover_the_text_each_epoch_and_continue_within_a_chunk():
    ids = np.arange(1000)
    batcher = StreamBatcher(ids, batch_size=4, seq_len=5, chunk_windows=3, seed=7)
    # 999 // 15 = 66 chunks, dealt 4 at a time: 17 rounds, the last one's 2 empty places refilled
    assert batcher.shuffled and batcher.num_chunks == 66 and batcher.windows_per_epoch == 17 * 3
    for epoch in range(12):  # each epoch its own order and cut points (the offset, up to 9 ids here)
        seen: list[int] = []
        windows = _epoch(batcher, epoch)
        for k, (x, y, fresh) in enumerate(windows):
            assert x.shape == (4, 5) and (y == x + 1).all()
            assert fresh == (k % 3 == 0)  # a new chunk: every stream jumped, the state starts from zero
            if not fresh:  # within a chunk, the next window continues where the last one ended
                assert (x[:, 0] == windows[k - 1][0][:, -1] + 1).all()
            seen.extend(x.flatten().tolist())
        assert len(seen) == 17 * 4 * 15 and len(set(seen)) == 66 * 15  # every chunk, 2 of them twice
        assert max(seen) < 999
    firsts = [x[:, 0] for x, _, fresh in _epoch(batcher, 0) if fresh]
    assert not all((b - a == 15).all() for a, b in zip(firsts, firsts[1:]))  # the streams jump, not read in order


def test_an_epoch_reads_all_the_text_when_the_streams_do_not_divide_the_chunks():
    # 47 chunks for 32 streams: dealing whole rounds only would skip 15 of them every epoch
    ids = np.arange(47 * 16 * 4 + 1)
    batcher = StreamBatcher(ids, batch_size=32, seq_len=4, chunk_windows=16, seed=0)
    assert batcher.num_chunks == 47 and batcher.windows_per_epoch == 2 * 16
    read = {int(v) for x, _, _ in _epoch(batcher, 3) for v in x.flatten()}
    assert read == set(range(47 * 16 * 4))


def test_the_deal_depends_on_seed_and_epoch_only():
    ids = np.arange(5000)
    one = StreamBatcher(ids, batch_size=4, seq_len=8, chunk_windows=2, seed=1)
    again = StreamBatcher(ids, batch_size=4, seq_len=8, chunk_windows=2, seed=1)
    other = StreamBatcher(ids, batch_size=4, seq_len=8, chunk_windows=2, seed=2)
    assert all((a[0] == b[0]).all() for a, b in zip(_epoch(one, 1), _epoch(again, 1)))  # a resumed run's order
    assert again.window_at(0)[0].tolist() != again.window_at(one.windows_per_epoch)[0].tolist()  # a new epoch
    assert one.window_at(0)[0].tolist() != other.window_at(0)[0].tolist()
    later = one.windows_per_epoch * 2 + 3  # a batcher that has dealt other epochs since
    assert (one.window_at(later)[0] == StreamBatcher(ids, 4, 8, chunk_windows=2, seed=1).window_at(later)[0]).all()
    negative = StreamBatcher(ids, batch_size=4, seq_len=8, chunk_windows=2, seed=-(2**63))  # --seed takes it
    assert negative.window_at(0)[0].shape == (4, 8)


def test_shuffled_ranks_own_disjoint_streams_of_the_same_deal():
    ids = np.arange(3000)
    ranks = [StreamBatcher(ids, 2, 4, rank=r, world_size=2, chunk_windows=2, seed=3) for r in range(2)]
    single = StreamBatcher(ids, 4, 4, chunk_windows=2, seed=3)
    for step in (0, 1, 5, single.windows_per_epoch + 2):
        parts = [r.window_at(step)[0] for r in ranks]
        assert (np.concatenate(parts) == single.window_at(step)[0].numpy()).all()


def test_a_chunk_longer_than_a_stream_reads_the_streams_in_order():
    ids = np.arange(103)
    batcher = StreamBatcher(ids, batch_size=4, seq_len=5, chunk_windows=50)
    plain = StreamBatcher(ids, batch_size=4, seq_len=5)
    assert not batcher.shuffled and batcher.windows_per_epoch == plain.windows_per_epoch
    assert batcher.notes == [
        "each stream reads its 4 windows straight through: the text is too short for jumps every 50 (--chunk)"
    ]
    assert plain.notes == []
    assert all((a[0] == b[0]).all() for a, b in zip(_epoch(batcher, 0), _epoch(plain, 0)))


def test_batcher_too_small_says_the_minimum():
    with pytest.raises(CorpusError, match="needs at least 132"):
        StreamBatcher(np.arange(50), batch_size=4, seq_len=32)


@pytest.mark.parametrize("n,streams,seq_len", [(100, 4, 7), (101, 8, 5), (5, 16, 64), (64, 1, 64)])
def test_validation_windows_predict_every_id_once(n, streams, seq_len):
    ids = np.arange(1, n + 1)
    targets = []
    for x, y, _ in validation_windows(ids, context_token=0, num_streams=streams, seq_len=seq_len):
        assert (y == x + 1).all()  # each input is the id just before its target
        targets.extend(y.flatten().tolist())
    assert sorted(targets) == list(range(1, n + 1))


def test_validation_windows_split_across_ranks_cover_everything_once():
    ids = np.arange(1, 301)
    seen = []
    for rank in range(2):
        for _, y, _ in validation_windows(ids, 0, num_streams=8, seq_len=10, rank=rank, world_size=2):
            seen.extend(y.flatten().tolist())
    assert sorted(seen) == list(range(1, 301))


def test_a_run_saved_before_chunks_resumes_reading_its_streams_straight_through():
    from charrnn.config import DEFAULT_CHUNK_WINDOWS, TrainConfig

    saved = TrainConfig().to_dict()
    assert saved["chunk_windows"] == DEFAULT_CHUNK_WINDOWS > 0
    del saved["chunk_windows"]  # a checkpoint written before --chunk existed
    assert TrainConfig.from_dict(saved).chunk_windows == 0
