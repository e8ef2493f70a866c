"""Embedder: static, contextual and sentence embeddings from one bundle (what it returns: bertonnx.results).

Data flows one way: text -> TextPieces -> token-budget batches -> ONNX
outputs (B, T, H) -> one flat buffer of content pieces -> pooled vectors.
Pooling runs once per call over every text of the call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.backends import Backend, Opened
from bertonnx.batching import run_starts
from bertonnx.bundle import Bundle, Manifest, load_bundle
from bertonnx.errors import InputError, UnknownWordError
from bertonnx.options import (
    DEFAULT_BATCH_TOKENS,
    SENTENCE_POOLING_MODES,
    UNKNOWN_POLICIES,
    WORD_POOLING_MODES,
    LoadOptions,
    LongText,
    SentencePooling,
    Unknown,
    WordPooling,
    check_choice,
)
from bertonnx.pooling import l2_normalize, pool_pieces
from bertonnx.results import (
    Prepared,
    RunStats,
    RuntimeInfo,
    Serving,
    StaticVectors,
    WordRows,
    WordVectors,
)
from bertonnx.runner import Runner, as_list
from bertonnx.tokenize import TextInput, Tokenizer, cut, preview
from bertonnx.type_level.contexts import DEFAULT_CONTEXT
from bertonnx.type_level.vectors import (
    DEFAULT_MAX_CONTEXTS,
    DEFAULT_PRIOR,
    TypeLevelOptions,
    TypeVectors,
    type_vectors,
)

__all__ = ["Embedder", "Prepared", "RunStats", "RuntimeInfo", "StaticVectors", "WordRows", "WordVectors"]


class Embedder:
    """Static and contextual BERT embeddings served from an ONNX bundle."""

    def __init__(
        self,
        bundle: Bundle,
        backend: Backend,
        tokenizer: Tokenizer,
        table: NDArray[np.float32],
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        opened: Opened | None = None,
    ) -> None:
        self.runner = Runner(bundle, backend, tokenizer, table, batch_tokens, opened)

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        options: LoadOptions | None = None,
        *,
        verify: bool = True,
        **choices: Any,
    ) -> Embedder:
        """Open a bundle: check it, open the backend that runs its graph, map the table.

        `Embedder.load(path, LoadOptions(backend="openvino"))` and `Embedder.load(path, backend="openvino")`
        are the same: keywords are LoadOptions' fields, laid over `options`.

        Args:
            bundle_dir: directory written by `bertonnx export`.
            verify: check every file's sha256 against the manifest.
            backend: auto | onnxruntime | openvino. auto picks the fastest faithful one here
                (bertonnx.backends.choose); a backend named but not installed is an error.
            precision: auto | fp32 | bf16 | fp16 | int8. A reduced precision is checked against
                fp32 on fixed probes the first time (then cached) and refused under its gate.
            provider: ONNX Runtime's auto | cpu | cuda | tensorrt; a GPU asked for by name
                fails loudly when unavailable.
            threads: inference threads; default every core this process may use.
            batch_tokens: padded tokens per model run (batch size x longest text).
            spin: let idle ONNX Runtime threads busy-wait for the next operator: lower latency
                for short texts (~18 % for one sentence on 2 cores), CPU burned while idle.
            min_fidelity: replaces the reduced precision's gate (bertonnx.fidelity.GATES).
        """
        options = (options or LoadOptions()).with_choices(**choices)
        embedder = cls.__new__(cls)
        embedder.runner = Runner.open(bundle_dir, options, verify=verify)
        return embedder

    @classmethod
    def table_only(cls, bundle_dir: str | Path, *, verify: bool = True) -> Embedder:
        """Open a bundle for static vectors alone: its tokenizer and table, no model (backends.no_model).

        `static`, `static_lookup` and the vocabulary work as after `load`, with the same vectors; contextual and
        sentence calls raise OptionError. For vocabularies in bulk: no backend to open, compile or time.
        """
        from bertonnx.backends.no_model import NoModel

        bundle = load_bundle(bundle_dir, verify=verify)
        tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
        return cls(bundle, NoModel(), tokenizer, bundle.load_table())

    def resolved(self, options: LoadOptions) -> LoadOptions:
        """`options` (the ones this embedder was opened with) with `auto` replaced by what runs: for workers that
        must all run the same backend and precision, chosen and timed once, not once each. Where `fastest` split
        by use, the sentence server is pinned too (LoadOptions.sentences_on), and an int8 recipe serving words that
        was not made for them (LoadOptions.words_recipe)."""
        info = self.runtime_info()
        sentences = self.opened.sentences if self.opened is not None else None
        pinned = None if sentences is None else " ".join(
            (sentences.choice.backend, sentences.choice.precision, sentences.choice.recipe))
        recipe = self.opened.choice.recipe if self.opened is not None and info.precision == "int8" else None
        return replace(options, backend=info.backend, precision=info.precision, sentences_on=pinned,
                       words_recipe=None if recipe == "words" else recipe)

    @property
    def bundle(self) -> Bundle:
        return self.runner.bundle

    @property
    def backend(self) -> Backend:
        return self.runner.backend

    @property
    def tokenizer(self) -> Tokenizer:
        return self.runner.tokenizer

    @property
    def table(self) -> NDArray[np.float32]:
        """(V, E) the embedding table, memory-mapped."""
        return self.runner.table

    @property
    def batch_tokens(self) -> int:
        return self.runner.batch_tokens

    @property
    def opened(self) -> Opened | None:
        """How the backend was chosen, and its fidelity gate."""
        return self.runner.opened

    @property
    def stats(self) -> RunStats:
        """Batching and padding counters over this embedder's life."""
        return self.runner.stats

    @property
    def model_name(self) -> str:
        """The model the bundle was exported from: a hub id or a folder."""
        return self.bundle.source_model

    @property
    def manifest(self) -> Manifest:
        """The bundle's manifest: source model, sizes, files, validation figures."""
        return self.bundle.manifest

    def runtime_info(self) -> RuntimeInfo:
        """What actually runs: backend, device, precision, threads, why, and the fidelity against fp32."""
        info = self.backend.info
        opened = self.opened
        return RuntimeInfo(
            backend=info.backend,
            device=info.device,
            precision=info.precision,
            threads=info.threads,
            spin=info.spin,
            chosen_because=opened.choice.reason if opened else "given",
            fidelity=opened.fidelity if opened else None,
            timings=opened.timings if opened else None,
            details={key: value for key, value in info.details.items() if value is not None},
            serves=self._serves(),
        )

    def _serves(self) -> dict[str, Serving]:
        """Per use, what serves it: the backend opened for words, and for sentences the one `fastest` chose for them
        (the same backend where it did not split), each with the figures of the gate it was held to."""
        opened = self.opened
        words = _serving(self.backend, opened)
        sentences = opened.sentences if opened is not None else None
        if sentences is None:
            return {"words": words, "sentences": words}
        return {"words": words, "sentences": _serving(sentences.backend, sentences)}

    def runtime(self) -> dict[str, object]:
        """`runtime_info()` as plain JSON, as /info and study.json show it."""
        return self.runtime_info().to_dict()

    def prepare(self, texts: Sequence[TextInput] | Prepared) -> Prepared:
        """Split texts into word pieces once; `contextual` and `sentences` take the result as it is."""
        return self.runner.prepare(texts)

    def count_tokens(self, texts: Sequence[TextInput]) -> NDArray[np.int64]:
        """(N,) positions each text takes, special tokens included: over `max_tokens`, a text is windowed."""
        return self.prepare(texts).tokens

    @property
    def max_tokens(self) -> int:
        """The most positions one model run takes (the model's maximum length)."""
        return self.tokenizer.max_length

    @property
    def dim(self) -> int:
        """Width of contextual and sentence vectors: the hidden size."""
        return self.bundle.hidden_size

    @property
    def static_dim(self) -> int:
        """Width of static vectors: the embedding table's, narrower than `dim` in e.g. ELECTRA-small."""
        return self.bundle.embedding_size

    def static(
        self, words: Sequence[str], pooling: WordPooling = "mean", unknown: Unknown = "error"
    ) -> NDArray[np.float32]:
        """Context-free vectors: each word's pieces looked up in the embedding table and pooled.

        Never runs the transformer. A word is split into pieces exactly as the
        tokenizer splits it alone ("embeddings" -> em, ##bed, ##ding, ##s).

        Args:
            words: the words, one vector each.
            pooling: mean | first | last | first_last | max | sum.
            unknown: what to do with a word that maps to the unknown token:
                "error" raises, "unk" pools the unknown token's row like BERT does,
                "zero" gives a zero vector.

        Returns:
            (len(words), H) float32, or (len(words), 2H) for first_last.

        Raises:
            EmptyWordError: a word is empty or blank.
            UnknownWordError: with unknown="error".
        """
        return self.static_lookup(words, pooling, unknown).vectors

    def static_lookup(
        self, words: Sequence[str], pooling: WordPooling = "mean", unknown: Unknown = "error"
    ) -> StaticVectors:
        """`static`, together with which words map to the unknown token, from one tokenization."""
        check_choice(pooling, WORD_POOLING_MODES)
        check_choice(unknown, UNKNOWN_POLICIES, "unknown policy")
        if isinstance(words, str):
            raise TypeError("static() takes a list of words, not one string")
        _refuse_phrases(words)
        ids, starts = self.tokenizer.split_words(words)
        vectors = pool_pieces(self.table, starts, pooling, index=ids)  # (W, E)
        is_unknown = self.runner.unknown_pieces(ids, starts)
        if is_unknown.any():
            if unknown == "error":
                first = int(np.flatnonzero(is_unknown)[0])
                raise UnknownWordError(
                    f"word {first} ({preview(words[first])}) maps to the unknown token; pass {{unknown}} to embed it "
                    "anyway",
                    unknown=("unk", "zero"),
                )
            if unknown == "zero":
                vectors[is_unknown] = 0.0
        return StaticVectors(vectors=vectors, unknown=is_unknown)

    def contextual(
        self,
        texts: Sequence[TextInput] | Prepared,
        pooling: WordPooling = "mean",
        long_text: LongText = "window",
    ) -> list[WordVectors]:
        """Contextual word vectors: the final hidden state of each word's pieces, pooled.

        Args:
            texts: raw strings, split into words the way the model's own
                pre-tokenizer splits them, or lists of pre-split words, or `prepare`'s result.
            pooling: mean | first | last | first_last | max | sum.
            long_text: for texts longer than the model maximum: "window" runs
                overlapping windows and takes each word from the window where it is
                most central; "truncate" drops the words past the maximum (and flags
                the result); "error" raises.

        Returns:
            One WordVectors per text, in input order.
        """
        rows = self.contextual_rows(texts, pooling, long_text)
        bounds = np.cumsum(rows.words_per_text)[:-1]
        offset = 0
        results = []
        for count, vectors, spans, unknown, truncated in zip(
            rows.words_per_text.tolist(),
            np.split(rows.vectors, bounds),
            np.split(rows.spans, bounds),
            np.split(rows.unknown, bounds),
            rows.truncated,
        ):
            words = rows.words[offset : offset + count]
            offset += count
            results.append(WordVectors(words=words, vectors=vectors, spans=spans, unknown=unknown,
                                       truncated=bool(truncated)))
        return results

    def contextual_rows(
        self,
        texts: Sequence[TextInput] | Prepared,
        pooling: WordPooling = "mean",
        long_text: LongText = "window",
    ) -> WordRows:
        """`contextual` as flat rows, one a word of every text: for bulk jobs, which write rows, not lists."""
        check_choice(pooling, WORD_POOLING_MODES)
        pieces, truncated = self.runner.fit(list(self.prepare(texts).pieces), long_text)
        forward = self.runner.forward(pieces, sentence_pooling=None)
        text_of_piece = np.repeat(np.arange(len(pieces)), [p.ids.size for p in pieces])  # (P,)
        piece_word = np.concatenate([p.piece_word for p in pieces] or [np.zeros(0, np.int64)])
        starts = run_starts(text_of_piece * (1 + piece_word.max(initial=0)) + piece_word)  # (W,)
        vectors = pool_pieces(forward.hidden, starts, pooling)  # (W, H)
        all_ids = np.concatenate([p.ids for p in pieces] or [np.zeros(0, np.int64)])
        words_per_text = np.array([len(p.words) for p in pieces], dtype=np.int64)  # (N,)
        first_word = np.cumsum(words_per_text) - words_per_text
        local_starts = starts - np.repeat(np.cumsum([0] + [p.ids.size for p in pieces])[:-1], words_per_text)
        local_ends = np.append(starts[1:], all_ids.size) - (starts - local_starts)
        return WordRows(
            words=tuple(word for p in pieces for word in p.words),
            vectors=vectors,
            text=np.repeat(np.arange(len(pieces), dtype=np.int64), words_per_text),
            word=np.arange(int(words_per_text.sum()), dtype=np.int64) - np.repeat(first_word, words_per_text),
            spans=np.stack([local_starts, local_ends], axis=1),
            unknown=self.runner.unknown_pieces(all_ids, starts),
            words_per_text=words_per_text,
            truncated=truncated,
        )

    def type_vectors(
        self,
        words: Sequence[str],
        *,
        method: str = "templates",
        corpus: Iterable[str] | None = None,
        templates: Sequence[str] | None = None,
        max_contexts: int = DEFAULT_MAX_CONTEXTS,
        postprocess: str | None = None,
        pooling: WordPooling = "mean",
        unknown: Unknown = "error",
        prior: float = DEFAULT_PRIOR,
        context: str = DEFAULT_CONTEXT,
    ) -> TypeVectors:
        """One vector per vocabulary word that carries what the whole model knows about it (bertonnx.type_level).

        Args:
            words: vocabulary entries, one word each (no whitespace inside), as `static` takes them.
            method: "templates" averages the word's pooled vector over `templates`; "corpus" over its
                occurrences in `corpus` (matched by the model's own word split and normaliser), at most
                `max_contexts` each, with the templates as `prior`; a word never seen gets the templates
                (flagged in `fallback`).
            corpus: texts (e.g. an open file's lines), read once, as a stream.
            templates: sentences with `{}` where the word goes; default type_level.DEFAULT_TEMPLATES.
            postprocess: None, "center" (subtract the mean vector) or "abtt:D" (centre, then remove the
                top D principal directions: all-but-the-top).
            pooling: how a word's pieces pool in each context (mean, first, last, first_last, max, sum).
            unknown: a word mapping to the unknown token: "error" raises; "unk" embeds it from templates
                (the corpus cannot tell [UNK] words apart); "zero" gives a zero vector.
            prior: corpus method: the templates' mean counts as this many contexts beside a word's n corpus
                contexts, v = (their sum + prior * templates' mean) / (n + prior); 0: the corpus mean alone.
                Default 5: one or two odd sentences move a word a little, a few dozen outweigh the templates.
            context: corpus method: what the model reads around an occurrence: "sentence" (a simple rule on
                the tokenizer's words, type_level.contexts), "window:N" (N words either side, within the
                sentence) or "line" (the whole line).

        Returns:
            TypeVectors: words, (N, H) float32 vectors, per-word context counts, fallback and unknown flags, and
            how they were made (`record()`).
        """
        options = TypeLevelOptions(
            templates=None if templates is None else tuple(templates), max_contexts=max_contexts,
            postprocess=postprocess, pooling=pooling, unknown=unknown, prior=prior, context=context,
        )
        return type_vectors(self.runner, words, options, method, corpus)

    def sentences(
        self,
        texts: Sequence[TextInput] | Prepared,
        pooling: SentencePooling = "mean",
        normalize: bool = False,
        long_text: LongText = "window",
        max_length: int | None = None,
    ) -> NDArray[np.float32]:
        """One vector per text, pooled as sentence-transformers pools.

        Args:
            texts: raw strings or lists of pre-split words, or `prepare`'s result.
            pooling: "mean" averages all tokens, [CLS] and [SEP] included; "cls"
                takes the [CLS] state.
            normalize: scale to unit length (what all-MiniLM-L6-v2's Normalize layer does).
            long_text: "window" averages the tokens of all windows (weighted by
                their length; "cls" takes the first window's); "truncate" keeps
                the first window; "error" raises.
            max_length: cut every text to this many positions, special tokens
                included, piece-exact, as sentence-transformers' `max_seq_length`
                does (`sentence_transformers_max_length` is the one the source model
                used). None: the model's maximum, with `long_text` beyond it.

        Returns:
            (len(texts), H) float32.
        """
        check_choice(pooling, SENTENCE_POOLING_MODES)
        if isinstance(texts, Prepared):
            pieces = list(texts.pieces)
        else:  # no word strings: a sentence vector does not need them
            pieces = self.tokenizer.split(as_list(texts), words=False)
        if max_length is not None:
            pieces = [cut(p, self.runner.room(max_length)) for p in pieces]
        pieces, _ = self.runner.fit(pieces, long_text)
        vectors = self.runner.forward(pieces, sentence_pooling=pooling, keep_pieces=False).sentence
        return l2_normalize(vectors) if normalize else vectors

    @property
    def sentence_transformers_max_length(self) -> int | None:
        """`max_seq_length` of the sentence-transformers model the bundle came from, where it had one."""
        value = self.manifest["model"].get("sentence_transformers_max_length")
        return int(value) if isinstance(value, int) else None


def _serving(backend: Backend, opened: Opened | None) -> Serving:
    info = backend.info
    recipe = info.details.get("int8_recipe")
    kind = opened.choice.recipe if opened is not None and recipe else None
    return Serving(info.backend, info.precision, recipe, opened.fidelity if opened else None, kind)


def _refuse_phrases(words: Sequence[str]) -> None:
    """One rule for every interface (library, CLI --static, /embed/static): a static entry is one word, no
    whitespace inside; a phrase's words each have their own row of the table."""
    for index, word in enumerate(words):
        if isinstance(word, str) and len(parts := word.split()) > 1:
            raise InputError(
                f"word {index} ({preview(word.strip())}) holds {len(parts)} words; static vectors are one word "
                "each (embed its words one by one, or the text with contextual)"
            )
