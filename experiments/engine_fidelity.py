"""Greedy fidelity of one eval run against another (e.g. ct2 float32 against HF float32).

    python experiments/engine_fidelity.py REFERENCE_SAMPLES CANDIDATE_SAMPLES [--json OUT]

Each argument is an eval directory or its samples.jsonl(.gz). For every problem both ran, the two
greedy completions are tokenized with the embedded model's tokenizer and compared; a mismatch is
reported with the index of the first differing token and the two tokens there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rltf._io import read_jsonl
from rltf.models import default_checkpoint


def read(path: Path) -> dict[str, dict]:
    records = read_jsonl(path / "samples.jsonl" if path.is_dir() else path)
    return {r["problem_id"]: r for r in records if r["sample"] == 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_checkpoint())
    reference, candidate = read(args.reference), read(args.candidate)
    shared = sorted(set(reference) & set(candidate), key=lambda k: int(k.split("/")[-1]))
    mismatches = []
    for pid in shared:
        a = tokenizer(reference[pid]["completion"], add_special_tokens=False).input_ids
        b = tokenizer(candidate[pid]["completion"], add_special_tokens=False).input_ids
        if a != b:
            status = (reference[pid]["verdict"]["status"], candidate[pid]["verdict"]["status"])
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            mismatches.append({"problem_id": pid, "first_differing_token": first,
                               "reference": tokenizer.decode(a[first:first + 1]),
                               "candidate": tokenizer.decode(b[first:first + 1]),
                               "verdicts": status})
    passed = {name: sum(runs[p]["verdict"]["status"] == "pass" for p in shared)
              for name, runs in (("reference", reference), ("candidate", candidate))}
    result = {"problems": len(shared), "identical": len(shared) - len(mismatches), "passed": passed,
              "mismatches": mismatches}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
