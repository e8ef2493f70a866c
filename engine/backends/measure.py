"""`auto` decided by measurement: CPU flags say what is worth trying, a timed workload says which wins.

At the first load of a graph on a machine, every candidate backend x precision
that passes its gate is timed on a fixed workload built from the fidelity
probes, in two parts: short (each probe alone, as a request is) and bulk
(batches of the probes and of a text of the model's full length, as a bulk
job runs them), the candidates' rounds interleaved so that a drifting machine
hits them all alike. The winner has the lowest geometric mean of the two
medians: neither latency nor throughput decides alone, nor either part's
scale; within 3 % of it, the first candidate in a fixed order wins (ONNX
Runtime first), so that noise does not flip a near-tie between runs.
Timings are cached with the fidelity figures, keyed like them (graph,
versions, CPU flags) and by thread count, so later loads read the verdict
instead of measuring again.

Two policies:
    auto      faithful: every candidate must clear the bf16 gate (token min
              cosine >= 0.999). int8 takes part only where its fidelity, already
              measured on this machine, clears that same gate: quantising just
              to find out would cost a first-time user a minute.
    fastest   also admits int8, under int8's own gate, where the CPU has int8
              kernels and NNCF is installed; and then splits by use: int8's
              sentence recipe (every MatMul int8) is timed beside the rest, and each
              use goes to the fastest candidate that passes that use's gate: sentence
              vectors the sentence gate, word and token vectors the word gate (int8's)
              -- a recipe serves any use whose gate it passes, whatever use it was made
              for; on a near-tie the one made for the use wins.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bertonnx.backends.base import Backend, Feeds
from bertonnx.backends.choose import INT8_FLAGS, Machine
from bertonnx.bundle import CONTEXTUAL_OUTPUT
from bertonnx.fidelity import probe_batch
from bertonnx.tokenize import Tokenizer

ROUNDS = 5
"""Timed rounds per candidate (after one untimed): the median of each part is its figure."""
WORKLOAD = "probes-short-and-bulk/v1"
"""The timed workload's name: in the cache key, so a changed workload measures again."""
RULE = "each-use-to-the-fastest-recipe-that-passes-its-gate/v2"
"""How a split verdict picks per use: in its cache key, so one made under another rule (before it, the sentence
recipe never served words) is measured again."""


@dataclass(frozen=True)
class Trial:
    """One candidate: its medians, or why it took no part."""

    backend: str
    precision: str
    short_ms: float | None  # median of the short part (every probe alone); None when refused
    bulk_ms: float | None  # median of the bulk part
    refused: str | None = None  # why it could not run here, or its fidelity under the gate
    recipe: str = "words"  # OpenVINO int8's recipe kind (quantize.RECIPE_KINDS); "words" elsewhere

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}" + ("" if self.recipe == "words" else f" ({self.recipe} recipe)")

    @property
    def key(self) -> tuple[str, str, str]:
        return self.backend, self.precision, self.recipe

    @property
    def score(self) -> float | None:
        """Geometric mean of the two parts' medians, in ms: lower wins."""
        if self.short_ms is None or self.bulk_ms is None:
            return None
        return float(np.sqrt(self.short_ms * self.bulk_ms))


@dataclass(frozen=True)
class Timings:
    """Every candidate's figures and the winner: what `info` and /info show."""

    policy: str  # auto | fastest
    threads: int
    trials: tuple[Trial, ...]
    winner: tuple[str, str]  # (backend, precision) serving word and token vectors (its int8 recipe: "words")
    measured_at: str  # ISO time of the measurement
    sentence_winner: tuple[str, str, str] | None = None  # (backend, precision, recipe) serving sentence vectors,
    # where `fastest` split by use; None: the winner serves them too
    winner_recipe: str = "words"  # the word winner's int8 recipe kind: "sentences" where that recipe, faster, passed
    # the word gate too

    @property
    def word_winner(self) -> tuple[str, str, str]:
        """(backend, precision, recipe) serving word and token vectors."""
        return (*self.winner, self.winner_recipe)

    @property
    def reason(self) -> str:
        """Why the winner won, in a few words (the figures are in `trials`)."""
        timed = sum(t.score is not None for t in self.trials)
        refused = [t.name for t in self.trials if t.refused and not t.refused.startswith("not tried")]
        return f"{self.policy}: fastest of {timed} timed on this machine" + (
            f"; {', '.join(refused)} refused" if refused else ""
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: lists, not tuples, so a dict read back from the cache compares equal."""
        data = asdict(self)
        sentences = None if self.sentence_winner is None else list(self.sentence_winner)
        return data | {"trials": [asdict(trial) for trial in self.trials], "winner": list(self.winner),
                       "sentence_winner": sentences}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timings:
        trials = tuple(Trial(**trial) for trial in data["trials"])
        backend, precision = data["winner"]
        found = data.get("sentence_winner")
        sentences = None if found is None else (str(found[0]), str(found[1]), str(found[2]))
        return cls(data["policy"], int(data["threads"]), trials, (backend, precision), data["measured_at"], sentences,
                   str(data.get("winner_recipe", "words")))


NEAR_TIE = 1.03
"""A candidate within this factor of the fastest counts as tied with it; of tied ones the first in
`candidates` order wins (ONNX Runtime first), so that timing noise does not flip the choice between runs."""


def winner(trials: Sequence[Trial]) -> tuple[str, str]:
    """The first timed candidate (in the order given) within NEAR_TIE of the lowest score."""
    chosen = fastest_trial(trials)
    return chosen.backend, chosen.precision


def fastest_trial(trials: Sequence[Trial]) -> Trial:
    """`winner`'s trial, its recipe included: for a use whose candidates include more than one int8 recipe."""
    timed = [t for t in trials if t.score is not None]
    best = min(t.score or 0.0 for t in timed)
    return next(t for t in timed if (t.score or 0.0) <= best * NEAR_TIE)


def candidates(policy: str, bundle_precision: str, machine: Machine, int8_faithful: bool) -> list[tuple[str, str]]:
    """(backend, precision) pairs worth timing on this CPU, best guess first.

    Args:
        int8_faithful: int8's fidelity, measured before on this machine, clears the bf16 gate.
    """
    found: list[tuple[str, str]] = []
    if "onnxruntime" in machine.installed:
        found.append(("onnxruntime", bundle_precision))
    if "openvino" in machine.installed and bundle_precision == "fp32":
        if machine.native_bf16:
            found.append(("openvino", "bf16"))
        found.append(("openvino", "fp32"))
        int8_cpu = _has_int8_kernels(machine) and "nncf" in machine.installed
        if int8_cpu and (policy == "fastest" or int8_faithful):
            found.append(("openvino", "int8"))
    return found


SENTENCE_RECIPE = ("openvino", "int8", "sentences")
"""int8's sentence recipe as a candidate: (backend, precision, recipe kind)."""


def by_use(policy: str, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """The candidates with their int8 recipe kind: under `fastest` with OpenVINO int8 among them, int8's sentence
    recipe too, last (a near-tie goes to a recipe made for words), timed beside the rest."""
    found = [(backend, precision, "words") for backend, precision in pairs]
    return found + [SENTENCE_RECIPE] if policy == "fastest" and ("openvino", "int8") in pairs else found


@dataclass(frozen=True)
class Workload:
    short: list[list[Feeds]]  # calls of one batch each: every probe alone
    bulk: list[list[Feeds]]  # one call of several batches: the probes together, the full-length text alone, twice


def left_out(policy: str, bundle_precision: str, machine: Machine, int8_faithful: bool) -> list[Trial]:
    """The OpenVINO precisions not tried on this machine, each with why: what `info` lists beside the timings."""
    if "openvino" not in machine.installed or bundle_precision != "fp32":
        return []
    found = []
    if not machine.native_bf16:
        found.append(Trial("openvino", "bf16", None, None, "not tried: this CPU has no native bf16 (AMX or "
                           "AVX512-BF16); emulated bf16 is slower than fp32"))
    if not _has_int8_kernels(machine):
        found.append(Trial("openvino", "int8", None, None, "not tried: this CPU has no int8 kernels (AVX2, VNNI or "
                           "AMX-INT8)"))
    elif "nncf" not in machine.installed:
        found.append(Trial("openvino", "int8", None, None, "not tried: NNCF is not installed "
                           "(pip install 'bertonnx[openvino]')"))
    elif policy == "auto" and not int8_faithful:
        found.append(Trial("openvino", "int8", None, None, "not tried under auto: no measured fidelity here clears "
                           "the bf16 gate yet (precision 'fastest' tries it under its own gate)"))
    return found


def _has_int8_kernels(machine: Machine) -> bool:
    """OpenVINO has int8 kernels here: dot products (VNNI, AMX-INT8), or AVX2's pairwise ones, for which the
    recipe keeps weights to 7 bits (quantize.int8_recipe)."""
    return bool(machine.cpu_flags & {*INT8_FLAGS, "avx2"})


def timing_workload(tokenizer: Tokenizer) -> Workload:
    """The fixed workload: the fidelity probes (mixed lengths, unusual characters) and a full-length text."""
    encoded, _ = probe_batch(tokenizer)  # the probes, then one text of the model's full length
    arrays = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask,
              "token_type_ids": encoded.token_type_ids}
    widths = encoded.attention_mask.sum(axis=1).tolist()

    def rows(start: int, stop: int) -> Feeds:
        width = max(widths[start:stop])
        return {name: np.ascontiguousarray(value[start:stop, :width]) for name, value in arrays.items()}

    last = len(widths) - 1
    short = [[rows(row, row + 1)] for row in range(last)]
    return Workload(short=short, bulk=[[rows(0, last), rows(last, last + 1)] * 2])


Key = TypeVar("Key", bound=Hashable)


def time_candidates(
    backends: Mapping[Key, Backend], workload: Workload, rounds: int = ROUNDS,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[Key, tuple[float, float]]:
    """(short, bulk) median milliseconds per candidate, rounds interleaved in rotation (A B, B A, ...)."""
    keys = list(backends)
    for key in keys:  # warm-up: compiled shapes, caches, thread pools
        _calls(backends[key], workload.short + workload.bulk)
    spent: dict[Key, list[tuple[float, float]]] = {key: [] for key in keys}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for index in range(rounds):
            for key in keys[index % len(keys):] + keys[: index % len(keys)]:
                start = clock()
                _calls(backends[key], workload.short)
                middle = clock()
                _calls(backends[key], workload.bulk)
                spent[key].append(((middle - start) / 1e6, (clock() - middle) / 1e6))
    finally:
        if enabled:
            gc.enable()
    return {key: (float(np.median([s for s, _ in v])), float(np.median([b for _, b in v])))
            for key, v in spent.items()}


def _calls(backend: Backend, calls: Sequence[Sequence[Feeds]]) -> None:
    for batches in calls:
        feeds = [{name: batch[name] for name in backend.info.inputs} for batch in batches]
        backend.run_many(CONTEXTUAL_OUTPUT, feeds)


def cache_key(graph_sha256: str, policy: str, threads: int, versions: Mapping[str, str], machine: Machine,
              pairs: Sequence[tuple[str, str]], gates: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What a cached verdict depends on: the graph, the runtimes, the CPU, the threads, the candidates and the
    gates they were held to (a stricter gate refuses candidates a default load would take)."""
    return {
        "graph": graph_sha256,
        "policy": policy,
        "threads": threads,
        "versions": dict(sorted(versions.items())),
        "cpu": sorted(machine.cpu_flags & {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni",
                                           "avx512f", "avx2"}),
        "candidates": [list(pair) for pair in pairs],
        "gates": dict(sorted((gates or {}).items())),
        "workload": WORKLOAD,
    }


def read_timings(path: Path, key: Mapping[str, Any]) -> Timings | None:
    from bertonnx.io.cache import read_entry

    return read_entry(path, key, Timings.from_dict)


def write_timings(path: Path, key: Mapping[str, Any], timings: Timings) -> None:
    from bertonnx.io.cache import write_entry

    write_entry(path, key, timings.to_dict())


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
