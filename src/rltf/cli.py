"""Command-line interface: one sub-command per stage of the pipeline."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import typer
from rich.console import Console
from typer.core import TyperGroup

from rltf.datasets import DATASETS
from rltf.feedback import Normaliser
from rltf.problems import TestSelection
from rltf.prompts import Style

# Choices typer lists in --help and checks; defined here because the modules that own them import slowly
# (tests/test_cli_errors.py checks they agree).
JudgeBackend = Literal["local", "ray"]
Isolation = Literal["auto", "namespaces", "rlimits"]
ISOLATION_HELP = ("Namespaces where the OS allows them, else resource limits only with a warning; namespaces "
                  "refuses to run without them.")
EngineName = Literal["auto", "hf", "ct2", "llamacpp"]
Preset = Literal["bigcode", "greedy"]
Export = Literal["evalplus", "human-eval"]
PromptStyle = Literal["auto", Style]
SPLITS = (*sorted({split for info in DATASETS.values() for split in info.splits}), "all")
Split = Literal[SPLITS]  # type: ignore[valid-type]
RUN_CONFIG = "config.yaml"  # rltf.train.CONFIG: a run's config, read before torch is imported

EXTRAS = {  # an optional dependency's top-level module -> the extra that installs it
    **dict.fromkeys(("torch", "transformers", "accelerate", "peft", "tensorboard", "safetensors", "gguf",
                     "sentencepiece", "huggingface_hub", "matplotlib", "ctranslate2"), "train"),
    "llama_cpp": "llamacpp", "ray": "ray", "trl": "trl", "verl": "verl", "mkdocs": "docs",
}


class CliError(typer.TyperException):
    """A user error that is no single option's value (a config key, a missing extra): exit status 2."""

    exit_code = 2


class _Commands(TyperGroup):
    """Every usage error one line on stderr with exit status 2 (not rich's usage text and boxed message,
    nor a traceback), and a missing optional dependency as the extra that installs it."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            module = (exc.name or "").partition(".")[0]
            if module not in EXTRAS:
                raise
            raise CliError(f"{ctx.command_path} {ctx.invoked_subcommand} needs {module}: "
                           f"pip install 'rltf[{EXTRAS[module]}]'") from None

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:
            message = exc.format_message()
            if type(exc).__name__ != "NoArgsIsHelpError":  # its message is the help (rich has printed it)
                typer.echo(f"Error: {' '.join(message.split())}", err=True)
            elif message:
                typer.echo(message)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(status if isinstance(status, int) else 0)


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, help=__doc__)


def _output_dir(path: Path, option: str = "--out") -> Path:
    """Create ``path`` and check it can be written in before any work: a long run must not fail at its
    end for want of a folder."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise typer.BadParameter(f"cannot create the folder {path}: {exc.strerror}", param_hint=option) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"cannot write in {path}", param_hint=option)
    return path


def _output_file(path: Path, option: str = "--out") -> Path:
    """:func:`_output_dir` for a file's folder, and the file, if there, writable."""
    _output_dir(path.parent, option)
    if path.is_dir() or (path.exists() and not os.access(path, os.W_OK)):
        raise typer.BadParameter(f"cannot write {path}", param_hint=option)
    return path


def _check_model(name: str, allow_download: bool, option: str = "--model") -> None:
    """Fail before any work on a model that cannot load: a path that does not exist, or a hub id that is
    neither in the local cache nor allowed to download (it loads only after the problems and the judge)."""
    from rltf.models import DEFAULT_MODEL

    if name == DEFAULT_MODEL or Path(name).exists():
        return
    if name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1:
        raise typer.BadParameter(f"{name} does not exist", param_hint=option)
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid hub id
        cached = allow_download = False
    if not (cached or allow_download):
        raise typer.BadParameter(f"no model {name!r}: not a file or folder, the embedded {DEFAULT_MODEL}, nor a "
                                 "hub id in the local cache (allow downloads to fetch one)", param_hint=option)


def _int_list(text: str) -> list[int]:
    """``1,5,10`` -> [1, 5, 10], for list options (typer reports the error with the option's name)."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of integers")
    return values


def _load(dataset: str, split: str | None, path: Path | None = None, limit: int | None = None,
          option: str = "--dataset") -> list:
    """A registered benchmark or a canonical problems file; what is wrong with it is the option's error."""
    from rltf.datasets import load_problem_set
    from rltf.problems import ProblemFormatError

    try:
        return load_problem_set(dataset, split, str(path) if path else None, limit)
    except (ValueError, OSError, ProblemFormatError) as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _problems(problems: Path | None, dataset: str | None, split: str | None) -> list:
    """The problems of ``--problems FILE`` or ``--dataset NAME``, exactly one of them."""
    if (problems is None) == (dataset is None):
        raise typer.BadParameter("give --problems FILE or --dataset NAME (one of them)")
    if problems is not None:
        return _load(str(problems), None, option="--problems")
    return _load(str(dataset), split)


@app.command()
def judge(
    problems: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                         help="Canonical problems JSONL (optionally .gz); or --dataset."),
    dataset: str | None = typer.Option(None, help="A registered benchmark (rltf data list) instead of --problems."),
    split: Split | None = typer.Option(None, help="With --dataset: its split (default: all)."),
    programs: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                         help='JSONL of {"problem_id", "program"} lines.'),
    out: Path | None = typer.Option(None, help="Where to write one {problem_id, verdict} line per program."),
    problem_id: str | None = typer.Option(None, help="Judge one program file against this problem."),
    program_file: Path | None = typer.Option(None, exists=True, dir_okay=False, help="The program for --problem-id."),
    workers: int | None = typer.Option(None, min=1, help="Sandbox servers (default: one per core)."),
    timeout: float | None = typer.Option(None, help="Seconds per test (default 4)."),
    stop_on_first_failure: bool = typer.Option(False, help="Stop a program at its first failing test."),
    tests: TestSelection = typer.Option("original", help="The benchmark's tests, rltf augment's or both."),
    backend: JudgeBackend = typer.Option("local", help="Sandbox servers here, or judge actors on Ray."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="With --backend ray: the cluster "
                                           "(auto), default a local Ray instance."),
    isolation: Isolation = typer.Option("auto", help=ISOLATION_HELP),
) -> None:
    """Run programs against unit tests in the sandbox and write typed verdicts."""
    from rltf.judge import JudgeConfig

    if problem_id is not None:
        if program_file is None:
            raise typer.BadParameter("--problem-id needs --program-file")
    elif programs is None or out is None:
        raise typer.BadParameter("give --programs and --out, or --problem-id and --program-file")
    settings = {"timeout_s": timeout, "stop_on_first_failure": stop_on_first_failure, "tests": tests,
                "backend": backend, "ray_address": ray_address, "isolation": isolation}

    def judge_with(servers: int | None) -> Any:
        config = JudgeConfig(**{k: v for k, v in settings.items() if v is not None})
        if servers is not None:
            config.workers = servers
        return _open_judge(config)

    by_id = {p.id: p for p in _problems(problems, dataset, split)}
    if out is not None:
        _output_file(out)
    if problem_id is not None and program_file is not None:
        if problem_id not in by_id:
            raise typer.BadParameter(f"unknown problem id {problem_id!r}", param_hint="--problem-id")
        with judge_with(1) as runner:
            verdict = runner.run(by_id[problem_id], program_file.read_text(encoding="utf-8"))
        typer.echo(json.dumps(verdict.to_dict()))
        return
    assert programs is not None and out is not None  # checked above, before any work
    try:
        rows = _read_program_lines(programs, by_id)
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--programs") from None
    errors = 0
    for row in rows:
        if "error" in row:
            errors += 1
            typer.echo(row["error"], err=True)
    valid = [i for i, row in enumerate(rows) if "error" not in row]
    with judge_with(workers) as runner, \
            _progress(len(valid), "judging") as advance:
        verdicts = runner.run_many([(by_id[rows[i]["problem_id"]], rows[i]["program"]) for i in valid],
                                   on_result=lambda *_: advance())
    for i, verdict in zip(valid, verdicts):
        rows[i] = {"problem_id": rows[i]["problem_id"], "verdict": verdict.to_dict()}
    with out.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    counts = Counter(row["verdict"]["status"] for row in rows if "verdict" in row)
    typer.echo(f"{len(verdicts)} judged: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
               + (f"; {errors} bad input lines" if errors else ""), err=True)
    if errors:
        raise typer.Exit(1)


def _read_program_lines(path: Path, by_id: dict) -> list[dict]:
    """One row per non-blank line (``.gz`` read as gzip); a bad line becomes an error row that names
    it, the rest go on."""
    import gzip

    rows: list[dict] = []
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")) as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                rows.append({"problem_id": None, "error": f"{where}: malformed JSON: {exc.msg}"})
                continue
            if not isinstance(record, dict) or not isinstance(record.get("program"), str):
                rows.append({"problem_id": None, "error": f"{where}: a line needs a string 'program'"})
                continue
            pid = str(record.get("problem_id"))
            if pid not in by_id:
                rows.append({"problem_id": pid, "error": f"{where}: unknown problem id {pid!r}"})
                continue
            rows.append({"problem_id": pid, "program": record["program"]})
    return rows


def _open_judge(config: Any) -> Any:
    """The judge, or a one-line error and exit status 2 when it cannot start (``--isolation
    namespaces`` where the OS gives none)."""
    from rltf.judge import JudgeError, open_judge

    try:
        return open_judge(config)
    except JudgeError as exc:
        raise CliError(str(exc)) from None


@contextmanager
def _progress(total: int, label: str):
    """A rich progress bar with ETA on stderr; yields a function that advances it by one."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda: progress.advance(task)


@app.command()
def augment(
    dataset: str = typer.Argument(..., help="Benchmark name, or a canonical problems .jsonl(.gz) file."),
    out: Path = typer.Option(..., "--out", help="Where to write the problems with extra_tests (JSONL)."),
    split: Split | None = typer.Option(None, help="Dataset split (default: all)."),
    limit: int | None = typer.Option(None, help="Only the first N problems."),
    max_new: int = typer.Option(10, "--max-new", help="At most this many new tests per problem."),
    draws: int = typer.Option(60, help="Mutated inputs within the inputs' contract judged per problem."),
    seed: int = typer.Option(0),
    workers: int | None = typer.Option(None, min=1, help="Sandbox servers (default: one per core)."),
    programs: Path | None = typer.Option(None, exists=True, dir_okay=False, help='JSONL of {"problem_id", '
                                         '"program"} (e.g. an eval\'s samples.jsonl): report how many pass the '
                                         "original tests and fail all."),
) -> None:
    """Add type-aware mutated tests (expected outputs from the reference, run in the sandbox) as extra_tests."""
    from rltf.augment import augment as augment_problems
    from rltf.augment import flip_stats
    from rltf.judge import Judge
    from rltf.problems import save_problems

    problems = _load(dataset, split, limit=limit, option="DATASET")
    _output_file(out)
    with Judge(workers=workers) as judge, _progress(len(problems), "augmenting") as advance:
        augmented, stats = augment_problems(problems, judge, max_new=max_new, draws=draws, seed=seed,
                                            on_problem=advance)
    save_problems(augmented, out)
    report = {"dataset": dataset, "split": split, "max_new": max_new, "draws": draws, "seed": seed,
              **stats.to_dict()}
    if programs is not None:
        by_id = {p.id: p for p in augmented}
        rows = [r for r in _read_program_lines(programs, by_id) if "error" not in r]
        report["programs"] = flip_stats([(by_id[r["problem_id"]], r["program"]) for r in rows], workers)
    stats_path = out.with_name(out.name.split(".")[0] + ".stats.json")
    stats_path.write_text(json.dumps(report, indent=1) + "\n")
    typer.echo(json.dumps(report, indent=1))
    typer.echo(f"{stats.augmented} of {stats.problems} problems gained tests -> {out} (stats {stats_path})", err=True)


@app.command("eval")
def eval_command(
    out: Path | None = typer.Option(None, "--out", help="Output directory (rerun with the same one to resume); "
                                    "default runs/eval/DATASET-SPLIT."),
    model: str = typer.Option("smollm2-135m-instruct", help="Model directory, .gguf file or hub id; "
                              "default: the embedded SmolLM2-135M-Instruct."),
    dataset: str = typer.Option("mbpp", help="Benchmark name, or a canonical problems .jsonl(.gz) file."),
    split: Split | None = typer.Option(None, help="Dataset split (default: test where the benchmark has one, "
                                       "else all; 'all' for every split)."),
    data: Path | None = typer.Option(None, exists=True, help="Local copy of the benchmark's raw data, if not "
                                     "the default."),
    preset: Preset | None = typer.Option(None, help="Decoding preset: bigcode (bigcode-evaluation-harness: top-p "
                                         "0.95, n 15, temperature 0.1 on MBPP, 0.2 on HumanEval) or greedy; --n, "
                                         "--temperature and --top-p override it. Default: n 10, T 0.6, top-p 0.95."),
    n: int | None = typer.Option(None, min=1, help="Samples per problem."),
    k: Any = typer.Option(None, parser=_int_list, metavar="K,K,...", help="Comma-separated k values for pass@k, "
                          "each <= n (default: those of 1,5,10 that are)."),
    temperature: float | None = typer.Option(None, help="Sampling temperature; 0 = greedy."),
    top_p: float | None = typer.Option(None, "--top-p"),
    samples: Path | None = typer.Option(None, "--samples", exists=True, dir_okay=False, help="Score these "
                                        "pre-generated programs instead of sampling (JSONL of task_id + solution "
                                        "as EvalPlus writes, task_id + completion as human-eval writes, or rltf's "
                                        "samples.jsonl)."),
    export_to: Export | None = typer.Option(None, "--export", help="Also write the programs for another tool: "
                                            "evalplus or human-eval (OUT/samples.<format>.jsonl)."),
    max_new_tokens: int = typer.Option(384, "--max-new-tokens"),
    limit: int | None = typer.Option(None, help="Only the first N problems (quick runs)."),
    seed: int = typer.Option(0),
    workers: int = typer.Option(2, help="Judge worker processes."),
    timeout: float | None = typer.Option(None, help="Judge time limit per test in seconds (default: judge's)."),
    judge_backend: JudgeBackend = typer.Option("local", "--judge-backend", help="local, or ray: judge actors on "
                                               "a Ray cluster (RLTF_RAY_ADDRESS=auto joins this machine's)."),
    isolation: Isolation = typer.Option("auto", help=ISOLATION_HELP),
    batch_size: int = typer.Option(128, "--batch-size", help="Sequences per chunk (sampled, judged and saved "
                                   "together; the unit of resume)."),
    engine: EngineName = typer.Option("auto", help="Generation engine: auto (the fastest installed: llamacpp, "
                                      "ct2, hf), hf, ct2, llamacpp."),
    compute_type: str = typer.Option("auto", "--compute-type", help="Engine weights: auto (llamacpp bfloat16 "
                                     "on CPUs with AVX512-BF16, else float16; ct2 float32), float32 "
                                     "(exact), float16/bfloat16 (llamacpp), int8 (ct2)."),
    engine_workers: int = typer.Option(2, "--engine-workers", help="llamacpp/ct2: parallel generations "
                                       "(one per core)."),
    threads: int | None = typer.Option(None, help="torch CPU threads (hf engine)."),
    style: PromptStyle = typer.Option("auto", help="Prompt style: auto (chat template if the tokenizer has one), "
                                      "chat, base."),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let transformers fetch a hub model."),
) -> None:
    """Sample n programs per problem, judge them and report pass@k with its standard error
    (samples.jsonl, summary.json, report.md); or score pre-generated programs with --samples."""
    from rltf.evaluation import preset as preset_sampling
    from rltf.judge import JudgeConfig

    if samples is None:
        _check_model(model, allow_download)
    chosen = {"n": 10, "temperature": 0.6, "top_p": 0.95}
    if preset is not None:
        try:
            chosen = preset_sampling(preset, dataset)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--preset") from None
    n = int(n if n is not None else chosen["n"])
    temperature = temperature if temperature is not None else chosen["temperature"]
    top_p = top_p if top_p is not None else chosen["top_p"]
    ks = k or [x for x in (1, 5, 10) if x <= n]
    if any(x > n for x in ks) and samples is None:  # a file's problems each have their own n
        raise typer.BadParameter(f"every k must be <= n={n}", param_hint="--k")
    if split is None and dataset in DATASETS and "test" in DATASETS[dataset].splits:
        split = "test"  # MBPP's other splits are for prompting, tuning and training
    problems = _load(dataset, split, data, limit)
    out = _output_dir(out or Path("runs") / "eval" / f"{Path(dataset).name.split('.')[0]}-{split or 'all'}")
    judge_config = JudgeConfig(workers=workers, backend=judge_backend,  # type: ignore[arg-type]
                               ray_address=os.environ.get("RLTF_RAY_ADDRESS"),
                               isolation=isolation)  # type: ignore[arg-type]
    if timeout is not None:
        judge_config.timeout_s = timeout
    if samples is not None:
        summary = _score_file(samples, problems, judge_config, out, dataset, split, ks)
    else:
        summary = _generate_and_score(problems, judge_config, out, ks, model, allow_download, style, engine,
                                      compute_type, engine_workers, threads,
                                      dict(dataset=dataset, split=split, n=n, temperature=temperature, top_p=top_p,
                                           max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size))
    console = Console()
    stderr = summary["pass_at_k_stderr"]
    scores = ", ".join(f"pass@{key} {100 * v:.2f}% ± {100 * stderr[key]:.2f}"
                       for key, v in summary["pass_at_k"].items())
    console.print(f"{summary['problems']} problems, {summary['samples']} samples: {scores} (± standard error)")
    console.print(f"verdicts {summary['category']}; wall {summary['timing']['wall_s']:.0f} s; report {out}/report.md")
    if export_to is not None:
        from rltf.evaluation import export

        target = out / f"samples.{export_to}.jsonl"
        console.print(f"{export(out, export_to, target)} programs for {export_to} -> {target}")


def _score_file(samples: Path, problems: list, judge_config: Any, out: Path, dataset: str, split: str | None,
                ks: list[int]) -> dict[str, Any]:
    from rltf.evaluation import EvalSettings, score_samples

    settings = EvalSettings(dataset, split, "-", "-", n=1, temperature=0.0, top_p=1.0, engine="-",
                            samples_file=str(samples))
    with _open_judge(judge_config) as judge:
        try:
            return score_samples(samples, problems, judge, out, settings, ks)
        except (ValueError, json.JSONDecodeError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--samples") from None


def _generate_and_score(problems: list, judge_config: Any, out: Path, ks: list[int], model: str,
                        allow_download: bool, style: str, engine: str, compute_type: str, engine_workers: int,
                        threads: int | None, sampling: dict[str, Any]) -> dict[str, Any]:
    import torch  # noqa: F401  (before transformers, which only warns when torch is missing)
    from transformers.utils import logging as hf_logging

    from rltf.evaluation import EvalSettings, evaluate
    from rltf.generation import EngineConfig, make_engine
    from rltf.models import Policy, PolicyError, set_threads

    set_threads(threads)
    hf_logging.disable_progress_bar()
    try:
        policy = Policy.load(model, allow_download=allow_download, style=style)  # type: ignore[arg-type]
    except (PolicyError, ValueError) as exc:  # ValueError: a folder that holds no model
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    try:
        sampler = make_engine(policy, EngineConfig(engine, compute_type, engine_workers))  # type: ignore[arg-type]
    except ValueError as exc:  # the engine is not installed, or has no such compute type
        raise typer.BadParameter(str(exc), param_hint=["--engine", "--compute-type"]) from None
    settings = EvalSettings(model=model, style=policy.style, engine=sampler.label, **sampling)
    with _open_judge(judge_config) as judge:
        return evaluate(sampler, policy, problems, judge, out, settings, ks)


@app.command()
def explain(
    problems: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                         help="Canonical problems JSONL (optionally .gz); or --dataset."),
    dataset: str | None = typer.Option(None, help="A registered benchmark (rltf data list) instead of --problems."),
    split: Split | None = typer.Option(None, help="With --dataset: its split (default: all)."),
    problem_id: str = typer.Option(..., help="The problem to judge against."),
    program_file: Path = typer.Option(..., exists=True, dir_okay=False,
                                      help="The program, taken as the whole completion."),
    model: str | None = typer.Option(None, help="Tokenizer: model directory, .gguf file or cached hub id; "
                                     "default: the embedded SmolLM2-135M-Instruct."),
    baseline_program: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                                 help="Judge this program as the greedy baseline."),
    adaptive: bool = typer.Option(True, help="Failed tests earn -0.3 + 1.3 * pass ratio."),
    fine_grained: bool = typer.Option(True, help="Penalise the tokens the error category blames."),
    normaliser: Normaliser = typer.Option("original", help="Fine-grained κ: original (1) or intended (T / marked)."),
    binary: bool = typer.Option(False, help="Pass = 1, anything else = 0."),
    static_weight: float = typer.Option(0.0, "--static-weight", help="μ of the static term: run the static "
                                        "analyzer and penalise each finding's line (0: off)."),
    timeout: float | None = typer.Option(None, help="Seconds per test (default 4)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the highlighted program."),
) -> None:
    """Judge one program and show its reward terms and which tokens the fine-grained term penalises."""
    from rich.text import Text

    from rltf.feedback import FeedbackConfig, ProgramSpan, token_returns
    from rltf.judge import Judge

    by_id = {p.id: p for p in _problems(problems, dataset, split)}
    if problem_id not in by_id:
        raise typer.BadParameter(f"unknown problem id {problem_id!r}", param_hint="--problem-id")
    tokenizer = _offsets_tokenizer(model)
    program = program_file.read_bytes().decode("utf-8")  # bytes: keep CRLF, line numbers count it
    config = FeedbackConfig(adaptive=adaptive, binary=binary, fine_grained=fine_grained, normaliser=normaliser,
                            baseline="greedy" if baseline_program else "none",  # type: ignore[arg-type]
                            static_weight=static_weight)
    with Judge(workers=1, timeout_s=timeout, static=static_weight > 0) as runner:
        verdict = runner.run(by_id[problem_id], program)
        baseline = runner.run(by_id[problem_id], baseline_program.read_bytes().decode("utf-8")) \
            if baseline_program else None
    offsets = [tuple(o) for o in tokenizer(program, add_special_tokens=False,
                                           return_offsets_mapping=True)["offset_mapping"]]
    result = token_returns(verdict, program, offsets, ProgramSpan("", 0, len(program)), baseline, config)
    returns, record = result if result else (None, None)
    marked = record.tokens if record else ()
    span_text = program[offsets[marked[0]][0] : offsets[marked[-1]][1]] if marked else ""
    if as_json:
        typer.echo(json.dumps({
            "verdict": verdict.to_dict(), "category": record.category if record else None, "span_text": span_text,
            "static": [{"rule": f.rule, "line": f.line, "message": f.message} for f in verdict.static],
            "terms": record.terms() if record else None, "tokens": [program[a:b] for a, b in offsets],
            "token_returns": [round(r, 6) for r in returns.tolist()] if returns is not None else None}))
    else:
        console = Console(highlight=False)
        error = verdict.error
        console.print(f"verdict: {verdict.status} {verdict.passed}/{verdict.total}"
                      + (f"  {error.phase} {error.type} line {error.line}: {error.message}" if error else ""))
        if record is None:
            console.print("no reward: the judge failed (infra_error) or the baseline has no usable verdict")
        else:
            text = Text(program)
            for i in marked:
                text.stylize("bold white on red", *offsets[i])
            console.print(text)
            console.print(f"category: {record.category}  penalised: {span_text!r}")
            for mark in record.static:
                console.print(f"static: line {mark.finding.line} {mark.finding.rule} ({mark.finding.message}): "
                              f"{mark.penalty:+.4g} on {len(mark.tokens)} tokens")
            console.print("terms: " + ", ".join(f"{k} {v:+.4g}" for k, v in record.terms().items()))
            console.print(f"returns: {record.advantage + record.fine:+.4g} on {len(marked)} penalised "
                          f"tokens, {record.advantage:+.4g} on the other {len(offsets) - len(marked)}")
    if record is None:
        raise typer.Exit(1)


def _offsets_tokenizer(model: str | None):
    """Only the tokenizer of ``model`` (the gguf one reads no weights); it must give character offsets."""
    from rltf.models import DEFAULT_MODEL, PolicyError, embedded_gguf

    _check_model(model or DEFAULT_MODEL, allow_download=False)
    from transformers import AutoTokenizer

    try:
        source = embedded_gguf() if model in (None, DEFAULT_MODEL) else Path(model)
        if source.suffix == ".gguf" and source.is_file():
            tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
    except (PolicyError, OSError, ValueError) as exc:  # ValueError: a folder that holds no tokenizer
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    if not tokenizer.is_fast:
        raise typer.BadParameter(f"{model} has no fast tokenizer, so no character offsets", param_hint="--model")
    return tokenizer


data_app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True,
                       help="Benchmarks: list, show, leaks, verify.")
app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list() -> None:
    """The registered benchmarks with their splits and sizes."""
    from rich.table import Table

    from rltf.datasets import list_datasets

    table = Table("name", "problems", "splits", "description")
    for info in list_datasets():
        splits = ", ".join(f"{k} {v}" for k, v in info.splits.items())
        table.add_row(info.name, str(info.size) + (" (needs --path)" if info.needs_path else ""), splits,
                      info.description)
    Console().print(table)


@data_app.command("show")
def data_show(
    problem_id: str = typer.Argument(..., help="e.g. mbpp/11, HumanEval/0, apps/train/0001"),
    dataset: str | None = typer.Option(None, help="Dataset name (default: from the id's prefix)."),
    path: Path | None = typer.Option(None, exists=True, help="Local copy for datasets that need one (apps)."),
) -> None:
    """Print one problem record as JSON."""
    name = dataset or {"HumanEval": "humaneval"}.get(problem_id.split("/")[0], problem_id.split("/")[0])
    if name not in DATASETS:
        raise typer.BadParameter(f"cannot tell the dataset of {problem_id!r}; give --dataset")
    match = [p for p in _load(name, None, path) if p.id == problem_id]
    if not match:
        raise typer.BadParameter(f"no problem {problem_id!r} in {name}")
    typer.echo(json.dumps(match[0].to_dict(), indent=2, ensure_ascii=False))


@data_app.command("leaks")
def data_leaks(
    dataset: str = typer.Option("mbpp", help="mbpp or mbpp-sanitized: its train problems against its test and "
                                "validation problems."),
    as_json: bool = typer.Option(False, "--json", help="JSON, one pair a line (what data/mbpp_train_leaks.json "
                                 "holds), instead of a table."),
) -> None:
    """Train problems that twin a held-out problem, each pair with the reasons it matched (the same
    function, asserts or test inputs and outputs, reference code after renaming, or statement)."""
    from rltf.leaks import find_dataset_leaks, leaks_json, leaks_table

    try:
        leaks = find_dataset_leaks(dataset)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dataset") from None
    typer.echo(leaks_json(leaks) if as_json else leaks_table(leaks), nl=False)


@data_app.command("verify")
def data_verify(
    dataset: str = typer.Argument(..., help="Dataset name (see `rltf data list`)."),
    split: Split | None = typer.Option(None),
    path: Path | None = typer.Option(None, exists=True, help="Local copy for datasets that need one (apps)."),
    all_solutions: bool = typer.Option(False, "--all-solutions", help="Judge every reference solution, "
                                       "not only the first of each problem."),
    workers: int | None = typer.Option(None, min=1, help="Sandbox servers (default: one per core)."),
    timeout: float | None = typer.Option(None, help="Seconds per test (default 4)."),
) -> None:
    """Judge the reference solutions and report every one that does not pass, with the reason."""
    from rltf.judge import Judge

    problems = _load(dataset, split, path, option="DATASET")
    pairs = [(p, s) for p in problems for s in (p.solutions if all_solutions else p.solutions[:1])]
    missing = sum(not p.solutions for p in problems)
    with Judge(workers=workers, timeout_s=timeout) as runner, _progress(len(pairs), "verifying") as advance:
        verdicts = runner.run_many(pairs, on_result=lambda *_: advance())
    failures = [(p, v) for (p, _), v in zip(pairs, verdicts) if v.status != "pass"]
    for problem, verdict in failures:
        error = verdict.error
        reason = f"{error.phase} {error.type} line {error.line}: {error.message}" if error else "wrong answer"
        typer.echo(f"{problem.id}: {verdict.status} {verdict.passed}/{verdict.total} — {reason}")
    typer.echo(f"{dataset}: {len(pairs) - len(failures)}/{len(pairs)} reference solutions pass"
               + (f"; {missing} problems have no reference solution" if missing else ""))
    if failures:
        raise typer.Exit(1)


OVERRIDES_HELP = ("Config overrides as dotted key=value, e.g. optim.lr=3e-6 feedback.fine_grained=false "
                  "rollout.online=false.")
CONFIG_HELP = ("Config YAML file or the name of one shipped in rltf/configs/ (tiny-smoke, learning-test, "
               "codet5-apps, qwen-coder-mbpp, ...); default: smollm2-mbpp-cpu.")
NUM_PROCESSES_HELP = ("Data-parallel ranks: runs the command under `accelerate launch --num_processes N`, with "
                      "the rest of your accelerate config (`accelerate config`) where you have one (a GPU per "
                      "rank; CPU ranks with model.device=cpu and model.threads = cores / N). optim.grad_accum is "
                      "per rank: the global batch is N times one process's.")
RESUME_HELP = ("Continue the run in --out from its last checkpoint with its config.yaml (overrides still apply; a "
               "--config must match it); start it if --out holds no run yet.")


@app.command(no_args_is_help=False)
def train(
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    config: str | None = typer.Option(None, "--config", help=CONFIG_HELP),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default: runs/<config name>)."),
    steps: int | None = typer.Option(None, "--steps", help="Total optimizer steps (same as steps=N)."),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    num_processes: int = typer.Option(1, "--num-processes", min=1, help=NUM_PROCESSES_HELP),
) -> None:
    """Online RLTF: sample, judge, reward and update; checkpoints, metrics and evals in --out."""
    cfg, run_dir = _training_config(overrides or [], config, out, steps, resume)
    if num_processes > 1:
        _launch(num_processes, "train", overrides or [], config, out, steps, resume)
    _run_training(cfg, run_dir, resume)


@app.command(no_args_is_help=False)
def sft(
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    config: str | None = typer.Option(None, "--config", help=CONFIG_HELP),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default: runs/sft-<config name>)."),
    steps: int | None = typer.Option(None, "--steps", help="Total optimizer steps (same as steps=N)."),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    num_processes: int = typer.Option(1, "--num-processes", min=1, help=NUM_PROCESSES_HELP),
) -> None:
    """Supervised fine-tuning on the training problems' reference solutions (the RL warm start): the
    config's SL term alone, no sampling; an RL run starts from it with model.name=OUT/checkpoints/step-N/model."""
    name = Path(config or "smollm2-mbpp-cpu").stem
    cfg, run_dir = _training_config(["rollout.enabled=false", "optim.rl_weight=0", *(overrides or [])], config,
                                    out or Path("runs") / f"sft-{name}", steps, resume)
    if num_processes > 1:
        _launch(num_processes, "sft", overrides or [], config, out, steps, resume)
    _run_training(cfg, run_dir, resume)


def _launch(processes: int, command: str, overrides: list[str], config: str | None, out: Path | None,
            steps: int | None, resume: bool) -> None:
    """Run ``rltf COMMAND ...`` as ``processes`` ranks with accelerate's launcher (torch's elastic agent:
    if one rank dies, the others are stopped and the launch fails); exits with its status."""
    import socket
    import subprocess

    from rltf.train.distributed import launch_command

    with socket.socket() as free:  # a free rendezvous port: two launches on one machine do not collide
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    argv = [command, *overrides, *(["--config", config] if config else []), *(["--out", str(out)] if out else []),
            *(["--steps", str(steps)] if steps is not None else []), *(["--resume"] if resume else [])]
    raise typer.Exit(subprocess.call(launch_command(processes, argv, port)))


def _training_config(overrides: list[str], config: str | None, out: Path | None, steps: int | None,
                     resume: bool) -> tuple[Any, Path]:
    """The run's config and directory, checked before torch is imported (seconds) and any work is done."""
    from rltf.config import DEFAULT_CONFIG, ConfigError, differing_keys, load_config

    name = config or DEFAULT_CONFIG
    out = out or Path("runs") / Path(name).stem
    extra = [*overrides, *([f"steps={steps}"] if steps is not None else [])]
    existing = resume and (out / RUN_CONFIG).is_file()
    try:
        cfg = load_config(str(out / RUN_CONFIG) if existing else name, extra)
        differ = differing_keys(load_config(name, extra), cfg) if existing and config is not None else []
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if differ:
        raise typer.BadParameter(f"{out / RUN_CONFIG} (the run being resumed) differs from --config {name} in "
                                 f"{', '.join(differ)}; resume without --config, or use another --out",
                                 param_hint="--config")
    if not existing:  # a resumed run loads its checkpoint, not model.name
        _check_model(cfg.model.name, cfg.model.allow_download, option="model.name")
    return cfg, _output_dir(out)


def _run_training(cfg: Any, out: Path, resume: bool) -> None:
    import torch  # noqa: F401  (before transformers, which only warns when torch is missing)
    from transformers.utils import logging as hf_logging

    from rltf.evaluation import train_evaluator
    from rltf.train import Trainer, render_report

    hf_logging.disable_progress_bar()
    try:
        trainer = Trainer(cfg, out, resume=resume, evaluator=train_evaluator(cfg))
    except FileExistsError as exc:
        raise typer.BadParameter(str(exc), param_hint="--out") from None
    trainer.run()
    if trainer.is_main:
        render_report(out)
        _print_run(out)


def _print_run(run_dir: Path) -> None:
    from rltf.train import read_evals, read_metrics

    console = Console(soft_wrap=True)
    records = read_metrics(run_dir)
    for step, summary in read_evals(run_dir):
        decoding = "greedy" if summary["settings"]["temperature"] == 0 else f"sampled (n {summary['settings']['n']})"
        console.print(f"eval step {step}: {decoding} pass@1 {100 * summary['pass_at_k'].get('1', 0):.2f}% "
                      f"on {summary['problems']} problems")
    if records:
        times = {k: sum(r.get(k) or 0.0 for r in records) for k in ("time_gen_s", "time_judge_s", "time_train_s")}
        console.print(f"{records[-1]['step']} steps; time gen {times['time_gen_s']:.0f} s, judge (not overlapped) "
                      f"{times['time_judge_s']:.0f} s, train {times['time_train_s']:.0f} s")
        console.print(f"metrics, evals and plots in {run_dir}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A training run directory (rltf train --out).")) -> None:
    """Render PNG plots of a training run (rewards, pass rates, verdict mix, losses, time, eval pass@1)."""
    from rltf.train import METRICS, render_report

    if not (run_dir / METRICS).is_file():
        raise typer.BadParameter(f"{run_dir} has no {METRICS}", param_hint="RUN_DIR")
    for path in render_report(run_dir):
        typer.echo(str(path))
    _print_run(run_dir)



@app.command()
def ablate(
    spec: Path = typer.Argument(..., help="Ablation spec: YAML with base, overrides, arms, seeds, steps, "
                                "reference and eval (see rltf.ablation)."),
    out: Path = typer.Option(..., "--out", help="Output directory (rerun with the same one to resume)."),
    report: bool = typer.Option(False, "--report", help="Run nothing: write the outputs from the runs "
                                "finished so far (a partial, paired table)."),
) -> None:
    """Train every arm of SPEC for every seed on pinned cores, evaluate each run on every eval target,
    and compare the arms with the reference (ablation.json, ablation.md, ablation.png in --out)."""
    from rltf.ablation import run_ablation
    from rltf.config import ConfigError

    if not spec.is_file():
        raise typer.BadParameter(f"{spec} is not a file", param_hint="SPEC")
    _output_dir(out)
    console = Console(soft_wrap=True)
    try:
        run_ablation(spec, out, echo=console.print, report_only=report)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="SPEC") from None
    except ValueError as exc:
        if not report:
            raise
        raise typer.BadParameter(str(exc), param_hint="--report") from None  # nothing finished yet
    console.print((out / "ablation.md").read_text())

def main() -> None:
    app()


if __name__ == "__main__":  # python -m rltf.cli, as accelerate launch runs it
    main()
