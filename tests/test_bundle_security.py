"""Bundle security: a bundle is data. Loading it runs no code from it, and its paths stay inside it.

Resumed chunks are data too, and a scan of every engine/ module finds no way to run code from data.
"""

from __future__ import annotations

import ast
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.bundles import reseal

from bertonnx import BundleError, Embedder, ProviderError, load_bundle
from bertonnx.io.sinks import partial_dir, read_vectors
from bertonnx.jobs.bulk import BulkOptions, embed_file

ENGINE = Path(__file__).resolve().parents[1] / "engine"
CODE_LOADERS = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
CODE_RUNNERS = {"eval", "exec", "compile", "__import__", "torch.load", "yaml.load", "yaml.unsafe_load"}


class Payload:
    """Unpickling this creates `marker`: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def booby_trapped_npy(path: Path, marker: Path) -> Path:
    np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    return path


def test_the_trap_is_live(tmp_path: Path) -> None:
    """The payload really runs when something unpickles it, so the tests below mean something."""
    marker = tmp_path / "ran"
    np.load(booby_trapped_npy(tmp_path / "trap.npy", marker), allow_pickle=True)
    assert marker.exists()


def test_a_pickled_table_never_runs(bundle_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    booby_trapped_npy(bundle_copy / "static_table.npy", marker)
    reseal(bundle_copy, "static_table.npy")  # checksums cannot help: the attacker wrote the manifest too
    with pytest.raises(BundleError, match=r"static_table\.npy: not a plain numpy array"):
        Embedder.load(bundle_copy, provider="cpu")
    assert not marker.exists()


class Stop(Exception):
    """Raised from a progress callback: the job stops as if killed between chunks."""


def stop_after(lines: int) -> Callable[[int, int], None]:
    def progress(done_bytes: int, done_lines: int) -> None:
        if done_lines >= lines:
            raise Stop

    return progress


def test_a_pickled_part_in_a_work_directory_never_runs(tiny_bundle: Path, tmp_path: Path) -> None:
    """A resumed job reads the parts it finds next to the output: they are data, checked against their checkpoints."""
    embedder = Embedder.load(tiny_bundle, provider="cpu", threads=1)
    source = tmp_path / "words.txt"
    source.write_text("king\nqueen\nman\n")
    out = tmp_path / "out.npy"
    options = BulkOptions(mode="static", chunk_lines=1)
    with pytest.raises(Stop):
        embed_file(embedder, source, out, options, progress=stop_after(2))
    marker = tmp_path / "ran"
    booby_trapped_npy(partial_dir(out) / "vectors.npy", marker)
    refused = r"vectors\.npy: (expected at least|bytes .* are not what the job wrote).*; start over with force=True"
    with pytest.raises(ValueError, match=refused):
        embed_file(embedder, source, out, options, resume=True)
    assert not marker.exists() and not out.exists()


def test_nothing_is_ever_unpickled(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Load, embed every way, write and read every output format, resume: pickle is never asked."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("something tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    embedder = Embedder.load(tiny_bundle, provider="cpu", threads=1)
    embedder.static(["king", "🙂"], unknown="unk")
    embedder.contextual(["the king is wise", ["a", "queen"]])
    embedder.sentences(["the king is wise"])
    source = tmp_path / "words.txt"
    source.write_text("king\nqueen\n")
    for suffix in (".npy", ".npz", ".txt", ".bin", ".jsonl"):
        out = tmp_path / f"out{suffix}"
        embed_file(embedder, source, out, BulkOptions(mode="static"), resume=True)
        assert read_vectors(out)[0] == ["king", "queen"]


def test_a_symlink_out_of_the_bundle_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    """A file swapped for a link to an identical copy elsewhere passes every checksum, yet is refused."""
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle_copy / "model.onnx", outside)
    (bundle_copy / "model.onnx").unlink()
    (bundle_copy / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match=r"manifest\.json: file name 'model\.onnx' points outside the bundle"):
        load_bundle(bundle_copy)


def test_a_bundle_reached_through_a_symlink_still_loads(tiny_bundle: Path, tmp_path: Path) -> None:
    link = tmp_path / "linked-bundle"
    link.symlink_to(tiny_bundle, target_is_directory=True)
    assert load_bundle(link).path == tiny_bundle.resolve()


def test_onnx_external_data_outside_the_bundle_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    """An ONNX graph may name files for its weights; ONNX Runtime refuses any outside the model's folder."""
    onnx = pytest.importorskip("onnx")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    weight = onnx.numpy_helper.from_array(np.ones(4, np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    for key, value in {"location": "../secret.bin", "offset": "0", "length": "16"}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])], [weight],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    (bundle_copy / "model.onnx").write_bytes(model.SerializeToString())
    reseal(bundle_copy, "model.onnx")
    with pytest.raises(ProviderError, match=r"model\.onnx: ONNX Runtime cannot load it.*escapes model directory"):
        Embedder.load(bundle_copy, provider="cpu")


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


@pytest.mark.parametrize("path", sorted(ENGINE.rglob("*.py")), ids=lambda path: str(path.relative_to(ENGINE)))
def test_the_runtime_has_no_way_to_run_code_from_data(path: Path) -> None:
    """No pickle-like module, no eval/exec/unsafe loaders, and every np.load says allow_pickle=False."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            assert not {alias.name.split(".")[0] for alias in node.names} & CODE_LOADERS, ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in CODE_LOADERS, ast.unparse(node)
        elif isinstance(node, ast.Call):
            name = dotted(node.func)
            assert name not in CODE_RUNNERS, f"{path.name}:{node.lineno}: {ast.unparse(node)}"
            if name in ("np.load", "numpy.load"):
                safe = [k for k in node.keywords if k.arg == "allow_pickle" and getattr(k.value, "value", 0) is False]
                assert safe, f"{path.name}:{node.lineno}: np.load without allow_pickle=False"
