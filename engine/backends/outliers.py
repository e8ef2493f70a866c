"""The fp32 graph made ready for int8 on CPUs with int8 dot products: outliers moved out of int8's way.

An activation is quantised with one range per tensor, so a few channels ten to twenty times the others set the
step for all of them (on all-MiniLM-L6-v2 the largest calibration |x| of a feed-forward input is ~28, the median
channel's ~2). Two changes, both exact in float, made before NNCF quantises the graph (its own SmoothQuant off):

- The feed-forward blocks (MatMul, bias, an elementwise activation such as GELU, MatMul) keep their `neurons`
  intermediate neurons of largest calibration output (over `feeds` and `wide_feeds`: prose, and every vocabulary
  entry alone, so a topic the prose never touches still counts) as a small float block on the side (hidden -> n,
  the same activation, n -> hidden), added after the down-projection's bias: the int8 down-projection never sees
  them. It is cheaper than float down-projections (the word recipe before this one) and needs no gather or mask.
- Every other MatMul with a constant weight is smoothed (SmoothQuant: x / s into the weight as W * s, s from
  calibration maxima with NNCF's formula) at `alpha`, x / s folded into what made x where that is exact (folds.py).
  The down-projections are not, unless `down_alpha` is given (the sentence recipe, with their maxima over
  `wide_feeds` too): smoothing them put the word recipe's error into their weights.

all-MiniLM-L6-v2, Zen 4 (see benchmarks/README.md): word cosine mean / min on held-out prose 0.9982 / 0.988
(0.986 with the neurons chosen on prose alone; every MatMul int8 with NNCF's defaults: 0.9951 / 0.958;
down-projections float: 0.9987 / 0.990), at the speed of every MatMul in int8.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bertonnx.backends import folds

SIDE = "outlier_float"
SIDE_PATTERN = rf".*/{SIDE}/.*"
"""The float side blocks' operations, by name: NNCF leaves them float."""
_ELEMENTWISE = {"Add", "Subtract", "Multiply", "Divide", "Erf", "Tanh", "Power", "Sqrt", "Gelu", "Relu", "Sigmoid",
                "Swish", "HSwish", "Exp", "Clamp"}


def prepare(model: Any, feeds: Sequence[dict[str, np.ndarray]], alpha: float, neurons: int,
            down_alpha: float | None = None, wide_feeds: Sequence[dict[str, np.ndarray]] = ()) -> Any:
    """`model` (fp32) with its feed-forward outliers split off and its other MatMuls smoothed, the statistics from
    running it on `feeds`; the scales folded into weights where that is exact (folds.py), else Multiply nodes.
    The result is checked against `model` on a feed: a fold that does not hold on this graph is not used."""
    expected = _outputs(model, feeds[:1])
    folded = _prepare(model.clone(), feeds, alpha, neurons, down_alpha, wide_feeds, fold=True)
    for want, got in zip(expected, _outputs(folded, feeds[:1])):
        if not np.allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max())):
            return _prepare(model, feeds, alpha, neurons, down_alpha, wide_feeds, fold=False)
    return folded


def _prepare(model: Any, feeds: Sequence[dict[str, np.ndarray]], alpha: float, neurons: int,
             down_alpha: float | None, wide_feeds: Sequence[dict[str, np.ndarray]], fold: bool) -> Any:
    if fold:
        scalars = folds.scalar_multiplies(model)
        folds.fold_scalars(scalars, _values(model, [scalar for _, scalar in scalars], feeds[:4]))
    ffns = [ffn for ffn in map(_ffn_from, _weighted_matmuls(model)) if ffn is not None]
    downs = {ffn[3].get_friendly_name() for ffn in ffns}
    groups: dict[tuple[str, int], list[Any]] = {}
    for matmul in _weighted_matmuls(model):
        if matmul.get_friendly_name() not in downs:
            source = matmul.input_value(0)
            groups.setdefault((source.get_node().get_friendly_name(), source.get_index()), []).append(matmul)
    smoothed = list(groups.values())
    maxima = _channel_maxima(model, [g[0].input_value(0) for g in smoothed] + [f[3].input_value(0) for f in ffns],
                             feeds)
    if wide_feeds:  # feed-forward neurons that prose never wakes but some word does: split off, or smoothed
        wide = _channel_maxima(model, [f[3].input_value(0) for f in ffns], wide_feeds)
        maxima[len(smoothed):] = [np.maximum(a, b) for a, b in zip(maxima[len(smoothed):], wide)]
    for matmuls, top in zip(smoothed, maxima):
        _smooth(matmuls, top, alpha, fold)
    for ffn, top in zip(ffns, maxima[len(smoothed):]):
        if neurons:
            _split(ffn, top, neurons)
        if down_alpha is not None:
            _smooth([ffn[3]], _without(top, neurons), down_alpha, fold)
    model.validate_nodes_and_infer_types()
    return model


def _weighted_matmuls(model: Any) -> list[Any]:
    """MatMuls of an activation by a constant f32 (K, N) weight."""
    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or op.get_transpose_a() or op.get_transpose_b():
            continue
        weight = op.input_value(1).get_node()
        constant = weight.get_type_name() == "Constant" and weight.get_element_type().get_type_name() == "f32"
        activation = op.input_value(0).get_node().get_type_name() != "Constant"
        if constant and activation and len(weight.get_output_shape(0)) == 2:
            found.append(op)
    return found


def _only_consumer(node: Any) -> Any | None:
    targets = list(node.output(0).get_target_inputs())
    return targets[0].get_node() if len(targets) == 1 else None


def _bias(matmul: Any) -> Any | None:
    """The Add of a constant (N,) vector that is `matmul`'s one consumer (a Linear's bias), if there is one."""
    add = _only_consumer(matmul)
    if add is None or add.get_type_name() != "Add" or folds.constant_port(add) is None:
        return None
    bias = add.input_value(folds.constant_port(add)).get_node()
    width = matmul.get_output_partial_shape(0)[-1]
    return add if width.is_static and list(bias.get_output_shape(0)) == [width.get_length()] else None


def _ffn_from(up: Any) -> tuple[Any, ...] | None:
    """(up, its bias, the activation's nodes, down, its bias) where `up` opens a feed-forward block, else None:
    the activation is elementwise with scalar constants only, and its one way out is the down-projection."""
    up_bias = _bias(up)
    if up_bias is None:
        return None
    activation: list[Any] = []
    frontier, down = [up_bias], None
    while frontier:
        node = frontier.pop()
        for target in node.output(0).get_target_inputs():
            nxt = target.get_node()
            if nxt.get_type_name() == "MatMul" and target.get_index() == 0 and _bias(nxt) is not None:
                if down is not None and nxt is not down and nxt.get_friendly_name() != down.get_friendly_name():
                    return None
                down = nxt
            elif nxt.get_type_name() in _ELEMENTWISE and all(
                nxt.input_value(i).get_node().get_type_name() != "Constant"
                or int(np.prod(nxt.input_value(i).get_shape())) == 1 for i in range(nxt.get_input_size())
            ):
                if all(nxt.get_friendly_name() != seen.get_friendly_name() for seen in activation):
                    activation.append(nxt)
                    frontier.append(nxt)
            else:
                return None
    if down is None or not activation or down.input_value(1).get_node().get_type_name() != "Constant":
        return None
    return up, up_bias, activation, down, _bias(down)


def _probe(model: Any, sources: list[Any]) -> Any:
    """An fp32 request computing `model`'s outputs and `sources` (after them, in order)."""
    from bertonnx.backends.openvino import openvino_module, shared_core

    probe = openvino_module().Model([*model.outputs, *sources], model.get_parameters())
    return shared_core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()


def _outputs(model: Any, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    request = _probe(model, [])
    found = []
    for feed in feeds:
        request.infer(feed)
        found += [np.array(request.get_output_tensor(i).data, copy=True) for i in range(len(model.outputs))]
    return found


def _values(model: Any, scalars: list[Any], feeds: Sequence[dict[str, np.ndarray]]) -> list[list[float]]:
    """The value each of `scalars` takes on each feed."""
    if not scalars:
        return []
    request, first = _probe(model, scalars), len(model.outputs)
    seen: list[list[float]] = [[] for _ in scalars]
    for feed in feeds:
        request.infer(feed)
        for index, values in enumerate(seen):
            values.append(float(request.get_output_tensor(first + index).data.reshape(-1)[0]))
    return seen


def _channel_maxima(model: Any, sources: list[Any], feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Largest |x| per channel (last axis) of each of `sources` over `feeds`, in fp32."""
    request, first = _probe(model, sources), len(model.outputs)
    maxima = [np.zeros(source.get_partial_shape()[-1].get_length(), dtype=np.float32) for source in sources]
    for feed in feeds:
        request.infer(feed)
        for index, top in enumerate(maxima):
            values = np.abs(request.get_output_tensor(first + index).data).reshape(-1, top.size)
            np.maximum(top, values.max(axis=0), out=top)
    return maxima


def _smooth(matmuls: list[Any], top: np.ndarray, alpha: float, fold: bool) -> None:
    """SmoothQuant on MatMuls that read one input: s = max|x|^a / max|w|^(1-a), clipped as NNCF clips it."""
    weights = [folds.data(m.input_value(1)) for m in matmuls]  # (K, N) each
    widest = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    scale = np.power(np.maximum(top, 1e-5), alpha) / np.power(np.maximum(widest, 1e-5), 1 - alpha)
    scale = np.clip(scale, np.quantile(scale, 0.1), 1e2).astype(np.float32)
    name = f"{matmuls[0].get_friendly_name()}/smooth"
    if fold:
        folds.divide_channels(matmuls[0].input_value(0), scale, matmuls, name)
    else:
        folds.multiply_channels(matmuls[0].input_value(0), scale, matmuls, name)
    ops = folds.ops()
    for matmul, weight in zip(matmuls, weights):
        matmul.input(1).replace_source_output(ops.constant(weight * scale[:, None]).output(0))


def _side_channels(top: np.ndarray, neurons: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(the `neurons` channels of largest `top`, the rest), each in order: what _split moves to the side and
    keeps; None where nothing moves (no neurons asked, or a block this narrow has no few outliers to speak of)."""
    if not neurons or top.size < 4 * neurons:
        return None
    out = np.sort(np.argsort(top)[::-1][:neurons])
    return out, np.setdiff1d(np.arange(top.size), out)


def _without(top: np.ndarray, neurons: int) -> np.ndarray:
    """`top` without the channels _split moved to the side, in order."""
    split = _side_channels(top, neurons)
    return top if split is None else top[split[1]]


def _split(ffn: tuple[Any, ...], top: np.ndarray, neurons: int) -> None:
    """The `neurons` intermediate neurons of largest |activation| moved to a float block on the side."""
    from openvino.utils.node_factory import NodeFactory

    ops, factory = folds.ops(), NodeFactory("opset13")
    up, up_bias, activation, down, down_bias = ffn
    split = _side_channels(top, neurons)
    if split is None:
        return
    out, keep = split
    w_up = folds.data(up.input_value(1))
    port = folds.constant_port(up_bias)
    b_up = folds.data(up_bias.input_value(port))
    w_down = folds.data(down.input_value(1))
    name = f"{up.get_friendly_name()}/{SIDE}"
    side = ops.matmul(up.input_value(0), ops.constant(w_up[:, out]), False, False)
    side.set_friendly_name(f"{name}/up")
    side = ops.add(side, ops.constant(b_up[out]))
    copies = {up_bias.get_friendly_name(): side.output(0)}
    for node in _in_order(activation, up_bias):
        inputs = [copies.get(node.input_value(i).get_node().get_friendly_name(), node.input_value(i))
                  for i in range(node.get_input_size())]
        copy = factory.create(node.get_type_name(), inputs, node.get_attributes())
        copy.set_friendly_name(f"{name}/{node.get_friendly_name().rsplit('/', 1)[-1]}")
        copies[node.get_friendly_name()] = copy.output(0)
    side = ops.matmul(copies[down.input_value(0).get_node().get_friendly_name()], ops.constant(w_down[out]), False,
                      False)
    side.set_friendly_name(f"{name}/down")
    up.input(1).replace_source_output(ops.constant(w_up[:, keep]).output(0))
    up_bias.input(port).replace_source_output(ops.constant(b_up[keep]).output(0))
    down.input(1).replace_source_output(ops.constant(w_down[keep]).output(0))
    consumers = list(down_bias.output(0).get_target_inputs())
    joined = ops.add(down_bias.output(0), side.output(0))
    joined.set_friendly_name(f"{name}/add")
    for consumer in consumers:
        consumer.replace_source_output(joined.output(0))


def _in_order(nodes: list[Any], start: Any) -> list[Any]:
    """`nodes` ordered so that every node comes after those of its inputs that are among them."""
    done = {start.get_friendly_name()}
    pending, ordered = list(nodes), []
    while pending:
        for node in pending:
            sources = {node.input_value(i).get_node().get_friendly_name() for i in range(node.get_input_size())}
            names = {n.get_friendly_name() for n in nodes} | done
            if all(s in done or s not in names for s in sources):
                ordered.append(node)
                done.add(node.get_friendly_name())
                pending.remove(node)
                break
        else:
            raise ValueError("the activation's nodes form a cycle")
    return ordered
