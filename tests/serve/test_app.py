"""bertonnx serve: the real server on loopback, spoken to over HTTP.

Most tests share one uvicorn server running in a thread of this process, so
answers can be checked against direct Embedder calls; the shutdown test runs the
command in a subprocess and sends it SIGTERM.
"""

from __future__ import annotations

import base64
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from helpers.serve import Server, error_of, floats, serving  # noqa: E402

from bertonnx.cli.serve import serving_line  # noqa: E402
from bertonnx.embedder import Prepared  # noqa: E402

TEXTS = [
    "The king is wise.",
    "The queen is one of the great bands in history.",
    "How much is an Apple music account?",
    "unable embedding",
    "a",
]


@pytest.fixture(scope="module")
def server(tiny_bundle: Path) -> Iterator[Server]:
    with serving(tiny_bundle, max_texts=64, max_text_chars=5000, max_body_bytes=64 * 1024) as running:
        yield running


def metric(url: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", httpx.get(url + "/metrics").text, re.M)
    assert found, name
    return float(found.group(1))


def wait_for(url: str, name: str, at_least: float, timeout: float = 20) -> None:
    """Until one of the server's metrics reaches a value."""
    deadline = time.monotonic() + timeout
    while metric(url, name) < at_least:
        assert time.monotonic() < deadline, f"{name} stayed below {at_least}"
        time.sleep(0.02)


@contextmanager
def model_held(server: Server) -> Iterator[Callable[[], None]]:
    """Hold the model on one request, so the requests sent meanwhile queue; yields what lets it go."""
    server.gate.holding.clear()
    server.gate.open.clear()
    with ThreadPoolExecutor(1) as pool:
        try:
            blocker = pool.submit(server.post, "/v1/embeddings", {"input": "the king"})
            assert server.gate.holding.wait(20), "the blocking request never reached the model"
            yield server.gate.open.set
        finally:
            server.gate.open.set()
        assert blocker.result().status_code == 200


# --- /v1/embeddings ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings_match_the_library(server: Server, encoding: str) -> None:
    reply = server.post("/v1/embeddings", {"input": TEXTS, "model": "my-model", "encoding_format": encoding})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "list" and body["model"] == "my-model"
    assert [item["index"] for item in body["data"]] == list(range(len(TEXTS)))
    if encoding == "base64":
        got = np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in body["data"]])
    else:
        got = floats([item["embedding"] for item in body["data"]])
    expected = server.embedder.sentences(TEXTS, pooling="mean", normalize=True)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    tokens = sum(len(p.ids) + 2 for p in server.embedder.tokenizer.split(TEXTS))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_embeddings_one_string_and_default_model(server: Server) -> None:
    body = server.post("/v1/embeddings", {"input": "The king is wise."}).json()
    assert len(body["data"]) == 1 and len(body["data"][0]["embedding"]) == server.embedder.dim
    assert body["model"] == server.embedder.model_name == server.embedder.bundle.manifest["source"]["model"]


def test_openai_client(server: Server) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    expected = server.embedder.sentences(TEXTS, pooling="mean", normalize=True)
    default = client.embeddings.create(model="tiny", input=TEXTS)  # the client asks for base64 by default
    as_floats = client.embeddings.create(model="tiny", input=TEXTS, encoding_format="float")
    for response in (default, as_floats):
        np.testing.assert_array_equal(floats([d.embedding for d in response.data]), expected)
        assert response.model == "tiny" and response.usage.total_tokens > len(TEXTS)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="tiny", input="")


# --- word-level endpoints ---------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "first_last"])
def test_contextual_words_match_the_library(server: Server, pooling: str) -> None:
    texts: list[Any] = [*TEXTS, ["un", "believable", "kingdom"], "", "  "]
    body = server.post("/embed/words", {"texts": texts, "pooling": pooling}).json()
    expected = server.embedder.contextual(texts, pooling=pooling)
    assert body["kind"] == "contextual" and body["dim"] == expected[0].vectors.shape[1]
    for item, want in zip(body["data"], expected, strict=True):
        assert tuple(item["words"]) == want.words
        np.testing.assert_array_equal(floats(item["vectors"]).reshape(-1, body["dim"]), want.vectors)
        assert item["spans"] == want.spans.tolist() and item["unknown"] == want.unknown.tolist()
    assert body["data"][-1]["words"] == [] and body["data"][-1]["vectors"] == []


def test_static_words_of_texts(server: Server) -> None:
    texts = ["The king is wise 🙂", "embedding", ""]
    body = server.post("/embed/words", {"texts": texts, "kind": "static", "encoding_format": "base64"}).json()
    contextual = server.embedder.contextual(texts)
    for item, want in zip(body["data"], contextual, strict=True):
        assert tuple(item["words"]) == want.words and item["spans"] == want.spans.tolist()
        assert item["unknown"] == want.unknown.tolist()
        vectors = np.frombuffer(base64.b64decode(item["vectors"]), dtype="<f4").reshape(-1, body["dim"])
        np.testing.assert_array_equal(vectors, server.embedder.static(list(want.words), unknown="unk"))
    assert body["data"][0]["unknown"] == [False, False, False, False, True]


def test_static_endpoint(server: Server) -> None:
    words = ["king", "unable", "Embeddings", "🙂"]
    refused = server.post("/embed/static", {"words": words})
    assert "unknown token" in error_of(refused, 400)
    body = server.post("/embed/static", {"words": words, "unknown": "zero", "pooling": "max"}).json()
    np.testing.assert_array_equal(
        floats([item["vector"] for item in body["data"]]), server.embedder.static(words, "max", "zero")
    )
    assert [item["unknown"] for item in body["data"]] == [False, False, False, True]
    assert [item["word"] for item in body["data"]] == words


# --- dynamic batching -------------------------------------------------------------------------


def test_concurrent_requests_merge_and_match_unbatched_calls(server: Server) -> None:
    texts = [f"{' '.join(['the king'] * (i % 9))} is wise number {i}" for i in range(24)]

    def ask(i: int) -> tuple[str, Any]:
        if i % 2:
            return "words", server.post("/embed/words", {"texts": [texts[i]]}).json()
        return "sentences", server.post("/v1/embeddings", {"input": texts[i]}).json()

    batches = metric(server.url, "bertonnx_batch_requests_count")
    with model_held(server) as release, ThreadPoolExecutor(len(texts)) as pool:
        pending = [pool.submit(ask, i) for i in range(len(texts))]
        wait_for(server.url, "bertonnx_queue_requests", len(texts))
        release()
        answers = [future.result() for future in pending]
    assert metric(server.url, "bertonnx_batch_requests_count") == batches + 2  # the blocker, then all 24 at once
    for text, (kind, body) in zip(texts, answers):
        if kind == "sentences":
            alone = server.embedder.sentences([text], normalize=True)[0]
            np.testing.assert_array_equal(floats(body["data"][0]["embedding"]), alone)
        else:
            alone = server.embedder.contextual([text])[0].vectors
            np.testing.assert_array_equal(floats(body["data"][0]["vectors"]), alone)


def test_a_bad_request_does_not_fail_the_ones_merged_with_it(server: Server) -> None:
    long_text = " ".join(["king"] * 200)  # over the tiny model's 64 tokens

    def ask(text: str) -> httpx.Response:
        return server.post("/embed/words", {"texts": [text], "long_text": "error"})

    batches = metric(server.url, "bertonnx_batch_requests_count")
    with model_held(server) as release, ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(ask, text) for text in [TEXTS[0], long_text, TEXTS[1], TEXTS[2]]]
        wait_for(server.url, "bertonnx_queue_requests", 4)
        release()
        replies = [future.result() for future in pending]
    assert metric(server.url, "bertonnx_batch_requests_count") == batches + 2
    assert "word pieces" in error_of(replies[1], 400)
    for reply, text in zip([replies[0], *replies[2:]], [TEXTS[0], TEXTS[1], TEXTS[2]]):
        assert reply.status_code == 200
        np.testing.assert_array_equal(
            floats(reply.json()["data"][0]["vectors"]), server.embedder.contextual([text])[0].vectors
        )


# --- tokenize once ----------------------------------------------------------------------------


def test_each_request_is_tokenized_once_and_its_pieces_reach_the_embedder(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    splits: list[int] = []
    given: list[Any] = []
    split, sentences, contextual = server.served.tokenizer.split, server.served.sentences, server.served.contextual

    def counted_split(texts: Any) -> Any:
        splits.append(len(texts))
        return split(texts)

    def recorded(call: Callable[..., Any]) -> Callable[..., Any]:
        def record(texts: Any, *args: Any, **kwargs: Any) -> Any:
            given.append(texts)
            return call(texts, *args, **kwargs)

        return record

    monkeypatch.setattr(server.served.tokenizer, "split", counted_split)
    monkeypatch.setattr(server.served, "sentences", recorded(sentences))
    monkeypatch.setattr(server.served, "contextual", recorded(contextual))
    assert server.post("/v1/embeddings", {"input": TEXTS}).status_code == 200
    assert server.post("/embed/words", {"texts": TEXTS[:2]}).status_code == 200
    assert server.post("/embed/words", {"texts": TEXTS[:3], "kind": "static"}).status_code == 200
    assert splits == [len(TEXTS), 2, 3]  # one split of all a request's texts, and none in the Embedder
    assert [type(texts) for texts in given] == [Prepared, Prepared]
    assert [len(texts) for texts in given] == [len(TEXTS), 2]


# --- bad input, limits, overload --------------------------------------------------------------

BAD_BODIES = [
    ("/v1/embeddings", {}),
    ("/v1/embeddings", {"input": None}),
    ("/v1/embeddings", {"input": []}),
    ("/v1/embeddings", {"input": ""}),
    ("/v1/embeddings", {"input": " \t\n"}),
    ("/v1/embeddings", {"input": "\x00\x00"}),
    ("/v1/embeddings", {"input": 12}),
    ("/v1/embeddings", {"input": [1, 2, 3]}),
    ("/v1/embeddings", {"input": [[1, 2], [3]]}),
    ("/v1/embeddings", {"input": [["nested"]]}),
    ("/v1/embeddings", {"input": ["ok", None]}),
    ("/v1/embeddings", {"input": {"text": "x"}}),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}),
    ("/v1/embeddings", {"input": "x", "dimensions": 7}),
    ("/v1/embeddings", {"input": "x", "dimensions": 10**30}),
    ("/v1/embeddings", {"input": "x", "dimensions": 1e308}),
    ("/v1/embeddings", {"input": "x", "model": 5}),
    ("/v1/embeddings", {"input": "x", "surprise": True}),
    ("/v1/embeddings", ["input", "x"]),
    ("/v1/embeddings", None),
    ("/embed/words", {"texts": []}),
    ("/embed/words", {"texts": "not a list"}),
    ("/embed/words", {"texts": ["x"], "kind": "both"}),
    ("/embed/words", {"texts": ["x"], "pooling": "cls"}),
    ("/embed/words", {"texts": ["x"], "long_text": "ignore"}),
    ("/embed/words", {"texts": [["ok", ""]]}),
    ("/embed/words", {"texts": [["ok", "   "]]}),
    ("/embed/words", {"texts": [[["deep"]]]}),
    ("/embed/words", {"texts": [1.5]}),
    ("/embed/words", {"texts": ["x"], "kind": None}),
    ("/embed/static", {"words": []}),
    ("/embed/static", {"words": [""]}),
    ("/embed/static", {"words": ["\x00"]}),
    ("/embed/static", {"words": ["king"], "unknown": "guess"}),
    ("/embed/static", {"words": [True]}),
    ("/embed/static", {"text": ["king"]}),
]


@pytest.mark.parametrize("path,body", BAD_BODIES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(BAD_BODIES)])
def test_bad_json_is_a_4xx_with_a_json_error(server: Server, path: str, body: Any) -> None:
    reply = server.post(path, body)
    assert 400 <= reply.status_code < 500, reply.text
    error_of(reply, reply.status_code)


RAW_BODIES = [
    (b"", "application/json"),
    (b"{", "application/json"),
    (b"not json at all", "application/json"),
    (b'{"input": "x"}', "text/plain"),
    (b"input=x", "application/x-www-form-urlencoded"),  # a real form is still no JSON
    (b'{"input": "\\ud800"}', "application/json"),
    (b'{"input": "x", "dimensions": 1' + b"0" * 5000 + b"}", "application/json"),
    (b'{"input": NaN}', "application/json"),
    (b'{"input": "x"} trailing', "application/json"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b"[" * 5000 + b"]" * 5000, "application/json"),
]


@pytest.mark.parametrize("raw,content_type", RAW_BODIES)
def test_non_json_bodies_are_4xx(server: Server, raw: bytes, content_type: str) -> None:
    reply = httpx.post(server.url + "/v1/embeddings", content=raw, headers={"content-type": content_type})
    assert 400 <= reply.status_code < 500, reply.text
    error_of(reply, reply.status_code)


@pytest.mark.parametrize("headers", [{"content-type": "application/x-www-form-urlencoded"}, {}])
def test_a_json_body_without_a_json_content_type_is_read_as_json(server: Server, headers: dict[str, str]) -> None:
    """`curl -d '{...}'` sends form encoding, a bare client none: the body is JSON all the same."""
    raw = json.dumps({"input": TEXTS[:2]}).encode()
    typed = httpx.post(server.url + "/v1/embeddings", content=raw, headers={"content-type": "application/json"})
    untyped = httpx.post(server.url + "/v1/embeddings", content=raw, headers=headers)
    assert untyped.status_code == 200, untyped.text
    assert floats([row["embedding"] for row in untyped.json()["data"]]).tolist() == floats(
        [row["embedding"] for row in typed.json()["data"]]
    ).tolist()


@pytest.mark.parametrize(
    "raw",
    [b'{"input": "abc', b'{\n  "input": [\n    "a",\n  ]\n}', b'{"input": "x",}', b'{"input" "x"}'],
)
def test_invalid_json_is_named_with_its_position_on_one_line(server: Server, raw: bytes) -> None:
    with pytest.raises(json.JSONDecodeError) as decoding:
        json.loads(raw)
    reply = httpx.post(server.url + "/v1/embeddings", content=raw, headers={"content-type": "application/json"})
    message = error_of(reply, 400)
    assert message == f"the body is not valid JSON ({decoding.value})"
    assert re.search(r": line \d+ column \d+ \(char \d+\)\)$", message) and "\n" not in message


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
TEXT = st.text(max_size=40) | st.builds(
    lambda word, n: " ".join([word] * n), st.sampled_from(["king", "unable", "🙂", "a.b", "\x00"]), st.integers(0, 150)
)


FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {  # the first field is the required one
    "/v1/embeddings": {
        "input": TEXT | st.lists(TEXT, min_size=1, max_size=3),
        "model": st.text(max_size=20),
        "encoding_format": st.sampled_from(["float", "base64"]),
        "dimensions": st.integers(-1, 64),
        "user": st.text(max_size=5),
    },
    "/embed/words": {
        "texts": st.lists(TEXT | st.lists(st.text(max_size=10), max_size=3), min_size=1, max_size=3),
        "kind": st.sampled_from(["contextual", "static"]),
        "pooling": st.sampled_from(["mean", "first", "last", "first_last", "max", "sum"]),
        "long_text": st.sampled_from(["window", "truncate", "error"]),
        "encoding_format": st.sampled_from(["float", "base64"]),
    },
    "/embed/static": {
        "words": st.lists(st.text(max_size=12), min_size=1, max_size=3),
        "pooling": st.sampled_from(["mean", "max", "first_last"]),
        "unknown": st.sampled_from(["error", "unk", "zero"]),
        "encoding_format": st.sampled_from(["float", "base64"]),
    },
}


def bodies(path: str) -> st.SearchStrategy[Any]:
    """Well-typed bodies with odd values, bodies with wrong types here and there, and any JSON."""
    fields = FIELDS[path]
    required, *others = fields
    typed = st.fixed_dictionaries({required: fields[required]}, optional={name: fields[name] for name in others})
    mixed = st.fixed_dictionaries({}, optional={name: value | JSON for name, value in fields.items()})
    return st.one_of(typed, typed, typed, mixed, st.dictionaries(st.text(max_size=6), JSON, max_size=3), JSON)


@pytest.fixture(scope="module")
def fuzz_server(tiny_bundle: Path) -> Iterator[Server]:
    with serving(tiny_bundle, max_wait_ms=0, max_texts=3, max_text_chars=600, max_queue=500) as running:
        yield running


@pytest.mark.parametrize("path", list(FIELDS))
def test_no_request_body_gets_a_500(fuzz_server: Server, path: str) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=bodies(path))
    def check(body: Any) -> None:
        reply = fuzz_server.post(path, body)
        assert reply.status_code < 500, (body, reply.text)
        if reply.status_code >= 400:
            error_of(reply, reply.status_code)
        else:
            assert reply.json()["data"] is not None

    check()


def test_unknown_routes_and_methods(server: Server) -> None:
    error_of(httpx.get(server.url + "/v2/nothing"), 404)
    error_of(httpx.get(server.url + "/v1/embeddings"), 405)


def test_limits(server: Server) -> None:
    assert "at most 64" in error_of(server.post("/v1/embeddings", {"input": ["x"] * 65}), 413)
    assert "at most 5000" in error_of(server.post("/embed/words", {"texts": ["a " * 2501]}), 413)
    assert "at most 5000" in error_of(server.post("/embed/words", {"texts": [["ab"] * 2501]}), 413)
    assert "bytes" in error_of(server.post("/embed/static", {"words": ["k" * 70_000]}), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold for a streamed body too
        yield b'{"words": ["'
        for _ in range(20):
            yield b"k" * 4096
        yield b'"]}'

    streamed = httpx.post(server.url + "/embed/static", content=chunks(), headers={"content-type": "application/json"})
    assert "bytes" in error_of(streamed, 413)


def test_odd_but_valid_text(server: Server) -> None:
    texts = ["emoji 🙂🙂 and NUL \x00 byte", "tabs\tand\nnewlines", "ÜNÏCÖDÉ ñ 中文", "\u200b zero width"]
    reply = server.post("/embed/words", {"texts": texts})
    assert reply.status_code == 200, reply.text
    assert [tuple(d["words"]) for d in reply.json()["data"]] == [r.words for r in server.embedder.contextual(texts)]

@pytest.mark.slow

def test_a_megabyte_string_when_the_limits_allow_it(tiny_bundle: Path) -> None:
    text = "the king is wise and the queen is kind " * 27_000  # ~1 MB
    limits = {"max_body_bytes": 2 * 1024 * 1024, "max_text_chars": len(text), "max_queue": 1_000_000}
    with serving(tiny_bundle, **limits) as big, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(big.post, "/v1/embeddings", {"input": text})
        pauses = []
        while not pending.done():  # the event loop keeps answering while the model works
            sent = time.perf_counter()
            assert httpx.get(big.url + "/health", timeout=5).status_code == 200
            pauses.append(time.perf_counter() - sent)
            time.sleep(0.05)
        assert len(pauses) > 3 and max(pauses) < 1.0, pauses
        reply = pending.result()
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["prompt_tokens"] > 200_000
        np.testing.assert_array_equal(
            floats(reply.json()["data"][0]["embedding"]), big.embedder.sentences([text], normalize=True)[0]
        )


def test_overload_is_503_with_retry_after(tiny_bundle: Path) -> None:
    # One request runs, one waits with 27 of the 40 tokens the queue holds; a third finds no room.
    with serving(tiny_bundle, max_queue=40) as small:
        text = " ".join(["king"] * 25)
        with model_held(small) as release, ThreadPoolExecutor(1) as pool:
            queued = pool.submit(small.post, "/v1/embeddings", {"input": text})
            wait_for(small.url, "bertonnx_queue_requests", 1)
            refused = small.post("/v1/embeddings", {"input": text})
            assert "queue is full" in error_of(refused, 503)
            assert int(refused.headers["retry-after"]) >= 1
            release()
            assert queued.result().status_code == 200
        too_big = small.post("/v1/embeddings", {"input": " ".join(["king"] * 50)})
        assert "queues at most 40" in error_of(too_big, 413)
        metrics = httpx.get(small.url + "/metrics").text
        assert 'bertonnx_errors_total{code="503",endpoint="/v1/embeddings"} 1' in metrics


# --- health, info, metrics --------------------------------------------------------------------


def test_health_and_info(server: Server) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    info = httpx.get(server.url + "/info").json()
    assert info["manifest"] == server.embedder.bundle.manifest
    assert info["settings"]["max_texts"] == 64 and info["dim"] == server.embedder.dim


def test_info_shows_what_actually_runs(server: Server) -> None:
    info = httpx.get(server.url + "/info").json()
    runtime = json.loads(json.dumps(server.served.runtime()))
    assert info["runtime"] == runtime
    fields = {"backend", "device", "precision", "threads", "chosen_because", "fidelity", "timings", "serves"}
    assert fields <= set(runtime)
    assert set(runtime["serves"]) == {"words", "sentences"}  # what serves each use (one backend here: no split)
    assert runtime["serves"]["words"]["backend"] == runtime["backend"]
    timings = info["runtime"]["timings"]  # auto on a CPU: the candidates timed here, and the winner
    if timings is not None:
        assert timings["winner"] == [info["runtime"]["backend"], info["runtime"]["precision"]]
        assert all(trial["refused"] or trial["short_ms"] > 0 for trial in timings["trials"])
    assert info["runtime"]["backend"] in ("onnxruntime", "openvino")
    assert info["runtime"]["precision"] in ("fp32", "bf16", "fp16", "int8")
    assert (info["runtime"]["precision"] == "fp32") == (info["runtime"]["fidelity"] is None)
    assert info["model"] == server.served.model_name
    assert info["max_length"] == server.served.max_tokens and info["batch_tokens"] == server.served.batch_tokens
    assert info["sentence_transformers_max_length"] is None and info["embeddings_max_length"] is None
    assert info["settings"]["long_text"] == "sentence-transformers"


METRIC_LINE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$')


def test_metrics_are_prometheus_text(server: Server) -> None:
    server.post("/v1/embeddings", {"input": "The king is wise."})
    server.post("/v1/embeddings", {"input": ""})
    reply = httpx.get(server.url + "/metrics")
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = reply.text.strip().splitlines()
    for line in lines:
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or METRIC_LINE.match(line), line
    text = reply.text
    for name in (
        "bertonnx_requests_total",
        "bertonnx_errors_total",
        "bertonnx_request_duration_seconds_bucket",
        "bertonnx_batch_texts_bucket",
        "bertonnx_batch_tokens_sum",
        "bertonnx_tokens_total",
        "bertonnx_queue_requests",
        "bertonnx_queue_tokens",
    ):
        assert name in text, name
    assert re.search(r'bertonnx_errors_total\{code="400",endpoint="/v1/embeddings"\} [1-9]', text)


# --- graceful shutdown ------------------------------------------------------------------------


SLOW_SERVE = """
import time, typer
from bertonnx.embedder import Embedder
model = Embedder.sentences
Embedder.sentences = lambda self, *args, **kwargs: time.sleep(1.0) or model(self, *args, **kwargs)
from bertonnx.cli.serve import serve
typer.run(serve)
"""


def test_sigterm_lets_in_flight_requests_finish(tiny_bundle: Path) -> None:
    # `bertonnx serve` as a process, its model slowed to 1 s a call: one request runs, one waits. The backend is
    # named, so that its start does not time auto's candidates: on a loaded machine that alone took minutes.
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_SERVE, str(tiny_bundle), "--port", "0", "--backend", "onnxruntime"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        url, log = _wait_for_url(process, timeout=300)
        runs = r"on (onnxruntime|openvino) \S+ (fp32|bf16|fp16|int8), \d+ threads?"
        assert re.search(rf"^serving \S+ \(\S+, 32 dims\) {runs}(; word cosine vs .+)?$", log, re.M), log
        with ThreadPoolExecutor(2) as pool:
            started = time.monotonic()
            running = pool.submit(httpx.post, url + "/v1/embeddings", json={"input": "the king"}, timeout=30)
            wait_for(url, "bertonnx_requests_in_flight", 1)
            time.sleep(0.1)
            queued = pool.submit(httpx.post, url + "/v1/embeddings", json={"input": "the queen"}, timeout=30)
            wait_for(url, "bertonnx_queue_requests", 1)
            process.send_signal(signal.SIGTERM)
            replies = [running.result(), queued.result()]
        assert [reply.status_code for reply in replies] == [200, 200]
        assert time.monotonic() - started >= 2.0  # both model calls ran after the signal came
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.parametrize("host", ["127.0.0.1", "no-such-host.invalid"])
def test_an_address_it_cannot_listen_on_is_a_one_line_error(tiny_bundle: Path, host: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-c", "from bertonnx.cli.app import main; main()", "serve", str(tiny_bundle),
             "--host", host, "--port", str(port)],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot listen on {host}:{port}: ")
    if host == "127.0.0.1":
        assert line.endswith("Address already in use")


def test_the_start_up_line_names_what_runs() -> None:
    from dataclasses import replace

    from bertonnx.fidelity import GATES, GateResult, OutputFidelity
    from bertonnx.results import RuntimeInfo

    runtime = RuntimeInfo("openvino", "CPU", "bf16", 2, False, "auto", None, None, {})
    line = serving_line(Path("B"), "sentence-transformers/all-MiniLM-L6-v2", 384, runtime)
    assert line == "serving B (sentence-transformers/all-MiniLM-L6-v2, 384 dims) on openvino CPU bf16, 2 threads"
    figures = OutputFidelity("last_hidden_state", 0.01, 0.9995, 0.9999, 0.01, 0.99912, 0.999981)
    fidelity = GateResult("bf16", "fp32", figures, GATES["bf16"])
    assert serving_line(Path("B"), "m", 32, replace(runtime, threads=1, fidelity=fidelity)) == (
        "serving B (m, 32 dims) on openvino CPU bf16, 1 thread; word cosine vs fp32 min 0.99912, mean 0.99998"
    )
    from bertonnx.fidelity import SENTENCE_GATE
    from bertonnx.results import Serving

    words = Serving("openvino", "bf16", None, fidelity)
    int8 = GateResult("int8", "fp32", replace(figures, sentence_min_cosine=0.9947), SENTENCE_GATE)
    sentences = Serving("openvino", "int8", "r", int8)
    split = replace(runtime, fidelity=fidelity, serves={"words": words, "sentences": sentences})
    assert serving_line(Path("B"), "m", 32, split).endswith("; sentences on openvino int8, sentence cosine min 0.99470")
    one = replace(runtime, fidelity=fidelity, serves={"words": words, "sentences": words})
    assert "sentences on" not in serving_line(Path("B"), "m", 32, one)


def _wait_for_url(process: subprocess.Popen[str], timeout: float = 120) -> tuple[str, str]:
    """Read the server's log until uvicorn says where it listens; the URL and the log so far.

    A thread reads the lines: select() on the pipe would miss a line already in the text stream's buffer (the
    serving line and uvicorn's may come in one read), and then wait out the timeout with the URL in hand."""
    assert process.stderr is not None
    stream = process.stderr
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
            if "running on" in line:
                return  # the rest stays in the stream for communicate()
        lines.put("")  # the server exited

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    log = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=deadline - time.monotonic())
        except queue.Empty:
            break
        if not line:
            break
        log.append(line)
        found = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
        if found:
            return found.group(1), "".join(log)
    raise AssertionError("the server did not start:\n" + "".join(log))
