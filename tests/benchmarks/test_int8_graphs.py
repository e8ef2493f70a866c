"""Each int8 recipe's graph against bf16, rounds interleaved (benchmarks/int8_graphs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertonnx.benchmarks import int8_graphs


def test_shapes_are_batch_by_tokens() -> None:
    assert int8_graphs.parse_shapes("8x32,1x16") == [(8, 32), (1, 16)]
    for bad in ("8", "8x", "x32", "0x32", "8x2", ""):
        with pytest.raises(ValueError):
            int8_graphs.parse_shapes(bad)


@pytest.mark.slow  # two NNCF quantisations of the tiny model
def test_every_recipe_runs_beside_the_baseline_with_its_figures(tiny_bundle: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("nncf")
    int8_graphs.main([str(tiny_bundle), "--shapes", "2x16,1x8", "--rounds", "2", "--threads", "1",
                      "--out", str(tmp_path)])
    report = json.loads((tmp_path / "int8_graphs.json").read_text())
    rows = {row["system"]: row for row in report["rows"]}
    assert {"openvino fp32", "openvino int8 (words recipe)", "openvino int8 (sentences recipe)"} <= set(rows)
    baseline = rows[report["baseline"]]
    assert baseline["vs_baseline"] == {"2x16": 1.0, "1x8": 1.0}
    for name, row in rows.items():
        assert set(row["ms"]) == {"2x16", "1x8"} and all(ms > 0 for ms in row["ms"].values())
        if "int8" in name:
            assert row["recipe"] and 0 < row["word_min_cosine"] <= row["word_mean_cosine"] <= 1
            assert 0 < row["sentence_min_cosine"] <= 1
    assert "openvino int8 (sentences recipe)" in capsys.readouterr().out


@pytest.mark.parametrize(("flags", "baseline"), [
    (frozenset({"avx2", "fma"}), "openvino fp32"),  # Zen 3: no native bf16
    (frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}), "openvino bf16"),  # Zen 4
    (frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}), "openvino bf16"),  # Xeon
])
def test_the_baseline_follows_the_cpu_class(flags: frozenset[str], baseline: str) -> None:
    from bertonnx.backends.choose import Machine

    choices, found = int8_graphs.plan(Machine(frozenset({"openvino", "nncf"}), (), flags))
    labels = [int8_graphs.label(choice) for choice in choices]
    assert found == baseline and baseline in labels
    assert ("openvino bf16" in labels) == (baseline == "openvino bf16")
    assert labels[-2:] == ["openvino int8 (words recipe)", "openvino int8 (sentences recipe)"]


@pytest.mark.parametrize("argv", [["--shapes", "8x"], ["--shapes", "0x16"], ["--rounds", "0"], ["--threads", "0"],
                                  ["/no/such/bundle"], ["BUNDLE", "--shapes", "1x9999"], ["BUNDLE", "--out", "FILE"]])
def test_bad_arguments_fail_in_one_line(argv: list[str], tiny_bundle: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("not a directory")
    argv = [{"BUNDLE": str(tiny_bundle), "FILE": str(tmp_path / "file")}.get(arg, arg) for arg in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stopped:
        int8_graphs.main(argv)
    assert stopped.value.code not in (0, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err) and "error" in err[-1]
