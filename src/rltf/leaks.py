"""Training problems that are reworded twins of held-out problems (benchmark leaks).

A train problem leaks into a test or validation problem (validation counts: settings are chosen
there) when any of these reasons holds; each is named in the result with the scores behind it:

* ``same_function``: the tests call a function of the same name (case-insensitive) AND the
  statements are at least 0.7 alike (below). A name alone is not enough: MBPP reuses generic names
  for unrelated tasks (``check``, ``convert``, ``text_match``, ``Check_Solution``); of the 57
  train/held-out pairs that share a name, those under 0.7 were different tasks, but for one that
  ``same_code`` catches.
* ``same_asserts`` / ``same_io``: at least two distinctive test cases agree, as assert text (spacing
  normalised, the called name replaced by a placeholder) or as ``(args, expected)`` parsed from
  ``assert f(args) == expected``. A case is not distinctive when its expected value is a bool or
  None, equals one of its arguments, or its constants have at most two characters in all
  (``f(2) == 2``): such cases, and any single shared case (``f(30) == 24`` is both "sum of odd
  factors" and "octal to decimal"), matched unrelated tasks.
* ``same_code``: the reference solutions are at least 0.99 alike as token sequences after every
  name they bind (functions, arguments, locals) is renamed in order of first appearance and
  docstrings are dropped. Every pair between 0.9 and 0.99 differed in one operator, literal or
  method (``+``/``-``, a regex, ``nsmallest``/``nlargest``): one template serving several tasks.
* ``same_statement``: the statements, as words (lower-cased; the "Your code should pass" tail, the
  "Write a (python) function to" opening, articles, "given", "python", "(by) using regex",
  "using collections module" and identifier-like words such as the function's snake_case name
  dropped; numbers as one placeholder; "array" read as "list"), are identical, or at least 0.8
  alike while the solutions are at least 0.85 alike. The second arm is the old near-verbatim
  rule's catch: one word ("even"/"odd", "first"/"last", "fourth"/"fifth") that changes one token of
  the same program. Statements 0.9 alike without code support were mostly other tasks ("first
  repeated" / "first non-repeated character", "minimum" / "maximum path sum"). A one-word function
  name (``count``, ``slope``) is kept in the words: it is the task's verb or noun, and dropping it
  made "find the slope of a line" read "find the of a line", close to every "find the X of a Y".

Similarities are difflib ratios. :func:`find_dataset_leaks` gives the pairs of a benchmark;
:func:`leaks_json` and :func:`leaks_table` render them (``data/mbpp_train_leaks.json`` is
``leaks_json(find_dataset_leaks("mbpp"))``).
"""

from __future__ import annotations

import ast
import difflib
import io
import json
import re
import tokenize
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from rltf.datasets import load_dataset
from rltf.problems import Problem

REASONS = ("same_function", "same_asserts", "same_io", "same_code", "same_statement")
NAME_STATEMENT_SIMILARITY = 0.7
MIN_SHARED_CASES = 2
CODE_SIMILARITY = 0.99
STATEMENT_SIMILARITY = 0.8
STATEMENT_CODE_SIMILARITY = 0.85

_OPENING = re.compile(r"^write (?:function|program)s? (?:to |that |which )?")
_HINT = re.compile(r"\b(?:by )?using (?:regex|collections module)\b")
_DROPPED_WORDS = {"a", "an", "the", "given", "python"}
_SYNONYMS = {"array": "list", "arrays": "lists"}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_']*|\d+(?:\.\d+)?")
_IDENTIFIER = re.compile(r"_|[a-z][A-Z]|[A-Za-z]\d")
_CODE_TOKENS = (tokenize.NAME, tokenize.OP, tokenize.NUMBER, tokenize.STRING)


@dataclass(frozen=True)
class Leak:
    """One train problem that twins a held-out problem, why, and the scores that decided it."""

    train: str
    held_out: str
    split: str
    reasons: tuple[str, ...]
    statement_similarity: float
    code_similarity: float
    shared_asserts: int
    shared_io: int


@dataclass(frozen=True)
class _Features:
    """What the comparison needs of one problem, computed once."""

    name: str
    words: tuple[str, ...]
    code: tuple[str, ...]
    asserts: frozenset[str]
    io: frozenset[str]


def statement_words(statement: str) -> tuple[str, ...]:
    """The statement's task words: no boilerplate, identifiers or particular numbers (see the module doc)."""
    text = re.split(r"your code should pass", statement, flags=re.IGNORECASE)[0]
    words = ["<num>" if word[0].isdigit() else word.lower().strip("'")
             for word in _WORD.findall(text) if word[0].isdigit() or not _IDENTIFIER.search(word)]
    text = _HINT.sub("", _OPENING.sub("", " ".join(w for w in words if w not in _DROPPED_WORDS)))
    return tuple(_SYNONYMS.get(word, word) for word in text.split())


def _parse(source: str) -> ast.Module:
    with warnings.catch_warnings():  # old reference code has invalid escapes in non-raw strings
        warnings.simplefilter("ignore")
        return ast.parse(source)


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


class _Renamer(ast.NodeTransformer):
    """Renames the given names to ``_0``, ``_1``, ... in order of first appearance and drops docstrings."""

    def __init__(self, bound: set[str]) -> None:
        self.bound = bound
        self.names: dict[str, str] = {}

    def _rename(self, name: str) -> str:
        return self.names.setdefault(name, f"_{len(self.names)}") if name in self.bound else name

    def _body(self, node: ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> ast.AST:
        if node.body and _is_docstring(node.body[0]):
            node.body = node.body[1:] or [ast.Pass()]
        return self.generic_visit(node)

    def visit_Module(self, node: ast.Module) -> ast.AST:
        return self._body(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        node.name = self._rename(node.name)
        return self._body(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.name = self._rename(node.name)
        return self._body(node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._rename(node.arg)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._rename(node.id)
        return node


def code_tokens(source: str) -> tuple[str, ...]:
    """The program's tokens with the names it binds made canonical; builtins, modules and attributes stay."""
    try:
        tree = _parse(source)
    except SyntaxError:
        return tuple(source.split())
    bound = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                      ast.ClassDef))}
    bound |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    bound |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)}
    text = ast.unparse(_Renamer(bound).visit(tree))
    return tuple(t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type in _CODE_TOKENS)


def _call_and_expected(case: ast.Module, entry_point: str) -> tuple[ast.Call, ast.expr] | None:
    """``(call, expected)`` of a case ``assert entry_point(...) == expected`` (either side), else None."""
    if len(case.body) != 1 or not isinstance(case.body[0], ast.Assert):
        return None
    test = case.body[0].test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return None
    for call, expected in ((test.left, test.comparators[0]), (test.comparators[0], test.left)):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == entry_point:
            return call, expected
    return None


def _constant_characters(nodes: Iterable[ast.AST]) -> int:
    """How many characters the constants under ``nodes`` spell, bools and None left out."""
    return sum(len(str(node.value).lstrip("-")) for part in nodes for node in ast.walk(part)
               if isinstance(node, ast.Constant) and not isinstance(node.value, bool) and node.value is not None)


def _distinctive(call: ast.Call, expected: ast.expr) -> bool:
    """False for a case that unrelated tasks pass by accident (see the module doc)."""
    if isinstance(expected, ast.Constant) and (expected.value is None or isinstance(expected.value, bool)):
        return False
    if any(ast.dump(expected) == ast.dump(arg) for arg in call.args):
        return False
    return _constant_characters([*call.args, *call.keywords, expected]) > 2


def _assert_text(case: str, entry_point: str) -> str:
    tokens = tokenize.generate_tokens(io.StringIO(case.strip()).readline)
    return " ".join("<f>" if t.string == entry_point else t.string for t in tokens if t.type in _CODE_TOKENS)


def _test_features(problem: Problem, entry_point: str) -> tuple[frozenset[str], frozenset[str]]:
    """The distinctive cases as normalised assert text and as ``(args, expected)`` dumps."""
    asserts, pairs = set(), set()
    for case in problem.tests["cases"] if problem.tests["kind"] == "assert" else []:
        try:
            parsed = _parse(case.strip())
        except SyntaxError:
            continue
        found = _call_and_expected(parsed, entry_point)
        if found is None:
            if _constant_characters([parsed]) > 2:
                asserts.add(_assert_text(case, entry_point))
        elif _distinctive(*found):
            call, expected = found
            asserts.add(_assert_text(case, entry_point))
            pairs.add(ast.dump(ast.Tuple([*call.args, *call.keywords, expected], ast.Load())))
    return frozenset(asserts), frozenset(pairs)


def _features(problem: Problem) -> _Features:
    entry_point = problem.entry_point or ""
    asserts, pairs = _test_features(problem, entry_point)
    code = code_tokens(problem.solutions[0]) if problem.solutions else ()
    return _Features(entry_point.lower(), statement_words(problem.prompt), code, asserts, pairs)


def _similar(matcher: difflib.SequenceMatcher, threshold: float) -> float:
    """The ratio, or 0.0 when a side is empty or the cheap upper bounds already show it is under ``threshold``."""
    if not (matcher.a and matcher.b) or matcher.real_quick_ratio() < threshold or matcher.quick_ratio() < threshold:
        return 0.0
    return matcher.ratio()


def _compare(train_id: str, train: _Features, held_id: str, held: _Features, split: str,
             statements: difflib.SequenceMatcher, codes: difflib.SequenceMatcher) -> Leak | None:
    statements.set_seq1(held.words)
    codes.set_seq1(held.code)
    same_name = bool(train.name) and train.name == held.name
    statement = _similar(statements, NAME_STATEMENT_SIMILARITY if same_name else STATEMENT_SIMILARITY)
    code = _similar(codes, STATEMENT_CODE_SIMILARITY if statement >= STATEMENT_SIMILARITY else CODE_SIMILARITY)
    shared_asserts, shared_io = len(train.asserts & held.asserts), len(train.io & held.io)
    found = {
        "same_function": same_name and statement >= NAME_STATEMENT_SIMILARITY,
        "same_asserts": shared_asserts >= MIN_SHARED_CASES,
        "same_io": shared_io >= MIN_SHARED_CASES,
        "same_code": code >= CODE_SIMILARITY,
        "same_statement": statement == 1.0 or (statement >= STATEMENT_SIMILARITY
                                               and code >= STATEMENT_CODE_SIMILARITY),
    }
    reasons = tuple(reason for reason in REASONS if found[reason])
    if not reasons:
        return None
    return Leak(train_id, held_id, split, reasons, round(statements.ratio(), 3), round(codes.ratio(), 3),
                shared_asserts, shared_io)  # full ratios for the report, also where a bound cut the work short


def find_leaks(train: Sequence[Problem], held_out: Mapping[str, Sequence[Problem]]) -> list[Leak]:
    """Every (train, held-out) pair with at least one reason; ``held_out`` maps a split name to its problems.

    Ordered by train id as given, then by split and held-out order as given.
    """
    held = [(split, problem.id, _features(problem)) for split, problems in held_out.items() for problem in problems]
    leaks = []
    for problem in train:
        features = _features(problem)
        statements = difflib.SequenceMatcher(None, autojunk=False)
        codes = difflib.SequenceMatcher(None, autojunk=False)
        statements.set_seq2(features.words)  # seq2 is the one difflib indexes: once per train problem
        codes.set_seq2(features.code)
        for split, held_id, other in held:
            leak = _compare(problem.id, features, held_id, other, split, statements, codes)
            if leak is not None:
                leaks.append(leak)
    return leaks


def find_dataset_leaks(dataset: str = "mbpp") -> list[Leak]:
    """The leaks of a benchmark's train split into its test and validation splits.

    ``mbpp-sanitized`` keeps MBPP's task ids, so it reuses MBPP's pairs (ids ``mbpp/N``), limited to
    the train tasks it has.
    """
    if dataset == "mbpp":
        return find_leaks(load_dataset("mbpp", "train"),
                          {split: load_dataset("mbpp", split) for split in ("test", "validation")})
    if dataset == "mbpp-sanitized":
        kept = {problem.id.rsplit("/", 1)[1] for problem in load_dataset("mbpp-sanitized", "train")}
        return [leak for leak in find_dataset_leaks("mbpp") if leak.train.rsplit("/", 1)[1] in kept]
    raise ValueError(f"no leak rule for dataset {dataset!r}; known: mbpp, mbpp-sanitized")


def leaks_json(leaks: Iterable[Leak]) -> str:
    """The pairs as the vendored file holds them: a JSON list, one object per pair and line (short diffs)."""
    return "[\n" + ",\n".join(json.dumps(asdict(leak)) for leak in leaks) + "\n]\n"


def leaks_table(leaks: Sequence[Leak]) -> str:
    """One line per pair for people: ids, split, reasons and scores, then the totals."""
    lines = [f"{'train':<12} {'held out':<12} {'split':<10} {'stmt':>5} {'code':>5} {'asserts':>7} {'io':>3}  reasons"]
    lines += [f"{leak.train:<12} {leak.held_out:<12} {leak.split:<10} {leak.statement_similarity:>5.2f} "
              f"{leak.code_similarity:>5.2f} {leak.shared_asserts:>7} {leak.shared_io:>3}  {', '.join(leak.reasons)}"
              for leak in leaks]
    lines.append(f"{len(leaks)} pairs, {len({leak.train for leak in leaks})} train problems")
    return "\n".join(lines) + "\n"
