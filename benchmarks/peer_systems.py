"""The systems bertonnx is compared with: PyTorch (eager, and bf16 autocast), sentence-transformers (on torch,
ONNX Runtime or OpenVINO), PyTorch's embedding layer and a naive numpy loop for the static path.

Each holds the same thread count as bertonnx's systems (torch's intra-op threads, ORT's and OpenVINO's);
see bertonnx.benchmarks.systems for what each one does and why it is the fair peer.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.benchmarks.contract import BASELINE_BATCH, FIDELITY_CHUNK, Outputs, SystemSpec, pool_words
from bertonnx.bundle import load_bundle


def set_torch_threads(threads: int) -> None:
    """The same intra-op thread count as ONNX Runtime; one inter-op thread, as ORT's sessions use."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # torch allows it once, before any parallel work; a second call is harmless to skip
        pass


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
            if spec.precision in ("fp32", "bf16"):  # "": OpenVINO's default (read back once loaded)
                config["INFERENCE_PRECISION_HINT"] = "f32" if spec.precision == "fp32" else "bf16"
            kwargs = {"backend": "openvino", "model_kwargs": {"ov_config": config}}
        with _quiet_export():
            self.model = SentenceTransformer(spec.source, device=spec.provider, **kwargs)
        if spec.backend == "openvino":
            found = openvino_precision(self.model)
            self.spec = replace(spec, precision=found or spec.precision)

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


OPENVINO_PRECISIONS = {"bf16": "bf16", "f32": "fp32", "f16": "fp16"}
"""OpenVINO's element type names of an inference precision, in the bench's words."""


def openvino_precision(model: Any) -> str | None:
    """The precision sentence-transformers' OpenVINO model computes in (its compiled model's
    INFERENCE_PRECISION_HINT: bf16 by default on a CPU with native bf16), or None where it cannot be read."""
    try:
        ov_model = model[0].auto_model
        if getattr(ov_model, "request", None) is None:
            ov_model.compile()
        hint = ov_model.request.get_property("INFERENCE_PRECISION_HINT")
    except Exception:  # noqa: BLE001 - optimum-intel's internals differ across versions: the default then stands
        return None
    name = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    return OPENVINO_PRECISIONS.get(name)


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
