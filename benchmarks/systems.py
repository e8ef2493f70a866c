"""The systems compared: each does the same job on the same inputs, with the same thread count.

Contextual path (texts -> last hidden states):
    pytorch                transformers AutoModel, eager, inference_mode; naive batches of 32
                           in input order, padded to the longest text of each batch.
    pytorch bf16 autocast  the same model under torch.autocast("cpu", dtype=torch.bfloat16), with
                           texts sorted by length into batches of 32 as sentence-transformers
                           does: the strongest thing a PyTorch user has on a CPU with native bf16.
    sentence-transformers  its own `encode` (batches of 32, sorted by length), same weights.
    ST onnx / ST openvino  the same `encode` on sentence-transformers' own ONNX Runtime and OpenVINO
                           backends (`SentenceTransformer(model, backend=...)`, exported on load by
                           optimum-onnx / optimum-intel), OpenVINO at its default precision (bf16 on
                           a CPU with native bf16) and, where that differs, at f32: the peer a user
                           picks instead of bertonnx with one argument.
    bertonnx <bundle>      `Embedder.contextual` on ONNX Runtime at the bundle's precision:
                           tokenization, token-budget batches, word pooling.
    bertonnx auto (<backend> <precision>)
                           the same with backend="auto": the engine's own pick, named once loaded
                           by what it picked (planned as "bertonnx auto").
    bertonnx <backend> <precision>
                           the same on another backend and precision (OpenVINO fp32, bf16, int8).
    bertonnx openvino int8 (sentences recipe)
                           OpenVINO int8's sentence recipe (every MatMul int8, held to the sentence
                           gate): what `fastest` serves sentence vectors with where it wins.
Static path (words -> context-free vectors):
    pytorch embedding      the transformers tokenizer, then the model's nn.Embedding and a
                           segment mean (index_add_).
    numpy (naive)          the tokenizers library, then a Python loop of table[ids].mean(0).
    bertonnx static        `Embedder.static`.

This module plans which of them run here, and builds one from its spec: the peers live in
bertonnx.benchmarks.peer_systems, bertonnx's own in bertonnx.benchmarks.bertonnx_systems, and what every
system answers (run, outputs, cannot_run) in bertonnx.benchmarks.contract.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bertonnx.backends.choose import Machine, choose, this_machine
from bertonnx.backends.onnxruntime import CPU, CUDA
from bertonnx.benchmarks.bertonnx_systems import AUTO_LABEL, BertonnxContextual, BertonnxStatic
from bertonnx.benchmarks.contract import System, SystemSpec
from bertonnx.benchmarks.peer_systems import NumpyStatic, SentenceTransformerContextual, TorchContextual, TorchStatic
from bertonnx.benchmarks.workloads import Skipped
from bertonnx.bundle import load_bundle
from bertonnx.errors import BertonnxError, OptionError

ST_BACKEND_MODULES = {"onnx": "optimum.onnxruntime", "openvino": "optimum.intel"}
"""What sentence-transformers' backend="onnx" and backend="openvino" import (optimum-onnx, optimum-intel)."""
ST_OPENVINO = "ST openvino"
"""The label of sentence-transformers' OpenVINO backend at its default precision: the headline peer."""
PEERS_INSTALL = 'pip install -c constraints.txt -e ".[peers]"'
"""How to get the peers (sentence-transformers, optimum-onnx, optimum-intel) from a clone of bertonnx: the package
is on no index, so `pip install 'bertonnx[peers]'` cannot work."""
PEERS_HINT = f"from a clone of bertonnx, {PEERS_INSTALL}"
SENTENCE_RECIPE = "int8/sentences"
"""OpenVINO int8's sentence recipe in a sweep (`--backends openvino:int8/sentences`): precision, then recipe kind."""
DEFAULT_BACKENDS = ("auto", "onnxruntime")
"""What the engine picks here, and ONNX Runtime at the bundle's precision beside it."""


@dataclass(frozen=True)
class Availability:
    """What this machine can run, detected once; plain so planning can be tested anywhere."""

    ort_providers: tuple[str, ...]
    torch_cuda: bool
    sentence_transformers: bool
    machine: Machine = Machine(frozenset({"onnxruntime"}), (CPU,), frozenset())  # backends and CPU flags
    st_backends: frozenset[str] = frozenset()  # sentence-transformers' own backends installed: onnx, openvino

    @classmethod
    def detect(cls) -> Availability:
        import torch

        machine = this_machine()
        return cls(
            ort_providers=machine.ort_providers,
            torch_cuda=bool(torch.cuda.is_available()),
            sentence_transformers=importlib.util.find_spec("sentence_transformers") is not None,
            machine=machine,
            st_backends=frozenset(name for name, module in ST_BACKEND_MODULES.items() if _installed(module)),
        )


@dataclass(frozen=True)
class BundleFacts:
    """What planning needs to know about a bundle."""

    path: str
    precision: str  # fp32 | fp16 | int8
    optimized: bool

    @property
    def label(self) -> str:
        return "optimized" if self.precision == "fp32" and self.optimized else self.precision

    @classmethod
    def read(cls, path: str | Path) -> BundleFacts:
        bundle = load_bundle(path, verify=False)
        return cls(str(bundle.path), bundle.precision, bool(bundle.manifest["onnx"].get("optimized", False)))


def plan_systems(
    bundles: Sequence[BundleFacts],
    torch_model: str,
    providers: Sequence[str],
    threads: int,
    available: Availability,
    backends: Sequence[str] = DEFAULT_BACKENDS,
) -> tuple[list[SystemSpec], list[Skipped]]:
    """Which systems to build for these providers and backends, and why each one left out was.

    CUDA runs only where both ONNX Runtime and torch can use a GPU, so that
    every GPU figure has a GPU baseline; fp16 bundles run only on CUDA, int8
    bundles only on CPU (dynamic int8 kernels are CPU kernels). The static path
    is a host-side table lookup and runs once, on CPU.

    Args:
        backends: "onnxruntime" (each bundle at its own precision), "auto" (what
            the engine picks here), "all" (every backend x precision this machine
            has), or "BACKEND:PRECISION" such as "openvino:bf16".
    """
    unknown = sorted(set(providers) - {"cpu", "cuda"})
    if unknown:
        raise OptionError(f"unknown provider {', '.join(unknown)}; expected cpu and/or cuda")
    labels = _bundle_labels(bundles)
    specs: list[SystemSpec] = []
    skipped: list[Skipped] = []
    for provider in providers:
        reason = cuda_unavailable(available) if provider == "cuda" else None
        if reason is not None:
            skipped.append(Skipped("every system on cuda", reason))
            continue
        found, left_out = _baselines(torch_model, provider, threads, available)
        specs += found
        skipped += left_out
        for facts, label in zip(bundles, labels):
            found, left_out = _bundle_systems(facts, label, len(bundles) > 1, provider, threads, available, backends)
            specs += [spec for spec in found if spec not in specs]  # a spec planned already runs once
            skipped += left_out
    return specs + _static_systems(bundles, torch_model, threads), skipped


def _suffix(provider: str) -> str:
    return "" if provider == "cpu" else " [cuda]"


def _baselines(
    torch_model: str, provider: str, threads: int, available: Availability
) -> tuple[list[SystemSpec], list[Skipped]]:
    """PyTorch (and, on a CPU with native bf16, its bf16 autocast) and sentence-transformers on one provider."""
    suffix = _suffix(provider)
    specs = [SystemSpec("pytorch", "pytorch" + suffix, "contextual", torch_model, provider, threads)]
    skipped: list[Skipped] = []
    if provider == "cpu" and available.machine.native_bf16:
        specs.append(SystemSpec("pytorch-bf16", "pytorch bf16 autocast", "contextual", torch_model, "cpu", threads))
    elif provider == "cpu":
        skipped.append(Skipped("pytorch bf16 autocast", "this CPU has neither AMX nor AVX512-BF16"))
    if not available.sentence_transformers:
        skipped.append(Skipped("sentence-transformers" + suffix,
                               f"sentence-transformers is not installed; {PEERS_HINT}"))
        return specs, skipped
    specs.append(
        SystemSpec("sentence-transformers", "sentence-transformers" + suffix, "contextual", torch_model, provider,
                   threads)
    )
    if provider == "cpu":
        peers, left_out = _st_peers(torch_model, threads, available)
        specs += peers
        skipped += left_out
    return specs, skipped


def _bundle_systems(
    facts: BundleFacts,
    label: str,
    several: bool,
    provider: str,
    threads: int,
    available: Availability,
    backends: Sequence[str],
) -> tuple[list[SystemSpec], list[Skipped]]:
    """One bundle on one provider under every backend and precision of the sweep, or why it cannot run.

    Args:
        several: more than one bundle is benchmarked, so a backend's row names its bundle.
    """
    name = f"bertonnx {label}{_suffix(provider)}"
    if facts.precision == "fp16" and provider == "cpu":
        return [], [Skipped(name, "fp16 graphs are for the CUDA provider")]
    if facts.precision == "int8" and provider == "cuda":
        return [], [Skipped(name, "dynamic int8 graphs run on CPU kernels")]
    specs: list[SystemSpec] = []
    skipped: list[Skipped] = []
    for backend, entry in _sweep(backends, facts, available.machine, provider):
        precision, _, recipe = entry.partition("/")
        if (backend, precision) == ("onnxruntime", facts.precision):
            specs.append(SystemSpec("bertonnx", name, "contextual", facts.path, provider, threads,
                                    "onnxruntime", facts.precision, "onnxruntime"))
            continue
        other = AUTO_LABEL if backend == "auto" else f"bertonnx {backend} {precision}"
        other += f" ({recipe} recipe)" if recipe else ""
        other += f" · {label} bundle" if several else ""
        try:
            if backend != "auto":
                choose(backend, precision, facts.precision, available.machine, provider)
        except BertonnxError as error:
            skipped.append(Skipped(other, str(error)))
            continue
        specs.append(SystemSpec("bertonnx", other, "contextual", facts.path, provider, threads, backend, precision,
                                backend, recipe))
    return specs, skipped


def _static_systems(bundles: Sequence[BundleFacts], torch_model: str, threads: int) -> list[SystemSpec]:
    """The static path once, on CPU, on the first bundle that is not fp16 (else the first): a table lookup."""
    static_bundle = next((b for b in bundles if b.precision != "fp16"), bundles[0] if bundles else None)
    if static_bundle is None:
        return []
    return [
        SystemSpec("pytorch-embedding", "pytorch embedding", "static", torch_model, "cpu", threads),
        SystemSpec("numpy", "numpy (naive)", "static", static_bundle.path, "cpu", threads),
        SystemSpec("bertonnx-static", "bertonnx static", "static", static_bundle.path, "cpu", threads),
    ]


def _st_peers(torch_model: str, threads: int, available: Availability) -> tuple[list[SystemSpec], list[Skipped]]:
    """sentence-transformers' own ONNX and OpenVINO backends on the CPU, or why each is left out."""
    specs: list[SystemSpec] = []
    skipped: list[Skipped] = []
    if "onnx" in available.st_backends:
        specs.append(SystemSpec("sentence-transformers", "ST onnx", "contextual", torch_model, "cpu", threads, "onnx"))
    else:
        skipped.append(Skipped("ST onnx", f"optimum-onnx is not installed; {PEERS_HINT}"))
    if "openvino" not in available.st_backends:
        skipped.append(Skipped(ST_OPENVINO, f"optimum-intel is not installed; {PEERS_HINT}"))
        return specs, skipped
    specs.append(SystemSpec("sentence-transformers", ST_OPENVINO, "contextual", torch_model, "cpu", threads,
                            "openvino"))
    if available.machine.native_bf16:
        specs.append(SystemSpec("sentence-transformers", ST_OPENVINO + " f32", "contextual", torch_model, "cpu",
                                threads, "openvino", "fp32"))
    else:
        skipped.append(Skipped(ST_OPENVINO + " f32", "its default is already f32 on this CPU (no native bf16)"))
    return specs, skipped


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def _sweep(
    backends: Sequence[str], facts: BundleFacts, machine: Machine, provider: str
) -> list[tuple[str, str]]:
    """(backend, precision) pairs a bundle runs under in this bench; `auto` resolved as the engine resolves it."""
    pairs: list[tuple[str, str]] = []
    for entry in backends:
        if entry == "onnxruntime":
            pairs.append(("onnxruntime", facts.precision))
        elif entry == "auto":  # measured by the engine when it loads: a row of its own beside the candidates
            try:
                choose("auto", "auto", facts.precision, machine, "auto" if provider == "cpu" else provider)
            except BertonnxError:
                continue
            pairs.append(("auto", "auto") if provider == "cpu" else ("onnxruntime", facts.precision))
        elif entry == "all":
            pairs.append(("onnxruntime", facts.precision))
            if provider == "cpu" and facts.precision == "fp32" and not facts.optimized:
                pairs += [("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
                          ("openvino", SENTENCE_RECIPE)]
        else:
            backend, _, precision = entry.partition(":")
            known = ("", "fp32", "bf16", "fp16", "int8", SENTENCE_RECIPE)
            if backend not in ("onnxruntime", "openvino") or precision not in known:
                raise OptionError(
                    f"unknown backend {entry!r}; expected auto, all, onnxruntime, openvino or BACKEND:PRECISION"
                )
            pairs.append((backend, precision or ("bf16" if machine.native_bf16 and backend == "openvino" else "fp32")))
    return list(dict.fromkeys(pairs))


def cuda_unavailable(available: Availability) -> str | None:
    """Why the CUDA comparison cannot run here, or None when it can."""
    missing = []
    if CUDA not in available.ort_providers:
        missing.append(f"onnxruntime offers {', '.join(available.ort_providers) or 'no providers'} (no {CUDA})")
    if not available.torch_cuda:
        missing.append("torch.cuda.is_available() is False")
    return "; ".join(missing) if missing else None


def build_system(spec: SystemSpec) -> System:
    """Load the model behind a spec (and set torch's thread count where torch is involved)."""
    builders = {
        "pytorch": TorchContextual,
        "pytorch-bf16": TorchContextual,
        "sentence-transformers": SentenceTransformerContextual,
        "bertonnx": BertonnxContextual,
        "pytorch-embedding": TorchStatic,
        "numpy": NumpyStatic,
        "bertonnx-static": BertonnxStatic,
    }
    if spec.kind not in builders:
        raise ValueError(f"unknown system kind {spec.kind!r}; expected one of {', '.join(builders)}")
    return builders[spec.kind](spec)


def _bundle_labels(bundles: Sequence[BundleFacts]) -> list[str]:
    """fp32 / optimized / int8 / fp16; the directory name is added where two bundles would share one."""
    plain = [b.label for b in bundles]
    return [label if plain.count(label) == 1 else f"{label} ({Path(b.path).name})" for b, label in zip(bundles, plain)]
