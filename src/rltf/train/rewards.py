"""Rewards: each judged group becomes buffer samples with per-token returns against its baseline,
and the step's :class:`Rollout` record says what was sampled and how it scored.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rltf.buffer import Sample
from rltf.feedback import FeedbackConfig, token_returns
from rltf.judge.verdict import VERDICT_KEYS
from rltf.train.report import mean_or_none
from rltf.train.rollout import Group, Sampled


def baselines(group: Group, kind: str) -> list[Any]:
    """What each sample of ``group`` is compared with (:func:`rltf.feedback.token_returns`'s ``baseline``):
    the group's own greedy verdict, the verdicts of its other K - 1 samples (``rloo``), of all its K
    samples (``grpo``), or None."""
    verdicts = [s.verdict for s in group.samples]
    if kind == "greedy":
        return [group.greedy.verdict if group.greedy else None] * len(verdicts)
    if kind == "rloo":
        return [verdicts[:j] + verdicts[j + 1:] for j in range(len(verdicts))]
    if kind == "grpo":
        return [verdicts] * len(verdicts)
    return [None] * len(verdicts)


@dataclass
class Rollout:
    """A step's scored rollout: buffer samples and the numbers logged about them."""

    samples: list[Sample] = field(default_factory=list)
    verdicts: Counter[str] = field(default_factory=Counter)
    programs: int = 0
    greedy_passed: int = 0
    greedy: int = 0
    rewards: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)
    token_returns: list[float] = field(default_factory=list)
    dropped: int = 0
    groups: int = 0
    groups_without_signal: int = 0
    """Groups without a learning signal: token returns all zero or, with ``drop_without_signal``, sequence
    advantages all zero (with dynamic sampling their samples are dropped)."""
    groups_with_pass: int = 0
    groups_zero_std: int = 0
    """Groups whose samples all got the same sequence reward (TRL's ``frac_reward_zero_std``)."""
    lengths: list[int] = field(default_factory=list)
    """Tokens of each sampled completion."""
    truncated: int = 0
    """Sampled completions the token limit cut."""
    masked_overlong: int = 0
    new_tokens: int = 0
    gen_s: float = 0.0
    judge_wait_s: float = 0.0
    judge_busy_s: float = 0.0
    static_findings: Counter[str] = field(default_factory=Counter)
    program_records: list[dict[str, Any]] = field(default_factory=list)
    """Every judged program (greedy baselines too) with its verdict: the ``samples.jsonl`` lines."""
    passing: list[Sample] = field(default_factory=list)
    """The samples that passed, those of groups dynamic sampling dropped too: rejection sampling's data
    (``optim.sl_source``)."""

    @property
    def groups_with_signal(self) -> int:
        return self.groups - self.groups_without_signal

    def metrics(self) -> dict[str, Any]:
        """``time_judge_s`` is the judging that generation did not hide (waiting after the last
        ``generate``); ``time_judge_busy_s`` all of it. ``reward_fine`` and ``reward_static`` are
        the fine and static terms' shares of the mean token return; ``static_findings`` counts the
        penalised findings by rule."""
        programs = max(self.programs, 1)
        return {
            "reward_mean": mean_or_none(self.rewards),
            **{f"reward_{term}": mean_or_none(values) for term, values in self.terms.items()},
            "return_mean": mean_or_none(self.token_returns),
            "sample_pass_rate": self.verdicts["pass"] / programs if self.programs else None,
            "greedy_pass_rate": self.greedy_passed / self.greedy if self.greedy else None,
            "verdicts": {k: self.verdicts[k] for k in VERDICT_KEYS},
            **({"static_findings": dict(self.static_findings)} if self.static_findings else {}),
            "samples_new": len(self.samples),
            "samples_dropped_infra": self.dropped,
            "groups": self.groups,
            "groups_without_signal": self.groups_without_signal,
            "groups_with_pass": self.groups_with_pass,
            "frac_reward_zero_std": self.groups_zero_std / self.groups if self.groups else None,
            "completion_length_mean": mean_or_none(self.lengths),
            "completion_truncated_frac": self.truncated / len(self.lengths) if self.lengths else None,
            "samples_masked_overlong": self.masked_overlong,
            "gen_tokens": self.new_tokens,
            "time_gen_s": self.gen_s,
            "time_judge_s": self.judge_wait_s,
            "time_judge_busy_s": self.judge_busy_s,
            "tokens_per_s_gen": self.new_tokens / self.gen_s if self.gen_s else None,
        }

    def merge(self, other: Rollout) -> None:
        """Add another call's output (dynamic sampling draws more problems within one step; each rank
        scores its own share)."""
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict) and not isinstance(mine, Counter):
                for key, values in theirs.items():
                    mine.setdefault(key, []).extend(values)
            else:
                setattr(self, f.name, mine + theirs)


def score(sampled: Sampled, prompt_ids: Sequence[Sequence[int]], feedback: FeedbackConfig, step: int,
          drop_without_signal: bool = False, max_new_tokens: int | None = None) -> Rollout:
    """The buffer samples of ``sampled``'s groups (``prompt_ids``: each group's prompt as the engine
    saw it), their returns against each group's baseline (``feedback.baseline``), and every judged
    program's record. With ``drop_without_signal`` (dynamic sampling) a group gives no samples when
    its returns are all zero, or when its sequence advantages are (one reward for the whole group
    under ``rloo`` / ``grpo``: what is left is the per-token penalties, with nothing to prefer one
    sample over another). ``max_new_tokens``: the limit the completions were sampled under (the
    overlong term's)."""
    rollout = Rollout(new_tokens=sampled.new_tokens, gen_s=sampled.gen_s, judge_wait_s=sampled.judge_wait_s,
                      judge_busy_s=sampled.judge_busy_s)
    for group, prompt in zip(sampled.groups, prompt_ids, strict=True):
        samples, advantages = _score_group(group, tuple(prompt), feedback, step, rollout, max_new_tokens)
        rollout.groups += 1
        rollout.groups_with_pass += any(j.verdict.status == "pass" for j in group.samples)
        rollout.passing += [sample for sample in samples if sample.verdict["status"] == "pass"]
        rewards = {sample.reward for sample in samples}
        rollout.groups_zero_std += len(rewards) <= 1
        flat = feedback.baseline in ("rloo", "grpo") and not any(advantages)
        if not any(r for sample in samples for r in sample.returns) or (drop_without_signal and flat):
            rollout.groups_without_signal += 1
            if drop_without_signal:
                continue
        rollout.samples += samples
    return rollout


def _score_group(group: Group, prompt_ids: tuple[int, ...], fb: FeedbackConfig, step: int, rollout: Rollout,
                 max_new_tokens: int | None) -> tuple[list[Sample], list[float]]:
    """The group's samples and their sequence advantages; its programs, verdicts and rewards go into
    ``rollout``'s record."""
    if group.greedy is not None:
        rollout.greedy += 1
        rollout.greedy_passed += group.greedy.verdict.status == "pass"
    for j, judged in enumerate(([group.greedy] if group.greedy else []) + group.samples):
        verdict = judged.verdict
        rollout.program_records.append({
            "step": step + 1, "problem_id": group.problem.id, "greedy": group.greedy is not None and j == 0,
            "program": judged.program, "status": verdict.status, "category": verdict.error_category,
            "passed": verdict.passed, "total": verdict.total, "policy_version": judged.completion.policy_version})
    samples, advantages = [], []
    for judged, baseline in zip(group.samples, baselines(group, fb.baseline)):
        completion, verdict = judged.completion, judged.verdict
        rollout.programs += 1
        rollout.verdicts[verdict.error_category] += 1
        rollout.lengths.append(len(completion.token_ids))
        rollout.truncated += completion.finish_reason == "length"
        if not completion.token_ids:
            continue
        if fb.overlong == "mask" and completion.finish_reason == "length":
            rollout.masked_overlong += 1
            continue
        result = token_returns(verdict, completion.text, completion.offsets, judged.span, baseline, fb,
                               max_new_tokens)
        if result is None:
            rollout.dropped += 1
            continue
        returns, record = result
        values = returns.tolist()
        rollout.rewards.append(record.reward)
        rollout.terms.setdefault(record.reward_term, []).append(record.reward)
        rollout.terms.setdefault("fine", []).append(record.fine * len(record.tokens) / len(values))
        if fb.static_weight:
            rollout.terms.setdefault("static", []).append(record.terms()["static"] / len(values))
            rollout.static_findings.update(m.finding.rule for m in record.static)
        rollout.terms.setdefault("baseline", []).append(record.baseline)
        rollout.terms.setdefault("advantage", []).append(record.advantage)
        if fb.overlong == "soft":
            rollout.terms.setdefault("overlong", []).append(record.overlong)
        advantages.append(record.advantage)
        rollout.token_returns.extend(values)
        samples.append(Sample(
            group.problem.id, prompt_ids, completion.token_ids, tuple(values),
            {"status": verdict.status, "category": verdict.error_category, "passed": verdict.passed,
             "total": verdict.total}, record.reward, completion.policy_version, logprobs=completion.logprobs))
    return samples, advantages
