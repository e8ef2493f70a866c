"""Embedder: static, contextual and sentence embeddings from one bundle (what it returns: bertonnx.results).

Data flows one way: text -> TextPieces -> token-budget batches -> ONNX
outputs (B, T, H) -> one flat buffer of content pieces -> pooled vectors.
Pooling runs once per call over every text of the call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.backends import Backend, Opened, open_backend
from bertonnx.batching import batch_stats, plan_batches, plan_sequences, run_starts
from bertonnx.bundle import CONTEXTUAL_OUTPUT, Bundle, Manifest, load_bundle
from bertonnx.errors import InputError, OptionError, TextTooLongError, UnknownWordError
from bertonnx.options import (
    DEFAULT_BATCH_TOKENS,
    LONG_TEXT_POLICIES,
    SENTENCE_POOLING_MODES,
    UNKNOWN_POLICIES,
    WORD_POOLING_MODES,
    LoadOptions,
    LongText,
    SentencePooling,
    Unknown,
    WordPooling,
    check_choice,
    check_positive,
)
from bertonnx.pooling import fold_windows, l2_normalize, pool_pieces, pool_sentences
from bertonnx.results import (
    Prepared,
    RunStats,
    RuntimeInfo,
    StaticVectors,
    WordRows,
    WordVectors,
)
from bertonnx.tokenize import TextInput, TextPieces, Tokenizer, cut, preview, truncate
from bertonnx.type_level import DEFAULT_MAX_CONTEXTS, TypeVectors

__all__ = ["Embedder", "Prepared", "RunStats", "RuntimeInfo", "StaticVectors", "WordRows", "WordVectors"]

GROUP_BATCHES = 8
"""Batches handed to the backend at once: enough to keep every stream busy, few enough to bound memory."""


@dataclass(frozen=True)
class _Forward:
    """Content-piece states of every text of one call, stitched across windows."""

    hidden: NDArray[np.float32]  # (P, H) pieces of text 0, then text 1, ...
    sentence: NDArray[np.float32]  # (N, H) sentence vectors (only when asked for)


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
        self.bundle = bundle
        self.backend = backend
        self.tokenizer = tokenizer
        self.table = table  # (V, E) memory-mapped
        self.batch_tokens = check_positive("batch_tokens", batch_tokens)
        self.opened = opened  # how the backend was chosen, and its fidelity gate
        self.stats = RunStats()

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
        bundle = load_bundle(bundle_dir, verify=verify)
        tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
        opened = open_backend(bundle, tokenizer, options)
        return cls(bundle, opened.backend, tokenizer, bundle.load_table(), options.batch_tokens, opened)

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
        )

    def runtime(self) -> dict[str, object]:
        """`runtime_info()` as plain JSON, as /info and study.json show it."""
        return self.runtime_info().to_dict()

    def prepare(self, texts: Sequence[TextInput] | Prepared) -> Prepared:
        """Split texts into word pieces once; `contextual` and `sentences` take the result as it is."""
        if isinstance(texts, Prepared):
            return texts
        pieces = tuple(self.tokenizer.split(_as_list(texts)))
        tokens = np.array([p.ids.size + self.tokenizer.n_special for p in pieces], dtype=np.int64)
        return Prepared(pieces=pieces, tokens=tokens)

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
        is_unknown = self._unknown(ids, starts)
        if is_unknown.any():
            if unknown == "error":
                first = int(np.flatnonzero(is_unknown)[0])
                raise UnknownWordError(
                    f"word {first} ({preview(words[first])}) maps to the unknown token; "
                    "pass unknown='unk' or 'zero' to embed it anyway"
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
        pieces, truncated = self._fit(list(self.prepare(texts).pieces), long_text)
        forward = self._forward(pieces, sentence_pooling=None)
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
            unknown=self._unknown(all_ids, starts),
            words_per_text=words_per_text,
            truncated=truncated,
        )

    def piece_states(self, texts: Sequence[TextInput] | Prepared) -> NDArray[np.float32]:
        """(P, H) the final state of every word piece of every text, in order; long texts windowed and
        stitched as `contextual` does. What word pooling reads, for callers that pool their own runs."""
        pieces, _ = self._fit(list(self.prepare(texts).pieces), "window")
        return self._forward(pieces, sentence_pooling=None).hidden

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
    ) -> TypeVectors:
        """One vector per vocabulary word that carries what the whole model knows about it (bertonnx.type_level).

        Args:
            words: vocabulary entries, one word each (no whitespace inside), as `static` takes them.
            method: "templates" averages the word's pooled vector over `templates`; "corpus" over its
                occurrences in `corpus` (matched by the model's own word split and normaliser), at most
                `max_contexts` each, a word never seen falling back to templates (flagged in `fallback`).
            corpus: texts (e.g. an open file's lines), read once, as a stream.
            templates: sentences with `{}` where the word goes; default type_level.DEFAULT_TEMPLATES.
            postprocess: None, "center" (subtract the mean vector) or "abtt:D" (centre, then remove the
                top D principal directions: all-but-the-top).
            pooling: how a word's pieces pool in each context (mean, first, last, first_last, max, sum).
            unknown: a word mapping to the unknown token: "error" raises; "unk" embeds it from templates
                (the corpus cannot tell [UNK] words apart); "zero" gives a zero vector.

        Returns:
            TypeVectors: words, (N, H) float32 vectors, per-word context counts, fallback and unknown flags.
        """
        from bertonnx.type_level import vectors as type_level

        return type_level.type_vectors(
            self, words, method, corpus, templates, max_contexts, postprocess, pooling, unknown
        )

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
            pieces = self.tokenizer.split(_as_list(texts), words=False)
        if max_length is not None:
            pieces = [cut(p, self._room(max_length)) for p in pieces]
        pieces, _ = self._fit(pieces, long_text)
        vectors = self._forward(pieces, sentence_pooling=pooling, keep_pieces=False).sentence
        return l2_normalize(vectors) if normalize else vectors

    @property
    def sentence_transformers_max_length(self) -> int | None:
        """`max_seq_length` of the sentence-transformers model the bundle came from, where it had one."""
        value = self.manifest["model"].get("sentence_transformers_max_length")
        return int(value) if isinstance(value, int) else None

    def _room(self, max_length: int) -> int:
        """Content pieces that fit in `max_length` positions next to the special tokens."""
        room = check_positive("max_length", max_length) - self.tokenizer.n_special
        if max_length > self.tokenizer.max_length or room < 1:
            raise OptionError(
                f"max_length must leave room for text and be at most the model's {self.tokenizer.max_length}, "
                f"got {max_length}"
            )
        return room

    def unknown_pieces(self, ids: NDArray[np.int64], starts: NDArray[np.int64]) -> NDArray[np.bool_]:
        """(W,) True for each run of pieces (a word: ids[starts[i]:starts[i+1]]) holding the unknown token."""
        return self._unknown(ids, starts)

    def _unknown(self, ids: NDArray[np.int64], starts: NDArray[np.int64]) -> NDArray[np.bool_]:
        if starts.size == 0:
            return np.zeros(0, dtype=bool)
        return np.maximum.reduceat(ids == self.tokenizer.unk_id, starts).astype(bool)

    def _fit(self, pieces: list[TextPieces], long_text: str) -> tuple[list[TextPieces], NDArray[np.bool_]]:
        """Apply the long-text policy that does not need windows: truncate or raise."""
        check_choice(long_text, LONG_TEXT_POLICIES, "long_text policy")
        window = self.tokenizer.window
        too_long = np.array([p.ids.size > window for p in pieces], dtype=bool)
        if long_text == "error" and too_long.any():
            first = int(np.flatnonzero(too_long)[0])
            raise TextTooLongError(
                f"text {first} has {pieces[first].ids.size} word pieces; the model takes {window} "
                "(use long_text='window' or 'truncate')"
            )
        if long_text == "truncate":
            pieces = [truncate(p, window) if long else p for p, long in zip(pieces, too_long)]
        return pieces, too_long & (long_text == "truncate")

    def _forward(self, pieces: list[TextPieces], sentence_pooling: str | None, keep_pieces: bool = True) -> _Forward:
        """Run every text through the model in token-budget batches and stitch windows.

        keep_pieces=False (sentence vectors only) skips gathering every piece's state: `hidden` is then empty."""
        sequences, owner, plans = plan_sequences(pieces, self.tokenizer.window)
        seq_len = np.array([s.size for s in sequences], dtype=np.int64)  # (S,)
        seq_offset = np.cumsum(seq_len) - seq_len
        flat, seq_sentence = self.run_sequences(sequences, sentence_pooling, keep_pieces)
        with self.stats.lock:
            self.stats.texts += len(pieces)
        owner_arr = np.array(owner, dtype=np.int64)
        seq_tokens = seq_len + self.tokenizer.n_special
        sentence = fold_windows(seq_sentence, seq_tokens, owner_arr, len(pieces), sentence_pooling)
        if not plans or not keep_pieces:
            return _Forward(hidden=flat, sentence=sentence)
        # Windowed texts: map each of their pieces to the row of its chosen window.
        text_len = np.array([p.ids.size for p in pieces], dtype=np.int64)
        first_seq = np.searchsorted(owner_arr, np.arange(len(pieces)))  # (N,) first sequence of each text
        source = np.repeat(seq_offset[first_seq] - (np.cumsum(text_len) - text_len), text_len)
        source += np.arange(source.size)
        text_offset = np.cumsum(text_len) - text_len
        for index, (seq_start, plan) in plans.items():
            rows = seq_offset[seq_start] + plan.flat_index  # windows' rows are consecutive in `flat`
            source[text_offset[index] : text_offset[index] + text_len[index]] = rows
        return _Forward(hidden=flat[source], sentence=sentence)

    def run_sequences(
        self, sequences: list[NDArray[np.int64]], sentence_pooling: str | None, keep_pieces: bool = True
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Sequences of content pieces (each at most `tokenizer.window`) through the model in token-budget batches.

        Returns:
            (sum of lengths, H) the content pieces' final states, sequence after sequence (empty with
            keep_pieces=False), and (S, H) each sequence's sentence vector (only when `sentence_pooling` is given).
        """
        seq_len = np.array([s.size for s in sequences], dtype=np.int64)  # (S,)
        seq_offset = np.cumsum(seq_len) - seq_len
        n_special = self.tokenizer.n_special
        info = self.backend.info
        # Every batch, a lone text's too, is padded to the backend's multiple: OpenVINO's kernels round differently
        # at other widths, and a text must get the same bits alone as merged with others (the server merges).
        multiple = info.pad_multiple
        padded = -(-(seq_len + n_special) // multiple) * multiple  # (S,) positions each sequence will take
        batches = plan_batches(padded, self.batch_tokens) if len(sequences) > 1 else [np.zeros(1, dtype=np.int64)]
        self.stats.add(0, batch_stats(seq_len + n_special, batches))

        flat = np.empty((int(seq_len.sum()) if keep_pieces else 0, self.dim), dtype=np.float32)  # (sum S_len, H)
        seq_sentence = np.empty((len(sequences), self.dim), dtype=np.float32)  # (S, H)
        for group in _groups(batches, GROUP_BATCHES):
            packed = [self.tokenizer.pack([sequences[i] for i in batch], multiple) for batch in group]
            outputs = self.backend.run_many(CONTEXTUAL_OUTPUT, [encoded.feeds(info.inputs) for encoded in packed])
            for batch, encoded, hidden in zip(group, packed, outputs):  # hidden: (B, T, H)
                if keep_pieces:
                    lengths = seq_len[batch]
                    dest = np.repeat(seq_offset[batch] - (np.cumsum(lengths) - lengths), lengths)
                    dest += np.arange(dest.size)
                    flat[dest] = hidden[encoded.content_rows, encoded.content_cols]
                if sentence_pooling is not None:
                    seq_sentence[batch] = pool_sentences(hidden, encoded.attention_mask, sentence_pooling)
        return flat, seq_sentence

def _refuse_phrases(words: Sequence[str]) -> None:
    """One rule for every interface (library, CLI --static, /embed/static): a static entry is one word, no
    whitespace inside; a phrase's words each have their own row of the table."""
    for index, word in enumerate(words):
        if isinstance(word, str) and len(parts := word.split()) > 1:
            raise InputError(
                f"word {index} ({preview(word.strip())}) holds {len(parts)} words; static vectors are one word "
                "each (embed its words one by one, or the text with contextual)"
            )


def _groups(batches: list[NDArray[np.int64]], size: int) -> list[list[NDArray[np.int64]]]:
    return [batches[start : start + size] for start in range(0, len(batches), size)]


def _as_list(texts: Sequence[TextInput]) -> list[TextInput]:
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not one string: contextual(['the king is wise.'])")
    return list(texts)
