"""The benchmark harness end to end on the tiny model, its planning and method, and `bertonnx bench`.

No timing assertions: the numbers of a tiny model on a shared machine mean
nothing. What is checked is that every speed figure comes with its fidelity,
that the files are written, and that CUDA is skipped cleanly without a GPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import typer
from helpers.models import TINY_MAX_LENGTH
from typer.testing import CliRunner

from bertonnx import Embedder
from bertonnx.backends.choose import Machine
from bertonnx.backends.onnxruntime import CPU, CUDA
from bertonnx.benchmarks.contract import Outputs, SystemSpec
from bertonnx.benchmarks.fidelity import compare
from bertonnx.benchmarks.harness import BenchConfig, Report, run_benchmark, time_interleaved
from bertonnx.benchmarks.machine import CpuTimes, fp32_flops_per_cycle, others_load
from bertonnx.benchmarks.memory import METHOD_HWM
from bertonnx.benchmarks.report import JSON_FILE, MARKDOWN_FILE, PLOT_FILES, markdown, write_report
from bertonnx.benchmarks.systems import PEERS_INSTALL, Availability, BundleFacts, cuda_unavailable, plan_systems
from bertonnx.benchmarks.targets import evaluate_targets
from bertonnx.benchmarks.workloads import (
    FAMILIES,
    LATENCY_REPEAT,
    Case,
    ModelShape,
    Vocabulary,
    Workload,
    WorkloadSpec,
    build_workloads,
)
from bertonnx.cli.app import app
from bertonnx.cli.bench import torch_source
from bertonnx.errors import OptionError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_SPEC = WorkloadSpec(batch_sizes=(1, 2), seq_lens=(8, 32, 512), corpus_texts=12, million=500, repeat=2)
NO_GPU = cuda_unavailable(Availability.detect()) is not None
ST_OPENVINO_INSTALLED = "openvino" in Availability.detect().st_backends
COSINES = ("token_min_cosine", "token_mean_cosine", "word_min_cosine", "word_mean_cosine")


@pytest.fixture(scope="module")
def tiny_report(tiny_bundle: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path]:
    """One run over every workload family, CUDA asked for too, memory measured."""
    config = BenchConfig(
        bundles=(tiny_bundle,),
        torch_model=tiny_model,
        workloads=TINY_SPEC,
        threads=1,
        providers=("cpu", "cuda"),
        memory=True,
        title="tiny",
    )
    report = run_benchmark(config)
    out = tmp_path_factory.mktemp("bench")
    write_report(report, out)
    return report, out


def test_report_json_has_fidelity_next_to_every_speed_figure(tiny_report: tuple[Report, Path]) -> None:
    _, out = tiny_report
    data = json.loads((out / JSON_FILE).read_text(encoding="utf-8"))
    assert data["schema"] == "bertonnx-bench/1"
    assert data["machine"]["peak_gflops"] > 0 and data["machine"]["cpu"]
    assert {"onnxruntime", "torch", "numpy"} <= set(data["machine"]["versions"])
    assert data["settings"]["threads"] == 1 and "interleaved" in data["settings"]["method"]
    rows = data["measurements"]
    assert {row["case"]["family"] for row in rows} == set(FAMILIES)
    for row in rows:
        latency = row["latency"]
        assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"], row["system"]
        assert row["tokens_per_s"] > 0 and row["items_per_s"] > 0
        fidelity = row["fidelity"]
        assert fidelity["reference"] in ("pytorch", "pytorch embedding")
        assert fidelity["items"] > 0 and fidelity["tokens"] > 0 and fidelity["words"] > 0
        for key in COSINES:
            assert math.isfinite(fidelity[key]) and -1.0 <= fidelity[key] <= 1.0 + 1e-9, (row["system"], key)
        assert row["vs_pytorch"] > 0
        if row["case"]["path"] == "contextual":
            assert row["vs_sentence_transformers"] > 0 and row["gflops"] > 0 and 0 < row["peak_share"] < 1
            if ST_OPENVINO_INSTALLED:  # the headline peer, where optimum-intel is installed
                assert row["vs_st_openvino"] > 0
        assert row["peak_rss_mb"] > 10, row["system"]


def test_auto_is_named_by_what_it_ran_in_rows_json_and_plots(tiny_report: tuple[Report, Path]) -> None:
    """Planned as "bertonnx auto", reported as "bertonnx auto (onnxruntime fp32)" or whatever the engine picked."""
    report, out = tiny_report
    data = json.loads((out / JSON_FILE).read_text(encoding="utf-8"))
    auto = [s for s in data["systems"] if s["backend_requested"] == "auto"]
    assert len(auto) == 1, data["systems"]
    ran = auto[0]
    assert ran["backend"] in ("onnxruntime", "openvino") and ran["precision"] in ("fp32", "bf16", "int8")
    assert ran["label"] == f"bertonnx auto ({ran['backend']} {ran['precision']})"
    assert not any(s["backend"] == "auto" or s["precision"] == "auto" for s in data["systems"])
    rows = [m for m in data["measurements"] if m["system"].startswith("bertonnx auto")]
    assert rows and {m["system"] for m in rows} == {ran["label"]}
    assert all(m["arithmetic"] == ran["precision"] and m["peak_gflops"] > 0 for m in rows)
    assert set(data["machine"]["peaks_gflops"]) == {"fp32", "bf16", "int8"}
    assert f"| {ran['label']} |" in (out / MARKDOWN_FILE).read_text(encoding="utf-8")


def test_timed_runs_and_faithful_systems(tiny_report: tuple[Report, Path]) -> None:
    report, _ = tiny_report
    by = {(m.case.family, m.case.name, m.system): m for m in report.measurements}
    latency = [m for m in report.measurements if m.case.family == "latency"]
    assert {m.latency.runs for m in latency} == {LATENCY_REPEAT}
    grid = [m for m in report.measurements if m.case.family == "grid"]
    assert {m.latency.runs for m in grid} == {TINY_SPEC.repeat}
    assert {(m.case.batch_size, m.case.seq_len) for m in grid} == {(1, 8), (2, 8), (1, 32), (2, 32)}
    for (family, name, system), m in by.items():
        if system == "bertonnx fp32":
            assert m.fidelity.token_min_cosine > 0.99999 and m.fidelity.word_min_cosine > 0.99999, name
        if system in ("bertonnx static", "numpy (naive)"):
            assert m.fidelity.max_abs_diff < 1e-6 and m.fidelity.word_min_cosine > 0.99999, (family, system)
    assert report.settings["method"]["memory"] == METHOD_HWM


def test_cuda_and_too_long_cases_are_skipped_with_reasons(tiny_report: tuple[Report, Path]) -> None:
    report, _ = tiny_report
    reasons = {s.what: s.reason for s in report.skipped}
    assert f"the model takes 3 to {TINY_MAX_LENGTH} tokens" in reasons["grid t512"]
    if NO_GPU:
        assert "cuda" in reasons["every system on cuda"].lower()
        assert all(m.provider == "cpu" for m in report.measurements)


def test_markdown_tables_and_plots_are_written(tiny_report: tuple[Report, Path]) -> None:
    report, out = tiny_report
    text = (out / MARKDOWN_FILE).read_text(encoding="utf-8")
    assert text == markdown(report)
    for needle in ("| case | system | p50 ms", "token cos min / mean", "## Not measured", "  - fp32 peak: "):
        assert needle in text
    for system in ("pytorch", "sentence-transformers", "bertonnx fp32", "bertonnx static", "numpy (naive)"):
        assert f"| {system} |" in text
    for name in PLOT_FILES:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name


@pytest.mark.parametrize(
    "available,reason",
    [
        (Availability((CPU,), torch_cuda=False, sentence_transformers=True), "no CUDAExecutionProvider"),
        (Availability((CUDA, CPU), torch_cuda=False, sentence_transformers=True), "torch.cuda.is_available()"),
        (Availability((CPU,), torch_cuda=True, sentence_transformers=True), "no CUDAExecutionProvider"),
    ],
)
def test_cuda_is_skipped_unless_both_runtimes_have_a_gpu(available: Availability, reason: str) -> None:
    bundles = [BundleFacts("/b/fp32", "fp32", False), BundleFacts("/b/fp16", "fp16", True)]
    specs, skipped = plan_systems(bundles, "/m", ("cpu", "cuda"), 2, available)
    assert all(spec.provider == "cpu" for spec in specs)
    cuda = [s for s in skipped if s.what == "every system on cuda"]
    assert len(cuda) == 1 and reason in cuda[0].reason


def test_cuda_plan_with_a_gpu_uses_fp16_there_and_int8_on_cpu_only() -> None:
    bundles = [
        BundleFacts("/b/fp32", "fp32", False),
        BundleFacts("/b/opt", "fp32", True),
        BundleFacts("/b/int8", "int8", True),
        BundleFacts("/b/fp16", "fp16", True),
    ]
    available = Availability((CUDA, CPU), torch_cuda=True, sentence_transformers=False)
    specs, skipped = plan_systems(bundles, "/m", ("cpu", "cuda"), 4, available)
    labels = {(s.label, s.provider) for s in specs}
    assert ("bertonnx fp16 [cuda]", "cuda") in labels and ("pytorch [cuda]", "cuda") in labels
    assert ("bertonnx int8", "cpu") in labels and ("bertonnx optimized", "cpu") in labels
    assert not any(label.startswith("bertonnx int8 [cuda]") for label, _ in labels)
    assert {s.what for s in skipped} == {
        "bertonnx fp16",
        "bertonnx int8 [cuda]",
        "sentence-transformers",
        "sentence-transformers [cuda]",
        "pytorch bf16 autocast",  # this Availability's CPU has no bf16
    }
    assert {s.threads for s in specs} == {4}
    static = [s for s in specs if s.path == "static"]
    assert {s.provider for s in static} == {"cpu"} and len(static) == 3


AMX_MACHINE = Machine(frozenset({"onnxruntime", "openvino", "nncf"}), (CPU,),
                      frozenset({"avx512f", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni"}))


def test_backends_all_sweeps_every_backend_and_precision_this_machine_has() -> None:
    bundles = [BundleFacts("/b/fp32", "fp32", False), BundleFacts("/b/opt", "fp32", True)]
    available = Availability((CPU,), torch_cuda=False, sentence_transformers=True, machine=AMX_MACHINE,
                             st_backends=frozenset({"onnx", "openvino"}))
    specs, skipped = plan_systems(bundles, "/m", ("cpu",), 2, available, backends=("all",))
    contextual = {(s.label, s.backend, s.precision) for s in specs if s.kind == "bertonnx"}
    assert {(b, p) for _, b, p in contextual} == {
        ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")}
    assert not any(label.startswith("bertonnx openvino") and "(optimized)" in label for label, _, _ in contextual)
    assert "pytorch bf16 autocast" in {s.label for s in specs} and not skipped


@pytest.mark.parametrize(
    "machine,missing,reason",
    [
        (Machine(frozenset({"onnxruntime"}), (CPU,), AMX_MACHINE.cpu_flags), "bertonnx openvino bf16",
         "pip install 'bertonnx[openvino]'"),
        (Machine(frozenset({"onnxruntime", "openvino", "nncf"}), (CPU,), frozenset({"avx2"})), "bertonnx openvino bf16",
         "AMX or AVX512-BF16"),
        (Machine(frozenset({"onnxruntime", "openvino"}), (CPU,), AMX_MACHINE.cpu_flags), "bertonnx openvino int8",
         "NNCF"),
    ],
)
def test_every_backend_left_out_says_why(machine: Machine, missing: str, reason: str) -> None:
    available = Availability((CPU,), torch_cuda=False, sentence_transformers=True, machine=machine)
    specs, skipped = plan_systems([BundleFacts("/b", "fp32", False)], "/m", ("cpu",), 2, available, ("all",))
    assert missing not in {s.label for s in specs}
    assert any(s.what == missing and reason in s.reason for s in skipped), skipped


def test_sentence_transformers_own_backends_are_peers_or_say_why_not() -> None:
    """ST onnx and ST openvino (its default precision, and f32 where the default is bf16) run where installed."""
    both = frozenset({"onnx", "openvino"})
    bf16 = Availability((CPU,), torch_cuda=False, sentence_transformers=True, machine=AMX_MACHINE, st_backends=both)
    specs, skipped = plan_systems([BundleFacts("/b", "fp32", False)], "/m", ("cpu",), 2, bf16)
    peers = {(s.label, s.backend, s.precision) for s in specs if s.kind == "sentence-transformers"}
    assert peers == {("sentence-transformers", "", ""), ("ST onnx", "onnx", ""), ("ST openvino", "openvino", ""),
                     ("ST openvino f32", "openvino", "fp32")}
    assert all(s.threads == 2 for s in specs)
    avx2 = Machine(frozenset({"onnxruntime", "openvino"}), (CPU,), frozenset({"avx2"}))
    plain = Availability((CPU,), torch_cuda=False, sentence_transformers=True, machine=avx2,
                         st_backends=frozenset({"openvino"}))
    specs, skipped = plan_systems([BundleFacts("/b", "fp32", False)], "/m", ("cpu",), 2, plain)
    assert "ST openvino" in {s.label for s in specs}
    reasons = {s.what: s.reason for s in skipped}
    assert "already f32" in reasons["ST openvino f32"] and "optimum-onnx" in reasons["ST onnx"]
    none = Availability((CPU,), torch_cuda=False, sentence_transformers=True, machine=avx2)
    _, skipped = plan_systems([BundleFacts("/b", "fp32", False)], "/m", ("cpu",), 2, none)
    assert PEERS_INSTALL in {s.what: s.reason for s in skipped}["ST openvino"]


def test_auto_is_a_row_of_its_own_that_the_engine_resolves_by_measurement() -> None:
    available = Availability((CPU,), torch_cuda=False, sentence_transformers=True, machine=AMX_MACHINE)
    specs, _ = plan_systems([BundleFacts("/b", "fp32", False)], "/m", ("cpu",), 2, available)  # auto,onnxruntime
    assert {(s.label, s.backend, s.precision) for s in specs if s.kind == "bertonnx"} == {
        ("bertonnx auto", "auto", "auto"), ("bertonnx fp32", "onnxruntime", "fp32")}
    with pytest.raises(OptionError, match="unknown backend 'tvm'"):
        plan_systems([BundleFacts("/b", "fp32", False)], "/m", ("cpu",), 2, available, ("tvm",))


def test_the_faithful_target_takes_the_fastest_system_that_kept_its_fidelity() -> None:
    from bertonnx.benchmarks.fidelity import Fidelity
    from bertonnx.benchmarks.measurements import Latency, Measurement
    from bertonnx.benchmarks.workloads import Case

    case = Case(family="corpus", name="corpus", path="contextual", items=100, tokens=1000, longest=64, flops=0.0)

    def measured(system: str, per_second: float, token_min: float) -> Measurement:
        fidelity = Fidelity("pytorch", 100, 1000, 500, token_min, 0.9999, token_min, 0.9999, 0.01)
        return Measurement(case, system, "cpu", Latency(1e5 / per_second, 0, 0, 3), 0.0, per_second,
                           None, 1000 / per_second / 50, None, None, None, None, None, None, fidelity)

    found = evaluate_targets([measured("bertonnx openvino int8", 400, 0.95),
                              measured("bertonnx openvino bf16", 300, 0.9997),
                              measured("bertonnx fp32", 100, 1.0)], AMX_MACHINE.cpu_flags)
    faithful = [t for t in found if t.name.startswith("corpus: best faithful backend vs sentence-transformers")]
    assert [t.name.rsplit(": ", 1)[1] for t in faithful] == ["bertonnx openvino bf16"]
    assert not any("no-amx" in t.name for t in found)


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown provider tpu"):
        plan_systems([], "/m", ("tpu",), 1, Availability((CPU,), False, True))


def test_systems_run_once_a_round_in_varied_orders_after_warm_up() -> None:
    calls: list[tuple[str, tuple[str, ...]]] = []

    def fake(label: str) -> SimpleNamespace:
        spec = SystemSpec("numpy", label, "static", "/b", "cpu", 1)
        return SimpleNamespace(spec=spec, run=lambda inputs: calls.append((label, tuple(inputs))))

    case = Case("static-vocab", "x", "static", items=2, tokens=2, longest=0, flops=0.0)
    workload = Workload(case, inputs=("a", "b"), warmup=("a",), repeat=12)
    times = time_interleaved([fake("A"), fake("B"), fake("C")], workload)
    assert calls[:3] == [("A", ("a",)), ("B", ("a",)), ("C", ("a",))]
    timed = "".join(label for label, _ in calls[3:])
    rounds = [timed[i : i + 3] for i in range(0, len(timed), 3)]
    assert all(sorted(r) == list("ABC") for r in rounds) and len(set(rounds)) > 2  # each once a round, orders vary
    for label in "ABC":  # no system always runs behind the same one
        assert len({r[r.index(label) - 1] for r in rounds if r.index(label) > 0}) == 2, (label, rounds)
    assert {label: len(ns) for label, ns in times.items()} == {"A": 12, "B": 12, "C": 12}
    calls.clear()
    time_interleaved([fake("A"), fake("B"), fake("C")], workload)
    assert "".join(label for label, _ in calls[3:]) == timed  # seeded: the same orders every run


def test_fidelity_refuses_outputs_of_different_shapes() -> None:
    same = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"token vectors: the reference gives \(3, 4\), the system \(2, 4\)"):
        compare("pytorch", Outputs(same, same), Outputs(same[:2], same), items=1)
    zeros = np.zeros((2, 4), dtype=np.float32)
    exact = compare("pytorch", Outputs(zeros, same), Outputs(zeros, same), items=1)
    assert exact.token_min_cosine == 1.0 and exact.max_abs_diff == 0.0


def test_flops_are_counted_analytically() -> None:
    base = ModelShape(layers=12, hidden=768, intermediate=3072, heads=12)
    per_token = 2 * (4 * 768**2 + 2 * 768 * 3072) * 12
    assert base.flops(np.array([1])) == pytest.approx(per_token + 4 * 768 * 12)
    assert base.flops(np.array([128, 16])) == pytest.approx(144 * per_token + 4 * 768 * 12 * (128**2 + 16**2))


def test_other_processes_share_of_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    start = CpuTimes(machine=10.0, own=4.0, wall=100.0)
    assert others_load(start, CpuTimes(machine=14.0, own=6.0, wall=102.0)) == pytest.approx(0.5)
    assert others_load(start, CpuTimes(machine=12.0, own=6.5, wall=102.0)) == 0.0  # clock granularity
    assert others_load(None, start) is None


@pytest.mark.parametrize(
    "vendor,family,flags,arch,expected",
    [
        ("AuthenticAMD", 25, {"avx2", "fma", "avx512f"}, "x86_64", 32),  # Zen 4: AVX-512 as 2 x 256
        ("AuthenticAMD", 26, {"avx2", "fma", "avx512f"}, "x86_64", 64),
        ("GenuineIntel", 6, {"avx2", "fma", "avx512f"}, "x86_64", 64),
        ("GenuineIntel", 6, {"avx2", "fma"}, "x86_64", 32),
        ("unknown", 0, set(), "aarch64", 16),
    ],
)
def test_fp32_peak_per_cycle(vendor: str, family: int, flags: set[str], arch: str, expected: int) -> None:
    per_cycle, basis = fp32_flops_per_cycle(vendor, family, flags, arch)
    assert per_cycle == expected and basis


def test_workloads_are_exact_deterministic_and_fit(tiny_bundle: Path) -> None:
    embedder = Embedder.load(tiny_bundle, provider="cpu", threads=1)
    shape = ModelShape.from_config(tiny_bundle / "config.json")
    first, skipped = build_workloads(TINY_SPEC, embedder.tokenizer, shape)
    again, _ = build_workloads(TINY_SPEC, embedder.tokenizer, shape)
    assert [w.inputs for w in first] == [w.inputs for w in again]
    assert [s.what for s in skipped] == ["grid t512"]
    for workload in first:
        case = workload.case
        if case.family == "grid":
            lengths = [p.ids.size + 2 for p in embedder.tokenizer.split(list(workload.inputs))]
            assert lengths == [case.seq_len] * case.batch_size
        if case.path == "contextual":
            assert case.longest <= TINY_MAX_LENGTH and case.flops > 0
    vocabulary = Vocabulary.of(embedder.tokenizer)
    assert len(vocabulary.entries) == embedder.bundle.vocab_size
    with pytest.raises(ValueError, match="unknown workload nope"):
        build_workloads(WorkloadSpec(families=("nope",)), embedder.tokenizer, shape)


def test_targets_name_the_bound_and_the_measurement(tiny_report: tuple[Report, Path]) -> None:
    report, _ = tiny_report
    targets = evaluate_targets(report.measurements, report.machine.flags)  # which targets apply depends on the CPU
    assert targets == list(report.targets)
    names = {t.name for t in targets}
    assert "static: whole vocabulary, tokenization included" in names
    assert "latency: one short sentence, p50 / PyTorch p50: bertonnx fp32" in names
    assert all(t.target.startswith(("≤", "≥")) and t.measured for t in targets)


@pytest.fixture
def cli() -> typer.Typer:
    """The real `bertonnx` app, in which `bench` is registered."""
    return app


@pytest.mark.slow  # a whole benchmark run
def test_cli_bench_writes_the_report(cli: typer.Typer, tiny_bundle: Path, tmp_path: Path) -> None:
    args = [
        "bench",
        str(tiny_bundle),
        "--batch-sizes",
        "1,2",
        "--seq-lens",
        "8",
        "--repeat",
        "1",
        "--threads",
        "1",
        "--workloads",
        "grid,static-vocab",
        "--providers",
        "cpu,cuda",
        "--no-memory",
        "--out",
        str(tmp_path / "o"),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "## grid: items are texts" in result.stdout  # piped: markdown, every column readable
    assert "engine targets" not in result.stdout.lower()  # the project's goals are not a user's report
    assert "| case | system |" in result.stdout and "…" not in result.stdout
    data = json.loads((tmp_path / "o" / JSON_FILE).read_text(encoding="utf-8"))
    assert {m["case"]["family"] for m in data["measurements"]} == {"grid", "static-vocab"}
    assert all(m["peak_rss_mb"] is None for m in data["measurements"])
    if NO_GPU:
        assert "not measured: every system on cuda" in result.stderr


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--batch-sizes", "1,x", "--batch-sizes takes comma-separated whole numbers"),
        ("--seq-lens", "0", "--seq-lens takes positive numbers"),
        ("--providers", "tpu", "unknown provider tpu"),
        ("--workloads", "grid,nope", "unknown workload nope"),
    ],
)
def test_cli_bench_bad_options_give_one_line(
    cli: typer.Typer, tiny_bundle: Path, tmp_path: Path, option: str, value: str, message: str
) -> None:
    result = CliRunner().invoke(cli, ["bench", str(tiny_bundle), option, value, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output  # a wrong command line
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


def test_torch_model_is_read_from_the_manifest(tiny_bundle: Path, tiny_model: Path) -> None:
    assert torch_source(tiny_bundle) == tiny_model.resolve()
