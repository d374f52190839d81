"""The sandbox server: a warm, namespaced process that judges one program at a time.

The judge starts one server per worker (``python -m rltf.judge.server``) and talks to it over
its standard input and output with length-prefixed JSON. For every job the server

1. has already forked a runner (before reading the job, so the runner's memory holds no expected
   values),
2. sends the runner the program and the test inputs only,
3. drives the tests itself: for ``assert`` tests it executes the dataset's test code here, where
   every name the program defines is a proxy whose calls go to the runner and whose results come
   back as plain builtins; for ``call`` tests it calls the function through the same channel; for
   ``stdio`` tests it reads each output file and compares it,
4. kills everything the program started and wipes the working directory.

The verdict therefore only ever travels on a pipe the runner does not hold, and only after the
tests ran here.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import functools
import gc
import importlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from rltf.judge import compare, runner, sandbox, wire
from rltf.judge.asserts import AssertRecorder, AssertSite, rewrite
from rltf.judge.verdict import ErrorInfo, FailureInfo, TestResult, Verdict

PRELOAD = ("array", "bisect", "collections", "copy", "datetime", "decimal", "fractions", "functools", "hashlib",
           "heapq", "itertools", "json", "math", "operator", "random", "re", "statistics", "string", "sys", "typing")
SIGNAL_PHASE = {signal.SIGXCPU: "timeout", signal.SIGXFSZ: "output_limit", signal.SIGSEGV: "runtime",
                signal.SIGBUS: "runtime", signal.SIGFPE: "runtime", signal.SIGABRT: "runtime",
                signal.SIGILL: "runtime"}
MAX_OUTPUT_READ = 64 * 1024 * 1024
MAX_OUTPUT_REPR = 20_000
"""Longest collected return value (its repr), the cap MBPP+'s conversion uses for a test line."""
JOB_DIR = "/job"
JOB_DIR_MB = 256


class ProgramError(Exception):
    """An exception raised inside the program, re-raised in the test code that called it."""

    record: dict[str, Any]


class RunnerGone(Exception):
    """The runner stopped answering: it died, was killed for a limit, or timed out."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


class HarnessLimit(Exception):
    """A test needs something the harness cannot do (e.g. pass a lambda into the program)."""


_exception_classes: dict[str, type] = {}


def _program_exception(record: dict[str, Any]) -> ProgramError:
    """An exception the test code can catch as the program's builtin type (``except ValueError``)."""
    name = record["type"]
    cls = _exception_classes.get(name)
    if cls is None:
        base = getattr(builtins, name, None)
        cls = ProgramError
        if isinstance(base, type) and issubclass(base, Exception) and base is not Exception:
            try:
                cls = type(name, (ProgramError, base), {})
            except TypeError:
                cls = ProgramError
        _exception_classes[name] = cls
    exc = cls(record["message"])
    exc.record = record
    return exc


@dataclass
class Runner:
    pid: int
    job_fd: int
    chan_fd: int
    finished: bool = False


class Channel:
    """Request/response with the runner under a deadline; raises RunnerGone on any failure."""

    def __init__(self, server: Server, run: Runner) -> None:
        self.server = server
        self.run = run
        self.deadline = float("inf")

    def receive(self) -> Any:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.run.chan_fd], [], [], remaining)[0]:
            raise RunnerGone(self.server.stop_runner(self.run, timed_out=True))
        try:
            return wire.recv(self.run.chan_fd)
        except wire.WireError:
            raise RunnerGone(self.server.stop_runner(self.run)) from None

    def request(self, message: dict[str, Any]) -> Any:
        try:
            wire.send(self.run.chan_fd, message)
        except OSError:
            raise RunnerGone(self.server.stop_runner(self.run)) from None
        reply = self.receive()
        if not isinstance(reply, dict):
            raise RunnerGone(ErrorInfo("runtime", "ProtocolError", "malformed reply from the program"))
        if "error" in reply:
            raise _program_exception(_checked_record(reply["error"]))
        try:
            return wire.decode(reply.get("ok"), lambda rid, name: wire.Remote(self, rid, name))
        except (wire.WireError, TypeError, ValueError) as exc:
            raise RunnerGone(ErrorInfo("runtime", "ProtocolError", f"undecodable value: {exc}")) from None


def _checked_record(record: Any) -> dict[str, Any]:
    """Error records come from the untrusted side: keep only well-typed fields."""
    if not isinstance(record, dict):
        record = {}
    phase = record.get("phase")
    line = record.get("line")
    return {
        "phase": phase if phase in ("compile", "runtime", "memory", "output_limit") else "runtime",
        "type": str(record.get("type") or "Error")[:200],
        "message": str(record.get("message") or "")[:2000],
        "line": line if isinstance(line, int) and not isinstance(line, bool) and line > 0 else None,
    }


def _error(record: dict[str, Any]) -> ErrorInfo:
    rec = _checked_record(record)
    return ErrorInfo(rec["phase"], rec["type"], rec["message"], rec["line"])


def program_names(setup: str, cases: list[str], entry_point: str | None) -> set[str]:
    """Names the tests use that only the program can define: they become proxies into the runner.

    Builtins and names the test code binds itself resolve on the trusted side, so a program that
    shadows ``set`` or ``isclose`` cannot change what the tests compute.
    """
    loaded: set[str] = set()
    bound: set[str] = set()
    for source in (setup, *cases):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Name):
                (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.alias):
                bound.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                bound.add(node.name)
    names = loaded - bound - set(dir(builtins))
    if entry_point:
        names.add(entry_point)
    return names


@functools.lru_cache(maxsize=4096)
def _compiled_tests(setup: str, cases: tuple[str, ...], entry_point: str | None):
    """RL judges the same problem many times: parse and compile its tests once, their asserts
    rewritten to report what they compared (:mod:`rltf.judge.asserts`)."""
    names = program_names(setup, list(cases), entry_point)
    sites: list[AssertSite] = []
    compiled_setup = rewrite(setup, "<setup>", sites, names)
    compiled = [rewrite(case, f"<test {i}>", sites, names) for i, case in enumerate(cases)]
    return names, compiled_setup, compiled, tuple(sites)


def _describe(value: Any) -> str:
    """A value for a failure report: short whatever its size, and never an exception, unless the
    runner died meanwhile (a test-side object whose ``repr`` calls the program)."""
    try:
        return compare.bounded_repr(value)
    except RunnerGone:
        raise
    except Exception as exc:
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"


def _call_text(fn_name: str, args: list[Any]) -> str:
    """``fn(arg, ...)`` for a failing call test's report."""
    shown = [_describe(arg) for arg in args[:12]] + ["..."] * (len(args) > 12)
    return f"{fn_name}({', '.join(shown)})"


class Zygote:
    """The process that forks runners: it never sees a job, so runners inherit no test data.

    With namespaces it is pid 1 of the sandbox's pid namespace: it builds the read-only file
    system, and ``kill(-1)`` from it ends every process a program started. The checker (the
    server's main process) stays outside that pid namespace, out of the programs' reach.
    """

    def __init__(self, info: sandbox.SandboxInfo, hidden: list[str], job_dir: str) -> None:
        self.info = info
        self.job_dir = job_dir
        self.sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = os.fork()
        if self.pid == 0:
            self.sock.close()
            self._main(child_sock, hidden)
        child_sock.close()
        if json.loads(self.sock.recv(4096)) != "ready":
            raise RuntimeError("the zygote did not start")

    # client side (checker) ---------------------------------------------------------------------
    def fork_runner(self) -> Runner:
        self.sock.send(b'"fork"')
        message, fds, _, _ = socket.recv_fds(self.sock, 4096, 2)
        return Runner(json.loads(message), fds[0], fds[1])

    def finish(self, run: Runner) -> int | None:
        """Kill the runner and everything it started; return the runner's wait status."""
        for fd in (run.job_fd, run.chan_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.sock.send(json.dumps(run.pid).encode())
        return json.loads(self.sock.recv(4096))

    # zygote side ---------------------------------------------------------------------------------
    def _main(self, sock: socket.socket, hidden: list[str]) -> None:
        code = 0
        try:
            sandbox.prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if self.info.namespaces:
                sandbox.build_root(self.info, hidden, self.job_dir, JOB_DIR_MB)
            for name in PRELOAD:
                importlib.import_module(name)
            gc.freeze()  # forked runners then leave the preloaded objects alone: fewer copy-on-write faults
            sock.send(b'"ready"')
            while True:
                request = sock.recv(4096)
                if not request:
                    break
                command = json.loads(request)
                if command == "fork":
                    self._fork(sock)
                else:
                    sock.send(json.dumps(self._finish(command)).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)

    def _fork(self, sock: socket.socket) -> None:
        job_r, job_w = os.pipe()
        chan_checker, chan_runner = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            runner.runner_main(job_r, chan_runner.fileno(), self.job_dir, self.info.namespaces)
        os.close(job_r)
        chan_runner.close()
        socket.send_fds(sock, [json.dumps(pid).encode()], [job_w, chan_checker.fileno()])
        os.close(job_w)
        chan_checker.close()

    def _finish(self, pid: int) -> int | None:
        if self.info.namespaces:
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)  # pid 1 of the namespace: every other process in it
        else:
            _kill(pid, group=True)
            _kill(pid)
        status = _reap(pid)
        while True:  # reap whatever else ended (all of it, inside a namespace)
            try:
                if os.waitpid(-1, 0 if self.info.namespaces else os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        for entry in os.scandir(self.job_dir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        return status


class Server:
    def __init__(self, job_in: int, verdict_out: int, info: sandbox.SandboxInfo, hidden: list[str]) -> None:
        self.job_in = job_in
        self.verdict_out = verdict_out
        self.info = info
        self.job_dir = JOB_DIR if info.namespaces else tempfile.mkdtemp(prefix="rltf-job-")
        self.zygote = Zygote(info, hidden, self.job_dir)

    def stop_runner(self, run: Runner, timed_out: bool = False) -> ErrorInfo:
        """End the runner and say why it ended (the error that ends the remaining tests)."""
        status = self.zygote.finish(run)
        run.finished = True
        if timed_out:
            return ErrorInfo("timeout", "TimeoutError", "time limit exceeded")
        if status is None:
            return ErrorInfo("killed", "Killed", "the program's process disappeared")
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals.__members__.values() else str(sig)
            phase = SIGNAL_PHASE.get(sig, "killed")
            message = {"timeout": "CPU time limit exceeded", "output_limit": "output size limit exceeded"}.get(
                phase, f"terminated by {name}")
            return ErrorInfo(phase, "TimeoutError" if phase == "timeout" else name, message)
        code = os.WEXITSTATUS(status)
        return ErrorInfo("runtime", "EarlyExit", f"the program exited with status {code} before the tests finished")

    # -- one job -----------------------------------------------------------------------------
    def judge(self, job: dict[str, Any], run: Runner) -> Verdict:
        started = time.monotonic()
        tests = job["tests"]
        total = len(tests["cases"])
        self.job_deadline = started + job["program_timeout_s"]
        limits = job["limits"]
        mode = "stdio" if tests["kind"] == "stdio" else "calls"
        message = {"mode": mode, "source": job["program"], "limits": limits, "test_timeout_s": job["timeout_s"],
                   "typing_names": tests["kind"] == "call"}
        if mode == "stdio":
            message["inputs"] = [case["input"] for case in tests["cases"]]
        channel = Channel(self, run)
        results: list[TestResult] = []
        error: ErrorInfo | None = None
        failure: FailureInfo | None = None
        try:
            wire.send(run.job_fd, message)
            channel.deadline = min(time.monotonic() + job["timeout_s"] + 1.0, self.job_deadline)
            event = channel.receive()
            if event.get("event") in ("compile_error", "load_error"):
                rec = event["error"]
                if event["event"] == "compile_error":
                    rec["phase"] = "compile"
                    error = ErrorInfo("compile", str(rec.get("type"))[:200], str(rec.get("message"))[:2000],
                                      _checked_record(rec)["line"])
                else:
                    error = _error(rec)
            elif tests["kind"] == "stdio":
                results, error, failure = self._stdio_tests(job, channel)
            else:
                results, error, failure = self._call_tests(job, channel)
        except RunnerGone as gone:
            error = gone.error
        except HarnessLimit as exc:
            return Verdict.infra(f"test harness limitation: {exc}", total, self.info.description)
        results += [TestResult("not_run")] * (total - len(results))
        passed = sum(r.status == "pass" for r in results)
        if error is None:
            error = next((r.error for r in results if r.status == "error"), None)
        if error is not None:
            status = "error"
        elif total == 0:
            return Verdict.infra("the problem has no tests", 0, self.info.description)
        else:
            status = "pass" if passed == total else "fail"
        return Verdict(status, passed, total, error, tuple(results), time.monotonic() - started,
                       self.info.description, failure=failure)

    def _test_deadline(self, job: dict[str, Any]) -> float:
        return min(time.monotonic() + job["timeout_s"], self.job_deadline)

    def _call_tests(self, job: dict[str, Any],
                    channel: Channel) -> tuple[list[TestResult], ErrorInfo | None, FailureInfo | None]:
        """Function tests one by one; returns their results, the error that ended them early, and
        the first failing test's :class:`FailureInfo`."""
        tests = job["tests"]
        stop_early = job["stop_on_first_failure"]
        results: list[TestResult] = []
        outputs: dict[int, str] = {}
        first_failure: FailureInfo | None = None
        if tests["kind"] == "call":
            run_case = (self._collect_case(tests, channel, outputs) if job.get("collect")
                        else self._call_case(tests, channel))
        else:
            run_case = self._assert_case(tests, job.get("entry_point"), channel)
            if isinstance(run_case, TestResult):  # the setup failed: nothing can run
                return [], run_case.error, None
        for index in range(len(tests["cases"])):
            channel.deadline = self._test_deadline(job)
            started = time.monotonic()
            try:
                status, error, failure = run_case(index)
            except RunnerGone as gone:
                results.append(TestResult("error", time.monotonic() - started, gone.error))
                return results, gone.error, first_failure
            results.append(TestResult(status, time.monotonic() - started, error, outputs.get(index)))
            first_failure = first_failure or failure
            if stop_early and status != "pass":
                break
        return results, None, first_failure

    def _collect_case(self, tests: dict[str, Any], channel: Channel, outputs: dict[int, str]):
        """A reference program's return values (``Judge.call_outputs``): each as the ``repr`` of
        plain builtin data, computed here on the trusted side from the decoded value. A value the
        wire cannot describe, or one whose repr exceeds ``MAX_OUTPUT_REPR``, is an error."""
        def run_case(index: int) -> tuple[str, ErrorInfo | None, None]:
            try:
                value = channel.request({"op": "apps_call", "fn_name": tests["fn_name"],
                                         "args": tests["cases"][index]["args"]})  # wire-encoded by the client
            except ProgramError as exc:
                return "error", _error(exc.record), None
            if not compare.is_plain_data(value):
                return "error", ErrorInfo("runtime", "Unrepresentable", "the value is not plain builtin data"), None
            try:
                text = repr(value)
            except ValueError as exc:  # an int past Python's digit limit for str()
                return "error", ErrorInfo("runtime", "OutputTooLarge", str(exc)[:200]), None
            if len(text) > MAX_OUTPUT_REPR:
                return "error", ErrorInfo("runtime", "OutputTooLarge", f"repr of {len(text)} characters"), None
            outputs[index] = text
            return "pass", None, None
        return run_case

    def _call_case(self, tests: dict[str, Any], channel: Channel):
        def run_case(index: int) -> tuple[str, ErrorInfo | None, FailureInfo | None]:
            case = tests["cases"][index]
            try:
                value = channel.request({"op": "apps_call", "fn_name": tests["fn_name"],
                                         "args": wire.encode(case["args"])})
            except ProgramError as exc:
                return "error", _error(exc.record), None
            if compare.call_result_matches(value, case["expected"]):
                return "pass", None, None
            failure = FailureInfo(_call_text(tests["fn_name"], case["args"]), _describe(case["expected"]),
                                  _describe(value))
            return "fail", None, failure
        return run_case

    def _assert_case(self, tests: dict[str, Any], entry_point: str | None, channel: Channel):
        names, setup, compiled, sites = _compiled_tests(tests.get("setup", ""), tuple(tests["cases"]), entry_point)
        namespace: dict[str, Any] = {"__name__": "__test__", "__builtins__": builtins}
        for name in names:
            namespace[name] = wire.Remote(channel, name, "")
        recorder = AssertRecorder(sites)
        recorder.install(namespace)
        channel.deadline = min(time.monotonic() + 30.0, self.job_deadline)
        try:
            exec(setup, namespace)
        except RunnerGone:
            raise
        except ProgramError as exc:
            return TestResult("error", 0.0, _error(exc.record))
        except wire.Unencodable as exc:
            raise HarnessLimit(str(exc)) from None
        except Exception as exc:
            return TestResult("error", 0.0, ErrorInfo("runtime", type(exc).__name__, f"in test setup: {exc}"))

        def run_case(index: int) -> tuple[str, ErrorInfo | None, FailureInfo | None]:
            try:
                exec(compiled[index], namespace)
            except RunnerGone:
                raise
            except ProgramError as exc:
                return "error", _error(exc.record), None
            except AssertionError as exc:
                return "fail", None, recorder.failure(exc, tests["cases"][index], _describe)
            except wire.Unencodable as exc:
                raise HarnessLimit(str(exc)) from None
            except RecursionError as exc:
                return "error", ErrorInfo("runtime", "RecursionError", f"in test code: {exc}"), None
            except Exception as exc:
                return "error", ErrorInfo("runtime", type(exc).__name__, f"in test code: {exc}"[:2000]), None
            return "pass", None, None
        return run_case

    def _stdio_tests(self, job: dict[str, Any],
                     channel: Channel) -> tuple[list[TestResult], ErrorInfo | None, FailureInfo | None]:
        cases = job["tests"]["cases"]
        results: list[TestResult] = []
        first_failure: FailureInfo | None = None
        for index, case in enumerate(cases):
            channel.deadline = min(time.monotonic() + job["timeout_s"] + 1.0, self.job_deadline)
            try:
                event = channel.receive()
            except RunnerGone as gone:
                results.append(TestResult("error", job["timeout_s"], gone.error))
                return results, gone.error, first_failure
            if not isinstance(event, dict) or event.get("index") != index:
                error = ErrorInfo("runtime", "ProtocolError", "unexpected message from the runner")
                results.append(TestResult("error", 0.0, error))
                return results, error, first_failure
            result, failure = self._stdio_result(event, case, index)
            results.append(result)
            first_failure = first_failure or failure
            if job["stop_on_first_failure"] and result.status != "pass":
                break
        return results, None, first_failure

    def _stdio_result(self, event: dict[str, Any], case: dict[str, Any],
                      index: int) -> tuple[TestResult, FailureInfo | None]:
        elapsed = float(event.get("time_s", 0.0))
        outcome = event.get("outcome")
        if outcome == "timeout":
            return TestResult("error", elapsed, ErrorInfo("timeout", "TimeoutError", "time limit exceeded")), None
        if outcome == "signal":
            sig = int(event.get("signal", 0))
            phase = SIGNAL_PHASE.get(sig, "killed")
            name = signal.Signals(sig).name if sig in signal.Signals.__members__.values() else str(sig)
            return TestResult("error", elapsed, ErrorInfo(phase, "TimeoutError" if phase == "timeout" else name,
                                                          f"terminated by {name}")), None
        if event.get("code", 1) != 0 or "error" in event:
            record = event.get("error") or {"type": "NonZeroExit", "message": f"exit status {event.get('code')}"}
            return TestResult("error", elapsed, _error(record)), None
        try:
            with open(os.path.join(self.job_dir, f"out_{index}.txt"), "rb") as handle:
                output = handle.read(MAX_OUTPUT_READ).decode("utf-8", errors="replace")
        except OSError:
            output = ""
        if compare.outputs_match(output, case["output"]):
            return TestResult("pass", elapsed), None
        return TestResult("fail", elapsed), FailureInfo(case["input"], case["output"], output)

    # -- main loop ---------------------------------------------------------------------------
    def serve(self) -> None:
        run = self.zygote.fork_runner()
        while True:
            try:
                job = wire.recv(self.job_in)
            except wire.WireError:
                return
            try:
                verdict = self.judge(job, run)
            except Exception as exc:  # a harness bug must not look like a program failure
                verdict = Verdict.infra(f"{type(exc).__name__}: {exc}", len(job["tests"]["cases"]),
                                        self.info.description)
            wire.send(self.verdict_out, verdict.to_dict())
            if not run.finished:
                self.zygote.finish(run)
            run = self.zygote.fork_runner()


def _kill(pid: int, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)


def _reap(pid: int) -> int | None:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def main() -> None:
    """``python -m rltf.judge.server MODE [HIDDEN...]``: MODE is auto, namespaces or rlimits."""
    job_in = os.dup(0)
    verdict_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    mode, hidden = sys.argv[1], sys.argv[2:]
    info = sandbox.SandboxInfo(False, "rlimits only (requested)") if mode == "rlimits" \
        else sandbox.unshare_namespaces()
    server = Server(job_in, verdict_out, info, hidden)
    wire.send(verdict_out, {"ready": info.description})
    server.serve()


if __name__ == "__main__":
    main()
