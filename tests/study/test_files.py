"""The study's files: contexts read from disk, heatmaps laid out."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.cli import one_line_error, run

from bertonnx.errors import InputError
from bertonnx.study.files import load_contexts
from bertonnx.study.plots import grid_shape


@pytest.mark.parametrize(
    "panels,shape", [(1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (4, (2, 2)), (5, (2, 3)), (6, (2, 3)), (7, (3, 3))]
)
def test_panels_fill_rows_as_evenly_as_they_can(panels: int, shape: tuple[int, int]) -> None:
    rows, columns = grid_shape(panels)
    assert (rows, columns) == shape and rows * columns >= panels > (rows - 1) * columns


def test_a_missing_contexts_file_is_named_without_an_errno(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.yaml: no such file$") as raised:
        load_contexts(tmp_path / "missing.yaml")
    assert "Errno" not in str(raised.value)


def test_a_contexts_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "contexts.json"
    folder.mkdir()
    with pytest.raises(InputError, match=r"contexts\.json: cannot be read \(Is a directory\)"):
        load_contexts(folder)


def test_the_cli_names_a_missing_contexts_file_in_one_line(tiny_bundle: Path, tmp_path: Path) -> None:
    result = run("compare", str(tiny_bundle), "--contexts", str(tmp_path / "missing.yaml"), "--out",
                 str(tmp_path / "study"))
    one_line_error(result, "missing.yaml: no such file")
