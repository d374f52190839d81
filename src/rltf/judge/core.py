"""The judge's public face: a pool of warm sandbox servers, one job per server at a time."""

from __future__ import annotations

import dataclasses
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import rltf
from rltf.judge import wire
from rltf.judge.static import StaticAnalyzer
from rltf.judge.verdict import Verdict
from rltf.problems import Problem, TestSelection, infer_entry_point, select_tests, validate_tests

START_TIMEOUT_S = 60.0
REPLY_SLACK_S = 15.0
Isolation = Literal["auto", "namespaces", "rlimits"]

log = logging.getLogger(__name__)
_fallback_warned = False
_fallback_lock = threading.Lock()


@dataclass
class JudgeConfig:
    """Limits and pool size. Per-problem ``time_limit_s`` / ``memory_limit_mb`` override the defaults."""

    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    timeout_s: float = 4.0
    program_timeout_s: float = 60.0
    memory_mb: int = 2048
    max_processes: int = 64
    max_output_mb: int = 16
    stop_on_first_failure: bool = False
    isolation: Isolation = "auto"
    """``auto``: namespaces (no network, read-only minimal file system, a pid namespace) where the
    OS allows them, else resource limits only, with a warning once per process (containers without
    unprivileged user namespaces, macOS). ``namespaces``: refuse to start without them
    (:class:`JudgeError`), for judging untrusted code. ``rlimits``: resource limits only, always."""
    static: bool = False
    """Add static-analysis findings (:mod:`rltf.judge.static`) to every verdict of a program that compiles."""
    tests: TestSelection = "original"
    """Which tests judge a program: the benchmark's (``original``), ``rltf augment``'s (``extra``) or ``all``."""
    backend: Literal["local", "ray"] = "local"
    """``ray``: ``workers`` judge actors on a Ray cluster (:mod:`rltf.judge.ray_pool`) instead of local servers."""
    ray_address: str | None = None
    """With ``backend: ray``: None starts or joins a local Ray instance, ``auto`` the machine's cluster."""


class JudgeError(RuntimeError):
    """The judge cannot start (for example, namespaces were required but are unavailable)."""


def check_isolation(mode: str, isolation: str) -> None:
    """Hold a started sandbox (its ``isolation`` report) to the ``mode`` asked for: ``namespaces``
    without them is an error, ``auto`` without them a one-line warning, logged once per process
    (Python prints it on stderr when the application configured no logging)."""
    if isolation.startswith("namespaces"):
        return
    if mode == "namespaces":
        raise JudgeError(f"judge isolation 'namespaces' is required but the sandbox got {isolation}; "
                         "allow unprivileged user namespaces (containers often block them, macOS has none) or "
                         "set judge.isolation=auto to run programs with resource limits only")
    if mode != "auto":
        return
    global _fallback_warned
    with _fallback_lock:
        if _fallback_warned:
            return
        _fallback_warned = True
    log.warning("rltf judge: isolation 'auto' fell back to %s: programs can use the network and read and "
                "write this user's files; set judge.isolation=namespaces to refuse to run like this", isolation)


class _Worker:
    """One sandbox server process and its pipes."""

    def __init__(self, mode: str) -> None:
        package_root = Path(rltf.__file__).resolve().parent
        hidden = [str(package_root / "data")] if (package_root / "data").is_dir() else []
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(package_root.parent),
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-s", "-m", "rltf.judge.server", mode, *hidden],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, cwd="/", start_new_session=True,
        )
        self.job_index: int | None = None
        self.deadline = 0.0
        selector = selectors.DefaultSelector()
        selector.register(self.stdout_fd, selectors.EVENT_READ)
        ready = selector.select(START_TIMEOUT_S)
        selector.close()
        try:
            if not ready:
                raise wire.WireError("no answer")
            self.isolation = wire.recv(self.stdout_fd)["ready"]
        except (wire.WireError, KeyError, TypeError) as exc:
            self.kill()
            raise JudgeError(f"the sandbox server did not start: {exc}") from None
        try:
            check_isolation(mode, self.isolation)
        except JudgeError:
            self.kill()
            raise

    @property
    def stdout_fd(self) -> int:
        return self.process.stdout.fileno()

    def send(self, index: int, job: dict, deadline: float) -> None:
        self.job_index = index
        self.deadline = deadline
        wire.send(self.process.stdin.fileno(), job)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe:
                pipe.close()


class Judge:
    """Runs untrusted programs against a problem's unit tests and returns typed verdicts.

    ``with Judge(workers=2) as judge: judge.run(problem, program)``. Generated code never runs in
    this process; every program runs in a sandbox server's child with time, memory, process,
    file-size and output limits, namespaces where the OS allows it (see ``Verdict.isolation``).
    """

    def __init__(self, config: JudgeConfig | None = None, **overrides) -> None:
        self.config = config or JudgeConfig()
        for key, value in overrides.items():
            if value is not None:
                setattr(self.config, key, value)
        if self.config.isolation not in ("auto", "namespaces", "rlimits"):
            raise ValueError(f"unknown isolation {self.config.isolation!r}")
        if self.config.tests not in ("original", "extra", "all"):
            raise ValueError(f"unknown tests {self.config.tests!r} (original, extra or all)")
        self._workers: list[_Worker] = []
        try:
            for _ in range(max(1, self.config.workers)):
                self._workers.append(_Worker(self.config.isolation))
        except BaseException:  # e.g. JudgeError: no namespaces where they are required
            for worker in self._workers:
                worker.kill()
            raise
        self._static = StaticAnalyzer() if self.config.static else None

    @property
    def isolation(self) -> str:
        return self._workers[0].isolation

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.kill()
        self._workers = []
        if self._static is not None:
            self._static.close()

    def _job(self, problem: Problem, program: str) -> dict:
        tests = select_tests(problem, self.config.tests)
        validate_tests(tests)
        cfg = self.config
        timeout = problem.time_limit_s or cfg.timeout_s
        memory = problem.memory_limit_mb or cfg.memory_mb
        limits = {"cpu_s": cfg.program_timeout_s, "memory_mb": memory, "max_processes": cfg.max_processes,
                  "max_file_mb": cfg.max_output_mb}
        entry_point = problem.entry_point or infer_entry_point(problem.tests)
        return {"program": program, "tests": tests, "entry_point": entry_point,
                "timeout_s": timeout, "program_timeout_s": cfg.program_timeout_s, "limits": limits,
                "stop_on_first_failure": cfg.stop_on_first_failure}

    def run(self, problem: Problem, program: str) -> Verdict:
        return self.run_many([(problem, program)])[0]

    def run_many(self, pairs: Iterable[tuple[Problem, str]],
                 on_result: Callable[[int, Verdict], None] | None = None) -> list[Verdict]:
        """Judge many programs across the pool; verdicts come back in input order.

        A server that dies or stops answering is replaced and its job retried once; a second
        failure yields an ``infra_error`` verdict, never a program failure.
        """
        pairs = list(pairs)
        return self._run_jobs(pairs, [self._job(problem, program) for problem, program in pairs], on_result)

    def call_outputs(self, program: str, fn_name: str, inputs: Sequence[Sequence[Any]]) -> list[str | None]:
        """The return value of ``fn_name(*args)`` for each input, as the repr of plain builtin data,
        computed by running ``program`` (a reference solution: trusted, but still never run in this
        process) in the sandbox; None where the call raised, timed out or returned anything else."""
        cases = [{"args": wire.encode(list(args)), "expected": None} for args in inputs]  # tuples, sets survive
        outputs: list[str | None] = [None] * len(cases)
        start = 0
        while start < len(cases):  # a call that ends the runner (a timeout, an unsendable value) ends
            problem = Problem(id="call-outputs", source="", prompt="",  # its job: go on after it
                              tests={"kind": "call", "fn_name": fn_name, "cases": cases[start:]})
            job = {**self._job(problem, program), "collect": True, "stop_on_first_failure": False}
            ran = [t for t in self._run_jobs([(problem, program)], [job], None)[0].tests if t.status != "not_run"]
            for offset, test in enumerate(ran):
                outputs[start + offset] = test.output if test.status == "pass" else None
            if not ran:
                break
            start += len(ran)
        return outputs

    def _run_jobs(self, pairs: list[tuple[Problem, str]], jobs: list[dict],
                  on_result: Callable[[int, Verdict], None] | None) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(jobs)
        tries = [0] * len(jobs)
        pending = deque(range(len(jobs)))
        selector = selectors.DefaultSelector()
        busy: dict[int, _Worker] = {}

        def finish(index: int, verdict: Verdict) -> None:
            if self._static is not None and verdict.error_category not in ("compile", "infra_error"):
                findings = self._static.analyze(jobs[index]["program"], jobs[index]["entry_point"])
                verdict = dataclasses.replace(verdict, static=findings)
            verdicts[index] = verdict
            if on_result is not None:
                on_result(index, verdict)

        def fail(slot: int, worker: _Worker, reason: str) -> None:
            selector.unregister(worker.stdout_fd)
            del busy[worker.stdout_fd]
            worker.kill()
            index = worker.job_index
            self._workers[slot] = _Worker(self.config.isolation)
            if tries[index] < 2:
                pending.appendleft(index)
            else:
                finish(index, Verdict.infra(reason, len(jobs[index]["tests"]["cases"]), worker.isolation))

        try:
            while pending or busy:
                for worker in self._workers:
                    if pending and worker.stdout_fd not in busy:
                        index = pending.popleft()
                        tries[index] += 1
                        deadline = time.monotonic() + jobs[index]["program_timeout_s"] + REPLY_SLACK_S
                        busy[worker.stdout_fd] = worker
                        selector.register(worker.stdout_fd, selectors.EVENT_READ)
                        try:
                            worker.send(index, jobs[index], deadline)
                        except OSError as exc:
                            fail(self._workers.index(worker), worker, f"sandbox server died: {exc}")
                if not busy:
                    continue
                timeout = max(0.0, min(w.deadline for w in busy.values()) - time.monotonic())
                for key, _ in selector.select(timeout):
                    worker = busy[key.fd]
                    slot = self._workers.index(worker)
                    try:
                        reply = wire.recv(worker.stdout_fd)
                    except wire.WireError as exc:
                        fail(slot, worker, f"sandbox server died: {exc}")
                        continue
                    selector.unregister(worker.stdout_fd)
                    del busy[worker.stdout_fd]
                    finish(worker.job_index, Verdict.from_dict(reply))
                now = time.monotonic()
                for worker in [w for w in busy.values() if w.deadline < now]:
                    fail(self._workers.index(worker), worker, "sandbox server stopped answering")
        finally:
            selector.close()
        return verdicts  # type: ignore[return-value]


def open_judge(config: JudgeConfig) -> Any:
    """A :class:`Judge`, or for ``backend: ray`` a :class:`rltf.judge.ray_pool.RayJudge` with the
    same ``run`` / ``run_many`` / ``isolation`` / ``close`` contract."""
    if config.backend == "ray":
        from rltf.judge.ray_pool import RayJudge

        return RayJudge(config, address=config.ray_address)
    return Judge(config)
