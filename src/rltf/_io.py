"""Reading the JSONL files runs write, wherever they are kept.

A live run appends to ``samples.jsonl`` / ``metrics.jsonl``; the committed copies in ``experiments/``
are gzipped (``samples.jsonl.gz``). Every reader goes through :func:`read_jsonl`, so a report re-derives
the same numbers from either, and a killed run's torn last line is handled one way everywhere.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any


def existing(path: str | Path) -> Path | None:
    """``path`` if it exists, else its gzipped copy ``path.gz`` if that does, else None."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.exists():
            return candidate
    return None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSONL file or of its ``.gz`` copy (none if neither exists). A line that does not
    parse is left out: only a killed writer leaves one, as its last line."""
    found = existing(path)
    if found is None:
        return []
    with gzip.open(found, "rt", encoding="utf-8") if found.suffix == ".gz" else found.open(encoding="utf-8") as lines:
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records
