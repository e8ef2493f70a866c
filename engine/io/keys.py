r"""Keys (the words or texts of rows) as lines of a file, or as one word2vec token.

A keys file holds one key per line, UTF-8, with backslash, LF and CR escaped
as `\\`, `\n`, `\r` (`escape_line`). A word2vec key must be one
whitespace-free token, so `escape_token` also escapes every whitespace
character: `\t`, `\s` (space), other whitespace (`str.isspace`) as `\uXXXX`;
"new york" is stored as `new\syork`. `unescape_key` undoes either.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from bertonnx.errors import OutputError

_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", " ": "\\s"}
_UNESCAPES = {escape[1]: char for char, escape in _NAMED_ESCAPES.items()}
_LINE_SPECIALS = re.compile(r"[\\\n\r]")
_TOKEN_SPECIALS = re.compile(r"[\\\s]")  # \s in a str pattern is exactly str.isspace()
_ESCAPE_SEQUENCE = re.compile(r"\\(u[0-9a-fA-F]{4}|.?)", re.DOTALL)


def escape_line(key: str) -> str:
    """Escape backslash, LF and CR, so that a key is exactly one line."""
    return _LINE_SPECIALS.sub(_escape_char, key)


def escape_token(key: str) -> str:
    """Escape backslash and all whitespace, so that a key is one word2vec token."""
    return _TOKEN_SPECIALS.sub(_escape_char, key)


def unescape_key(text: str) -> str:
    """Undo `escape_line` or `escape_token`."""
    return _ESCAPE_SEQUENCE.sub(lambda match: _unescape_sequence(match.group(1), text), text)


def key_lines(keys: Sequence[str]) -> bytes:
    """The bytes of a keys file holding `keys`."""
    return "".join(escape_line(key) + "\n" for key in keys).encode("utf-8")


def read_keys(path: Path | str) -> list[str]:
    """Read a keys file: one `escape_line`-escaped key per newline-terminated line."""
    text = Path(path).read_bytes().decode("utf-8")
    if text and not text.endswith("\n"):
        raise OutputError(f"{path}: expected a newline after the last key, found {text[-20:]!r}")
    return [unescape_key(line) for line in text.split("\n")[:-1]]


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _unescape_sequence(sequence: str, text: str) -> str:
    if sequence in _UNESCAPES:
        return _UNESCAPES[sequence]
    if len(sequence) == 5:  # uXXXX
        return chr(int(sequence[1:], 16))
    raise OutputError(
        f"bad escape '\\{sequence}' in key {text!r}; expected one of "
        f"{', '.join(_NAMED_ESCAPES.values())} or \\uXXXX"
    )
