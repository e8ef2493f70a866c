"""A benchmark report as rich tables, report.json, report.md and PNG plots.

Every table row that carries a speed figure carries the same row's fidelity
against PyTorch: token- and word-level minimum and mean cosine.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bertonnx.benchmarks.harness import Report
from bertonnx.benchmarks.measurements import Measurement
from bertonnx.benchmarks.workloads import FAMILIES

JSON_FILE = "report.json"
MARKDOWN_FILE = "report.md"
PLOT_FILES = ("speedup_batch.png", "speedup_seq.png", "peak.png", "backends.png")
BACKENDS_FAMILY = "corpus"
"""The workload the backends table and plot compare on: many mixed-length texts, as bulk jobs see them."""
COLUMNS = (
    "case",
    "system",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "tokens/s",
    "items/s",
    "× ST OpenVINO",
    "× PyTorch",
    "× ST",
    "× PT bf16",
    "GFLOP/s (% of peak)",
    "peak GFLOP/s (arithmetic)",
    "peak MB",
    "token cos min / mean",
    "word cos min / mean",
    "sentence cos min",
)


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """report.json, report.md and the plots; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / JSON_FILE, out_dir / MARKDOWN_FILE]
    written[0].write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written[1].write_text(markdown(report), encoding="utf-8")
    return written + plots(report, out_dir)


PLAIN_BELOW = 160
"""Columns under which (or off a terminal) the report prints as markdown: rich would shrink every cell to '…'."""


def print_report(report: Report, written: Sequence[Path], out: Console, err: Console) -> None:
    """The tables on `out` (rich on a wide terminal, markdown when narrow or piped); what was not measured, and the
    files written, on `err`."""
    if out.is_terminal and out.width >= PLAIN_BELOW:
        for table in tables(report):
            out.print(table)
    else:
        out.print(markdown_tables(report), markup=False, highlight=False, soft_wrap=True, emoji=False)
    for skipped in report.skipped:
        err.print(f"not measured: {skipped.what}: {skipped.reason}", markup=False, highlight=False)
    err.print("wrote " + ", ".join(str(path) for path in written), markup=False, highlight=False)


def rows(measurements: Sequence[Measurement]) -> list[list[str]]:
    """The table cells of each measurement, in COLUMNS order."""
    return [
        [
            m.case.name,
            m.system,
            f"{m.latency.p50_ms:.2f}",
            f"{m.latency.p90_ms:.2f}",
            f"{m.latency.p99_ms:.2f}",
            f"{m.tokens_per_s:,.0f}",
            f"{m.items_per_s:,.0f}",
            _ratio(m.vs_st_openvino),
            _ratio(m.vs_pytorch),
            _ratio(m.vs_sentence_transformers),
            _ratio(m.vs_pytorch_bf16),
            _throughput(m),
            "–" if m.peak_gflops is None else f"{m.peak_gflops:,.0f} {m.arithmetic}",
            "–" if m.peak_rss_mb is None else f"{m.peak_rss_mb:,.0f}",
            f"{m.fidelity.token_min_cosine:.6f} / {m.fidelity.token_mean_cosine:.6f}",
            f"{m.fidelity.word_min_cosine:.6f} / {m.fidelity.word_mean_cosine:.6f}",
            _sentences(m),
        ]
        for m in measurements
    ]


def _sentences(m: Measurement) -> str:
    """The least sentence cosine: what the sentence gate reads (`–` where there are no sentences: static)."""
    return "–" if m.fidelity.sentence_min_cosine is None else f"{m.fidelity.sentence_min_cosine:.5f}"


def tables(report: Report) -> list[Table]:
    """One rich table per workload family, then the backends. The project's own targets are not a user's
    concern: they live in benchmarks/README.md (report.json keeps them)."""
    found = []
    for family in FAMILIES:
        mine = [m for m in report.measurements if m.case.family == family]
        if not mine:
            continue
        table = Table(title=f"{family} · {_items(mine[0])} · {_noise(mine)}", title_justify="left")
        for column in COLUMNS:
            table.add_column(column, justify="left" if column in ("case", "system") else "right")
        for cells in rows(mine):
            table.add_row(*(escape(cell) for cell in cells))
        if _over_peak(mine):
            table.caption, table.caption_justify = OVER_PEAK_NOTE, "left"
        found.append(table)
    backends = backend_rows(report)
    if backends:
        table = Table(title=f"backends · {BACKENDS_FAMILY} · texts/s next to fidelity against PyTorch fp32",
                      title_justify="left")
        for column in BACKEND_COLUMNS:
            table.add_column(column, justify="left" if column == "system" else "right")
        for cells in backends:
            table.add_row(*(escape(cell) for cell in cells))
        found.append(table)
    return found


BACKEND_COLUMNS = ("system", "texts/s", "× ST OpenVINO", "× PyTorch", "× PT bf16", "× ST", "token cos min / mean",
                   "word cos min / mean", "sentence cos min")


def backend_rows(report: Report) -> list[list[str]]:
    """Every system on the corpus, fastest first: one line per backend x precision, and the baselines."""
    mine = [m for m in report.measurements if m.case.family == BACKENDS_FAMILY and m.provider == "cpu"]
    return [
        [
            m.system,
            f"{m.items_per_s:,.1f}",
            _ratio(m.vs_st_openvino),
            _ratio(m.vs_pytorch),
            _ratio(m.vs_pytorch_bf16),
            _ratio(m.vs_sentence_transformers),
            f"{m.fidelity.token_min_cosine:.5f} / {m.fidelity.token_mean_cosine:.6f}",
            f"{m.fidelity.word_min_cosine:.5f} / {m.fidelity.word_mean_cosine:.6f}",
            _sentences(m),
        ]
        for m in sorted(mine, key=lambda m: -m.items_per_s)
    ]


def markdown_tables(report: Report) -> str:
    """The backends and one table per family, as markdown: readable at any width and in a pipe."""
    lines: list[str] = []
    backends = backend_rows(report)
    if backends:
        lines += [f"## Backends ({BACKENDS_FAMILY}, fastest first)", ""]
        lines += ["| " + " | ".join(BACKEND_COLUMNS) + " |", "|" + "---|" * len(BACKEND_COLUMNS)]
        lines += ["| " + " | ".join(cells) + " |" for cells in backends]
        lines.append("")
    for family in FAMILIES:
        mine = [x for x in report.measurements if x.case.family == family]
        if not mine:
            continue
        lines += [f"## {family}: {_items(mine[0])}", "", f"While these cases ran, {_noise(mine)}.", ""]
        lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows(mine)]
        lines.append("")
        if _over_peak(mine):
            lines += [OVER_PEAK_NOTE, ""]
    return "\n".join(lines)


def markdown(report: Report) -> str:
    """The whole report as markdown: machine, method, one table per family, what was skipped."""
    m = report.machine
    threads = report.settings["threads"]
    lines = [f"# bertonnx bench: {report.title}", ""]
    if report.note:
        lines += [f"> {report.note}", ""]
    lines += [
        f"- Machine: {m.cpu} ({m.vendor}, family {m.family}), {m.cores} cores usable, "
        f"{m.ghz:.2f} GHz nominal; SIMD: {', '.join(m.flags) or 'none found'}",
        f"- Peaks for {threads} thread(s), each row held to the one of the arithmetic its matmuls ran in "
        "(column `peak GFLOP/s (arithmetic)`); estimates: the real clock differs from the nominal one, and a "
        "row over its peak shows `over peak*`, not a share:",
        *(
            f"  - {p.arithmetic} peak: {m.peak_gflops(threads, p.arithmetic):,.0f} GFLOP/s = "
            f"{min(threads, m.cores)} × {m.ghz:.2f} GHz × {p.flops_per_cycle} FLOP/cycle ({p.basis})"
            for p in (m.peaks or (m.peak("fp32"),))
        ),
        f"- Libraries: {', '.join(f'{k} {v}' for k, v in m.versions.items())}",
        f"- ONNX Runtime providers: {', '.join(m.ort_providers)}; GPU: {m.gpu or 'none'}",
        f"- Load average when the run started: {', '.join(f'{x:.2f}' for x in m.load_average)}",
        f"- Created {report.created}; threads {threads} for every system",
        "",
        "Method:",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in report.settings["method"].items()]
    lines += ["", "Bundles: " + ", ".join(f"{Path(b.path).name} ({b.label})" for b in report.bundles), ""]
    lines.append(markdown_tables(report))
    if report.skipped:
        lines += ["## Not measured", ""]
        lines += [f"- {s.what}: {s.reason}" for s in report.skipped]
        lines.append("")
    return "\n".join(lines)


def plots(report: Report, out_dir: Path) -> list[Path]:
    """Speed-up against batch size and sequence length, GFLOP/s against the peaks, and the backends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    grid = [m for m in report.measurements if m.case.family == "grid" and m.provider == "cpu"]
    contextual = [m for m in report.measurements if m.case.path == "contextual" and m.provider == "cpu"]
    written = _speedup_plots(report, grid, out_dir, plt)
    if contextual:
        written.append(_peak_plot(report, contextual, out_dir / "peak.png", plt, ticker))
    corpus = sorted((m for m in contextual if m.case.family == BACKENDS_FAMILY), key=lambda m: m.items_per_s)
    if corpus:
        written.append(_backends_plot(report, corpus, out_dir / "backends.png", plt))
    return written


def _speedup_plots(report: Report, grid: Sequence[Measurement], out_dir: Path, plt: Any) -> list[Path]:
    """Each bertonnx system's speed-up over PyTorch on the grid: against batch size, and against sequence length."""
    fast = list(dict.fromkeys(m.system for m in grid if m.system.startswith("bertonnx ")))
    if not fast:
        return []
    written = []
    for name, x_key, line_key in (
        ("speedup_batch.png", "batch_size", "seq_len"),
        ("speedup_seq.png", "seq_len", "batch_size"),
    ):
        figure, axes = plt.subplots(1, len(fast), figsize=(4.2 * len(fast), 3.6), sharey=True, squeeze=False,
                                    layout="constrained")
        for axis, system in zip(axes[0], fast):
            mine = [m for m in grid if m.system == system and m.vs_pytorch is not None]
            for line in sorted({getattr(m.case, line_key) for m in mine}):
                points = sorted(
                    (getattr(m.case, x_key), m.vs_pytorch) for m in mine if getattr(m.case, line_key) == line
                )
                axis.plot(*zip(*points), marker="o", label=f"{'T' if line_key == 'seq_len' else 'B'}={line}")
            axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
            axis.set_xscale("log", base=2)
            ticks = sorted({getattr(m.case, x_key) for m in mine})
            axis.set_xticks(ticks, [str(t) for t in ticks])
            axis.minorticks_off()
            axis.set_title(system)
            axis.set_xlabel("batch size" if x_key == "batch_size" else "sequence length (tokens)")
            axis.legend(fontsize=8)
        axes[0][0].set_ylabel("speed-up vs PyTorch (×)")
        threads = report.settings["threads"]
        figure.suptitle(_wrap(f"{report.title}: bertonnx speed-up over PyTorch (threads: {threads})"))
        figure.savefig(out_dir / name, dpi=100)
        plt.close(figure)
        written.append(out_dir / name)
    return written


def _peak_plot(report: Report, contextual: Sequence[Measurement], path: Path, plt: Any, ticker: Any) -> Path:
    """Useful GFLOP/s of every contextual system per case beside the peaks of the arithmetic the rows ran
    (left, log scale), and each row's share of its own peak (right, capped at 100 % with a mark)."""
    cases = list(dict.fromkeys(m.case.name for m in contextual))
    threads = report.settings["threads"]
    figure, (speed, share) = plt.subplots(
        1, 2, figsize=(max(10.0, 1.2 * len(cases) + 8), 5.6), layout="constrained"
    )
    x = range(len(cases))
    over = False
    for system in dict.fromkeys(m.system for m in contextual):
        mine = {m.case.name: m for m in contextual if m.system == system}
        kind = next((m.arithmetic for m in mine.values() if m.arithmetic), None)
        # NaN where a system did not run a case, so its line breaks there instead of bridging the gap.
        (line,) = speed.plot(x, [getattr(mine.get(c), "gflops", None) or float("nan") for c in cases], marker="o",
                             label=f"{system} · {kind} peak" if kind else system)
        shares = [getattr(mine.get(c), "peak_share", None) for c in cases]
        share.plot(x, [100 * min(v, 1.0) if v is not None else float("nan") for v in shares], marker="o",
                   color=line.get_color())
        capped = [(i, 100.0) for i, v in enumerate(shares) if v is not None and v > 1]
        if capped:
            over = True
            share.plot(*zip(*capped), linestyle="none", marker="^", markersize=10, color=line.get_color())
    kinds = list(dict.fromkeys(m.arithmetic for m in contextual if m.arithmetic))
    for kind in kinds:
        peak = report.machine.peak_gflops(threads, kind)
        speed.axhline(peak, color="black", linestyle="--", linewidth=0.8)
        # at the left, where the short cases sit far below any peak
        speed.text(0, peak, f"{kind} peak ≈ {peak:,.0f}", va="bottom", ha="left", fontsize=8)
    speed.set_yscale("log")
    speed.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    speed.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    speed.yaxis.set_minor_formatter(ticker.NullFormatter())
    speed.set_ylabel("useful GFLOP/s (log scale)")
    share.set_ylim(0, 110)
    share.set_ylabel("% of the peak of its arithmetic")
    if over:
        share.text(0, 104, "▲ over its peak (capped at 100 %): the peak model is too low", fontsize=8)
    for axis in (speed, share):
        axis.set_xticks(x, cases, rotation=20, ha="right", fontsize=8)
        axis.set_xlim(-0.3, len(cases) - 0.7)
    handles, labels = speed.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=min(3, len(labels)), fontsize=8)
    figure.suptitle(_wrap(f"{report.title}: achieved throughput against the CPU's peaks (estimates), "
                          f"{threads} thread(s), {report.machine.cpu}"), fontsize=10)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _wrap(title: str, width: int = 90) -> str:
    """A figure title on as many lines as it needs: one long line is cut at both sides."""
    return "\n".join(textwrap.wrap(title, width))


def _backends_plot(report: Report, corpus: Sequence[Measurement], path: Path, plt: Any) -> Path:
    """Throughput per system as bars, its minimum token cosine against PyTorch fp32 beside each bar."""
    figure, (speed, fidelity) = plt.subplots(
        1, 2, figsize=(11, 0.45 * len(corpus) + 1.8), sharey=True, gridspec_kw={"width_ratios": [3, 2]},
        layout="constrained",
    )
    names = [m.system for m in corpus]
    colours = ["tab:blue" if name.startswith("bertonnx") else "tab:grey" for name in names]
    speed.barh(names, [m.items_per_s for m in corpus], color=colours)
    for y, m in enumerate(corpus):
        versus = "" if m.vs_st_openvino is None else f" ({m.vs_st_openvino:.2f}× ST OpenVINO)"
        speed.text(m.items_per_s, y, f" {m.items_per_s:,.0f}{versus}", va="center", fontsize=8)
    speed.set_xlim(0, 1.45 * max(m.items_per_s for m in corpus))  # room for the labels
    speed.set_xlabel("texts/s (higher is better)")
    floor = min(0.98, min(m.fidelity.token_min_cosine for m in corpus) - 0.002)
    fidelity.barh(names, [m.fidelity.token_min_cosine - floor for m in corpus], left=floor, color=colours)
    fidelity.axvline(0.999, color="black", linestyle="--", linewidth=0.8)
    fidelity.text(0.999, len(corpus) - 0.5, " bf16 gate", fontsize=7, va="bottom")
    fidelity.set_xlim(floor, 1.0005)
    fidelity.set_xlabel("min token cosine vs PyTorch fp32")
    cpu = report.machine.cpu
    figure.suptitle(_wrap(f"{report.title}: {BACKENDS_FAMILY}, {report.settings['threads']} threads, {cpu}", 110),
                    fontsize=10)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


OVER_PEAK = "over peak*"
"""In place of a share above 100 %: the row beat the peak modelled for its arithmetic, so that model is wrong."""
OVER_PEAK_NOTE = (
    "* over peak: faster than the peak modelled for its arithmetic, so the model is too low for this row "
    "(a clock above the nominal one, or arithmetic the model does not know); no share is given"
)


def _throughput(m: Measurement) -> str:
    """Useful GFLOP/s and its share of the row's own peak, never a share over 100 %."""
    if m.gflops is None:
        return "–"
    if m.peak_share is None:
        return f"{m.gflops:.1f}"
    return f"{m.gflops:.1f} ({OVER_PEAK if m.peak_share > 1 else f'{m.peak_share:.0%}'})"


def _over_peak(measurements: Sequence[Measurement]) -> bool:
    return any(m.peak_share is not None and m.peak_share > 1 for m in measurements)


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _noise(measurements: Sequence[Measurement]) -> str:
    """How much of the CPU other processes took while the cases ran: the figures' noise."""
    loads = [m.others_load for m in measurements if m.others_load is not None]
    if not loads:
        return "other processes' CPU use unknown"
    return f"other processes took {min(loads):.0%}–{max(loads):.0%} of the CPU"


def _items(m: Measurement) -> str:
    return "items are words" if m.case.path == "static" else "items are texts"
