from __future__ import annotations

from pathlib import Path

import pytest

from rltf.buffer import OnlineBuffer, PassingPool, Sample


def sample(n: int, version: int = 0) -> Sample:
    return Sample(f"p{n}", (1, 2, n), (n, n + 1), (0.5, -0.25), {"status": "fail", "passed": 1, "total": 3},
                  -0.3, version)


def ids(buffer: OnlineBuffer) -> list[str]:
    return [s.problem_id for s in buffer.samples]


def test_staged_samples_enter_only_at_refresh_and_grow_to_capacity() -> None:
    buffer = OnlineBuffer(capacity=5, seed=0)
    buffer.stage([sample(0), sample(1)])
    assert len(buffer) == 0 and buffer.sample(3) == []
    assert buffer.refresh(step=4) == (2, 0)
    assert ids(buffer) == ["p0", "p1"] and {s.step_added for s in buffer.samples} == {4}
    # The original pool dropped as many old samples as arrived, so it never grew past its first size.
    buffer.stage([sample(2), sample(3)])
    assert buffer.refresh(step=6) == (2, 0)
    assert ids(buffer) == ["p0", "p1", "p2", "p3"]
    assert buffer.refresh(step=8) == (0, 0)  # nothing staged: nothing changes, nothing is loaded twice
    assert len(buffer) == 4


def test_oldest_dropped_first_and_oversized_refresh_keeps_newest() -> None:
    buffer = OnlineBuffer(capacity=3)
    buffer.stage([sample(i) for i in range(3)])
    buffer.refresh(0)
    buffer.stage([sample(3), sample(4)])
    assert buffer.refresh(1) == (2, 2)
    assert ids(buffer) == ["p2", "p3", "p4"]
    assert [s.step_added for s in buffer.samples] == [0, 1, 1]
    buffer.stage([sample(i) for i in range(10, 15)])
    assert buffer.refresh(2) == (5, 5)
    assert ids(buffer) == ["p12", "p13", "p14"]


def test_sampling_is_uniform_distinct_and_seeded() -> None:
    def draws(seed: int) -> list[list[str]]:
        buffer = OnlineBuffer(capacity=100, seed=seed)
        buffer.stage([sample(i) for i in range(20)])
        buffer.refresh(0)
        return [[s.problem_id for s in buffer.sample(4)] for _ in range(200)]

    first = draws(1)
    assert first == draws(1) and first != draws(2)
    assert all(len(set(d)) == 4 for d in first)
    counts = {f"p{i}": sum(d.count(f"p{i}") for d in first) for i in range(20)}
    assert min(counts.values()) > 15 and max(counts.values()) < 70  # 800 draws over 20: 40 each on average
    small = OnlineBuffer(capacity=5)
    small.stage([sample(0), sample(1)])
    small.refresh(0)
    assert sorted(s.problem_id for s in small.sample(10)) == ["p0", "p1"]


def test_persistence_round_trip_continues_the_same_draws(tmp_path: Path) -> None:
    buffer = OnlineBuffer(capacity=4, seed=7)
    buffer.stage([sample(i, version=i) for i in range(6)])
    buffer.refresh(3)
    buffer.stage([sample(9, version=5)])  # pending samples are part of the state
    buffer.sample(2)
    buffer.save(tmp_path / "buffer.pt")
    loaded = OnlineBuffer.load(tmp_path / "buffer.pt")
    assert loaded.capacity == 4
    assert list(loaded.samples) == list(buffer.samples) and loaded.pending == buffer.pending
    assert [s.problem_id for s in loaded.sample(3)] == [s.problem_id for s in buffer.sample(3)]
    assert loaded.refresh(4) == buffer.refresh(4) and list(loaded.samples) == list(buffer.samples)
    assert loaded.usage() == buffer.usage() and list(loaded.uses) == list(buffer.uses)


def test_sample_use_accounting() -> None:
    buffer = OnlineBuffer(capacity=4, seed=3)
    assert buffer.usage() == {"samples_trained_frac": None, "samples_dropped_unused": 0, "sample_uses_mean": None}
    buffer.stage([sample(i) for i in range(6)])
    buffer.refresh(0)  # 6 staged into 4 slots: the 2 oldest leave unused
    assert buffer.usage() == {"samples_trained_frac": 0.0, "samples_dropped_unused": 2, "sample_uses_mean": 0.0}
    first = {s.problem_id for s in buffer.sample(2)}
    second = {s.problem_id for s in buffer.sample(2)}
    drawn = first | second
    assert dict(zip(ids(buffer), buffer.uses)) == {p: (p in first) + (p in second) for p in ids(buffer)}
    assert buffer.usage() == {"samples_trained_frac": len(drawn) / 6, "samples_dropped_unused": 2,
                              "sample_uses_mean": 1.0}
    buffer.stage([sample(10)])  # pending: staged, not yet trainable
    buffer.stage([sample(11), sample(12), sample(13)])
    buffer.refresh(1)  # the 4 drawn-or-not old ones leave; those never drawn count as unused
    assert buffer.usage()["samples_dropped_unused"] == 2 + (4 - len(drawn))
    assert buffer.usage()["samples_trained_frac"] == len(drawn) / 10


def test_sample_checks_lengths() -> None:
    with pytest.raises(ValueError, match="returns"):
        Sample("p", (1,), (1, 2), (0.0,), {}, 0.0, 0)
    with pytest.raises(ValueError):
        OnlineBuffer(capacity=0)


def test_refresh_mode_draws_each_sample_once_per_pass_and_replaces_on_refresh() -> None:
    buffer = OnlineBuffer(capacity=100, seed=5, mode="refresh")
    buffer.stage([sample(i) for i in range(10)])
    buffer.refresh(0)
    first = [s.problem_id for _ in range(2) for s in buffer.sample(4)] + [s.problem_id for s in buffer.sample(2)]
    assert sorted(first) == sorted(f"p{i}" for i in range(10))  # one pass: every sample exactly once
    assert list(buffer.uses) == [1] * 10
    straddle = [s.problem_id for s in buffer.sample(4)]
    assert len(set(straddle)) == 4  # a new pass; a micro-batch never repeats a sample
    for _ in range(4):
        buffer.sample(4)
    assert list(buffer.uses) == [3] * 10  # 30 draws over 10 samples: three whole passes
    buffer.stage([sample(20), sample(21)])
    assert buffer.refresh(1) == (2, 10)  # the new refresh replaces the old samples
    assert ids(buffer) == ["p20", "p21"]
    assert buffer.refresh(2) == (0, 0) and ids(buffer) == ["p20", "p21"]  # nothing new: keep training on these
    assert buffer.usage()["samples_dropped_unused"] == 0


def test_refresh_mode_counts_samples_it_never_reached() -> None:
    buffer = OnlineBuffer(capacity=100, seed=1, mode="refresh")
    buffer.stage([sample(i) for i in range(8)])
    buffer.refresh(0)
    buffer.sample(3)
    buffer.stage([sample(9)])
    buffer.refresh(1)
    assert buffer.usage()["samples_dropped_unused"] == 5
    assert buffer.usage()["samples_trained_frac"] == 3 / 9


def test_prune_drops_samples_beyond_the_staleness_bound() -> None:
    buffer = OnlineBuffer(capacity=100, seed=2)
    buffer.stage([sample(i, version=i) for i in range(6)])
    buffer.refresh(6)
    assert buffer.prune(step=6, max_staleness=None) == 0
    assert buffer.prune(step=6, max_staleness=2) == 4  # versions 0-3 are 6 to 3 steps old
    assert ids(buffer) == ["p4", "p5"] and list(buffer.uses) == [0, 0]
    assert buffer.usage()["samples_dropped_unused"] == 4
    assert {s.policy_version for s in buffer.sample(10)} == {4, 5}


def test_refresh_mode_state_round_trip_continues_the_pass(tmp_path: Path) -> None:
    buffer = OnlineBuffer(capacity=100, seed=4, mode="refresh")
    buffer.stage([sample(i) for i in range(7)])
    buffer.refresh(0)
    buffer.sample(3)
    buffer.save(tmp_path / "buffer.pt")
    loaded = OnlineBuffer.load(tmp_path / "buffer.pt")
    assert loaded.mode == "refresh" and loaded.order == buffer.order
    assert [s.problem_id for s in loaded.sample(5)] == [s.problem_id for s in buffer.sample(5)]


def test_passing_pool_keeps_passing_programs_once_per_problem() -> None:
    def judged(problem: str, completion: tuple[int, ...], status: str) -> Sample:
        return Sample(problem, (7, 8), completion, (0.0,) * len(completion), {"status": status}, 0.0, 0)

    pool = PassingPool()
    assert pool.add([judged("a", (1, 2), "pass"), judged("a", (1, 2), "pass"), judged("a", (1, 3), "fail"),
                     judged("b", (1, 2), "pass"), judged("a", (4,), "runtime_error")]) == 2
    # the same program for another problem is another item; a repeat in a later step is not
    assert pool.add([judged("a", (1, 2), "pass"), judged("a", (5, 6, 7), "pass")]) == 1
    assert pool.programs == [("a", (7, 8), (1, 2)), ("b", (7, 8), (1, 2)), ("a", (7, 8), (5, 6, 7))]
    assert len(pool) == 3 and pool.problems() == 2
    restored = PassingPool()
    restored.load_state_dict(pool.state_dict())
    assert restored.programs == pool.programs
    assert restored.add([judged("b", (1, 2), "pass")]) == 0  # what it has seen survives the round trip
