"""The study's files: contexts read from JSON or YAML, results written as study.json and heatmaps (plots.py).

The computation is bertonnx.study.compute; this module is its input and output, so the
study runs (and is tested) without pyyaml or matplotlib installed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bertonnx.errors import InputError, OptionError, missing_extra
from bertonnx.study.compute import METRICS, StudyResult, check_contexts
from bertonnx.study.plots import plot_heatmaps

JSON_FILE = "study.json"


def load_contexts(path: str | Path) -> dict[str, list[str]]:
    """Read word -> context sentences from a .json, .yaml or .yml file.

    Raises:
        ValueError: unknown suffix, not UTF-8, malformed JSON or YAML, or a wrong shape.
        OSError: the file cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise InputError(f"{path}: expected a .json, .yaml or .yml file of word -> context sentences")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text (byte {error.start} cannot be decoded)") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror})") from None
    if suffix == ".json":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(
                f"{path}: malformed JSON at line {error.lineno} column {error.colno}: {error.msg}"
            ) from None
    else:
        parsed = _parse_yaml(text, path)
    return check_contexts(parsed, str(path))


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError as error:
        raise missing_extra("reading YAML", "compare", error) from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InputError(f"{path}: malformed YAML{where}: {problem}") from None


def write_outputs(result: StudyResult, out_dir: str | Path, metrics: Sequence[str] = METRICS) -> list[Path]:
    """Write `<metric>.png` per metric (a heatmap panel per kind) and study.json (every number).

    Returns:
        The files written, figures first.
    """
    unknown = [metric for metric in metrics if metric not in METRICS]
    if unknown or not metrics:
        raise OptionError(f"unknown metrics {unknown}; expected some of {', '.join(METRICS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_heatmaps(result, metric, out_dir / f"{metric}.png") for metric in metrics]
    json_path = out_dir / JSON_FILE
    json_path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return [*written, json_path]
