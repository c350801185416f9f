"""The docs stay true to the repository and to the command line (issue 19).

README.md and docs/**/*.md are checked for:

- links: every relative link resolves to a file or folder of the repository, and a ``#anchor``
  names a heading of the linked Markdown file (GitHub's slugs);
- commands: every ``trtforge ...`` command line they show (in fenced code blocks, also after
  ``$ ``, ``&&``, ``|``, ``;`` or inside ``$(...)``, after ``VAR=value`` assignments and in CI
  ``run:`` lines; and in inline code spans that start with ``trtforge ``, with a command name and
  a flag, such as ``lookup --explain``, or with a group and a word, such as ``cache export``)
  names an existing command or subcommand of the real Typer app and only options that command
  accepts.

Placeholders (``<artifact-id>``, ``RECIPE``, ``...``), optional parts in brackets
(``[--dry-run]``, ``[--embed | --external]``), shell comments, redirections and line
continuations are understood; option values are not checked.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import typer
import typer.main

from tests.conftest import REPO

README = REPO / "README.md"
DOC_FILES = [README, *sorted((REPO / "docs").rglob("*.md"))]
README_MAX_LINES = 250  # issue 19: the front door a newcomer reads in five minutes


def _doc_id(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# ---------------------------------------------------------------------------------------------
# Markdown: code blocks, prose, headings, links


@dataclass(frozen=True)
class Line:
    number: int
    text: str


@dataclass(frozen=True)
class Markdown:
    code: list[Line]  # lines inside fenced code blocks
    prose: list[list[Line]]  # runs of consecutive lines outside them


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


def parse_markdown(text: str) -> Markdown:
    code: list[Line] = []
    prose: list[list[Line]] = [[]]
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence = match.group(1)
                prose.append([])
            else:
                prose[-1].append(Line(number, line))
        elif (
            match
            and match.group(1)[0] == fence[0]
            and len(match.group(1)) >= len(fence)
            and not line.strip(fence[0] + " \t")
        ):
            fence = None
        else:
            code.append(Line(number, line))
    return Markdown(code, [run for run in prose if run])


_INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)


def inline_code_spans(run: list[Line]) -> Iterator[tuple[int, str]]:
    """(line number, content) of each inline code span in a run of prose lines (spans may wrap)."""
    text = "\n".join(line.text for line in run)
    for match in _INLINE_CODE.finditer(text):
        number = run[0].number + text.count("\n", 0, match.start())
        yield number, " ".join(match.group(2).split())


def without_inline_code(run: list[Line]) -> str:
    """The prose text with inline code spans blanked (keeping line breaks), so `[x](y)` in code is no link."""
    text = "\n".join(line.text for line in run)
    return _INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def heading_anchors(markdown: Markdown) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for run in markdown.prose:
        for line in run:
            match = _HEADING.match(line.text)
            if not match:
                continue
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def links(markdown: Markdown) -> Iterator[tuple[int, str]]:
    for run in markdown.prose:
        text = without_inline_code(run)
        for pattern in (_LINK, _REFERENCE):
            for match in pattern.finditer(text):
                yield run[0].number + text.count("\n", 0, match.start()), match.group(1)


def link_problems(path: Path) -> list[str]:
    markdown = parse_markdown(path.read_text(encoding="utf-8"))
    problems = []
    for number, target in links(markdown):
        where = f"{_doc_id(path)}:{number}: link {target!r}"
        if _SCHEME.match(target):
            continue  # https:, mailto: ...: not this repository's business
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.is_relative_to(REPO):
            problems.append(f"{where} leaves the repository")
            continue
        if not linked.exists():
            problems.append(f"{where}: {linked.relative_to(REPO)} does not exist")
            continue
        if anchor:
            if linked.suffix != ".md" or not linked.is_file():
                problems.append(f"{where}: an anchor into something that is not a Markdown file")
                continue
            anchors = heading_anchors(parse_markdown(linked.read_text(encoding="utf-8")))
            if unquote(anchor) not in anchors:
                problems.append(f"{where}: no heading #{anchor} in {linked.relative_to(REPO)}")
    return problems


# ---------------------------------------------------------------------------------------------
# Command lines shown in the docs


@dataclass(frozen=True)
class Shown:
    """One command line as the docs show it, and where."""

    where: str
    text: str
    shorthand: bool = False  # an inline span without the leading `trtforge`, e.g. `lookup --explain`


_TRTFORGE_WORD = re.compile(r"(?<![\w./:@+-])trtforge(?![\w.-])")
_CI_RUN = re.compile(r"^\s*(?:-\s+)?run:\s*")
_PROMPT = re.compile(r"^\s*\$\s+")


def shown_commands(path: Path, command_names: set[str], group_names: set[str]) -> Iterator[Shown]:
    markdown = parse_markdown(path.read_text(encoding="utf-8"))
    pending: list[str] = []
    start = 0
    for line in markdown.code:  # fenced code: join `\` continuations, then every line naming trtforge
        if not pending:
            start = line.number
        if line.text.rstrip().endswith("\\"):
            pending.append(line.text.rstrip()[:-1])
            continue
        text = " ".join([*pending, line.text])
        pending = []
        if _TRTFORGE_WORD.search(text):
            yield Shown(f"{_doc_id(path)}:{start}", _PROMPT.sub("", _CI_RUN.sub("", text)))
    for run in markdown.prose:
        for number, span in inline_code_spans(run):
            words = span.split()
            if span.startswith("trtforge ") or span == "trtforge":
                yield Shown(f"{_doc_id(path)}:{number}", span)
            elif words and (
                (words[0] in command_names and any(w.lstrip("[").startswith("-") for w in words[1:]))
                or (words[0] in group_names and len(words) > 1)
            ):
                yield Shown(f"{_doc_id(path)}:{number}", "trtforge " + span, shorthand=True)


_PLACEHOLDER = re.compile(r"<[A-Za-z0-9][^<>]*>")  # <artifact-id>, <64 hex>
_CI_EXPRESSION = re.compile(r"\$\{\{.*?\}\}")  # ${{ matrix.gpu }}
_SEPARATORS = {"&&", "||", "|", ";", "&"}
_REDIRECTS = {">", ">>", "<", ">&", "<<", "<<<"}


def shell_tokens(text: str) -> list[str]:
    text = _CI_EXPRESSION.sub("X", _PLACEHOLDER.sub("PLACEHOLDER", text))
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # split on blanks and shell punctuation only; '#' starts a comment
    tokens: list[str] = []
    depth = 0  # inside [optional parts]: `|` separates alternatives, not piped commands
    for token in lexer:
        while token.startswith("[") and len(token) > 1 and token[1] in "-[.":
            depth, token = depth + 1, token[1:]
        while depth and token.endswith("]"):
            depth, token = depth - 1, token[:-1]
        if token == "|" and depth:
            continue
        if token == "[...]" or token == "...":
            continue
        if token:
            tokens.append(token)
    return tokens


def simple_commands(tokens: list[str]) -> Iterator[list[str]]:
    """The simple commands of a tokenized line: split at separators, `$(...)` and `(...)` taken
    out as commands of their own (and left as one word where they stood)."""
    current: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "(":
            depth, j = 1, i + 1
            while j < len(tokens) and depth:
                depth += {"(": 1, ")": -1}.get(tokens[j], 0)
                j += 1
            yield from simple_commands(tokens[i + 1 : j - 1])
            if current and current[-1] == "$":
                current[-1] = "SUBSTITUTION"
            i = j
            continue
        if token in _SEPARATORS or token == ")":
            if current:
                yield current
            current = []
        elif token in _REDIRECTS:
            if current and current[-1].isdigit():
                current.pop()  # 2> file
            i += 1  # the file name
        else:
            current.append(token)
        i += 1
    if current:
        yield current


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def trtforge_arguments(words: list[str]) -> list[str] | None:
    """The words after `trtforge` when this simple command runs trtforge, else None."""
    while words and _ASSIGNMENT.match(words[0]):
        words = words[1:]
    if words[:1] == ["trtforge"]:
        return words[1:]
    if len(words) >= 3 and words[0] in ("python", "python3") and words[1:3] == ["-m", "trtforge"]:
        return words[3:]
    return None


def _options(command: Any, ctx: Any) -> dict[str, Any]:
    table = {}
    for param in command.params:
        if param.param_type_name == "option":
            for name in (*param.opts, *param.secondary_opts):
                table[name] = param
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        for name in help_option.opts:
            table[name] = help_option
    return table


def _max_arguments(command: Any) -> float:
    return sum(
        math.inf if param.nargs < 0 else param.nargs for param in command.params if param.param_type_name == "argument"
    )


def _is_group(command: Any) -> bool:
    return hasattr(command, "list_commands")


def command_problems(arguments: list[str], root: Any) -> list[str]:
    """What is wrong with `trtforge ARGUMENTS` for the real command tree (empty when nothing)."""
    command, ctx, path = root, typer.Context(root, info_name="trtforge"), ["trtforge"]
    options = _options(command, ctx)
    positional = 0
    problems = []
    i = 0
    while i < len(arguments):
        word = arguments[i]
        i += 1
        if word.startswith("-") and len(word) > 1 and word != "--":
            name, has_value, _ = word.partition("=") if word.startswith("--") else (word, "", "")
            param = options.get(name)
            if param is None:
                problems.append(f"`{' '.join(path)}` has no option {name}")
                continue
            takes_value = not (getattr(param, "is_flag", False) or getattr(param, "count", False))
            if has_value and not takes_value:
                problems.append(f"`{' '.join(path)}` option {name} takes no value")
            if takes_value and not has_value and i < len(arguments) and arguments[i] not in options:
                i += 1  # its value (a shorthand may list options without values: `--flavor --trt`)
            continue
        if _is_group(command):
            sub = command.get_command(ctx, word)
            if sub is None:
                problems.append(f"`{' '.join(path)}` has no command {word!r}")
                break
            command, ctx = sub, typer.Context(sub, parent=ctx, info_name=word)
            path.append(word)
            options, positional = _options(command, ctx), 0
            continue
        positional += 1
        if positional > _max_arguments(command):
            problems.append(f"`{' '.join(path)}` takes no argument {word!r} here")
    return problems


@pytest.fixture(scope="module")
def root_command() -> Any:
    from trtforge.cli import app

    return typer.main.get_command(app)


@pytest.fixture(scope="module")
def command_names(root_command: Any) -> set[str]:
    return set(root_command.list_commands(typer.Context(root_command, info_name="trtforge")))


@pytest.fixture(scope="module")
def group_names(root_command: Any, command_names: set[str]) -> set[str]:
    ctx = typer.Context(root_command, info_name="trtforge")
    return {name for name in command_names if _is_group(root_command.get_command(ctx, name))}


def shown_problems(shown: Shown, root: Any) -> tuple[int, list[str]]:
    """(how many trtforge invocations the line holds, the problems found in them)."""
    try:
        tokens = shell_tokens(shown.text)
    except ValueError as error:
        return 0, [f"{shown.where}: cannot read {shown.text!r} as a command line ({error})"]
    count, problems = 0, []
    for words in simple_commands(tokens):
        arguments = trtforge_arguments(words)
        if arguments is None:
            continue
        count += 1
        problems += [
            f"{shown.where}: {problem}  [{shown.text.strip()}]" for problem in command_problems(arguments, root)
        ]
    return count, problems


# ---------------------------------------------------------------------------------------------
# The tests


@pytest.mark.parametrize("path", DOC_FILES, ids=_doc_id)
def test_relative_links_resolve(path: Path) -> None:
    assert link_problems(path) == []


@pytest.mark.parametrize("path", DOC_FILES, ids=_doc_id)
def test_commands_shown_exist_with_their_options(
    path: Path, root_command: Any, command_names: set[str], group_names: set[str]
) -> None:
    problems = []
    for shown in shown_commands(path, command_names, group_names):
        problems += shown_problems(shown, root_command)[1]
    assert problems == []


def test_every_docs_page_is_linked_from_the_index() -> None:
    index = REPO / "docs" / "README.md"
    linked = {
        (index.parent / target.partition("#")[0]).resolve()
        for _, target in links(parse_markdown(index.read_text(encoding="utf-8")))
    }
    missing = [_doc_id(page) for page in DOC_FILES if page.parent == index.parent and page != index]
    assert [page for page in missing if (REPO / page).resolve() not in linked] == []


def test_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "pip install -e '.[rtx]' && trtforge build recipes/example.yaml" in text
    assert "pip install -e '.[rtx,test]' && python -m pytest -q" in text


def test_the_checks_find_what_they_should(root_command: Any, command_names: set[str], group_names: set[str]) -> None:
    """The extraction finds the commands the docs show (so an empty scan cannot pass), and the
    checker refuses what the real command line refuses."""
    assert group_names == {"cache", "denylist", "deploy"}
    found = [shown for path in DOC_FILES for shown in shown_commands(path, command_names, group_names)]
    invocations = sum(shown_problems(shown, root_command)[0] for shown in found)
    assert invocations >= 100
    texts = "\n".join(shown.text for shown in found)
    for expected in ("trtforge cache export", "trtforge deploy triton", "trtforge denylist derive", "$(trtforge list"):
        assert expected in texts

    def problems(line: str) -> list[str]:
        return shown_problems(Shown("x", line), root_command)[1]

    for good in (
        "trtforge build recipes/example.yaml --json",
        "TRTFORGE_STORE=/srv/x trtforge lookup example-cnn --cc=8.6 --trt 10.13.3 -o out.plan  # a comment",
        "trtforge export $(trtforge list --name a --json | jq -r '.[].artifact_id') -o e.tar --sign k.pem",
        "trtforge deploy epcontext <artifact-id> -o out.onnx [--embed | --external]",
        "trtforge cache prune --keep 1 [--dry-run]",
        "trtforge --version",
        "trtforge --install-completion",
        "trtforge gc --help",
        "python -m trtforge doctor --json > doctor.json",
        "trtforge lookup NAME --flavor --trt --cc --json",
    ):
        assert problems(good) == [], good
    for bad, why in (
        ("trtforge build recipes/example.yaml --no-such-flag", "has no option --no-such-flag"),
        ("trtforge cache nonsense", "has no command 'nonsense'"),
        ("trtforge frobnicate", "has no command 'frobnicate'"),
        ("echo x && trtforge gc --keep 3", "has no option --keep"),
        ("trtforge export $(trtforge list --bogus) -o e.tar", "`trtforge list` has no option --bogus"),
        ("trtforge build --force=yes x.yaml", "option --force takes no value"),
        ("trtforge doctor extra", "takes no argument 'extra'"),
        ("A=1 trtforge deploy triton name -o repo --embed", "has no option --embed"),
        ("trtforge deploy triton repo name -o repo", "takes no argument 'name'"),
    ):
        found_problems = problems(bad)
        assert any(why in problem for problem in found_problems), (bad, found_problems)


def test_the_module_map_lists_every_module() -> None:
    """docs/architecture.md has one line per module of each layer folder, and no module that is gone."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed: dict[str, set[str]] = {}
    folder = None
    for line in text.splitlines():
        heading = re.match(r"^\*\*(\w+)/\*\*", line)
        if heading:
            folder = heading.group(1)
            listed[folder] = set()
        elif folder and line.startswith("- "):
            listed[folder] |= set(re.findall(r"`(\w+\.py|\w+/)`", line))
        elif folder and line.startswith("#"):
            folder = None
    package = REPO / "trtforge"
    folders = {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert set(listed) == folders
    for name, modules in listed.items():
        present = {
            p.name + ("/" if p.is_dir() else "")
            for p in (package / name).iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").exists())
        }
        if "__init__.py" not in modules:  # a folder's own face is described in the folder table
            present.discard("__init__.py")
        assert modules == present, name


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Which engine runs here: `lookup`", "which-engine-runs-here-lookup"),
        ("Team setup: one PostgreSQL, one bucket, N CI runners", "team-setup-one-postgresql-one-bucket-n-ci-runners"),
        ("Private copies: `--output`", "private-copies---output"),
        ("Exit codes and `--json`", "exit-codes-and---json"),
        ("The daily paths (issue 16), before and after", "the-daily-paths-issue-16-before-and-after"),
    ],
)
def test_github_slugs(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug
