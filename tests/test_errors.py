"""Errors name the argument that would fix them, and carry that remedy as data."""

from __future__ import annotations

import pickle

import pytest

from bertonnx.errors import BertonnxError, Fix, OutputError, UnknownWordError


def test_a_library_message_names_the_argument() -> None:
    error = OutputError("out.npy exists; {force} replaces it", force=True)
    assert str(error) == "out.npy exists; force=True replaces it"
    assert error.fixes == (Fix("force", True),)


@pytest.mark.parametrize(
    "fix,worded",
    [
        (Fix("force"), "force=True"),
        (Fix("precision", "fp32"), "precision='fp32'"),
        (Fix("unknown", ("unk", "zero")), "unknown='unk' or 'zero'"),
        (Fix("min_fidelity", ...), "min_fidelity"),
        (Fix("min_cosine", 0.5), "min_cosine=0.5"),
    ],
)
def test_each_kind_of_fix_reads_as_a_keyword(fix: Fix, worded: str) -> None:
    assert fix.as_argument() == worded


def test_render_words_the_fixes_another_way_and_leaves_other_braces() -> None:
    error = UnknownWordError("word 0 ('{x}') maps to the unknown token; pass {unknown}", unknown=("unk", "zero"))
    assert error.render(lambda fix: f"<{fix.argument}>") == "word 0 ('{x}') maps to the unknown token; pass <unknown>"
    assert str(BertonnxError("a {placeholder} without a fix stays")) == "a {placeholder} without a fix stays"


def test_an_error_keeps_its_fixes_across_processes() -> None:
    error = pickle.loads(pickle.dumps(OutputError("{resume} continues it", resume=True)))
    assert type(error) is OutputError and str(error) == "resume=True continues it"
    assert error.fixes == (Fix("resume", True),)
