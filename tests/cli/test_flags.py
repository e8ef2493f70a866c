"""The CLI words a library error's fixes as its own flags."""

from __future__ import annotations

import pytest

from bertonnx.cli.console import as_flag, one_line
from bertonnx.errors import Fix, OutputError


@pytest.mark.parametrize(
    "fix,flag",
    [
        (Fix("force"), "--force"),
        (Fix("on_error", "skip"), "--on-error skip"),
        (Fix("unknown", ("unk", "zero")), "--unknown unk|zero"),
        (Fix("min_fidelity", ...), "--min-fidelity"),
        (Fix("spin", False), "--no-spin"),
        (Fix("mode", "static"), "--static"),
    ],
)
def test_a_fix_reads_as_its_flag(fix: Fix, flag: str) -> None:
    assert as_flag(fix) == flag


def test_one_line_renders_flags_where_the_library_says_arguments() -> None:
    error = OutputError("out.npy exists; {force} replaces it", force=True)
    assert one_line(error) == "out.npy exists; --force replaces it"
    assert str(error) == "out.npy exists; force=True replaces it"
