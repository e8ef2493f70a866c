"""Input paths from the command line: paths and globs -> the files, one expander for every job that reads several."""

from __future__ import annotations

from collections.abc import Sequence
from glob import glob, has_magic
from pathlib import Path


def expand_paths(patterns: Sequence[str | Path], what: str = "input") -> list[Path]:
    """Paths and globs -> the files they name, each once, in the order given; a glob's matches sorted.

    A file's position in this list may be its id in the output (a Ray job's `file`), so the order is stable.
    A glob takes `**` for any depth of folders. `what` names the files in messages ("corpus": "no such
    corpus file").

    Raises:
        FileNotFoundError: a path that is no file (a folder names the glob to give instead), or a glob that
            matches no file.
    """
    found: dict[Path, None] = {}
    for pattern in map(str, patterns):
        if has_magic(pattern):
            files = [Path(match) for match in sorted(glob(pattern, recursive=True)) if Path(match).is_file()]
            if not files:
                raise FileNotFoundError(f"{pattern}: no file matches this glob")
        else:
            files = [check_file(Path(pattern), what)]
        found.update(dict.fromkeys(files))
    return list(found)


def check_file(path: Path, what: str = "input") -> Path:
    """`path`, once it is a file.

    Raises:
        FileNotFoundError: no such file, or a folder (the message names the glob to give instead).
    """
    if path.is_dir():
        raise FileNotFoundError(f"{path}: a directory, not a {what} file (give a glob such as '{path}/*.txt')")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    return path
