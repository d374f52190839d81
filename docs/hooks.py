"""mkdocs hooks for rltf's docs.

* ``reference/config.md`` is generated at build time from the config dataclasses (:class:`rltf.config.TrainConfig`
  and the sections it holds): every key with its type, its default and its doc, the string literal right after the
  field (an attribute docstring, read with :mod:`ast`) or, failing that, the comment on the field's line. Written
  from the code, it cannot drift from it. ``python docs/hooks.py`` prints the page.
* Links from a page to files of the repository outside ``docs/`` (``../experiments/MANIFEST.md``) must exist, or the
  build warns (and ``strict`` fails); they then point at the file under ``repo_url``, or show as their text when
  mkdocs.yml sets no ``repo_url``.
* Sphinx roles in docstrings (``:func:`x```) render as the plain code they name on the API pages.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import logging
import re
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[1]
CONFIG_PAGE = "reference/config.md"
log = logging.getLogger("mkdocs.hooks.rltf")  # under "mkdocs": strict mode counts its warnings


# --------------------------------------------------------------------------- the config reference


@dataclass(frozen=True)
class ConfigKey:
    key: str
    type: str
    default: str
    doc: str


def field_docs(cls: type) -> dict[str, str]:
    """Each field's doc: the string literal right after its annotated assignment, else its line's comment."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}
    body = ast.parse(source).body[0].body
    docs = {}
    for node, after in zip(body, [*body[1:], None]):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
        elif node.lineno in comments:
            docs[node.target.id] = comments[node.lineno]
    return docs


def type_text(kind: Any) -> str:
    """An annotation as a config file writes its values: ``int | null``, ``auto | chat | base``, ``list[str]``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_text(a) for a in args)}]"
    if kind is type(None):
        return "null"
    return "any" if kind is Any else kind.__name__


def value_text(value: Any) -> str:
    """A default as YAML reads it back (JSON is YAML's flow style)."""
    return value if isinstance(value, str) and value else json.dumps(value)


def config_sections() -> list[tuple[str, type, list[ConfigKey]]]:
    """(dotted section, its dataclass, its keys) for the top level and every section, nested ones
    after their parent, defaults as :class:`TrainConfig` sets them (``judge.workers`` 2, not a core count)."""
    from rltf.config import TrainConfig

    sections: list[tuple[str, type, list[ConfigKey]]] = []

    def walk(cls: type, instance: Any, prefix: str) -> None:
        hints, docs = typing.get_type_hints(cls), field_docs(cls)
        keys, nested = [], []
        for f in fields(cls):
            value = getattr(instance, f.name)
            if is_dataclass(value):
                nested.append((hints[f.name], value, f"{prefix}{f.name}"))
            else:
                keys.append(ConfigKey(f"{prefix}{f.name}", type_text(hints[f.name]), value_text(value),
                                      docs.get(f.name, "")))
        sections.append((prefix.rstrip("."), cls, keys))
        for kind, value, name in nested:
            walk(kind, value, f"{name}.")

    walk(TrainConfig, TrainConfig(), "")
    return sections


ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|obj):`~?([^`]+)`")


def markdown_text(doc: str) -> str:
    """reST-flavoured docstring text as Markdown: roles and double backticks as code spans."""
    return ROLE.sub(r"`\1`", doc).replace("``", "`")


def table_cell(text: str) -> str:
    return " ".join(markdown_text(text).split()).replace("|", "\\|")


def config_reference() -> str:
    """The config reference page (Markdown)."""
    lines = [
        "# Config reference",
        "",
        "Every key of an `rltf train` / `rltf sft` config, generated from the config dataclasses when the docs are",
        "built, with the default the embedded default run uses. Set a key in a YAML config (`--config FILE`, a",
        "mapping of sections) or on the command line as `section.key=value` (the value is YAML: `true`, `3e-6`,",
        "`null`, `[a, b]`); a misspelt key or a value of the wrong type is an error that names the nearest key.",
        "The shipped configs are in [`src/rltf/configs/`](../../src/rltf/configs/).",
    ]
    for name, cls, keys in config_sections():
        lines += ["", f"## {name or 'Top level'}", "", f"`{cls.__module__}.{cls.__qualname__}`", ""]
        doc = inspect.getdoc(cls) or ""
        if doc and not doc.startswith(f"{cls.__name__}("):  # dataclasses invent a signature for undocumented ones
            lines += [markdown_text(doc), ""]
        if keys:
            lines += ["| key | type | default | what it does |", "|---|---|---|---|"]
            lines += [f"| `{k.key}` | {table_cell(k.type)} | `{table_cell(k.default)}` | {table_cell(k.doc)} |"
                      for k in keys]
    return "\n".join(lines) + "\n"


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, CONFIG_PAGE, content=config_reference()))
    return files


# --------------------------------------------------------------------------- links into the repository

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")


def repo_links(markdown: str, page_dir: Path, docs_dir: Path, repo_url: str | None, page: str) -> str:
    """Links that leave ``docs_dir`` for a file of the repository: checked, then pointed at ``repo_url``."""

    def rewrite(match: re.Match) -> str:
        text, target = match.groups()
        if re.match(r"[a-z]+:", target) or target.startswith(("#", "/")):
            return match[0]
        path = (page_dir / target.split("#")[0]).resolve()
        if path.is_relative_to(docs_dir):
            return match[0]
        if not path.is_relative_to(REPO) or not path.exists():
            log.warning("%s links to %s, which is not a file of the repository", page, target)
            return match[0]
        if not repo_url:
            return text
        kind = "tree" if path.is_dir() else "blob"
        return f"[{text}]({repo_url.rstrip('/')}/{kind}/HEAD/{path.relative_to(REPO).as_posix()})"

    pieces, last = [], 0
    for fence in FENCE.finditer(markdown):  # code blocks stay as written
        pieces += [LINK.sub(rewrite, markdown[last:fence.start()]), fence[0]]
        last = fence.end()
    return "".join([*pieces, LINK.sub(rewrite, markdown[last:])])


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    page_dir = (docs_dir / page.file.src_uri).parent
    return repo_links(markdown, page_dir, docs_dir, config.get("repo_url"), page.file.src_uri)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """mkdocstrings renders ``:func:`x``` as ``:func:<code>x</code>``: keep the code."""
    return re.sub(r":(?:func|class|mod|data|meth|attr|obj):(?=<code>)", "", html)


if __name__ == "__main__":
    print(config_reference(), end="")
