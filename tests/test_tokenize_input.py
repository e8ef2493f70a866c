"""bertonnx.tokenize: inputs it cannot take (not strings, not valid Unicode) are named by position."""

from __future__ import annotations

import pytest

from bertonnx import Embedder


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda e: e.static(["king", 7]), TypeError, "word 1 is int; expected str"),
        (lambda e: e.static(["king", None]), TypeError, "word 1 is NoneType; expected str"),
        (lambda e: e.static(["ki\udcffng"]), ValueError, "word 0 is not valid Unicode"),
        (lambda e: e.contextual(["king", None]), TypeError, "text 1 is NoneType; expected a str or a list of words"),
        (lambda e: e.contextual([b"king"]), TypeError, "text 0 is bytes; expected a str or a list of words"),
        (lambda e: e.contextual([["king", 3]]), TypeError, "text 0: word 1 is int; expected str"),
        (lambda e: e.contextual(["ki\udcffng"]), ValueError, "text 0 is not valid Unicode"),
        (lambda e: e.sentences(["a", "\ud800"]), ValueError, "text 1 is not valid Unicode"),
    ],
    ids=["int word", "None word", "lone surrogate word", "None text", "bytes text", "int in word list",
         "lone surrogate text", "lone surrogate sentence"],
)
def test_inputs_the_tokenizer_cannot_take_are_named(tiny: Embedder, call, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call(tiny)
