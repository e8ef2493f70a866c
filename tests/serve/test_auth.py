"""`serve --api-key`: a real server on loopback that answers strangers 401, and serve's options checked before
anything loads."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from helpers.cli import one_line_error, run  # noqa: E402
from helpers.serve import serving  # noqa: E402

KEY = "s3cret-key with spaces"


def test_every_endpoint_but_health_needs_the_key(tiny_bundle: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with serving(tiny_bundle, api_key=KEY) as server:
        body = {"input": ["the king"], "model": "any"}
        assert httpx.get(server.url + "/health", timeout=10).status_code == 200
        for headers, why in [({}, "requires an API key"), ({"Authorization": "Bearer wrong"}, "a valid API key"),
                             ({"Authorization": KEY}, "a valid API key"),
                             ({"Authorization": f"Bearer {KEY}x"}, "a valid API key")]:
            refused = server.post("/v1/embeddings", body, headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            assert refused.json()["error"]["type"] == "invalid_request_error"
            assert why in refused.json()["error"]["message"] and KEY not in refused.text
        for path in ("/info", "/metrics"):
            assert httpx.get(server.url + path, timeout=10).status_code == 401
        allowed = {"Authorization": f"Bearer {KEY}"}
        answered = server.post("/v1/embeddings", body, headers=allowed)
        assert answered.status_code == 200 and len(answered.json()["data"]) == 1
        metrics = httpx.get(server.url + "/metrics", headers=allowed, timeout=10)
        assert metrics.status_code == 200
        assert 'bertonnx_errors_total{code="401",endpoint="/v1/embeddings"} 4' in metrics.text
    assert KEY not in capfd.readouterr().err


def test_without_a_key_the_server_is_open(tiny_bundle: Path) -> None:
    with serving(tiny_bundle) as server:
        assert server.post("/v1/embeddings", {"input": "the king"}).status_code == 200


@pytest.mark.parametrize("args,name", [
    (["--port", "99999"], "--port"), (["--port", "-1"], "--port"), (["--max-batch-tokens", "0"], "--max-batch-tokens"),
    (["--max-wait-ms", "-1"], "--max-wait-ms"), (["--max-queue", "0"], "--max-queue"),
    (["--max-texts", "0"], "--max-texts"),
])
def test_serve_options_are_checked_before_anything_loads(tmp_path: Path, args: list[str], name: str) -> None:
    """A path that is no bundle: had the options passed, loading would have failed instead."""
    result = run("serve", tmp_path / "no-bundle", *args)
    assert result.exit_code == 2, result.output
    assert name in result.stderr and "Traceback" not in result.stderr and "a bug in bertonnx" not in result.stderr


def test_an_empty_api_key_is_refused(tmp_path: Path) -> None:
    one_line_error(run("serve", tmp_path / "no-bundle", "--api-key", " "), "API key must be printable", code=2)


def test_messages_are_printed_as_typed(tmp_path: Path) -> None:
    """rich would turn ':-1:' into an emoji and '[bold]' into markup; errors quote paths and addresses verbatim."""
    odd = tmp_path / "a:-1:b[bold]x"
    result = run("embed", odd, "--static", stdin="king\n")
    assert result.exit_code == 1
    assert str(odd) in result.stderr and "👎" not in result.stderr


def test_static_entries_are_one_word_everywhere(tiny_bundle: Path, tiny) -> None:  # noqa: ANN001
    """The CLI's --static refuses 'new york'; so do the library and /embed/static, naming the entry."""
    with pytest.raises(ValueError, match=r"word 1 \('new york'\) holds 2 words; static vectors are one word each"):
        tiny.static(["king", "new york"])
    with serving(tiny_bundle) as server:
        refused = server.post("/embed/static", {"words": ["king", "new york"]})
        assert refused.status_code == 400 and "holds 2 words" in refused.json()["error"]["message"]
        assert server.post("/embed/static", {"words": ["king", " queen "]}).status_code == 200
