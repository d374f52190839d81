"""The sandbox pools that TRL and verl reward calls share inside one process.

A trainer calls its reward once per batch on every rank (TRL) or from a reward manager's threads
(verl). ``JudgeConfig``'s own default, a server per core, is right for rltf's single process but
wrong here: eight ranks on one node would each start a server per core, every one allowed
``memory_mb`` (2 GiB), competing with the trainer's own threads for the CPUs. So the pools here
start lazily on the first call, are shared by every reward function of the process that asks for
the same settings, and default to :func:`default_workers` servers.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterable
from typing import Protocol

from rltf.judge import JudgeConfig, JudgeService, Verdict
from rltf.problems import Problem

WORKERS_ENV = "RLTF_JUDGE_WORKERS"
MAX_DEFAULT_WORKERS = 8
"""A rank's reward call judges its share of one generation batch (typically tens of programs, most
done in milliseconds): 8 servers keep that well under the generation time it follows."""



class Judging(Protocol):
    """What a reward needs of a judge: :class:`JudgeService`, :class:`rltf.judge.Judge` or a Ray pool."""

    def run_many(self, pairs: Iterable[tuple[Problem, str]]) -> list[Verdict]: ...


_pools: dict[str, JudgeService] = {}
_lock = threading.Lock()


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """``$RLTF_JUDGE_WORKERS``, else this process's share of the CPUs among the node's ranks
    (``LOCAL_WORLD_SIZE``, set by torchrun and accelerate), at most :data:`MAX_DEFAULT_WORKERS`."""
    if os.environ.get(WORKERS_ENV):
        workers = int(os.environ[WORKERS_ENV])
        if workers < 1:
            raise ValueError(f"{WORKERS_ENV}={workers}: at least 1 sandbox server is needed")
        return workers
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(MAX_DEFAULT_WORKERS, usable_cpus() // ranks))


def shared_judge(config: JudgeConfig | None = None) -> JudgeService:
    """The process's pool for ``config`` (default: :func:`default_workers` servers, the other
    limits as :class:`JudgeConfig`'s), started on first use. Thread-safe, like the pool itself."""
    config = config or JudgeConfig(workers=default_workers())
    key = repr(config)
    with _lock:
        if key not in _pools:
            _pools[key] = JudgeService(config)
        return _pools[key]


def close_shared_judges() -> None:
    """Stop every shared pool (at exit, or between runs in one process); the next call starts anew."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


atexit.register(close_shared_judges)
