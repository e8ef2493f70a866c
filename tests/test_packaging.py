"""The wheel a user builds from a clone installs with [cpu] into a fresh venv, without torch, and runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # builds a wheel and installs it into a new venv: a minute or two


def test_the_wheel_installs_with_cpu_and_runs_info_and_embed(tiny_bundle: Path, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    wheels = list(dist.glob("bertonnx-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"),
                                f"{wheels[0]}[cpu]"], capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    info = subprocess.run([str(venv / "bin" / "bertonnx"), "info", str(tiny_bundle)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "onnxruntime" in info.stdout
    embedded = subprocess.run([str(venv / "bin" / "bertonnx"), "embed", str(tiny_bundle), "--contextual"],
                              input="the king is wise\n", capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert embedded.returncode == 0, embedded.stderr
    assert len(embedded.stdout.splitlines()) == 4
    lean = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('torch'), "
                           "u.find_spec('transformers'))"], capture_output=True, text=True, timeout=60)
    assert lean.stdout.split() == ["None", "None"]  # the runtime installs neither
