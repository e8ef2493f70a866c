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
    bertonnx <backend> <precision>
                           the same on another backend and precision (OpenVINO fp32, bf16, int8).
Static path (words -> context-free vectors):
    pytorch embedding      the transformers tokenizer, then the model's nn.Embedding and a
                           segment mean (index_add_).
    numpy (naive)          the tokenizers library, then a Python loop of table[ids].mean(0).
    bertonnx static        `Embedder.static`.

Every system runs timed (`run`) and untimed for fidelity (`outputs`): token
vectors (N, H) of every real token, and mean-pooled word vectors (W, H), both
compared with PyTorch's on identical token ids.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from bertonnx.backends.choose import Machine, choose, this_machine
from bertonnx.backends.onnxruntime import CPU, CUDA
from bertonnx.benchmarks.workloads import Skipped
from bertonnx.bundle import CONTEXTUAL_OUTPUT, load_bundle
from bertonnx.embedder import Embedder
from bertonnx.errors import BertonnxError, OptionError
from bertonnx.pooling import pool_pieces, run_starts

ST_BACKEND_MODULES = {"onnx": "optimum.onnxruntime", "openvino": "optimum.intel"}
"""What sentence-transformers' backend="onnx" and backend="openvino" import (optimum-onnx, optimum-intel)."""
ST_OPENVINO = "ST openvino"
"""The label of sentence-transformers' OpenVINO backend at its default precision: the headline peer."""
DEFAULT_BACKENDS = ("auto", "onnxruntime")
"""What the engine picks here, and ONNX Runtime at the bundle's precision beside it."""
BASELINE_BATCH = 32
"""Texts per batch for the PyTorch and sentence-transformers baselines (both libraries' default)."""
FIDELITY_CHUNK = 64


@dataclass(frozen=True)
class Outputs:
    """What a system produced for some inputs, for comparison with PyTorch."""

    tokens: NDArray[np.float32]  # (N, H) every real token of every input, in order (static: word pieces)
    words: NDArray[np.float32]  # (W, H) mean-pooled words, in order


@dataclass(frozen=True)
class SystemSpec:
    """How to build one system; plain data so a subprocess can build it too."""

    kind: str  # pytorch | sentence-transformers | bertonnx | pytorch-embedding | numpy | bertonnx-static
    label: str  # name in tables, e.g. "bertonnx int8"
    path: str  # "contextual" or "static"
    source: str  # bundle directory (bertonnx, numpy) or Hugging Face model folder (torch, ST)
    provider: str  # "cpu" or "cuda"
    threads: int
    backend: str = ""  # bertonnx: onnxruntime | openvino; sentence-transformers: "" (torch) | onnx | openvino
    precision: str = ""  # bertonnx: fp32 | bf16 | fp16 | int8; ST openvino: "" (its default) | fp32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class System(Protocol):
    spec: SystemSpec

    def run(self, inputs: Sequence[str]) -> object:
        """The timed call: the whole job, tokenization included, results on the host."""

    def outputs(self, inputs: Sequence[str], token_word: NDArray[np.int64]) -> Outputs:
        """Untimed: vectors for fidelity. token_word: (N,) word of each token, -1 for special tokens."""

    def cannot_run(self, longest: int) -> str | None:
        """Why a case whose longest text has `longest` tokens cannot run here, or None."""


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
        suffix = "" if provider == "cpu" else " [cuda]"
        reason = cuda_unavailable(available) if provider == "cuda" else None
        if reason is not None:
            skipped.append(Skipped("every system on cuda", reason))
            continue
        specs.append(SystemSpec("pytorch", "pytorch" + suffix, "contextual", torch_model, provider, threads))
        if provider == "cpu" and available.machine.native_bf16:
            specs.append(SystemSpec("pytorch-bf16", "pytorch bf16 autocast", "contextual", torch_model, "cpu", threads))
        elif provider == "cpu":
            skipped.append(Skipped("pytorch bf16 autocast", "this CPU has neither AMX nor AVX512-BF16"))
        if available.sentence_transformers:
            specs.append(
                SystemSpec(
                    "sentence-transformers",
                    "sentence-transformers" + suffix,
                    "contextual",
                    torch_model,
                    provider,
                    threads,
                )
            )
            if provider == "cpu":
                peers, left_out = _st_peers(torch_model, threads, available)
                specs += peers
                skipped += left_out
        else:
            skipped.append(Skipped("sentence-transformers" + suffix, "sentence-transformers is not installed"))
        for facts, label in zip(bundles, labels):
            name = f"bertonnx {label}{suffix}"
            if facts.precision == "fp16" and provider == "cpu":
                skipped.append(Skipped(name, "fp16 graphs are for the CUDA provider"))
                continue
            if facts.precision == "int8" and provider == "cuda":
                skipped.append(Skipped(name, "dynamic int8 graphs run on CPU kernels"))
                continue
            for backend, precision in _sweep(backends, facts, available.machine, provider):
                if (backend, precision) == ("onnxruntime", facts.precision):
                    bundle_spec = SystemSpec("bertonnx", name, "contextual", facts.path, provider, threads,
                                             "onnxruntime", facts.precision)
                    if bundle_spec not in specs:
                        specs.append(bundle_spec)
                    continue
                other = f"bertonnx {backend} {precision}" + (f" · {label} bundle" if len(bundles) > 1 else "")
                if backend == "auto":
                    other = "bertonnx auto" + (f" · {label} bundle" if len(bundles) > 1 else "")
                try:
                    if backend != "auto":
                        choose(backend, precision, facts.precision, available.machine, provider)
                except BertonnxError as error:
                    skipped.append(Skipped(other, str(error)))
                    continue
                spec = SystemSpec("bertonnx", other, "contextual", facts.path, provider, threads, backend, precision)
                if spec not in specs:
                    specs.append(spec)
    static_bundle = next((b for b in bundles if b.precision != "fp16"), bundles[0] if bundles else None)
    if static_bundle is not None:
        for kind, label in (("pytorch-embedding", "pytorch embedding"), ("numpy", "numpy (naive)")):
            source = torch_model if kind == "pytorch-embedding" else static_bundle.path
            specs.append(SystemSpec(kind, label, "static", source, "cpu", threads))
        specs.append(SystemSpec("bertonnx-static", "bertonnx static", "static", static_bundle.path, "cpu", threads))
    return specs, skipped


def _st_peers(torch_model: str, threads: int, available: Availability) -> tuple[list[SystemSpec], list[Skipped]]:
    """sentence-transformers' own ONNX and OpenVINO backends on the CPU, or why each is left out."""
    specs: list[SystemSpec] = []
    skipped: list[Skipped] = []
    if "onnx" in available.st_backends:
        specs.append(SystemSpec("sentence-transformers", "ST onnx", "contextual", torch_model, "cpu", threads, "onnx"))
    else:
        skipped.append(Skipped("ST onnx", "optimum-onnx is not installed: pip install 'bertonnx[peers]'"))
    if "openvino" not in available.st_backends:
        skipped.append(Skipped(ST_OPENVINO, "optimum-intel is not installed: pip install 'bertonnx[peers]'"))
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
                pairs += [("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]
        else:
            backend, _, precision = entry.partition(":")
            if backend not in ("onnxruntime", "openvino") or precision not in ("", "fp32", "bf16", "fp16", "int8"):
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


def set_torch_threads(threads: int) -> None:
    """The same intra-op thread count as ONNX Runtime; one inter-op thread, as ORT's sessions use."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # torch allows it once, before any parallel work; a second call is harmless to skip
        pass


def pool_words(tokens: NDArray[np.float32], token_word: NDArray[np.int64]) -> NDArray[np.float32]:
    """Mean of each word's tokens; token_word (N,) numbers words globally, -1 on special tokens."""
    keep = token_word >= 0
    return pool_pieces(tokens[keep], run_starts(token_word[keep]), "mean")


class TorchContextual:
    """transformers, eager, inference_mode, naive padded batches of 32."""

    def __init__(self, spec: SystemSpec) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        set_torch_threads(spec.threads)
        self.spec = spec
        self.torch = torch
        self.device = torch.device(spec.provider if spec.provider == "cpu" else "cuda")
        self.tokenizer = AutoTokenizer.from_pretrained(spec.source, use_fast=True)
        self.model = AutoModel.from_pretrained(spec.source).eval().to(self.device)
        self.max_length = int(self.model.config.max_position_embeddings)
        self.bf16 = spec.kind == "pytorch-bf16"

    def _forward(self, texts: Sequence[str]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        encoded = self.tokenizer(list(texts), padding=True, return_tensors="pt").to(self.device)
        with self.torch.inference_mode(), self.torch.autocast("cpu", dtype=self.torch.bfloat16, enabled=self.bf16):
            hidden = self.model(**encoded).last_hidden_state  # (B, T, H)
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
        return hidden.float().cpu().numpy(), encoded["attention_mask"].cpu().numpy().astype(bool)

    def run(self, inputs: Sequence[str]) -> object:
        if not self.bf16:
            return [self._forward(inputs[i : i + BASELINE_BATCH])[0] for i in range(0, len(inputs), BASELINE_BATCH)]
        lengths = [len(ids) for ids in self.tokenizer(list(inputs))["input_ids"]]
        order = sorted(range(len(inputs)), key=lambda i: -lengths[i])  # as sentence-transformers sorts
        results: list[Any] = [None] * len(inputs)
        for start in range(0, len(order), BASELINE_BATCH):
            batch = order[start : start + BASELINE_BATCH]
            hidden, mask = self._forward([inputs[i] for i in batch])
            for row, index in enumerate(batch):
                results[index] = hidden[row][mask[row]]
        return results

    def outputs(self, inputs: Sequence[str], token_word: NDArray[np.int64]) -> Outputs:
        parts = []
        for start in range(0, len(inputs), FIDELITY_CHUNK):
            hidden, mask = self._forward(inputs[start : start + FIDELITY_CHUNK])
            parts.append(hidden[mask])  # (n, H) real tokens, row-major
        tokens = np.concatenate(parts)
        return Outputs(tokens=tokens, words=pool_words(tokens, token_word))

    def cannot_run(self, longest: int) -> str | None:
        return None if longest <= self.max_length else f"longer than the model's {self.max_length} positions"


class SentenceTransformerContextual:
    """sentence-transformers' own encode on the same weights (its own batching and sorting), on torch or on
    its ONNX Runtime or OpenVINO backend, held to the same thread count."""

    def __init__(self, spec: SystemSpec) -> None:
        from sentence_transformers import SentenceTransformer

        set_torch_threads(spec.threads)
        self.spec = spec
        kwargs: dict[str, Any] = {}
        if spec.backend == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = spec.threads, 1
            kwargs = {"backend": "onnx", "model_kwargs": {"provider": "CPUExecutionProvider",
                                                          "session_options": options}}
        elif spec.backend == "openvino":
            config = {"INFERENCE_NUM_THREADS": str(spec.threads)}
            if spec.precision == "fp32":
                config["INFERENCE_PRECISION_HINT"] = "f32"
            kwargs = {"backend": "openvino", "model_kwargs": {"ov_config": config}}
        with _quiet_export():
            self.model = SentenceTransformer(spec.source, device=spec.provider, **kwargs)

    def run(self, inputs: Sequence[str]) -> object:
        return self.model.encode(list(inputs), batch_size=BASELINE_BATCH, show_progress_bar=False)

    def outputs(self, inputs: Sequence[str], token_word: NDArray[np.int64]) -> Outputs:
        found = self.model.encode(
            list(inputs), batch_size=BASELINE_BATCH, output_value="token_embeddings", show_progress_bar=False
        )
        tokens = np.concatenate([t.float().cpu().numpy() for t in found])  # (N, H), padding already trimmed
        return Outputs(tokens=tokens, words=pool_words(tokens, token_word))

    def cannot_run(self, longest: int) -> str | None:
        limit = int(self.model.max_seq_length)
        return None if longest <= limit else f"its max_seq_length is {limit}: it would truncate"


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """sentence-transformers exports a model without ONNX or OpenVINO files on load, with transformers' tracing
    warnings and advice to save the export; the bench exports afresh each run on purpose (its model folder
    may be read-only), so only errors are shown."""
    loggers = [logging.getLogger(name) for name in ("sentence_transformers", "transformers", "optimum")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' tracing warnings: about the trace, not the results
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class BertonnxContextual:
    """Embedder.contextual on one bundle, one backend and one precision."""

    def __init__(self, spec: SystemSpec) -> None:
        self.spec = spec
        self.embedder = Embedder.load(
            spec.source, backend=spec.backend or "onnxruntime", precision=spec.precision or "auto",
            provider="auto" if spec.backend == "auto" else spec.provider, threads=spec.threads,
        )
        wanted = "CPU" if self.embedder.backend.info.backend == "openvino" else CUDA if spec.provider == "cuda" else CPU
        if self.embedder.backend.info.device != wanted:
            raise RuntimeError(
                f"{spec.label}: asked for {wanted}, the session runs on {self.embedder.backend.info.device}"
            )

    def run(self, inputs: Sequence[str]) -> object:
        return self.embedder.contextual(inputs)

    def outputs(self, inputs: Sequence[str], token_word: NDArray[np.int64]) -> Outputs:
        tokenizer, session = self.embedder.tokenizer, self.embedder.backend
        parts = []
        for start in range(0, len(inputs), FIDELITY_CHUNK):
            pieces = tokenizer.split(list(inputs[start : start + FIDELITY_CHUNK]))
            encoded = tokenizer.pack([p.ids for p in pieces])
            hidden = session.run(CONTEXTUAL_OUTPUT, encoded.feeds(session.info.inputs))  # (B, T, H)
            parts.append(hidden[encoded.attention_mask.astype(bool)])
        words = [w.vectors for w in self.embedder.contextual(inputs)]
        return Outputs(tokens=np.concatenate(parts), words=np.concatenate(words))

    def cannot_run(self, longest: int) -> str | None:
        return None  # longer texts are windowed


class TorchStatic:
    """The transformers tokenizer and the model's own embedding layer, pooled with index_add_."""

    def __init__(self, spec: SystemSpec) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        set_torch_threads(spec.threads)
        self.spec = spec
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(spec.source, use_fast=True)
        self.embedding = AutoModel.from_pretrained(spec.source).eval().get_input_embeddings()

    def _pieces(self, words: Sequence[str]) -> tuple[Any, Any]:
        ids = self.tokenizer(list(words), add_special_tokens=False)["input_ids"]
        counts = self.torch.tensor([len(i) for i in ids])  # (W,)
        flat = self.torch.tensor([piece for word in ids for piece in word], dtype=self.torch.long)  # (P,)
        return flat, counts

    def _pool(self, rows: Any, counts: Any) -> Any:
        owner = self.torch.repeat_interleave(self.torch.arange(counts.numel()), counts)  # (P,)
        summed = self.torch.zeros(counts.numel(), rows.shape[1]).index_add_(0, owner, rows)
        return summed / counts.clamp(min=1)[:, None]

    def run(self, inputs: Sequence[str]) -> object:
        with self.torch.inference_mode():
            flat, counts = self._pieces(inputs)
            return self._pool(self.embedding(flat), counts).numpy()

    def outputs(self, inputs: Sequence[str], token_word: NDArray[np.int64]) -> Outputs:
        with self.torch.inference_mode():
            flat, counts = self._pieces(inputs)
            rows = self.embedding(flat)
            return Outputs(tokens=rows.numpy(), words=self._pool(rows, counts).numpy())

    def cannot_run(self, longest: int) -> str | None:
        return None


class NumpyStatic:
    """What one writes first: tokenize each word, average its table rows in a Python loop."""

    def __init__(self, spec: SystemSpec) -> None:
        from tokenizers import Tokenizer

        self.spec = spec
        bundle = load_bundle(spec.source, verify=False)
        self.table = np.load(bundle.table_path, allow_pickle=False)  # (V, H)
        self.backend = Tokenizer.from_file(str(bundle.tokenizer_path))
        self.backend.no_padding()  # a saved tokenizer.json may pad every word to a fixed length
        self.backend.no_truncation()

    def run(self, inputs: Sequence[str]) -> object:
        encodings = self.backend.encode_batch(list(inputs), add_special_tokens=False)
        return np.stack([self.table[e.ids].mean(axis=0) for e in encodings])

    def outputs(self, inputs: Sequence[str], token_word: NDArray[np.int64]) -> Outputs:
        encodings = self.backend.encode_batch(list(inputs), add_special_tokens=False)
        tokens = self.table[np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])]
        return Outputs(tokens=tokens, words=np.asarray(self.run(inputs), dtype=np.float32))

    def cannot_run(self, longest: int) -> str | None:
        return None


class BertonnxStatic:
    """Embedder.static: the table lookup, never the transformer."""

    def __init__(self, spec: SystemSpec) -> None:
        self.spec = spec
        self.embedder = Embedder.load(spec.source, provider="cpu", threads=spec.threads)

    def run(self, inputs: Sequence[str]) -> object:
        return self.embedder.static(inputs, unknown="unk")

    def outputs(self, inputs: Sequence[str], token_word: NDArray[np.int64]) -> Outputs:
        ids, _ = self.embedder.tokenizer.split_words(inputs)
        return Outputs(tokens=self.embedder.table[ids], words=self.embedder.static(inputs, unknown="unk"))

    def cannot_run(self, longest: int) -> str | None:
        return None


def _bundle_labels(bundles: Sequence[BundleFacts]) -> list[str]:
    """fp32 / optimized / int8 / fp16; the directory name is added where two bundles would share one."""
    plain = [b.label for b in bundles]
    return [label if plain.count(label) == 1 else f"{label} ({Path(b.path).name})" for b, label in zip(bundles, plain)]
