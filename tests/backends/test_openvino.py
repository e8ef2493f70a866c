"""OpenVINO: the same vectors as ONNX Runtime at fp32, bf16 within its gate, threads, the cache, the faults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bertonnx import BackendError, Embedder
from bertonnx.backends import open as open_module
from bertonnx.backends.choose import Machine, this_machine
from bertonnx.errors import FidelityGateError
from bertonnx.pooling import cosine_rows

pytest.importorskip("openvino")
from bertonnx.backends import openvino as openvino_module  # noqa: E402
from bertonnx.backends.openvino import OpenVinoBackend  # noqa: E402

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


BF16_CPU = frozenset({"avx2", "avx512f", "avx512_bf16"})  # native bf16 (Zen 4's kind); no int8 dot products
PLAIN_CPU = frozenset({"avx2", "fma"})  # no native bf16: auto never tries it, a request for it is refused
REFUSED = r"bf16 is refused on this bundle: token min cosine [01]\.\d{5} .* gate 1\.1"


class RoundedToBf16(OpenVinoBackend):
    """OpenVINO at fp32 with every output rounded to bf16 (8 significant bits): what a bf16 run's figures look like,
    on a CPU where OpenVINO would compile a bf16 request at fp32."""

    def __init__(self, model_path: Path, output: str, precision: str = "fp32", threads: int | None = None,
                 cache_dir: Path | None = None, native_bf16: bool = True) -> None:
        super().__init__(model_path, output, "fp32", threads, None, native_bf16)  # no compiled fp32 blob under bf16
        if precision == "bf16":
            self.info = replace(self.info, precision="bf16")

    def run(self, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._rounded(super().run(output, feeds))

    def run_many(self, output: str, batches: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
        return [self._rounded(found) for found in super().run_many(output, batches)]

    def _rounded(self, found: np.ndarray) -> np.ndarray:
        if self.info.precision != "bf16":
            return found
        bits = np.ascontiguousarray(found, dtype=np.float32).view(np.uint32)
        nearest_even = ((bits >> 16) & 1) + 0x7FFF
        return ((bits + nearest_even) & 0xFFFF0000).astype(np.uint32).view(np.float32)


@pytest.fixture()
def cpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Machine:
    """This machine's packages with the CPU flags of `request.param`, for every load in the test. Where the flags
    claim a native bf16 this CPU lacks, OpenVINO's bf16 is RoundedToBf16."""
    here = this_machine()
    faked = replace(here, cpu_flags=request.param)
    monkeypatch.setattr(open_module, "this_machine", lambda: faked)
    if faked.native_bf16 and not here.native_bf16:
        monkeypatch.setattr(openvino_module, "OpenVinoBackend", RoundedToBf16)
    return faked


def trial(embedder: Embedder, name: str) -> dict[str, object]:
    timings = embedder.runtime()["timings"]
    assert isinstance(timings, dict), "auto measured nothing"
    return next(trial for trial in timings["trials"] if f"{trial['backend']} {trial['precision']}" == name)


@pytest.mark.parametrize("cpu", [BF16_CPU], indirect=True, ids=["native bf16"])
def test_a_precision_under_its_gate_is_refused_with_the_figure(tiny_bundle: Path, cpu: Machine) -> None:
    """Asked for by name, bf16 under its gate is an error that gives the figure; under auto (which decides by
    timing the candidates that pass their gates) it is a candidate refused with the same figure, and an fp32
    candidate runs."""
    with pytest.raises(FidelityGateError, match=REFUSED):
        Embedder.load(tiny_bundle, backend="openvino", precision="bf16", min_fidelity=1.1, threads=1)
    auto = Embedder.load(tiny_bundle, min_fidelity=1.1, threads=1)
    assert auto.runtime()["precision"] == "fp32"
    bf16 = trial(auto, "openvino bf16")
    assert re.search(REFUSED, str(bf16["refused"])) and bf16["short_ms"] is None and bf16["bulk_ms"] is None
    assert "openvino bf16 refused" in str(auto.runtime()["chosen_because"])
    timed = [t for t in auto.runtime()["timings"]["trials"] if t["short_ms"] is not None]
    assert {(t["backend"], t["precision"]) for t in timed} == {("onnxruntime", "fp32"), ("openvino", "fp32")}


@pytest.mark.parametrize("cpu", [PLAIN_CPU], indirect=True, ids=["no native bf16"])
def test_without_native_bf16_auto_does_not_try_it_and_a_request_for_it_is_refused(
    tiny_bundle: Path, cpu: Machine
) -> None:
    with pytest.raises(BackendError, match="bf16 needs a CPU with AMX or AVX512-BF16"):
        Embedder.load(tiny_bundle, backend="openvino", precision="bf16", threads=1)
    auto = Embedder.load(tiny_bundle, min_fidelity=1.1, threads=1)
    assert auto.runtime()["precision"] == "fp32"
    assert str(trial(auto, "openvino bf16")["refused"]).startswith("not tried: this CPU has no native bf16")


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
