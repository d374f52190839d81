"""The learning suite's problem families: disjoint splits, and every reference solution passes its tests."""

from __future__ import annotations

import pytest

from rltf.datasets import load_dataset
from rltf.families import FAMILIES
from rltf.judge import Judge


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_splits_are_new_instances_of_the_train_tasks(name: str) -> None:
    train, heldout = load_dataset(f"family-{name}", "train"), load_dataset(f"family-{name}", "heldout")
    assert len(train) == 2 * len(heldout) >= 2 * 6
    assert not {p.id for p in train} & {p.id for p in heldout}
    assert {p.prompt for p in train}.isdisjoint(p.prompt for p in heldout)  # a held-out parameter is new
    tasks = {p.id.rsplit("-", 1)[0] for p in heldout}
    assert tasks == {p.id.rsplit("-", 1)[0] for p in train}  # ... of a task seen in training
    assert all(p.solutions and p.tests["cases"] and p.tests["kind"] == ("stdio" if name == "stdio" else "assert")
               for p in train + heldout)


def test_every_reference_solution_passes_and_a_wrong_one_fails() -> None:
    problems = [p for name in FAMILIES for p in load_dataset(f"family-{name}")]
    with Judge(workers=2) as judge:
        verdicts = judge.run_many([(p, p.solutions[0]) for p in problems])
        broken = [p.solutions[0].replace("return ", "return 0 and ", 1).replace("print(", "print(1, ", 1)
                  for p in problems]
        wrong = judge.run_many(list(zip(problems, broken)))
    failed = [(p.id, v.status, v.error) for p, v in zip(problems, verdicts) if v.status != "pass"]
    assert not failed, failed
    assert sum(v.status != "pass" for v in wrong) >= 0.9 * len(problems)  # the tests tell a broken program apart
