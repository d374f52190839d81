"""The untrusted side: the process that runs a submitted program.

A runner is forked by the sandbox server *before* the server reads the next job, so its memory
never holds expected outputs. It receives only the program and the test inputs. Nothing it says
decides a pass: for function tests it returns values (rebuilt as builtins by the server, which
compares them), for stdio tests the server reads the output files and compares them. What the
runner reports about errors (exception type and line) is information for rewards; a program can
only make its own report worse by tampering with it.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import resource
import select
import signal
import sys
import threading
import time
import typing
from typing import Any

from rltf.judge import sandbox, wire

PROGRAM_FILENAME = "<program>"
MAX_FD = 1 << 16


def error_record(exc: BaseException, phase: str | None = None) -> dict[str, Any]:
    """Type, message and the innermost line of the submitted program where ``exc`` happened."""
    line = None
    if isinstance(exc, SyntaxError) and exc.filename == PROGRAM_FILENAME:
        line = exc.lineno
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == PROGRAM_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    if phase is None:
        if isinstance(exc, MemoryError):
            phase = "memory"
        elif isinstance(exc, OSError) and exc.errno == 27:  # EFBIG: output file size limit
            phase = "output_limit"
        else:
            phase = "runtime"
    try:
        message = str(exc)[:2000]
    except BaseException:  # a program's exception may fail to print itself
        message = ""
    return {"phase": phase, "type": type(exc).__name__, "message": message, "line": line}


def _redirect(fd: int, path: str, flags: int) -> None:
    new = os.open(path, flags, 0o644)
    os.dup2(new, fd)
    os.close(new)


def _isolate(keep: tuple[int, ...]) -> None:
    """First thing after fork: no inherited descriptor may reach the judge's pipes."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, MAX_FD)


def runner_main(job_fd: int, chan_fd: int, job_dir: str, namespaced: bool) -> None:
    """Entry point of a freshly forked runner; never returns."""
    code = 0
    try:
        _isolate((job_fd, chan_fd))
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.setsid()
        job = wire.recv(job_fd)
        os.close(job_fd)
        os.chdir(job_dir)
        limits = sandbox.Limits(**job["limits"])
        if namespaced:
            sandbox.drop_privileges()
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": job_dir, "LANG": "C.UTF-8",
                           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
        sandbox.apply_limits(limits)
        try:
            program = compile(job["source"], PROGRAM_FILENAME, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
            wire.send(chan_fd, {"event": "compile_error", "error": error_record(exc, "compile")})
            return
        if job["mode"] == "stdio":
            _serve_stdio(chan_fd, program, job)
        else:
            _serve_calls(chan_fd, program, job.get("typing_names", False))
    except BaseException:
        code = 70
    finally:
        os._exit(code)


def _serve_calls(chan: int, program: Any, typing_names: bool) -> None:
    """Run the module once, then answer the trusted side's calls until the channel closes.

    Call-based (LeetCode-style) problems have starter code such as ``def f(self, a: List[int])``
    and an environment that provides ``typing``'s names, so those are bound for them.
    """
    namespace: dict[str, Any] = {"__name__": "__program__", "__builtins__": builtins}
    if typing_names:
        namespace.update((name, getattr(typing, name)) for name in typing.__all__)
    try:
        exec(program, namespace)
    except BaseException as exc:
        wire.send(chan, {"event": "load_error", "error": error_record(exc)})
        return
    wire.send(chan, {"event": "ready"})
    refs: dict[int, Any] = {}

    def resolve(rid: Any, _type: str = "") -> Any:
        if isinstance(rid, str):
            if rid in namespace:
                return namespace[rid]
            raise NameError(f"name {rid!r} is not defined")
        return refs[rid]

    while True:
        try:
            request = wire.recv(chan)
        except wire.WireError:
            return
        try:
            result = _perform(request, resolve, namespace)
            try:
                reply = {"ok": wire.encode(result, refs)}
            except wire.Unencodable:
                refs[len(refs) + 1] = result
                reply = {"ok": ["R", len(refs), type(result).__name__]}
        except BaseException as exc:
            reply = {"error": error_record(exc)}
        sys.stdout.flush()
        wire.send(chan, reply)


def _perform(request: dict[str, Any], resolve: Any, namespace: dict[str, Any]) -> Any:
    op = request["op"]
    if op == "apps_call":
        solution = namespace.get("Solution")
        fn = getattr(solution(), request["fn_name"]) if isinstance(solution, type) else resolve(request["fn_name"])
        return fn(*wire.decode(request["args"], resolve))
    target = resolve(request["target"])
    if op == "call":
        return target(*wire.decode(request["args"], resolve), **wire.decode(request["kwargs"], resolve))
    if op == "getattr":
        return getattr(target, request["name"])
    if op == "setattr":
        setattr(target, request["name"], wire.decode(request["value"], resolve))
        return None
    if op == "getitem":
        return target[wire.decode(request["key"], resolve)]
    if op == "list":
        return list(target)
    if op == "len":
        return len(target)
    if op == "bool":
        return bool(target)
    raise ValueError(f"unknown operation {op!r}")


def _serve_stdio(chan: int, program: Any, job: dict[str, Any]) -> None:
    """One fresh child per test, as a real judge would start the program once per input."""
    wire.send(chan, {"event": "ready"})
    for index, text in enumerate(job["inputs"]):
        with open(f"in_{index}.txt", "w", encoding="utf-8") as handle:
            handle.write(text)
        wire.send(chan, {"event": "test", "index": index, **_run_one(program, index, job["test_timeout_s"])})


def _run_one(program: Any, index: int, timeout_s: float) -> dict[str, Any]:
    report_r, report_w = os.pipe()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        _stdio_child(program, index, timeout_s, report_w)
    os.close(report_w)
    pidfd = os.pidfd_open(pid)
    timed_out = not select.select([pidfd], [], [], timeout_s)[0]
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    os.close(pidfd)
    elapsed = time.perf_counter() - started
    with os.fdopen(report_r, "rb") as handle:
        report = handle.read(65536)
    result: dict[str, Any] = {"time_s": elapsed, "cpu_s": usage.ru_utime + usage.ru_stime}
    if timed_out:
        result["outcome"] = "timeout"
    elif os.WIFSIGNALED(status):
        result.update(outcome="signal", signal=os.WTERMSIG(status))
    else:
        result.update(outcome="exit", code=os.WEXITSTATUS(status))
    if report:
        with contextlib.suppress(ValueError):
            result["error"] = json.loads(report)
    return result


def _stdio_child(program: Any, index: int, timeout_s: float, report_fd: int) -> None:
    code = 0
    try:
        _redirect(0, f"in_{index}.txt", os.O_RDONLY)
        _redirect(1, f"out_{index}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        _redirect(2, f"err_{index}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        cpu = max(1, int(timeout_s + 0.999))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        try:
            exec(program, {"__name__": "__main__", "__builtins__": builtins})
            _join_threads()
        except SystemExit as exc:
            code = _exit_code(exc, report_fd)
        except BaseException as exc:
            os.write(report_fd, json.dumps(error_record(exc)).encode()[:65536])
            code = 1
        try:
            sys.stdout.flush()
        except BaseException:
            code = code or 1
    finally:
        os._exit(code)


def _join_threads() -> None:
    """Interpreter exit waits for non-daemon threads (a common trick for deep recursion)."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()


def _exit_code(exc: SystemExit, report_fd: int) -> int:
    if exc.code is None or exc.code == 0:
        return 0
    record = error_record(exc)
    os.write(report_fd, json.dumps(record).encode()[:65536])
    return exc.code if isinstance(exc.code, int) and 0 < exc.code < 256 else 1
