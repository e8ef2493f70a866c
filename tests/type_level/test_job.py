"""`bertonnx embed --type-level`: the library's vectors, gensim-loadable files, counts, resume, bad input, memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import one_line_error, run
from helpers.memory import peak_rss_mb

from bertonnx import Embedder
from bertonnx.io.checkpoints import partial_dir
from bertonnx.io.formats import read_table
from bertonnx.type_level import DEFAULT_TEMPLATES
from bertonnx.type_level.job import TypeLevelJob, counts_path
from bertonnx.type_level.vectors import TypeLevelOptions

CLI = [sys.executable, "-c", "from bertonnx.cli.app import main; main()"]
VOCAB = ["king", "queen", "apple", "u.s.", "zebra", "music"]
LOAD = ("--backend", "onnxruntime", "--threads", "1")


def corpus_text(lines: int, seed: int = 0) -> str:
    words = "the a king queen apple music band kingdom is wise and of u.s. rule every day friends".split()
    rng = np.random.default_rng(seed)
    return "".join(" ".join(rng.choice(words, size=int(rng.integers(3, 14)))) + "\n" for _ in range(lines))


@pytest.fixture()
def vocab(tmp_path: Path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


def test_templates_to_npz_with_counts_as_the_library_gives(
    tiny_bundle: Path, embedder: Embedder, vocab: Path, tmp_path: Path
) -> None:
    out = tmp_path / "types.npz"
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab, "-o", out, *LOAD)
    assert result.exit_code == 0, result.output
    centred = run("embed", tiny_bundle, "--type-level", "-i", vocab, "-o", tmp_path / "c.npy", "--postprocess",
                  "center", *LOAD)
    assert centred.exit_code == 0 and "post-processed: center" in centred.stderr
    assert f"{len(VOCAB)} type-level vectors -> {out} + types.counts.tsv" in result.stderr
    assert "method templates, 6 of them" in result.stderr
    table = read_table(out)
    expected = embedder.type_vectors(VOCAB)
    assert table.keys == VOCAB
    np.testing.assert_array_equal(table.vectors, expected.vectors)
    with np.load(out) as archive:
        assert archive["counts"].tolist() == [len(DEFAULT_TEMPLATES)] * len(VOCAB)
        assert not archive["fallback"].any()
        assert archive["method"].item() == "templates" and archive["postprocess"].item() == "none"
        assert json.loads(archive["templates"].item()) == list(DEFAULT_TEMPLATES)
    rows = counts_path(out).read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("# bertonnx type-level: method=templates prior=5 context=sentence")
    assert rows[1] == "word\tcontexts\tsource" and rows[2] == f"king\t{len(DEFAULT_TEMPLATES)}\ttemplates"


def test_corpus_glob_to_word2vec_that_gensim_loads(
    tiny_bundle: Path, embedder: Embedder, vocab: Path, tmp_path: Path
) -> None:
    from gensim.models import KeyedVectors

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_text(corpus_text(300, 1), encoding="utf-8")
    (tmp_path / "c" / "b.txt").write_text(corpus_text(200, 2), encoding="utf-8")
    templates = tmp_path / "t.txt"
    templates.write_text("a {} !\n\nthe {} is here\n", encoding="utf-8")
    out = tmp_path / "types.bin"
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--corpus", str(tmp_path / "c" / "*.txt"),
                 "--templates", templates, "--max-contexts", "7", "-o", out, *LOAD)
    assert result.exit_code == 0, result.output
    assert "500 corpus lines" in result.stderr and "1 from templates (never seen)" in result.stderr
    assert "method corpus: prior 5, context sentence, at most 7 contexts a word" in result.stderr
    lines = (corpus_text(300, 1) + corpus_text(200, 2)).splitlines()
    expected = embedder.type_vectors(VOCAB, method="corpus", corpus=lines, max_contexts=7,
                                     templates=["a {} !", "the {} is here"])
    loaded = KeyedVectors.load_word2vec_format(str(out), binary=True)
    assert list(loaded.index_to_key) == VOCAB
    np.testing.assert_allclose(loaded.vectors, expected.vectors, rtol=1e-6, atol=1e-6)
    rows = dict(line.split("\t", 1) for line in counts_path(out).read_text(encoding="utf-8").splitlines()[2:])
    assert rows["zebra"] == "2\ttemplates" and rows["king"] == "7\tcorpus"


def test_a_killed_corpus_pass_resumes_to_identical_bytes(tiny_bundle: Path, vocab: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(6000, 3), encoding="utf-8")
    common = [*CLI, "embed", str(tiny_bundle), "--type-level", "-i", str(vocab), "--corpus", str(corpus),
              "--max-contexts", "100000", "--chunk-lines", "600", *LOAD]
    whole = tmp_path / "whole.npy"
    subprocess.run([*common, "-o", str(whole)], check=True, capture_output=True, timeout=600)
    out = tmp_path / "killed.npy"
    job = subprocess.Popen([*common, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = partial_dir(out) / "state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # after the second checkpoint of the corpus pass
        try:
            if json.loads(state.read_text())["position"]["lines_total"] >= 1200:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=60)
    assert not out.exists() and state.exists()
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--corpus", corpus, "--max-contexts", "100000",
                 "--chunk-lines", "600", "-o", out, "--resume", *LOAD)
    assert result.exit_code == 0, result.output
    assert "corpus lines kept from the killed run" in result.stderr
    for name in (out, out.with_name("killed.keys.txt"), counts_path(out)):
        twin = whole if name == out else whole.with_name(name.name.replace("killed", "whole"))
        assert name.read_bytes() == twin.read_bytes(), name
    assert not partial_dir(out).exists()


def test_a_stopped_templates_pass_resumes_to_identical_bytes(
    embedder: Embedder, tmp_path: Path
) -> None:
    base = [f"{a}{b}" for a in "abcdefghij" for b in "klmnopqrst"]
    words = base + [w.upper() for w in base] + [w.title() for w in base]  # 300 entries, 100 slots (uncased)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n", encoding="utf-8")
    options = TypeLevelOptions(chunk_lines=60 * len(DEFAULT_TEMPLATES))  # templates checkpoint every 60 words
    whole = TypeLevelJob(embedder, vocab, [], tmp_path / "whole.npz", options).open(False, False).run()
    assert whole.words == 300

    class Stop(Exception):
        pass

    def stop(what: str, done: int, total: int, lines: int) -> None:
        if what == "templates" and done >= 60:
            raise Stop

    out = tmp_path / "out.npz"
    job = TypeLevelJob(embedder, vocab, [], out, options).open(False, False)

    def interrupted(*args: object) -> None:  # Ctrl-C inside the first model call, before any checkpoint of the pass
        raise KeyboardInterrupt

    job.sums.add_templates = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        job.run()
    early = TypeLevelJob(embedder, vocab, [], out, options).open(resume=True, force=False)  # the start's checkpoint
    assert early.position.template_done == 0
    early.run()
    assert out.read_bytes() == (tmp_path / "whole.npz").read_bytes()
    out.unlink()
    counts_path(out).unlink()
    with pytest.raises(Stop):
        TypeLevelJob(embedder, vocab, [], out, options).open(False, False).run(stop)
    resumed = TypeLevelJob(embedder, vocab, [], out, options).open(resume=True, force=False)
    assert resumed.position.template_done == 60
    resumed.run()
    assert out.read_bytes() == (tmp_path / "whole.npz").read_bytes()


def test_a_resume_under_other_settings_is_refused(tiny_bundle: Path, vocab: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(50), encoding="utf-8")
    out = tmp_path / "out.npy"
    partial_dir(out).mkdir()
    (partial_dir(out) / "state.json").write_text("{}", encoding="utf-8")
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--corpus", corpus, "-o", out, *LOAD)
    one_line_error(result, "holds a killed job's work: --resume continues it, --force starts over")
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--corpus", corpus, "-o", out, "--resume", *LOAD)
    one_line_error(result, "cannot resume")
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--corpus", corpus, "-o", out, "--force", *LOAD)
    assert result.exit_code == 0 and out.exists()
    again = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--corpus", corpus, "-o", out, *LOAD)
    one_line_error(again, "exists; --force replaces it")


@pytest.mark.parametrize(
    "vocab_text,corpus_bytes,extra,message,code",
    [
        ("king\nthe queen\n", b"the king\n", (), "line 2 holds 2 words", 1),
        ("king\n\nqueen\n", b"the king\n", (), "line 2 is blank", 1),
        ("king\n", b"", (), "the corpus is empty", 1),
        ("king\n", b"the king\n\xff\xfe bad\n", (), "line 2 is not valid UTF-8", 1),
        ("king\n", b"the king\n", ("--postprocess", "abtt:0"), "expected none, center or abtt:D", 2),
        ("king\n", b"the king\n", ("--pooling", "cls"), "pooling", 2),
        ("king\nzzz\u20ac\n", b"the king\n", (), "line 2 ('zzz€') maps to the unknown token; --unknown unk|zero", 1),
        ("king\nqueen\nking\n", b"the king\n", (), "line 3 ('king') repeats {vocab}: line 1; give each word once", 1),
        ("king\nqueen\n", b"the king\n", ("--postprocess", "abtt:1"), "abtt:1 needs at least 3 distinct words", 2),
        ("king\n", b"the king\n", ("--normalize", "--on-error", "skip"), "--normalize, --on-error do not apply", 2),
        ("king\n", b"the king\n", ("--max-length", "8"), "--max-length does not apply to --type-level", 2),
        ("king\n", b"the king\n", ("--static",), "choose exactly one of --static, --contextual", 2),
        ("king\n", b"the king\n", ("--context", "paragraph"), "expected sentence, line or window:N", 2),
        ("king\n", b"the king\n", ("--prior", "-1"), "--prior", 2),
    ],
)
def test_bad_input_is_one_line(
    tiny_bundle: Path, tmp_path: Path, vocab_text: str, corpus_bytes: bytes, extra: tuple[str, ...], message: str,
    code: int,
) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(vocab_text, encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(corpus_bytes)
    out = tmp_path / "out.npy"
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--corpus", corpus, "-o", out, *extra, *LOAD)
    one_line_error(result, message.format(vocab=vocab), code)
    assert not out.exists() and not counts_path(out).exists()


def test_corpus_options_need_type_level(tiny_bundle: Path, vocab: Path, tmp_path: Path) -> None:
    for extra in (["--corpus", str(vocab)], ["--max-contexts", "5"], ["--postprocess", "center"], ["--prior", "0"],
                  ["--context", "line"]):
        result = run("embed", tiny_bundle, "--static", "-i", vocab, *extra, "-o", tmp_path / "o.npy")
        one_line_error(result, "--corpus, --templates, --max-contexts, --prior, --context and --postprocess go with "
                       "--type-level", 2)
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab)
    one_line_error(result, "--type-level writes a file", 2)
    result = run("embed", tiny_bundle, "--type-level", "-o", tmp_path / "o.npy")  # -i defaults to stdin
    one_line_error(result, "--type-level reads its vocabulary from a file", 2)
    result = run("embed", tiny_bundle, "--type-level", "-i", tmp_path / "none.txt", "-o", tmp_path / "o.npy")
    one_line_error(result, "none.txt: no such vocabulary file")
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--corpus", tmp_path, "-o", tmp_path / "o.npy")
    one_line_error(result, "a directory, not a corpus file")
    templates = tmp_path / "t.txt"
    templates.write_text("the {} is\n\nno slot here\n", encoding="utf-8")
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--templates", templates, "-o", tmp_path / "o.npy")
    one_line_error(result, "t.txt: line 3 ('no slot here') must hold {} exactly once", 2)
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--templates", tmp_path / "no.txt",
                 "-o", tmp_path / "o.npy")
    one_line_error(result, "no.txt: no such templates file")
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--corpus", str(tmp_path / "none*.txt"),
                 "-o", tmp_path / "o.npy")
    one_line_error(result, "none*.txt: no file matches this glob")  # one expander for every job's globs


@pytest.mark.slow
def test_memory_does_not_grow_with_the_corpus(tiny_bundle: Path, vocab: Path, tmp_path: Path) -> None:
    """10x the corpus lines, every line with vocabulary words: only running sums are kept."""
    peaks = []
    for lines in (3_000, 30_000):
        corpus = tmp_path / f"c{lines}.txt"
        corpus.write_text(corpus_text(lines, 5), encoding="utf-8")
        out = tmp_path / f"o{lines}.npy"
        peaks.append(peak_rss_mb([*CLI, "embed", str(tiny_bundle), "--type-level", "-i", str(vocab), "--corpus",
                                  str(corpus), "--max-contexts", "1000000", "-o", str(out), *LOAD]))
        assert out.exists()
    print(f"peak RSS type-level: {peaks[0]:.0f} MB -> {peaks[1]:.0f} MB")
    assert peaks[1] - peaks[0] < 40, f"peak RSS {peaks[0]:.0f} MB -> {peaks[1]:.0f} MB"


def test_entries_sharing_a_slot_keep_their_own_keys(tiny_bundle: Path, tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("Apple\napple\nking\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    assert run("embed", tiny_bundle, "--type-level", "-i", vocab, "-o", out, *LOAD).exit_code == 0
    table = read_table(out)
    assert table.keys == ["Apple", "apple", "king"]
    np.testing.assert_array_equal(table.vectors[0], table.vectors[1])
    assert os.path.getsize(out) > 0


@pytest.mark.parametrize("suffix", [".npz", ".txt"])
def test_the_output_says_how_the_vectors_were_made(
    tiny_bundle: Path, embedder: Embedder, vocab: Path, tmp_path: Path, suffix: str
) -> None:
    """The npz's 0-d fields and the counts file's first line: method, prior, context rule, cap, post-processing."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(80, 4).replace("\n", ". The queen.\n"), encoding="utf-8")
    out = tmp_path / f"types{suffix}"
    result = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--corpus", corpus, "--prior", "2.5",
                 "--context", "window:3", "--max-contexts", "9", "--postprocess", "center", "-o", out, *LOAD)
    assert result.exit_code == 0, result.output
    assert "method corpus: prior 2.5, context window:3, at most 9 contexts a word" in result.stderr
    header = counts_path(out).read_text(encoding="utf-8").splitlines()[0]
    assert header == ("# bertonnx type-level: method=corpus prior=2.5 context=window:3 context_rule=sentence/1 "
                      "max_contexts=9 postprocess=center pooling=mean")
    expected = embedder.type_vectors(VOCAB, method="corpus", corpus=corpus.read_text().splitlines(), prior=2.5,
                                     context="window:3", max_contexts=9, postprocess="center")
    np.testing.assert_allclose(read_table(out).vectors, expected.vectors, rtol=1e-6, atol=1e-6)
    if suffix == ".npz":
        with np.load(out) as archive:
            made = {key: archive[key].item() for key in ("method", "prior", "context", "max_contexts", "postprocess")}
        assert made == {"method": "corpus", "prior": 2.5, "context": "window:3", "max_contexts": 9,
                        "postprocess": "center"}
    import csv

    with counts_path(out).open(encoding="utf-8", newline="") as stream:  # a reader skips the `#` line as a comment
        rows = list(csv.DictReader((line for line in stream if not line.startswith("#")), delimiter="\t"))
    assert [row["word"] for row in rows] == VOCAB and rows[0].keys() == {"word", "contexts", "source"}


def test_a_resume_under_another_context_rule_or_prior_is_refused(embedder: Embedder, vocab: Path,
                                                                  tmp_path: Path) -> None:
    from bertonnx.errors import OutputError

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(400, 6), encoding="utf-8")
    options = TypeLevelOptions(chunk_lines=100, max_contexts=10**6)

    class Stop(Exception):
        pass

    def stop(what: str, done: int, total: int, lines: int) -> None:
        if lines >= 200:
            raise Stop

    out = tmp_path / "out.npy"
    with pytest.raises(Stop):
        TypeLevelJob(embedder, vocab, [corpus], out, options).open(False, False).run(stop)
    for changed, named in ((replace(options, context="line"), "context: saved 'sentence', now 'line'"),
                           (replace(options, prior=0), "prior: saved 5.0, now 0.0")):
        with pytest.raises(OutputError, match=named):
            TypeLevelJob(embedder, vocab, [corpus], out, changed).open(resume=True, force=False)
    TypeLevelJob(embedder, vocab, [corpus], out, options).open(resume=True, force=False).run()
    whole = tmp_path / "whole.npy"
    TypeLevelJob(embedder, vocab, [corpus], whole, options).open(False, False).run()
    assert out.read_bytes() == whole.read_bytes()
