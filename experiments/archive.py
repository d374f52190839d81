"""Copy a finished run into ``experiments/``: the files a report re-derives its numbers from, no weights.

    python experiments/archive.py runs/ablation-default experiments/ablation-default
    python experiments/archive.py runs/eval/mbpp-test experiments/eval-power/sft-v2-mbpp-test-t0.1-n5

Runs write to ``runs/`` (untracked). This keeps configs, metrics, summaries, reports, plots and logs,
gzips the raw per-sample files (``samples.jsonl``, ``learner_batches.jsonl``: rltf's readers take the
``.gz`` copy where the plain file is missing), and leaves out checkpoints, TensorBoard events and the
converted start model. Files already archived are replaced, so archiving a resumed run again is safe.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

SKIPPED_DIRS = {"checkpoints", "tb", "init-model", "__pycache__"}
SKIPPED_SUFFIXES = {".tmp", ".safetensors", ".bin", ".pt", ".gguf"}
COMPRESSED = {"samples.jsonl", "learner_batches.jsonl"}


def archive(source: Path, dest: Path) -> list[Path]:
    """Copy ``source`` into ``dest`` as described above; the files written."""
    written = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        if SKIPPED_DIRS.intersection(relative.parts[:-1]) or path.suffix in SKIPPED_SUFFIXES:
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name in COMPRESSED:
            target = target.with_name(path.name + ".gz")
            with path.open("rb") as raw, gzip.GzipFile(target, "wb", compresslevel=9, mtime=0) as packed:
                shutil.copyfileobj(raw, packed)
        else:
            shutil.copy2(path, target)
        written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a finished run, eval or ablation directory under runs/")
    parser.add_argument("dest", type=Path, help="where it is kept, under experiments/")
    args = parser.parse_args()
    if not args.source.is_dir():
        parser.error(f"{args.source} is not a directory")
    written = archive(args.source, args.dest)
    print(f"{len(written)} files, {sum(p.stat().st_size for p in written) / 1e6:.1f} MB in {args.dest}")


if __name__ == "__main__":
    main()
