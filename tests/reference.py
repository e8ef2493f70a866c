"""Obvious, slow reference implementations the fast paths are tested against."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pool_block(block: np.ndarray, mode: str) -> np.ndarray:
    """One word's (k, H) piece vectors -> its vector, the plain way."""
    if mode == "first_last":
        return np.concatenate([block[0], block[-1]])
    return {
        "mean": lambda b: b.mean(0),
        "sum": lambda b: b.sum(0),
        "max": lambda b: b.max(0),
        "first": lambda b: b[0],
        "last": lambda b: b[-1],
    }[mode](block)


def reference_words(model, folder: Path, text: str, mode: str = "mean") -> tuple[list[str], np.ndarray]:
    """transformers on its own: fast tokenizer word ids, last_hidden_state, a Python loop per word."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoding = tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    offsets = encoding.pop("offset_mapping")[0].tolist()
    with torch.inference_mode():
        hidden = model(**encoding).last_hidden_state[0].numpy()
    word_ids = encoding.word_ids(0)
    words, vectors = [], []
    for word in sorted({w for w in word_ids if w is not None}):
        positions = [i for i, w in enumerate(word_ids) if w == word]
        block = hidden[positions]
        words.append(text[offsets[positions[0]][0] : offsets[positions[-1]][1]])
        vectors.append(pool_block(block, mode))
    return words, np.array(vectors)
