"""Roget's categories from PyRoget's data files: plain pickled dicts, read without running any code."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import pytest

from bertonnx.benchmarks.roget import Category, categories, read_data, relatedness


def _write(folder: Path, name: str, data: object) -> None:
    (folder / name).write_bytes(pickle.dumps(data, protocol=0))


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """A three-category Roget in PyRoget's layout: class A holds section 1 (categories 1, 2); class B category 3."""
    _write(tmp_path, "thes_dict.txt", {
        "being": ["cat0001"], "entity": ["cat0001"], "exist": ["cat0001", "cat0001"], "Existence": ["cat0001"],
        "matter of fact": ["cat0001"], "state": ["cat0001", "cat0002"], "nothing": ["cat0002"],
        "void": ["cat0002"], "reason": ["cat0003"], "self-evident": ["cat0003"],
    })
    _write(tmp_path, "full_childparent.txt", {"cat0001": "a", "a": "1", "cat0002": "1", "1": "A", "A": "0",
                                              "cat0003": "B", "B": "0"})
    _write(tmp_path, "num_cat.txt", {"cat0001": "EXISTENCE", "cat0002": "INEXISTENCE", "cat0003": "REASONING"})
    return tmp_path


def test_categories_keep_single_lowercase_words_of_one_category(data: Path) -> None:
    found = categories(data)
    assert [c.code for c in found] == ["cat0001", "cat0002", "cat0003"]
    assert found[0] == Category("cat0001", "EXISTENCE", ("A", "1", "a", "cat0001"), ("being", "entity", "exist"))
    assert found[1].words == ("nothing", "void")  # "state" is in two categories: left out
    assert found[2].words == ("reason",) and found[2].path == ("B", "cat0003")


def test_relatedness_steps(data: Path) -> None:
    one, two, three = categories(data)
    assert relatedness(one, one) == 3
    assert relatedness(one, two) == 2  # class A, section 1
    assert relatedness(one, three) == 0
    assert relatedness(one, Category("cat0009", "X", ("A", "2", "cat0009"), ())) == 1


def test_a_class_in_the_data_is_refused_not_imported(tmp_path: Path) -> None:
    _write(tmp_path, "thes_dict.txt", OrderedDict(word=["cat0001"]))
    with pytest.raises(pickle.UnpicklingError, match="refused collections.OrderedDict"):
        read_data(tmp_path / "thes_dict.txt")
