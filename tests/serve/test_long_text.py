"""/v1/embeddings and long texts: cut where sentence-transformers cuts, unless the server or request asks to window.

The tiny bundle did not come from sentence-transformers; `serving` records a
max_seq_length of 16 in its manifest, as export does for all-MiniLM-L6-v2 (256).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from helpers.serve import Server, error_of, floats, serving  # noqa: E402

from bertonnx.serve.settings import ServeSettings  # noqa: E402

CUT = 16
SHORT = "The king is wise."
LONG = " ".join(["the king is wise and the queen is kind"] * 12)  # 108 pieces: past the cut and the tiny 64


@pytest.fixture(scope="module")
def st_server(tiny_bundle: Path) -> Iterator[Server]:
    with serving(tiny_bundle, sentence_transformers_max_length=CUT) as running:
        yield running


def embed(server: Server, texts: list[str], **fields: str) -> tuple[np.ndarray, int]:
    reply = server.post("/v1/embeddings", {"input": texts, **fields})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    return floats([item["embedding"] for item in body["data"]]), body["usage"]["prompt_tokens"]


def test_by_default_texts_are_cut_where_sentence_transformers_cuts(st_server: Server) -> None:
    reference = st_server.embedder
    got, tokens = embed(st_server, [SHORT, LONG])
    np.testing.assert_array_equal(got, reference.sentences([SHORT, LONG], normalize=True, max_length=CUT))
    short_tokens = int(reference.count_tokens([SHORT])[0])
    assert short_tokens < CUT and tokens == short_tokens + CUT  # usage counts what ran: the cut text
    np.testing.assert_array_equal(got[0], reference.sentences([SHORT], normalize=True)[0])  # short: unchanged
    windowed = reference.sentences([LONG], normalize=True)[0]
    assert not np.allclose(got[1], windowed)


def test_a_request_may_ask_for_windows(st_server: Server) -> None:
    reference = st_server.embedder
    got, tokens = embed(st_server, [SHORT, LONG], long_text="window")
    np.testing.assert_array_equal(got, reference.sentences([SHORT, LONG], normalize=True))
    assert tokens == int(reference.count_tokens([SHORT, LONG]).sum())
    cut, _ = embed(st_server, [LONG], long_text="sentence-transformers")
    np.testing.assert_array_equal(cut[0], reference.sentences([LONG], normalize=True, max_length=CUT)[0])


def test_the_server_may_window_by_default(tiny_bundle: Path) -> None:
    with serving(tiny_bundle, sentence_transformers_max_length=CUT, long_text="window") as windowing:
        reference = windowing.embedder
        got, _ = embed(windowing, [LONG])
        np.testing.assert_array_equal(got[0], reference.sentences([LONG], normalize=True)[0])
        cut, tokens = embed(windowing, [LONG], long_text="sentence-transformers")
        np.testing.assert_array_equal(cut[0], reference.sentences([LONG], normalize=True, max_length=CUT)[0])
        assert tokens == CUT
        info = httpx.get(windowing.url + "/info").json()
        assert info["settings"]["long_text"] == "window" and info["embeddings_max_length"] is None


def test_info_names_the_cut(st_server: Server) -> None:
    info = httpx.get(st_server.url + "/info").json()
    assert info["sentence_transformers_max_length"] == CUT and info["embeddings_max_length"] == CUT


def test_without_a_recorded_length_texts_are_windowed(tiny_bundle: Path) -> None:
    with serving(tiny_bundle) as plain:
        got, tokens = embed(plain, [LONG])
        np.testing.assert_array_equal(got[0], plain.embedder.sentences([LONG], normalize=True)[0])
        assert tokens == int(plain.embedder.count_tokens([LONG])[0])


def test_the_queue_counts_the_tokens_that_will_run(tiny_bundle: Path) -> None:
    # The long text has 110 positions; cut at 16 it fits a queue of 40, windowed it does not.
    with serving(tiny_bundle, sentence_transformers_max_length=CUT, max_queue=40) as small:
        assert embed(small, [LONG])[1] == CUT
        too_big = small.post("/v1/embeddings", {"input": [LONG], "long_text": "window"})
        assert "the request has 110 tokens; this server queues at most 40" in error_of(too_big, 413)
        # /embed/words with long_text=truncate runs at most the model's 64 positions of a text's 102.
        words = small.post("/embed/words", {"texts": [" ".join(["king"] * 100)], "long_text": "truncate"})
        assert error_of(words, 413).startswith("the request has 64 tokens")


@pytest.mark.parametrize("value", ["truncate", "cut", None, 5])
def test_other_long_text_values_are_refused(st_server: Server, value: object) -> None:
    reply = st_server.post("/v1/embeddings", {"input": SHORT, "long_text": value})
    if value is None:  # null means the server's default
        assert reply.status_code == 200, reply.text
    else:
        assert "long_text" in error_of(reply, 422)


def test_settings_refuse_an_unknown_long_text() -> None:
    with pytest.raises(ValueError, match="long_text must be one of sentence-transformers, window, got 'cut'"):
        ServeSettings(long_text="cut")  # type: ignore[arg-type]
