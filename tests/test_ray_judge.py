"""The judge pool on Ray: same verdicts as the local pool, dead actors replaced, retries, infra errors."""

from __future__ import annotations

import threading
import time

import pytest
import ray

from rltf.judge import Judge, JudgeConfig, JudgeService, open_judge
from rltf.judge.ray_pool import RayJudge
from rltf.problems import Problem

ADD = Problem(id="add", source="test", prompt="", entry_point="f",
              tests={"kind": "assert", "setup": "", "cases": ["assert f(1, 2) == 3", "assert f(2, 2) == 4"]})
PROGRAMS = ["def f(a, b):\n    return a + b\n", "def f(a, b):\n    return 3\n", "def f(a, b)\n    return 1\n",
            "def f(a, b):\n    return a / 0\n", "def f(a, b):\n    while True:\n        pass\n"]
SLOW = "import time\ndef f(a, b):\n    time.sleep(1.5)\n    return a + b\n"
CONFIG = dict(timeout_s=1.0, program_timeout_s=20.0)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _outcome(verdict):
    return verdict.status, verdict.passed, verdict.error_category


def test_ray_verdicts_match_the_local_pool() -> None:
    pairs = [(ADD, p) for p in PROGRAMS]
    with Judge(JudgeConfig(workers=2, **CONFIG)) as local:
        expected, isolation = local.run_many(pairs), local.isolation
    with open_judge(JudgeConfig(workers=2, backend="ray", **CONFIG)) as remote:
        assert isinstance(remote, RayJudge) and remote.isolation == isolation
        got = remote.run_many(pairs)
    assert [_outcome(v) for v in got] == [_outcome(v) for v in expected]
    assert [v.status for v in got] == ["pass", "fail", "error", "error", "error"]


def _run_in_thread(judge: RayJudge, programs: list[str]) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.extend(judge.run_many([(ADD, p) for p in programs])))
    thread.start()
    return thread, out


def _kill_busy_actor(judge: RayJudge, replaced_before: int) -> None:
    deadline = time.monotonic() + 30
    while judge.replaced == replaced_before and time.monotonic() < deadline:
        time.sleep(0.6)  # the job is running inside the actor by now
        ray.kill(judge._actors[0], no_restart=True)
        time.sleep(0.3)


def test_a_dead_actor_is_replaced_and_its_job_retried_once() -> None:
    with RayJudge(JudgeConfig(workers=1, timeout_s=5.0, program_timeout_s=20.0)) as judge:
        thread, out = _run_in_thread(judge, [SLOW])
        _kill_busy_actor(judge, 0)
        thread.join(60)
        assert judge.replaced == 1 and [v.status for v in out] == ["pass"]  # the retry judged it
        assert judge.run(ADD, PROGRAMS[0]).status == "pass"  # the replacement serves the next jobs


def test_a_job_whose_actor_dies_twice_is_an_infra_error() -> None:
    with RayJudge(JudgeConfig(workers=1, timeout_s=5.0, program_timeout_s=20.0)) as judge:
        thread, out = _run_in_thread(judge, [SLOW])
        _kill_busy_actor(judge, 0)
        _kill_busy_actor(judge, 1)
        thread.join(60)
        (verdict,) = out
        assert judge.replaced == 2 and verdict.status == "infra_error" and "actor died" in verdict.error.message
        assert verdict.total == 2  # never scored as a program failure


def test_the_trainer_judge_service_runs_on_ray() -> None:
    with JudgeService(JudgeConfig(workers=2, backend="ray", **CONFIG)) as service:
        verdicts = service.run_many([(ADD, p) for p in PROGRAMS[:2]])
    assert [v.status for v in verdicts] == ["pass", "fail"]
