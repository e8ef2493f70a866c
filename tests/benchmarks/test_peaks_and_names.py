"""What a bench report says it ran and what it measures speed against (issue 26, item 6).

- `auto` is named by what the engine picked, in the row, report.json and the plots;
- each row is held to the peak of the arithmetic it ran (fp32, bf16, int8), never shown over 100 %;
  every branch of the peak model is tested by faking the CPU's flags, so no CPU class goes untested;
- the peers' install hint is a command that works from a clone;
- peak.png keeps its title and labels inside the figure and clear of the legend.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bertonnx.benchmarks import machine as machine_module
from bertonnx.benchmarks.bertonnx_systems import resolved
from bertonnx.benchmarks.contract import SystemSpec
from bertonnx.benchmarks.fidelity import Fidelity
from bertonnx.benchmarks.harness import Report
from bertonnx.benchmarks.machine import ARITHMETIC, Machine, describe_machine, peak_per_cycle
from bertonnx.benchmarks.measurements import Latency, Measurement, arithmetic, summarize
from bertonnx.benchmarks.report import OVER_PEAK, markdown, plots, rows
from bertonnx.benchmarks.systems import PEERS_INSTALL, Availability, BundleFacts, plan_systems
from bertonnx.benchmarks.workloads import Case, ModelShape

ROOT = Path(__file__).resolve().parents[2]

AVX2 = {"sse4_2", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw"}
ZEN4 = AVX512 | {"avx512_vnni", "avx512_bf16"}
AMX = ZEN4 | {"amx_tile", "amx_bf16", "amx_int8"}
CPUS = {  # name: (vendor, family, flags, expected FLOP/cycle per core for fp32, bf16, int8)
    "AVX2 only (Intel Haswell..Comet Lake)": ("GenuineIntel", 6, AVX2, (32, 32, 64)),
    "AVX2 + AVX-VNNI (Intel Alder Lake)": ("GenuineIntel", 6, AVX2 | {"avx_vnni"}, (32, 32, 128)),
    "AVX2 only (AMD Zen 3)": ("AuthenticAMD", 25, AVX2, (32, 32, 64)),
    "AVX-512 without bf16 or VNNI (Intel Skylake-SP)": ("GenuineIntel", 6, AVX512, (64, 64, 128)),
    "AVX-512 + VNNI without bf16 (Intel Cascade Lake)": ("GenuineIntel", 6, AVX512 | {"avx512_vnni"},
                                                         (64, 64, 256)),
    "AVX512-BF16 + VNNI (AMD Zen 4: AVX-512 as 2 x 256-bit)": ("AuthenticAMD", 25, ZEN4, (32, 64, 128)),
    "AVX512-BF16 + VNNI (Intel Cooper Lake)": ("GenuineIntel", 6, ZEN4, (64, 128, 256)),
    "AVX512-BF16 + VNNI (AMD Zen 5)": ("AuthenticAMD", 26, ZEN4, (64, 128, 256)),
    "AMX (Intel Sapphire / Emerald Rapids)": ("GenuineIntel", 6, AMX, (64, 1024, 2048)),
}


@pytest.mark.parametrize("cpu", list(CPUS))
def test_each_arithmetic_has_the_peak_of_its_own_instructions(cpu: str) -> None:
    vendor, family, flags, expected = CPUS[cpu]
    found = tuple(peak_per_cycle(kind, vendor, family, flags, "x86_64") for kind in ARITHMETIC)
    assert tuple(p.flops_per_cycle for p in found) == expected, [p.basis for p in found]
    assert [p.arithmetic for p in found] == list(ARITHMETIC) and all(p.basis for p in found)


def test_the_peak_basis_names_the_instructions() -> None:
    def basis(kind: str, flags: set[str]) -> str:
        return peak_per_cycle(kind, "GenuineIntel", 6, flags, "x86_64").basis

    assert "AMX-BF16" in basis("bf16", AMX) and "AMX-INT8" in basis("int8", AMX)
    assert "vdpbf16ps" in basis("bf16", ZEN4) and "vpdpbusd" in basis("int8", ZEN4)
    assert "no native bf16" in basis("bf16", AVX512) and "no VNNI" in basis("int8", AVX512)
    arm = [peak_per_cycle(kind, "unknown", 0, set(), "aarch64") for kind in ARITHMETIC]
    assert {p.flops_per_cycle for p in arm} == {16}  # no model beyond NEON's fp32: the cap marks a miss
    with pytest.raises(ValueError, match="unknown arithmetic 'fp8'"):
        peak_per_cycle("fp8", "GenuineIntel", 6, AMX, "x86_64")


@pytest.mark.parametrize("cpu", list(CPUS))
def test_describe_machine_reads_every_peak_off_the_flags(cpu: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flags faked as /proc/cpuinfo shows them: every CPU class's branch runs on whatever CPU runs the tests."""
    vendor, family, flags, expected = CPUS[cpu]
    block = {"vendor_id": vendor, "cpu family": str(family), "model name": cpu, "cpu MHz": "2000.000",
             "flags": " ".join(sorted(flags | {"fpu", "sse2"}))}
    monkeypatch.setattr(machine_module, "_cpuinfo", lambda: block)
    machine = describe_machine()
    assert tuple(machine.peak(kind).flops_per_cycle for kind in ARITHMETIC) == expected
    assert machine.flops_per_cycle == expected[0] and machine.peak_basis == machine.peak("fp32").basis
    assert machine.peak_gflops(1, "bf16") == pytest.approx(2.0 * expected[1])


def fake_machine(flags: set[str], per_cycle: tuple[int, int, int] = (32, 64, 128)) -> Machine:
    peaks = tuple(machine_module.Peak(kind, n, f"{kind} basis") for kind, n in zip(ARITHMETIC, per_cycle))
    return Machine("AMD EPYC", "AuthenticAMD", 25, tuple(sorted(flags)), 2, 2.5, per_cycle[0], "fp32 basis",
                   "3.12", "Linux", {}, (), None, (0.0, 0.0, 0.0), peaks)


def spec(kind: str, label: str, backend: str = "", precision: str = "", provider: str = "cpu") -> SystemSpec:
    return SystemSpec(kind, label, "contextual", "/b", provider, 2, backend, precision)


@pytest.mark.parametrize(
    "system,flags,expected",
    [
        (spec("pytorch", "pytorch"), ZEN4, "fp32"),
        (spec("pytorch-bf16", "pytorch bf16 autocast"), ZEN4, "bf16"),
        (spec("sentence-transformers", "sentence-transformers"), ZEN4, "fp32"),
        (spec("sentence-transformers", "ST onnx", "onnx"), ZEN4, "fp32"),
        (spec("sentence-transformers", "ST openvino", "openvino"), ZEN4, "bf16"),  # its default: bf16 here
        (spec("sentence-transformers", "ST openvino", "openvino"), AVX2, "fp32"),  # ... and f32 here
        (spec("sentence-transformers", "ST openvino", "openvino", "bf16"), ZEN4, "bf16"),  # read back once loaded
        (spec("sentence-transformers", "ST openvino f32", "openvino", "fp32"), ZEN4, "fp32"),
        (spec("bertonnx", "bertonnx fp32", "onnxruntime", "fp32"), ZEN4, "fp32"),
        (spec("bertonnx", "bertonnx int8", "onnxruntime", "int8"), ZEN4, "int8"),
        (spec("bertonnx", "bertonnx auto (openvino bf16)", "openvino", "bf16"), ZEN4, "bf16"),
        (spec("bertonnx", "bertonnx fp16 [cuda]", "onnxruntime", "fp16", "cuda"), ZEN4, None),
    ],
)
def test_each_row_names_the_arithmetic_it_ran(system: SystemSpec, flags: set[str], expected: str | None) -> None:
    assert arithmetic(system, flags) == expected


def fidelity() -> Fidelity:
    return Fidelity("pytorch", 10, 100, 50, 1.0, 1.0, 1.0, 1.0, 0.0)


def test_rows_are_held_to_the_peak_of_their_own_arithmetic() -> None:
    """bf16 rows once read 140 % of the fp32 peak: against the bf16 peak they are inside it."""
    machine = fake_machine(ZEN4)  # peaks at 2 threads: fp32 160, bf16 320, int8 640 GFLOP/s
    case = Case("corpus", "64 mixed-length texts", "contextual", items=64, tokens=1000, longest=64, flops=224e9)
    systems = [type("S", (), {"spec": s})() for s in (
        spec("pytorch", "pytorch"),
        spec("bertonnx", "bertonnx auto (openvino bf16)", "openvino", "bf16"),
        spec("bertonnx", "bertonnx int8", "onnxruntime", "int8"),
    )]
    times = {"pytorch": [2_000_000_000] * 3, "bertonnx auto (openvino bf16)": [1_000_000_000] * 3,
             "bertonnx int8": [1_000_000_000] * 3}
    found = {m.system: m for m in summarize(case, systems, times, dict.fromkeys(times, fidelity()), machine, 2)}
    assert found["pytorch"].arithmetic == "fp32" and found["pytorch"].peak_gflops == pytest.approx(160)
    assert found["pytorch"].peak_share == pytest.approx(112 / 160)
    bf16 = found["bertonnx auto (openvino bf16)"]
    assert (bf16.arithmetic, bf16.peak_gflops, bf16.peak_share) == ("bf16", pytest.approx(320), pytest.approx(0.7))
    assert found["bertonnx int8"].peak_share == pytest.approx(224 / 640)


CORPUS = Case("corpus", "64 mixed-length texts", "contextual", items=64, tokens=1000, longest=64, flops=1e9)


def measurement(system: str, gflops: float, peak: float, kind: str, case: Case = CORPUS) -> Measurement:
    return Measurement(case, system, "cpu", Latency(10.0, 11.0, 12.0, 3), 1e5, 6400.0, 1.0, 1.0, 1.0, 1.0,
                       gflops, gflops / peak, None, 0.01, fidelity(), kind, peak)


def test_no_share_over_100_percent_is_printed() -> None:
    cells = rows([measurement("bertonnx auto (openvino bf16)", 233.0, 333.0, "bf16"),
                  measurement("bertonnx fp32", 190.0, 166.0, "fp32")])
    assert cells[0][11:13] == ["233.0 (70%)", "333 bf16"]
    assert cells[1][11:13] == [f"190.0 ({OVER_PEAK})", "166 fp32"]
    assert not any(re.search(r"\b1\d\d%", cell) for row in cells for cell in row)


def report(measurements: list[Measurement], title: str = "sentence-transformers/all-MiniLM-L6-v2") -> Report:
    return Report(title, "", "2026-01-01T00:00:00+00:00", {"threads": 2, "method": {}}, fake_machine(ZEN4), (),
                  tuple(measurements), (), (), (), ModelShape(6, 384, 1536, 12))


def test_the_report_names_each_peak_and_explains_the_mark() -> None:
    text = markdown(report([measurement("bertonnx fp32", 190.0, 166.0, "fp32")]))
    assert "| GFLOP/s (% of peak) | peak GFLOP/s (arithmetic) |" in text
    for kind, gflops in (("fp32", 160), ("bf16", 320), ("int8", 640)):
        assert f"  - {kind} peak: {gflops} GFLOP/s = 2 × 2.50 GHz" in text
    assert "* over peak: faster than the peak modelled for its arithmetic" in text


def test_auto_is_named_by_what_the_engine_picked() -> None:
    planned = SystemSpec("bertonnx", "bertonnx auto · fp32 bundle", "contextual", "/b", "cpu", 2, "auto", "auto",
                         "auto")
    ran = resolved(planned, "openvino", "bf16")
    assert (ran.label, ran.backend, ran.precision, ran.backend_requested) == (
        "bertonnx auto (openvino bf16) · fp32 bundle", "openvino", "bf16", "auto")
    assert ran.to_dict()["backend_requested"] == "auto"
    fixed = SystemSpec("bertonnx", "bertonnx fp32", "contextual", "/b", "cpu", 2, "onnxruntime", "fp32")
    assert resolved(fixed, "onnxruntime", "fp32") == SystemSpec(
        "bertonnx", "bertonnx fp32", "contextual", "/b", "cpu", 2, "onnxruntime", "fp32", "onnxruntime")


def test_planned_specs_keep_what_was_asked_for() -> None:
    specs, _ = plan_systems([BundleFacts("/b", "fp32", False)], "/m", ("cpu",), 2,
                            Availability(("CPUExecutionProvider",), torch_cuda=False, sentence_transformers=True))
    requested = {s.label: s.backend_requested for s in specs if s.kind == "bertonnx"}
    assert requested == {"bertonnx auto": "auto", "bertonnx fp32": "onnxruntime"}


def test_the_peers_hint_is_a_command_that_works_from_a_clone() -> None:
    none = Availability(("CPUExecutionProvider",), torch_cuda=False, sentence_transformers=True)
    _, skipped = plan_systems([BundleFacts("/b", "fp32", False)], "/m", ("cpu",), 2, none)
    reasons = {s.what: s.reason for s in skipped}
    for what in ("ST onnx", "ST openvino"):
        assert PEERS_INSTALL in reasons[what] and "'bertonnx[peers]'" not in reasons[what]
    assert PEERS_INSTALL == 'pip install -c constraints.txt -e ".[peers]"'
    assert (ROOT / "constraints.txt").is_file()
    speed = (ROOT / "README.md").read_text(encoding="utf-8").split("## Speed", 1)[1].split("\n## ", 1)[0]
    for page in (speed, *(p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "benchmarks.md",
                                                                   ROOT / "benchmarks" / "README.md"))):
        assert PEERS_INSTALL in page and "pip install 'bertonnx[peers]'" not in page


@pytest.fixture
def kept_figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the report draws, kept open to be inspected after they were saved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept: list[Any] = []
    close = plt.close
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    for figure in kept:
        close(figure)


def test_peak_plot_keeps_its_title_and_labels_clear_and_names_auto(tmp_path: Path, kept_figures: list[Any]) -> None:
    from matplotlib.text import Text

    systems = [("pytorch", 50.0, 166.0, "fp32"), ("pytorch bf16 autocast", 190.0, 333.0, "bf16"),
               ("sentence-transformers", 60.0, 166.0, "fp32"), ("ST openvino", 185.0, 333.0, "bf16"),
               ("bertonnx auto (openvino bf16)", 233.0, 333.0, "bf16"), ("bertonnx fp32", 175.0, 166.0, "fp32")]
    latency = Case("latency", "one short sentence", "contextual", items=1, tokens=16, longest=16, flops=1e7)
    found = [measurement(*system, case=case) for case in (latency, CORPUS) for system in systems]
    written = plots(report(found), tmp_path)
    assert (tmp_path / "peak.png") in written
    figure = next(f for f in kept_figures if any("achieved throughput" in t.get_text() for t in f.findobj(Text)))
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    page, drawn = figure.bbox, figure.get_tightbbox(renderer).transformed(figure.dpi_scale_trans)
    inside = page.x0 - 1 <= drawn.x0 and drawn.x1 <= page.x1 + 1 and page.y0 - 1 <= drawn.y0 and drawn.y1 <= page.y1 + 1
    assert inside, f"something is cut at the figure's edge: drawn {drawn}, figure {page}"
    legends = [*figure.legends, *(a.get_legend() for a in figure.get_axes() if a.get_legend())]
    labels = [t.get_text() for legend in legends for t in legend.get_texts()]
    assert any("bertonnx auto (openvino bf16)" in label for label in labels), labels
    for axes in figure.get_axes():
        for child in [axes, *axes.child_axes]:  # the axes with its labels and ticks, a secondary axis with its own
            box = child.get_tightbbox(renderer)
            for legend in legends:
                assert not legend.get_window_extent(renderer).overlaps(box), f"the legend covers {child}"
