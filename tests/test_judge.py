"""The judge on real programs: every status and error phase, line attribution, hostile programs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rltf.judge import Judge, JudgeConfig
from rltf.problems import Problem, infer_entry_point

SECRET = "SECRET-7f3a9c-expected"


def assert_problem(cases, setup="", entry_point="f", **extra) -> Problem:
    return Problem(id="p", source="test", prompt="", entry_point=entry_point,
                   tests={"kind": "assert", "setup": setup, "cases": cases}, **extra)


def stdio_problem(pairs) -> Problem:
    return Problem(id="s", source="test", prompt="",
                   tests={"kind": "stdio", "cases": [{"input": i, "output": o} for i, o in pairs]})


def call_problem(fn_name, pairs) -> Problem:
    return Problem(id="c", source="test", prompt="",
                   tests={"kind": "call", "fn_name": fn_name,
                          "cases": [{"args": a, "expected": e} for a, e in pairs]})


ADD = assert_problem(["assert f(1, 2) == 3", "assert f(2, 2) == 4", "assert f(0, 0) == 0"])


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@pytest.fixture(scope="module")
def judge():
    with Judge(JudgeConfig(workers=2, timeout_s=1.5, program_timeout_s=10, memory_mb=1024)) as j:
        yield j


# -- statuses -----------------------------------------------------------------------------------

def test_pass(judge):
    v = judge.run(ADD, "def f(a, b):\n    return a + b\n")
    assert (v.status, v.passed, v.total, v.pass_ratio, v.error) == ("pass", 3, 3, 1.0, None)
    assert [t.status for t in v.tests] == ["pass"] * 3
    assert v.isolation.startswith("namespaces")


def test_fail_runs_all_tests_and_keeps_the_ratio(judge):
    v = judge.run(ADD, "def f(a, b):\n    return a * b if a == 2 else a + b\n")
    assert (v.status, v.passed, v.total) == ("pass", 3, 3)
    v = judge.run(ADD, "def f(a, b):\n    return 3\n")
    assert (v.status, v.passed, v.error) == ("fail", 1, None)
    assert [t.status for t in v.tests] == ["pass", "fail", "fail"]


def test_stop_on_first_failure():
    with Judge(workers=1, stop_on_first_failure=True) as j:
        v = j.run(ADD, "def f(a, b):\n    return 0\n")
    assert [t.status for t in v.tests] == ["fail", "not_run", "not_run"]
    assert v.status == "fail"


def test_compile_error_in_the_middle_and_on_the_last_line(judge):
    v = judge.run(ADD, "def f(a, b):\n    x = (a +\n    return a + b\n\ny = 1\n")
    assert v.status == "error" and v.error.phase == "compile" and v.error.type == "SyntaxError"
    assert v.error.line == 2
    v = judge.run(ADD, "def f(a, b):\n    return a + b\nprint(\n")
    assert v.error.phase == "compile" and v.error.line == 3
    assert [t.status for t in v.tests] == ["not_run"] * 3


def test_indentation_error_is_a_compile_error(judge):
    v = judge.run(ADD, "def f(a, b):\n    x = 1\n        return a + b\n")
    assert (v.error.phase, v.error.type, v.error.line) == ("compile", "IndentationError", 3)


def test_runtime_error_line_is_the_innermost_program_frame(judge):
    program = src("""
        def helper(x):
            return 1 / x

        def middle(x):
            return helper(x) + 1

        def f(a, b):
            return middle(a) + b
        """)
    v = judge.run(ADD, program)
    assert v.status == "error"
    assert (v.error.phase, v.error.type, v.error.line) == ("runtime", "ZeroDivisionError", 2)
    assert [t.status for t in v.tests] == ["fail", "fail", "error"]  # only f(0, 0) divides by zero


def test_name_error_deep_in_a_helper(judge):
    program = "def g():\n    return undefined_name\n\ndef f(a, b):\n    return g()\n"
    v = judge.run(ADD, program)
    assert (v.error.type, v.error.line, v.error.phase) == ("NameError", 2, "runtime")
    assert "undefined_name" in v.error.message


def test_error_at_module_level(judge):
    v = judge.run(ADD, "import math\nx = math.sqrt(-1)\ndef f(a, b):\n    return a + b\n")
    assert (v.status, v.error.type, v.error.line, v.passed) == ("error", "ValueError", 2, 0)


def test_missing_entry_point(judge):
    v = judge.run(ADD, "def g(a, b):\n    return a + b\n")
    assert v.status == "error" and v.error.type == "NameError" and v.error.line is None


def test_a_record_without_entry_point_infers_it_from_the_tests(judge):
    # mbpp/126: the program defines `sum`, and its asserts call `sum(...)`
    program = src("""
        def sum(a, b):
            total = 0
            for i in range(1, min(a, b)):
                if a % i == 0 and b % i == 0:
                    total += i
            return total
    """)
    cases = ["assert sum(10,15) == 6", "assert sum(100,150) == 93", "assert sum(4,6) == 3"]
    v = judge.run(assert_problem(cases, entry_point=None), program)
    assert (v.status, v.passed) == ("pass", 3)  # not the builtin sum
    assert infer_entry_point({"kind": "assert", "cases": cases}) == "sum"
    helper_first = ["assert set(similar(a, b)) == set(len([1]) * [4])"]
    assert infer_entry_point({"kind": "assert", "cases": helper_first}) == "similar"  # builtins wrap it
    assert infer_entry_point({"kind": "assert", "cases": ["assert math.isclose(area(2), 4.0)"]}) == "area"
    assert infer_entry_point({"kind": "assert", "cases": ["assert True"]}) is None
    assert infer_entry_point({"kind": "stdio", "cases": []}) is None


def test_timeout(judge):
    v = judge.run(ADD, "def f(a, b):\n    while True:\n        pass\n")
    assert v.status == "error" and v.error.phase == "timeout"
    assert v.tests[0].status == "error" and v.tests[1].status == "not_run"


def test_recursion_error(judge):
    v = judge.run(ADD, "def f(a, b):\n    return f(a, b)\n")
    assert (v.error.phase, v.error.type, v.error.line) == ("runtime", "RecursionError", 2)


def test_memory_error(judge):
    v = judge.run(ADD, "def f(a, b):\n    x = [0] * (10 ** 10)\n    return a + b\n")
    assert (v.error.phase, v.error.type, v.error.line) == ("memory", "MemoryError", 2)


def test_memory_bomb_by_growth(judge):
    v = judge.run(ADD, "def f(a, b):\n    x = []\n    while True:\n        x.append(' ' * 10 ** 6)\n")
    assert v.status == "error" and v.error.phase in ("memory", "timeout")


def test_segfault(judge):
    v = judge.run(ADD, "import ctypes\ndef f(a, b):\n    return ctypes.string_at(0)\n")
    assert v.status == "error" and v.error.phase == "runtime" and v.error.type == "SIGSEGV"


def test_program_assertion_is_an_error_not_a_wrong_answer(judge):
    v = judge.run(ADD, "def f(a, b):\n    assert a > 5, 'too small'\n    return a + b\n")
    assert (v.status, v.error.type, v.error.line) == ("error", "AssertionError", 2)


def test_tests_can_catch_program_exceptions_by_type(judge):
    problem = assert_problem(["try:\n    f(-1)\n    raise AssertionError('no error')\nexcept ValueError:\n    pass",
                              "assert f(4) == 2"])
    v = judge.run(problem, "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x ** 0.5\n")
    assert v.status == "pass"


def test_setup_code_that_uses_program_classes(judge):
    # MBPP 367-style: the setup builds objects from a class the program defines.
    setup = "root = Node(1)\nroot.left = Node(2)\nroot.left.left = Node(3)\n"
    problem = assert_problem(["assert f(root) == 3", "assert f(Node(7)) == 1"], setup=setup)
    program = src("""
        class Node:
            def __init__(self, v):
                self.v, self.left, self.right = v, None, None

        def f(node):
            if node is None:
                return 0
            return 1 + max(f(node.left), f(node.right))
        """)
    assert judge.run(problem, program).status == "pass"


def test_humaneval_style_candidate_alias_and_loops(judge):
    setup = "import math\ncandidate = f\n"
    cases = ["assert candidate(2) == 4", "for i in range(5):\n    assert math.isclose(candidate(i), i * i)"]
    assert judge.run(assert_problem(cases, setup=setup), "def f(x):\n    return x * x\n").status == "pass"
    assert judge.run(assert_problem(cases, setup=setup), "def f(x):\n    return 4\n").passed == 1


def test_returned_generators_and_program_objects(judge):
    problem = assert_problem(["assert list(f(3)) == [0, 1, 2]", "assert len(f(2)) == 2"])
    v = judge.run(problem, "def f(n):\n    return range(n)\n")  # a range object crosses to the tests' side
    assert [t.status for t in v.tests] == ["pass", "pass"] and v.status == "pass"
    generator = judge.run(problem, "def f(n):\n    return (i for i in range(n))\n")  # list() works, len() raises
    assert [t.status for t in generator.tests] == ["pass", "error"]


def test_problem_time_limit_overrides_default(judge):
    problem = assert_problem(["assert f() == 1"], time_limit_s=0.3)
    v = judge.run(problem, "import time\ndef f():\n    time.sleep(1)\n    return 1\n")
    assert v.error.phase == "timeout"


def test_no_tests_is_an_infra_error(judge):
    assert judge.run(assert_problem([]), "def f(): pass").status == "infra_error"


def test_harness_limitation_is_an_infra_error(judge):
    v = judge.run(assert_problem(["assert f(lambda x: x) == 1"]), "def f(g):\n    return 1\n")
    assert v.status == "infra_error" and "harness" in v.error.message


# -- stdio and call tests -------------------------------------------------------------------

SUM = stdio_problem([("1 2\n", "3\n"), ("5 5\n", "10\n"), ("0 0\n", "0\n")])


def test_stdio_pass_fail_and_error(judge):
    assert judge.run(SUM, "a, b = map(int, input().split())\nprint(a + b)\n").status == "pass"
    assert judge.run(SUM, "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)").status == "pass"
    assert judge.run(SUM, "import os\na, b = map(int, os.read(0, 100).split())\nos.write(1, b'%d\\n' % (a + b))"
                     ).status == "pass"
    v = judge.run(SUM, "a, b = map(int, input().split())\nprint(a * b)\n")
    assert (v.status, v.passed) == ("fail", 1)  # 0 * 0 == 0 + 0
    v = judge.run(SUM, "a, b = map(int, input().split())\nprint(a + b + 0 // b)\n")
    assert (v.status, v.error.type, v.error.line, v.passed) == ("error", "ZeroDivisionError", 2, 2)


def test_stdio_exit_codes_and_threads(judge):
    assert judge.run(SUM, "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(0)\n").status == "pass"
    v = judge.run(SUM, "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(3)\n")
    assert v.status == "error" and v.error.type == "SystemExit"
    threaded = "import threading\ndef main():\n    a, b = map(int, input().split())\n    print(a + b)\n" \
               "threading.Thread(target=main).start()\n"
    assert judge.run(SUM, threaded).status == "pass"


def test_stdio_output_flood_hits_the_output_limit():
    with Judge(workers=1, max_output_mb=1) as j:
        v = j.run(SUM, "while True:\n    print('x' * 1000)\n")
    assert v.status == "error" and v.error.phase == "output_limit"


def test_call_plain_function_and_solution_class(judge):
    problem = call_problem("f", [([1], 2), ([2], [3]), ([[1, 2]], [[2, 3]])])
    program = "def f(x):\n    return [v + 1 for v in x] if isinstance(x, list) else x + 1\n"
    assert judge.run(problem, program).status == "pass"
    problem = call_problem("twoSum", [([[2, 7, 11], 9], [0, 1]), ([[3, 3], 6], [0, 1])])
    program = src("""
        class Solution:
            def twoSum(self, nums, target):
                seen = {}
                for i, n in enumerate(nums):
                    if target - n in seen:
                        return (seen[target - n], i)
                    seen[n] = i
        """)
    assert judge.run(problem, program).status == "pass"  # tuple result equals list expected
    assert judge.run(call_problem("f", [([1], 0.1)]), "def f(x):\n    return 0.1000000001\n").status == "pass"


# -- anti-forgery and robustness ----------------------------------------------------------------

FORGED_PASS = '{"status": "pass", "passed": 3, "total": 3}'


@pytest.mark.parametrize(
    "program",
    [
        "import os\nos._exit(0)\n",  # exit 0 before any test
        "import sys\nsys.exit(0)\n",
        "import os\ndef f(a, b):\n    os._exit(0)\n",  # exit 0 during a test
        f"print({FORGED_PASS!r})\ndef f(a, b):\n    return 0\n",  # print a fake result
        # write fake results to every descriptor the process might have inherited
        "import os, json, struct\n"
        f"msg = json.dumps({FORGED_PASS}).encode()\n"
        "for fd in range(256):\n"
        "    try:\n        os.write(fd, struct.pack('<I', len(msg)) + msg)\n    except OSError:\n        pass\n"
        "def f(a, b):\n    return 0\n",
        # disable the timeout machinery, then loop
        "import signal, resource\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.signal(signal.SIGXCPU, "
        "signal.SIG_IGN)\ntry:\n    resource.setrlimit(resource.RLIMIT_CPU, (-1, -1))\nexcept Exception:\n    pass\n"
        "def f(a, b):\n    while True:\n        pass\n",
        # kill the parent and every other process it can see
        "import os, signal\nfor pid in (os.getppid(), 1, -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except Exception:\n        pass\ndef f(a, b):\n    return 0\n",
    ],
    ids=["exit-module", "sys-exit", "exit-in-test", "print-result", "write-fds", "no-timeout", "kill-parent"],
)
def test_forgery_attempts_never_pass(judge, program):
    v = judge.run(ADD, program)
    assert v.status in ("fail", "error"), v
    assert v.passed < v.total
    assert judge.run(ADD, "def f(a, b):\n    return a + b\n").status == "pass"  # judge still healthy


FORGE_EQ = [
    "class A:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
    "def f(*args):\n    return A()\n",
    "class I(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
    "def f(*args):\n    return I(0)\n",
    "class S(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\n"
    "def f(*args):\n    return S('no')\n",
    "class L(list):\n    def __eq__(self, other):\n        return True\n    def __iter__(self):\n"
    "        return iter([0])\ndef f(*args):\n    return L()\n",
]


@pytest.mark.parametrize("program", FORGE_EQ, ids=["object", "int", "str", "list"])
def test_custom_eq_does_not_pass(judge, program):
    assert judge.run(ADD, program).status == "fail"
    assert judge.run(call_problem("f", [([1], 5), ([2], "yes")]), program).status == "fail"


SNOOP = [
    # the harness's memory: every string the process holds
    "import gc\ndef f(*args):\n    for o in gc.get_objects():\n        if isinstance(o, (list, dict, tuple)):\n"
    "            for s in (o.values() if isinstance(o, dict) else o):\n"
    "                if isinstance(s, str) and s.startswith('SECRET-'):\n"
    "                    return s\n    return None\n",
    # the harness's frames
    "import sys\ndef f(*args):\n    frame = sys._getframe()\n    while frame:\n"
    "        for v in list(frame.f_locals.values()) + list(frame.f_globals.values()):\n"
    "            if 'SECRET-' in repr(v)[:100000]:\n                return repr(v)\n        frame = frame.f_back\n"
    "    return None\n",
    # the environment and the file system
    "import os\ndef f(*args):\n    found = [v for v in os.environ.values() if 'SECRET-' in v]\n"
    "    for root, dirs, files in os.walk('/'):\n        if root.startswith(('/proc', '/sys', '/dev')):\n"
    "            continue\n        for name in files:\n            try:\n"
    "                text = open(os.path.join(root, name), errors='ignore').read(1 << 20)\n"
    "            except Exception:\n                continue\n            i = text.find('SECRET-')\n"
    "            if i >= 0:\n                found.append(text[i:i + 22])\n    return found[0] if found else None\n",
]


@pytest.mark.parametrize("program", SNOOP, ids=["gc", "frames", "env-and-files"])
def test_expected_values_are_not_readable(judge, program, tmp_path, monkeypatch):
    (tmp_path / "problems.jsonl").write_text(f'"{SECRET}"')
    monkeypatch.setenv("RLTF_TEST_SECRET", SECRET)
    problem = assert_problem([f"assert f() == {SECRET!r}"])
    assert judge.run(problem, program).status in ("fail", "error")
    call = call_problem("f", [([], SECRET)])
    assert judge.run(call, program).status in ("fail", "error")
    stdio = stdio_problem([("", SECRET + "\n")])
    assert judge.run(stdio, program + "print(f())\n").status in ("fail", "error")


def test_no_network_and_read_only_file_system(judge):
    problem = assert_problem(["assert f() == 'blocked'"])
    net = "import socket\ndef f():\n    try:\n        socket.create_connection(('1.1.1.1', 53), timeout=1)\n" \
          "    except OSError:\n        return 'blocked'\n    return 'open'\n"
    assert judge.run(problem, net).status == "pass"
    write = "def f():\n    for path in ('/etc/rltf-probe', '/usr/rltf-probe', '/rltf-probe'):\n        try:\n" \
            "            open(path, 'w').write('x')\n            return 'written ' + path\n" \
            "        except OSError:\n            pass\n    return 'blocked'\n"
    assert judge.run(problem, write).status == "pass"
    assert not os.path.exists("/etc/rltf-probe")
    local = "def f():\n    open('scratch.txt', 'w').write('ok')\n    return 'blocked' if open('scratch.txt').read()" \
            " == 'ok' else 'no'\n"
    assert judge.run(problem, local).status == "pass"  # the working directory is writable


def test_fork_bomb_is_contained_and_cleaned_up(judge):
    bomb = "import os\ndef f(a, b):\n    while True:\n        try:\n            os.fork()\n" \
           "        except OSError:\n            pass\n"
    v = judge.run(ADD, bomb)
    assert v.status == "error"
    assert judge.run(ADD, "def f(a, b):\n    return a + b\n").status == "pass"


def test_files_do_not_leak_between_programs(judge):
    problem = assert_problem(["assert f() == 'clean'"])
    judge.run(problem, "open('/tmp/leak', 'w').write('x')\nopen('leak', 'w').write('x')\ndef f():\n    return 1\n")
    probe = "import os\ndef f():\n    return 'dirty' if os.path.exists('/tmp/leak') or os.path.exists('leak') " \
            "else 'clean'\n"
    assert judge.run(problem, probe).status == "pass"


def test_run_many_keeps_order_and_survives_hostile_neighbours(judge):
    programs = ["def f(a, b):\n    return a + b\n", "import os\nos.kill(os.getpid(), 9)\n",
                "def f(a, b):\n    return a - b\n", "import ctypes\nctypes.string_at(0)\n"] * 3
    verdicts = judge.run_many([(ADD, p) for p in programs])
    assert [v.status for v in verdicts] == ["pass", "error", "fail", "error"] * 3
    assert verdicts[1].error.phase == "killed"


def test_c_stack_overflow_and_big_files(judge):
    deep = "import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(a, b):\n    return f(a, b) + 1\n"
    v = judge.run(ADD, deep)
    assert v.status == "error" and v.error.phase in ("runtime", "memory", "timeout")
    big = "def f(a, b):\n    with open('big.bin', 'wb') as out:\n        out.write(b'x' * (64 << 20))\n" \
          "    return a + b\n"
    v = judge.run(ADD, big)
    assert v.status == "error" and v.error.phase == "output_limit"


def test_detached_processes_are_killed(judge):
    marker = "4242.4242"
    daemon = f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n" \
             "def f(a, b):\n    return a + b\n"
    assert judge.run(ADD, daemon).status == "pass"
    judge.run(ADD, "def f(a, b):\n    return a + b\n")  # the cleanup after a verdict is done by now
    alive = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).endswith(marker)]
    assert alive == []


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_a_dying_server_is_replaced_and_never_blamed_on_the_program():
    import threading
    import time

    slow = "import time\ndef f(a, b):\n    time.sleep(0.3)\n    return a + b\n"
    with Judge(workers=1) as j:
        killer = threading.Timer(0.3, lambda: j._workers[0].process.kill())
        killer.start()
        v = j.run(ADD, slow)  # the first attempt loses its server; the retry passes
        killer.join()
        assert v.status == "pass"
        stop = time.monotonic() + 4.0

        def keep_killing():
            while time.monotonic() < stop:
                for worker in list(j._workers):
                    worker.process.kill()
                time.sleep(0.05)

        thread = threading.Thread(target=keep_killing)
        thread.start()
        v = j.run(ADD, slow)
        thread.join()
        assert v.status == "infra_error" and v.passed == 0
        assert j.run(ADD, "def f(a, b):\n    return a + b\n").status == "pass"


def test_rlimits_only_mode_still_judges_and_says_so():
    with Judge(workers=1, isolation="rlimits", timeout_s=1.0) as j:
        v = j.run(ADD, "def f(a, b):\n    return a + b\n")
        assert v.status == "pass" and v.isolation.startswith("rlimits")
        assert j.run(ADD, "def f(a, b):\n    while True:\n        pass\n").error.phase == "timeout"
        assert j.run(ADD, "import os\nos._exit(0)\n").status == "error"
        assert j.run(SUM, "a, b = map(int, input().split())\nprint(a + b)\n").status == "pass"


def test_call_problems_see_typing_names_like_leetcode(judge):
    program = "class Solution:\n    def f(self, xs: List[int]) -> Optional[int]:\n        return max(xs)\n"
    assert judge.run(call_problem("f", [([[1, 5, 2]], 5)]), program).status == "pass"
    # assert-style problems get no such help: a missing import stays a NameError
    v = judge.run(assert_problem(["assert f([1]) == 1"]), "def f(xs: List[int]):\n    return xs[0]\n")
    assert v.error.type == "NameError"


def test_a_venv_reached_through_a_symlink_keeps_its_packages(tmp_path: Path) -> None:
    real, link = tmp_path / "real-venv", tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(real)], check=True)
    link.symlink_to(real, target_is_directory=True)
    (site,) = (link / "lib").glob("python*/site-packages")
    (site / "probe_pkg.py").write_text("VALUE = 42\n")
    here = [p for p in sys.path if p.endswith("site-packages")] + [str(Path(__file__).parents[1] / "src")]
    (site / "deps.pth").write_text("\n".join(here) + "\n")  # rltf and its dependencies
    script = src("""
        from rltf.judge import Judge, JudgeConfig
        from rltf.problems import Problem
        problem = Problem(id="p", source="t", prompt="", entry_point="f",
                          tests={"kind": "assert", "setup": "", "cases": ["assert f() == 42"]})
        with Judge(JudgeConfig(workers=1)) as judge:
            v = judge.run(problem, "import probe_pkg\\ndef f():\\n    return probe_pkg.VALUE\\n")
        print(v.status, v.isolation, v.error)
    """)
    out = subprocess.run([str(link / "bin" / "python"), "-c", script], capture_output=True, text=True, check=True)
    status, isolation, *_ = out.stdout.split()
    assert isolation.startswith("namespaces") and status == "pass", out.stdout
