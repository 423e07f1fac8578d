"""probes/cache.py: recent probes per key, damaged files ignored, old probes forgotten."""

from __future__ import annotations

import json

import pytest
import torch

from charrnn.probes.cache import KEPT_PROBES, PROBE_MAX_AGE, SETTLED_PROBES, ProbeCache, machine_key


def test_probes_are_kept_per_key_up_to_a_few_and_settle(tmp_path):
    cache = ProbeCache("threads", ("t1",), tmp_path / "threads.json", now=lambda: 100.0)
    for i in range(KEPT_PROBES + 2):
        cache.add("a", {"t1": 1.0 + i})
    cache.add("b", {"t1": 9.0})
    assert [p["t1"] for p in cache.recent("a")] == [1.0 + i for i in range(2, KEPT_PROBES + 2)]
    assert cache.settled("a") and not cache.settled("b") and SETTLED_PROBES > 1
    assert cache.recent("nothing") == []


def test_old_and_malformed_probes_do_not_count(tmp_path):
    path = tmp_path / "p.json"
    probes = [{"t1": 1.0, "at": 0.0}, {"t1": -1.0, "at": 5.0}, {"t1": "x", "at": 5.0}, {"t1": True, "at": 5.0}, 3]
    path.write_text(json.dumps({"k": {"probes": [*probes, {"t1": 2.0, "at": 5.0}]}}))
    assert ProbeCache("p", ("t1",), path, now=lambda: 10.0).recent("k") == [
        {"t1": 1.0, "at": 0.0},
        {"t1": 2.0, "at": 5.0},
    ]
    later = ProbeCache("p", ("t1",), path, now=lambda: PROBE_MAX_AGE + 1.0)
    assert later.recent("k") == [{"t1": 2.0, "at": 5.0}]


@pytest.mark.parametrize("damage", [b"{not json", b"[1]", b'{"k": "fast"}', b"\xff\xfe", b'{"k": {"probes": 7}}'])
def test_a_damaged_file_is_an_empty_cache_and_is_replaced(tmp_path, damage):
    path = tmp_path / "p.json"
    path.write_bytes(damage)
    cache = ProbeCache("p", ("t1",), path, now=lambda: 1.0)
    assert cache.recent("k") == []
    cache.add("k", {"t1": 3.0})
    assert json.loads(path.read_text())["k"]["probes"] == [{"t1": 3.0, "at": 1.0}]


def test_the_machine_key_names_the_processor_the_cores_and_torch():
    key = machine_key(torch.device("cpu"))
    assert key.startswith("cpu|") and "cores=" in key and torch.__version__ in key
    assert "threads=3" in machine_key(torch.device("cpu"), threads=3)
