"""Constant scales folded into the weights that made their input, so an int8 graph has no float Multiply left.

In an int8 OpenVINO graph a Multiply by a constant on a MatMul's input is not free: the FakeQuantize after it takes
one range per tensor (the CPU plugin refuses per-channel input ranges on the last axis), so the Multiply stays a
node of its own, with bf16/f32 reorders around it. On all-MiniLM-L6-v2 (Zen 4, 32 x 48 tokens) the attention's
scalar scaling of queries and keys and the smoothing of the MatMul inputs took ~2 ms of every layer's ~11.
Both fold away exactly in float:

- a scalar times the output of a Linear (MatMul by a constant, plus a constant bias), through Reshape/Transpose:
  the scalar goes into the weight and the bias (BERT's 1/sqrt(sqrt(head size)) on queries and keys);
- x / s per channel (SmoothQuant), where x is a per-channel affine map of the last axis (a LayerNorm's gamma and
  beta): s goes into gamma and beta, and the map's other consumers (the residual) get x * s back, which OpenVINO
  fuses into the residual Add; where x is attention's context (probabilities times values, heads merged back),
  s goes into the value projection.

Anything else keeps its Multiply. Shapes alone do not prove that a channel maps to the same channel through
reshapes; prepare() (outliers.py) checks the whole graph against the original on a calibration feed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_PASS_THROUGH = {"Reshape", "Transpose"}
_SHAPE_ONLY = {"ShapeOf"}


def ops() -> Any:
    """OpenVINO's opset that the graph edits here (and in outliers.py) build nodes from."""
    from bertonnx.backends.openvino import openvino_module

    return openvino_module().opset13


def _is_constant(output: Any) -> bool:
    return output.get_node().get_type_name() == "Constant"


def constant_port(node: Any) -> int | None:
    """The one input of `node` fed by a Constant, or None where there is not exactly one."""
    ports = [i for i in range(node.get_input_size()) if _is_constant(node.input_value(i))]
    return ports[0] if len(ports) == 1 else None


def data(output: Any) -> np.ndarray:
    """A Constant's values, as float32."""
    return output.get_node().get_data().astype(np.float32)


def _through_reshapes(output: Any) -> Any | None:
    """The node whose output reaches `output` through Reshape/Transpose alone, each step read by nothing else."""
    node = output.get_node()
    while node.get_type_name() in _PASS_THROUGH:
        if len(_value_consumers(node.output(0))) != 1:
            return None
        node = node.input_value(0).get_node()
    return node


def _value_consumers(output: Any) -> list[Any]:
    """The inputs that read `output`'s values (ShapeOf reads only its shape)."""
    return [t for t in output.get_target_inputs() if t.get_node().get_type_name() not in _SHAPE_ONLY]


def _linear_before(output: Any) -> tuple[Any, Any] | None:
    """(MatMul, bias Add) of the Linear whose output reaches `output` through Reshape/Transpose alone, each step
    read by nothing else, or None."""
    node = _through_reshapes(output)
    port = None if node is None or node.get_type_name() != "Add" else constant_port(node)
    if port is None or len(_value_consumers(node.output(0))) != 1:
        return None
    matmul = node.input_value(1 - port).get_node()
    if (matmul.get_type_name() != "MatMul" or matmul.get_transpose_b() or not _is_constant(matmul.input_value(1))
            or len(_value_consumers(matmul.output(0))) != 1):
        return None
    width = matmul.input_value(1).get_shape()[-1]
    if list(node.input_value(port).get_shape()) not in ([width], [1, 1, width]):
        return None
    return matmul, node


def _scale_linear(matmul: Any, bias: Any, factor: np.ndarray) -> None:
    """The Linear's output times `factor` (scalar or per output channel), in its weight and bias."""
    port = constant_port(bias)
    weight, shift = data(matmul.input_value(1)), data(bias.input_value(port))
    matmul.input(1).replace_source_output(ops().constant((weight * factor).astype(np.float32)).output(0))
    scaled = (shift.reshape(-1) * factor).reshape(shift.shape).astype(np.float32)
    bias.input(port).replace_source_output(ops().constant(scaled).output(0))


def scalar_multiplies(model: Any) -> list[tuple[Any, Any]]:
    """(Multiply, its scalar input) for each Multiply of a Linear's output by a scalar computed at run time
    (from shapes, as BERT's attention scaling is): candidates for fold_scalars."""
    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Multiply":
            continue
        for port in range(2):
            scalar, other = op.input_value(port), op.input_value(1 - port)
            shape = scalar.get_partial_shape()
            if (shape.is_static and int(np.prod(shape.to_shape())) == 1 and not _is_constant(scalar)
                    and _linear_before(other) is not None):
                found.append((op, scalar))
                break
    return found


def fold_scalars(found: Sequence[tuple[Any, Any]], values: Sequence[Sequence[float]]) -> int:
    """Each Multiply of `found` folded into its Linear where its scalar took one value on every feed; the count."""
    folded = 0
    for (multiply, scalar), seen in zip(found, values):
        if len(set(seen)) != 1:
            continue
        other = multiply.input_value(1 - next(i for i in range(2) if multiply.input_value(i) == scalar))
        matmul, bias = _linear_before(other)  # type: ignore[misc]
        _scale_linear(matmul, bias, np.float32(seen[0]))
        for target in list(multiply.output(0).get_target_inputs()):
            target.replace_source_output(other)
        folded += 1
    return folded


def divide_channels(source: Any, scale: np.ndarray, readers: Sequence[Any], name: str) -> None:
    """`readers` (nodes reading `source` on their input 0) read source / scale instead: folded into the
    producer where that is exact, else through a Multiply named `name`."""
    if not (_into_affine(source, scale, readers) or _into_values(source, scale)):
        multiply_channels(source, scale, readers, name)


def multiply_channels(source: Any, scale: np.ndarray, readers: Sequence[Any], name: str) -> None:
    """`readers` read source / scale through a Multiply named `name`."""
    divided = ops().multiply(source, ops().constant((1.0 / scale).astype(np.float32)))
    divided.set_friendly_name(name)
    for reader in readers:
        reader.input(0).replace_source_output(divided.output(0))


def _into_affine(source: Any, scale: np.ndarray, readers: Sequence[Any]) -> bool:
    """source = y * gamma + beta per channel (a LayerNorm's last step): both divided by scale; every other value
    consumer of source gets source * scale back."""
    add = source.get_node()
    beta_port = constant_port(add) if add.get_type_name() == "Add" and source.get_index() == 0 else None
    if beta_port is None:
        return False
    multiply = add.input_value(1 - beta_port).get_node()
    gamma_port = constant_port(multiply) if multiply.get_type_name() == "Multiply" else None
    if gamma_port is None or len(_value_consumers(multiply.output(0))) != 1:
        return False
    gamma, beta = data(multiply.input_value(gamma_port)), data(add.input_value(beta_port))
    if gamma.size != scale.size or beta.size != scale.size:
        return False
    reading = {reader.get_friendly_name() for reader in readers}
    others = [t for t in _value_consumers(source) if t.get_node().get_friendly_name() not in reading]
    if others:
        restored = ops().multiply(source, ops().constant(scale.astype(np.float32)))
        for target in others:
            target.replace_source_output(restored.output(0))
    multiply.input(gamma_port).replace_source_output(
        ops().constant((gamma.reshape(-1) / scale).reshape(gamma.shape).astype(np.float32)).output(0))
    add.input(beta_port).replace_source_output(
        ops().constant((beta.reshape(-1) / scale).reshape(beta.shape).astype(np.float32)).output(0))
    return True


def _into_values(source: Any, scale: np.ndarray) -> bool:
    """source = attention's context, heads merged (Reshape/Transpose of probabilities @ values): scale divides
    the value projection's output channels."""
    node = _through_reshapes(source)
    if (node is None or node.get_type_name() != "MatMul" or node.get_transpose_b()
            or len(_value_consumers(node.output(0))) != 1):
        return False
    linear = _linear_before(node.input_value(1))
    if linear is None or linear[0].input_value(1).get_shape()[-1] != scale.size:
        return False
    _scale_linear(*linear, (1.0 / scale).astype(np.float32))
    return True
