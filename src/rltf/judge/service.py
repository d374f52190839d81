"""Judging programs in the background, as they arrive: a pool of sandbox servers behind futures.

Training and evaluation hand each program over the moment the engine finishes it, so judging hides
behind generation.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from rltf.judge.core import Judge, JudgeConfig, open_judge
from rltf.judge.verdict import Verdict
from rltf.problems import Problem


class JudgeService:
    """``judge.workers`` sandbox servers judging one program at a time each, as programs arrive.

    A completion is judged as soon as the engine finishes it (:meth:`submit` returns a future), so
    judging hides behind generation, and a program that runs into its time limit occupies one server
    for that long without holding back the others. Each :class:`Judge` (not thread-safe) is used by
    one thread at a time: a thread takes a free judge from the queue and puts it back. With
    ``judge.backend: ray`` each is a one-actor :class:`rltf.judge.ray_pool.RayJudge`.
    """

    def __init__(self, config: JudgeConfig) -> None:
        self._all: list[Judge] = []
        try:
            for _ in range(max(1, config.workers)):
                self._all.append(open_judge(dataclasses.replace(config, workers=1)))
        except BaseException:
            for judge in self._all:
                judge.close()
            raise
        self._free: queue.SimpleQueue[Judge] = queue.SimpleQueue()
        for judge in self._all:
            self._free.put(judge)
        self._pool = ThreadPoolExecutor(max_workers=len(self._all), thread_name_prefix="rltf-judge")
        self._lock = threading.Lock()
        self.isolation = self._all[0].isolation
        self.busy_s = 0.0

    def _run(self, problem: Problem, program: str) -> Verdict:
        judge = self._free.get()
        started = time.perf_counter()
        try:
            return judge.run(problem, program)
        finally:
            self._free.put(judge)
            with self._lock:
                self.busy_s += time.perf_counter() - started

    def submit(self, problem: Problem, program: str) -> Future[Verdict]:
        return self._pool.submit(self._run, problem, program)

    def run_many(self, pairs: Iterable[tuple[Problem, str]]) -> list[Verdict]:
        """Blocking, like :meth:`Judge.run_many` (what :func:`rltf.evaluation.evaluate` calls)."""
        return [future.result() for future in [self.submit(p, program) for p, program in pairs]]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for judge in self._all:
            judge.close()

    def __enter__(self) -> JudgeService:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
