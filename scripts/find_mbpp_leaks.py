"""Find MBPP train problems (601-974) that duplicate or nearly duplicate a validation or test problem.

Writes ``src/rltf/data/mbpp_train_leaks.json``, which ``rltf.datasets.drop_mbpp_leaks`` reads (the
trainer drops these problems from training unless ``data.drop_leaks: false``):

    python scripts/find_mbpp_leaks.py            # rewrite the file
    python scripts/find_mbpp_leaks.py --check    # exit 1 if the file is not what the rule gives

The rule, on the problem statements lower-cased to words (the "Your code should pass" tail removed)
and the reference solutions as Python tokens: a train problem leaks into a held-out one when its
statement is at most one word edit away (two when both define the same function name, ignoring
case) AND the statements are identical, or the function names agree, or the solutions' token
sequences match at least 80 % (difflib ratio). One word is often all that separates two MBPP
tasks with the same solution ("even" / "odd", "first" / "last", "sum" / "difference"); the
solution test keeps pairs like "area of a rectangle" / "area of a pentagon", whose code differs,
apart.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import re
import sys
import tokenize

from rltf.datasets import LEAKS_FILE, load_dataset

CODE_SIMILARITY = 0.8


def words(statement: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", statement.lower().split("your code should pass")[0])


def code_tokens(source: str) -> list[str]:
    kinds = (tokenize.NAME, tokenize.OP, tokenize.NUMBER, tokenize.STRING)
    try:
        return [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type in kinds]
    except (tokenize.TokenError, SyntaxError):
        return source.split()


def word_edits(a: list[str], b: list[str], bound: int) -> int:
    """Word-level Levenshtein distance, or ``bound + 1`` once it must exceed ``bound``."""
    if abs(len(a) - len(b)) > bound:
        return bound + 1
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
        if min(row) > bound:
            return bound + 1
    return row[-1]


def find_leaks() -> list[dict[str, object]]:
    held_out = load_dataset("mbpp", "validation") + load_dataset("mbpp", "test")
    leaks = []
    for train in load_dataset("mbpp", "train"):
        statement, code = words(train.prompt), code_tokens(train.solutions[0])
        for other in held_out:
            same_name = (train.entry_point or "").lower() == (other.entry_point or "").lower()
            edits = word_edits(statement, words(other.prompt), 2 if same_name else 1)
            if edits > (2 if same_name else 1):
                continue
            similarity = difflib.SequenceMatcher(None, code, code_tokens(other.solutions[0])).ratio()
            if edits == 0 or same_name or similarity >= CODE_SIMILARITY:
                leaks.append({"train": train.id, "held_out": other.id, "word_edits": edits, "same_name": same_name,
                              "code_similarity": round(similarity, 2)})
    return leaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the vendored file instead of writing it")
    args = parser.parse_args()
    text = json.dumps(find_leaks(), indent=1) + "\n"
    if args.check:
        same = LEAKS_FILE.read_text() == text
        print("up to date" if same else f"{LEAKS_FILE} differs from what the rule gives")
        return 0 if same else 1
    LEAKS_FILE.write_text(text)
    print(f"wrote {LEAKS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
