"""`auto` and `fastest` by measurement: which candidates are timed, how the verdict is cached, which gate holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertonnx import Embedder
from bertonnx.backends import cache_root, measure, open_backend
from bertonnx.backends.choose import Machine, this_machine
from bertonnx.bundle import load_bundle
from bertonnx.options import LoadOptions
from bertonnx.tokenize import Tokenizer

AVX2 = frozenset({"avx2", "fma"})
SSE = frozenset({"sse4_2", "avx"})  # no int8 kernels at all
ZEN4 = frozenset({"avx512f", "avx512_vnni", "avx512_bf16"})
ALL = frozenset({"onnxruntime", "openvino", "nncf"})


def machine(flags: frozenset[str], installed: frozenset[str] = ALL) -> Machine:
    return Machine(installed=installed, ort_providers=("CPUExecutionProvider",), cpu_flags=flags)


@pytest.mark.parametrize(
    "policy,flags,installed,bundle,int8_faithful,expected",
    [
        ("auto", AVX2, ALL, "fp32", False, [("onnxruntime", "fp32"), ("openvino", "fp32")]),
        ("auto", ZEN4, ALL, "fp32", False, [("onnxruntime", "fp32"), ("openvino", "bf16"), ("openvino", "fp32")]),
        # int8 joins auto only where its measured fidelity already cleared the bf16 gate
        ("auto", ZEN4, ALL, "fp32", True,
         [("onnxruntime", "fp32"), ("openvino", "bf16"), ("openvino", "fp32"), ("openvino", "int8")]),
        ("fastest", ZEN4, ALL, "fp32", False,
         [("onnxruntime", "fp32"), ("openvino", "bf16"), ("openvino", "fp32"), ("openvino", "int8")]),
        # AVX2 has int8 kernels without dot products: int8 is tried, its weights kept to 7 bits (quantize.py)
        ("fastest", AVX2, ALL, "fp32", False, [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "int8")]),
        ("fastest", SSE, ALL, "fp32", False, [("onnxruntime", "fp32"), ("openvino", "fp32")]),  # no int8 kernels
        ("fastest", ZEN4, frozenset({"onnxruntime", "openvino"}), "fp32", False,  # no NNCF to quantise with
         [("onnxruntime", "fp32"), ("openvino", "bf16"), ("openvino", "fp32")]),
        ("auto", ZEN4, ALL, "int8", False, [("onnxruntime", "int8")]),  # OpenVINO reads fp32 bundles only
        ("auto", ZEN4, frozenset({"onnxruntime"}), "fp32", False, [("onnxruntime", "fp32")]),
    ],
)
def test_the_flags_say_what_is_worth_timing(
    policy: str, flags: frozenset[str], installed: frozenset[str], bundle: str, int8_faithful: bool,
    expected: list[tuple[str, str]],
) -> None:
    assert measure.candidates(policy, bundle, machine(flags, installed), int8_faithful) == expected


def test_the_cache_key_changes_with_everything_the_verdict_depends_on() -> None:
    pairs = [("onnxruntime", "fp32"), ("openvino", "fp32")]
    base = measure.cache_key("a" * 64, "auto", 2, {"onnxruntime": "1.32.0"}, machine(AVX2), pairs)
    changed = [
        measure.cache_key("b" * 64, "auto", 2, {"onnxruntime": "1.32.0"}, machine(AVX2), pairs),
        measure.cache_key("a" * 64, "fastest", 2, {"onnxruntime": "1.32.0"}, machine(AVX2), pairs),
        measure.cache_key("a" * 64, "auto", 1, {"onnxruntime": "1.32.0"}, machine(AVX2), pairs),
        measure.cache_key("a" * 64, "auto", 2, {"onnxruntime": "1.33.0"}, machine(AVX2), pairs),
        measure.cache_key("a" * 64, "auto", 2, {"onnxruntime": "1.32.0"}, machine(ZEN4), pairs),
        measure.cache_key("a" * 64, "auto", 2, {"onnxruntime": "1.32.0"}, machine(AVX2), pairs[:1]),
        measure.cache_key("a" * 64, "auto", 2, {"onnxruntime": "1.32.0"}, machine(AVX2), pairs,
                          {"openvino bf16": "word mean cosine >= 1.1"}),
    ]
    assert all(key != base for key in changed)
    noise = machine(AVX2 | {"sse4_2", "popcnt"})  # flags no candidate depends on
    assert measure.cache_key("a" * 64, "auto", 2, {"onnxruntime": "1.32.0"}, noise, pairs) == base


def test_the_winner_has_the_lowest_geometric_mean_of_short_and_bulk() -> None:
    fast_short = measure.Trial("onnxruntime", "fp32", 10.0, 400.0)  # score 63.2
    balanced = measure.Trial("openvino", "fp32", 20.0, 150.0)  # score 54.8
    refused = measure.Trial("openvino", "int8", None, None, "int8 is refused on this bundle: ...")
    assert balanced.score is not None and fast_short.score is not None and balanced.score < fast_short.score
    assert refused.score is None
    assert measure.winner([fast_short, balanced, refused]) == ("openvino", "fp32")
    near = measure.Trial("onnxruntime", "fp32", 20.0, 154.0)  # 2 % slower than `balanced`: a near-tie
    assert measure.winner([near, balanced]) == ("onnxruntime", "fp32")  # the first in order wins a near-tie
    assert measure.winner([balanced, near]) == ("openvino", "fp32")
    timings = measure.Timings("fastest", 2, (fast_short, balanced, refused), ("openvino", "fp32"), "now")
    assert measure.Timings.from_dict(json.loads(json.dumps(timings.to_dict()))) == timings
    assert timings.reason == "fastest: fastest of 2 timed on this machine; openvino int8 refused"


@pytest.fixture()
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BERTONNX_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.mark.skipif("openvino" not in this_machine().installed, reason="one backend: nothing to time")
def test_auto_times_the_candidates_once_and_later_loads_read_the_verdict(
    tiny_bundle: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Embedder.load(tiny_bundle, threads=1).runtime_info()
    assert first.timings is not None and first.timings.policy == "auto" and first.timings.threads == 1
    names = {trial.name: trial for trial in first.timings.trials}
    assert {"onnxruntime fp32", "openvino fp32"} <= set(names)
    assert (first.backend, first.precision) == first.timings.winner == measure.winner(first.timings.trials)
    fastest = min(t.score for t in first.timings.trials if t.score is not None)
    chosen = next(t for t in first.timings.trials if t.name == f"{first.backend} {first.precision}")
    assert chosen.score is not None and chosen.score <= fastest * measure.NEAR_TIE  # never more than 3 % slower
    assert first.chosen_because.startswith("auto: fastest of")
    assert first.to_dict()["timings"]["winner"] == list(first.timings.winner)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("timed again")

    monkeypatch.setattr(measure, "time_candidates", refuse)
    again = Embedder.load(tiny_bundle, threads=1).runtime_info()
    assert again.timings == first.timings and again.backend == first.backend
    monkeypatch.undo()
    monkeypatch.setenv("BERTONNX_HOME", str(fresh_cache / "home"))
    files = list((cache_root() / "timings").glob("*.json"))
    assert len(files) == 1
    files[0].write_text("{ damaged", encoding="utf-8")
    measured = Embedder.load(tiny_bundle, threads=1).runtime_info()  # a damaged verdict is measured again
    assert measured.timings is not None and measured.timings.measured_at >= first.timings.measured_at
    two = Embedder.load(tiny_bundle, threads=2).runtime_info()  # another thread count: its own verdict
    assert two.timings is not None and two.timings.threads == 2
    assert len(list((cache_root() / "timings").glob("*.json"))) == 2


@pytest.mark.skipif("openvino" not in this_machine().installed, reason="one backend: nothing to time")
def test_a_backend_named_with_auto_precision_is_not_timed(tiny_bundle: Path, fresh_cache: Path) -> None:
    info = Embedder.load(tiny_bundle, backend="onnxruntime", threads=1).runtime_info()
    assert info.timings is None and info.chosen_because == "asked for"


@pytest.mark.slow  # quantises the model with NNCF, then times four candidates
@pytest.mark.skipif(not {"openvino", "nncf"} <= this_machine().installed, reason="int8 needs openvino and nncf")
@pytest.mark.parametrize("min_fidelity,int8_timed", [(0.0, True), (1.0, False)])
def test_fastest_admits_int8_under_its_own_gate(
    tiny_bundle: Path, fresh_cache: Path, min_fidelity: float, int8_timed: bool
) -> None:
    """On a CPU with int8 dot products (given here as flags), `fastest` times int8 when it passes its gate,
    and records it refused, with the figure, when it does not (a gate of 1.0 no quantised graph reaches)."""
    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    vnni = machine(this_machine().cpu_flags | {"avx512_vnni"})
    options = LoadOptions(precision="fastest", threads=1, min_fidelity=min_fidelity)
    opened = open_backend(bundle, tokenizer, options, vnni)
    assert opened.timings is not None and opened.timings.policy == "fastest"
    int8 = next(t for t in opened.timings.trials if t.name == "openvino int8")
    assert (int8.score is not None) is int8_timed
    if not int8_timed:
        assert int8.refused and "under the gate 1" in int8.refused
        assert opened.choice.precision != "int8"
    # auto times int8 only where the figure just cached clears the bf16 gate (token min cosine >= 0.999)
    from bertonnx.backends.gate import int8_faithful

    auto = open_backend(bundle, tokenizer, LoadOptions(threads=1, min_fidelity=min_fidelity), vnni)
    assert auto.timings is not None
    assert ("openvino int8" in {t.name for t in auto.timings.trials}) is int8_faithful(bundle, vnni)


def test_auto_int8_is_held_to_the_bf16_gate() -> None:
    from bertonnx.backends.open import policy_gate

    assert policy_gate("auto", "int8") == "bf16" and policy_gate("fastest", "int8") == "int8"
    assert policy_gate("auto", "bf16") == "bf16" and policy_gate("auto", "fp32") == "fp32"


def test_resolved_options_name_what_auto_chose(tiny_bundle: Path) -> None:
    """Ray workers get the driver's choice by name, so that all of them run the same backend and precision."""
    options = LoadOptions(threads=1)
    embedder = Embedder.load(tiny_bundle, options)
    resolved = embedder.resolved(options)
    info = embedder.runtime_info()
    assert (resolved.backend, resolved.precision, resolved.threads) == (info.backend, info.precision, 1)
    again = Embedder.load(tiny_bundle, resolved).runtime_info()
    assert (again.backend, again.precision) == (info.backend, info.precision) and again.timings is None


def test_what_was_not_tried_says_why() -> None:
    sse = measure.left_out("fastest", "fp32", machine(SSE), int8_faithful=False)
    assert [(t.name, t.refused.split(":")[0]) for t in sse] == [("openvino bf16", "not tried"),
                                                                 ("openvino int8", "not tried")]
    assert "no int8 kernels" in sse[1].refused and "no native bf16" in sse[0].refused
    avx2 = measure.left_out("fastest", "fp32", machine(AVX2), int8_faithful=False)
    assert [t.name for t in avx2] == ["openvino bf16"]  # int8 is tried there, with 7-bit weights
    zen4 = measure.left_out("auto", "fp32", machine(ZEN4), int8_faithful=False)
    assert [t.name for t in zen4] == ["openvino int8"] and "precision 'fastest'" in zen4[0].refused
    assert measure.left_out("fastest", "fp32", machine(ZEN4), int8_faithful=False) == []
    assert measure.left_out("auto", "int8", machine(ZEN4), int8_faithful=False) == []  # OpenVINO reads fp32 only


@pytest.mark.skipif("openvino" not in this_machine().installed, reason="one backend: nothing to time")
def test_fastest_without_int8_shares_autos_verdict(
    tiny_bundle: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where int8 is not a candidate, `fastest` times exactly what `auto` times: it reads auto's verdict."""
    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    old = machine(SSE)  # no int8 kernels
    auto = open_backend(bundle, tokenizer, LoadOptions(threads=1), old)
    assert auto.timings is not None and "openvino int8" in {t.name for t in auto.timings.trials}

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("timed again")

    monkeypatch.setattr(measure, "time_candidates", refuse)
    fastest = open_backend(bundle, tokenizer, LoadOptions(threads=1, precision="fastest"), old)
    assert fastest.timings is not None and fastest.timings.policy == "fastest"
    assert fastest.timings.winner == auto.timings.winner
    int8 = next(t for t in fastest.timings.trials if t.name == "openvino int8")
    assert int8.score is None and "no int8 kernels" in (int8.refused or "")


@pytest.mark.skipif("openvino" not in this_machine().installed, reason="one backend: nothing to time")
def test_a_stricter_gate_does_not_change_what_a_default_load_picks(
    tiny_bundle: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run with a gate no reduced precision clears is its own verdict: later default loads keep theirs."""
    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    zen4 = machine(ZEN4)  # bf16 is a candidate here, whatever this CPU is
    default = open_backend(bundle, tokenizer, LoadOptions(threads=1), zen4)
    assert default.timings is not None
    strict = open_backend(bundle, tokenizer, LoadOptions(threads=1, min_fidelity=1.1), zen4)
    assert strict.timings is not None and strict.choice.precision == "fp32"
    refused = next(t for t in strict.timings.trials if t.name == "openvino bf16").refused
    assert refused is not None
    if next(t for t in default.timings.trials if t.name == "openvino bf16").refused is None:  # bf16 runs here
        assert "under the gate 1.1" in refused

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("timed again")

    monkeypatch.setattr(measure, "time_candidates", refuse)
    again = open_backend(bundle, tokenizer, LoadOptions(threads=1), zen4)
    assert again.timings == default.timings and again.choice == default.choice
    assert len(list((cache_root() / "timings").glob("*.json"))) == 2  # one verdict per gate
