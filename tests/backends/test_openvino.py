"""OpenVINO: the same vectors as ONNX Runtime at fp32, bf16 within its gate, threads, the cache, the faults."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bertonnx import BackendError, Embedder
from bertonnx.backends.choose import this_machine
from bertonnx.errors import FidelityGateError
from bertonnx.pooling import cosine_rows

pytest.importorskip("openvino")
NATIVE_BF16 = this_machine().native_bf16
TEXTS = ["the king is wise.", "how much is an apple music account ?", "the queen is one of the great bands in history",
         "a", "un ##able kingdom of apple"]


@pytest.fixture(scope="module")
def ort(tiny_bundle: Path) -> Embedder:
    return Embedder.load(tiny_bundle, backend="onnxruntime", threads=1)


@pytest.fixture(scope="module")
def ov(tiny_bundle: Path) -> Embedder:
    return Embedder.load(tiny_bundle, backend="openvino", precision="fp32", threads=1)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(cosine_rows(a, b).min())


def test_fp32_gives_onnxruntimes_vectors_at_word_and_sentence_level(ort: Embedder, ov: Embedder) -> None:
    assert ov.runtime()["backend"] == "openvino" and ov.runtime()["precision"] == "fp32"
    for mode in ("mean", "first", "max"):
        expected, found = ort.contextual(TEXTS, pooling=mode), ov.contextual(TEXTS, pooling=mode)
        assert [r.words for r in found] == [r.words for r in expected]
        assert min_cosine(np.concatenate([r.vectors for r in expected]),
                          np.concatenate([r.vectors for r in found])) >= 0.99999
    np.testing.assert_allclose(ov.sentences(TEXTS), ort.sentences(TEXTS), atol=2e-5)


def test_dynamic_shapes_long_texts_and_the_static_path(ort: Embedder, ov: Embedder) -> None:
    long_text = " ".join(["the king and queen rule the kingdom"] * 40)  # windows of the 64-position model
    for batch in ([long_text], TEXTS * 7, ["a"]):
        assert min_cosine(ov.sentences(batch), ort.sentences(batch)) >= 0.99999
    np.testing.assert_array_equal(ov.static(["king", "queen"]), ort.static(["king", "queen"]))


def test_a_text_alone_gets_the_bits_it_gets_merged_with_others(ov: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches are padded to 16 positions, a lone text's too: OpenVINO rounds differently at other widths, and
    the server merges requests, so a text must not change with its company."""
    widths: list[int] = []
    run = ov.backend.run

    def spy(output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        widths.append(feeds["input_ids"].shape[1])
        return run(output, feeds)

    monkeypatch.setattr(ov.backend, "run", spy)
    texts = ["the king is wise.", "a", "how much is an apple music account ?"]
    alone = np.concatenate([ov.sentences([text]) for text in texts])
    merged = ov.sentences(texts)
    assert widths and all(width % 16 == 0 for width in widths)
    np.testing.assert_array_equal(alone, merged)


def test_the_static_path_never_runs_the_graph(ov: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the static path ran the graph")

    monkeypatch.setattr(ov.backend, "run", refuse)
    assert ov.static(["king"]).shape == (1, ov.static_dim)


def test_eight_threads_sharing_one_embedder_match_serial_calls(ov: Embedder) -> None:
    batches = [TEXTS[i % len(TEXTS):] + TEXTS[: i % len(TEXTS)] for i in range(40)]
    serial = [ov.sentences(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        shared = list(pool.map(ov.sentences, batches))
    for one, other in zip(serial, shared):
        np.testing.assert_array_equal(one, other)


def test_many_batches_side_by_side_equal_one_at_a_time(tiny_bundle: Path, ov: Embedder) -> None:
    """Small token budgets make many batches: the throughput model runs them through an async queue."""
    streams = Embedder.load(tiny_bundle, backend="openvino", precision="fp32", threads=2, batch_tokens=48)
    texts = TEXTS * 9
    assert min_cosine(streams.sentences(texts), ov.sentences(texts)) >= 0.99999
    assert streams.stats.batches >= 4  # one call, several batches
    serial = [streams.sentences(texts[i:]) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        shared = list(pool.map(lambda i: streams.sentences(texts[i:]), range(8)))
    for one, other in zip(serial, shared):
        np.testing.assert_array_equal(one, other)


def test_threads_are_honoured(tiny_bundle: Path) -> None:
    assert Embedder.load(tiny_bundle, backend="openvino", precision="fp32", threads=2).runtime()["threads"] == 2


def test_compiled_models_are_cached_outside_the_bundle(tiny_bundle: Path, bertonnx_home: Path) -> None:
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tiny_bundle.iterdir())
    first = Embedder.load(tiny_bundle, backend="openvino", precision="fp32", threads=1).runtime()
    again = Embedder.load(tiny_bundle, backend="openvino", precision="fp32", threads=1).runtime()
    cache = Path(str(again["cache"]))
    assert cache.is_relative_to(bertonnx_home) and any(cache.iterdir())
    assert again["loaded_from_cache"] is True
    # keyed by the graph's sha256, the OpenVINO version and the precision (the plugin's own key omits it)
    assert cache.parts[-4] == first["openvino"] and cache.parts[-2] == "fp32"
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tiny_bundle.iterdir()) == before


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")
def test_bf16_passes_its_gate_and_says_so(tiny_bundle: Path, ort: Embedder) -> None:
    bf16 = Embedder.load(tiny_bundle, backend="openvino", precision="bf16", threads=1)
    fidelity = bf16.runtime()["fidelity"]
    assert fidelity["precision"] == "bf16" and fidelity["passed"] is True
    assert fidelity["token_min_cosine"] >= 0.999 and fidelity["reference"] == "onnxruntime fp32"
    assert min_cosine(bf16.sentences(TEXTS), ort.sentences(TEXTS)) >= 0.999


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")
def test_a_precision_under_its_gate_is_refused_with_the_figure(tiny_bundle: Path) -> None:
    refused = r"bf16 is refused on this bundle: token min cosine [01]\.\d{5} .* gate 1\.1"
    with pytest.raises(FidelityGateError, match=refused):
        Embedder.load(tiny_bundle, backend="openvino", precision="bf16", min_fidelity=1.1)
    with pytest.warns(RuntimeWarning, match="running fp32"):  # auto never trades fidelity for speed
        fallback = Embedder.load(tiny_bundle, min_fidelity=1.1)
    assert fallback.runtime()["precision"] == "fp32"


def test_a_graph_openvino_cannot_read_names_the_file(tmp_path: Path) -> None:
    from bertonnx.backends.openvino import OpenVinoBackend

    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(BackendError, match=f"{broken}: OpenVINO cannot read this graph"):
        OpenVinoBackend(broken, "last_hidden_state")


def test_importing_bertonnx_does_not_import_openvino(tiny_bundle: Path) -> None:
    script = f"""
import sys
from bertonnx import Embedder
e = Embedder.load({str(tiny_bundle)!r}, backend="onnxruntime")
e.sentences(["a king"])
assert "openvino" not in sys.modules, "openvino was imported"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ})
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")
def test_default_model_bf16_and_int8_stay_within_their_gates(default_bundle: Path) -> None:
    fp32 = Embedder.load(default_bundle, backend="onnxruntime")
    texts = ["The king is wise.", "How much is an Apple music account?",
             "The queen is one of the great bands in history."] * 3
    expected = np.concatenate([r.vectors for r in fp32.contextual(texts)])
    for precision, metric, gate in (("bf16", "min", 0.999), ("int8", "mean", 0.99)):
        other = Embedder.load(default_bundle, backend="openvino", precision=precision)
        assert other.runtime()["fidelity"]["passed"] is True
        cosines = cosine_rows(expected, np.concatenate([r.vectors for r in other.contextual(texts)]))
        assert getattr(cosines, metric)() >= gate, (precision, cosines.min(), cosines.mean())
