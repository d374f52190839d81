"""The judge on a Ray cluster (``judge.backend: ray``): judge servers as Ray actors, on any node.

Each actor owns a one-server :class:`~rltf.judge.Judge` (its own sandbox, warm between jobs) and
answers one program at a time; :class:`RayJudge` keeps every actor busy and has the same contract
as :class:`~rltf.judge.Judge`: verdicts in input order, the isolation report, and infrastructure
failures kept apart from program errors. An actor that dies (its node went away, it was killed)
or does not answer within the program's time budget is replaced, and its job is retried once on
the replacement; a second failure is an ``infra_error`` verdict, never a program failure.

Ray itself is used as it is: ``address`` None starts (or joins) a local instance, ``"auto"`` the
cluster this machine belongs to. Nothing here schedules, retries or moves data beyond that.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from rltf.judge.core import REPLY_SLACK_S, Judge, JudgeConfig, check_isolation
from rltf.judge.verdict import Verdict
from rltf.problems import Problem, select_tests


class _Server:
    """The actor's body (wrapped by ``ray.remote`` on first use, so importing rltf needs no Ray)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.judge = Judge(JudgeConfig(**{**config, "workers": 1}))

    def isolation(self) -> str:
        return self.judge.isolation

    def run(self, problem: dict[str, Any], program: str) -> dict[str, Any]:
        return self.judge.run(Problem.from_dict(problem), program).to_dict()


class RayJudge:
    """``workers`` judge actors on Ray (``JudgeConfig.workers``), one CPU each."""

    def __init__(self, config: JudgeConfig | None = None, address: str | None = None) -> None:
        import ray

        self.config = config or JudgeConfig()
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
        self._ray = ray
        self._remote = ray.remote(num_cpus=1, max_restarts=0)(_Server)
        self._settings = {k: v for k, v in dataclasses.asdict(self.config).items()
                          if k not in ("workers", "backend", "ray_address")}
        self._actors = [self._start() for _ in range(max(1, self.config.workers))]
        self.isolation = ray.get(self._actors[0].isolation.remote())
        check_isolation(self.config.isolation, self.isolation)  # the actors' own warnings stay on their nodes
        self.replaced = 0
        """Actors replaced so far (dead or unresponsive)."""

    def _start(self) -> Any:
        return self._remote.remote(self._settings)

    def run(self, problem: Problem, program: str) -> Verdict:
        return self.run_many([(problem, program)])[0]

    def run_many(self, pairs: Iterable[tuple[Problem, str]],
                 on_result: Callable[[int, Verdict], None] | None = None) -> list[Verdict]:
        """Judge many programs across the actors; verdicts come back in input order."""
        ray = self._ray
        pairs = list(pairs)
        records = [problem.to_dict() for problem, _ in pairs]
        verdicts: list[Verdict | None] = [None] * len(pairs)
        tries = [0] * len(pairs)
        pending = deque(range(len(pairs)))
        in_flight: dict[Any, tuple[int, int, float]] = {}  # ref -> (job, actor slot, deadline)
        free = deque(range(len(self._actors)))

        def finish(index: int, verdict: Verdict) -> None:
            verdicts[index] = verdict
            if on_result is not None:
                on_result(index, verdict)

        def lost(index: int, slot: int, reason: str) -> None:
            ray.kill(self._actors[slot], no_restart=True)
            self._actors[slot] = self._start()
            self.replaced += 1
            if tries[index] < 2:
                pending.appendleft(index)
            else:
                total = len(select_tests(pairs[index][0], self.config.tests)["cases"])
                finish(index, Verdict.infra(reason, total, self.isolation))
            free.append(slot)

        while pending or in_flight:
            while pending and free:
                index, slot = pending.popleft(), free.popleft()
                tries[index] += 1
                budget = self.config.program_timeout_s + REPLY_SLACK_S
                ref = self._actors[slot].run.remote(records[index], pairs[index][1])
                in_flight[ref] = (index, slot, time.monotonic() + budget)
            timeout = max(0.0, min(deadline for _, _, deadline in in_flight.values()) - time.monotonic())
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=timeout)
            for ref in done:
                index, slot, _ = in_flight.pop(ref)
                try:
                    reply = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    lost(index, slot, f"judge actor died: {type(exc).__name__}")
                    continue
                free.append(slot)
                finish(index, Verdict.from_dict(reply))
            now = time.monotonic()
            for ref in [r for r, (_, _, deadline) in in_flight.items() if deadline < now]:
                index, slot, _ = in_flight.pop(ref)
                lost(index, slot, "judge actor stopped answering")
        return verdicts  # type: ignore[return-value]

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor, no_restart=True)
        self._actors = []

    def __enter__(self) -> RayJudge:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
