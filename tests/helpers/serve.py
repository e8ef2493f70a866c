"""A real uvicorn server on loopback, in a thread of the test process, and the checks on its answers.

Import after pytest.importorskip("uvicorn") and ("fastapi"): the server extra may be absent.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

from bertonnx import Embedder
from bertonnx.serve.app import create_app
from bertonnx.serve.settings import ServeSettings


class Gate:
    """Holds sentence-model calls while closed, so a test can line requests up behind one."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.holding = threading.Event()  # a call is waiting at the closed gate

    def wrap(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any, **kwargs: Any) -> Any:
            if not self.open.is_set():
                self.holding.set()
                self.open.wait(30)
            return call(*args, **kwargs)

        return held


@dataclass(frozen=True)
class Server:
    url: str
    embedder: Embedder  # the reference, outside the server
    gate: Gate
    served: Embedder  # the one the server calls

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=30, **kwargs)


@contextmanager
def serving(bundle: Path, sentence_transformers_max_length: int | None = None, **settings: Any) -> Iterator[Server]:
    """A uvicorn server in a background thread, on a loopback port the OS picked.

    sentence_transformers_max_length: as if the bundle came from a sentence-transformers
    model with this max_seq_length (the tiny test model did not).
    """
    embedder = Embedder.load(bundle)  # the reference answers, outside the server
    gate = Gate()
    served = Embedder.load(bundle)
    if sentence_transformers_max_length is not None:
        for loaded in (embedder, served):
            loaded.bundle.manifest["model"]["sentence_transformers_max_length"] = sentence_transformers_max_length
    served.sentences = gate.wrap(served.sentences)  # type: ignore[method-assign]
    server = uvicorn.Server(uvicorn.Config(create_app(served, ServeSettings(**settings)), log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield Server(f"http://127.0.0.1:{sock.getsockname()[1]}", embedder, gate, served)
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def floats(data: Any) -> np.ndarray:
    return np.asarray(data, dtype=np.float32)


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type"} and error["message"], error
    return error["message"]
