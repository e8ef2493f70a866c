"""bertonnx.io.keys: every key survives the escapes of a keys file and of a word2vec token."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bertonnx.io.keys import escape_line, escape_token, key_lines, read_keys, unescape_key


@given(st.text())
def test_escapes_round_trip(key: str) -> None:
    token, line = escape_token(key), escape_line(key)
    assert unescape_key(token) == key and unescape_key(line) == key
    assert not any(char.isspace() for char in token)
    assert "\n" not in line and "\r" not in line


def test_escapes_are_readable() -> None:
    assert escape_token("new york\tcafé\\") == "new\\syork\\tcafé\\\\"
    assert escape_token("a\u3000b") == "a\\u3000b"
    assert escape_line("a b\nc") == "a b\\nc"


@pytest.mark.parametrize("text", ["bad\\q", "trailing\\", "short\\u12"])
def test_unescape_refuses_malformed_keys(text: str) -> None:
    with pytest.raises(ValueError, match="bad escape"):
        unescape_key(text)


def test_a_keys_file_reads_back_and_must_end_with_a_newline(tmp_path: Path) -> None:
    keys = ["king", "line\nbreak", "", "back\\slash"]
    (tmp_path / "keys.txt").write_bytes(key_lines(keys))
    assert read_keys(tmp_path / "keys.txt") == keys
    (tmp_path / "cut.txt").write_bytes(key_lines(keys)[:-1])
    with pytest.raises(ValueError, match="expected a newline after the last key"):
        read_keys(tmp_path / "cut.txt")
