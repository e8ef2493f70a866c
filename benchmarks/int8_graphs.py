"""Each int8 recipe's graph against OpenVINO bf16, rounds interleaved: `python -m bertonnx.benchmarks.int8_graphs`.

    python -m bertonnx.benchmarks.int8_graphs [BUNDLE] [--shapes 1x16,8x32,32x48,8x128,2x256] [--rounds 15]
        [--threads N] [--out DIR]

`bertonnx bench` times whole calls (tokenising and pooling too) and runs a bulk workload at most three times,
so a 5 % difference between two int8 recipes drowns in its spread. Here only the compiled graphs run, as the
product compiles them (OpenVINO, latency hint, one stream), on padded batches of fixed shapes; every round runs
each system once per shape in a fresh random order, and each shape keeps the median over rounds of the
per-round ratio to the baseline (bf16 where the CPU has native bf16, else fp32). Beside each recipe: its fidelity
against fp32 on the probes and HELD_OUT_PROSE, the figures its gate reads. The recipes are this CPU's
(quantize.int8_recipe), quantised into the user cache as a load would.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertonnx.backends.choose import Choice, Machine, this_machine
from bertonnx.backends.open import Opened, open_choice
from bertonnx.backends.quantize import RECIPE_KINDS
from bertonnx.benchmarks.machine import describe_machine
from bertonnx.bundle import CONTEXTUAL_OUTPUT, Bundle, load_bundle
from bertonnx.defaults import resolve_bundle
from bertonnx.errors import BertonnxError, OptionError
from bertonnx.options import LoadOptions
from bertonnx.tokenize import Tokenizer

DEFAULT_SHAPES = "1x16,8x32,32x48,8x128,2x256"


@dataclass(frozen=True)
class GraphRow:
    """One system: per shape (\"BxT\"), the median ms of a run and the median per-round ratio to the baseline."""

    system: str
    recipe: str | None
    ms: dict[str, float]
    vs_baseline: dict[str, float]
    word_mean_cosine: float | None
    word_min_cosine: float | None
    sentence_min_cosine: float | None


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """"8x32,1x16" -> [(8, 32), (1, 16)]: batch size x tokens (special tokens included)."""
    shapes = []
    for part in filter(None, text.split(",")):
        batch, _, tokens = part.partition("x")
        if not (batch.isdigit() and tokens.isdigit()) or int(batch) < 1 or int(tokens) < 3:
            raise ValueError(f"a shape is BATCHxTOKENS with BATCH >= 1 and TOKENS >= 3, e.g. 8x32; got {part!r}")
        shapes.append((int(batch), int(tokens)))
    if not shapes:
        raise ValueError("no shapes given")
    return shapes


def plan(machine: Machine) -> tuple[list[Choice], str]:
    """What runs on this CPU class: OpenVINO fp32, bf16 where native, and each int8 recipe kind; and the baseline."""
    choices = [Choice("openvino", "fp32", "baseline")]
    if machine.native_bf16:
        choices.append(Choice("openvino", "bf16", "baseline"))
    choices += [Choice("openvino", "int8", "recipe", kind) for kind in RECIPE_KINDS]
    return choices, "openvino bf16" if machine.native_bf16 else "openvino fp32"


def label(choice: Choice) -> str:
    return f"openvino {choice.precision}" + (f" ({choice.recipe} recipe)" if choice.precision == "int8" else "")


def systems(bundle: Bundle, tokenizer: Tokenizer, threads: int | None) -> tuple[dict[str, Opened], str]:
    """plan()'s systems opened, each int8 recipe whatever its gate says (its figures are reported, not enforced)."""
    machine = this_machine()
    options = LoadOptions(threads=threads, min_fidelity=0.0)
    choices, baseline = plan(machine)
    opened = {label(choice): open_choice(bundle, tokenizer, choice, options, machine,
                                         gate_of="sentences" if choice.recipe == "sentences" else None)
              for choice in choices}
    return opened, baseline


def feeds_of(tokenizer: Tokenizer, inputs: tuple[str, ...], batch: int, tokens: int, seed: int) -> dict[str, Any]:
    """A (batch, tokens) batch of random single-piece words between the special tokens, no padding."""
    rng = np.random.default_rng(seed)
    pieces = np.array(sorted(tokenizer.single_pieces.values()), dtype=np.int64)
    content = tokens - tokenizer.n_special
    return tokenizer.pack(list(rng.choice(pieces, size=(batch, content)))).feeds(inputs)


def measure(opened: dict[str, Opened], baseline: str, shapes: list[tuple[int, int]], rounds: int,
            tokenizer: Tokenizer, seed: int = 0) -> list[GraphRow]:
    times: dict[tuple[str, str], list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    shuffle = random.Random(seed)
    for batch, tokens in shapes:
        shape = f"{batch}x{tokens}"
        feeds = {name: feeds_of(tokenizer, o.backend.info.inputs, batch, tokens, seed) for name, o in opened.items()}
        for name, o in opened.items():  # warm up: first calls allocate
            for _ in range(2):
                o.backend.run(CONTEXTUAL_OUTPUT, feeds[name])
        for _ in range(rounds):
            order = list(opened)
            shuffle.shuffle(order)
            took = {}
            for name in order:
                start = time.perf_counter()
                opened[name].backend.run(CONTEXTUAL_OUTPUT, feeds[name])
                took[name] = time.perf_counter() - start
            for name, seconds in took.items():
                times.setdefault((name, shape), []).append(seconds * 1e3)
                ratios.setdefault((name, shape), []).append(took[baseline] / seconds)
    rows = []
    for name, o in opened.items():
        figures = o.fidelity.fidelity if o.fidelity is not None else None
        labels = [f"{b}x{t}" for b, t in shapes]
        rows.append(GraphRow(
            system=name,
            recipe=o.backend.info.details.get("int8_recipe"),
            ms={s: statistics.median(times[name, s]) for s in labels},
            vs_baseline={s: statistics.median(ratios[name, s]) for s in labels},
            word_mean_cosine=figures.word_mean_cosine if figures else None,
            word_min_cosine=figures.word_min_cosine if figures else None,
            sentence_min_cosine=figures.sentence_min_cosine if figures else None,
        ))
    return rows


def markdown(rows: list[GraphRow], baseline: str) -> str:
    shapes = list(rows[0].ms)
    head = "| system | " + " | ".join(f"{s} ms (× {baseline.split()[-1]})" for s in shapes)
    head += " | word cos mean / min | sentence cos min |"
    lines = [head, "|---|" + "---:|" * len(shapes) + "---|---:|"]
    for row in rows:
        cells = [f"{row.ms[s]:.2f} ({row.vs_baseline[s]:.2f}×)" for s in shapes]
        words = "1 / 1" if row.word_mean_cosine is None else f"{row.word_mean_cosine:.5f} / {row.word_min_cosine:.4f}"
        sentence = "1" if row.sentence_min_cosine is None else f"{row.sentence_min_cosine:.4f}"
        lines.append(f"| {row.system} | " + " | ".join(cells) + f" | {words} | {sentence} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bertonnx.benchmarks.int8_graphs",
                                     description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("bundle", type=Path, nargs="?", default=None, help="default: all-MiniLM-L6-v2")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated BATCHxTOKENS")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench-int8-graphs"))
    args = parser.parse_args(argv)
    try:
        shapes = parse_shapes(args.shapes)
    except ValueError as error:
        parser.error(str(error))
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; name a directory")
    try:
        bundle_dir = resolve_bundle(args.bundle)
        bundle = load_bundle(bundle_dir, verify=False)
        longest = max(tokens for _, tokens in shapes)
        if longest > bundle.max_length:
            raise OptionError(f"a shape of {longest} tokens is over the model's maximum, {bundle.max_length}")
        machine = describe_machine()
        tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
        opened, baseline = systems(bundle, tokenizer, args.threads)
        rows = measure(opened, baseline, shapes, args.rounds, tokenizer)
    except BertonnxError as error:  # a missing bundle, no OpenVINO, a bad --threads: one line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    threads = next(iter(opened.values())).backend.info.threads
    versions = ", ".join(f"{name} {_version(name)}" for name in ("openvino", "nncf"))
    heading = (f"{machine.cpu}, family {machine.family} ({', '.join(machine.flags)}), {machine.cores} cores, "
               f"{threads} threads; {versions}; {Path(bundle_dir).name}; {args.rounds} rounds; load average at the "
               f"start {machine.load_average[0]:.2f}. Per shape: the median ms of a run, and in brackets the median "
               f"of the per-round ratios to {baseline} (the two need not agree).")
    text = f"{heading}\n\n{markdown(rows, baseline)}\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8_graphs.md").write_text(text, encoding="utf-8")
    (args.out / "int8_graphs.json").write_text(json.dumps(
        {"machine": machine.to_dict(), "bundle": str(bundle_dir), "rounds": args.rounds, "baseline": baseline,
         "threads": threads, "versions": {name: _version(name) for name in ("openvino", "nncf")},
         "rows": [asdict(row) for row in rows]}, indent=2, default=str), encoding="utf-8")
    print(text)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
