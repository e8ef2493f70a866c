"""A tiny random BERT, RoBERTa and ELECTRA built in code, with their tokenizers.

No network: the vocabulary, tokenizer and weights are made here. The models are
small enough to export in a few seconds, but have every part of a real one.
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Tokenizer

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
