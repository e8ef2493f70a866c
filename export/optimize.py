"""Graph optimisation, fp16 conversion and int8 quantisation through optimum's ORT tools.

Each step reads `model.onnx` (+ `config.json`) from a work folder and writes a
new graph; the caller validates it before it can enter a bundle.
"""

from __future__ import annotations

import itertools
import platform
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bertonnx.bundle import MODEL_FILE
from bertonnx.export.convert import ExportError


@dataclass(frozen=True)
class QuantSettings:
    """One point of the dynamic int8 search."""

    per_channel: bool
    weights: str  # "QInt8" or "QUInt8"
    reduce_range: bool
    operators: tuple[str, ...]  # op types quantised; Gather never, so the static output stays exact
    keep_fp32: str  # "none", or "ffn-down": the feed-forward down-projections, whose GELU inputs have outliers

    def label(self) -> str:
        return (
            f"{'per-channel' if self.per_channel else 'per-tensor'} {self.weights}"
            f"{' reduce-range' if self.reduce_range else ''} ops={'+'.join(self.operators)}"
            f" fp32={self.keep_fp32}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return set(line.split(":", 1)[-1].split())


def cpu_target() -> str:
    """optimum's preset for this CPU: avx512_vnni, avx512, avx2 or arm64."""
    flags = cpu_flags()
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def quant_search_space(fused_attention: bool) -> Iterator[QuantSettings]:
    """The settings tried. reduce_range matters only on CPUs without VNNI (VPMADDUBSW saturation)."""
    operators = [("MatMul",), ("MatMul", "Attention")] if fused_attention else [("MatMul",)]
    reduce_ranges = (False,) if cpu_target() in ("avx512_vnni", "arm64") else (False, True)
    for keep, per_channel, weights, reduce_range, ops in itertools.product(
        ("none", "ffn-down"), (True, False), ("QInt8", "QUInt8"), reduce_ranges, operators
    ):
        yield QuantSettings(per_channel, weights, reduce_range, ops, keep)


def optimize_graph(work: Path, out: Path, fp16: bool = False) -> None:
    """ORTOptimizer's transformer fusions (attention, GELU, LayerNorm); fp16 implies GPU layout."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    optimizer = ORTOptimizer.from_pretrained(work, file_names=[MODEL_FILE])
    config = OptimizationConfig(
        optimization_level=2, optimize_for_gpu=fp16, fp16=fp16, disable_shape_inference=False
    )
    scratch = out.parent / f"{out.stem}.optimizing"
    optimizer.optimize(config, scratch, file_suffix=None)
    _take_graph(scratch, out)


def quantize_int8(source: Path, out: Path, settings: QuantSettings) -> None:
    """Dynamic int8 through ONNX Runtime's quantizer.

    Called directly rather than through optimum's ORTQuantizer: that wrapper
    cannot pass DefaultTensorType, without which the quantizer fails on graphs
    the optimiser fused (contrib ops defeat ONNX shape inference).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    quantize_dynamic(
        model,
        str(out),
        per_channel=settings.per_channel,
        reduce_range=settings.reduce_range,
        weight_type=getattr(QuantType, settings.weights),
        op_types_to_quantize=list(settings.operators),
        nodes_to_exclude=ffn_down_projections(model) if settings.keep_fp32 == "ffn-down" else [],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def ffn_down_projections(model: Any) -> list[str]:
    """MatMul nodes whose weight maps a wider input to a narrower output: intermediate -> hidden."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul"
        and any(len(shapes.get(name, ())) == 2 and shapes[name][0] > shapes[name][1] for name in node.input)
    ]


def has_fused_attention(path: Path) -> bool:
    return any(node.op_type == "Attention" for node in _graph(path).node)


def graph_inputs(path: Path) -> list[str]:
    """The inputs the graph declares: DistilBERT, for one, takes no token_type_ids."""
    return [value.name for value in _graph(path).input]


def _graph(path: Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


def _take_graph(scratch: Path, out: Path) -> None:
    """Move the one .onnx file optimum wrote into place and drop its side files."""
    written = sorted(scratch.glob("*.onnx"))
    if len(written) != 1:
        raise ExportError(f"{scratch}: expected one .onnx file from optimum, found {[p.name for p in written]}")
    written[0].replace(out)
    shutil.rmtree(scratch, ignore_errors=True)
