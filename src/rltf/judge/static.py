"""Static analysis of generated programs: typed findings for the verdict, without running anything.

A persistent worker process (``python -m rltf.judge.static``) parses each program and runs pyflakes
plus two checks of its own (unreachable statements, names that shadow builtins). It never executes
the program, and it still runs apart from the judge: a pathological program (a huge literal, very
deep nesting) can at worst exhaust the worker, which is then replaced, and the program gets an
``analysis-failed`` finding instead of stalling or crashing the caller. Programs over
:data:`MAX_CHARS` or nested deeper than :data:`MAX_DEPTH` are not parsed at all
(``analysis-skipped``).

pyflakes over ruff: it runs in-process in the worker (1.5 ms a program measured, where a ruff
process per program took 9.9 ms) and has the rules that matter for generated code; ruff's
unreachable-code rule is not in its stable set (0.17), so that check is written here.
"""

from __future__ import annotations

import ast
import builtins
import io
import itertools
import json
import os
import resource
import selectors
import subprocess
import sys
import time
import tokenize

from rltf.judge.verdict import StaticFinding

MAX_CHARS = 64_000
MAX_DEPTH = 60
"""Brackets and indented blocks open at once; real programs stay far below, the parser's own limit
(about 200 brackets) is where CPython gives up."""
TIMEOUT_S = 5.0
WORKER_MEMORY_MB = 1024

PYFLAKES_RULES = {
    "UndefinedName": ("undefined-name", "error"),
    "UndefinedLocal": ("undefined-name", "error"),
    "ReturnOutsideFunction": ("return-outside-function", "error"),
    "YieldOutsideFunction": ("return-outside-function", "error"),
    "UnusedVariable": ("unused-variable", "warning"),
    "UnusedImport": ("unused-import", "warning"),
    "RedefinedWhileUnused": ("redefinition", "warning"),
    "IsLiteral": ("is-literal", "warning"),
}
"""pyflakes message classes kept, by rltf rule name; the rest (format strings, star imports) are dropped."""
RULES = sorted({rule for rule, _ in PYFLAKES_RULES.values()} | {"unreachable", "shadowed-builtin"})
BUILTIN_NAMES = frozenset(name for name in dir(builtins) if not name.startswith("_"))
TERMINAL = (ast.Return, ast.Raise, ast.Continue, ast.Break)


def nesting_depth(program: str) -> int:
    """The most brackets and indented blocks open at once (tokens only: nothing is parsed)."""
    depth = deepest = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(program).readline):
            if token.type == tokenize.INDENT or (token.type == tokenize.OP and token.string in "([{"):
                depth += 1
            elif token.type == tokenize.DEDENT or (token.type == tokenize.OP and token.string in ")]}"):
                depth -= 1
            deepest = max(deepest, depth)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass  # the parser reports what tokenize cannot
    return deepest


def _own_findings(tree: ast.Module) -> list[StaticFinding]:
    found = []
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            for before, after in itertools.pairwise(block):
                if isinstance(before, TERMINAL):
                    found.append(StaticFinding("unreachable", f"code after `{type(before).__name__.lower()}` "
                                               "never runs", after.lineno, "warning"))
                    break
        names: list[tuple[str, int]] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append((node.name, node.lineno))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            names += [(arg.arg, arg.lineno) for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg)
                      if arg is not None]
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.append((node.id, node.lineno))
        found += [StaticFinding("shadowed-builtin", f"`{name}` shadows the builtin of that name", line, "warning")
                  for name, line in names if name in BUILTIN_NAMES]
    return found


def analyze_one(program: str, entry_point: str | None = None) -> list[StaticFinding]:
    """Findings of one program, sorted by line; [] for a program that does not parse (the compile
    error already blames it). Defining the problem's ``entry_point`` is never a shadowed builtin
    (``mbpp/126`` asks for a function named ``sum``)."""
    from pyflakes.checker import Checker

    if len(program) > MAX_CHARS:
        return [StaticFinding("analysis-skipped", f"program of {len(program)} characters > {MAX_CHARS}", 1, "info")]
    if (depth := nesting_depth(program)) > MAX_DEPTH:
        return [StaticFinding("analysis-skipped", f"nesting depth {depth} > {MAX_DEPTH}", 1, "info")]
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    found = [f for f in _own_findings(tree) if not (f.rule == "shadowed-builtin" and f"`{entry_point}`" in f.message)]
    for message in Checker(tree, filename="<program>").messages:
        rule = PYFLAKES_RULES.get(type(message).__name__)
        if rule is not None:
            found.append(StaticFinding(rule[0], message.message % message.message_args, message.lineno, rule[1]))
    return sorted(set(found), key=lambda f: (f.line, f.rule, f.message))


class StaticAnalyzer:
    """The worker process and its protocol: one JSON line in (a program), one JSON line out."""

    def __init__(self, timeout_s: float = TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join(sys.path)}
            self._proc = subprocess.Popen([sys.executable, "-m", "rltf.judge.static"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        return self._proc

    def analyze(self, program: str, entry_point: str | None = None) -> tuple[StaticFinding, ...]:
        """The program's findings, or one ``analysis-failed`` finding when the worker crashed or
        took longer than ``timeout_s`` (it is replaced for the next program)."""
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        started = time.monotonic()
        try:
            proc.stdin.write(json.dumps({"program": program, "entry_point": entry_point}).encode() + b"\n")
            proc.stdin.flush()
            with selectors.DefaultSelector() as selector:
                selector.register(proc.stdout, selectors.EVENT_READ)
                if not selector.select(self.timeout_s):
                    raise TimeoutError("no answer")
                line = proc.stdout.readline()
            if not line:
                raise EOFError("the analyzer exited")
            return tuple(StaticFinding(**f) for f in json.loads(line))
        except (OSError, ValueError, TimeoutError, EOFError) as exc:
            self.close()
            return (StaticFinding("analysis-failed", f"{type(exc).__name__}: {exc} after "
                                  f"{time.monotonic() - started:.1f} s", 1, "info"),)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


def _serve() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_MB << 20, WORKER_MEMORY_MB << 20))
    for line in sys.stdin:
        request = json.loads(line)
        found = analyze_one(request["program"], request["entry_point"])
        sys.stdout.write(json.dumps([f.to_dict() for f in found]) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
