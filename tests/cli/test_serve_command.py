"""`bertonnx serve`'s own words: a server open beyond this machine without a key says so."""

from __future__ import annotations

import pytest

from bertonnx.cli.serve import exposure_warning


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "embeddings.internal"])
def test_a_server_reachable_from_elsewhere_without_a_key_warns(host: str) -> None:
    warning = exposure_warning(host, 8000, None)
    assert warning is not None and warning.startswith(f"warning: listening on {host} with no API key")
    assert "port 8000" in warning and "BERTONNX_API_KEY" in warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_does_not_warn(host: str) -> None:
    assert exposure_warning(host, 8000, None) is None


def test_a_key_does_not_warn() -> None:
    assert exposure_warning("0.0.0.0", 8000, "secret") is None
